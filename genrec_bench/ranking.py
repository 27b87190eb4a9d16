"""Full-catalogue top-k with exclusion and fair tie-breaking, shared by retrievers.

Items are ordered by ``(score descending, key ascending)``, where ``key`` is a seeded random integer per
``(seed, user, item)`` (:class:`TieBreak`): tied items come out in a random order that repeats exactly for a
given cell seed, does not depend on the batch a user falls in, and does not depend on the largest K asked for
(the top 10 are always the first 10 of the top 50). The evaluator sets the cell's tie-break around every
``Retriever.rank`` call (:func:`tie_breaking`); helpers called outside it use seed 0 and the row index as user.
Memory is bounded by the caller's batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from .interfaces import Ranking

_NOT_CANDIDATE = torch.iinfo(torch.int64).max
_KEY_MASK = (1 << 62) - 1  # keys are non-negative and below the sentinel


def _signed(value: int) -> int:
    """A 64-bit constant as torch's signed int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 (multiplication wraps; shifts made logical by masking)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _MIX1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _MIX2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


@dataclass(frozen=True)
class TieBreak:
    """Seeded random keys, one per (seed, user, item): the second sort key after the score."""

    seed: int
    users: torch.Tensor  # int64 [b]: the users of the rows being ranked (internal indices)

    def keys(self, items: torch.Tensor) -> torch.Tensor:
        """``int64 [b, m]`` keys in ``[0, 2**62)`` for item ids ``[b, m]`` (any id, -1 included)."""
        seed = torch.tensor(int(self.seed), dtype=torch.int64, device=items.device)
        base = _mix(_mix(seed * _GOLDEN + 1) + self.users.to(items.device, torch.int64) * _MIX2)
        return _mix(base.unsqueeze(1) ^ (items.long() * _GOLDEN)) & _KEY_MASK

    def select(self, rows: torch.Tensor | slice) -> TieBreak:
        """The tie-break of a subset of rows."""
        return TieBreak(self.seed, self.users[rows])


@dataclass
class ScoreWatch:
    """A generator's score matrix that the evaluator must check for NaN and +inf. When :func:`topk_scores` ranks
    exactly this tensor, its top-k does the check for free (a row's first score is NaN or +inf exactly when one
    of its rankable, not excluded, scores is) and records it here."""

    tensor: torch.Tensor
    checked: bool = False
    bad_row: int | None = None  # first row whose top score is NaN or +inf


_CURRENT: ContextVar[TieBreak | None] = ContextVar("genrec_bench_tie_break", default=None)
_WATCH: ContextVar[ScoreWatch | None] = ContextVar("genrec_bench_score_watch", default=None)


@contextmanager
def tie_breaking(seed: int, users: torch.Tensor, watch: ScoreWatch | None = None) -> Iterator[TieBreak]:
    """Within the block, ranking helpers break ties with this cell seed and these users (one per row), and
    :func:`topk_scores` checks ``watch.tensor`` if it ranks it."""
    tie = TieBreak(int(seed), users)
    token, watch_token = _CURRENT.set(tie), _WATCH.set(watch)
    try:
        yield tie
    finally:
        _CURRENT.reset(token)
        _WATCH.reset(watch_token)


def current_tie_break(n_rows: int, device: torch.device | str = "cpu") -> TieBreak:
    """The evaluator's tie-break when it covers ``n_rows`` rows; else seed 0 with the row index as user
    (a retriever that ranks its batch in pieces should pass ``current_tie_break(...).select(rows)``)."""
    tie = _CURRENT.get()
    if tie is not None and tie.users.numel() == n_rows:
        return tie
    seed = tie.seed if tie is not None else 0
    return TieBreak(seed, torch.arange(n_rows, device=device))


