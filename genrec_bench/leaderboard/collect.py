"""Read a benchmark's results folder into per-dataset, per-method records, averaging seeds.

A cell (one seed of one method on one data set) is *valid* when its ``result.json`` says "ok" and its
``per_user.npz`` is readable with aligned arrays. Anything else (failed, unfinished, unreadable, absent
while other methods or data sets have it) becomes a one-line problem and a gap in the table.
Per-user values are averaged over a method's valid seeds, on the users every seed evaluated.

The bottom layer of the leaderboard (it imports no sibling module), so it also holds what every layer above
names a column with: ``metric_label``, ``HEALTH_COLUMNS`` and ``protocol_primary``.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..convergence import stop_label
from ..errors import GenrecError
from ..store import CONFIG_FILE, RESULT_FILE, read_per_user, read_result

SEED_DIR = re.compile(r"^seed-(-?\d+)$")
ID_KEYS = ("users", "user_ids")
HEALTH_COLUMNS = {
    "tokenizer/codebook_usage": "codebook usage",
    "tokenizer/collision_rate": "collision rate",
    "retriever/test/invalid_id_rate": "invalid-id rate",
    "retriever/test/text_usable": "text usable",  # ContRec's hybrid: 0 = it ranks as latent
    "retriever/invalid_id_rate": "invalid-id rate",
}  # results recorded before health per stage
NAMES = {"ndcg": "NDCG", "recall": "Recall", "mrr": "MRR", "hr": "HR", "precision": "Precision"}


def metric_label(key: str) -> str:
    """``ndcg@10`` -> ``NDCG@10`` (names without a spelling of their own are kept as they are)."""
    name, sep, k = key.partition("@")
    return f"{NAMES.get(name, name)}{sep}{k}"


class LeaderboardError(GenrecError):
    """A results folder that cannot be turned into a leaderboard at all."""


@dataclass
class MethodRecord:
    """One method on one data set: per-seed means, seed-averaged per-user values, and what went wrong."""

    name: str
    seed_means: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> mean
    health: dict[str, dict[int, float]] = field(default_factory=dict)  # health key -> seed -> value
    user_ids: np.ndarray | None = None  # str ids of the users in ``per_user`` (seed-averaged)
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    bad_seeds: dict[int, str] = field(default_factory=dict)  # seed -> why it is not used
    missing_seeds: list[int] = field(default_factory=list)
    timings: dict[str, dict[int, float]] = field(default_factory=dict)  # stage -> seed -> seconds
    memory: dict[str, dict[int, float]] = field(default_factory=dict)  # peak_rss_mb / peak_cuda_mb -> seed -> MB
    #: seed -> the generator's training record (None: not trained); seeds run before records existed are absent
    training: dict[int, dict[str, Any] | None] = field(default_factory=dict)

    @property
    def stopped_improving(self) -> list[int]:
        """Seeds whose generator stopped at a cap while validation still improved (genrec_bench.convergence)."""
        return [s for s, r in sorted(self.training.items()) if r is not None and r.get("converged") is False]

    @property
    def stop_note(self) -> str:
        """How training stopped, over seeds: ``patience``, ``epoch cap, improving (seeds 0, 2)``; empty when no
        seed recorded it."""
        if not self.training:
            return ""
        labels: dict[str, list[int]] = {}
        for seed, record in sorted(self.training.items()):
            labels.setdefault(stop_label(record), []).append(seed)
        if len(labels) == 1:
            return next(iter(labels))
        return "; ".join(
            f"{label} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))})" for label, s in labels.items()
        )

    @property
    def seeds(self) -> list[int]:
        return sorted({s for means in self.seed_means.values() for s in means})

    @property
    def status(self) -> str:
        """``ok``, ``partial`` (some seeds unusable or absent), ``failed`` (none usable) or ``missing``."""
        if self.seeds:
            return "partial" if self.bad_seeds or self.missing_seeds else "ok"
        return "failed" if self.bad_seeds else "missing"

    def mean(self, key: str) -> float | None:
        values = list((self.seed_means.get(key) or self.health.get(key) or {}).values())
        return float(np.mean(values)) if values else None

    def std(self, key: str) -> float | None:
        """Sample standard deviation over seeds (None with fewer than two seeds)."""
        values = list((self.seed_means.get(key) or self.health.get(key) or {}).values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else None


@dataclass
class DatasetRecord:
    name: str
    methods: dict[str, MethodRecord]
    protocol: dict[str, Any]
    spec: dict[str, Any]
    columns: list[str]  # metric@K keys, ordered as the protocol lists metrics, then by K
    health_columns: list[str]
    aliases: dict[str, list[str]] = field(default_factory=dict)  # kept column -> columns identical to it
    #: one line per swept method whose variant was chosen on validation (``select: validation``)
    selection: list[str] = field(default_factory=list)
    #: one line per method run with a ``per_dataset`` profile on this data set
    profiles: list[str] = field(default_factory=list)

    def canonical(self, key: str) -> str:
        """The column shown for ``key`` (itself, or the column it duplicates)."""
        return next((kept for kept, same in self.aliases.items() if key in same), key)


def protocol_primary(record: DatasetRecord) -> str:
    """The column detailed and plotted: the protocol's ``valid_metric`` when shown, else the first column."""
    valid = record.canonical(str(record.protocol.get("valid_metric") or ""))
    return valid if valid in record.columns else (record.columns[0] if record.columns else "")


