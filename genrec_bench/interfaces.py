"""The contract every plugin keeps: Tokenizer, Generator, Retriever.

A *method* is one of each, named in the benchmark YAML. The runner drives a cell as::

    tokenizer.fit(data, ctx)
    retriever.fit(data, tokenizer, ctx)
    generator.fit(data, tokenizer, validate, ctx)     # validate() -> {"ndcg@10": ...} on validation users
    for batch in test users:
        ranking = retriever.rank(generator.generate(batch, ctx), k, exclude=batch.exclude)

Item ids everywhere are the data set's internal indices ``0 .. n_items-1``; ``-1`` is padding. Every ranking
(and every generator output that is a ``[b, n_items]`` score matrix) is validated before it is scored; see
``genrec_bench/evaluation.py``. Ties are broken by ``genrec_bench.ranking`` with a seeded key per user and item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # keep `import genrec_bench.interfaces` free of torch
    import torch

    from .context import RunContext
    from .data.split import SplitData, UserBatch

#: Called by a generator during ``fit``: evaluates the current model on the validation users.
Validator = Callable[[], "dict[str, float]"]


@dataclass
class Ranking:
    """Top-k items per user, best first. ``items[i, j] == -1`` where fewer than k items could be ranked."""

    items: torch.Tensor  # int64 [n_users, k]
    scores: torch.Tensor  # float [n_users, k]


class Tokenizer(ABC):
    """Turns items into tokens: discrete codes ``int64 [n, L]`` or continuous tokens ``float [n, K, d]``."""

    #: "atomic" (one id per item), "discrete" (a tuple of codes) or "continuous" (K vectors).
    kind: ClassVar[str] = "discrete"

    def fit(self, data: SplitData, ctx: RunContext) -> None:  # noqa: B027 - optional hook, default: learn nothing
        """Learn the item tokens from the catalogue (and training interactions only)."""

    @abstractmethod
    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Tokens for the given item ids ``int64 [n]``."""

    def health(self) -> dict[str, float]:
        """Figures that show whether tokenization is sound (reconstruction error, usage, collisions)."""
        return {}

    def training_record(self) -> dict[str, Any] | None:
        """How training went, for ``result.json``: see :meth:`Generator.training_record`."""
        return getattr(self, "training", None)


class Generator(ABC):
    """Models user histories and produces what its retriever reads (scores, codes, a latent, text)."""

    @abstractmethod
    def fit(self, data: SplitData, tokenizer: Tokenizer, validate: Validator, ctx: RunContext) -> None:
        """Train on ``data.train_sequences()``; call ``validate()`` for early stopping."""

    @abstractmethod
    def generate(self, batch: UserBatch, ctx: RunContext) -> Any:
        """Outputs for a batch of users (their histories are ``batch.items``)."""

    def health(self) -> dict[str, float]:
        """Training figures worth keeping (best epoch, final loss...)."""
        return {}

    def training_record(self) -> dict[str, Any] | None:
        """Why training stopped, its validation curve and what it saw (``genrec_bench.training.training_summary``;
        ``EarlyStopping.summary()`` builds it), or None for a generator that does not train. The default reads
        ``self.training``, which the built-in generators set at the end of ``fit``."""
        return getattr(self, "training", None)

    def stage_health(self) -> dict[str, float]:
        """Figures about the outputs produced since the last call (invalid-generation rate...), then reset.

        The runner calls it after validation and after the test stage and records
        ``generator/<stage>/<name>`` (stage ``valid`` or ``test``).
        """
        return {}


class Retriever(ABC):
    """Ranks a generator's outputs into top-k item ids over the whole catalogue."""

    def fit(self, data: SplitData, tokenizer: Tokenizer, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Build what ranking needs (an index over item tokens, a prefix trie...)."""

    @abstractmethod
    def rank(self, outputs: Any, k: int, exclude: torch.Tensor | None) -> Ranking:
        """Top-k items per user; items in ``exclude`` (``int64 [n_users, m]``, -1 padded) never appear.

        Rules checked on every call: shape ``[n_users, k]``, integer ids in ``0..n_items-1`` or -1, no id twice
        in a row, no excluded id, finite scores for ranked ids. Break score ties with ``genrec_bench.ranking``
        (``topk_scores``, ``topk_inner_product``, or ``current_tie_break`` for a top-k of your own).
        """

    def health(self) -> dict[str, float]:
        """Figures about the fitted retriever (index size...)."""
        return {}

    def stage_health(self) -> dict[str, float]:
        """Figures about the rankings made since the last call (invalid-id rate, text-match rate...), then
        reset; recorded as ``retriever/<stage>/<name>`` after validation and after the test stage."""
        return {}
