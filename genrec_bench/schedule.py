"""Which cells a call runs, skips or defers, and how long the rest will take.

:func:`decide` says why a cell would run or be skipped (``--dry-run`` prints it). :class:`Budget` implements
``--max-minutes``: a cell starts only if its estimated time fits in what is left. The estimate comes from the
best evidence there is, in this order:

1. the same cell's own earlier ``seconds`` in its ``result.json`` (any identity; a failed run only bounds it
   from below, so the next source is used too when it is larger);
2. the longest ``seconds`` of the same method (same swept values) on the same data set at another seed, else
   of another swept variant of the method there (``sasrec@lr=0.003`` for ``sasrec@lr=0.001``): a sweep's
   first finished variant bounds the rest;
3. the same method on another data set of this results folder, the one nearest in training pairs
   (interactions less three per user: validation, test and each sequence's first item), its stages scaled:
   training by the samples an epoch draws under the method's ``samples_per_epoch`` (a fixed count stays, a
   pass grows with the data set), evaluation by the users, the tokenizer by the items; so a new data set is
   bounded before it has run once;
   Where this results folder has none of these, the benchmark's default results folder is read for them too
   (a second job writing a side folder, to be merged, is bounded by the main folder's cells);
4. the method's ``expected_minutes`` in the benchmark YAML;
5. none: such a cell starts only if it is the first cell this call starts (so every call makes progress),
   else it is deferred and the next call, which then has evidence from the other cells, may start it.

A generator with ``max_train_minutes`` bounds any of these: the training stage is counted at most at that cap
(a run scaled up from a smaller data set cannot train longer than the cap allows), and a cell whose earlier run
stopped at its time cap (stop rule ``time_cap``) is counted with the cap it has now, which a changed
configuration may have raised or lowered. The source then says ``training capped at N min``. Likewise an
earlier run's training is counted to the cell's ``epochs`` cap when the configuration changed it: raised above a
cap that run stopped at (``epoch_cap``), to the new cap, an upper bound since patience may fire first; lowered
below the epochs it ran, to the new cap.

An estimate from a run on another machine (``environment`` in its ``result.json``: CPU model, SIMD set, bf16
units and threads, or the GPU; or none recorded) is rescaled by how much longer a training epoch takes here than there
(:mod:`genrec_bench.machine_speed`: the same method measured on both, else the methods that ran there in the same
precision), and its source says so; where nothing has run on both, it is flagged, not rescaled.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import machine_speed, store
from .training import epoch_samples

if TYPE_CHECKING:
    from .config import Benchmark, Cell

log = logging.getLogger("genrec_bench")


@dataclass
class Decision:
    action: str  # "run" or "skip"
    why: str  # new, finished with same identity, configuration changed, failed before: ..., --rerun
    identity: str


def decide(cell_dir: Path, identity: str, rerun: bool = False) -> Decision:
    """Whether a cell runs, judged from what its folder holds."""
    result = store.read_result(cell_dir)
    if result is None:
        return Decision("run", "new", identity)
    status, same = result.get("status"), result.get("identity") == identity
    if status == "ok" and same and (cell_dir / store.PER_USER_FILE).is_file():
        return (
            Decision("run", "--rerun", identity)
            if rerun
            else Decision("skip", "finished with the same identity", identity)
        )
    if status == "ok":
        return Decision(
            "run", "configuration, data or plugin versions changed" if not same else "per_user.npz missing", identity
        )
    reason = str(result.get("error") or "no reason recorded")
    return Decision("run", f"failed before: {reason[:120]}", identity)


def _number(value: object) -> float | None:
    """``value`` as a float when it is a non-negative number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _seconds(result: dict | None) -> float | None:
    return _number((result or {}).get("seconds"))


class Machines:
    """This machine and the speed evidence of the results folders an estimate reads (indexed on first use)."""

    def __init__(self, ours: machine_speed.Machine, folders: Sequence[Path]):
        self.ours = ours
        self.index = machine_speed.SpeedIndex(folders)

    def factor(self, result: dict | None, method: str) -> tuple[float, str]:
        """(factor, note): how many times longer ``result``'s time takes here, and the note for the source (''
        when it was measured on this machine)."""
        theirs = machine_speed.of_result(result)
        if theirs == self.ours:
            return 1.0, ""
        there = f"another machine ({machine_speed.describe(theirs)})" if theirs else "an unrecorded CPU"
        precision = tuple(((result or {}).get("precision") or {}).get("used") or ())
        found = self.index.ratio(method, theirs, self.ours, precision)
        if found is None:
            return 1.0, f"; measured on {there}, not rescaled: nothing has run on both"
        factor, basis = found
        return factor, f"; measured on {there}, x{factor:.2f} here ({basis})"


