"""LaTeX (booktabs): a standalone document that compiles with pdflatex; copy a ``table`` block into a paper.

Printable at the natural size (no scaling to the line width): the main table is split into one table per
cut-off K when it has more than ``MAX_COLUMNS`` metric columns; comparisons and claims are narrow tables of
their own, with the CIs under the estimates; long method names wrap at ``,``, ``@``, ``=`` and ``_``
(``array`` package). Math is math (``$\\uparrow$``, ``$p$``, ``$d_z$``) and negative numbers get true minus signs.
Imports collect.py, render.py and table.py of the leaderboard.
"""

from __future__ import annotations

import math
import re

from .claims import ClaimOutcome
from .collect import NAMES
from .render import POOLED_NOTE, Style, fmt_entry, fmt_gain, method_label, show_seeds
from .table import Leaderboard, Table, health_label

_SPECIAL = {
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "|": r"\textbar{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "†": r"$^{\dagger}$",
    "‡": r"$^{\ddagger}$",
    "§": r"\S{}",
    "–": "--",
    "Δ": r"$\Delta$",
    "≤": r"$\leq$",
    "=": "=",
}
_PATTERN = re.compile("|".join(re.escape(k) for k in _SPECIAL))
_MARKS = {"†": r"\dagger", "‡": r"\ddagger", "*": r"\ast"}
MAX_COLUMNS = 3  # metric columns per table before it is split by K (fits a 345 pt article line in \small)
NAME = r">{\raggedright\arraybackslash}p{%s}"  # a column of method names that wrap

