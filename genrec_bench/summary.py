"""A plain table of mean metrics per cell (used when the leaderboard module is unavailable)."""
from __future__ import annotations

from pathlib import Path

from . import store


def summary_table(benchmark_dir: Path) -> str:
    from tabulate import tabulate

    rows, keys = [], []
    for cell_dir in store.iter_cells(benchmark_dir):
        result = store.read_result(cell_dir) or {}
        metrics = result.get("metrics") or {}
        keys = keys or [k for k in metrics if k.endswith("@10")]
        rows.append([result.get("dataset"), result.get("method"), result.get("seed"), result.get("status"),
                     *[metrics.get(k) for k in keys]])
    return tabulate(rows, headers=["data set", "method", "seed", "status", *keys], floatfmt=".4f")
