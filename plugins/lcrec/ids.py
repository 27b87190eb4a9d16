"""LC-Rec's item indices (Zheng et al., ICDE 2024, arXiv 2311.09049, sec. III-A): RQ-VAE codes whose last level
is assigned by a uniform semantic mapping, so that no two items share an index.

LC-Rec's code applies Sinkhorn-Knopp to the last level's distance matrix (a balanced, "uniform" transport plan
between items and codes) and re-assigns the items that still collide. Here the plan is computed per group of
items that share the first ``L - 1`` codes (only they can collide), and each group's items take distinct codes
greedily in the order of the plan's confidence: the result is collision-free by construction (a group larger
than the last codebook is an error naming the fix), and an item keeps its nearest code whenever it is free.
"""

from __future__ import annotations

import torch
from genrec_bench_plugins.rqvae.model import RQVAETokenizer

from genrec_bench.errors import ConfigError


def sinkhorn(cost: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """Transport plan ``[n, K]`` with uniform marginals (rows 1/n, columns 1/K) for ``cost`` (log domain)."""
    n, k = cost.shape
    log_kernel = -cost / epsilon
    log_u, log_v = torch.zeros(n, dtype=cost.dtype), torch.zeros(k, dtype=cost.dtype)
    log_r = torch.full((n,), -torch.log(torch.tensor(float(n), dtype=cost.dtype)))
    log_c = torch.full((k,), -torch.log(torch.tensor(float(k), dtype=cost.dtype)))
    for _ in range(iters):
        log_u = log_r - torch.logsumexp(log_kernel + log_v.unsqueeze(0), dim=1)
        log_v = log_c - torch.logsumexp(log_kernel + log_u.unsqueeze(1), dim=0)
    return (log_kernel + log_u.unsqueeze(1) + log_v.unsqueeze(0)).exp()


def unique_last_codes(
    codes: torch.Tensor, distances: torch.Tensor, epsilon: float = 0.05, iters: int = 50
) -> torch.Tensor:
    """``codes`` ``[n, L]`` with the last column re-assigned so that every row is unique.

    ``distances`` ``[n, K]``: each item's squared distance from its last-level residual to every last-level code.
    """
    codes = codes.clone()
    k = distances.shape[1]
    _, group = torch.unique(codes[:, :-1], dim=0, return_inverse=True)
    for g in torch.unique(group).tolist():
        members = (group == g).nonzero().squeeze(1)
        if members.numel() < 2:
            continue
        if members.numel() > k:
            raise ConfigError(
                f"lcrec ids: {members.numel()} items share a prefix but the last codebook has {k} "
                "codes; raise codebook_size or levels"
            )
        d = distances[members].double()
        plan = sinkhorn(d / d.mean().clamp(min=1e-12), epsilon, iters)
        plan = plan / plan.sum(1, keepdim=True)
        taken = torch.zeros(k, dtype=torch.bool)
        order = plan.max(1).values.argsort(descending=True)  # the most confident items choose first
        for row in order.tolist():
            choice = int(plan[row].masked_fill(taken, -1.0).argmax())
            taken[choice] = True
            codes[members[row], -1] = choice
    return codes


class LCRecIds(RQVAETokenizer):
    """RQ-VAE (``rqvae``'s model and training) whose last level is the uniform semantic mapping: unique ids of
    exactly ``levels`` codes, no extra de-duplication code. LC-Rec's defaults: 4 levels x 256 codes, 32-d latent,
    encoder ``input -> 2048 -> 1024 -> 512 -> 256 -> 128 -> 64 -> 32``; here rqvae's defaults unless set."""

    name = "lcrec_ids"

    def __init__(
        self,
        features: str | dict = "text",
        hidden: list[int] | None = None,
        latent_dim: int = 32,
        levels: int = 4,
        codebook_size: int = 256,
        beta: float = 0.25,
        epochs: int = 200,
        batch_size: int = 1024,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iters: int = 50,
        kmeans_iters: int = 20,
    ) -> None:
        if sinkhorn_epsilon <= 0 or sinkhorn_iters < 1:
            raise ConfigError("tokenizer 'lcrec_ids': sinkhorn_epsilon > 0 and sinkhorn_iters >= 1 are required")
        super().__init__(
            features,
            hidden,
            latent_dim,
            levels,
            codebook_size,
            beta,
            0.0,
            epochs,
            batch_size,
            lr,
            weight_decay,
            dedup=False,
            kmeans_iters=kmeans_iters,
        )
        self.sinkhorn_epsilon, self.sinkhorn_iters = sinkhorn_epsilon, sinkhorn_iters
        self._distances: torch.Tensor | None = None

    @torch.no_grad()
    def _infer(self, xs: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        x_hat, codes = super()._infer(xs, chunk)
        z = torch.cat([self.model.encoder(xs[lo : lo + chunk]) for lo in range(0, xs.shape[0], chunk)])
        residual = z
        for level, codebook in enumerate(self.model.codebooks[:-1]):
            residual = residual - codebook.weight[codes[:, level]]
        last = self.model.codebooks[-1].weight
        self._distances = torch.cdist(residual.float(), last.float()).square().cpu()
        return x_hat, codes

    def _finish(self, raw: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor, loss: float) -> None:
        before = raw.clone()
        raw = unique_last_codes(raw, self._distances, self.sinkhorn_epsilon, self.sinkhorn_iters)
        super()._finish(raw, x, x_hat, loss)
        self._health["reassigned_last_codes"] = float((raw[:, -1] != before[:, -1]).float().mean())