@dataclass
class Collection:
    benchmark: str
    path: Path
    datasets: dict[str, DatasetRecord]
    seeds: list[int]
    baseline: str | None  # as recorded by the runner in result.json
    problems: list[str]
    claims: list[Any] = field(default_factory=list)  # the benchmark YAML's ``claims`` (recorded in result.json)
    claims_metric: str | None = None
    #: the benchmark YAML's ``budget.equal``: the methods were compared at this declared, matched budget
    budget: str | None = None
    #: the benchmark YAML's ``select``: "validation" when each swept method is its variant best on validation
    select: str | None = None


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _seed_dirs(method_dir: Path) -> dict[int, Path]:
    found = {}
    for p in _subdirs(method_dir):
        match = SEED_DIR.match(p.name)
        if match:
            found[int(match.group(1))] = p
    return found


def _read_cell(cell_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | str:
    """(result, per_user) of a valid cell, or the reason it is not valid."""
    result = read_result(cell_dir)
    if result is None:
        if (cell_dir / RESULT_FILE).exists():
            return f"{RESULT_FILE} is unreadable; re-run the cell"
        return f"no {RESULT_FILE} (unfinished or interrupted run); re-run the benchmark to complete it"
    if result.get("status") != "ok":
        error = str(result.get("error") or "no error recorded").strip().splitlines()
        return f"failed: {error[-1] if error else 'no error recorded'}"
    try:
        per_user = read_per_user(cell_dir)
    except (OSError, ValueError, zipfile.BadZipFile):
        return "per_user.npz is missing or unreadable; re-run the cell"
    ids = per_user.get("user_ids", per_user.get("users"))
    if ids is None:
        return "per_user.npz has no 'users' or 'user_ids' array"
    per_user = {k: v for k, v in per_user.items() if k in ID_KEYS or "@" in k}
    if any(len(v) != len(ids) for v in per_user.values()):
        return "per_user.npz arrays have different lengths; re-run the cell"
    per_user["_ids"] = ids.astype(str)
    return result, per_user


def _column_order(keys: set[str], protocol: dict[str, Any]) -> list[str]:
    order = {m: i for i, m in enumerate(protocol.get("metrics") or [])}

    def sort_key(key: str) -> tuple:
        name, _, k = key.partition("@")
        return order.get(name, len(order)), name, int(k) if k.isdigit() else 0, key

    return sorted(keys, key=sort_key)


def _average_seeds(
    record: MethodRecord, arrays: dict[int, dict[str, np.ndarray]], where: str, problems: list[str]
) -> None:
    """Average per-user values over seeds, on the users every seed has."""
    seeds = sorted(arrays)
    common = arrays[seeds[0]]["_ids"]
    for s in seeds[1:]:
        common = np.intersect1d(common, arrays[s]["_ids"])
    if len(seeds) > 1 and any(len(arrays[s]["_ids"]) != len(common) for s in seeds):
        sizes = ", ".join(f"seed-{s}: {len(arrays[s]['_ids'])}" for s in seeds)
        problems.append(
            f"{where}: seeds evaluated different users ({sizes}); per-user values averaged over "
            f"the {len(common)} users all seeds share"
        )
    common = np.unique(common)
    metrics = set.intersection(*({k for k in arrays[s] if "@" in k} for s in seeds))
    record.user_ids = common
    positions = {}
    for s in seeds:
        index = dict(zip(arrays[s]["_ids"].tolist(), range(len(arrays[s]["_ids"])), strict=True))
        positions[s] = np.array([index[u] for u in common.tolist()], dtype=np.int64)
    for key in metrics:
        record.per_user[key] = np.mean([arrays[s][key][positions[s]] for s in seeds], axis=0)


def collect(benchmark_dir: Path, only_methods: Sequence[str] | None = None) -> Collection:
    """Read every cell under ``benchmark_dir`` (only ``only_methods``' when given: the benchmark file's methods, so
    cells of a method since removed or renamed are left out, one problem line each); raise LeaderboardError only
    when nothing can be read."""
    benchmark_dir = Path(benchmark_dir)
    if not benchmark_dir.is_dir():
        raise LeaderboardError(
            f"{benchmark_dir}: results folder not found; give results/<benchmark> as written by 'genrec-bench run'"
        )
    layout = {d.name: {m.name: _seed_dirs(m) for m in _subdirs(d) if _seed_dirs(m)} for d in _subdirs(benchmark_dir)}
    problems_left_out: list[str] = []
    if only_methods is not None:
        wanted = set(only_methods)
        wanted |= {m for found in layout.values() for m in found if m.split("@")[0] in wanted}  # swept variants
        for dataset, found in layout.items():
            for method in sorted(set(found) - wanted):
                problems_left_out.append(
                    f"{benchmark_dir / dataset / method}: method '{method}' is not in the benchmark file; left out "
                    "(delete the folder, or add the method back to the file)"
                )
        layout = {d: {m: s for m, s in found.items() if m in wanted} for d, found in layout.items()}
    layout = {d: found for d, found in layout.items() if found}
    if not layout:
        raise LeaderboardError(
            f"{benchmark_dir}: no cells found (expected <dataset>/<method>/seed-<s>/); "
            "run 'genrec-bench run' first or check the path"
        )
    all_methods = sorted({m for methods in layout.values() for m in methods})
    all_seeds = sorted({s for methods in layout.values() for seeds in methods.values() for s in seeds})
    problems: list[str] = problems_left_out
    baselines: Counter = Counter()
    names: Counter = Counter()
    claims: Counter = Counter()
    budgets: Counter = Counter()
    selects: Counter = Counter()
    datasets = {}
    for dataset, methods in layout.items():
        configs = []
        records = {}
        profiles: dict[str, str] = {}
        for method in all_methods:
            record = records[method] = MethodRecord(method)
            seed_dirs = methods.get(method, {})
            if not seed_dirs:
                problems.append(
                    f"{benchmark_dir / dataset / method}: missing (no cells for this method on "
                    f"{dataset}); run it or leave it out of the benchmark"
                )
                continue
            record.missing_seeds = [s for s in all_seeds if s not in seed_dirs]
            if record.missing_seeds:
                problems.append(
                    f"{benchmark_dir / dataset / method}: seeds "
                    f"{', '.join(map(str, record.missing_seeds))} missing; averaged over the rest"
                )
            arrays = {}
            for seed, cell_dir in seed_dirs.items():
                cell = _read_cell(cell_dir)
                if isinstance(cell, str):
                    record.bad_seeds[seed] = cell
                    problems.append(f"{cell_dir}: {cell}")
                    continue
                result, per_user = cell
                arrays[seed] = per_user
                baselines[result.get("baseline")] += 1
                names[result.get("benchmark") or benchmark_dir.name] += 1
                for key, values in per_user.items():
                    if "@" in key:
                        record.seed_means.setdefault(key, {})[seed] = float(np.mean(values))
                for key, value in (result.get("health") or {}).items():
                    if key in HEALTH_COLUMNS and isinstance(value, (int, float)):
                        record.health.setdefault(key, {})[seed] = float(value)
                if isinstance(result.get("training"), dict):
                    record.training[seed] = result["training"].get("generator")
                if result.get("budget"):
                    budgets[str(result["budget"])] += 1
                selects[result.get("select")] += 1
                if isinstance(result.get("profile"), dict) and result["profile"]:
                    profiles[method] = ", ".join(f"{k}={v}" for k, v in sorted(result["profile"].items()))
                for key, value in (result.get("timings") or {}).items():
                    if isinstance(value, (int, float)):
                        record.timings.setdefault(key, {})[seed] = float(value)
                for key, value in (result.get("environment") or {}).items():
                    if key.startswith("peak_") and isinstance(value, (int, float)):
                        record.memory.setdefault(key, {})[seed] = float(value)
                if result.get("claims"):
                    claims[json.dumps([result["claims"], result.get("claims_metric")], sort_keys=True)] += 1
                try:
                    configs.append(yaml.safe_load((cell_dir / CONFIG_FILE).read_text()) or {})
                except (OSError, yaml.YAMLError):
                    problems.append(f"{cell_dir / CONFIG_FILE}: missing or unreadable; protocol card incomplete")
            if arrays:
                _average_seeds(record, arrays, str(benchmark_dir / dataset / method), problems)
        protocol: dict[str, Any] = next((c["protocol"] for c in configs if c.get("protocol")), {}) or {}
        spec: dict[str, Any] = next((c["dataset"] for c in configs if c.get("dataset")), {}) or {}
        if any(c.get("protocol") not in (None, protocol) for c in configs):
            problems.append(
                f"{benchmark_dir / dataset}: cells were run under different protocols; "
                "results are not comparable (the card shows the first)"
            )
        metric_keys = {k for r in records.values() for k in r.seed_means}
        health_keys = {k for r in records.values() for k in r.health}
        datasets[dataset] = DatasetRecord(
            dataset,
            records,
            protocol,
            spec,
            _column_order(metric_keys, protocol),
            [k for k in HEALTH_COLUMNS if k in health_keys],
            profiles=[f"{m}: {line}" for m, line in sorted(profiles.items())],
        )
    select = selects.most_common(1)[0][0] if selects else None  # the benchmark's setting, as its cells record it
    if select == "validation":
        for table in datasets.values():
            valid_metric = str(table.protocol.get("valid_metric") or "the validation metric")
            table.selection = select_variants(table.methods, valid_metric, str(benchmark_dir / table.name), problems)
    named = [b for b, _ in baselines.most_common() if b]
    if len(named) > 1:
        problems.append(f"{benchmark_dir}: cells name different baselines ({', '.join(named)}); using {named[0]!r}")
    benchmark = names.most_common(1)[0][0] if names else benchmark_dir.name
    claim_list, claims_metric = json.loads(claims.most_common(1)[0][0]) if claims else ([], None)
    if len(claims) > 1:
        problems.append(f"{benchmark_dir}: cells record different claims; using the most common")
    if len(budgets) > 1:
        problems.append(f"{benchmark_dir}: cells record different budgets; using the most common")
    return Collection(
        benchmark,
        benchmark_dir,
        datasets,
        all_seeds,
        named[0] if named else None,
        problems,
        claim_list,
        claims_metric,
        budgets.most_common(1)[0][0] if budgets else None,
        select,
    )


def best_validation(record: MethodRecord) -> float | None:
    """A method's validation score as model selection saw it: each seed's best validated value (the weights
    its generator kept), averaged over the seeds that validated; None when none did."""
    best = [max(v for _, v in r["valid_curve"]) for r in record.training.values() if r and r.get("valid_curve")]
    return float(np.mean(best)) if best else None


def select_variants(records: dict[str, MethodRecord], valid_metric: str, where: str, problems: list[str]) -> list[str]:
    """Model selection over sweeps (``select: validation``): of each method's swept variants (``sasrec@lr=0.001``,
    ``sasrec@lr=0.003``, ...) keep the one with the best :func:`best_validation`, under the method's own name, in
    ``records`` (changed in place); the others leave the table (their test figures are never looked at). Returns
    one line per method naming the choice and every variant's validation score. A sweep with no validation
    score leaves its variants as they are, with a problem line."""
    groups: dict[str, list[str]] = {}
    for name in records:
        base, sep, _ = name.partition("@")
        if sep:
            groups.setdefault(base, []).append(name)
    lines = []
    for base, names in groups.items():
        scores = {n: best_validation(records[n]) for n in names if records[n].seeds}
        scored = {n: v for n, v in scores.items() if v is not None}
        if not scored:
            problems.append(
                f"{where}/{base}: select: validation, but no variant recorded a validation score; its "
                f"{len(names)} variants are shown as they are"
            )
            continue
        chosen = max(scored, key=lambda n: (scored[n], n))
        records[chosen].name = base
        kept = {(base if n == chosen else n): r for n, r in records.items() if n == chosen or n not in names}
        records.clear()
        records.update(kept)  # the chosen variant where it stood, under the method's name
        others = ", ".join(f"{n.partition('@')[2]} {v:.4f}" for n, v in sorted(scored.items()) if n != chosen)
        unscored = [n.partition("@")[2] for n in names if n not in scored]
        lines.append(
            f"{base}: {chosen.partition('@')[2]} chosen on validation {metric_label(valid_metric)} "
            f"({scored[chosen]:.4f}; others: {others or 'none'}"
            + (f"; without a validation score: {', '.join(unscored)}" if unscored else "")
            + ")"
        )
    return lines


def merge_identical_columns(record: DatasetRecord) -> None:
    """Keep one of each set of columns whose per-user values are equal for every method and seed average
    (e.g. HR@K and Recall@K with one target per user): tested and shown once, under the first column's name."""
    valued = [m for m in record.methods.values() if m.per_user]
    kept: list[str] = []
    for column in record.columns:
        same = next(
            (
                k
                for k in kept
                if valued
                and all(
                    column in m.per_user
                    and k in m.per_user
                    and np.array_equal(m.per_user[column], m.per_user[k])
                    and m.seed_means.get(column) == m.seed_means.get(k)
                    for m in valued
                )
            ),
            None,
        )
        if same is None:
            kept.append(column)
        else:
            record.aliases.setdefault(same, []).append(column)
    record.columns = kept


def alias_note(record: DatasetRecord) -> str:
    """E.g. "HR@K = Recall@K for every user and method (K = 5, 10, 20); shown once, as Recall@K." (or "")."""
    groups: dict[tuple[str, str], list[str]] = {}
    for kept, same in record.aliases.items():
        for column in same:
            groups.setdefault((column.partition("@")[0], kept.partition("@")[0]), []).append(column.partition("@")[2])
    parts = []
    for (dup, kept), ks in groups.items():
        parts.append(
            f"{metric_label(dup + '@K')} = {metric_label(kept + '@K')} for every user and method "
            f"(K = {', '.join(ks)}); tested and shown once, as {metric_label(kept + '@K')}."
        )
    return " ".join(parts)
