"""mqvae plugin (in progress)."""
