"""``genrec-bench leaderboard results/<benchmark>``: arguments and entry point (wired in genrec_bench/cli.py).

The top layer of the leaderboard: imports build.py only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import stats
from ..errors import GenrecError
from .build import FORMATS, build_leaderboard


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, help="a benchmark's results folder, e.g. results/quick")
    parser.add_argument(
        "--baseline",
        help="method to test every other method against (default: the 'baseline' recorded from the benchmark YAML)",
    )
    parser.add_argument(
        "--test",
        choices=stats.TESTS,
        default="t",
        help="paired test over users (default: t; wilcoxon over-rejects at large n)",
    )
    parser.add_argument(
        "--correction",
        choices=stats.CORRECTIONS,
        default="holm",
        help="multiple-comparison correction across the whole leaderboard (default: holm)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument(
        "--resamples",
        type=int,
        default=10_000,
        help="resamples of the permutation and bootstrap tests (default: 10000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling tests (default: 0)")
    parser.add_argument(
        "--metrics",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        help="comma-separated metric@K columns to keep, e.g. ndcg@10,recall@10 (default: all)",
    )
    parser.add_argument(
        "--claims",
        type=lambda s: [c.strip() for c in s.split(",") if c.strip()],
        help="comma-separated claims 'a > b' or 'a > b: metric@K' to test, replacing the "
        "'claims' recorded from the benchmark YAML",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        help="output format; repeat for several (default: all; files go to --out)",
    )
    parser.add_argument(
        "--methods",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        help="comma-separated methods to read (default: every method folder; 'genrec-bench run' passes its "
        "benchmark file's methods, so cells of removed or renamed methods stay off)",
    )
    parser.add_argument("--out", type=Path, help="folder for the files (default: <results>/leaderboard)")
    parser.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bold/underline with terminal escapes (default: when stdout is a terminal)",
    )


def main(args: argparse.Namespace) -> int:
    """Build, print the terminal table and the files written; 2 with a one-line message on bad input."""
    formats = args.formats or list(FORMATS)
    color = sys.stdout.isatty() if args.color is None else args.color
    try:
        board = build_leaderboard(
            args.results,
            baseline=args.baseline,
            test=args.test,
            correction=args.correction,
            alpha=args.alpha,
            formats=formats,
            out_dir=args.out,
            n_resamples=args.resamples,
            seed=args.seed,
            metrics=args.metrics,
            color=color,
            claims=args.claims,
            methods=args.methods,
        )
    except GenrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "terminal" in board.text:
        print(board.text["terminal"], end="")
    for fmt, path in board.paths.items():
        print(f"wrote {fmt}: {path}", file=sys.stderr)
    return 0
