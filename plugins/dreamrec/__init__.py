"""DreamRec (Yang et al., NeurIPS 2023, "Generate What You Prefer"): a causal transformer over the history's item
vectors conditions ContRec's Gaussian diffusion head (x0-prediction, classifier-free guidance), which generates
the next item's vector; the ``latent`` retriever ranks items by it. No LLM. See docs/dreamrec.md."""

from genrec_bench import hookimpl

from .generator import DreamRec

__all__ = ["DreamRec"]


@hookimpl
def register_generators(register):
    register("dreamrec", DreamRec)
