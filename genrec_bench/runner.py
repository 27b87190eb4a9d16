"""Run a benchmark: load data sets, expand cells, run each one (or skip it if finished), store results.

Where the cells run is up to an executor (executors.py, imported here; it never imports this module: the
:class:`Runner` hands itself over as the ``CellRunner`` the executors are written against).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from . import store
from .config import COMPONENTS, Benchmark, Cell, check_params, expand_cells, instantiate
from .context import RunContext
from .convergence import DEFAULT_TOLERANCE, assess
from .data import SequenceDataset, SplitData, load_dataset
from .environment import choose_device, describe, peak_memory_mb, seed_everything
from .errors import ConfigError, GenrecError
from .evaluation import eval_batch_size, per_user_metrics, ranking_hits, summarize
from .executors import CellOutcome, make_executor
from .lock import ResultsLock, clean_results, clean_work_dirs, work_prefix
from .plugins import load_module_plugins, registry
from .protocol import READING_KEYS
from .schedule import Budget, Decision, decide

log = logging.getLogger("genrec_bench")


def cell_identity(cell: Cell, dataset: SequenceDataset) -> str:
    """Hash of the resolved configuration, the data fingerprint and the versions of the plugins used."""
    from . import __version__

    reg = registry()
    versions = {c: reg.version_of(f"{c}s", cell.components[c]["name"]) for c in COMPONENTS}
    versions["dataset"] = reg.version_of("datasets", cell.dataset_spec.get("loader", cell.dataset))
    config = cell.resolved()
    config["protocol"] = {k: v for k, v in config["protocol"].items() if k not in READING_KEYS}
    payload = {"config": config, "data": dataset.fingerprint, "versions": versions, "core": __version__}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def validate_cells(bench: Benchmark, cells: list[Cell]) -> None:
    """Check every plugin name and parameter before anything runs."""
    reg = registry()
    for metric in bench.protocol["metrics"]:
        reg.get("metrics", metric, where=bench.where("protocol", "metrics"))
    valid_metric = bench.protocol["valid_metric"].partition("@")[0]
    if valid_metric not in bench.protocol["metrics"]:
        raise ConfigError(
            f"{bench.where('protocol', 'valid_metric')}: '{valid_metric}' is not one of "
            f"protocol.metrics ({', '.join(bench.protocol['metrics'])}); pick one of them or add it "
            "there"
        )
    for name, method in bench.methods.items():
        for component in COMPONENTS:
            spec = dict(method[component])
            where = bench.where("methods", name, component)
            factory = reg.get(f"{component}s", spec.pop("name"), where=where)
            check_params(factory, spec, where)
    for cell in cells:  # swept values, too
        for component in COMPONENTS:
            spec = dict(cell.components[component])
            factory = reg.get(f"{component}s", spec.pop("name"))
            check_params(factory, spec, bench.where("methods", cell.method.split("@")[0], "sweep"))


def _validator(
    generator,
    retriever,
    split: SplitData,
    protocol: dict,
    metrics: dict,
    ctx: RunContext,
    batch_size: int,
    names: dict[str, str] | None = None,
):
    metric_name, _, k = protocol["valid_metric"].partition("@")
    users = None
    if protocol.get("valid_users") and protocol["valid_users"] < split.n_users:
        rng = np.random.default_rng(ctx.seed)
        users = np.sort(rng.choice(split.n_users, size=protocol["valid_users"], replace=False))

    def validate() -> dict[str, float]:
        hits = ranking_hits(generator, retriever, split, "valid", int(k), ctx, batch_size, users, names)
        return summarize(per_user_metrics(hits, [int(k)], {metric_name: metrics[metric_name]}))

    return validate


def run_cell(cell: Cell, dataset: SequenceDataset, ctx: RunContext) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Fit the method's three parts and evaluate on the test users. Returns metrics, per-user arrays, extras."""
    reg = registry()
    protocol = cell.protocol
    ctx.precision = protocol.get("precision", "auto")
    seed_everything(cell.seed)
    split = SplitData(dataset, protocol["max_history"], protocol["exclude_history"])
    parts = {}
    for component in COMPONENTS:
        spec = dict(cell.components[component])
        name = spec.pop("name")
        parts[component] = instantiate(reg.get(f"{component}s", name), spec, f"{cell.method}.{component}")
    tokenizer, generator, retriever = parts["tokenizer"], parts["generator"], parts["retriever"]
    metrics = {name: reg.get("metrics", name) for name in protocol["metrics"]}
    batch_size = eval_batch_size(split.n_items, protocol["eval_memory_mb"])
    timings: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        start = time.perf_counter()
        log.info("%s | %s | seed %d | %s", cell.dataset, cell.method, cell.seed, stage)
        try:
            out = fn(*args)
        except Exception as exc:
            exc.genrec_stage = stage  # type: ignore[attr-defined]  # recorded with the failed cell
            raise
        timings[stage] = time.perf_counter() - start
        return out

    names = {"method": cell.method, **{c: str(cell.components[c]["name"]) for c in COMPONENTS}}
    health: dict[str, float] = {}

    def stage_health(stage: str | None) -> None:
        """Record what generator and retriever counted since the last call as ``<component>/<stage>/<name>``."""
        for component in ("generator", "retriever"):
            figures: dict[str, float] = getattr(
                parts[component], "stage_health", dict
            )()  # duck-typed plugins may lack it
            if stage is not None:
                health.update({f"{component}/{stage}/{k}": float(v) for k, v in figures.items()})

    timed("tokenizer_fit", tokenizer.fit, split, ctx)
    timed("retriever_fit", retriever.fit, split, tokenizer, ctx)
    stage_health(None)  # whatever fitting counted belongs to no stage
    validate = _validator(generator, retriever, split, protocol, metrics, ctx, batch_size, names)
    timed("generator_fit", generator.fit, split, tokenizer, validate, ctx)
    stage_health("valid")  # every validate() call made during fitting
    hits = timed(
        "evaluate", ranking_hits, generator, retriever, split, "test", max(protocol["ks"]), ctx, batch_size, None, names
    )
    stage_health("test")
    per_user = per_user_metrics(hits, protocol["ks"], metrics)
    for component, part in parts.items():
        health.update({f"{component}/{k}": float(v) for k, v in part.health().items()})
    tolerance = protocol.get("convergence_tolerance", DEFAULT_TOLERANCE)
    training = {c: assess(training_record(parts[c]), tolerance) for c in ("tokenizer", "generator")}
    precision = {"setting": ctx.precision, "used": sorted(ctx.dtypes_used) or ["fp32"]}
    extras = {
        "timings": timings,
        "health": health,
        "training": training,
        "precision": precision,
        "n_users": split.n_users,
        "n_items": split.n_items,
        "n_interactions": dataset.n_interactions,  # with n_users: a new data set's time estimate (schedule.py)
    }
    return summarize(per_user), per_user, extras


