"""Shared training helpers for generator plugins: model selection on the validation metric, and the training
record every trained generator leaves in ``result.json`` (why it stopped, its validation curve, what it saw).

Stop rules: ``patience`` (validation stopped improving), ``epoch_cap``, ``step_cap`` (``max_steps``),
``time_cap`` (a wall-clock limit), ``no_validation`` (trained without validating: a fixed budget).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch

from .errors import ConfigError, TrainingError


def check_samples_per_epoch(value: int | float | None, where: str) -> None:
    """Reject a ``samples_per_epoch`` that is neither null, a count >= 1, nor a fraction of a pass in (0, 1)."""
    count = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if value is None or count or (isinstance(value, float) and 0 < value < 1):
        return
    raise ConfigError(
        f"{where}: samples_per_epoch must be a count >= 1, a fraction of a pass in (0, 1) such as 0.05, "
        f"or null (every training pair), got {value}"
    )


class TrainClock:
    """The wall-clock cap of a training loop (``max_train_minutes``): :meth:`expired` is True, and stays so,
    once the minutes have passed since the clock was made; ``None`` never expires. The loop stops at the
    first epoch end after that (validating there) and records the stop rule ``time_cap``."""

    def __init__(self, minutes: float | None, where: str):
        if minutes is not None and (isinstance(minutes, bool) or not minutes > 0):
            raise ConfigError(f"{where}: max_train_minutes must be a positive number of minutes or null, got {minutes}")
        self.minutes, self.started, self.fired = minutes, time.perf_counter(), False

    def expired(self) -> bool:
        if self.minutes is not None and time.perf_counter() - self.started > 60.0 * self.minutes:
            self.fired = True
        return self.fired


def epoch_samples(setting: int | float | None, n_pairs: int) -> int:
    """Training pairs per epoch: every pair (``None``), a count (capped at the pairs there are), or a fraction
    of one pass over this data set's training pairs (a float in (0, 1): budgets that scale with the data set)."""
    if setting is None:
        return n_pairs
    if isinstance(setting, float) and setting < 1:
        return max(1, min(n_pairs, round(setting * n_pairs)))
    return min(int(setting), n_pairs)


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
        return self.patience_fired

    @property
    def patience_fired(self) -> bool:
        return self.bad_checks >= self.patience

    def summary(self, stop_rule: str | None = None) -> dict:
        """The training record of this run (see :func:`training_summary`). ``stop_rule`` names a cap the caller
        stopped on (``time_cap``, ``step_cap``); otherwise patience when it fired, else the epoch cap."""
        rule = "patience" if self.patience_fired else (stop_rule or "epoch_cap")
        return training_summary(rule, self.history, self.best_epoch, self.patience, self.epochs)

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()


STOP_RULES = ("patience", "epoch_cap", "step_cap", "time_cap", "no_validation")


def training_summary(
    stop_rule: str,
    history: list[dict],
    best_epoch: int,
    patience: int,
    epochs_cap: int | None,
) -> dict:
    """A generator's training record: the stop rule that fired, the validation curve ``[[epoch, value], ...]``
    (read from the history's records that carry ``valid``),
    the best epoch, the patience (in validations) and the samples / optimizer steps seen (summed from the
    history's per-epoch ``samples`` and ``steps`` where the training loop counts them). Whether that amounts to
    convergence is decided from this record by ``genrec_bench.convergence`` with the protocol's tolerance."""
    if stop_rule not in STOP_RULES:
        raise ValueError(f"unknown stop rule {stop_rule!r}; one of {STOP_RULES}")
    counted = [r for r in history if "samples" in r]
    return {
        "stop_rule": stop_rule,
        "valid_curve": [[int(r["epoch"]), float(r["valid"])] for r in history if "valid" in r],
        "best_epoch": int(best_epoch),
        "epochs_run": len(history),
        "epochs_cap": epochs_cap,
        "patience": int(patience),
        "samples": int(sum(r["samples"] for r in counted)) if counted else None,
        "steps": int(sum(r.get("steps", 0) for r in counted)) if counted else None,
    }


def loss_record(losses: list[float], samples: int | None = None, steps: int | None = None) -> dict:
    """The training record of a fixed-budget run without validation (a tokenizer's epochs): stop rule
    ``no_validation``, the training loss per epoch as ``loss_curve`` (at most 50 points, evenly spaced, the last
    always kept) and what it saw. Its plateau is judged on the loss (``genrec_bench.convergence``)."""
    keep = sorted({round(i * (len(losses) - 1) / 49) for i in range(50)}) if len(losses) > 50 else range(len(losses))
    return {
        "stop_rule": "no_validation",
        "loss_curve": [[i + 1, float(losses[i])] for i in keep],
        "epochs_run": len(losses),
        "epochs_cap": len(losses),
        "samples": samples,
        "steps": steps,
    }
