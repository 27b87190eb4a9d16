"""The format-independent leaderboard: per data set, rows of entries with ranks, marks, gaps and notes.

Every format (render.py, latex.py, html.py) draws from this model. Imports collect.py, compare.py and claims.py
of the leaderboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import metrics as metric_defs
from .. import stats
from .claims import ClaimOutcome
from .collect import HEALTH_COLUMNS, Collection, DatasetRecord, alias_note, protocol_primary
from .compare import Comparison, ranked_means, ranking

BETTER, WORSE, OVER_RUNNER_UP = "†", "‡", "*"
IMPROVING = "§"  # after a method's name: stopped by a budget cap while still improving


@dataclass
class Entry:
    mean: float | None = None
    std: float | None = None
    rank: int = 0  # 1: best in its column, 2: second best, 0: other
    marks: str = ""


@dataclass
class Row:
    method: str
    status: str  # ok / partial / failed / missing (see MethodRecord.status)
    seeds: str  # "valid/expected"
    entries: dict[str, Entry]
    health: dict[str, Entry]
    stopped: str = ""  # how training stopped (MethodRecord.stop_note); empty when not recorded
    improving: bool = False  # stopped at a cap while still improving: no verdicts involve it


@dataclass
class Settings:
    test: str = "t"
    correction: str = "holm"
    alpha: float = 0.05
    n_resamples: int = 10_000
    seed: int = 0
    baseline: str | None = None


@dataclass
class Table:
    dataset: str
    columns: list[str]
    health_columns: list[str]
    rows: list[Row]
    baseline: str | None
    gain: dict[str, float | None]  # relative gain of the best non-baseline method over the baseline
    comparisons: list[Comparison]
    primary: str  # the metric plotted and detailed (the protocol's valid_metric when present)
    card: list[str]
    footnote: str
    claims: list[ClaimOutcome] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # kept column -> identical columns not shown


@dataclass
class Leaderboard:
    benchmark: str
    path: Path
    settings: Settings
    tables: list[Table]
    problems: list[str]
    seeds: list[int]
    n_comparisons: int
    collection: Collection = field(repr=False)
    pooled_claims: list[ClaimOutcome] = field(default_factory=list)  # claims over every data set at once
    text: dict[str, str] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def _definitions() -> dict[str, str]:
    """Metric definitions, parsed from genrec_bench.metrics' docstring (``- NDCG@K = ...`` lines)."""
    out = {}
    for line in (metric_defs.__doc__ or "").splitlines():
        name, sep, rest = line.strip().removeprefix("- ").partition("@K")
        if sep and line.strip().startswith("- "):
            out[name.lower()] = " ".join(f"{name}@K{rest}".split())
    return out


def protocol_card(record: DatasetRecord) -> list[str]:
    """Split, history cap, candidate set, filters and metric definitions, one line each."""
    p, spec = record.protocol, dict(record.spec)
    if not p:
        return ["Protocol: unknown (no readable config.yaml in the cells)"]
    source = ", ".join(f"{k}={spec.pop(k)}" for k in ("loader", "path") if k in spec)
    spec.pop("name", None)
    filters = ", ".join(f"{k}={v}" for k, v in spec.items()) or "none"
    lines = [
        f"Data: {record.name}" + (f" ({source})" if source else "") + f"; filters: {filters}",
        f"Split: {p.get('split', '?')}"
        + (
            " (per user, chronological: last item test, second-last validation)"
            if p.get("split") == "leave-one-out"
            else ""
        ),
        f"History cap: {p.get('max_history', '?')} items; candidate set: all items (full ranking)"
        + ("; items in the user's history excluded" if p.get("exclude_history") else ""),
        f"Cut-offs K: {', '.join(map(str, p.get('ks') or []))}; model selection on {p.get('valid_metric', '?')} "
        "(validation split)",
    ]
    definitions = _definitions()
    names = dict.fromkeys(c.partition("@")[0] for c in record.columns)
    lines += [definitions.get(n, f"{n}@K: defined by its plugin") for n in names]
    lines += [f"Profile for this data set (per_dataset): {line}" for line in record.profiles]
    return lines + [f"Swept, chosen on validation: {line}" for line in record.selection]


