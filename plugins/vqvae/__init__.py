"""VQ-VAE tokenizer plugin (K parallel codebooks)."""

from genrec_bench import hookimpl

from .model import ParallelVQVAE, VQVAETokenizer

__all__ = ["ParallelVQVAE", "VQVAETokenizer"]


@hookimpl
def register_tokenizers(register):
    register("vqvae", VQVAETokenizer)
