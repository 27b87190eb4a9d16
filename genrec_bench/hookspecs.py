"""The hooks a genrec-bench plugin can implement.

Every hook receives a ``register(name, factory)`` callback. ``factory(**params)`` must return the
object; the YAML parameters of a method are passed to it as keyword arguments and checked against
its signature. Names are global per kind: registering a name twice is an error.
"""

import pluggy

hookspec = pluggy.HookspecMarker("genrec_bench")


@hookspec
def register_datasets(register):
    """Register data-set loaders: ``register("ml-100k", loader)``.

    ``loader(**params)`` returns a :class:`genrec_bench.data.RawDataset` (see docs/writing-plugins.md).
    """


@hookspec
def register_features(register):
    """Register item-feature extractors: ``register("text", TextFeatures)``.

    ``factory(**params)`` returns an object with ``compute(data, ctx) -> float tensor [n_items, d]``;
    results are cached on disk by content (see :func:`genrec_bench.features.item_features`).
    """


@hookspec
def register_tokenizers(register):
    """Register tokenizers: ``register("rqvae", RQVAETokenizer)`` (a :class:`~genrec_bench.interfaces.Tokenizer`)."""


@hookspec
def register_generators(register):
    """Register generators: ``register("sasrec", SASRecGenerator)`` (a :class:`~genrec_bench.interfaces.Generator`)."""


@hookspec
def register_retrievers(register):
    """Register retrievers: ``register("full_ranking", FullRanking)``.

    ``FullRanking`` is a :class:`~genrec_bench.interfaces.Retriever`.
    """


@hookspec
def register_metrics(register):
    """Register per-user ranking metrics: ``register("ndcg", fn)``.

    ``fn(hits, n_relevant, k)`` takes a boolean array ``[n_users, >=k]`` (hit at each rank), the number of
    relevant items per user ``[n_users]`` and a cut-off, and returns float64 values ``[n_users]``.
    """
