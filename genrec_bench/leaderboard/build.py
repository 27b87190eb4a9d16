"""Build a leaderboard from a results folder and write it in every requested format.

The pipeline: collect, resolve the baseline and the claims, test the family, build the tables, render.
Imports every layer below it (collect, compare, claims, table, render, latex, html); only cli.py imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from .. import stats
from ..errors import ConfigError
from .claims import POOLED, Claim, compare_with_claims, parse_claims
from .collect import Collection, LeaderboardError, collect, merge_identical_columns
from .compare import resolve_baseline
from .html import render_html
from .latex import render_latex
from .render import render_csv, render_json, render_markdown, render_terminal
from .table import Leaderboard, Settings, build_tables

FORMATS = ("terminal", "markdown", "latex", "csv", "json", "html")
FILES = {
    "markdown": "leaderboard.md",
    "latex": "leaderboard.tex",
    "csv": "leaderboard.csv",
    "json": "leaderboard.json",
    "html": "leaderboard.html",
}


def _renderers() -> dict[str, Callable[[Leaderboard], str]]:
    return {
        "markdown": render_markdown,
        "latex": render_latex,
        "csv": render_csv,
        "json": render_json,
        "html": render_html,
    }


def _check(test: str, correction: str, alpha: float, formats: Sequence[str]) -> None:
    if test not in stats.TESTS:
        raise LeaderboardError(f"--test {test!r}: unknown test; choose one of {', '.join(stats.TESTS)}")
    if correction not in stats.CORRECTIONS:
        raise LeaderboardError(f"--correction {correction!r}: unknown; choose one of {', '.join(stats.CORRECTIONS)}")
    if not 0 < alpha < 1:
        raise LeaderboardError(f"--alpha {alpha}: must lie strictly between 0 and 1 (e.g. 0.05)")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise LeaderboardError(f"--format {unknown[0]!r}: unknown; choose from {', '.join(FORMATS)}")


def _claims(collection: Collection, given: Sequence[str] | None, problems: list[str]) -> list[Claim]:
    """Claims given here (``a > b`` or ``a > b: metric@K``), else those recorded from the benchmark YAML."""
    raw: list = list(collection.claims or [])
    if given is not None:
        raw = []
        for text in given:
            claim, sep, metric = text.partition(":")
            raw.append({claim.strip(): metric.strip()} if sep else claim.strip())
    known = sorted({m for d in collection.datasets.values() for m in d.methods})
    try:
        where = "--claims" if given is not None else f"{collection.path}: claims"
        return parse_claims(raw, known if given is not None else None, where=where)
    except ConfigError as exc:
        if given is not None:
            raise LeaderboardError(str(exc)) from None
        problems.append(f"{exc}; claims left out")
        return []


def build_leaderboard(
    benchmark_dir: Path,
    baseline: str | None = None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    formats: Sequence[str] = FORMATS,
    out_dir: Path | None = None,
    n_resamples: int = 10_000,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    color: bool = False,
    claims: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> Leaderboard:
    """Collect ``results/<benchmark>``, test the comparison family, render ``formats``.

    Files (all formats but ``terminal``) go to ``out_dir`` (default ``benchmark_dir/leaderboard``);
    ``board.text[fmt]`` holds every rendered text, ``board.paths[fmt]`` every file written, and
    ``board.problems`` the gaps and warnings (also printed in the outputs). ``claims`` (``"a > b"`` or
    ``"a > b: metric@K"``) replace the claims recorded from the benchmark YAML. Raises LeaderboardError when
    the folder has no usable cell or an option is invalid. ``methods``: read only these methods' cells (the
    runner passes the benchmark file's, so a removed or renamed method's old cells stay off the board).
    """
    _check(test, correction, alpha, formats)
    benchmark_dir = Path(benchmark_dir)
    collection = collect(benchmark_dir, methods)
    problems = list(collection.problems)
    if not any(m.per_user for d in collection.datasets.values() for m in d.methods.values()):
        raise LeaderboardError(
            f"{benchmark_dir}: no valid cell (all failed or unfinished); first problem: "
            f"{problems[0] if problems else 'none recorded'}"
        )
    if metrics:
        for record in collection.datasets.values():
            absent = [m for m in metrics if m not in record.columns]
            if absent:
                problems.append(
                    f"{benchmark_dir / record.name}: no values for {', '.join(absent)}; "
                    f"known: {', '.join(record.columns)}"
                )
            record.columns = [c for c in record.columns if c in metrics]
    for record in collection.datasets.values():
        merge_identical_columns(record)
    chosen = resolve_baseline(collection, baseline, problems)
    claim_list = _claims(collection, claims, problems)
    comparisons, found, outcomes = compare_with_claims(
        collection,
        chosen,
        test,
        correction,
        alpha,
        n_resamples,
        seed,
        claim_list,
        collection.claims_metric,
        collection.budget,
    )
    problems += found
    settings = Settings(test, correction, alpha, n_resamples, seed, chosen)
    board = Leaderboard(
        collection.benchmark,
        benchmark_dir,
        settings,
        build_tables(collection, comparisons, settings, chosen, outcomes),
        list(dict.fromkeys(problems)),
        collection.seeds,
        sum(1 for c in comparisons if c.result),
        collection,
        [o for o in outcomes if o.dataset == POOLED],
    )
    renderers = _renderers()
    out_dir = Path(out_dir) if out_dir is not None else benchmark_dir / "leaderboard"
    for fmt in formats:
        if fmt == "terminal":
            board.text[fmt] = render_terminal(board, color=color)
            continue
        board.text[fmt] = renderers[fmt](board)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / FILES[fmt]
        path.write_text(board.text[fmt], encoding="utf-8")
        board.paths[fmt] = path
    return board
