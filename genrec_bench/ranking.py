"""Full-catalogue top-k with exclusion, shared by retrievers; memory bounded by the caller's batch."""
from __future__ import annotations

import torch

from .interfaces import Ranking


def mask_excluded(scores: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
    """Set the scores of excluded items (``exclude`` -1 padded) to -inf, in place."""
    if exclude is not None and exclude.numel():
        rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(exclude)
        valid = exclude >= 0
        scores[rows[valid], exclude[valid]] = float("-inf")
    return scores


def topk_scores(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> Ranking:
    """Top-k of a ``[b, n_items]`` score matrix; excluded or -inf items come back as id -1."""
    scores = mask_excluded(scores.to(torch.float32, copy=True), exclude)
    k_eff = min(k, scores.shape[1])
    values, items = torch.topk(scores, k_eff, dim=1)
    items = torch.where(torch.isneginf(values), torch.full_like(items, -1), items)
    if k_eff < k:
        pad = k - k_eff
        items = torch.cat([items, items.new_full((items.shape[0], pad), -1)], dim=1)
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], dim=1)
    return Ranking(items=items, scores=values)


def topk_inner_product(queries: torch.Tensor, item_vectors: torch.Tensor, k: int,
                       exclude: torch.Tensor | None = None, item_chunk: int = 65_536) -> Ranking:
    """Top-k items by ``queries @ item_vectors.T``, scanning the catalogue in chunks with a running top-k.

    Peak memory is ``b x item_chunk`` floats, whatever the catalogue size.
    """
    n_items = item_vectors.shape[0]
    best_scores = queries.new_full((queries.shape[0], 0), float("-inf")).float()
    best_items = torch.empty((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    for lo in range(0, n_items, item_chunk):
        chunk = (queries @ item_vectors[lo:lo + item_chunk].T).float()
        if exclude is not None:
            local = torch.where((exclude >= lo) & (exclude < lo + item_chunk), exclude - lo, torch.full_like(exclude, -1))
            mask_excluded(chunk, local)
        merged_scores = torch.cat([best_scores, chunk], dim=1)
        merged_items = torch.cat([best_items, torch.arange(lo, lo + chunk.shape[1], device=queries.device)
                                  .expand(chunk.shape[0], -1)], dim=1)
        top_scores, pos = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
        best_scores, best_items = top_scores, torch.gather(merged_items, 1, pos)
    best_items = torch.where(torch.isneginf(best_scores), torch.full_like(best_items, -1), best_items)
    if best_items.shape[1] < k:
        pad = k - best_items.shape[1]
        best_items = torch.cat([best_items, best_items.new_full((best_items.shape[0], pad), -1)], dim=1)
        best_scores = torch.cat([best_scores, best_scores.new_full((best_scores.shape[0], pad), float("-inf"))], 1)
    return Ranking(items=best_items, scores=best_scores)
