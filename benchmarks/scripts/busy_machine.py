"""One short training cell timed on an idle machine and beside busy processes, old vs new thread choice.

    python benchmarks/scripts/busy_machine.py --method sasrec --epochs 2 --busy 2

Runs ``genrec-bench run`` on a copy of benchmarks/contrec_vs_tiger.yaml that keeps only method M (its protocol and
data set unchanged, ``--set methods.M.generator.epochs=E``) into a temporary results folder four times: {idle, beside ``--busy`` spinning processes} x {old: ``--threads
os.cpu_count()``, new: the default choice (free cores, see genrec_bench.environment.choose_threads)}. Busy
processes are Python spin loops (``--kind spin``) or single-threaded torch matmul loops (``--kind matmul``).
Prints the cell's wall time (result.json ``seconds``), the stage times and the threads chosen. On a machine
shared with other jobs, "idle" is only as idle as the machine: the load average is printed with every row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUSY = {"spin": "while True: pass",
        "matmul": "import torch; torch.set_num_threads(1); x = torch.randn(256, 256)\nwhile True: x @ x"}


def one_method(benchmark: Path, method: str, out: Path) -> Path:
    """The benchmark YAML with only ``method`` (other methods may need plugins this machine lacks)."""
    raw = yaml.safe_load(benchmark.read_text())
    raw["methods"] = {method: raw["methods"][method]}
    raw.pop("baseline", None)
    raw.pop("claims", None)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def run_cell(args: argparse.Namespace, threads: int | None, results: Path) -> dict:
    cmd = [sys.executable, "-m", "genrec_bench.cli", "-q", "run", str(args.yaml), "--method",
           args.method, "--set", f"methods.{args.method}.generator.epochs={args.epochs}", "--results",
           str(results), "--no-progress", "--no-leaderboard", "--rerun"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("GENREC_BENCH_THREADS", "OMP_NUM_THREADS",
                                                             "MKL_NUM_THREADS")}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"cell failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(next(results.glob(f"*/*/{args.method}/seed-*/result.json")).read_text())
    return {"wall": wall, "cell": result["seconds"], "timings": result["timings"], "load_before": load,
            "threads": result["environment"].get("threads", {}), "torch_threads": result["environment"]["torch_threads"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="benchmarks/contrec_vs_tiger.yaml")
    parser.add_argument("--method", default="sasrec")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the cell")
    parser.add_argument("--kind", choices=sorted(BUSY), default="spin")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds the busy processes run before the cell")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="busy-machine-") as tmp:
        args.yaml = one_method(ROOT / args.benchmark, args.method, Path(tmp) / "bench.yaml")
        for busy in (0, args.busy):
            procs = [subprocess.Popen([sys.executable, "-c", BUSY[args.kind]]) for _ in range(busy)]
            try:
                time.sleep(args.warmup if busy else 0)
                for label, threads in (("old", cores), ("new", None)):
                    out = run_cell(args, threads, Path(tmp) / f"{busy}-{label}")
                    rows.append((busy, label, out))
                    print(f"busy={busy} {label}: threads {out['torch_threads']} "
                          f"({out['threads'].get('source', '?')}), cell {out['cell']:.1f} s, wall {out['wall']:.1f} s, "
                          f"load before {out['load_before']:.2f}", flush=True)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    print(f"\n{args.method}, {args.epochs} epochs, {cores} cores, busy = {args.kind} loops")
    print(f"{'busy':>4} {'threads':>8} {'source':>10} {'cell s':>8} {'generator_fit s':>16} {'evaluate s':>11} "
          f"{'load':>5}")
    for busy, label, out in rows:
        t = out["timings"]
        print(f"{busy:>4} {out['torch_threads']:>8} {label + '/' + str(out['threads'].get('source', '?')):>10} "
              f"{out['cell']:>8.1f} {t.get('generator_fit', float('nan')):>16.1f} {t.get('evaluate', float('nan')):>11.1f} "
              f"{out['load_before']:>5.2f}")


if __name__ == "__main__":
    main()
