"""vqvae plugin (in progress)."""
