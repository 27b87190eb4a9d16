"""DeftRec's tokenizer: a masked, additive K-way encoder giving K continuous tokens per item.

Each of the K blocks is DeftRec's ``MLPEncoder`` block: Residual[ReLU-Dropout-Linear(d, d)] -> ReLU -> Dropout ->
Linear(d, D) (-> ReLU). Training-time input masking (one Bernoulli mask over feature dimensions per call) plus a
learnable position vector. "Additive": when pre-trained, a decoder reconstructs the features from the mean of the
K tokens. ``pretrain: false`` (DeftRec) leaves the encoder at its seeded initialisation: the generator trains it
through the LLM loss (its ``tokenizer_mode: finetune``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from genrec_bench_plugins.contrec.tokenizer import barlow_twins, token_health
from torch import nn

from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.features import item_features
from genrec_bench.interfaces import Tokenizer
from genrec_bench.training import loss_record


class Residual(nn.Module):
    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MaskedKWayEncoder(nn.Module):
    """K parallel blocks over masked features; ``decoder`` maps the mean of the K tokens back to the features."""

    def __init__(
        self, input_dim: int, n_tokens: int, token_dim: int, dropout: float, mask_ratio: float, output_relu: bool
    ):
        super().__init__()

        def block() -> nn.Sequential:
            layers = [
                Residual(nn.ReLU(), nn.Dropout(dropout), nn.Linear(input_dim, input_dim)),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(input_dim, token_dim),
            ]
            return nn.Sequential(*layers, *([nn.ReLU()] if output_relu else []))

        self.blocks = nn.ModuleList(block() for _ in range(n_tokens))
        self.decoder = nn.Sequential(
            nn.Linear(token_dim, input_dim), Residual(nn.ReLU(), nn.Dropout(dropout), nn.Linear(input_dim, input_dim))
        )
        self.mask_ratio = mask_ratio
        self.position = nn.Parameter(torch.empty(input_dim).uniform_(-1 / input_dim, 1 / input_dim))

    def encode(self, x: torch.Tensor, noise: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens ``[B, K, D]``; ``noise`` (training) masks a random share ``mask_ratio`` of the feature dims."""
        if noise and self.mask_ratio > 0:
            mask = (torch.rand(x.shape[1], generator=generator) < self.mask_ratio).to(x.device)
            x = x.masked_fill(mask, 0.0)
        x = x + self.position
        return torch.stack([b(x) for b in self.blocks], dim=1)

    def reconstruct(self, tokens: torch.Tensor) -> torch.Tensor:
        """Additive fusion: decode the mean of the K tokens."""
        return self.decoder(tokens.mean(1))


class MaskedKWayTokenizer(Tokenizer):
    """K continuous tokens per item from item features (LightGCN by default), DeftRec's tokenizer."""

    kind = "continuous"

    def __init__(
        self,
        features: str | dict = "lightgcn",
        n_tokens: int = 2,
        token_dim: int = 128,
        dropout: float = 0.2,
        mask_ratio: float = 0.1,
        output_relu: bool = True,
        standardize: bool = True,
        pretrain: bool = False,
        barlow: float = 0.0,
        barlow_lambda: float = 0.005,
        epochs: int = 100,
        batch_size: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
    ):
        if n_tokens < 1 or token_dim < 1 or epochs < 1 or batch_size < 2:
            raise ConfigError("tokenizer 'masked_kway': n_tokens, token_dim, epochs >= 1 and batch_size >= 2 required")
        if not 0 <= mask_ratio < 1 or not 0 <= dropout < 1:
            raise ConfigError("tokenizer 'masked_kway': mask_ratio and dropout must lie in [0, 1)")
        self.features, self.n_tokens, self.token_dim = features, n_tokens, token_dim
        self.dropout, self.mask_ratio, self.output_relu = dropout, mask_ratio, output_relu
        self.standardize, self.pretrain, self.barlow, self.barlow_lambda = standardize, pretrain, barlow, barlow_lambda
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.item_model: MaskedKWayEncoder | None = None  # TokenSource fine-tunes it (tokenizer_mode: finetune)
        self.item_inputs: torch.Tensor | None = None
        self._items: torch.Tensor | None = None
        self._health: dict[str, float] = {}

    def losses(self, model: MaskedKWayEncoder, x: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """Reconstruction MSE of the additive decoder (masked input, clean target) plus optional Barlow Twins."""
        tokens = model.encode(x, noise=True, generator=generator)
        terms = {"recon": F.mse_loss(model.reconstruct(tokens), x), "barlow": barlow_twins(tokens, self.barlow_lambda)}
        terms["total"] = terms["recon"] + self.barlow * terms["barlow"]
        return terms

    def _pretrain(self, model: MaskedKWayEncoder, x: torch.Tensor, ctx) -> dict[str, float]:
        generator = ctx.torch_generator(offset=419)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        last: dict[str, float] = {}
        model.train()
        losses: list[float] = []
        for epoch in ctx.progress(range(self.epochs), desc="masked K-way", total=self.epochs):
            perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
            total = 0.0
            for lo in range(0, x.shape[0], self.batch_size):
                terms = self.losses(model, x[perm[lo : lo + self.batch_size]], generator)
                if not torch.isfinite(terms["total"]):
                    raise TrainingError(
                        f"tokenizer 'masked_kway': loss became {terms['total'].item()} at epoch "
                        f"{epoch}; lower lr (now {self.lr})"
                    )
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                last = {k: v.item() for k, v in terms.items()}
                total += last["total"] * min(self.batch_size, x.shape[0] - lo)
            losses.append(total / x.shape[0])
        steps = math.ceil(x.shape[0] / self.batch_size) * len(losses)
        self.training = loss_record(losses, samples=x.shape[0] * len(losses), steps=steps)
        return {f"train_{k}": v for k, v in last.items()}

    def fit(self, data, ctx) -> None:
        x = item_features(self.features, data, ctx, where="tokenizer 'masked_kway'.features").float()
        if self.standardize:
            x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=1e-8)
        self.item_inputs = x
        with torch.random.fork_rng():
            torch.manual_seed(ctx.seed + 419)
            model = MaskedKWayEncoder(
                x.shape[1], self.n_tokens, self.token_dim, self.dropout, self.mask_ratio, self.output_relu
            ).to(ctx.device)
        health = self._pretrain(model, x.to(ctx.device), ctx) if self.pretrain else {}
        model.eval()
        with torch.no_grad():
            xs = x.to(ctx.device)
            self._items = model.encode(xs).cpu()
            if self.pretrain:
                health["recon_mse"] = float(F.mse_loss(model.reconstruct(self._items.to(ctx.device)), xs))
        self.item_model = model
        self._health = {**health, **token_health(self._items, "item_"), "pretrained": float(self.pretrain)}

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """Tokens ``float [n, K, D]`` of the given item ids (as fitted; the generator may fine-tune the encoder)."""
        if self._items is None:
            raise RuntimeError("masked_kway: fit() before encode()")
        return self._items[items.cpu()].to(items.device)

    def health(self) -> dict[str, float]:
        return dict(self._health)
