"""The shared discrete tokenizer: features in, a quantised autoencoder trained, codes and health figures out.

What a generator can rely on after ``fit``:

- ``codes``: ``int64 [n_items, L]``, the code tuple of every item (unique when ``dedup`` is on);
- ``codebook_sizes``: ``list[int]`` of length L, the vocabulary size of each code position (the last one is
  the de-duplication code's range when ``dedup`` is on);
- ``encode(items)``: codes of item ids (any shape; ``-1`` padding gives ``-1`` codes);
- ``decode(codes)``: item ids of code tuples (``-1`` where no item has that tuple);
- ``health()``: reconstruction error, per-level usage and perplexity, collision rates before and after de-dup.
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..context import RunContext
from ..data.split import SplitData
from ..errors import ConfigError, TrainingError
from ..features import item_features
from ..interfaces import Tokenizer
from ..training import loss_record
from .ops import Codebook, code_health, collision_figures, group_ranks

log = logging.getLogger("genrec_bench")


class QuantizedAutoencoder(nn.Module):
    """What a tokenizer model provides: ``codebooks``, ``forward`` and a k-means codebook initialisation."""

    codebooks: nn.ModuleList

    @abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_hat [b, d], codes int64 [b, levels], quantisation loss)``; straight-through inside."""

    @abstractmethod
    def init_codebooks(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        """k-means on the encoder outputs of ``x`` (TIGER: the first batch)."""


def check_positive(name: str, **values: int | float) -> None:
    """A one-line ConfigError naming the first parameter that is not positive."""
    for key, value in values.items():
        if value <= 0:
            raise ConfigError(f"tokenizer '{name}'.{key}: expected a positive number, got {value}")


class DiscreteTokenizer(Tokenizer):
    """Trains ``build(input_dim)`` on item features, then assigns every item its codes."""

    kind = "discrete"
    name = "discrete"
    refresh_every = 0  # k-means refresh period in epochs (MQ-VAE); 0: never

    def __init__(
        self,
        features: str | dict,
        level_sizes: list[int],
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        dedup: bool,
        reseed_dead: bool,
        kmeans_iters: int,
        standardize: bool,
        input_dim: int | None,
    ) -> None:
        if not level_sizes:
            raise ConfigError(f"tokenizer '{self.name}': needs at least one codebook (levels / n_codebooks >= 1)")
        check_positive(
            self.name,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            kmeans_iters=kmeans_iters,
            codebook_size=min(level_sizes),
        )
        if weight_decay < 0:
            raise ConfigError(f"tokenizer '{self.name}'.weight_decay: expected 0 or more, got {weight_decay}")
        self.features, self.level_sizes = features, list(level_sizes)
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.dedup, self.reseed_dead, self.kmeans_iters = dedup, reseed_dead, kmeans_iters
        self.standardize, self.input_dim = standardize, input_dim
        self.model: QuantizedAutoencoder | None = None
        self.codes: torch.Tensor | None = None
        self.codebook_sizes: list[int] = []
        self._health: dict[str, float] = {}
        self._keys: torch.Tensor | None = None
        self._key_items: torch.Tensor | None = None

    @abstractmethod
    def build(self, input_dim: int) -> QuantizedAutoencoder:
        """The model for features of ``input_dim`` dimensions."""

    # --- fitting --------------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor) -> None:
        n, d = x.shape
        if self.input_dim is not None and self.input_dim != d:
            raise ConfigError(
                f"tokenizer '{self.name}'.input_dim: {self.input_dim}, but features {self.features!r} "
                f"are {d}-d; set input_dim: {d} or leave it out"
            )
        if n < max(self.level_sizes):
            raise ConfigError(
                f"tokenizer '{self.name}'.codebook_size: {max(self.level_sizes)} codes but only {n} "
                f"items to learn them from; set codebook_size <= {n}"
            )

    def fit(self, data: SplitData, ctx: RunContext) -> None:
        x = item_features(self.features, data, ctx, where=f"tokenizer '{self.name}'.features")
        self._check(x)
        mean = x.mean(0) if self.standardize else torch.zeros(x.shape[1])
        std = x.std(0, unbiased=False).clamp(min=1e-8) if self.standardize else torch.ones(x.shape[1])
        cuda = (
            []
            if ctx.device.type != "cuda"
            else [torch.cuda.current_device() if ctx.device.index is None else ctx.device.index]
        )
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(ctx.seed)
            generator = ctx.torch_generator(offset=101)
            self.model = self.build(x.shape[1]).to(ctx.device)
            xs = ((x - mean) / std).to(ctx.device)
            loss = self._train(xs, ctx, generator)
            x_hat, raw = self._infer(xs)
        x_hat = x_hat.cpu() * std + mean
        self._finish(raw.cpu(), x, x_hat, loss)

    def _train(self, xs: torch.Tensor, ctx: RunContext, generator: torch.Generator) -> float:
        model, n = self.model, xs.shape[0]
        assert model is not None  # built by fit
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        init_size = min(n, max(self.batch_size, max(self.level_sizes)))
        model.train()
        model.init_codebooks(
            xs[torch.randperm(n, generator=generator)[:init_size].to(xs.device)], self.kmeans_iters, generator
        )
        self._reseeded, total = 0, float("nan")
        losses: list[float] = []
        for epoch in ctx.progress(range(self.epochs), desc=f"{self.name} fit", total=self.epochs):
            order = torch.randperm(n, generator=generator).to(xs.device)
            total = 0.0
            for lo in range(0, n, self.batch_size):
                xb = xs[order[lo : lo + self.batch_size]]
                x_hat, _, qloss = model(xb)
                loss = F.mse_loss(x_hat, xb) + qloss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * xb.shape[0]
            if not math.isfinite(total):
                raise TrainingError(
                    f"tokenizer '{self.name}': loss is not finite at epoch {epoch}; lower lr or check the features"
                )
            losses.append(total / n)
            if self.refresh_every and (epoch + 1) % self.refresh_every == 0 and epoch + 1 < self.epochs:
                sample = order[:init_size]
                model.init_codebooks(xs[sample], self.kmeans_iters, generator)
            elif self.reseed_dead:
                self._reseeded += sum(cast(Codebook, cb).reseed_dead(generator) for cb in model.codebooks)
        steps = math.ceil(n / self.batch_size)
        self.training = loss_record(losses, samples=n * len(losses), steps=steps * len(losses))
        return total / n

    @torch.no_grad()
    def _infer(self, xs: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        assert model is not None  # built by fit
        model.eval()
        parts = [model(xs[lo : lo + chunk]) for lo in range(0, xs.shape[0], chunk)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _finish(self, raw: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor, loss: float) -> None:
        health = code_health(raw, self.level_sizes)
        codes, sizes = raw, list(self.level_sizes)
        if self.dedup:
            extra = group_ranks(raw)
            codes = torch.cat([raw, extra.unsqueeze(1)], dim=1)
            sizes.append(int(extra.max()) + 1)
        self.codes, self.codebook_sizes = codes.long().contiguous(), sizes
        mse = float((x_hat - x).square().mean())
        health.update(
            {
                "collision_rate_dedup": collision_figures(codes)["collision_rate"],
                "recon_mse": mse,
                "recon_rel": mse / max(float(x.var(0, unbiased=False).mean()), 1e-12),
                "final_loss": loss,
                "reseeded_codes": float(self._reseeded),
                "code_length": float(len(sizes)),
            }
        )
        self._health = health
        for level, size in enumerate(self.level_sizes):
            used = round(health[f"usage_l{level}"] * size)
            if used <= max(1, size // 10):
                log.warning(
                    "tokenizer '%s': codebook %d collapsed: %d of %d codes used (perplexity %.1f); try "
                    "more epochs, standardize: true, or a smaller codebook_size",
                    self.name,
                    level,
                    used,
                    size,
                    health[f"perplexity_l{level}"],
                )
        self._keys = None

    # --- the Tokenizer interface ----------------------------------------------------------------------
    def _fitted(self) -> torch.Tensor:
        if self.codes is None:
            raise RuntimeError(f"tokenizer '{self.name}': call fit(data, ctx) before encode/decode")
        return self.codes

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Codes ``int64 [..., L]`` of item ids ``[...]``; ``-1`` (padding) maps to a row of ``-1``."""
        codes = self._fitted()
        items = items.long()
        if ((items < -1) | (items >= codes.shape[0])).any():
            raise IndexError(f"tokenizer '{self.name}': item ids must lie in -1..{codes.shape[0] - 1}")
        out = codes.to(items.device)[items.clamp(min=0)]
        return out.masked_fill((items == -1).unsqueeze(-1), -1)

    def _key(self, codes: torch.Tensor) -> torch.Tensor:
        radix = torch.tensor(
            [math.prod(self.codebook_sizes[i + 1 :]) for i in range(len(self.codebook_sizes))], device=codes.device
        )
        return (codes * radix).sum(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Item ids ``int64 [...]`` of code tuples ``[..., L]``; ``-1`` where no item has the tuple.

        Without ``dedup``, a tuple that several items share decodes to the lowest of their ids.
        """
        table = self._fitted()
        if math.prod(self.codebook_sizes) >= 2**62:
            raise NotImplementedError(f"tokenizer '{self.name}': too many code combinations to decode by key")
        if self._keys is None:
            keys = self._key(table)
            order = torch.sort(keys, stable=True).indices
            self._keys, self._key_items = keys[order], order
        assert self._key_items is not None  # set together with _keys
        codes = codes.long()
        sizes = torch.tensor(self.codebook_sizes, device=codes.device)
        valid = ((codes >= 0) & (codes < sizes)).all(-1)
        keys = self._key(codes.clamp(min=0)).cpu()
        pos = torch.searchsorted(self._keys, keys).clamp(max=self._keys.numel() - 1)
        found = (self._keys[pos] == keys).to(codes.device) & valid
        return torch.where(found, self._key_items[pos].to(codes.device), -1)

    def health(self) -> dict[str, float]:
        return dict(self._health)
