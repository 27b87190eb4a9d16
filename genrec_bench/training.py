"""Shared training helpers for generator plugins: model selection on the validation metric."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from .errors import TrainingError


class EarlyStopping:
    """Validate every ``eval_every`` epochs, keep the best weights, stop after ``patience`` bad checks.

    Usage inside ``Generator.fit``::

        stopper = EarlyStopping(model, validate, patience, eval_every, epochs)
        for epoch in range(1, epochs + 1):
            record = {"epoch": epoch, "loss": train_one_epoch()}
            if stopper.update(epoch, record):   # adds record["valid"] when it validates
                break
        stopper.restore()                        # best weights back, model in eval mode
    """

    def __init__(
        self,
        model: torch.nn.Module,
        validate: Callable[[], dict],
        patience: int,
        eval_every: int = 1,
        epochs: int | None = None,
    ):
        self.model, self.validate = model, validate
        self.patience, self.eval_every, self.epochs = patience, max(1, eval_every), epochs
        self.best, self.best_epoch, self.bad_checks = -math.inf, 0, 0
        self.best_state: dict | None = None
        self.history: list[dict] = []

    def update(self, epoch: int, record: dict, force: bool = False) -> bool:
        """Record an epoch (validating when due); True when training should stop."""
        loss = record.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrainingError(f"the training loss became {loss} in epoch {epoch}; lower the learning rate")
        if force or epoch % self.eval_every == 0 or epoch == self.epochs:
            self.model.eval()
            record["valid"] = score = float(next(iter(self.validate().values())))
            if score > self.best:
                self.best, self.best_epoch, self.bad_checks = score, epoch, 0
                self.best_state = copy.deepcopy(self.model.state_dict())
            else:
                self.bad_checks += 1
            self.model.train()
        self.history.append(record)
        return self.bad_checks >= self.patience

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
