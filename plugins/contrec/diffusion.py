"""Conditional Gaussian diffusion over vectors, reusable by ContRec and DeftRec.

Options: prediction target (``x0`` as ContRec/DreamRec, ``epsilon`` as DeftRec/DDPM), beta schedule (``exp`` of
DreamRec, ``linear``, ``cosine``), number of training steps T, respaced DDIM sampling with ``sample_steps`` steps
(``eta = 1`` is ancestral DDPM; with ``sample_steps = T`` it is exactly DreamRec's sampler), classifier-free
guidance with a learned null condition and condition dropout, and DeftRec's BPR-style negative term
(``negative_loss``). The denoiser is any module ``f(x_t, cond, t)`` with an attribute ``dim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genrec_bench.errors import ConfigError

PREDICTIONS = ("x0", "epsilon")
SCHEDULES = ("exp", "linear", "cosine")


@dataclass
class Draws:
    """The random draws of one training step, per row: diffusion step, noise, classifier-free dropout.

    Drawn for a whole global batch and cut to a rank's rows (``take``), so that data-parallel training sees the
    same draws as one process."""

    t: torch.Tensor
    noise: torch.Tensor
    drop: torch.Tensor

    def take(self, shard) -> Draws:
        return Draws(shard.take(self.t), shard.take(self.noise), shard.take(self.drop))


def beta_schedule(
    kind: str,
    steps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    beta_min: float = 0.1,
    beta_max: float = 10.0,
) -> torch.Tensor:
    """Betas ``float64 [steps]``. ``exp``: DreamRec's 1 - exp(-b_min/T - x (b_max - b_min) / 2T^2), x = 1..2T+1."""
    if kind == "exp":
        x = torch.linspace(1, 2 * steps + 1, steps, dtype=torch.float64)
        return 1 - torch.exp(-beta_min / steps - x * 0.5 * (beta_max - beta_min) / steps**2)
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    if kind == "cosine":
        s = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ConfigError(f"diffusion schedule: expected one of {', '.join(SCHEDULES)}, got {kind!r}")


def respaced_steps(steps: int, n: int) -> list[int]:
    """``n`` evenly spaced steps from ``T - 1`` down to ``0`` (both end points kept when ``n >= 2``), for DDIM."""
    n = max(1, min(int(n), steps))
    return torch.linspace(steps - 1, 0, n).round().long().unique_consecutive().tolist()


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``[B] -> [B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / max(1, half))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    return F.pad(emb, (0, dim % 2))


class Denoiser(nn.Module):
    """``f([x_t; cond; tau(t)])``. ``hidden = 0``: DreamRec's single linear layer (``mlp1``); else a residual MLP."""

    def __init__(self, dim: int, cond_dim: int, hidden: int = 0, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.time = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dim = dim
        width = dim + cond_dim + dim
        if hidden <= 0:
            self.net: nn.Module = nn.Linear(width, dim)
        else:
            blocks = [nn.Linear(width, hidden)]
            for _ in range(depth):
                blocks += [nn.LayerNorm(hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)]
            self.net = nn.Sequential(*blocks, nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, cond, self.time(timestep_embedding(t, self.dim))], dim=-1))


def check_sampler(where: str, steps: int, sample_steps: int | None, temperature: float) -> None:
    """Raise a ConfigError naming ``where`` unless 1 <= sample_steps <= steps (or None) and 0 <= temperature <= 1."""
    if sample_steps is not None and not 1 <= sample_steps <= steps:
        raise ConfigError(
            f"{where}.sample_steps: expected 1..{steps} (diffusion_steps) or null (all of them), got {sample_steps}"
        )
    if not 0 <= temperature <= 1:
        raise ConfigError(f"{where}.temperature: expected 0 (no noise) .. 1, got {temperature}")


