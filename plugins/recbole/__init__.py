"""RecBole's sequential models (SASRec, GRU4Rec, BERT4Rec, ...) as the generator ``recbole``.

RecBole itself is imported only when a ``recbole`` generator is built, so genrec-bench works without it.
See docs/recbole.md.
"""

from genrec_bench import hookimpl

from .generator import RecBoleGenerator


@hookimpl
def register_generators(register):
    register("recbole", RecBoleGenerator)
