"""Residual k-means tokenizer plugin (semantic ids without a trained autoencoder)."""

from genrec_bench import hookimpl

from .model import ResidualKMeans, RQKMeansTokenizer

__all__ = ["ResidualKMeans", "RQKMeansTokenizer"]


@hookimpl
def register_tokenizers(register):
    register("rqkmeans", RQKMeansTokenizer)