def order_by_score(scores: torch.Tensor, items: torch.Tensor, tie: TieBreak) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``(scores, items)`` sorted by score descending, ties by key ascending (two stable sorts)."""
    order = torch.argsort(tie.keys(items), dim=1, stable=True)
    scores, items = torch.gather(scores, 1, order), torch.gather(items, 1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    return torch.gather(scores, 1, order), torch.gather(items, 1, order)


def lexicographic_topk(
    scores: torch.Tensor, k: int, tie: TieBreak, items: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k <= m`` of each row of ``scores [b, m]`` in ``(score desc, key asc)`` order.

    ``items [b, m]`` are the ids of the columns (default ``0..m-1``). Keys are computed for whole rows only
    where more items tie at the k-th score than there are places left (the (k+1)-th score equals the k-th).
    """
    if k <= 0:
        return scores[:, :0], (scores[:, :0].long() if items is None else items[:, :0])
    values, pos = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    if values.shape[1] > k:
        crowded = (values[:, k] == values[:, k - 1]).nonzero().squeeze(1)
        values, pos = values[:, :k], pos[:, :k]
    else:
        crowded = pos.new_empty(0)
    if crowded.numel():
        sub, cut = scores[crowded], values[crowded, k - 1 : k]
        sub_items = (
            torch.arange(scores.shape[1], device=scores.device).expand_as(sub) if items is None else items[crowded]
        )
        keys = tie.select(crowded).keys(sub_items)
        selector = torch.where(
            sub > cut, torch.full_like(keys, -1), torch.where(sub == cut, keys, torch.full_like(keys, _NOT_CANDIDATE))
        )
        pos[crowded] = torch.topk(selector, k, dim=1, largest=False).indices
    chosen = pos if items is None else torch.gather(items, 1, pos)
    return order_by_score(torch.gather(scores, 1, pos), chosen, tie)


def _full_precision(scores: torch.Tensor) -> torch.Tensor:
    """float32/float64 kept as they are (no down-cast that creates ties); other dtypes up to float32."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.to(torch.float32)


def mask_excluded(scores: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """Set the scores of excluded items (``exclude`` -1 padded) to -inf, in place."""
    if exclude is not None and exclude.numel():
        rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(exclude)
        valid = exclude >= 0
        scores[rows[valid], exclude[valid]] = float("-inf")
    return scores


def _finish(values: torch.Tensor, items: torch.Tensor, k: int) -> Ranking:
    """-inf entries become id -1; rows padded with -1 / -inf up to k."""
    items = torch.where(torch.isneginf(values), torch.full_like(items, -1), items)
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_full((items.shape[0], pad), -1)], dim=1)
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], dim=1)
    return Ranking(items=items, scores=values)


def topk_scores(
    scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None, tie: TieBreak | None = None
) -> Ranking:
    """Top-k of a ``[b, n_items]`` score matrix; excluded or -inf items come back as id -1.

    Ties are broken by ``tie`` (default: :func:`current_tie_break`); float64 scores stay float64.
    """
    watch = _WATCH.get()
    watched = watch is not None and scores is watch.tensor and not watch.checked
    scores = mask_excluded(_full_precision(scores).clone(), exclude)
    tie = tie or current_tie_break(scores.shape[0], scores.device)
    values, items = lexicographic_topk(scores, min(k, scores.shape[1]), tie)
    if (
        watched and watch is not None and values.shape[1]
    ):  # NaN and +inf come first in torch.topk and in the descending sort
        bad = torch.isnan(values[:, 0]) | torch.isposinf(values[:, 0])
        watch.checked = True
        watch.bad_row = int(bad.nonzero()[0, 0]) if bool(bad.any()) else None
    return _finish(values, items, k)


def topk_inner_product(
    queries: torch.Tensor,
    item_vectors: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    item_chunk: int = 65_536,
    tie: TieBreak | None = None,
) -> Ranking:
    """Top-k items by ``queries @ item_vectors.T``, scanning the catalogue in chunks with a running top-k.

    Peak memory is ``b x (k + item_chunk)`` scores, whatever the catalogue size; the result (ties included)
    equals :func:`topk_scores` on the full product.
    """
    n_items, b = item_vectors.shape[0], queries.shape[0]
    tie = tie or current_tie_break(b, queries.device)
    best_scores = _full_precision(queries.new_empty((b, 0)))
    best_items = torch.empty((b, 0), dtype=torch.long, device=queries.device)
    for lo in range(0, n_items, item_chunk):
        chunk = _full_precision(queries @ item_vectors[lo : lo + item_chunk].T)
        if exclude is not None:
            inside = (exclude >= lo) & (exclude < lo + item_chunk)
            local = torch.where(inside, exclude - lo, torch.full_like(exclude, -1))
            mask_excluded(chunk, local)
        merged_scores = torch.cat([best_scores, chunk.to(best_scores.dtype)], dim=1)
        merged_items = torch.cat(
            [best_items, torch.arange(lo, lo + chunk.shape[1], device=queries.device).expand(b, -1)], dim=1
        )
        best_scores, best_items = lexicographic_topk(merged_scores, min(k, merged_scores.shape[1]), tie, merged_items)
    return _finish(best_scores, best_items, k)
