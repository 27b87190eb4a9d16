"""Did a training run reach its validation plateau? Decided from the training record a plugin leaves
(``genrec_bench.training.training_summary``) with the protocol's ``convergence_tolerance``.

A run is *converged* when its patience fired (validation stopped improving), or when it stopped at a cap but
its last ``patience`` validations improved on the best before them by no more than the tolerance (relative to
that best): a plateau the cap happened to end on. Otherwise it *stopped by budget while improving*, and the
leaderboard gives no verdict on a comparison that involves it (``genrec_bench.leaderboard.claims``).
"""

from __future__ import annotations

from typing import Any

#: relative gain over the last ``patience`` validations still counted as a plateau (protocol default)
DEFAULT_TOLERANCE = 0.02

CAPS = {"epoch_cap": "epoch cap", "step_cap": "step cap", "time_cap": "time cap", "no_validation": "fixed budget"}


def recent_gain(record: dict[str, Any]) -> float | None:
    """Relative improvement of the last ``patience`` validations over the best before them (None: too few)."""
    values = [float(v) for _, v in record.get("valid_curve") or []]
    patience = max(1, int(record.get("patience") or 1))
    if len(values) <= patience:
        return None
    before, recent = max(values[:-patience]), max(values[-patience:])
    return (recent - before) / abs(before) if before else float("inf") if recent > before else 0.0


def loss_drop(record: dict[str, Any]) -> float | None:
    """For a run without validation: the training loss's relative drop over the last tenth of its epochs."""
    curve = record.get("loss_curve") or []
    if len(curve) < 5:
        return None
    last_epoch = curve[-1][0]
    earlier = [v for e, v in curve if e <= last_epoch - max(1, last_epoch // 10)]
    if not earlier:
        return None
    before, now = float(earlier[-1]), float(curve[-1][1])
    return (before - now) / abs(before) if before else 0.0


def is_converged(record: dict[str, Any], tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Patience fired, or the last ``patience`` validations gained at most ``tolerance`` (relative) over the
    best before them; for a run without validation, its training loss fell by at most ``tolerance`` over its
    last tenth."""
    if record.get("stop_rule") == "patience":
        return True
    if not record.get("valid_curve") and record.get("loss_curve"):
        drop = loss_drop(record)
        return drop is not None and drop <= tolerance
    gain = recent_gain(record)
    return gain is not None and gain <= tolerance


def assess(record: dict[str, Any] | None, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any] | None:
    """The record with ``converged``, ``tolerance`` and ``recent_gain`` added (None stays None: not trained)."""
    if record is None:
        return None
    return {
        **record,
        "converged": is_converged(record, tolerance),
        "tolerance": tolerance,
        "recent_gain": recent_gain(record),
    }


def stop_label(record: dict[str, Any] | None) -> str:
    """A short label for tables: ``patience``, ``epoch cap (plateau)``, ``epoch cap, improving``, ``n/a``."""
    if record is None:
        return "n/a"
    rule = str(record.get("stop_rule"))
    if rule == "patience":
        return "patience"
    name = CAPS.get(rule, rule)
    if "converged" not in record:
        return name
    return f"{name} (plateau)" if record["converged"] else f"{name}, improving"


def budget_text(record: dict[str, Any] | None) -> str:
    """What a run was trained on, for "at a budget of ..." verdicts: epochs, samples and steps where known."""
    if record is None:
        return "no training"
    parts = [f"{record.get('epochs_run')} epochs"]
    if record.get("samples") is not None:
        parts.append(f"{record['samples']:,} samples")
    if record.get("steps") is not None:
        parts.append(f"{record['steps']:,} steps")
    return ", ".join(parts)
