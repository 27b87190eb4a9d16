"""Which machine a result was measured on, and how fast this one is against it.

A cell's time depends on the machine that ran it: on 2-core development machines ContRec's training epoch took
twice as long (and more) on an AVX2-only CPU, in fp32, as on one with bf16 units, whose ``precision: auto`` runs
in bf16; the CPU model name alone does not tell them apart (two such machines both report ``AMD EPYC``), and a
cell run at two threads is not a one-thread figure. A machine is therefore keyed by the device and, on a CPU, the
model name, the widest SIMD set ATen dispatches to, whether it has bf16 units and torch's thread count
(``environment`` in every ``result.json``).

:class:`SpeedIndex` turns finished cells into a speed ratio between two machines: the training seconds per epoch
of the same method on the same data set, measured on both, here over there, the median over data sets (a
cell's epoch count depends on its seed's patience; its time per epoch barely does). Where the method has not run
on both, methods that ran there in the same precision stand in for it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import torch

from . import store

Machine = tuple
"""``("cpu", model, simd, bf16_units, threads)`` or ``("cuda", device_name)``; None: not recorded (early results)."""


def of_result(result: dict | None) -> Machine | None:
    """The machine a ``result.json`` was measured on, None when it records none."""
    env = (result or {}).get("environment") or {}
    if str(env.get("device") or "cpu").startswith("cuda"):
        return ("cuda", env.get("device_name"))
    if not env.get("cpu_model"):
        return None
    simd, bf16, threads = env.get("cpu_capability"), bool(env.get("cpu_bf16_units")), env.get("torch_threads")
    return ("cpu", env["cpu_model"], simd, bf16, threads)


def current(device: str = "cpu") -> Machine:
    """This machine, as :func:`of_result` would record it for a run on ``device``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return ("cuda", torch.cuda.get_device_name(torch.device(device)))
    from .context import cpu_has_bf16_units
    from .environment import cpu_model

    simd, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    return ("cpu", cpu_model(), simd, cpu_has_bf16_units(), threads)


def describe(machine: Machine | None) -> str:
    """'AMD EPYC, AVX2, 1 thread', 'Intel Xeon, AVX512, bf16 units, 2 threads', 'NVIDIA H100' or 'an
    unrecorded CPU'."""
    if machine is None:
        return "an unrecorded CPU"
    if machine[0] == "cuda":
        return str(machine[1])
    _, model, simd, bf16, threads = machine
    count = f"{threads} thread{'s' if threads != 1 else ''}" if threads else None
    return ", ".join(str(part) for part in (model, simd, "bf16 units" if bf16 else None, count) if part)


def epoch_seconds(result: dict) -> float | None:
    """Training seconds per generator epoch of a finished cell, None when it has no epochs."""
    fit = (result.get("timings") or {}).get("generator_fit")
    epochs = ((result.get("training") or {}).get("generator") or {}).get("epochs_run")
    if not isinstance(fit, (int, float)) or not isinstance(epochs, int) or epochs <= 0 or fit <= 0:
        return None
    return float(fit) / epochs


def _precision(result: dict) -> tuple[str, ...]:
    return tuple((result.get("precision") or {}).get("used") or ())


class SpeedIndex:
    """Per-epoch training seconds of the finished cells in some results folders, read once, on first use."""

    def __init__(self, folders: Sequence[Path]):
        self.folders = [folder for folder in folders if folder.is_dir()]

    @cached_property
    def _cells(self) -> list[tuple[str, str, Machine | None, tuple[str, ...], float]]:
        """(method, data set, machine, precision used, seconds per epoch) of every finished cell."""
        cells, seen = [], set()
        for folder in self.folders:
            for seed_dir in sorted(folder.glob("*/*/seed-*")):
                method, dataset = seed_dir.parent.name, seed_dir.parent.parent.name
                result = store.read_result(seed_dir)
                rate = epoch_seconds(result) if result and result.get("status") == "ok" else None
                if result is None or rate is None or (dataset, method, seed_dir.name) in seen:
                    continue  # a cell merged into the main folder is counted once
                seen.add((dataset, method, seed_dir.name))
                cells.append((method, dataset, of_result(result), _precision(result), rate))
        return cells

    def ratio(
        self, method: str, theirs: Machine | None, ours: Machine, precision: Sequence[str] = ()
    ) -> tuple[float, str] | None:
        """How many times longer an epoch takes on ``ours`` than on ``theirs`` and what that rests on: the same
        method on the data sets it ran on both; else every method that ran on ``theirs`` in ``precision``.
        None when no method has finished on both machines."""
        rates: dict[tuple[str, str], dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
        precision_there: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)
        for cell_method, dataset, machine, used, rate in self._cells:
            if machine == ours or machine == theirs:
                rates[(cell_method, dataset)][machine == ours].append(rate)
                if machine == theirs:
                    precision_there[(cell_method, dataset)].add(used)
        both = {key: sides for key, sides in rates.items() if sides[True] and sides[False]}
        same = {key: sides for key, sides in both.items() if key[0] == method}
        if same:
            basis = f"{method}'s training time per epoch on both, {len(same)} data set(s)"
        else:
            same = {key: sides for key, sides in both.items() if precision_there[key] == {tuple(precision)}}
            names = sorted({key[0] for key in same})
            basis = f"training time per epoch on both of {', '.join(names)}, run there in "
            basis += "+".join(precision) or "an unrecorded precision"
        if not same:
            return None
        factor = statistics.median(statistics.mean(s[True]) / statistics.mean(s[False]) for s in same.values())
        return factor, basis
