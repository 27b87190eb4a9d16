"""``genrec-bench status`` (what a results folder holds) and ``genrec-bench merge`` (combine results folders)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import store
from .convergence import budget_text, stop_label
from .errors import GenrecError
from .lock import ResultsLock


def benchmark_dirs(results: Path) -> list[Path]:
    """``results`` itself when it is one benchmark's folder, else its benchmark subfolders."""
    results = Path(results)
    if not results.is_dir():
        raise GenrecError(
            f"{results}: no such results folder; give the folder passed to run --results (default: results)"
        )
    if any(store.iter_cells(results)):
        return [results]
    return sorted(d for d in results.iterdir() if d.is_dir() and any(store.iter_cells(d)))


def _cell_key(cell_dir: Path) -> str:
    return f"{cell_dir.parent.parent.name}/{cell_dir.parent.name}/{cell_dir.name}"


def status_lines(results: Path, benchmark: str | None = None) -> tuple[list[str], dict[str, int]]:
    """One line per cell (ok, failed with the reason, missing), grouped by benchmark, and the counts."""
    results = Path(results)
    expected: dict[str, list[str]] = {}
    if benchmark:
        from .config import expand_cells, load_benchmark

        bench = load_benchmark(benchmark)
        expected[bench.name] = [str(c.relative_dir()) for c in expand_cells(bench)]
        folder = store.results_root(results, bench.name) / bench.name  # given the benchmark's folder or the one above
        folders = {bench.name: folder}
    else:
        folders = {d.name: d for d in benchmark_dirs(results)}
    lines, counts = [], {"ok": 0, "failed": 0, "missing": 0}
    for name, folder in sorted(folders.items()):
        found = {_cell_key(c): store.read_result(c) or {} for c in store.iter_cells(folder)} if folder.is_dir() else {}
        resumable = _resumable(folder) if folder.is_dir() else {}
        keys = list(dict.fromkeys(expected.get(name, []) + sorted(found) + sorted(resumable)))
        ok = sum(found.get(k, {}).get("status") == "ok" for k in keys)
        failed = sum(found.get(k, {}).get("status") not in (None, "ok") for k in keys)
        missing = sum(k not in found for k in keys)
        lines.append(f"{name} ({folder}): {ok} ok, {failed} failed, {missing} missing")
        for key in keys:
            result = found.get(key)
            if result is None:
                lines.append(f"  missing  {key}")
            elif result.get("status") == "ok":
                shown = ", ".join(f"{m} {v:.4f}" for m, v in (result.get("metrics") or {}).items() if m.endswith("@10"))
                stopped = training_note(result)
                line = f"  ok       {key}  {float(result.get('seconds') or 0):.0f}s  {shown}".rstrip()
                lines.append(f"{line}  [{stopped}]" if stopped else line)
            else:
                lines.append(f"  failed   {key}  {result.get('failed_stage') or 'setup'}: {result.get('error')}")
            if key in resumable:
                lines.append(f"           {key}: {resumable[key]}")
        counts = {k: counts[k] + v for k, v in (("ok", ok), ("failed", failed), ("missing", missing))}
    if not lines:
        raise GenrecError(f"{results}: no cells found (no */*/seed-*/result.json under it)")
    return lines, counts


def _resumable(folder: Path) -> dict[str, str]:
    """Cells with epoch snapshots of an unfinished run (``store.resume_dir``): key -> what running it again does."""
    out = {}
    for resume in sorted(folder.glob("*/*/.seed-*.resume")):
        snapshots = sorted(resume.glob("*.pt"))
        if not snapshots:
            continue
        cell = resume.parent / resume.name[1 : -len(".resume")]
        newest = max(p.stat().st_mtime for p in snapshots)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(newest))
        names = ", ".join(p.stem for p in snapshots)
        out[_cell_key(cell)] = (
            f"training unfinished (running now, or stopped): the next run resumes {names} from its snapshot of {when}"
        )
    return out


def training_note(result: dict) -> str:
    """How the cell's generator stopped and what it saw: ``stopped by patience, 19 epochs, 99,978 samples, 798
    steps, best epoch 16/19``; empty
    for a generator without training and for results written before training records existed."""
    training = result.get("training")
    if not isinstance(training, dict):
        return ""
    record = training.get("generator")
    if record is None:
        return "not trained"
    label = "stopped by patience" if record.get("stop_rule") == "patience" else stop_label(record)
    return f"{label}, {budget_text(record)}, best epoch {record.get('best_epoch')}/{record.get('epochs_run')}"


@dataclass
class MergeReport:
    copied: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # finished in both with different identities: kept DST
    kept: list[str] = field(default_factory=list)  # SRC failed, DST has a result: kept DST


def _copy_cell(src: Path, dst: Path) -> None:
    """Copy a cell folder and swap it into place, like store.write_cell."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        for item in src.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        old = None
        if dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}"
            os.replace(dst, old)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def merge(src: Path, dst: Path) -> MergeReport:
    """Copy SRC's cells into DST (both results folders holding ``<benchmark>/`` folders).

    A finished cell of DST is never replaced by a cell with another identity, nor by a failure; a failed or
    missing DST cell takes SRC's cell.
    """
    src, dst = Path(src), Path(dst)
    report = MergeReport()
    sources = benchmark_dirs(src)
    if not sources:
        raise GenrecError(f"{src}: no cells found to merge (expected <benchmark>/<dataset>/<method>/seed-N/)")
    dst_is_bench = dst.is_dir() and any(store.iter_cells(dst))
    for bench_dir in sources:
        # one benchmark's folder into one benchmark's folder (``merge side/bench results/bench``) is taken as such,
        # never nested as results/bench/bench
        same_level = dst.name == bench_dir.name and (dst_is_bench or sources == [src])
        if dst_is_bench and not same_level:
            raise GenrecError(
                f"{dst}: this is the folder of benchmark '{dst.name}', not a results folder, and {bench_dir} holds "
                f"'{bench_dir.name}'; give the results folders (genrec-bench merge {src.parent} {dst.parent})"
            )
        target_bench = dst if same_level else dst / bench_dir.name
        with ResultsLock(target_bench):
            copied_before = len(report.copied)
            for cell in store.iter_cells(bench_dir):
                key = f"{bench_dir.name}/{_cell_key(cell)}"
                theirs, target = store.read_result(cell) or {}, target_bench / cell.relative_to(bench_dir)
                ours = store.read_result(target)
                finished = theirs.get("status") == "ok" and (cell / store.PER_USER_FILE).is_file()
                if ours is None:
                    _copy_cell(cell, target)
                    report.copied.append(key)
                elif ours.get("status") == "ok":
                    if not finished:
                        report.kept.append(key)
                    elif ours.get("identity") == theirs.get("identity"):
                        report.same.append(key)
                    else:
                        report.conflicts.append(key)
                elif finished:
                    _copy_cell(cell, target)
                    report.copied.append(key)
                else:
                    report.kept.append(key)
            if len(report.copied) > copied_before:
                _append_log(bench_dir / store.LOG_FILE, target_bench / store.LOG_FILE, report.copied[copied_before:])
    return report


def _append_log(src: Path, dst: Path, cells: list[str]) -> None:
    """Append SRC's run log to DST's under a header naming the cells copied, so the merged folder keeps their logs."""
    if not src.is_file():
        return
    header = f"# --- genrec-bench merge from {src.parent}: {', '.join(cells)} ---\n"
    with dst.open("a", encoding="utf-8") as out:
        out.write(header + src.read_text(encoding="utf-8", errors="replace"))
