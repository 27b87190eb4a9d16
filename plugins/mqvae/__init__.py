"""MQ-VAE tokenizer plugin (TokenRec's masked K-way quantiser)."""

from genrec_bench import hookimpl

from .model import MaskedMultiVQVAE, MQVAETokenizer

__all__ = ["MaskedMultiVQVAE", "MQVAETokenizer"]


@hookimpl
def register_tokenizers(register):
    register("mqvae", MQVAETokenizer)