PREAMBLE = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage{booktabs}
\usepackage{array}
\begin{document}
"""


def escape(text: str) -> str:
    return _PATTERN.sub(lambda m: _SPECIAL[m.group()], text)


def prose(text: str) -> str:
    """Escaped running text with its math as math: $d_z$, $p$, $n = 300$, $\\alpha = 0.05$, $-$100\\%."""
    out = escape(text)
    out = out.replace(r"d\_z", "$d_z$").replace("p-values", "$p$-values")
    out = re.sub(r"\bn = (\d[\d-]*)", lambda m: f"$n = {m.group(1).replace('-', '$--$')}$", out)
    out = re.sub(r"\balpha = ([\d.]+)", r"$\\alpha = \1$", out)
    return re.sub(r"(?<![\w$])-(\d)", r"$-$\1", out)


def name(text: str) -> str:
    """An escaped method name that may wrap after ``,``, ``@``, ``=`` and ``_``."""
    return re.sub(r"(,|@|=|\\_)", r"\1\\allowbreak{}", escape(text))


def num(text: str) -> str:
    """A formatted number with a true minus sign (``-0.01`` -> ``$-$0.01``) and ``%`` escaped."""
    return text.replace("-", "$-$").replace("%", r"\%")


LATEX = Style(
    bold=lambda s: rf"\textbf{{{s}}}",
    under=lambda s: rf"\underline{{{s}}}",
    spread=lambda s: rf"{{\scriptsize$\pm${s}}}",
    marks=lambda s: "$^{" + "".join(_MARKS[c] for c in s) + "}$",
    escape=escape,
    gap="--",
)


def _tabular(spec: str, header: list[str], body: list[list[str] | str]) -> list[str]:
    """booktabs tabular; a str row is a raw line (a rule or a \\multicolumn heading)."""
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [row if isinstance(row, str) else " & ".join(row) + r" \\" for row in body]
    return lines + [r"\bottomrule", r"\end{tabular}"]


def _groups(table: Table) -> list[tuple[str, list[str]]]:
    """(title, columns): the whole table, or one group per K when it is wider than MAX_COLUMNS."""
    if len(table.columns) <= MAX_COLUMNS:
        return [("", table.columns)]
    ks = list(dict.fromkeys(c.partition("@")[2] for c in table.columns))
    return [(f"$K = {k}$", [c for c in table.columns if c.partition("@")[2] == k]) for k in ks]


def _main_tabular(table: Table, columns: list[str], by_k: bool) -> list[str]:
    seeds = show_seeds(table)

    def head(c: str) -> str:
        name, _, k = c.partition("@")
        return escape(NAMES.get(name, name)) + ("" if by_k else f"@{k}") + r" $\uparrow$"

    header = ["Method"] + (["Seeds"] if seeds else []) + [head(c) for c in columns]
    body: list[list[str] | str] = []
    for row in table.rows:
        label = name(method_label(row)) + (" (baseline)" if row.method == table.baseline else "")
        body.append(
            [label] + ([row.seeds] if seeds else []) + [fmt_entry(row.entries[c], LATEX, row.status) for c in columns]
        )
    if table.baseline and any(table.gain.get(c) is not None for c in columns):
        body.append(r"\midrule")
        body.append(
            [escape(f"Gain over {table.baseline}")]
            + ([""] if seeds else [])
            + [num(fmt_gain(table.gain[c])) for c in columns]
        )
    return _tabular(NAME % "8em" + "r" * (len(header) - 1), header, body)


def _health_tabular(table: Table) -> list[str]:
    rows = [r for r in table.rows if any(r.health[h].mean is not None for h in table.health_columns)]
    if not rows:
        return []
    header = ["Method"] + [escape(health_label(h)) for h in table.health_columns]
    body: list[list[str] | str] = [
        [name(r.method)] + [fmt_entry(r.health[h], LATEX, r.status) for h in table.health_columns] for r in rows
    ]
    return [r"\par\medskip", *_tabular(NAME % "8em" + "r" * len(table.health_columns), header, body)]


def _ci(low: float, high: float, digits: str) -> str:
    if math.isnan(low) or math.isnan(high):
        return "unbounded"
    return num(f"[{low:+{digits}}, {high:+{digits}}]")


def _with_ci(value: str, ci: str) -> str:
    """The estimate with its CI on a second, smaller line."""
    return rf"\shortstack[r]{{{value}\\{{\scriptsize {ci}}}}}"


def _comparison_tabular(table: Table) -> list[str]:
    """Comparisons on the primary metric: Δ, its CI, Δ% and its CI, d_z and the adjusted p (bold: significant)."""
    header = ["Method", "vs", r"$\Delta$ [95\% CI]", r"$\Delta$\% [95\% CI]", "$d_z$", r"$p_{\mathrm{adj}}$"]
    body: list[list[str] | str] = []
    for c in table.comparisons:
        if c.metric != table.primary or c.kind == "claim":
            continue
        r = c.result
        head = [name(c.method), name(c.reference)]
        if r is None:
            body.append(head + [rf"\multicolumn{{4}}{{l}}{{{escape(c.note)}}}"])
            continue
        p = num(f"{c.p_adj:.2g}")
        body.append(
            head
            + [
                _with_ci(num(f"{r.diff:+.4f}"), _ci(r.ci_low, r.ci_high, ".4f")),
                _with_ci(num(f"{r.rel_diff:+.1%}"), _ci(r.rel_ci_low, r.rel_ci_high, ".1%")),
                num(f"{r.d_z:+.2f}"),
                rf"\textbf{{{p}}}" if c.significant else p,
            ]
        )
    return _tabular(NAME % "7em" + NAME % "5.5em" + "rrrr", header, body) if body else []


def _claims_tabular(outcomes: list[ClaimOutcome]) -> list[str]:
    header = ["Claim", "Metric", r"$\Delta$ [95\% CI]", "$d_z$", r"$p_{\mathrm{adj}}$", "Verdict"]
    body: list[list[str] | str] = []
    for o in outcomes:
        r = o.own.result if o.own is not None else None
        head = [name(o.claim.better) + " $>$ " + name(o.claim.worse), escape(o.metric)]
        if r is None:
            body.append(head + [rf"\multicolumn{{4}}{{l}}{{{escape(o.verdict)}}}"])
            continue
        body.append(
            head
            + [
                _with_ci(num(f"{r.diff:+.4f}"), _ci(r.ci_low, r.ci_high, ".4f")),
                num(f"{r.d_z:+.2f}"),
                num(f"{o.p_adj:.2g}"),
                escape(o.verdict),
            ]
        )
    return _tabular(NAME % "9em" + "lrrr" + NAME % "6em", header, body) if body else []


def _float(caption: str, label: str, lines: list[str]) -> str:
    return "\n".join(
        [
            r"\begin{table}[tbp]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\label{{tab:{label}}}",
            *lines,
            r"\end{table}",
        ]
    )


def render_table(table: Table, label: str) -> str:
    """The leaderboard of one data set as ``table`` floats: the main table (one per K when wide) with its
    footnote and protocol card, then the comparisons on the primary metric and the claims."""
    groups = _groups(table)
    floats = []
    data = escape(table.dataset)
    for i, (title, columns) in enumerate(groups):
        lines = [r"\small", *_main_tabular(table, columns, bool(title))]
        if i == len(groups) - 1:
            lines += _health_tabular(table)
        if i == 0:
            lines += [
                r"\par\smallskip\footnotesize\raggedright",
                prose(table.footnote),
                r"\par\smallskip",
                r"\textit{Protocol.} " + "; ".join(escape(line) for line in table.card) + ".",
            ]
        caption = (
            f"Leaderboard on {data}"
            + (f", {title}" if title else "")
            + "."
            + (rf" Notes as in Table~\ref{{tab:{label}}}." if i else "")
        )
        floats.append(_float(caption, label if i == 0 else f"{label}-{i}", lines))
    comparisons, claims = _comparison_tabular(table), _claims_tabular(table.claims)
    if comparisons or claims:
        lines = [r"\footnotesize", r"\setlength{\tabcolsep}{4pt}", *comparisons]
        if claims:
            lines += [r"\par\medskip", *claims]
        caption = (
            f"Paired comparisons on {data}, {escape(table.primary)} (all metrics in leaderboard.csv)"
            + (" and claims" if claims else "")
            + rf". Bold $p_{{\mathrm{{adj}}}}$: significant; "
            rf"test and correction as in Table~\ref{{tab:{label}}}."
        )
        floats.append(_float(caption, f"{label}-tests", lines))
    return "\n\n".join(floats)


def render_latex(board: Leaderboard) -> str:
    tables = [render_table(t, re.sub(r"[^A-Za-z0-9]+", "-", f"{board.benchmark}-{t.dataset}")) for t in board.tables]
    if board.pooled_claims:
        lines = [r"\footnotesize", r"\setlength{\tabcolsep}{4pt}", *_claims_tabular(board.pooled_claims)]
        lines += [r"\par\smallskip\raggedright", prose(POOLED_NOTE)]
        label = re.sub(r"[^A-Za-z0-9]+", "-", f"{board.benchmark}-pooled")
        tables.append(_float("Claims pooled over the data sets.", label, lines))
    notes = (
        [
            r"\section*{Gaps and warnings}",
            r"\begin{itemize}",
            *(rf"\item {escape(p)}" for p in board.problems),
            r"\end{itemize}",
        ]
        if board.problems
        else []
    )
    return PREAMBLE + "\n\n".join(tables) + "\n" + "\n".join(notes) + "\n\\end{document}\n"
