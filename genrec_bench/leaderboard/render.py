"""Text formats of a leaderboard: terminal, Markdown, CSV (long format) and JSON. LaTeX is in latex.py.

Also the cell formatting (``Style``, ``fmt_entry``, the comparison and claim rows) that latex.py and html.py
reuse. Imports collect.py, compare.py and table.py of the leaderboard.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ..stats import PairedResult
from .claims import ClaimOutcome
from .collect import metric_label
from .compare import Comparison
from .table import IMPROVING, Entry, Leaderboard, Row, Table, as_dict, health_label


@dataclass
class Style:
    """How one format writes emphasis, spread, marks and gaps."""

    bold: Callable[[str], str]
    under: Callable[[str], str]
    spread: Callable[[str], str] = lambda s: f" ±{s}"
    marks: Callable[[str], str] = lambda s: s
    escape: Callable[[str], str] = lambda s: s
    gap: str = "–"


PLAIN = Style(bold=lambda s: f"**{s}**", under=lambda s: f"_{s}_")
ANSI = Style(bold=lambda s: f"\033[1m{s}\033[0m", under=lambda s: f"\033[4m{s}\033[0m")


def _md_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*_|<>`" else c for c in text)


MARKDOWN = Style(bold=lambda s: f"**{s}**", under=lambda s: f"<u>{s}</u>", marks=_md_escape, escape=_md_escape)


def fmt_entry(entry: Entry, style: Style, status: str = "ok", digits: int = 4) -> str:
    if entry.mean is None:
        return style.gap if status in ("ok", "partial") else status
    text = f"{entry.mean:.{digits}f}"
    text = style.bold(text) if entry.rank == 1 else style.under(text) if entry.rank == 2 else text
    if entry.std is not None:
        text += style.spread(f"{entry.std:.{digits}f}")
    return text + (style.marks(entry.marks) if entry.marks else "")


def fmt_gain(value: float | None) -> str:
    return "" if value is None else f"{value:+.1%}"


def show_seeds(table: Table) -> bool:
    return any(len({r.seeds for r in table.rows}) > 1 or r.status != "ok" for r in table.rows)


def method_label(row: Row) -> str:
    """The method's name, marked when it stopped by a budget cap while still improving."""
    return row.method + (IMPROVING if row.improving else "")


def main_rows(table: Table, style: Style) -> tuple[list[str], list[list[str]]]:
    """Header and body of the main table (methods x metrics@K, then health columns, then the gain row)."""
    seeds = show_seeds(table)
    header = ["Method"] + (["Seeds"] if seeds else []) + [style.escape(metric_label(c)) for c in table.columns]
    header += [style.escape(health_label(h)) for h in table.health_columns]
    stopped = any(r.stopped for r in table.rows)
    header += ["Stopped by"] if stopped else []
    body = []
    for row in table.rows:
        name = style.escape(method_label(row)) + (" (baseline)" if row.method == table.baseline else "")
        cells = [name] + ([row.seeds] if seeds else [])
        cells += [fmt_entry(row.entries[c], style, row.status) for c in table.columns]
        cells += [fmt_entry(row.health[h], style, row.status) for h in table.health_columns]
        cells += [style.escape(row.stopped or "n/a")] if stopped else []
        body.append(cells)
    if table.baseline and any(v is not None for v in table.gain.values()):
        gain = [style.escape(f"Gain over {table.baseline}")] + ([""] if seeds else [])
        body.append(
            gain
            + [style.escape(fmt_gain(table.gain[c])) for c in table.columns]
            + [""] * (len(table.health_columns) + stopped)
        )
    return header, body


COMPARISON_HEADER = ["Method", "vs", "Metric", "n", "Δ", "95% CI", "Δ%", "95% CI (%)", "d_z", "p", "p adj.", "sig."]


def fmt_rel_ci(r: PairedResult) -> str:
    """``[-12.3%, +4.5%]``; ``unbounded`` when the reference mean is not distinguishable from 0."""
    if math.isnan(r.rel_ci_low) or math.isnan(r.rel_ci_high):
        return "unbounded"
    return f"[{r.rel_ci_low:+.1%}, {r.rel_ci_high:+.1%}]".replace("+-", "-")


def comparison_rows(table: Table, metrics: list[str] | None = None) -> list[list[str]]:
    """One row per comparison (optionally only some metrics; claims are in ``claim_rows``); untested say why."""
    rows = []
    for c in table.comparisons:
        if (metrics is not None and c.metric not in metrics) or c.kind == "claim":
            continue
        head = [c.method, c.reference, metric_label(c.metric)]
        r = c.result
        if r is None:
            rows.append(head + ["", "", "", "", "", "", "", "", c.note])
            continue
        rows.append(
            head
            + [
                str(r.n),
                f"{r.diff:+.4f}",
                f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
                f"{r.rel_diff:+.1%}",
                fmt_rel_ci(r),
                f"{r.d_z:+.2f}",
                f"{r.p:.2g}",
                f"{c.p_adj:.2g}",
                f"undecided ({c.undecided})" if c.undecided and c.significant else "yes" if c.significant else "no",
            ]
        )
    return rows


