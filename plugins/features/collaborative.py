"""Collaborative item features: matrix factorisation and LightGCN trained with BPR on the training split only."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from genrec_bench.context import RunContext
from genrec_bench.data import SplitData
from genrec_bench.errors import ConfigError, DataError, TrainingError

log = logging.getLogger("genrec_bench")


def train_pairs(data: SplitData) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique (user, item) pairs of the training sequences (validation and test items left out)."""
    seqs = data.train_sequences()
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    users = np.repeat(np.arange(len(seqs), dtype=np.int64), lengths)
    items = np.concatenate(seqs).astype(np.int64) if len(seqs) else np.empty(0, np.int64)
    keys = np.unique(users * data.n_items + items)
    return torch.from_numpy(keys // data.n_items), torch.from_numpy(keys % data.n_items)


def normalized_adjacency(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """The symmetric user-item graph ``D^-1/2 A D^-1/2`` as a sparse COO matrix ``[n_users+n_items]^2``."""
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    degree = torch.bincount(rows, minlength=n_users + n_items).float().clamp(min=1)
    values = degree[rows].rsqrt() * degree[cols].rsqrt()
    n = n_users + n_items
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False).coalesce()


def sample_negatives(
    users: torch.Tensor, positive_keys: torch.Tensor, n_items: int, generator: torch.Generator, rounds: int = 10
) -> torch.Tensor:
    """Uniform random items per user, re-drawn (up to ``rounds`` times) where a draw is one of the user's positives."""
    negatives = torch.randint(n_items, users.shape, generator=generator)
    for _ in range(rounds):
        keys = users * n_items + negatives
        pos = torch.searchsorted(positive_keys, keys).clamp(max=positive_keys.numel() - 1)
        clash = positive_keys[pos] == keys
        if not clash.any():
            break
        negatives[clash] = torch.randint(n_items, (int(clash.sum()),), generator=generator)
    return negatives


class BPRFeatures:
    """Item embeddings learnt with BPR from the training interactions; ``layers=0`` is plain MF."""

    version = "1"
    seeded = True
    name = "mf"

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 100,
        batch_size: int = 2048,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        init_std: float = 0.1,
        layers: int = 0,
    ) -> None:
        for key, value in (("dim", dim), ("epochs", epochs), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"features '{self.name}'.{key}: expected a positive integer, got {value}")
        if layers < 0:
            raise ConfigError(f"features '{self.name}'.layers: expected 0 or more, got {layers}")
        self.dim, self.epochs, self.batch_size, self.lr = dim, epochs, batch_size, lr
        self.weight_decay, self.init_std, self.layers = weight_decay, init_std, layers

    def propagate(self, embeddings: torch.Tensor, adjacency: torch.Tensor | None) -> torch.Tensor:
        """LightGCN: the mean of the embeddings after 0..layers rounds of graph propagation (MF: unchanged)."""
        if adjacency is None or self.layers == 0:
            return embeddings
        out, h = embeddings, embeddings
        for _ in range(self.layers):
            h = torch.sparse.mm(adjacency, h)
            out = out + h
        return out / (self.layers + 1)

    def compute(self, data: SplitData, ctx: RunContext) -> torch.Tensor:
        users, items = train_pairs(data)
        if users.numel() == 0:
            raise DataError(
                f"features '{self.name}': the training split has no interactions; "
                "every user needs at least 3 items (train, validation, test)"
            )
        n_users, n_items, device = data.n_users, data.n_items, ctx.device
        cold = n_items - int(torch.unique(items).numel())
        if cold:
            log.warning(
                "features '%s': %d of %d items have no training interaction; their embeddings stay at "
                "their random start",
                self.name,
                cold,
                n_items,
            )
        generator = ctx.torch_generator(offset=17)
        weight = torch.randn(n_users + n_items, self.dim, generator=generator) * self.init_std
        weight = torch.nn.Parameter(weight.to(device))
        adjacency = normalized_adjacency(users, items, n_users, n_items).to(device) if self.layers else None
        positive_keys = users * n_items + items  # sorted, since pairs come from np.unique
        optimizer = torch.optim.Adam([weight], lr=self.lr)
        n = users.numel()
        for epoch in ctx.progress(range(self.epochs), desc=f"{self.name} BPR", total=self.epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for lo in range(0, n, self.batch_size):
                batch = order[lo : lo + self.batch_size]
                u, p = users[batch], items[batch]
                q = sample_negatives(u, positive_keys, n_items, generator)
                u, p, q = u.to(device), p.to(device) + n_users, q.to(device) + n_users
                final = self.propagate(weight, adjacency)
                score = (final[u] * (final[p] - final[q])).sum(-1)
                reg = (weight[u].square() + weight[p].square() + weight[q].square()).sum() / (2 * len(batch))
                loss = -F.logsigmoid(score).mean() + self.weight_decay * reg
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            if not np.isfinite(total):
                raise TrainingError(f"features '{self.name}': BPR loss is not finite at epoch {epoch}; lower lr")
        with torch.no_grad():
            return self.propagate(weight, adjacency)[n_users:].float().cpu()


class MFFeatures(BPRFeatures):
    """Matrix factorisation (BPR-MF) item embeddings."""

    name = "mf"

    def __init__(
        self,
        dim: int = 64,
        epochs: int = 100,
        batch_size: int = 2048,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(dim, epochs, batch_size, lr, weight_decay, init_std, layers=0)


class LightGCNFeatures(BPRFeatures):
    """LightGCN (He et al. 2020) item embeddings: layer-averaged propagation over the sparse user-item graph."""

    name = "lightgcn"

    def __init__(
        self,
        dim: int = 64,
        layers: int = 3,
        epochs: int = 100,
        batch_size: int = 2048,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(dim, epochs, batch_size, lr, weight_decay, init_std, layers=layers)
