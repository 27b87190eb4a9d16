"""DeftRec's parts around ContRec's LLM and diffusion module: the residual denoiser, the condition pooling,
the diffusion head with negative interactions, and the negative samplers."""

from __future__ import annotations

import numpy as np
import torch
from genrec_bench_plugins.contrec.diffusion import GaussianDiffusion
from genrec_bench_plugins.contrec.model import ConditionEncoder
from torch import nn

from genrec_bench.errors import ConfigError

SAMPLERS = ("uniform", "popularity", "in-batch")
POOLINGS = ("mean", "recency", "encoder")


class ResidualDenoiser(nn.Module):
    """DeftRec's ``ddpm.MLP``: h = x_t + c_remap(c) + PE(t), then residual blocks
    [ReLU-Dropout-Linear(dim, hidden)-ReLU-Dropout-Linear(hidden, dim)]; PE is a frozen Xavier table ``[T, dim]``."""

    def __init__(self, dim: int, cond_dim: int, steps: int, hidden: int = 512, blocks: int = 2, dropout: float = 0.2):
        super().__init__()
        self.dim = dim

        def mlp(d_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(d_in, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, dim),
            )

        self.c_remap = mlp(cond_dim)
        self.blocks = nn.ModuleList(mlp(dim) for _ in range(blocks))
        self.register_buffer("pe", nn.init.xavier_normal_(torch.empty(steps, dim)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = x + self.c_remap(cond.to(x.dtype)) + self.pe[t].to(x.dtype)
        for block in self.blocks:
            h = h + block(h)
        return h


class MeanPool(nn.Module):
    """The released ``conditioning: ave``: the mean of the condition states over valid positions."""

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.to(states.dtype).unsqueeze(-1)
        return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def pooled_dim(pooling: str, hidden: int, cond_dim: int) -> int:
    """Width of the pooled condition: ``cond_dim`` for the encoder, the LLM's ``hidden`` for the weighted means."""
    return cond_dim if pooling == "encoder" else hidden


def rank_from_end(mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` rank of each valid position counted from the row's last valid one (0), backwards; padding
    positions get the rank of the next valid position after them (mask them out)."""
    return mask.flip(1).long().cumsum(1).flip(1) - 1


class RecencyPool(nn.Module):
    """A softmax-weighted mean of the condition states by recency: position r (0 = the last valid one, then
    backwards) gets the learnable logit ``logits[r]``, initialised to ``r * log(decay)`` (weights ``decay ** r``;
    decay 1 starts as ``MeanPool``). Order-keeping, and as cheap as the mean: it feeds DeftRec's residual denoiser
    the same kind of vector (a weighted average of LLM states), where ``ConditionEncoder`` feeds it a new one."""

    def __init__(self, max_len: int, decay: float):
        super().__init__()
        if not 0 < decay <= 1:
            raise ConfigError(f"generator 'deftrec'.recency_decay: expected 0 < decay <= 1, got {decay}")
        self.decay = decay
        self.logits = nn.Parameter(self._initial_logits(max_len))

    def _initial_logits(self, max_len: int) -> torch.Tensor:
        return torch.arange(max_len, dtype=torch.float32) * float(np.log(self.decay))

    def weight_on_last(self, n: int) -> tuple[float, float]:
        """The pooled weight on the last ``n`` positions of a full row: now, and at initialisation."""
        now = torch.softmax(self.logits.detach().float(), 0)[:n].sum()
        start = torch.softmax(self._initial_logits(len(self.logits)), 0)[:n].sum()
        return float(now), float(start)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rank = rank_from_end(mask).clamp(0, len(self.logits) - 1)
        logits = self.logits[rank].masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a row with no valid position pools to 0
        return (states * weights.unsqueeze(-1).to(states.dtype)).sum(1)


class DeftHead(nn.Module):
    """Pooling of the LLM's answer states into a condition, and the epsilon-prediction diffusion over item vectors."""

    def __init__(
        self,
        pooling: str,
        hidden: int,
        cond_dim: int,
        max_len: int,
        denoiser: nn.Module,
        recency_decay: float = 1.0,
        **diffusion_args,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"generator 'deftrec'.pooling: expected one of {', '.join(POOLINGS)}, got {pooling!r}")
        pools = {
            "mean": MeanPool,
            "recency": lambda: RecencyPool(max_len, recency_decay),
            "encoder": lambda: ConditionEncoder(hidden, cond_dim, max_len),
        }
        self.pool = pools[pooling]()
        self.diffusion = GaussianDiffusion(denoiser, pooled_dim(pooling, hidden, cond_dim), **diffusion_args)

    def loss(self, states, mask, x0, negatives, generator=None, weights=None, repeats: int = 1, draws=None):
        """(positive MSE, negative BPR term, x0 estimate); see ``GaussianDiffusion.negative_loss``. ``repeats``
        reuses each condition for that many (t, noise) draws (MAR's ``diffusion_batch_mul``): more diffusion
        signal per LLM pass."""
        cond = self.pool(states, mask).float()
        if repeats > 1:
            cond, x0, negatives = (v.repeat_interleave(repeats, dim=0) for v in (cond, x0, negatives))
            weights = None if weights is None else weights.repeat_interleave(repeats, dim=0)
        return self.diffusion.negative_loss(x0, negatives, cond, generator, weights, draws)

    def sample(self, states, mask, generator=None) -> torch.Tensor:
        return self.diffusion.sample(self.pool(states, mask).float(), generator=generator)


class NegativeSampler:
    """Negative items per training row: ``uniform`` over the catalogue, ``popularity`` (training counts ** alpha)
    or ``in-batch`` (other rows' targets). ``__call__`` returns ids ``[B, n]`` and weights (0 where a negative is
    the row's own target)."""

    def __init__(self, kind: str, n: int, counts: np.ndarray, alpha: float = 1.0):
        if kind not in SAMPLERS:
            raise ConfigError(
                f"generator 'deftrec'.negative_sampler: expected one of {', '.join(SAMPLERS)}, got {kind!r}"
            )
        if n < 1:
            raise ConfigError(f"generator 'deftrec'.n_negatives: expected >= 1, got {n}")
        self.kind, self.n, self.n_items = kind, n, len(counts)
        weights = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0) ** alpha
        self.probs = weights / weights.sum() if float(weights.sum()) > 0 else torch.full_like(weights, 1 / len(counts))

    def __call__(
        self, targets: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        targets = targets.cpu()
        b = targets.shape[0]
        if self.kind == "uniform":
            neg = torch.randint(self.n_items, (b, self.n), generator=generator)
        elif self.kind == "popularity":
            neg = torch.multinomial(self.probs, b * self.n, replacement=True, generator=generator).view(b, self.n)
        else:  # another row of the batch: a random non-zero offset
            if b < 2:
                raise ConfigError("generator 'deftrec': in-batch negatives need batch_size >= 2")
            offset = torch.randint(1, b, (b, self.n), generator=generator)
            neg = targets[(torch.arange(b).unsqueeze(1) + offset) % b]
        return neg, (neg != targets.unsqueeze(1)).float()