CLAIM_HEADER = ["Claim", "Metric", "n", "Δ", "95% CI", "Δ%", "95% CI (%)", "d_z", "p adj.", "Verdict"]


POOLED_NOTE = (
    "Pooled: each data set weighs the same (the mean of the data sets' mean differences, a z-test on its "
    "standard error from the data sets' own variances); n counts all users pooled; tested in the same family."
)


def claim_rows(outcomes: list[ClaimOutcome]) -> list[list[str]]:
    """One row per claim: ``better - worse`` with its CI, Holm-adjusted p, d_z and the verdict, followed by the
    claim's note where it has one (the data sets pooled; users or seeds the two methods do not share)."""
    rows = []
    for o in outcomes:
        r = o.own.result if o.own is not None else None
        head = [o.claim.label(), metric_label(o.metric)]
        if r is None:
            rows.append(head + [""] * 7 + [f"{o.verdict} ({o.note})" if o.note else o.verdict])
            continue
        rows.append(
            head
            + [
                str(r.n),
                f"{r.diff:+.4f}",
                f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]",
                f"{r.rel_diff:+.1%}",
                fmt_rel_ci(r),
                f"{r.d_z:+.2f}",
                f"{o.p_adj:.2g}",
                f"{o.verdict} ({o.note})" if o.note else o.verdict,
            ]
        )
    return rows


def _align(header: list[str]) -> list[str]:
    return ["left"] + ["right"] * (len(header) - 1)


def _wrap(text: str, width: int = 110) -> str:
    return textwrap.fill(text, width=width, break_on_hyphens=False, subsequent_indent="  ")


def render_terminal(board: Leaderboard, color: bool = False) -> str:
    style = ANSI if color else PLAIN
    out = [f"Leaderboard: {board.benchmark}"]
    for table in board.tables:
        header, body = main_rows(table, style)
        main = tabulate(body, header, tablefmt="simple", disable_numparse=True, colalign=_align(header))
        out += ["", f"== {table.dataset} ==", main, _wrap(table.footnote), *("  " + line for line in table.card)]
        detail = comparison_rows(table, [table.primary])
        if detail:
            out += [
                "",
                f"Comparisons on {metric_label(table.primary)} (all metrics in leaderboard.csv):",
                tabulate(detail, COMPARISON_HEADER, tablefmt="simple", disable_numparse=True),
            ]
        if table.claims:
            out += [
                "",
                "Claims:",
                tabulate(claim_rows(table.claims), CLAIM_HEADER, tablefmt="simple", disable_numparse=True),
            ]
    if board.pooled_claims:
        pooled = tabulate(claim_rows(board.pooled_claims), CLAIM_HEADER, tablefmt="simple", disable_numparse=True)
        out += ["", "== Claims pooled over the data sets ==", pooled, _wrap(POOLED_NOTE)]
    if board.problems:
        out += ["", "Gaps and warnings:", *(_wrap(f"- {p}") for p in board.problems)]
    return "\n".join(out) + "\n"


def render_markdown(board: Leaderboard) -> str:
    out = [f"# Leaderboard: {MARKDOWN.escape(board.benchmark)}"]
    for table in board.tables:
        header, body = main_rows(table, MARKDOWN)
        out += [
            "",
            f"## {MARKDOWN.escape(table.dataset)}",
            "",
            tabulate(body, header, tablefmt="pipe", disable_numparse=True, colalign=_align(header)),
            "",
            MARKDOWN.escape(table.footnote),
            "",
            "Protocol:",
            "",
            *(f"- {MARKDOWN.escape(line)}" for line in table.card),
        ]
        detail = comparison_rows(table)
        if detail:
            escaped = [[MARKDOWN.escape(cell) for cell in row] for row in detail]
            out += [
                "",
                f"### Comparisons ({MARKDOWN.escape(table.dataset)})",
                "",
                tabulate(escaped, COMPARISON_HEADER, tablefmt="pipe", disable_numparse=True),
            ]
        if table.claims:
            escaped = [[MARKDOWN.escape(cell) for cell in row] for row in claim_rows(table.claims)]
            out += [
                "",
                f"### Claims ({MARKDOWN.escape(table.dataset)})",
                "",
                tabulate(escaped, CLAIM_HEADER, tablefmt="pipe", disable_numparse=True),
            ]
    if board.pooled_claims:
        escaped = [[MARKDOWN.escape(cell) for cell in row] for row in claim_rows(board.pooled_claims)]
        out += [
            "",
            "## Claims pooled over the data sets",
            "",
            tabulate(escaped, CLAIM_HEADER, tablefmt="pipe", disable_numparse=True),
            "",
            MARKDOWN.escape(POOLED_NOTE),
        ]
    if board.problems:
        out += ["", "## Gaps and warnings", "", *(f"- {MARKDOWN.escape(p)}" for p in board.problems)]
    return "\n".join(out) + "\n"


