"""A self-contained HTML page: the tables plus matplotlib plots embedded as base64 PNG.

Readable at 1400 px without horizontal scrolling: the main table is one table per metric (its K as columns)
side by side, first columns stick when a table must scroll, and every data set has a cost table (seconds per
stage, peak memory) and a plot of the primary metric against the cell's total seconds.
Imports collect.py, render.py and table.py of the leaderboard.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from tabulate import tabulate

from .collect import DatasetRecord, metric_label
from .render import (
    CLAIM_HEADER,
    COMPARISON_HEADER,
    POOLED_NOTE,
    Style,
    claim_rows,
    comparison_rows,
    cost_summary,
    main_rows,
)
from .table import Leaderboard, Table

HTML_STYLE = Style(
    bold=lambda s: f"<b>{s}</b>",
    under=lambda s: f"<u>{s}</u>",
    spread=lambda s: f" <small>±{s}</small>",
    marks=lambda s: f"<sup>{html.escape(s)}</sup>",
    escape=html.escape,
)

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:1em 0}
th,td{padding:.25em .6em;white-space:nowrap;border-bottom:1px solid #ccc;text-align:right}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
.groups{display:flex;flex-wrap:wrap;column-gap:2em}.groups table{margin:.5em 0}
.note{font-size:.9em;color:#333}.card{font-size:.85em;color:#444}img{max-width:100%;margin:.5em 0}
.problems{color:#8a4b00}.scroll{overflow-x:auto;max-width:100%}.verdict{font-weight:600}"""

# Sets data-images-loaded / data-images-total on <body> once the page has loaded, and data-overflow: how many
# scroll boxes (and the page itself) are wider than the window shows (checked by the tests at 1400 px).
SCRIPT = """window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var boxes = Array.prototype.slice.call(document.querySelectorAll('.scroll'));
  var wide = boxes.filter(function (b) { return b.scrollWidth > b.clientWidth + 1; }).length;
  var root = document.documentElement;
  document.body.dataset.overflow = wide + (root.scrollWidth > root.clientWidth + 1 ? 1 : 0);
  document.body.dataset.viewport = window.innerWidth;
});"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def plot_metric_vs_k(record: DatasetRecord) -> str | None:
    """One panel per metric: mean over seeds against K, one line per method, error bars = sd over seeds."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(c.partition("@")[0] for c in record.columns))
    if not names:
        return None
    fig = Figure(figsize=(3.2 * len(names), 2.8))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        columns = [c for c in record.columns if c.partition("@")[0] == name]
        ks = [int(c.partition("@")[2]) for c in columns]
        for method, m in record.methods.items():
            means = [m.mean(c) for c in columns]
            if any(v is None for v in means):
                continue
            ax.errorbar(ks, means, yerr=[m.std(c) or 0.0 for c in columns], marker="o", capsize=2, label=method)
        ax.set_title(metric_label(f"{name}@K"))
        ax.set_xlabel("K")
        ax.set_xticks(ks)
    axes[0][0].legend(fontsize="small")
    return _png(fig)


def plot_bars(record: DatasetRecord, metric: str) -> str | None:
    """Bars of ``metric`` per method with 95% CI (t-interval over users of the seed-averaged values)."""
    from matplotlib.figure import Figure
    from scipy import stats as st

    methods = [(n, m.per_user[metric]) for n, m in record.methods.items() if metric in m.per_user]
    if not methods:
        return None
    means = [v.mean() for _, v in methods]
    half = [st.t.ppf(0.975, len(v) - 1) * st.sem(v) if len(v) > 1 else 0.0 for _, v in methods]
    fig = Figure(figsize=(max(3.5, 0.9 * len(methods)), 3))
    ax = fig.subplots()
    ax.bar(range(len(methods)), means, yerr=half, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(methods)), [n for n, _ in methods], rotation=30, ha="right")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{record.name}: {metric_label(metric)} (95% CI over users)")
    return _png(fig)


