"""DeftRec (Qu, Fan, Lin, arXiv 2504.12007 v1): a masked additive K-way tokenizer, ContRec's LLM backbone, and an
epsilon-prediction diffusion head with negative interactions; retrieval through ContRec's ``latent`` / ``hybrid``.
See docs/deftrec.md."""

from genrec_bench import hookimpl

from .generator import DeftRec
from .model import DeftHead, NegativeSampler, ResidualDenoiser
from .tokenizer import MaskedKWayEncoder, MaskedKWayTokenizer

__all__ = ["DeftHead", "DeftRec", "MaskedKWayEncoder", "MaskedKWayTokenizer", "NegativeSampler", "ResidualDenoiser"]


@hookimpl
def register_tokenizers(register):
    register("masked_kway", MaskedKWayTokenizer)


@hookimpl
def register_generators(register):
    register("deftrec", DeftRec)
