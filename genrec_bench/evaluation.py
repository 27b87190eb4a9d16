"""Full-ranking evaluation in user batches: per-user metric arrays at every K, aggregated in one place."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .context import RunContext
from .data.split import SplitData
from .interfaces import Generator, Retriever

MetricFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def eval_batch_size(n_items: int, memory_budget_mb: float = 256.0, cap: int = 1024) -> int:
    """Users per batch so that one ``[batch, n_items]`` float32 score matrix fits the budget."""
    return max(1, min(cap, int(memory_budget_mb * 2**20 // (4 * max(1, n_items)))))


def ranking_hits(generator: Generator, retriever: Retriever, split: SplitData, stage: str, k: int,
                 ctx: RunContext, batch_size: int, users: np.ndarray | None = None) -> np.ndarray:
    """Bool ``[n_users, k]``: whether the item at each rank is the user's held-out item."""
    users = np.arange(split.n_users) if users is None else users
    out = np.zeros((len(users), k), dtype=bool)
    row = 0
    batches = split.batches(stage, batch_size, users=users, device=ctx.device)
    total = math.ceil(len(users) / batch_size)
    with torch.inference_mode():
        for batch in ctx.progress(batches, desc=f"evaluate {stage}", total=total):
            ranking = retriever.rank(generator.generate(batch, ctx), k, batch.exclude)
            if ranking.items.shape != (len(batch), k):
                raise RuntimeError(f"retriever returned rankings of shape {tuple(ranking.items.shape)}, "
                                   f"expected {(len(batch), k)}")
            out[row:row + len(batch)] = (ranking.items == batch.targets[:, None]).cpu().numpy()
            row += len(batch)
    return out


def per_user_metrics(hits: np.ndarray, ks: list[int], metrics: dict[str, MetricFn]) -> dict[str, np.ndarray]:
    """``{"ndcg@10": float64[n_users], ...}`` from a hit matrix (one relevant item per user)."""
    n_relevant = np.ones(hits.shape[0], dtype=np.int64)
    return {f"{name}@{k}": np.asarray(fn(hits, n_relevant, k), dtype=np.float64)
            for name, fn in metrics.items() for k in ks}


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over users: the one place where per-user values are aggregated."""
    return {name: float(values.mean()) if values.size else float("nan") for name, values in per_user.items()}
