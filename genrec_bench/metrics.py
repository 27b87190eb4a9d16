"""Per-user top-K ranking metrics. Every function keeps one value per user; aggregation is elsewhere.

Inputs: ``hits`` bool ``[n_users, >=k]``, ``hits[u, r]`` is True when the item ranked ``r+1`` for user ``u``
is relevant; ``n_relevant`` int ``[n_users]`` (1 under leave-one-out). Definitions (rank r counts from 1):

- Recall@K = |relevant in top K| / n_relevant
- HR@K     = 1 if any relevant item is in the top K, else 0 (equals Recall@K with one target)
- NDCG@K   = sum_{r<=K, hit} 1/log2(r+1) / IDCG@K, IDCG@K = sum_{r<=min(K, n_relevant)} 1/log2(r+1)
- MRR@K    = 1/r of the first relevant item within the top K, else 0
- Precision@K = |relevant in top K| / K
"""

from __future__ import annotations

import numpy as np


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    if hits.shape[1] < k:
        raise ValueError(f"need rankings of at least {k} items, got {hits.shape[1]}")
    return hits[:, :k].astype(np.float64)


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return _top(hits, k).sum(axis=1) / np.maximum(n_relevant, 1)


def hit_rate(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return _top(hits, k).max(axis=1, initial=0.0)


def precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    return _top(hits, k).sum(axis=1) / k


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = _top(hits, k) @ discounts
    ideal = np.cumsum(discounts)[np.clip(np.asarray(n_relevant), 1, k) - 1]
    return dcg / ideal


def mrr(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    top = _top(hits, k)
    first = top.argmax(axis=1)
    return np.where(top.max(axis=1, initial=0.0) > 0, 1.0 / (first + 1), 0.0)


BUILTIN = {"recall": recall, "ndcg": ndcg, "mrr": mrr, "hr": hit_rate, "precision": precision}
