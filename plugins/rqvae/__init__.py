"""RQ-VAE tokenizer plugin (TIGER semantic ids)."""

from genrec_bench import hookimpl

from .model import RQVAE, RQVAETokenizer

__all__ = ["RQVAE", "RQVAETokenizer"]


@hookimpl
def register_tokenizers(register):
    register("rqvae", RQVAETokenizer)
