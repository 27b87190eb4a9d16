"""Simple baselines and the shared pieces of non-generative methods.

- tokenizer ``atomic``: one id per item (the item's own index);
- generators ``popularity`` (training-split counts) and ``random`` (seeded uniform scores);
- retriever ``full_ranking``: top-k of a ``[batch, n_items]`` score matrix, history excluded.
"""

from __future__ import annotations

import torch

from genrec_bench import hookimpl
from genrec_bench.interfaces import Generator, Ranking, Retriever, Tokenizer
from genrec_bench.ranking import topk_scores


class AtomicTokenizer(Tokenizer):
    """Each item is its own single token: codes ``[n, 1]`` equal to the item ids."""

    kind = "atomic"

    def __init__(self) -> None:
        self.n_items = 0

    def fit(self, data, ctx) -> None:
        self.n_items = data.n_items

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        return items.long().unsqueeze(-1)

    def health(self) -> dict[str, float]:
        return {"vocabulary": float(self.n_items)}


class Popularity(Generator):
    """Scores every item by how often it occurs in the training sequences (the same list for every user)."""

    def __init__(self) -> None:
        self.counts: torch.Tensor | None = None

    def fit(self, data, tokenizer, validate, ctx) -> None:
        # equal counts stay tied: the evaluator breaks ties at random per (cell seed, user, item), so no item
        # gains from its id (a tie-break towards low ids favoured the catalogue's first, popular items)
        self.counts = torch.as_tensor(data.train_item_counts(), dtype=torch.float32).to(ctx.device)

    def generate(self, batch, ctx) -> torch.Tensor:
        return self.counts.expand(len(batch), -1)


class RandomScores(Generator):
    """Uniform random scores, seeded: a floor every method must beat, and a timing probe for evaluation."""

    def __init__(self) -> None:
        self.n_items = 0
        self.rng: torch.Generator | None = None

    def fit(self, data, tokenizer, validate, ctx) -> None:
        self.n_items = data.n_items
        self.rng = ctx.torch_generator()

    def generate(self, batch, ctx) -> torch.Tensor:
        return torch.rand((len(batch), self.n_items), generator=self.rng).to(ctx.device)


class FullRanking(Retriever):
    """Ranks the whole catalogue by a generator's score matrix; excluded items never appear."""

    def rank(self, outputs: torch.Tensor, k: int, exclude: torch.Tensor | None) -> Ranking:
        return topk_scores(outputs, k, exclude)


@hookimpl
def register_tokenizers(register):
    register("atomic", AtomicTokenizer)


@hookimpl
def register_generators(register):
    register("popularity", Popularity)
    register("random", RandomScores)


@hookimpl
def register_retrievers(register):
    register("full_ranking", FullRanking)