class GaussianDiffusion(nn.Module):
    """DDPM training loss and DDIM/ancestral sampling for ``x0 [B, dim]`` given ``cond [B, cond_dim]``."""

    def __init__(
        self,
        denoiser: nn.Module,
        cond_dim: int,
        steps: int = 200,
        schedule: str = "exp",
        prediction: str = "x0",
        guidance: float = 2.0,
        p_uncond: float = 0.1,
        sample_steps: int | None = None,
        eta: float = 1.0,
        temperature: float = 1.0,
        **schedule_args: float,
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ConfigError(f"diffusion prediction: expected one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        check_sampler("diffusion", steps, sample_steps, temperature)
        if steps < 1 or not 0 <= p_uncond < 1:
            raise ConfigError(f"diffusion: steps must be >= 1 (got {steps}), p_uncond in [0, 1) (got {p_uncond})")
        self.denoiser, self.steps, self.prediction = denoiser, steps, prediction
        self.guidance, self.p_uncond, self.eta = guidance, p_uncond, eta
        # MAR's sampling temperature: scales x_T and every step's added noise (1: the papers' sampler; 0: the
        # deterministic path from the prior's mean, x_T = 0)
        self.temperature = float(temperature)
        # respaced sampling (choose on validation): with 1 step the sample is the guided x0 estimate at t = T
        self.sample_steps = sample_steps or steps
        # DDPM's clip_denoised for vectors: the x0 estimate at every sampling step is clamped per dimension to
        # [low, high] (``set_clip``: the item space's range); None = no clipping (the released samplers)
        self.register_buffer("clip_low", torch.empty(0), persistent=False)
        self.register_buffer("clip_high", torch.empty(0), persistent=False)
        self.null = nn.Parameter(torch.randn(cond_dim) * 0.02)  # the learned "no condition" embedding
        alpha_bar = torch.cumprod(1 - beta_schedule(schedule, steps, **schedule_args), dim=0)
        self.register_buffer("alpha_bar", alpha_bar.float(), persistent=False)

    def set_clip(self, space: torch.Tensor | None, margin: float = 0.0) -> None:
        """Clamp sampled x0 estimates to the per-dimension range of ``space [n, dim]`` (widened by ``margin``
        times each dimension's range); None switches clipping off."""
        if space is None:
            self.clip_low, self.clip_high = torch.empty(0), torch.empty(0)
            return
        low, high = space.min(0).values.float(), space.max(0).values.float()
        pad = margin * (high - low)
        self.clip_low, self.clip_high = (low - pad).to(self.alpha_bar.device), (high + pad).to(self.alpha_bar.device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.alpha_bar[t].unsqueeze(-1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def _x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, epsilon) estimates from the denoiser's output at cumulative alpha ``a [B, 1]``."""
        if self.prediction == "x0":
            return out, (x_t - a.sqrt() * out) / (1 - a).sqrt().clamp(min=1e-8)
        return (x_t - (1 - a).sqrt() * out) / a.sqrt(), out

    def draw(self, rows: int, dim: int, generator: torch.Generator | None = None) -> Draws:
        """Steps, noise and condition-dropout flags for ``rows`` training rows (on CPU)."""
        t = torch.randint(self.steps, (rows,), generator=generator)
        noise = torch.randn((rows, dim), generator=generator)
        return Draws(t, noise, torch.rand(rows, generator=generator) < self.p_uncond)

    def _draw(
        self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None, draws: Draws | None = None
    ):
        """Steps t, noise and the condition with classifier-free dropout applied (and the dropped rows)."""
        draws = draws or self.draw(x0.shape[0], x0.shape[1], generator)
        t, noise = draws.t.to(x0.device), draws.noise.to(x0.device, x0.dtype)
        drop = draws.drop.to(x0.device).unsqueeze(-1)
        cond = torch.where(drop, self.null.to(cond.dtype).expand_as(cond), cond)
        return t, noise, cond, drop.squeeze(-1)

    def loss(
        self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None, draws: Draws | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean squared error on the prediction target, and the (differentiable) x0 estimate ``[B, dim]``."""
        t, noise, cond, _ = self._draw(x0, cond, generator, draws)
        x_t = self.q_sample(x0, t, noise)
        out = self.denoiser(x_t, cond, t)
        target = x0 if self.prediction == "x0" else noise
        x0_hat, _ = self._x0_eps(out, x_t, self.alpha_bar[t].unsqueeze(-1))
        return F.mse_loss(out.float(), target.float()), x0_hat

    def negative_loss(
        self,
        x0: torch.Tensor,
        negatives: torch.Tensor,
        cond: torch.Tensor,
        generator: torch.Generator | None = None,
        weights: torch.Tensor | None = None,
        draws: Draws | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """DeftRec's objective: (positive MSE, negative term, x0 estimate of the positives).

        ``negatives [B, N, dim]`` are noised with their row's (t, noise) and denoised under the same condition;
        with e = the per-row mean squared error on the prediction target, the negative term is the BPR loss
        ``mean -log sigmoid(e_neg - e_pos)`` (over rows that kept their condition, times ``weights [B, N]``):
        minimising it makes the condition denoise the positive better than the negatives.
        """
        t, noise, cond, drop = self._draw(x0, cond, generator, draws)
        b, n, d = negatives.shape
        x_all = torch.cat([x0.unsqueeze(1), negatives.to(x0.dtype)], dim=1)  # [B, 1 + N, d]
        t_all = t.unsqueeze(1).expand(b, n + 1).reshape(-1)
        noise_all = noise.unsqueeze(1).expand(b, n + 1, d)
        x_t = self.q_sample(x_all.reshape(-1, d), t_all, noise_all.reshape(-1, d))
        out = self.denoiser(x_t, cond.repeat_interleave(n + 1, dim=0), t_all).view(b, n + 1, d)
        target = x_all if self.prediction == "x0" else noise_all
        err = (out.float() - target.float()).square().mean(-1)  # [B, 1 + N]
        w = (~drop).float().unsqueeze(1).expand(b, n)
        w = w * weights.float() if weights is not None else w
        neg = (F.softplus(err[:, :1] - err[:, 1:]) * w).sum() / w.sum().clamp(min=1.0)
        x0_hat, _ = self._x0_eps(out[:, 0], x_t.view(b, n + 1, d)[:, 0], self.alpha_bar[t].unsqueeze(-1))
        return err[:, 0].mean(), neg, x0_hat

    def _guided(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, w: float) -> torch.Tensor:
        """Classifier-free guidance on the denoiser output: ``(1 + w) f(x, c) - w f(x, null)``."""
        if w == 0:
            return self.denoiser(x_t, cond, t)
        both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([cond, self.null.expand_as(cond)]), torch.cat([t, t]))
        with_c, without = both.chunk(2)
        return (1 + w) * with_c - w * without

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        steps: int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """Samples ``[B, dim]`` from x_T ~ N(0, tau^2 I) over ``steps`` evenly respaced steps (DDIM; eta=1:
        ancestral), each step's added noise scaled by the temperature tau as well."""
        w = self.guidance if guidance is None else guidance
        eta = self.eta if eta is None else eta
        tau = self.temperature if temperature is None else float(temperature)
        n = steps or self.sample_steps
        seq = respaced_steps(self.steps, n)
        dim = self._out_dim()
        x = tau * torch.randn((cond.shape[0], dim), generator=generator).to(cond.device, cond.dtype)
        for i, step in enumerate(seq):
            t = torch.full((cond.shape[0],), step, device=cond.device, dtype=torch.long)
            a = self.alpha_bar[step].to(x.dtype)
            a_prev = (
                self.alpha_bar[seq[i + 1]].to(x.dtype)
                if i + 1 < len(seq)
                else torch.ones((), dtype=x.dtype, device=x.device)
            )
            x0, eps = self._x0_eps(self._guided(x, cond, t, w), x, a.view(1, 1))
            if self.clip_low.numel():  # clip_denoised, then the noise estimate that goes with the clipped x0
                x0 = torch.maximum(torch.minimum(x0, self.clip_high.to(x0.dtype)), self.clip_low.to(x0.dtype))
                eps = (x - a.sqrt() * x0) / (1 - a).sqrt().clamp(min=1e-8)
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if i + 1 < len(seq) and float(sigma) > 0:
                x = x + tau * sigma * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return x

    def _out_dim(self) -> int:
        return int(self.denoiser.dim)
