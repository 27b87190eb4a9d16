"""LaTeX (booktabs): a standalone document that compiles with pdflatex; copy a ``table`` block into a paper."""
from __future__ import annotations

import re

from .render import COMPARISON_HEADER, Style, comparison_rows, main_rows
from .table import Leaderboard, Table

_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "|": r"\textbar{}",
            "<": r"\textless{}", ">": r"\textgreater{}", "±": r"$\pm$",
            "†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$",
            "–": "--", "Δ": r"$\Delta$", "≤": r"$\leq$"}
_PATTERN = re.compile("|".join(re.escape(k) for k in _SPECIAL))
_MARKS = {"†": r"\dagger", "‡": r"\ddagger", "*": r"\ast"}


def escape(text: str) -> str:
    return _PATTERN.sub(lambda m: _SPECIAL[m.group()], text)


LATEX = Style(bold=lambda s: rf"\textbf{{{s}}}", under=lambda s: rf"\underline{{{s}}}",
              spread=lambda s: rf"{{\scriptsize$\pm${s}}}",
              marks=lambda s: "$^{" + "".join(_MARKS[c] for c in s) + "}$", escape=escape, gap="--")

# Shrinks a tabular wider than the line to fit; leaves narrower ones at their natural size.
SHRINK = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"

PREAMBLE = r"""\documentclass{article}
\usepackage[T1]{fontenc}
\usepackage[utf8]{inputenc}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
"""


def _tabular(header: list[str], body: list[list[str]], rule_before_last: bool = False) -> list[str]:
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", " & ".join(header) + r" \\",
             r"\midrule"]
    for i, row in enumerate(body):
        if rule_before_last and i == len(body) - 1:
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def render_table(table: Table, label: str) -> str:
    """One ``table`` float: the leaderboard, its footnote and protocol card, then the primary comparisons."""
    header, body = main_rows(table, LATEX)
    has_gain = bool(table.baseline and any(v is not None for v in table.gain.values()))
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{Leaderboard on {escape(table.dataset)}.}}",
             rf"\label{{tab:{label}}}", SHRINK, *_tabular(header, body, has_gain), "}",
             r"\par\smallskip\footnotesize\raggedright", escape(table.footnote), r"\par\smallskip",
             r"\textit{Protocol.} " + "; ".join(escape(line) for line in table.card) + "."]
    detail = comparison_rows(table, [table.primary])
    if detail:
        lines += [r"\par\medskip", SHRINK,
                  *_tabular([escape(h) for h in COMPARISON_HEADER], [[escape(c) for c in r] for r in detail]), "}"]
    return "\n".join(lines + [r"\end{table}"])


def render_latex(board: Leaderboard) -> str:
    tables = [render_table(t, re.sub(r"[^A-Za-z0-9]+", "-", f"{board.benchmark}-{t.dataset}")) for t in board.tables]
    notes = [r"\section*{Gaps and warnings}", r"\begin{itemize}", *(rf"\item {escape(p)}" for p in board.problems),
             r"\end{itemize}"] if board.problems else []
    return PREAMBLE + "\n\n".join(tables) + "\n" + "\n".join(notes) + "\n\\end{document}\n"
