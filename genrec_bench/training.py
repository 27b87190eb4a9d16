"""Shared training helpers for generator plugins: model selection on the validation metric, and the training
record every trained generator leaves in ``result.json`` (why it stopped, its validation curve, what it saw).

Stop rules: ``patience`` (validation stopped improving), ``epoch_cap``, ``step_cap`` (``max_steps``),
``time_cap`` (a wall-clock limit), ``no_validation`` (trained without validating: a fixed budget).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

    def state_dict(self) -> dict:
        return {"elapsed": time.perf_counter() - self.started}

    def load_state_dict(self, state: dict) -> None:
        """Continue a resumed run's clock: the minutes trained before the interruption count."""
        self.started = time.perf_counter() - float(state["elapsed"])


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

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "bad_checks": self.bad_checks,
            "best_state": self.best_state,
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_checks = state["best"], state["best_epoch"], state["bad_checks"]
        self.best_state, self.history = state["best_state"], list(state["history"])

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


class EpochCheckpoint:
    """Resume an interrupted training loop at its last finished epoch.

    At each epoch end the loop's whole state (weights, optimizer, schedule, the epoch-order and global random
    streams, and ``parts`` such as the :class:`EarlyStopping` and :class:`TrainClock`) goes atomically to
    ``<folder>/<name>.pt``; the runner gives each cell such a folder (``RunContext.resume_dir``) and removes it
    once the cell is written. Restored exactly, a resumed run trains as the uninterrupted one would: the same
    batches, dropout masks and losses on the same machine. A snapshot whose ``fingerprint`` (the cell's identity
    and what the loop trains on) differs is ignored, so a changed configuration starts afresh.
    """

    def __init__(
        self, folder: Path | None, name: str, fingerprint: str, logger: logging.Logger | None = None, **parts: Any
    ):
        self.path = None if folder is None else Path(folder) / f"{name}.pt"
        self.name, self.fingerprint, self.parts = name, fingerprint, parts
        self.log = logger or logging.getLogger("genrec_bench")

    def restore(self, model: torch.nn.Module, optimizer, schedule, rng: torch.Generator) -> tuple[int, int]:
        """Load the last snapshot into the loop's objects; returns (epochs done, optimizer steps done)."""
        if self.path is None or not self.path.exists():
            return 0, 0
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a snapshot torn by a crash of the disk, not by us (we write atomically)
            self.log.warning("  %s: unreadable snapshot %s (%s); training from the start", self.name, self.path, exc)
            return 0, 0
        if state.get("fingerprint") != self.fingerprint:
            self.log.info(
                "  %s: the snapshot in %s is of another configuration; training from the start", self.name, self.path
            )
            return 0, 0
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        for key, part in self.parts.items():
            part.load_state_dict(state["parts"][key])
        self.log.info(
            "  %s: resumed after epoch %d (%d optimizer steps) from %s",
            self.name,
            state["epoch"],
            state["step"],
            self.path,
        )
        return int(state["epoch"]), int(state["step"])

    def save(self, epoch: int, step: int, model: torch.nn.Module, optimizer, schedule, rng: torch.Generator) -> None:
        if self.path is None:
            return
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else None,
            "rng": rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "parts": {key: part.state_dict() for key, part in self.parts.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # the old snapshot stays whole until the new one is


class ListState:
    """A list a training loop appends to (its epoch records) as an :class:`EpochCheckpoint` part."""

    def __init__(self, items: list):
        self.items = items

    def state_dict(self) -> dict:
        return {"items": list(self.items)}

    def load_state_dict(self, state: dict) -> None:
        self.items[:] = state["items"]


class StreamState:
    """A random stream other than the loop's own (e.g. validation's sampling noise) as an
    :class:`EpochCheckpoint` part, so a resumed run draws what the uninterrupted one would."""

    def __init__(self, stream: torch.Generator):
        self.stream = stream

    def state_dict(self) -> dict:
        return {"state": self.stream.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.set_state(state["state"])


def state_digest(module: torch.nn.Module) -> str:
    """SHA-1 of a module's weights and buffers: part of a snapshot's fingerprint, so a snapshot is resumed only
    into a model built from the same inputs (the same tokens, item space and initial weights)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
