"""The sigma-VAE tokenizer: K continuous tokens per item (and optionally per user) from item features."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.features import item_features
from genrec_bench.interfaces import Tokenizer
from genrec_bench.training import loss_record


def _mlp(dims: list[int], dropouts: list[float]) -> nn.Sequential:
    """Linear-BN-Dropout-ReLU blocks, then a last Linear (the encoder/decoder shape of ContRec's SigmaVae)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.BatchNorm1d(dims[i + 1]), nn.Dropout(dropouts[i]), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-2], dims[-1]))


def barlow_twins(tokens: torch.Tensor, off_diagonal: float) -> torch.Tensor:
    """Redundancy reduction between the K tokens ``[B, K, D]``, averaged over token pairs (k < l).

    C = z_k^T z_l / B on per-dimension standardised tokens (a correlation matrix, as in Barlow Twins);
    loss = (sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2) / D.
    """
    b, k, d = tokens.shape
    if k < 2 or b < 2:
        return tokens.new_zeros(())
    z = (tokens - tokens.mean(0)) / tokens.std(0, unbiased=False).clamp(min=1e-5)
    pairs = torch.triu_indices(k, k, offset=1)
    c = torch.einsum("bpd,bpe->pde", z[:, pairs[0]], z[:, pairs[1]]) / b  # [pairs, D, D]
    diag = torch.diagonal(c, dim1=1, dim2=2)
    on = (1 - diag).square().sum(-1)
    off = c.square().sum((1, 2)) - diag.square().sum(-1)
    return ((on + off_diagonal * off) / d).mean()


class SigmaVAE(nn.Module):
    """K parallel encoders -> mu_k; z_k = mu_k + sigma * eps (sigma ~ N(0, C_sigma), re-drawn every training step;
    z = mu at inference); additive fusion mean_k z_k; decoder back to the input features."""

    def __init__(
        self,
        input_dim: int,
        n_tokens: int,
        token_dim: int,
        hidden: list[int],
        sigma: float,
        mask_ratio: float,
        n_entities: int,
    ):
        super().__init__()
        enc_dims, dec_dims = [input_dim, *hidden, token_dim], [token_dim, *reversed(hidden), input_dim]
        drops = [0.5, 0.2] + [0.2] * len(hidden)
        self.encoders = nn.ModuleList(_mlp(enc_dims, drops) for _ in range(n_tokens))
        self.decoder = _mlp(dec_dims, drops)
        self.sigma, self.mask_ratio = sigma, mask_ratio
        bound = 1.0 / max(1, n_entities)
        self.position = nn.Parameter(torch.empty(input_dim).uniform_(-bound, bound))  # the masking "position" vector

    def encode(self, x: torch.Tensor, noise: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens ``[B, K, D]``: mu_k, plus the sigma-VAE noise when ``noise``."""
        mu = torch.stack([enc(x) for enc in self.encoders], dim=1)
        if not noise or self.sigma <= 0:
            return mu
        sigma = torch.randn((mu.shape[0], 1, 1), generator=generator).to(mu) * self.sigma
        return mu + sigma * torch.randn(mu.shape, generator=generator).to(mu)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Training pass: masked input, noisy tokens, reconstruction. Returns (mu, z, x_hat)."""
        if self.mask_ratio > 0:  # one Bernoulli mask per step, shared by the batch; masked entries get p
            mask = (torch.rand(x.shape[1], generator=generator) < self.mask_ratio).to(x.device)
            x = torch.where(mask, torch.zeros_like(x), x) + self.position
        mu = torch.stack([enc(x) for enc in self.encoders], dim=1)
        z = mu
        if self.sigma > 0:
            sigma = torch.randn((mu.shape[0], 1, 1), generator=generator).to(mu) * self.sigma
            z = mu + sigma * torch.randn(mu.shape, generator=generator).to(mu)
        return mu, z, self.decoder(z.mean(1))


def token_health(tokens: torch.Tensor, prefix: str) -> dict[str, float]:
    """Per-dimension variance of the tokens over entities (collapse shows as near-zero variance)."""
    var = tokens.float().var(0)  # [K, D]
    flat = tokens.float().reshape(tokens.shape[0], -1)
    out = {
        f"{prefix}token_var_mean": float(var.mean()),
        f"{prefix}token_var_min": float(var.min()),
        f"{prefix}collapsed_dims": float((var < 1e-4 * var.mean().clamp(min=1e-12)).float().mean()),
    }
    if tokens.shape[1] > 1:
        a, b = tokens[:, 0].float(), tokens[:, 1].float()
        out[f"{prefix}token_cos_01"] = float(F.cosine_similarity(a, b, dim=1).mean())
    out[f"{prefix}distinct_ratio"] = float(torch.unique(flat.round(decimals=4), dim=0).shape[0] / len(flat))
    return out


class SigmaVAETokenizer(Tokenizer):
    """Pre-trains a sigma-VAE on item features (user tokens: a second one on the mean of each user's training items).

    Switch a technique off for the ablations: ``mask_ratio: 0`` (no input masking), ``mean_penalty: 0`` and
    ``sigma: 0`` (no sigma-VAE), ``barlow: 0`` (no Barlow-Twins decorrelation).
    """

    kind = "continuous"

    def __init__(
        self,
        features: str | dict = "lightgcn",
        n_tokens: int = 2,
        token_dim: int = 128,
        hidden: list[int] | None = None,
        sigma: float = 0.1,
        mask_ratio: float = 0.1,
        mean_penalty: float = 0.5,
        barlow: float = 0.5,
        barlow_lambda: float = 0.005,
        user_tokens: bool = False,
        standardize: bool = True,
        epochs: int = 200,
        batch_size: int = 512,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        valid_fraction: float = 0.1,
    ):
        if n_tokens < 1 or token_dim < 1 or epochs < 1 or batch_size < 2:
            raise ConfigError("tokenizer 'sigma_vae': n_tokens, token_dim, epochs >= 1 and batch_size >= 2 required")
        if not 0 <= mask_ratio < 1 or not 0 <= valid_fraction < 1:
            raise ConfigError("tokenizer 'sigma_vae': mask_ratio and valid_fraction must lie in [0, 1)")
        self.features, self.n_tokens, self.token_dim = features, n_tokens, token_dim
        self.hidden = [128, 256] if hidden is None else list(hidden)
        self.sigma, self.mask_ratio, self.mean_penalty = sigma, mask_ratio, mean_penalty
        self.barlow, self.barlow_lambda, self.user_tokens = barlow, barlow_lambda, user_tokens
        self.standardize, self.epochs, self.batch_size = standardize, epochs, batch_size
        self.lr, self.weight_decay, self.valid_fraction = lr, weight_decay, valid_fraction
        self.item_model: SigmaVAE | None = None
        self.user_model: SigmaVAE | None = None
        self.item_inputs: torch.Tensor | None = None  # standardised features the encoders read [n_items, d]
        self.user_inputs: torch.Tensor | None = None
        self._items: torch.Tensor | None = None
        self._users: torch.Tensor | None = None
        self._health: dict[str, float] = {}

    def losses(self, model: SigmaVAE, x: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """Each term of the tokenizer objective on a batch (``total`` is their weighted sum)."""
        mu, z, x_hat = model(x, generator)
        terms = {
            "recon": F.mse_loss(x_hat, x),
            "mean": mu.mean(1).norm() / x.shape[0],  # ||mean_k mu_k||_F / B: the fixed-variance KL term
            "barlow": barlow_twins(z, self.barlow_lambda),
        }
        terms["total"] = terms["recon"] + self.mean_penalty * terms["mean"] + self.barlow * terms["barlow"]
        return terms

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        if not self.standardize:
            return x
        return (x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=1e-8)

    def _train(self, x: torch.Tensor, ctx, offset: int, what: str) -> tuple[SigmaVAE, dict[str, float]]:
        generator = ctx.torch_generator(offset=offset)
        with torch.random.fork_rng():
            torch.manual_seed(ctx.seed + offset)
            model = SigmaVAE(
                x.shape[1], self.n_tokens, self.token_dim, self.hidden, self.sigma, self.mask_ratio, x.shape[0]
            ).to(ctx.device)
        order = torch.randperm(x.shape[0], generator=generator)
        n_valid = int(round(self.valid_fraction * x.shape[0])) if x.shape[0] >= 20 else 0
        valid, train = x[order[:n_valid]].to(ctx.device), x[order[n_valid:]].to(ctx.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, last = float("inf"), None, {}
        curve: list[float] = []  # held-out reconstruction MSE per epoch (training loss without a held-out part)
        for epoch in ctx.progress(range(self.epochs), desc=f"sigma-VAE {what}", total=self.epochs):
            model.train()
            perm = torch.randperm(train.shape[0], generator=generator).to(ctx.device)
            for lo in range(0, train.shape[0], self.batch_size):
                idx = perm[lo : lo + self.batch_size]
                if idx.numel() < 2:  # BatchNorm needs two rows
                    continue
                terms = self.losses(model, train[idx], generator)
                if not torch.isfinite(terms["total"]):
                    raise TrainingError(
                        f"tokenizer 'sigma_vae' ({what}): loss became {terms['total'].item()} at "
                        f"epoch {epoch}; lower lr (now {self.lr})"
                    )
                optimizer.zero_grad(set_to_none=True)
                terms["total"].backward()
                optimizer.step()
                last = {k: v.item() for k, v in terms.items()}
            if n_valid:
                model.eval()
                with torch.no_grad():
                    score = float(F.mse_loss(model.decoder(model.encode(valid).mean(1)), valid))
                if score < best:
                    best, best_state = score, copy.deepcopy(model.state_dict())
            curve.append(score if n_valid else last.get("total", float("nan")))
        if what == "item":
            steps = math.ceil(train.shape[0] / self.batch_size) * len(curve)
            self.training = loss_record(curve, samples=train.shape[0] * len(curve), steps=steps)
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            xs = x.to(ctx.device)
            recon = float(F.mse_loss(model.decoder(model.encode(xs).mean(1)), xs))
        return model, {
            f"{what}_recon_mse": recon,
            f"{what}_valid_mse": best if n_valid else recon,
            **{f"{what}_train_{k}": v for k, v in last.items()},
        }

    def fit(self, data, ctx) -> None:
        raw = item_features(self.features, data, ctx, where="tokenizer 'sigma_vae'.features")
        self.item_inputs = self._standardise(raw)
        self.item_model, health = self._train(self.item_inputs, ctx, 211, "item")
        self._items = self._encode(self.item_model, self.item_inputs)
        health.update(token_health(self._items, "item_"))
        if self.user_tokens:
            seqs = data.train_sequences()
            lengths = torch.tensor([len(s) for s in seqs])
            items = torch.from_numpy(np.concatenate(seqs).astype(np.int64))
            owner = torch.repeat_interleave(torch.arange(len(seqs)), lengths)
            sums = torch.zeros(len(seqs), raw.shape[1]).index_add_(0, owner, raw[items])
            self.user_inputs = self._standardise(sums / lengths.clamp(min=1).unsqueeze(1).float())
            self.user_model, user_health = self._train(self.user_inputs, ctx, 223, "user")
            self._users = self._encode(self.user_model, self.user_inputs)
            health.update(user_health)
            health.update(token_health(self._users, "user_"))
        self._health = health

    @staticmethod
    @torch.no_grad()
    def _encode(model: SigmaVAE, x: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return torch.cat([model.encode(x[lo : lo + 8192].to(device)).cpu() for lo in range(0, len(x), 8192)])

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """mu tokens ``float [n, K, D]`` of the given item ids."""
        if self._items is None:
            raise RuntimeError("sigma_vae: fit() before encode()")
        return self._items[items.cpu()].to(items.device)

    def encode_users(self, users: torch.Tensor) -> torch.Tensor:
        if self._users is None:
            raise ConfigError("sigma_vae: user tokens were not trained; set tokenizer user_tokens: true")
        return self._users[users.cpu()].to(users.device)

    def health(self) -> dict[str, float]:
        return dict(self._health)