def _footnote(
    table: Table, settings: Settings, seeds: list[int], family: int, record: DatasetRecord, budget: str | None = None
) -> str:
    tested = [c.result.n for c in table.comparisons if c.result]
    n = "n/a" if not tested else str(min(tested)) if min(tested) == max(tested) else f"{min(tested)}-{max(tested)}"
    parts = [f"Mean ± sd over seeds ({', '.join(map(str, seeds))}); bold: best, underlined: second best."]
    if table.baseline:
        parts.append(
            f"{BETTER} / {WORSE}: significantly better / worse than the baseline {table.baseline}; "
            f"Gain: best other method relative to {table.baseline}."
        )
    parts.append(f"{OVER_RUNNER_UP}: best significantly better than the runner-up.")
    parts.append(
        f"Test: {stats.TEST_NAMES[settings.test]}, two-sided, unit: user (n = {n}), per-user values "
        f"averaged over seeds before testing; correction: {stats.CORRECTION_NAMES[settings.correction]} "
        f"across {family} comparisons (methods x metrics x data sets); alpha = {settings.alpha:g}."
    )
    if settings.test == "wilcoxon":
        parts.append("Note: Wilcoxon over-rejects at large n.")
    ratio = (
        "paired bootstrap of the ratio of means"
        if settings.test == "bootstrap"
        else "Fieller's interval for the ratio of means"
    )
    parts.append(
        f"CI of Δ%: {ratio}, minus 1"
        + (
            "; a lower end of -100% is clipped there (that method's mean is not distinguishable from 0)."
            if any(c.result and c.result.rel_ci_clipped for c in table.comparisons)
            else "."
        )
    )
    if table.claims:
        parts.append("Claims are tested in the same family; a claim on a pair already compared shares its test.")
    stopped = [r for r in table.rows if r.stopped]
    if stopped:
        parts.append(
            "Training stopped by: "
            + "; ".join(f"{r.method} {r.stopped}" for r in stopped)
            + " (patience: validation stopped improving; plateau: the last validations within the protocol's "
            "convergence tolerance of the best)."
        )
    improving = [r.method for r in table.rows if r.improving]
    if improving:
        parts.append(
            f"{IMPROVING} {', '.join(improving)}: stopped by a budget cap while still improving (on validation, or on "
            "the training loss where it trained without validating); "
            + (
                f"comparisons are declared budget-matched ({budget})."
                if budget
                else "no significance mark or verdict involves it."
            )
        )
    note = alias_note(record)
    return " ".join(parts + ([note] if note else []))


def build_table(
    record: DatasetRecord, comparisons: list[Comparison], baseline: str | None, expected_seeds: int
) -> Table:
    """Rows with ranks (1, 2) per column and significance marks; footnote and card are set by the caller."""
    rows = {}
    for name, m in record.methods.items():
        entries = {c: Entry(m.mean(c), m.std(c)) for c in record.columns}
        health = {h: Entry(m.mean(h), m.std(h)) for h in record.health_columns}
        rows[name] = Row(
            name,
            m.status,
            f"{len(m.seeds)}/{expected_seeds}",
            entries,
            health,
            m.stop_note,
            bool(m.stopped_improving),
        )
    gain: dict[str, float | None] = {}
    for column in record.columns:
        means = ranked_means(record, column)
        values: list[float | None] = [*sorted({round(mean, 4) for _, mean in means}, reverse=True), None]
        for r, mean in means:
            value = round(mean, 4)
            rows[r].entries[column].rank = 1 if value == values[0] else 2 if value == values[1] else 0
        base = record.methods[baseline].mean(column) if baseline in record.methods else None
        others = [mean for r, mean in means if r != baseline]
        gain[column] = (others[0] / base - 1) if base and others else None
    for c in comparisons:
        if not c.significant or c.result is None or c.kind == "claim" or c.undecided:
            continue
        entries = rows[c.method].entries
        entries[c.metric].marks += OVER_RUNNER_UP if c.kind == "runner-up" else BETTER if c.result.diff > 0 else WORSE
        top = ranking(record, c.metric)[:2]
        if c.kind == "baseline" and top == [c.method, baseline]:  # best vs runner-up is this comparison
            entries[c.metric].marks += OVER_RUNNER_UP
        elif c.kind == "baseline" and baseline is not None and top == [baseline, c.method]:
            rows[baseline].entries[c.metric].marks += OVER_RUNNER_UP
    valid = protocol_primary(record)
    return Table(
        record.name,
        record.columns,
        record.health_columns,
        list(rows.values()),
        baseline,
        gain,
        comparisons,
        valid,
        protocol_card(record),
        "",
        aliases=dict(record.aliases),
    )


def build_tables(
    collection: Collection,
    comparisons: list[Comparison],
    settings: Settings,
    baseline: str | None,
    claims: list[ClaimOutcome] | None = None,
) -> list[Table]:
    family = sum(1 for c in comparisons if c.result)
    tables = []
    for record in collection.datasets.values():
        own = [c for c in comparisons if c.dataset == record.name]
        base = baseline if baseline in record.methods and record.methods[baseline].per_user else None
        table = build_table(record, own, base, len(collection.seeds))
        table.claims = [o for o in claims or [] if o.dataset == record.name]
        table.footnote = _footnote(table, settings, collection.seeds, family, record, collection.budget)
        tables.append(table)
    return tables


def health_label(key: str) -> str:
    return HEALTH_COLUMNS.get(key, key)


def as_dict(value: Any) -> Any:
    """JSON-safe: nan and inf become None."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: as_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    return value
