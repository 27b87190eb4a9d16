"""SASRec generator: next-item prediction with full-softmax cross-entropy over the catalogue."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genrec_bench import distributed, hookimpl
from genrec_bench.errors import TrainingError
from genrec_bench.interfaces import Generator

from .model import SASRecModel


class SASRec(Generator):
    """Trains on every position of every training window; early stopping on the validation metric.

    ``max_len`` defaults to the protocol's history cap, so that SASRec sees what every other method sees.

    ``devices > 1`` trains data-parallel (DDP) on that many devices of the node (GPUs, or CPU processes with
    gloo when there is no GPU), at the same global ``batch_size``; see docs/scaling.md "Multi-GPU training".
    """

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        max_len: int | None = None,
        epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 5,
        eval_every: int = 1,
        devices: int = 1,
    ):
        self.params = dict(hidden=hidden, layers=layers, heads=heads, dropout=dropout)
        self.max_len, self.epochs, self.batch_size = max_len, epochs, batch_size
        self.lr, self.weight_decay, self.patience, self.eval_every = lr, weight_decay, patience, eval_every
        if int(devices) < 1:
            raise ValueError(f"SASRec: devices must be >= 1, got {devices}")
        self.devices = int(devices)
        self.model: SASRecModel | None = None
        self.history: list[dict] = []
        self.best_epoch = 0

    def fit(self, data, tokenizer, validate, ctx) -> None:
        max_len = self.max_len or data.max_history
        self.model = SASRecModel(data.n_items, max_len=max_len, **self.params).to(ctx.device)
        windows = data.train_windows(max_len + 1)
        if windows.shape[0] == 0:
            raise TrainingError("SASRec: no training sequences of 2+ items; the data set is too small")
        job = SASRecJob(
            dict(n_items=data.n_items, max_len=max_len, **self.params),
            windows,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            eval_every=self.eval_every,
            seed=ctx.seed,
        )
        stopper = distributed.fit_early_stopped(
            job, self.model, validate, ctx, "sasrec", self.patience, self.eval_every, self.epochs, devices=self.devices
        )
        self.history, self.best_epoch = stopper.history, stopper.best_epoch
        self.training = stopper.summary()

    def generate(self, batch, ctx) -> torch.Tensor:
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            hidden = self.model(batch.items[:, -(self.max_len or batch.items.shape[1]) :])[:, -1]
            return (hidden @ self.model.item_weights().T).float()

    def health(self) -> dict[str, float]:
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan"),
        }


class SASRecJob(distributed.DataParallelJob):
    """SASRec's training loop (one device or every DDP rank): shuffled windows, token cross-entropy summed."""

    def __init__(
        self,
        model_args: dict,
        windows: torch.Tensor,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        eval_every: int,
        seed: int,
    ):
        self.model_args, self.windows = model_args, windows
        self.epochs, self.batch_size, self.eval_every, self.seed = epochs, batch_size, eval_every, seed
        self.lr, self.weight_decay = lr, weight_decay

    def build_model(self, device) -> SASRecModel:
        return SASRecModel(**self.model_args).to(device)

    def optimizer(self, model):
        return torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay), None

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.windows.shape[0], generator=rng)

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"SASRec: the loss became {value}; lower lr (now {self.lr})")

    def summed_loss(self, model, rows, device):
        batch = self.windows[rows].to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        keep = (targets >= 0) & (inputs >= 0)
        hidden = model(inputs)[keep]
        logits = hidden @ getattr(model, "module", model).item_weights().T
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


@hookimpl
def register_generators(register):
    register("sasrec", SASRec)
