"""LC-Rec (Zheng et al., ICDE 2024): RQ-VAE item indices with a uniform (Sinkhorn-Knopp) last level
(tokenizer ``lcrec_ids``), an LLM fine-tuned on prompts over the index tokens added to its vocabulary (generator
``lcrec``), decoded by TIGER's trie-constrained beam retriever (``beam``). See docs/lcrec.md."""

from genrec_bench import hookimpl

from .generator import LCRec
from .ids import LCRecIds

__all__ = ["LCRec", "LCRecIds"]


@hookimpl
def register_tokenizers(register):
    register("lcrec_ids", LCRecIds)


@hookimpl
def register_generators(register):
    register("lcrec", LCRec)
