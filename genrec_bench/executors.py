"""Where a sweep's cells run: in this process (``local``, the default) or as tasks on a Ray cluster (``ray``).

The :class:`~genrec_bench.runner.Runner` loads and validates the data, then hands the cells to an executor,
together with itself as the :class:`CellRunner` that runs one cell and says which cells are finished.
Both executors write through the same store with the same cell identity, so a sweep can start on one and
resume on the other. Ray is an optional extra (``pip install -e ".[ray]"``) imported only when asked for.
This module never imports runner.py (runner.py imports it, for :class:`CellOutcome` and ``make_executor``).
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import store
from .environment import choose_device, describe
from .errors import ConfigError, GenrecError

if TYPE_CHECKING:
    import torch

    from .config import Benchmark, Cell
    from .data import SequenceDataset
    from .schedule import Budget, Decision

log = logging.getLogger("genrec_bench")

EXECUTORS = ("local", "ray")
RESOURCE_KEYS = {"cpus": float, "gpus": float, "memory_gb": float, "retries": int}
DEFAULT_RESOURCES = {"cpus": 1.0, "gpus": 0.0, "memory_gb": 0.0, "retries": 2}


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # "ok", "skipped" (finished earlier), "failed", "deferred" (did not fit --max-minutes)
    metrics: dict[str, float]
    seconds: float
    error: str | None = None  # failed: the reason; deferred: why it was not started


class CellRunner(Protocol):
    """What an executor uses of the runner (:class:`genrec_bench.runner.Runner` is one); Ray pickles it."""

    bench: Benchmark
    budget: Budget
    out_dir: Path
    rerun: bool
    device: torch.device

    def decisions(self, cells: list[Cell], datasets: dict[str, SequenceDataset]) -> list[Decision]:
        """For each cell: run or skip, why, and its identity."""
        ...

    def run_one(self, cell: Cell, dataset: SequenceDataset) -> CellOutcome:
        """Run one cell in this process (or skip it if finished) and store it."""
        ...


class LocalExecutor:
    """Runs the cells one after the other in this process."""

    def run(self, runner: CellRunner, cells: list[Cell], datasets: dict[str, SequenceDataset]) -> list[CellOutcome]:
        budget = runner.budget
        decisions = runner.decisions(cells, datasets)
        todo = [c for c, d in zip(cells, decisions, strict=True) if d.action == "run"]
        log.info(
            "%d cells: %d finished earlier, %d to run; %s",
            len(cells),
            len(cells) - len(todo),
            len(todo),
            budget.eta(todo),
        )
        outcomes = []
        for number, (cell, decision) in enumerate(zip(cells, decisions, strict=True), start=1):
            log.info(
                "cell %d/%d: %s / %s / seed %d (%s)",
                number,
                len(cells),
                cell.dataset,
                cell.method,
                cell.seed,
                decision.why,
            )
            if decision.action == "run":
                todo.remove(cell)
                deferred = budget.admit(cell)
                if deferred:
                    log.info("  deferred: %s", deferred)
                    outcomes.append(CellOutcome(cell, "deferred", {}, 0.0, deferred))
                    continue
                budget.started += 1
            outcome = runner.run_one(cell, datasets[cell.dataset])
            outcomes.append(outcome)
            if outcome.status != "skipped":
                budget.ran.append(outcome.seconds)
                log.info("sweep: %d of %d cells done, %d to run; %s", number, len(cells), len(todo), budget.eta(todo))
        return outcomes


def method_resources(runner: CellRunner, method: str) -> dict[str, float]:
    """The method's ``resources`` mapping from the YAML, checked, with defaults filled in."""
    base = method.split("@")[0]
    given = runner.bench.methods[base].get("resources") or {}
    where = runner.bench.where("methods", base, "resources")
    if not isinstance(given, dict):
        raise ConfigError(f"{where}: expected a mapping like {{cpus: 1, gpus: 0, memory_gb: 2}}")
    out = dict(DEFAULT_RESOURCES)
    for key, value in given.items():
        if key not in RESOURCE_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key; resources has {', '.join(RESOURCE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where}.{key}: expected a number >= 0, got {value!r}")
        out[key] = RESOURCE_KEYS[key](value)
    return out


def _worker_run(runner: CellRunner, cell: Cell, dataset: SequenceDataset) -> CellOutcome:
    """Body of a Ray task: the same ``Runner.run_one`` as locally, on the worker's own device."""
    from .plugins import load_module_plugins

    if not log.handlers:  # Ray forwards the worker's stderr to the driver
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    load_module_plugins(runner.bench.plugins, where=runner.bench.where("plugins"))
    worker = copy.copy(runner)
    # Ray sets CUDA_VISIBLE_DEVICES to the GPUs granted to this task (none when gpus is 0).
    worker.device = choose_device(getattr(runner, "device_request", None) or runner.bench.device)
    return worker.run_one(cell, dataset)


@dataclass
class _Pending:
    index: int
    cell: Cell
    identity: str
    started: float


class RayExecutor:
    """Runs each cell as a Ray task sized by the method's ``resources``; finished cells are never submitted.

    A task whose worker process dies (killed, out of memory, node lost) is retried ``retries`` times by Ray,
    then recorded as a failed cell with the reason. Exceptions inside a cell are recorded by the cell itself
    and not retried (they are deterministic). The cache dir must be on storage every node sees.
    """

    def __init__(self, address: str | None = None):
        self.address = address

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError:
            raise GenrecError(
                "--executor ray needs Ray: pip install -e \".[ray]\" (or pip install 'ray>=2.9')"
            ) from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        return ray

    def run(self, runner: CellRunner, cells: list[Cell], datasets: dict[str, SequenceDataset]) -> list[CellOutcome]:
        resources = {cell.method: method_resources(runner, cell.method) for cell in cells}  # fail before Ray
        outcomes: list[CellOutcome | None] = [None] * len(cells)
        todo = []
        for index, (cell, decision) in enumerate(zip(cells, runner.decisions(cells, datasets), strict=True)):
            if decision.action == "skip":  # finished with the same identity, and no --rerun
                result = store.read_result(runner.out_dir / cell.relative_dir()) or {}
                outcomes[index] = CellOutcome(cell, "skipped", result.get("metrics", {}), 0.0)
            else:
                todo.append((index, cell, decision.identity))
        log.info("%d cells: %d finished earlier, %d to run on Ray", len(cells), len(cells) - len(todo), len(todo))
        if not todo:
            return outcomes  # type: ignore[return-value]
        ray = self._connect()
        remote = ray.remote(_worker_run)
        data_refs = {
            name: ray.put(data) for name, data in datasets.items() if any(c.dataset == name for _, c, _ in todo)
        }
        pending: dict[Any, _Pending] = {}
        for index, cell, identity in todo:
            res = resources[cell.method]
            options = {
                "num_cpus": res["cpus"],
                "num_gpus": res["gpus"],
                "max_retries": res["retries"],
                "retry_exceptions": False,
            }
            if res["memory_gb"]:
                options["memory"] = int(res["memory_gb"] * 1024**3)
            ref = remote.options(**options).remote(runner, cell, data_refs[cell.dataset])
            pending[ref] = _Pending(index, cell, identity, time.perf_counter())
        done_count = 0
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ready[0])
                done_count += 1
                try:
                    outcome = ray.get(ready[0])
                except Exception as exc:  # the worker died more often than retries allow
                    outcome = self._record_lost(runner, item, exc, int(resources[item.cell.method]["retries"]))
                outcomes[item.index] = outcome
                log.info(
                    "cell %d/%d %s: %s / %s / seed %d (%.1fs)",
                    done_count,
                    len(todo),
                    outcome.status,
                    item.cell.dataset,
                    item.cell.method,
                    item.cell.seed,
                    outcome.seconds,
                )
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return outcomes  # type: ignore[return-value]

    @staticmethod
    def _record_lost(runner: CellRunner, item: _Pending, exc: BaseException, retries: int) -> CellOutcome:
        cell = item.cell
        reason = f"worker lost after {retries + 1} attempts: {type(exc).__name__}: {exc}".splitlines()[0]
        seconds = time.perf_counter() - item.started
        log.error("  cell %s failed: %s", cell.relative_dir(), reason)
        cell_dir = runner.out_dir / cell.relative_dir()
        if not store.is_finished(cell_dir, item.identity):  # never replace a good result with a failure
            result = {
                "identity": item.identity,
                "benchmark": runner.bench.name,
                "baseline": runner.bench.baseline,
                "dataset": cell.dataset,
                "method": cell.method,
                "seed": cell.seed,
                "status": "failed",
                "error": reason,
                "failed_stage": "worker",
                "seconds": seconds,
                "environment": describe(runner.device),
            }
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            store.write_cell(cell_dir, result, cell.resolved(), None, {"error.txt": text})
        return CellOutcome(cell, "failed", {}, seconds, reason)


def make_executor(name: str = "local", address: str | None = None) -> LocalExecutor | RayExecutor:
    if name == "local":
        if address:
            raise ConfigError("--address is for --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address)
    raise ConfigError(f"--executor: '{name}' is not one of {', '.join(EXECUTORS)}")
