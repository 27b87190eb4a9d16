"""Valid semantic ids as per-level transition tables, and beam search constrained by them.

Level ``l`` maps (prefix id of the first ``l`` codes, next code) to the prefix id of the first ``l+1`` codes;
at the last level the child is the item itself. Lookups are tensor indexing, so a whole batch of beams
advances in one operation: no Python walk per beam.
"""

from __future__ import annotations

from typing import Protocol

import torch

from genrec_bench.errors import ConfigError
from genrec_bench.interfaces import Ranking
from genrec_bench.ranking import TieBreak, current_tie_break, order_by_score


class CodeDecoder(Protocol):
    """What a generator hands the beam retriever: next-code log-probabilities for a batch of prefixes."""

    def __len__(self) -> int: ...

    def select(self, rows: slice) -> CodeDecoder:
        """The decoder for a slice of the batch's users."""

    def log_probs(self, prefix: torch.Tensor) -> torch.Tensor:
        """``prefix`` int64 ``[b, w, t]`` (codes so far) -> float ``[b, w, V_t]`` over the codes of position t."""


def semantic_ids(tokenizer, n_items: int) -> tuple[torch.Tensor, list[int]]:
    """All items' codes ``int64 [n_items, L]`` and the vocabulary size of each code position."""
    codes = tokenizer.encode(torch.arange(n_items)).long().cpu()
    sizes = getattr(tokenizer, "codebook_sizes", None) or [int(c) + 1 for c in codes.max(0).values]
    return codes, [int(s) for s in sizes]


def check_unique(codes: torch.Tensor, who: str = "the tokenizer") -> None:
    unique = torch.unique(codes, dim=0).shape[0]
    if unique < codes.shape[0]:
        raise ConfigError(
            f"{who} gives {codes.shape[0] - unique} items an id that another item already has; "
            "switch on its de-duplication (e.g. rqvae: {dedup: true}) so every item has a unique id"
        )


class PrefixIndex:
    """Transition tables of the prefix tree of item codes ``[n_items, L]`` (unique rows)."""

    def __init__(self, codes: torch.Tensor, codebook_sizes: list[int]):
        check_unique(codes)
        if codes.shape[1] != len(codebook_sizes):
            raise ConfigError(f"codes have {codes.shape[1]} positions but {len(codebook_sizes)} codebook sizes")
        self.codes = codes.long()
        self.sizes = list(codebook_sizes)
        self.n_items = codes.shape[0]
        self.tables: list[torch.Tensor] = []
        self.item_prefix: list[torch.Tensor] = []  # per level: the prefix id (after that level) of every item
        parents = torch.zeros(self.n_items, dtype=torch.long)
        for level, size in enumerate(self.sizes):
            column = self.codes[:, level]
            if level == len(self.sizes) - 1:
                children = torch.arange(self.n_items)
            else:
                _, children = torch.unique(parents * size + column, return_inverse=True)
            table = torch.full((int(parents.max()) + 1, size), -1, dtype=torch.long)
            table[parents, column] = children
            self.tables.append(table)
            self.item_prefix.append(children)
            parents = children
        radix = torch.tensor([1] + self.sizes[:0:-1]).cumprod(0).flip(0)  # mixed-radix key of a full id
        self.radix = radix
        keys = (self.codes * radix).sum(1)
        self.sorted_keys, order = torch.sort(keys)
        self.key_items = order

    def to(self, device: torch.device) -> PrefixIndex:
        self.tables = [t.to(device) for t in self.tables]
        self.item_prefix = [t.to(device) for t in self.item_prefix]
        self.radix, self.sorted_keys, self.key_items = (
            x.to(device) for x in (self.radix, self.sorted_keys, self.key_items)
        )
        return self

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item ids of full code tuples ``[..., L]``; -1 where no item has that id."""
        keys = (codes * self.radix).sum(-1)
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=self.n_items - 1)
        return torch.where(self.sorted_keys[pos] == keys, self.key_items[pos], torch.full_like(keys, -1))


def beam_search(
    decoder: CodeDecoder,
    index: PrefixIndex,
    beam: int,
    k: int,
    exclude: torch.Tensor | None,
    constrained: bool = True,
    tie: TieBreak | None = None,
) -> tuple[Ranking, int]:
    """Top-k distinct items per user by beam search over code positions.

    Constrained: only prefixes of real items survive, and a prefix whose items are all excluded (the user's
    history) is pruned at every level, so long histories never use up the beam.
    Unconstrained: free decoding; ids that match no item (or an excluded one) become -1.
    The final beams are ordered by (score, ``tie`` key) as every retriever orders items (default:
    :func:`genrec_bench.ranking.current_tie_break`). Returns the ranking and the number of invalid ids among the top-k.
    """
    b, levels = len(decoder), len(index.sizes)
    device = index.tables[0].device
    parents = torch.zeros((b, 1), dtype=torch.long, device=device)
    scores = torch.zeros((b, 1), device=device)
    prefix = torch.zeros((b, 1, 0), dtype=torch.long, device=device)
    excluded, remaining = None, None
    if exclude is not None:
        excluded = torch.zeros((b, index.n_items + 1), dtype=torch.bool, device=device)
        excluded.scatter_(1, torch.where(exclude >= 0, exclude, index.n_items), True)
        excluded = excluded[:, :-1]
        if constrained:  # per level and prefix: how many of its items are still allowed for each user
            allowed = (~excluded).float()
            remaining = [allowed.new_zeros((b, int(p.max()) + 1)).index_add_(1, p, allowed) for p in index.item_prefix]
    for level in range(levels):
        log_probs = decoder.log_probs(prefix).float()  # [b, w, V]
        width, size = log_probs.shape[1], log_probs.shape[2]
        if constrained:
            children = index.tables[level][parents]  # [b, w, V]
            invalid = children < 0
            if remaining is not None:
                left = torch.gather(remaining[level], 1, children.clamp(min=0).view(b, -1)).view_as(children)
                invalid |= left == 0
            log_probs = log_probs.masked_fill(invalid, float("-inf"))
        total = (scores.unsqueeze(-1) + log_probs).view(b, width * size)
        scores, flat = torch.topk(total, min(beam, width * size), dim=1)
        beam_idx, code = flat // size, flat % size
        prefix = torch.cat(
            [torch.gather(prefix, 1, beam_idx.unsqueeze(-1).expand(-1, -1, level)), code.unsqueeze(-1)], dim=2
        )
        if constrained:
            parents = torch.gather(children.view(b, -1), 1, flat)
    items = parents if constrained else index.lookup(prefix)
    dead = torch.isneginf(scores) | (items < 0)
    n_invalid = int(((items < 0) & ~torch.isneginf(scores))[:, :k].sum())
    if excluded is not None and not constrained:
        dead |= torch.gather(excluded, 1, items.clamp(min=0)) & (items >= 0)
    scores = scores.masked_fill(dead, float("-inf"))
    scores, items = order_by_score(scores, items.masked_fill(dead, -1), tie or current_tie_break(b, device))
    items = items.masked_fill(torch.isneginf(scores), -1)
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_full((b, pad), -1)], 1)
        scores = torch.cat([scores, scores.new_full((b, pad), float("-inf"))], 1)
    return Ranking(items=items[:, :k], scores=scores[:, :k]), n_invalid
