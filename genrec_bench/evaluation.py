"""Full-ranking evaluation in user batches: per-user metric arrays at every K, aggregated in one place.

Every ranking is validated before it is scored (:func:`ranking_violation`), and so is a generator output that
is a score matrix (:func:`score_matrix_violation`); a violation raises :class:`InvalidOutput`, one line naming
the method, the component, the stage, the rule and the first offending user.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .context import RunContext
from .data.split import SplitData, UserBatch
from .errors import GenrecError
from .interfaces import Generator, Ranking, Retriever
from .ranking import ScoreWatch, tie_breaking

MetricFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


class InvalidOutput(GenrecError):
    """A generator or retriever output that breaks an evaluation rule: the cell fails, nothing is scored."""


def eval_batch_size(n_items: int, memory_budget_mb: float = 256.0, cap: int = 1024) -> int:
    """Users per batch so that one ``[batch, n_items]`` float32 score matrix fits the budget."""
    return max(1, min(cap, int(memory_budget_mb * 2**20 // (4 * max(1, n_items)))))


def _first(bad: torch.Tensor) -> tuple[int, int] | None:
    """(row, column) of the first True of a ``[b, m]`` mask, or None."""
    if not bool(bad.any()):
        return None
    row = int(bad.any(1).nonzero()[0, 0])
    return row, int(bad[row].nonzero()[0, 0])


def history_keys(split: SplitData, stage: str) -> np.ndarray | None:
    """Sorted ``user * (n_items + 1) + item`` of every item that ``split.batches(stage)`` excludes (each user's
    history before the stage's target), or None when nothing is excluded; cached on the split per stage."""
    if not getattr(split, "exclude_history", False) or not hasattr(split.dataset, "offsets"):
        return None
    cache = split.__dict__.setdefault("_excluded_keys", {})
    if stage not in cache:
        data = split.dataset
        starts = data.offsets[:-1]
        lengths = np.maximum(data.offsets[1:] - (2 if stage == "valid" else 1) - starts, 0)
        owner = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
        pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)
        cache[stage] = np.sort(owner * (split.n_items + 1) + data.items[pos])
    return cache[stage]