def plot_differences(record: DatasetRecord, metric: str, baseline: str | None) -> str | None:
    """Histograms of per-user differences (method - baseline), one panel per method."""
    from matplotlib.figure import Figure

    base = record.methods.get(baseline) if baseline else None
    if base is None or metric not in base.per_user:
        return None
    diffs = []
    for name, m in record.methods.items():
        if name == baseline or metric not in m.per_user:
            continue
        assert m.user_ids is not None and base.user_ids is not None  # set together with per_user
        _, ia, ib = np.intersect1d(m.user_ids, base.user_ids, return_indices=True)
        diffs.append((name, m.per_user[metric][ia] - base.per_user[metric][ib]))
    if not diffs:
        return None
    fig = Figure(figsize=(3 * len(diffs), 2.6))
    axes = fig.subplots(1, len(diffs), squeeze=False, sharey=True)
    for ax, (name, d) in zip(axes[0], diffs, strict=True):
        ax.hist(d, bins=30, color="#55a868")
        ax.axvline(d.mean(), color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{name} - {baseline}", fontsize="small")
        ax.set_xlabel(f"per-user {metric_label(metric)} difference")
    return _png(fig)


def plot_quality_vs_cost(record: DatasetRecord, metric: str) -> str | None:
    """The primary metric (mean over seeds) against the cell's total seconds (mean over seeds), log x."""
    from matplotlib.figure import Figure

    points = [
        (n, sum(m.timings["total"].values()) / len(m.timings["total"]), value)
        for n, m in record.methods.items()
        if m.timings.get("total") and (value := m.mean(metric)) is not None
    ]
    if not points:
        return None
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    for name, seconds, value in points:
        ax.scatter([seconds], [value], s=30)
        ax.annotate(name, (seconds, value), fontsize="small", xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("wall time per cell (s, log scale)")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{record.name}: quality against cost", fontsize="medium")
    return _png(fig)


def _table_html(header: list[str], body: list[list[str]]) -> str:
    return f'<div class="scroll">{tabulate(body, header, tablefmt="unsafehtml", disable_numparse=True)}</div>'


def _stack_cis(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Escaped cells, each ``95% CI`` column folded under the estimate before it (keeps the table narrow)."""
    folded = [i for i, h in enumerate(header) if h.startswith("95% CI")]
    head = [html.escape(h + (" [95% CI]" if i + 1 in folded else "")) for i, h in enumerate(header) if i not in folded]
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if i in folded:
                continue
            text = html.escape(cell)
            if i + 1 in folded and row[i + 1]:
                text += f"<br><small>{html.escape(row[i + 1])}</small>"
            cells.append(text)
        body.append(cells)
    return head, body


def _main_tables(table: Table) -> str:
    """One table per metric (columns: its cut-offs K), then the health figures, side by side."""
    header, body = main_rows(table, HTML_STYLE)
    lead = 2 if header[1:2] == ["Seeds"] else 1
    names = list(dict.fromkeys(c.partition("@")[0] for c in table.columns))
    groups = [[i for i, c in enumerate(table.columns) if c.partition("@")[0] == n] for n in names]
    if table.health_columns:
        groups.append(list(range(len(table.columns), len(table.columns) + len(table.health_columns))))
    parts = []
    for group in groups:
        cols = list(range(lead)) + [lead + i for i in group]
        rows = [[row[c] for c in cols] for row in body if any(row[c] for c in cols[lead:])]
        parts.append(_table_html([header[c] for c in cols], rows))
    return '<div class="groups">' + "".join(parts) + "</div>"


def cost_rows(record: DatasetRecord) -> tuple[list[str], list[list[str]]]:
    """Seconds per stage (mean over seeds), total, and peak memory (largest over seeds) per method."""
    cost = cost_summary(record)
    stages = list(dict.fromkeys(k for v in cost.values() for k in v if not k.startswith("peak_") and k != "total"))
    memory = [k for k in ("peak_rss_mb", "peak_cuda_mb") if any(k in v for v in cost.values())]
    header = (
        ["Method"]
        + [f"{s} (s)" for s in stages]
        + ["total (s)"]
        + [{"peak_rss_mb": "peak RSS (MB)", "peak_cuda_mb": "peak CUDA (MB)"}[k] for k in memory]
    )

    def cell(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    body = [
        [name] + [cell(v.get(s), 1) for s in stages] + [cell(v.get("total"), 1)] + [cell(v.get(k), 0) for k in memory]
        for name, v in cost.items()
    ]
    return header, body


def _section(board: Leaderboard, table: Table) -> list[str]:
    record = board.collection.datasets[table.dataset]
    out = [
        f"<h2>{html.escape(table.dataset)}</h2>",
        _main_tables(table),
        f'<p class="note">{html.escape(table.footnote)}</p>',
        '<ul class="card">' + "".join(f"<li>{html.escape(line)}</li>" for line in table.card) + "</ul>",
    ]
    plots = [
        plot_metric_vs_k(record),
        plot_bars(record, table.primary),
        plot_differences(record, table.primary, table.baseline),
    ]
    out += [p for p in plots if p]
    if table.claims:
        head, rows = _stack_cis(CLAIM_HEADER, claim_rows(table.claims))
        out += [
            f"<h3>Claims ({html.escape(table.dataset)})</h3>",
            _table_html(head, [row[:-1] + [f'<span class="verdict">{row[-1]}</span>'] for row in rows]),
        ]
    detail = comparison_rows(table)
    if detail:
        out += [
            f"<h3>Comparisons ({html.escape(table.dataset)})</h3>",
            _table_html(*_stack_cis(COMPARISON_HEADER, detail)),
        ]
    header, body = cost_rows(record)
    if body:
        out += [
            f"<h3>Cost ({html.escape(table.dataset)})</h3>",
            _table_html([html.escape(h) for h in header], [[html.escape(c) for c in row] for row in body]),
            '<p class="note">Wall time per stage of one cell (mean over seeds, from result.json timings) and '
            "the largest peak memory of the process over seeds; measured on the machine that ran the cell.</p>",
        ]
        plot = plot_quality_vs_cost(record, table.primary)
        out += [plot] if plot else []
    return out


def render_html(board: Leaderboard) -> str:
    title = html.escape(f"Leaderboard: {board.benchmark}")
    body = [f"<h1>{title}</h1>"]
    for table in board.tables:
        body += _section(board, table)
    if board.pooled_claims:
        head, rows = _stack_cis(CLAIM_HEADER, claim_rows(board.pooled_claims))
        body += [
            "<h2>Claims pooled over the data sets</h2>",
            _table_html(head, [row[:-1] + [f'<span class="verdict">{row[-1]}</span>'] for row in rows]),
            f"<p>{html.escape(POOLED_NOTE)}</p>",
        ]
    if board.problems:
        body += [
            '<h2>Gaps and warnings</h2><ul class="problems">',
            *(f"<li>{html.escape(p)}</li>" for p in board.problems),
            "</ul>",
        ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
