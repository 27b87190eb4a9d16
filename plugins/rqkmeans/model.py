"""Residual k-means semantic ids: k-means on the item features, then on what the chosen centres leave over,
level by level (r_0 = x, c_d = nearest centre of r_d, r_{d+1} = r_d - e_{c_d}).

Nothing is trained by gradient descent: each level is one vectorised Lloyd's k-means (k-means++ seeds, from the
seeded generator of the cell) over all items. The de-duplication code and the health figures (usage,
perplexity, collisions before and after de-dup, reconstruction) are the shared ones of ``rqvae``
(:class:`genrec_bench.quantize.DiscreteTokenizer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genrec_bench.context import RunContext
from genrec_bench.data.split import SplitData
from genrec_bench.errors import ConfigError
from genrec_bench.quantize import (
    Codebook,
    DiscreteTokenizer,
    QuantizedAutoencoder,
    check_positive,
    collision_figures,
    squared_distances,
)


class ResidualKMeans(QuantizedAutoencoder):
    """``levels`` codebooks over the feature space itself (no encoder): ``x_hat = sum_d e_d``."""

    def __init__(self, input_dim: int, levels: int, codebook_size: int) -> None:
        super().__init__()
        self.codebooks = nn.ModuleList(Codebook(codebook_size, input_dim) for _ in range(levels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual, total, codes = x, torch.zeros_like(x), []
        for codebook in self.codebooks:
            idx = codebook.lookup(residual)
            e = codebook.weight.detach()[idx]
            residual, total = residual - e, total + e
            codes.append(idx)
        return total, torch.stack(codes, 1), F.mse_loss(total, x)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        """k-means level by level on the residuals that the earlier levels leave."""
        residual = x
        for codebook in self.codebooks:
            codebook.init_kmeans(residual, iters, generator)
            residual = residual - codebook.weight[codebook.lookup(residual)]


class RQKMeansTokenizer(DiscreteTokenizer):
    """``levels`` residual k-means codes per item, plus the de-duplication code when ``dedup``.

    ``kmeans_iters``: Lloyd iterations per level (it stops earlier when the centres stop moving).
    ``sample``: fit the centres on a random subset of this many items (None: all items), then assign all.
    ``standardize``: z-score the features first (as ``rqvae`` does).
    ``reassign_collisions`` (with ``dedup: false``): ids stay ``levels`` codes long and unique: items that share
    an id move, nearest first, to the nearest last-level code that no other item under the same prefix holds
    (the alternative to the extra de-duplication code; ``collision_rate`` then reports the ids before moving,
    ``reassigned_items`` how many moved).
    """

    name = "rqkmeans"

    def __init__(
        self,
        features: str | dict = "text",
        levels: int = 3,
        codebook_size: int = 256,
        kmeans_iters: int = 50,
        dedup: bool = True,
        standardize: bool = True,
        sample: int | None = None,
        reassign_collisions: bool = False,
        input_dim: int | None = None,
    ) -> None:
        check_positive(self.name, levels=levels, sample=1 if sample is None else sample)
        super().__init__(
            features,
            [codebook_size] * levels,
            epochs=1,
            batch_size=max(1, sample or 1),
            lr=1.0,
            weight_decay=0.0,
            dedup=dedup,
            reseed_dead=False,
            kmeans_iters=kmeans_iters,
            standardize=standardize,
            input_dim=input_dim,
        )
        if dedup and reassign_collisions:
            raise ConfigError(
                f"tokenizer '{self.name}': reassign_collisions replaces the de-duplication code; "
                "set dedup: false with it"
            )
        self.levels, self.codebook_size, self.sample = levels, codebook_size, sample
        self.reassign_collisions = reassign_collisions
        self._reassigned = 0
        self._raw_collisions: dict[str, float] = {}

    def build(self, input_dim: int) -> ResidualKMeans:
        return ResidualKMeans(input_dim, self.levels, self.codebook_size)

    def _train(self, xs: torch.Tensor, ctx: RunContext, generator: torch.Generator) -> float:
        """No gradient steps: k-means per level on (a sample of) the items; returns the reconstruction MSE."""
        n = xs.shape[0]
        fit_on = xs
        if self.sample is not None and self.sample < n:
            fit_on = xs[torch.randperm(n, generator=generator)[: max(self.sample, self.codebook_size)].to(xs.device)]
        self.model.init_codebooks(fit_on, self.kmeans_iters, generator)
        self._reseeded = 0
        with torch.no_grad():
            return float(self.model(xs)[2])

    def fit(self, data: SplitData, ctx: RunContext) -> None:
        super().fit(data, ctx)
        if self.reassign_collisions:
            self._health.update(
                {
                    **self._raw_collisions,
                    "reassigned_items": float(self._reassigned),
                    "collision_rate_dedup": collision_figures(self.codes)["collision_rate"],
                }
            )

    @torch.no_grad()
    def _infer(self, xs: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        x_hat, codes = super()._infer(xs, chunk)
        if not self.reassign_collisions:
            return x_hat, codes
        self._raw_collisions = collision_figures(codes.cpu())
        moved = reassign_last_level(xs, codes, self.model.codebooks, self.name)
        self._reassigned = int((moved != codes).any(1).sum())
        return reconstruction(moved, self.model.codebooks), moved


def reconstruction(codes: torch.Tensor, codebooks) -> torch.Tensor:
    """``sum_d e_d`` of the chosen codes of the first ``len(codebooks)`` levels."""
    return sum(cb.weight.detach()[codes[:, level]] for level, cb in enumerate(codebooks))


def reassign_last_level(x: torch.Tensor, codes: torch.Tensor, codebooks: nn.ModuleList, who: str) -> torch.Tensor:
    """Unique ids of the same length: within every prefix (the first L-1 codes) whose items collide, give each
    item the nearest free last-level code, items with the nearest codes first. Only colliding prefixes move."""
    codes = codes.clone()
    last = codebooks[-1].weight.detach()
    residual = x - reconstruction(codes, codebooks[:-1])
    _, group, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    colliding = (counts[group] > 1).nonzero().flatten()
    if colliding.numel() == 0:
        return codes
    _, prefix_of = torch.unique(codes[:, :-1], dim=0, return_inverse=True)
    for prefix in torch.unique(prefix_of[colliding]).tolist():
        members = (prefix_of == prefix).nonzero().flatten()
        if members.numel() > last.shape[0]:
            raise ConfigError(
                f"tokenizer '{who}': {members.numel()} items share one prefix but the last level has "
                f"{last.shape[0]} codes; use dedup: true (the extra code) or a larger codebook_size"
            )
        dist = squared_distances(residual[members], last)  # [m, K]
        taken = torch.zeros(last.shape[0], dtype=torch.bool, device=last.device)
        for row in torch.argsort(dist.min(1).values).tolist():
            choice = int(dist[row].masked_fill(taken, float("inf")).argmin())
            taken[choice] = True
            codes[members[row], -1] = choice
    return codes
