"""Building blocks of the discrete tokenizers: MLPs, k-means, a codebook with dead-code re-seeding,
code-usage and collision figures, and the extra code that makes colliding ids unique."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``||x_i - c_j||^2`` for all pairs, ``[n, k]``."""
    return (x.square().sum(1, keepdim=True) - 2 * x @ centroids.T + centroids.square().sum(1)).clamp(min=0)


@torch.no_grad()
def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding: each next centre drawn with probability proportional to its squared distance."""
    n = x.shape[0]
    picks = [int(torch.randint(n, (1,), generator=generator))]
    d2 = (x - x[picks[0]]).square().sum(1)
    for _ in range(1, k):
        weights = d2.double().cpu()
        if float(weights.sum()) > 0:
            pick = int(torch.multinomial(weights, 1, generator=generator))
        else:  # every point coincides with a centre already
            pick = int(torch.randint(n, (1,), generator=generator))
        picks.append(pick)
        d2 = torch.minimum(d2, (x - x[pick]).square().sum(1))
    return x[torch.tensor(picks, device=x.device)].clone()


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means from k-means++ seeds; an emptied cluster moves to the worst-fitted point."""
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} points, got {x.shape[0]}")
    centroids = kmeans_plus_plus(x, k, generator)
    for _ in range(iters):
        best, assign = squared_distances(x, centroids).min(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        new = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            new[empty] = x[best.topk(empty.numel()).indices]
        if torch.equal(new, centroids):
            break
        centroids = new
    return centroids


class Codebook(nn.Module):
    """``size`` codes of ``dim`` dimensions, nearest-code lookup and the VQ losses.

    ``forward(r)`` returns the chosen code vectors (no straight-through: the caller applies it), their indices,
    and ``||sg[r] - e||^2 + beta ||r - sg[e]||^2``. Usage is counted in training so that codes unused for an epoch
    can be re-seeded from recent inputs (:meth:`reseed_dead`).
    """

    usage: torch.Tensor  # buffer: how often each code was chosen since the last reseed

    def __init__(self, size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.size, self.dim, self.beta = size, dim, beta
        self.weight = nn.Parameter(torch.empty(size, dim).uniform_(-1 / size, 1 / size))
        self.register_buffer("usage", torch.zeros(size, dtype=torch.long))
        self.recent: torch.Tensor | None = None

    def lookup(self, r: torch.Tensor) -> torch.Tensor:
        return squared_distances(r.detach(), self.weight.detach()).argmin(1)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.lookup(r)
        e = self.weight[idx]
        loss = F.mse_loss(e, r.detach()) + self.beta * F.mse_loss(r, e.detach())
        if self.training:
            self.usage += torch.bincount(idx, minlength=self.size)
            self.recent = r.detach()
        return e, idx, loss

    @torch.no_grad()
    def init_kmeans(self, r: torch.Tensor, iters: int, generator: torch.Generator | None) -> None:
        self.weight.copy_(kmeans(r.detach().float(), self.size, iters, generator).to(self.weight.dtype))
        self.usage.zero_()

    @torch.no_grad()
    def reseed_dead(self, generator: torch.Generator | None) -> int:
        """Move codes unused since the last call onto random recent inputs; returns how many moved."""
        dead = (self.usage == 0).nonzero().flatten()
        if dead.numel() and self.recent is not None and self.recent.shape[0]:
            pick = torch.randint(self.recent.shape[0], (dead.numel(),), generator=generator).to(dead.device)
            noise = torch.randn(dead.numel(), self.dim, generator=generator).to(self.weight)
            scale = self.recent.std(0, unbiased=False).mean().clamp(min=1e-6) * 1e-2
            self.weight[dead] = self.recent[pick].to(self.weight) + noise * scale
        else:
            dead = dead[:0]
        self.usage.zero_()
        return int(dead.numel())


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """``z_q`` in the forward pass, the identity for ``z`` in the backward pass."""
    return z + (z_q - z).detach()


def usage_and_perplexity(codes: torch.Tensor, size: int) -> tuple[float, float]:
    """Fraction of the ``size`` codes used by ``codes [n]`` and the perplexity ``exp(entropy)`` of their use."""
    counts = torch.bincount(codes.flatten().long(), minlength=size).double()
    p = counts[counts > 0] / counts.sum()
    return float((counts > 0).sum() / size), float(torch.exp(-(p * p.log()).sum()))


def group_ranks(codes: torch.Tensor) -> torch.Tensor:
    """For each row, how many earlier rows (by index) have the same code tuple: ``int64 [n]``.

    Appended as an extra code, it makes every tuple unique: (12,24,52,0), (12,24,52,1), ...
    """
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.sort(inverse, stable=True).indices
    sorted_groups = inverse[order]
    starts = torch.searchsorted(sorted_groups, sorted_groups, right=False)
    ranks = torch.empty_like(inverse)
    ranks[order] = torch.arange(len(order), device=codes.device) - starts
    return ranks


def collision_figures(codes: torch.Tensor) -> dict[str, float]:
    """``collision_rate`` = 1 - distinct tuples / items; ``collided_items`` = share of items whose tuple is shared;
    ``max_collision`` = the most items behind one tuple."""
    n = codes.shape[0]
    _, inverse, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return {
        "collision_rate": 1.0 - counts.numel() / n,
        "collided_items": float((counts[inverse] > 1).sum()) / n,
        "max_collision": float(counts.max()),
    }


def code_health(codes: torch.Tensor, sizes: list[int]) -> dict[str, float]:
    """Per-level usage and perplexity (``usage_l0``, ``perplexity_l0``, ...) and collision figures of
    ``codes [n, L]``."""
    out: dict[str, float] = {}
    for level, size in enumerate(sizes):
        out[f"usage_l{level}"], out[f"perplexity_l{level}"] = usage_and_perplexity(codes[:, level], size)
    out.update(collision_figures(codes))
    out["min_usage"] = min(out[f"usage_l{level}"] for level in range(len(sizes)))
    return out
