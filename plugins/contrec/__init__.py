"""ContRec (Qu et al., WWW 2026): sigma-VAE continuous tokens, an LLM backbone with LoRA, a dispersive diffusion
head, and latent / text / hybrid retrieval. See docs/contrec.md."""

from genrec_bench import hookimpl

from .diffusion import Denoiser, GaussianDiffusion
from .dispersive import dispersive_loss
from .generator import ContRec, ContRecOutput
from .retrievers import Hybrid, Latent, Text
from .tokenizer import SigmaVAETokenizer

__all__ = [
    "ContRec",
    "ContRecOutput",
    "Denoiser",
    "GaussianDiffusion",
    "Hybrid",
    "Latent",
    "SigmaVAETokenizer",
    "Text",
    "dispersive_loss",
]


@hookimpl
def register_tokenizers(register):
    register("sigma_vae", SigmaVAETokenizer)


@hookimpl
def register_generators(register):
    register("contrec", ContRec)


@hookimpl
def register_retrievers(register):
    register("latent", Latent)
    register("text", Text)
    register("hybrid", Hybrid)
