"""HSTU generator: stacked HSTU layers trained on next-item prediction, full ranking of the catalogue.

Loss (``loss``): ``softmax`` (default here) is the full-catalogue cross-entropy over cosine similarities divided
by ``temperature``; ``sampled`` is the public code's ``SampledSoftmaxLoss``: the target against
``negatives`` items drawn uniformly at random per position (the "local" sampling strategy), a sampled negative
equal to the target masked out. Both train on every position of every training window, as SASRec does here.
Defaults are the public code's ML-1M configuration (``configs/ml-1m/hstu-sampled-softmax-n128-final.gin``
shapes, temperature 0.05, dropout 0.2, AdamW lr 1e-3, no weight decay, batch 128); docs/hstu.md lists them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genrec_bench import distributed, hookimpl
from genrec_bench.errors import ConfigError, TrainingError
from genrec_bench.interfaces import Generator

from .model import HSTUModel

LOSSES = ("softmax", "sampled")
MASKED_LOGIT = -5e4  # the public code's value for a sampled negative that equals the target


class HSTU(Generator):
    """``max_len`` defaults to the protocol's history cap. ``devices > 1`` trains data-parallel, as SASRec."""

    def __init__(
        self,
        dim: int = 50,
        layers: int = 2,
        heads: int = 1,
        dqk: int = 50,
        dv: int = 50,
        dropout: float = 0.2,
        linear_dropout: float = 0.2,
        relative_bias: bool = True,
        max_len: int | None = None,
        loss: str = "softmax",
        negatives: int = 128,
        temperature: float = 0.05,
        epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 5,
        eval_every: int = 1,
        devices: int = 1,
    ):
        if loss not in LOSSES:
            raise ConfigError(f"hstu: loss must be one of {', '.join(LOSSES)}, got '{loss}'")
        for name, value in dict(
            dim=dim,
            layers=layers,
            heads=heads,
            dqk=dqk,
            dv=dv,
            negatives=negatives,
            epochs=epochs,
            batch_size=batch_size,
            devices=devices,
        ).items():
            if int(value) < 1:
                raise ConfigError(f"hstu: {name} must be >= 1, got {value}")
        if temperature <= 0 or lr <= 0:
            raise ConfigError(f"hstu: temperature and lr must be > 0, got {temperature} and {lr}")
        if not (0.0 <= dropout < 1.0 and 0.0 <= linear_dropout < 1.0):
            raise ConfigError("hstu: dropout and linear_dropout must be in [0, 1)")
        self.params = dict(
            dim=dim,
            layers=layers,
            heads=heads,
            dqk=dqk,
            dv=dv,
            dropout=dropout,
            linear_dropout=linear_dropout,
            relative_bias=relative_bias,
        )
        self.loss, self.negatives, self.temperature = loss, negatives, temperature
        self.max_len, self.epochs, self.batch_size = max_len, epochs, batch_size
        self.lr, self.weight_decay, self.patience, self.eval_every = lr, weight_decay, patience, eval_every
        self.devices = int(devices)
        self.model: HSTUModel | None = None
        self.history: list[dict] = []
        self.best_epoch = 0

    def fit(self, data, tokenizer, validate, ctx) -> None:
        max_len = self.max_len or data.max_history
        model_args = dict(n_items=data.n_items, max_len=max_len, **self.params)
        self.model = HSTUModel(**model_args).to(ctx.device)
        windows = data.train_windows(max_len + 1)
        if windows.shape[0] == 0:
            raise TrainingError("hstu: no training sequences of 2+ items; the data set is too small")
        job = HSTUJob(
            model_args,
            windows,
            loss=self.loss,
            negatives=self.negatives,
            temperature=self.temperature,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            eval_every=self.eval_every,
            seed=ctx.seed,
        )
        stopper = distributed.fit_early_stopped(
            job, self.model, validate, ctx, "hstu", self.patience, self.eval_every, self.epochs, devices=self.devices
        )
        self.history, self.best_epoch = stopper.history, stopper.best_epoch
        self.training = stopper.summary()

    def generate(self, batch, ctx) -> torch.Tensor:
        """Cosine similarity of the last position's state with every item, over ``temperature``."""
        with torch.autocast(ctx.device.type, dtype=ctx.autocast_dtype, enabled=ctx.autocast_dtype is not None):
            hidden = self.model(batch.items[:, -self.model.max_len :])[:, -1]
            return (hidden @ self.model.item_weights().T).float() / self.temperature

    def health(self) -> dict[str, float]:
        return {
            "best_epoch": float(self.best_epoch),
            "epochs_run": float(len(self.history)),
            "final_train_loss": float(self.history[-1]["loss"]) if self.history else float("nan"),
        }


class HSTUJob(distributed.DataParallelJob):
    """HSTU's training loop: shuffled windows, every position's next item, loss summed over positions."""

    def __init__(
        self,
        model_args: dict,
        windows: torch.Tensor,
        loss: str,
        negatives: int,
        temperature: float,
        epochs: int,
        batch_size: int,
        lr: float,
        weight_decay: float,
        eval_every: int,
        seed: int,
    ):
        self.model_args, self.windows = model_args, windows
        self.loss, self.negatives, self.temperature = loss, negatives, temperature
        self.epochs, self.batch_size, self.eval_every, self.seed = epochs, batch_size, eval_every, seed
        self.lr, self.weight_decay = lr, weight_decay

    def build_model(self, device) -> HSTUModel:
        return HSTUModel(**self.model_args).to(device)

    def optimizer(self, model):
        # public code: torch.optim.AdamW(lr, betas=(0.9, 0.98), weight_decay)
        return torch.optim.AdamW(
            model.parameters(), lr=self.lr, betas=(0.9, 0.98), weight_decay=self.weight_decay
        ), None

    def epoch_order(self, rng: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.windows.shape[0], generator=rng)

    def nonfinite(self, name: str, value: float) -> None:
        raise TrainingError(f"hstu: the loss became {value}; lower lr (now {self.lr})")

    def loss_terms(self, model, shard, device, rng):
        """Sampled softmax draws its negatives for the whole global batch from the cell's generator."""
        draws = None
        if self.loss == "sampled":
            width = self.windows.shape[1] - 1
            draws = torch.randint(self.model_args["n_items"], (len(shard.batch), width, self.negatives), generator=rng)
            draws = shard.take(draws)
        summed, count = self.summed_loss(model, shard.rows, device, draws)
        return [distributed.Term("loss", summed, count)]

    def summed_loss(self, model, rows, device, draws: torch.Tensor | None = None):
        batch = self.windows[rows].to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        keep = (targets >= 0) & (inputs >= 0)
        hidden = model(inputs)[:, -inputs.shape[1] :][keep].float()
        items = getattr(model, "module", model).item_weights().float()
        targets = targets[keep]
        if self.loss == "softmax" or draws is None:
            logits = hidden @ items.T / self.temperature
            return F.cross_entropy(logits, targets, reduction="sum"), int(keep.sum())
        sampled = draws.to(device)[keep]  # [n, negatives], uniform over the catalogue ("local" sampling)
        positive = (hidden * items[targets]).sum(-1, keepdim=True) / self.temperature
        negative = torch.einsum("nd,nkd->nk", hidden, items[sampled]) / self.temperature
        negative = negative.masked_fill(sampled == targets.unsqueeze(1), MASKED_LOGIT)
        logits = torch.cat([positive, negative], dim=1)
        zeros = torch.zeros(targets.shape[0], dtype=torch.int64, device=device)
        return F.cross_entropy(logits, zeros, reduction="sum"), int(keep.sum())


@hookimpl
def register_generators(register):
    register("hstu", HSTU)