def training_record(part: Any) -> dict | None:
    """A plugin's training record (``training_record()``, or a duck-typed plugin's ``training`` attribute)."""
    method = getattr(part, "training_record", None)
    record = method() if callable(method) else getattr(part, "training", None)
    return dict(record) if record else None


class Runner:
    """Runs the cells of one benchmark into ``results_dir/<benchmark>``."""

    def __init__(
        self,
        bench: Benchmark,
        results_dir: Path,
        cache_dir: Path,
        device: str | None = None,
        show_progress: bool = True,
        rerun: bool = False,
        methods: list[str] | None = None,
        executor: str = "local",
        address: str | None = None,
        max_minutes: float | None = None,
        wait: bool = False,
    ):
        if max_minutes is not None and executor != "local":
            raise ConfigError("--max-minutes works with --executor local (Ray runs cells in parallel)")
        self.bench = bench
        self.out_dir = Path(results_dir) / bench.name
        default_dir = Path(bench.raw.get("results_dir") or "results") / bench.name  # where its cells usually are
        self.device = choose_device(device or bench.device)
        self.budget = Budget(bench, self.out_dir, max_minutes, elsewhere=[default_dir], device=str(self.device))
        self.wait = wait
        self.cache_dir = Path(cache_dir)
        self.device_request = device  # re-resolved on each Ray worker, which may have other devices
        self.show_progress = show_progress
        self.rerun = rerun
        self.methods = methods
        self.executor = make_executor(executor, address)

    def cells(self) -> list[Cell]:
        cells = expand_cells(self.bench)
        if self.methods:
            unknown = set(self.methods) - set(self.bench.methods)
            if unknown:
                raise GenrecError(
                    f"--method {sorted(unknown)[0]}: not in {self.bench.path}; "
                    f"methods are {', '.join(self.bench.methods)}"
                )
            cells = [c for c in cells if c.method.split("@")[0] in self.methods]
        for cell in cells:  # names are checked in config; this guards benchmarks built in Python, too
            parts = cell.relative_dir().parts
            if len(parts) != 3 or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or "/" in cell.method:
                raise ConfigError(
                    f"{self.bench.path}: cell folder {cell.relative_dir()} is not a plain "
                    "<dataset>/<method>/seed-N path; rename the data set or method"
                )
        return cells

    def load_datasets(self) -> dict[str, SequenceDataset]:
        datasets = {}
        for name, spec in self.bench.datasets.items():
            start = time.perf_counter()
            datasets[name] = load_dataset(name, spec, self.cache_dir, where=self.bench.where("datasets", name))
            stats = datasets[name].statistics()
            log.info(
                "data set %s: %d users, %d items, %d interactions (%.1fs)",
                name,
                stats["users"],
                stats["items"],
                stats["interactions"],
                time.perf_counter() - start,
            )
        return datasets

    def prepare(self) -> tuple[list[Cell], dict[str, SequenceDataset]]:
        """Validate everything and load the data: bad input stops here, before any training."""
        load_module_plugins(self.bench.plugins, where=self.bench.where("plugins"))
        cells = self.cells()
        validate_cells(self.bench, cells)
        datasets = self.load_datasets()
        self.budget.sizes = {name: (d.n_users, d.n_items, d.n_interactions) for name, d in datasets.items()}
        for cell in cells:  # record the preprocessing actually applied (loader defaults included)
            cell.dataset_spec = {**datasets[cell.dataset].preprocessing, **cell.dataset_spec}
        return cells, datasets

    def run(self) -> list[CellOutcome]:
        cells, datasets = self.prepare()
        with ResultsLock(self.out_dir, wait=self.wait):  # one writer per results folder
            clean_results(self.out_dir)
            clean_work_dirs()
            return self.executor.run(self, cells, datasets)  # see executors.py: local (default) or ray

    def decisions(self, cells: list[Cell], datasets: dict[str, SequenceDataset]) -> list[Decision]:
        """For each cell: run or skip, and why (see schedule.decide)."""
        return [
            decide(self.out_dir / c.relative_dir(), cell_identity(c, datasets[c.dataset]), self.rerun) for c in cells
        ]

    def dry_run(self) -> list[tuple[Cell, str, str]]:
        """(cell, "run" | "skip" | "defer", why) for every cell, writing nothing."""
        cells, datasets = self.prepare()
        out, planned = [], 0.0
        for cell, decision in zip(cells, self.decisions(cells, datasets), strict=True):
            if decision.action == "skip":
                out.append((cell, "skip", decision.why))
                continue
            deferred = self.budget.admit(cell, spent=planned)
            if deferred:
                out.append((cell, "defer", deferred))
                continue
            seconds, source = self.budget.estimate(cell)
            planned += seconds or 0.0
            self.budget.started += 1
            shown = f"; ~{seconds / 60:.1f} min ({source})" if seconds is not None else "; no time estimate"
            out.append((cell, "run", decision.why + shown))
        return out

    def run_one(self, cell: Cell, dataset: SequenceDataset) -> CellOutcome:
        """Run one cell here (or skip it if finished with the same identity) and store what it gave."""
        cell_dir = self.out_dir / cell.relative_dir()
        identity = cell_identity(cell, dataset)
        if not self.rerun and store.is_finished(cell_dir, identity):
            result = store.read_result(cell_dir) or {}
            log.info("  finished earlier, skipped (%s)", cell_dir)
            return CellOutcome(cell, "skipped", result.get("metrics", {}), 0.0)
        resume_dir = store.resume_dir(cell_dir)
        if self.rerun:  # from scratch, as asked: no epoch snapshots of an earlier try
            shutil.rmtree(resume_dir, ignore_errors=True)
        start = time.perf_counter()
        base = {
            "identity": identity,
            "benchmark": self.bench.name,
            "baseline": self.bench.baseline,
            "claims": self.bench.raw.get("claims") or [],
            "claims_metric": self.bench.raw.get("claims_metric"),
            "budget": (self.bench.raw.get("budget") or {}).get("equal"),
            "select": self.bench.raw.get("select"),
            "dataset": cell.dataset,
            "method": cell.method,
            "seed": cell.seed,
            **({"profile": cell.profile} if cell.profile else {}),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with tempfile.TemporaryDirectory(prefix=work_prefix()) as work_dir:
            ctx = RunContext(self.device, cell.seed, self.cache_dir, Path(work_dir), self.show_progress, log)
            ctx.resume_dir, ctx.identity = resume_dir, identity
            try:
                metrics, per_user, extras = run_cell(cell, dataset, ctx)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a failing cell is recorded and the sweep goes on
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log.error("  cell failed in %s: %s", getattr(exc, "genrec_stage", "setup"), reason)
                result = {
                    **base,
                    "status": "failed",
                    "error": reason,
                    "failed_stage": getattr(exc, "genrec_stage", None),
                    "seconds": time.perf_counter() - start,
                    "environment": describe(self.device),
                }
                if store.is_finished(cell_dir, identity):  # never replace a good result with a failure
                    return CellOutcome(cell, "failed", {}, result["seconds"], reason)
                store.write_cell(cell_dir, result, cell.resolved(), None, {"error.txt": traceback.format_exc()})
                return CellOutcome(cell, "failed", {}, result["seconds"], reason)
        seconds = time.perf_counter() - start
        extras["timings"]["total"] = seconds
        result = {
            **base,
            "status": "ok",
            "error": None,
            "metrics": metrics,
            "seconds": seconds,
            **extras,
            "environment": {**describe(self.device), **peak_memory_mb(self.device)},
        }
        users = np.arange(dataset.n_users, dtype=np.int64)
        arrays: dict[str, Any] = {"users": users, "user_ids": dataset.user_ids.astype(str), **per_user}
        store.write_cell(cell_dir, result, cell.resolved(), arrays)
        shutil.rmtree(resume_dir, ignore_errors=True)  # the cell is whole: its snapshots are spent
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.endswith("@10"))
        log.info("  done in %.1fs: %s", seconds, shown)
        return CellOutcome(cell, "ok", metrics, seconds)
