"""rqvae plugin (in progress)."""