def training_pairs(n_users: int, n_interactions: int) -> int:
    """(history, next item) training pairs of a leave-one-out split: each user's sequence less its validation
    and test items and its first item (which has no history)."""
    return max(1, int(n_interactions) - 3 * int(n_users))


def _scale(cell: Cell, new: tuple[int, int, int], ref: tuple[int, int, int]) -> dict[str, float]:
    """Per-stage factors from a reference data set to the cell's: training by the samples an epoch draws under
    the method's own ``samples_per_epoch`` (a fixed count does not grow with the data set, a pass or a fraction
    of one does), evaluation by the users, the tokenizer by the items."""
    generator = cell.components.get("generator") or {}
    setting = generator.get("samples_per_epoch") if isinstance(generator, dict) else None
    pairs_new, pairs_ref = training_pairs(new[0], new[2]), training_pairs(ref[0], ref[2])
    return {
        "generator_fit": epoch_samples(setting, pairs_new) / epoch_samples(setting, pairs_ref),
        "evaluate": new[0] / ref[0],
        "tokenizer_fit": new[1] / ref[1],
    }


def _epoch_bound(cell: Cell, record: dict) -> tuple[float, str]:
    """Factor on an earlier run's training time when the cell's ``epochs`` cap differs from that run's: raised
    above a cap the run stopped at (it would have gone on), the training is counted to the new cap, an upper
    bound (patience may fire first); lowered below the epochs it ran, counted to the new cap. 1.0 otherwise."""
    generator = cell.components.get("generator")
    new_cap = _number(generator.get("epochs")) if isinstance(generator, dict) else None
    run, old_cap = _number(record.get("epochs_run")), _number(record.get("epochs_cap"))
    if not new_cap or not run or not old_cap or new_cap == old_cap:
        return 1.0, ""
    if record.get("stop_rule") == "epoch_cap" and new_cap > run:
        return new_cap / run, f"; epoch cap raised {old_cap:g} -> {new_cap:g}, training counted to it (at most)"
    if new_cap < run:
        return new_cap / run, f"; epoch cap lowered to {new_cap:g} (it ran {run:g})"
    return 1.0, ""


def _capped(cell: Cell, seconds: float, result: dict, scale: float = 1.0) -> tuple[float, str]:
    """``seconds`` of ``result`` with its training stage (``timings.generator_fit``, times ``scale``) counted to
    the cell's ``epochs`` cap where that differs from the run's (``_epoch_bound``), then at most at the cell's
    ``max_train_minutes`` (plus a tenth: the cap is checked when an epoch ends), or at the cap when ``result``
    stopped at a smaller time cap of its own; the second item is the note for the source ('' when nothing
    changed)."""
    generator = cell.components.get("generator")
    fit = _number((result.get("timings") or {}).get("generator_fit"))
    if not isinstance(generator, dict) or fit is None:
        return seconds, ""
    record = (result.get("training") or {}).get("generator") or {}
    training = fit * scale
    factor, note = _epoch_bound(cell, record)
    bounded = training * factor
    minutes = _number(generator.get("max_train_minutes"))
    if minutes:
        cap = minutes * 60.0
        timed = cap if record.get("stop_rule") == "time_cap" and bounded < cap else min(bounded, cap * 1.1)
        if timed != bounded:
            bounded, note = timed, f"; training capped at {cap / 60:g} min"
    if bounded == training:
        return seconds, ""
    return max(seconds - training + bounded, 0.0), note