def _excluded(
    items: np.ndarray, exclude: np.ndarray | None, n_items: int, history: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """Bool ``[b, k]``: ranked ids that their row excludes. With ``history`` (sorted keys from
    :func:`history_keys`, the rows' users) a binary search, O(b k log n); else a ``[b, n_items + 1]`` mask."""
    items = items.astype(np.int64, copy=False)
    if history is not None:
        keys, users = history
        if not keys.size:
            return np.zeros(items.shape, dtype=bool)
        query = users.astype(np.int64)[:, None] * (n_items + 1) + items
        pos = np.minimum(np.searchsorted(keys, query.ravel()), keys.size - 1).reshape(query.shape)
        return (keys[pos] == query) & (items >= 0)
    banned = np.zeros((items.shape[0], n_items + 1), dtype=bool)
    if exclude is not None:
        np.put_along_axis(banned, exclude.astype(np.int64) + 1, True, axis=1)  # column 0: padding (-1)
    banned[:, 0] = False
    return np.take_along_axis(banned, items + 1, axis=1)


def _first_np(bad: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first True of a ``[b, m]`` mask, or None."""
    if not bad.size:
        return None
    flat = int(np.argmax(bad))
    return divmod(flat, bad.shape[1]) if bad.flat[flat] else None


def ranking_violation(
    ranking: Any,
    k: int,
    n_items: int,
    exclude: torch.Tensor | None,
    n_rows: int,
    history: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[str, int | None, str] | None:
    """The first rule a ranking breaks, as ``(rule, row, detail)``, or None when it is valid.

    Rules: a Ranking of tensors; ``items`` and ``scores`` of shape ``[n_rows, k]``; integer item ids in
    ``0..n_items-1`` or -1 (padding); no id twice in a row (-1 aside); no excluded item; finite scores
    wherever the id is not -1. Vectorised in NumPy on a host copy of the ``[b, k]`` ranking (cheaper than many
    small torch calls); ``history`` (see :func:`_excluded`) makes the exclusion check independent of the
    history length.
    """
    items, scores = getattr(ranking, "items", None), getattr(ranking, "scores", None)
    if not isinstance(ranking, Ranking) or not isinstance(items, torch.Tensor) or not isinstance(scores, torch.Tensor):
        return "rank() returns a Ranking of two tensors", None, f"got {type(ranking).__name__}"
    for name, tensor in (("items", items), ("scores", scores)):
        if tuple(tensor.shape) != (n_rows, k):
            return "shape [users, k]", None, f"{name} of shape {tuple(tensor.shape)}, expected {(n_rows, k)}"
    if items.dtype == torch.bool or items.is_floating_point() or items.is_complex():
        return "integer item ids", None, f"items have dtype {items.dtype}"
    if scores.dtype == torch.bool or scores.is_complex():
        return "real scores", None, f"scores have dtype {scores.dtype}"
    ids = items.detach().cpu().numpy()
    host = scores.detach().cpu()
    values = (host if host.dtype in (torch.float32, torch.float64) else host.double()).numpy()
    found = _first_np((ids < -1) | (ids >= n_items))
    if found:
        return f"ids in 0..{n_items - 1} or -1", found[0], f"ranks item {int(ids[found])}"
    ordered = np.sort(ids, axis=1)  # duplicates become neighbours; the exclusion search gets ascending queries
    found = _first_np((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0))
    if found:
        return "no item twice in a row", found[0], f"ranks item {int(ordered[found[0], found[1] + 1])} twice"
    if exclude is not None and exclude.numel():
        banned = None if history is not None else exclude.detach().cpu().numpy()
        found = _first_np(_excluded(ordered, banned, n_items, history))
        if found:
            return "no excluded item", found[0], f"ranks item {int(ordered[found])}, which is excluded (its history)"
    found = _first_np(~np.isfinite(values) & (ids >= 0))
    if found:
        return "finite scores for ranked items", found[0], f"item {int(ids[found])} has score {float(values[found])}"
    return None


MATRIX_RULE = "score matrix without NaN or +inf"


def is_score_matrix(outputs: Any, n_items: int) -> bool:
    """A generator output that is a float ``[b, n_items]`` tensor."""
    return (
        isinstance(outputs, torch.Tensor)
        and outputs.is_floating_point()
        and outputs.dim() == 2
        and outputs.shape[1] == n_items
    )


def score_matrix_violation(outputs: Any, n_items: int) -> tuple[str, int | None, str] | None:
    """For a generator output that is a float ``[b, n_items]`` score matrix: no NaN or +inf (-inf means
    'never rank this item'), in one read pass. Other outputs are the retriever's business and pass."""
    if not is_score_matrix(outputs, n_items):
        return None
    if outputs.stride(0) == 0:  # one row expanded to the batch (popularity): check it once
        outputs = outputs[:1]
    if outputs.is_contiguous() and outputs.dtype in (torch.float32, torch.float64):
        flat = outputs.view(-1)  # one read pass: the sum of squares is finite unless a NaN or inf is there
        if bool(torch.isfinite(torch.dot(flat, flat))):  # (or huge values overflow: then the exact check below)
            return None
    else:
        total = outputs.sum()  # finite or -inf unless a NaN or +inf is there (or finite values overflow)
        if bool(torch.isfinite(total)) or bool(torch.isneginf(total)):
            return None
    found = _first(torch.isnan(outputs) | torch.isposinf(outputs))
    if found:
        return MATRIX_RULE, found[0], f"item {found[1]} has score {float(outputs[found])}"
    return None


def _generator_check(
    outputs: Any, watch: ScoreWatch | None, ranking: Any, n_items: int
) -> tuple[str, int | None, str] | None:
    """The score-matrix rule: read from the retriever's own top-k when it ranked the matrix with
    ``topk_scores`` (no extra pass), else by :func:`score_matrix_violation`."""
    if watch is None or not watch.checked or not isinstance(ranking, Ranking):
        return score_matrix_violation(outputs, n_items)
    if watch.bad_row is None:
        return None
    row = watch.bad_row
    return MATRIX_RULE, row, f"item {int(ranking.items[row, 0])} has score {float(ranking.scores[row, 0])}"


def _raise(found: tuple[str, int | None, str], who: str, stage: str, batch: UserBatch, split: SplitData) -> None:
    rule, row, detail = found
    user = ""
    if row is not None:
        index = int(batch.users[row])
        ids = getattr(split.dataset, "user_ids", None)
        user = f"user {ids[index] if ids is not None else index}: "
    raise InvalidOutput(f"{who} at stage {stage}: broke rule '{rule}' ({user}{detail})")


def ranking_hits(
    generator: Generator,
    retriever: Retriever,
    split: SplitData,
    stage: str,
    k: int,
    ctx: RunContext,
    batch_size: int,
    users: np.ndarray | None = None,
    names: dict[str, str] | None = None,
) -> np.ndarray:
    """Bool ``[n_users, k]``: whether the item at each rank is the user's held-out item.

    Generator score matrices and rankings are validated before anything is scored; ties are broken with the
    cell seed (``ctx.seed``) and the users' indices. ``names`` ("method", "generator", "retriever") label errors.
    """
    names = {
        "method": "?",
        "generator": type(generator).__name__,
        "retriever": type(retriever).__name__,
        **(names or {}),
    }
    method = f"method {names['method']!r}"
    users = np.arange(split.n_users) if users is None else users
    out = np.zeros((len(users), k), dtype=bool)
    row = 0
    batches = split.batches(stage, batch_size, users=users, device=ctx.device)
    total = math.ceil(len(users) / batch_size)
    keys = history_keys(split, stage)
    with torch.inference_mode():
        for batch in ctx.progress(batches, desc=f"evaluate {stage}", total=total):
            outputs = generator.generate(batch, ctx)
            watch = ScoreWatch(outputs) if is_score_matrix(outputs, split.n_items) else None
            try:
                with tie_breaking(ctx.seed, batch.users, watch):
                    ranking = retriever.rank(outputs, k, batch.exclude)
            except Exception as exc:  # a retriever that chokes on NaN scores: blame the generator
                found = score_matrix_violation(outputs, split.n_items)
                if found:
                    try:
                        _raise(found, f"{method} generator {names['generator']!r}", stage, batch, split)
                    except InvalidOutput as invalid:
                        raise invalid from exc
                raise
            found = _generator_check(outputs, watch, ranking, split.n_items)
            if found:
                _raise(found, f"{method} generator {names['generator']!r}", stage, batch, split)
            history = None if keys is None else (keys, batch.users.cpu().numpy())
            found = ranking_violation(ranking, k, split.n_items, batch.exclude, len(batch), history)
            if found:
                _raise(found, f"{method} retriever {names['retriever']!r}", stage, batch, split)
            out[row : row + len(batch)] = (ranking.items == batch.targets[:, None]).cpu().numpy()
            row += len(batch)
    return out


def per_user_metrics(hits: np.ndarray, ks: list[int], metrics: dict[str, MetricFn]) -> dict[str, np.ndarray]:
    """``{"ndcg@10": float64[n_users], ...}`` from a hit matrix (one relevant item per user)."""
    n_relevant = np.ones(hits.shape[0], dtype=np.int64)
    return {
        f"{name}@{k}": np.asarray(fn(hits, n_relevant, k), dtype=np.float64) for name, fn in metrics.items() for k in ks
    }


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over users: the one place where per-user values are aggregated."""
    return {name: float(values.mean()) if values.size else float("nan") for name, values in per_user.items()}
