"""Dispersive loss (Wang & He 2025, InfoNCE-L2 variant): a regulariser that pushes a batch of representations apart."""

from __future__ import annotations

import math

import torch


def dispersive_loss(z: torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """``log mean_{i,j} exp(-||z_i - z_j||^2 / tau)`` over all ``B^2`` ordered pairs (``i = j`` included).

    ``tau`` defaults to the feature dimension, as in the official code. The value is at most 0 (all samples equal)
    and falls towards ``-log B`` as the samples spread out, so *minimising* it disperses the batch; ContRec's released
    code returns the negation, which pulls samples together (docs/contrec.md).
    """
    z = z.reshape(z.shape[0], -1).float()
    tau = float(z.shape[1]) if tau is None else float(tau)
    sq = (z.square().sum(1, keepdim=True) + z.square().sum(1) - 2 * z @ z.T).clamp(min=0)
    return torch.logsumexp((-sq / tau).flatten(), dim=0) - math.log(z.shape[0] ** 2)