def _scaled_from_other_datasets(
    out_dir: Path, cell: Cell, sizes: dict[str, tuple[int, int, int]], machines: Machines
) -> tuple[float | None, str]:
    """The same method's time on the data set nearest in size (training pairs), each stage scaled (``_scale``);
    time outside the stages is taken as is."""
    if cell.dataset not in sizes:
        return None, "no estimate"
    new = sizes[cell.dataset]
    target = training_pairs(new[0], new[2])
    best: tuple[float, float, str] | None = None  # (distance in log size, seconds, text)
    for folder in sorted(out_dir.glob(f"*/{cell.method}")):
        dataset = folder.parent.name
        if dataset == cell.dataset:
            continue
        for seed_dir in sorted(folder.glob("seed-*")):
            result = store.read_result(seed_dir) or {}
            seconds = _seconds(result)
            ref = tuple(result.get(k) for k in ("n_users", "n_items", "n_interactions"))
            if seconds is None or result.get("status") != "ok" or not all(ref):
                continue
            distance = abs(math.log(target / training_pairs(ref[0], ref[2])))  # type: ignore[arg-type]
            if best is not None and distance >= best[0]:
                continue
            factors = _scale(cell, new, ref)  # type: ignore[arg-type]
            timings = {k: float(v) for k, v in (result.get("timings") or {}).items() if k in factors}
            speed, there = machines.factor(result, cell.method)
            scaled = (seconds + sum(timings[k] * (factors[k] - 1) for k in timings)) * speed
            scaled, capped = _capped(cell, scaled, result, factors["generator_fit"] * speed)
            text = (
                f"{cell.method} on {dataset} ({seconds:.0f} s) scaled: training x{factors['generator_fit']:.2f}, "
                f"users x{factors['evaluate']:.2f}{capped}{there}"
            )
            best = (distance, max(scaled, 0.0), text)
    return (best[1], best[2]) if best else (None, "no estimate")


def _evidence(
    folder: Path, cell: Cell, sizes: dict[str, tuple[int, int, int]], own: dict | None, machines: Machines
) -> tuple[float | None, str]:
    """Sources 1-3 of the module docstring from one results folder; ``own``: the cell's result.json there."""
    own_seconds = _seconds(own)
    if own_seconds is not None and own and own.get("status") == "ok":
        speed, there = machines.factor(own, cell.method)
        seconds, capped = _capped(cell, own_seconds * speed, own, speed)
        return seconds, "this cell's earlier run" + capped + there
    others = _timed_seeds(folder / cell.dataset / cell.method, skip=f"seed-{cell.seed}")
    if not others:  # another swept variant of the method on this data set
        base = cell.method.split("@")[0]
        for variant in sorted((folder / cell.dataset).glob(f"{base}*")):
            if variant.name != cell.method and variant.name.split("@")[0] == base:
                others += _timed_seeds(variant, label=f" of {variant.name}")
    if others:
        ok_only = [o for o in others if o[0]] or others
        timed = []
        for _, seconds, seed, result in ok_only:
            speed, there = machines.factor(result, cell.method)
            seconds, capped = _capped(cell, seconds * speed, result, speed)
            timed.append((seconds, f"the same method at {seed}{capped}{there}"))
        return max(timed, key=lambda t: t[0])
    return _scaled_from_other_datasets(folder, cell, sizes, machines)


def estimate(
    bench: Benchmark,
    out_dir: Path,
    cell: Cell,
    sizes: dict[str, tuple[int, int, int]] | None = None,
    elsewhere: Sequence[Path] = (),
    machines: Machines | None = None,
) -> tuple[float | None, str]:
    """Seconds the cell is expected to take and where the figure comes from (see the module docstring).
    ``sizes``: (users, items, interactions) per data set of this call, for estimates from other data sets.
    ``elsewhere``: other results folders of the benchmark (its default one, when this call writes a side
    folder to be merged later), read in order when ``out_dir`` has no evidence, before ``expected_minutes``.
    ``machines``: the machine the cell will run on and the speed evidence (default: this CPU, read from these
    folders); evidence from other machines is rescaled to it."""
    machines = machines or Machines(machine_speed.current(), [out_dir, *elsewhere])
    own = store.read_result(out_dir / cell.relative_dir())
    best = _evidence(out_dir, cell, sizes or {}, own, machines)
    for folder in elsewhere:
        if best[0] is not None:
            break
        if folder.is_dir() and folder.resolve() != out_dir.resolve():
            theirs = store.read_result(folder / cell.relative_dir())
            seconds, source = _evidence(folder, cell, sizes or {}, theirs, machines)
            best = (seconds, f"{source}, in {folder}") if seconds is not None else best
    minutes = bench.methods.get(cell.method.split("@")[0], {}).get("expected_minutes")
    if best[0] is None and minutes:
        best = (float(minutes) * 60.0, "expected_minutes")
    own_seconds = _seconds(own)
    if own_seconds is not None and own and own.get("status") != "ok":  # failed: at least as long as it took
        if best[0] is None or own_seconds >= best[0]:
            return own_seconds, "this cell's earlier (failed) run"
    return best


