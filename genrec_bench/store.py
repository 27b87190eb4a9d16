"""The results store: one folder per cell, written atomically, skipped when already finished.

``<results>/<benchmark>/<dataset>/<method>/seed-<s>/`` holds:

- ``result.json``: status ("ok" or "failed"), identity, error, metrics (means), health, timings (s per stage),
  environment (versions, device, git commit), n_users
- ``config.yaml``: the resolved cell configuration
- ``per_user.npz``: ``users`` (int64 internal ids), ``user_ids`` (str original ids) and one float64 array
  per metric (``ndcg@10``...), unrounded, aligned with ``users``
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

RESULT_FILE = "result.json"
PER_USER_FILE = "per_user.npz"
CONFIG_FILE = "config.yaml"
LOG_FILE = "run.log"  # each run's log, in its benchmark folder; merge carries it over


def read_result(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's ``result.json``, or None when absent or unreadable."""
    try:
        return json.loads((cell_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_finished(cell_dir: Path, identity: str) -> bool:
    result = read_result(cell_dir)
    return bool(
        result
        and result.get("status") == "ok"
        and result.get("identity") == identity
        and (cell_dir / PER_USER_FILE).is_file()
    )


def read_per_user(cell_dir: Path) -> dict[str, np.ndarray]:
    with np.load(cell_dir / PER_USER_FILE, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def write_cell(
    cell_dir: Path,
    result: dict[str, Any],
    config: dict[str, Any],
    per_user: dict[str, np.ndarray] | None,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Write all files to a sibling temporary folder, then swap it into place.

    A reader never sees a half-written cell: either the old folder or the new one is complete.
    """
    cell_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cell_dir.name}.tmp-", dir=cell_dir.parent))
    try:
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        if per_user is not None:
            # compressed: per-user metrics are mostly zeros (a miss), 20x smaller on a 10k-user data set;
            # allow_pickle: numpy's default, passed by name so that no per-user key can be taken for the flag
            np.savez_compressed(tmp / PER_USER_FILE, allow_pickle=True, **per_user)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        (tmp / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))
        old = None
        if cell_dir.exists():
            old = cell_dir.parent / f".{cell_dir.name}.old-{os.getpid()}"
            os.replace(cell_dir, old)
        os.replace(tmp, cell_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resume_dir(cell_dir: Path) -> Path:
    """The sibling folder ``.seed-N.resume`` where a running cell keeps its epoch snapshots
    (``training.EpochCheckpoint``) until it is written: outside the cell folder, which is swapped whole."""
    return cell_dir.parent / f".{cell_dir.name}.resume"


def results_root(results: Path, benchmark: str) -> Path:
    """The folder holding ``<benchmark>/``: ``results`` itself, or its parent when ``results`` is already that
    benchmark's folder (named after it, with cells or a run log), so ``--results results/<benchmark>`` does not
    nest a second ``<benchmark>/`` inside it."""
    results = Path(results)
    own = results.name == benchmark and (any(iter_cells(results)) or (results / LOG_FILE).is_file())
    return results.parent if own else results


def iter_cells(benchmark_dir: Path):
    """Every cell folder (``<dataset>/<method>/seed-<s>``) under a benchmark's results folder."""
    for result_file in sorted(Path(benchmark_dir).glob(f"*/*/seed-*/{RESULT_FILE}")):
        yield result_file.parent