CSV_FIELDS = [
    "benchmark",
    "dataset",
    "method",
    "metric",
    "kind",
    "status",
    "seeds",
    "mean",
    "std",
    "reference",
    "comparison",
    "test",
    "n",
    "diff",
    "ci_low",
    "ci_high",
    "rel_diff",
    "rel_ci_low",
    "rel_ci_high",
    "rel_ci_clipped",
    "d_z",
    "p",
    "p_adj",
    "correction",
    "significant",
    "claim",
    "verdict",
    "note",
]


def render_csv(board: Leaderboard) -> str:
    """Long format: one row per (data set, method, metric) value, plus one per best-vs-runner-up test."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    s = board.settings
    for table in board.tables:
        for row in table.rows:
            base = {
                "benchmark": board.benchmark,
                "dataset": table.dataset,
                "method": row.method,
                "status": row.status,
                "seeds": row.seeds,
            }
            for kind, keys, entries in (
                ("metric", table.columns, row.entries),
                ("health", table.health_columns, row.health),
            ):
                for key in keys:
                    if kind == "health" and entries[key].mean is None:
                        continue
                    base_cmp: list[Comparison | None] = [
                        c for c in table.comparisons if c.method == row.method and c.metric == key and c.kind != "claim"
                    ]
                    rec = {**base, "metric": key, "kind": kind, "mean": entries[key].mean, "std": entries[key].std}
                    for c in base_cmp or [None]:
                        if c is not None:
                            rec.update(
                                reference=c.reference,
                                comparison=c.kind,
                                note=c.note,
                                correction=s.correction,
                                p_adj=c.p_adj,
                                significant=c.significant,
                            )
                            rec.update(
                                {k: v for k, v in (c.result.to_dict() if c.result else {}).items() if k in CSV_FIELDS}
                            )
                        writer.writerow({k: v for k, v in rec.items() if v is not None})
    for table_name, outcomes in [(t.dataset, t.claims) for t in board.tables] + [("pooled", board.pooled_claims)]:
        for o in outcomes:  # one row per claim: method = the better-claimed, reference = the other
            rec = {
                "benchmark": board.benchmark,
                "dataset": table_name,
                "method": o.claim.better,
                "reference": o.claim.worse,
                "metric": o.metric,
                "kind": "claim",
                "comparison": "claim",
                "claim": o.claim.text,
                "verdict": o.verdict,
                "correction": s.correction,
                "p_adj": o.p_adj,
                "significant": o.significant,
                "note": o.note,
            }
            rec.update(
                {k: v for k, v in (o.own.result.to_dict() if o.own and o.own.result else {}).items() if k in CSV_FIELDS}
            )
            writer.writerow({k: v for k, v in rec.items() if v is not None})
    return buffer.getvalue()


def cost_summary(record) -> dict[str, dict[str, float | None]]:
    """Per method: mean seconds per stage over seeds (``timings``) and the largest peak memory (MB)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, m in record.methods.items():
        if m.timings or m.memory:
            out[name] = {
                **{k: sum(v.values()) / len(v) for k, v in m.timings.items()},
                **{k: max(v.values()) for k, v in m.memory.items()},
            }
    return out


def render_json(board: Leaderboard) -> str:
    s = board.settings
    data: dict[str, Any] = {
        "benchmark": board.benchmark,
        "path": str(board.path),
        "seeds": board.seeds,
        "settings": {
            "test": s.test,
            "correction": s.correction,
            "alpha": s.alpha,
            "n_resamples": s.n_resamples,
            "seed": s.seed,
            "baseline": s.baseline,
            "unit": "user",
            "family_size": board.n_comparisons,
        },
        "problems": board.problems,
        "datasets": {},
    }
    for table in board.tables:
        record = board.collection.datasets[table.dataset]
        data["datasets"][table.dataset] = {
            "protocol": record.protocol,
            "dataset": record.spec,
            "card": table.card,
            "footnote": table.footnote,
            "columns": table.columns,
            "health_columns": table.health_columns,
            "baseline": table.baseline,
            "gain": table.gain,
            "methods": {
                r.method: {
                    "status": r.status,
                    "seeds": r.seeds,
                    "bad_seeds": record.methods[r.method].bad_seeds,
                    "per_seed": record.methods[r.method].seed_means,
                    "metrics": {c: vars(e) for c, e in r.entries.items()},
                    "health": {h: vars(e) for h, e in r.health.items()},
                    "stopped_by": r.stopped,
                    "stopped_improving": r.improving,
                    "training": record.methods[r.method].training,
                }
                for r in table.rows
            },
            "comparisons": [c.to_dict() for c in table.comparisons if c.kind != "claim"],
            "claims": [o.to_dict() for o in table.claims],
            "identical_columns": table.aliases,
            "cost": cost_summary(board.collection.datasets[table.dataset]),
        }
    if board.pooled_claims:
        data["pooled_claims"] = [o.to_dict() for o in board.pooled_claims]
        data["pooled_note"] = POOLED_NOTE
    return json.dumps(as_dict(data), indent=2, default=str)
