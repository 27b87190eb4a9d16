"""TIGER (Rajput et al., 2023): a seq2seq generator over semantic ids, trie-constrained beam search,
and random semantic ids (the paper's ablation)."""

from __future__ import annotations

import torch

from genrec_bench import hookimpl
from genrec_bench.errors import ConfigError
from genrec_bench.interfaces import Ranking, Retriever, Tokenizer
from genrec_bench.ranking import current_tie_break

from .generator import Tiger
from .prefix_index import PrefixIndex, beam_search, semantic_ids


class BeamSearch(Retriever):
    """Beam search over code positions; ``constrained`` keeps every beam a prefix of a real item id.

    Unconstrained decoding reports the share of top-k ids that match no item (``invalid_id_rate``, per stage).
    """

    def __init__(self, beam_size: int = 20, constrained: bool = True, users_per_chunk: int = 128):
        self.beam_size, self.constrained, self.users_per_chunk = beam_size, constrained, users_per_chunk
        self.index: PrefixIndex | None = None
        self.invalid = self.generated = 0

    def fit(self, data, tokenizer, ctx) -> None:
        self.index = PrefixIndex(*semantic_ids(tokenizer, data.n_items)).to(ctx.device)

    def rank(self, outputs, k: int, exclude: torch.Tensor | None) -> Ranking:
        if self.beam_size < k:
            raise ConfigError(
                f"beam retriever: beam_size {self.beam_size} is smaller than the largest K {k}; "
                f"set retriever beam_size >= {k}"
            )
        parts, tie = [], current_tie_break(len(outputs), self.index.tables[0].device)
        for lo in range(0, len(outputs), self.users_per_chunk):
            rows = slice(lo, lo + self.users_per_chunk)
            ranking, invalid = beam_search(
                outputs.select(rows),
                self.index,
                self.beam_size,
                k,
                None if exclude is None else exclude[rows],
                self.constrained,
                tie.select(rows),
            )
            parts.append(ranking)
            self.invalid += invalid
            self.generated += ranking.items.numel()
        return Ranking(torch.cat([p.items for p in parts]), torch.cat([p.scores for p in parts]))

    def stage_health(self) -> dict[str, float]:
        """``invalid_id_rate`` of the rankings since the last call (none: no figure), then reset."""
        out = {"invalid_id_rate": self.invalid / self.generated} if self.generated else {}
        self.invalid = self.generated = 0
        return out


class RandomIds(Tokenizer):
    """Random unique semantic ids (TIGER's 'random ID' ablation): ``levels`` codes of ``codebook_size`` each."""

    kind = "discrete"

    def __init__(self, levels: int = 3, codebook_size: int = 256):
        self.levels, self.codebook_size = levels, codebook_size
        self.codes: torch.Tensor | None = None

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.codebook_size] * self.levels

    def fit(self, data, ctx) -> None:
        capacity = self.codebook_size**self.levels
        if capacity < data.n_items:
            raise ConfigError(
                f"random_ids: {self.levels} levels x {self.codebook_size} codes hold {capacity} ids "
                f"for {data.n_items} items; raise levels or codebook_size"
            )
        keys = torch.randperm(capacity, generator=ctx.torch_generator())[: data.n_items]
        digits = [(keys // self.codebook_size**p) % self.codebook_size for p in reversed(range(self.levels))]
        self.codes = torch.stack(digits, dim=1)

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        return self.codes[items.cpu()].to(items.device)


@hookimpl
def register_generators(register):
    register("tiger", Tiger)


@hookimpl
def register_retrievers(register):
    register("beam", BeamSearch)


@hookimpl
def register_tokenizers(register):
    register("random_ids", RandomIds)