def _timed_seeds(folder: Path, skip: str = "", label: str = "") -> list[tuple[bool, float, str, dict]]:
    """(ok, seconds, "seed-N<label>", result) of each timed seed folder of one method folder, but ``skip``."""
    found = []
    for path in sorted(folder.glob("seed-*")):
        result = store.read_result(path)
        seconds = _seconds(result)
        if path.name != skip and result is not None and seconds is not None:
            found.append((result.get("status") == "ok", seconds, f"{path.name}{label}", result))
    return found


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class Budget:
    """``--max-minutes``: start no cell that cannot finish in the time left. ``None`` minutes: no limit."""

    def __init__(
        self,
        bench: Benchmark,
        out_dir: Path,
        max_minutes: float | None,
        start: float | None = None,
        elsewhere: Sequence[Path] = (),
        device: str = "cpu",
    ):
        self.bench = bench
        self.machine = machine_speed.current(device)  # what the cells will run on
        self._machines: tuple[int, Machines] | None = None  # speed evidence, read again when a cell has finished
        self.out_dir = out_dir
        self.elsewhere = list(elsewhere)  # other results folders read for evidence (see ``estimate``)
        self.max_seconds = None if max_minutes is None else float(max_minutes) * 60.0
        self.start = time.monotonic() if start is None else start
        self.started = 0  # cells started by this call
        self.ran: list[float] = []  # seconds of the cells this call ran
        self.sizes: dict[str, tuple[int, int, int]] = {}  # (users, items, interactions) per data set, once loaded

    def left(self, now: float | None = None) -> float:
        if self.max_seconds is None:
            return float("inf")
        return self.max_seconds - ((time.monotonic() if now is None else now) - self.start)

    def estimate(self, cell: Cell) -> tuple[float | None, str]:
        """:func:`estimate` for one cell of this call."""
        if self._machines is None or self._machines[0] != len(self.ran):
            self._machines = (len(self.ran), Machines(self.machine, [self.out_dir, *self.elsewhere]))
        return estimate(self.bench, self.out_dir, cell, self.sizes, self.elsewhere, self._machines[1])

    def admit(self, cell: Cell, spent: float = 0.0) -> str | None:
        """None when the cell may start now, else why it is deferred. ``spent``: time already planned (dry run)."""
        if self.max_seconds is None:
            return None
        seconds, source = self.estimate(cell)
        left = self.left() - spent
        if seconds is None:
            if self.started == 0:
                return None
            return (
                "no time estimate (no earlier run of this cell, or of this method on any data set, and no "
                "expected_minutes) and it is not the first cell of this call"
            )
        if seconds > left:
            return f"needs ~{_minutes(seconds)} ({source}), {_minutes(max(left, 0.0))} left of --max-minutes"
        return None

    def eta(self, remaining: list[Cell]) -> str:
        """'~N min (at HH:MM)' for the cells still to run, from the same per-cell estimates ``--max-minutes``
        uses. Cells without one are counted, not guessed: the mean of this call's cells (a 1-second popularity
        cell beside a 5-minute TIGER cell) says nothing about them, so the figure is then a lower bound."""
        if not remaining:
            return "none left"
        total, unknown = 0.0, 0
        for cell in remaining:
            seconds, _ = self.estimate(cell)
            if seconds is None:
                unknown += 1
            else:
                total += seconds
        when = time.strftime("%H:%M", time.localtime(time.time() + total))
        if unknown == len(remaining):
            return f"ETA unknown ({unknown} cell(s) without an estimate)"
        text = f"ETA {'>= ' if unknown else ''}~{_minutes(total)} (at {when})"
        return text + (f", plus {unknown} cell(s) without an estimate" if unknown else "")
