"""One short training cell timed on an idle machine and beside busy processes, old vs new thread choice.

    python benchmarks/scripts/busy_machine.py --method sasrec --epochs 2 --busy 2
    python benchmarks/scripts/busy_machine.py --micro --busy 2     # why: small torch ops, threads x wait policy

Cell mode runs ``genrec-bench run`` on a copy of benchmarks/contrec_vs_tiger.yaml that keeps only method M (its
protocol and data set unchanged, ``--set methods.M.generator.epochs=E``) into a temporary results folder four
times: {idle, beside ``--busy`` spinning processes} x {old: ``--threads os.cpu_count()``, new: the default choice
(free cores, see genrec_bench.environment.choose_threads)}. It prints the cell's wall time (result.json
``seconds``), the stage times and the threads chosen.

Micro mode times a fixed loop of SASRec-sized forward/backward steps (batch 64 x 50 positions x 64 hidden) in a
fresh process per setting: {1, all threads} x {OMP_WAIT_POLICY default, PASSIVE} x {idle, busy}. If a thread pool
larger than the free cores is slow because its threads spin or wait at barriers for a preempted peer, the
2-thread busy rows are far slower than the 1-thread ones.

Busy processes are Python spin loops (``--kind spin``) or single-threaded torch matmul loops (``--kind matmul``).
On a machine shared with other jobs "idle" is only as idle as the machine: the load average is printed per row.
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
BUSY = {
    "spin": "while True: pass",
    "matmul": "import torch; torch.set_num_threads(1); x = torch.randn(256, 256)\nwhile True: x @ x",
}
MICRO = """if True:
    import time, torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64),
                                torch.nn.LayerNorm(64))
    opt = torch.optim.Adam(model.parameters())
    x = torch.randn(64, 50, 64)
    start = time.perf_counter()
    for _ in range({steps}):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(time.perf_counter() - start)"""
POOL_ENV = ("GENREC_BENCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


def one_method(benchmark: Path, method: str, out: Path) -> Path:
    """The benchmark YAML with only ``method`` (other methods may need plugins this machine lacks)."""
    raw = yaml.safe_load(benchmark.read_text())
    raw["methods"] = {method: raw["methods"][method]}
    raw.pop("baseline", None)
    raw.pop("claims", None)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in POOL_ENV}, **extra}


def run_cell(args: argparse.Namespace, threads: int | None, results: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "genrec_bench.cli",
        "-q",
        "run",
        str(args.yaml),
        "--method",
        args.method,
        "--set",
        f"methods.{args.method}.generator.epochs={args.epochs}",
        "--results",
        str(results),
        "--no-progress",
        "--no-leaderboard",
        "--rerun",
    ]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"cell failed ({' '.join(cmd)}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(next(results.glob(f"*/*/{args.method}/seed-*/result.json")).read_text())
    env = result["environment"]
    return {
        "wall": wall,
        "cell": result["seconds"],
        "timings": result["timings"],
        "load_before": load,
        "threads": env.get("threads", {}),
        "torch_threads": env["torch_threads"],
    }


def run_micro(threads: int, policy: str | None, steps: int) -> float:
    extra = {"OMP_NUM_THREADS": str(threads), **({"OMP_WAIT_POLICY": policy} if policy else {})}
    done = subprocess.run(
        [sys.executable, "-c", MICRO.format(steps=steps)],
        env=clean_env(**extra),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def with_busy(n: int, kind: str, warmup: float):
    """Start ``n`` busy processes; returns a function that stops them."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY[kind]]) for _ in range(n)]
    time.sleep(warmup if n else 0)

    def stop() -> None:
        for p in procs:
            p.kill()
            p.wait()

    return stop


def micro(args: argparse.Namespace, cores: int) -> None:
    print(f"micro: {args.steps} SASRec-sized steps, {cores} cores, busy = {args.kind} loops")
    print(f"{'busy':>4} {'threads':>7} {'OMP_WAIT_POLICY':>16} {'seconds':>8} {'load':>5}")
    for busy in (0, args.busy):
        stop = with_busy(busy, args.kind, args.warmup)
        try:
            for threads in sorted({1, cores}):
                for policy in (None, "PASSIVE"):
                    load = os.getloadavg()[0]
                    seconds = run_micro(threads, policy, args.steps)
                    print(f"{busy:>4} {threads:>7} {policy or 'default':>16} {seconds:>8.2f} {load:>5.2f}", flush=True)
        finally:
            stop()


def cells(args: argparse.Namespace, cores: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="busy-machine-") as tmp:
        args.yaml = one_method(ROOT / args.benchmark, args.method, Path(tmp) / "bench.yaml")
        for busy in (0, args.busy):
            stop = with_busy(busy, args.kind, args.warmup)
            try:
                for label, threads in (("old", cores), ("new", None)):
                    out = run_cell(args, threads, Path(tmp) / f"{busy}-{label}")
                    rows.append((busy, label, out))
                    print(
                        f"busy={busy} {label}: threads {out['torch_threads']} "
                        f"({out['threads'].get('source', '?')}), cell {out['cell']:.1f} s, wall {out['wall']:.1f} s, "
                        f"load before {out['load_before']:.2f}",
                        flush=True,
                    )
            finally:
                stop()
    print(f"\n{args.method}, {args.epochs} epochs, {cores} cores, busy = {args.kind} loops")
    print(
        f"{'busy':>4} {'threads':>8} {'source':>14} {'cell s':>8} {'generator_fit s':>16} {'evaluate s':>11} "
        f"{'load':>5}"
    )
    for busy, label, out in rows:
        t, nan = out["timings"], float("nan")
        print(
            f"{busy:>4} {out['torch_threads']:>8} {label + '/' + str(out['threads'].get('source', '?')):>14} "
            f"{out['cell']:>8.1f} {t.get('generator_fit', nan):>16.1f} {t.get('evaluate', nan):>11.1f} "
            f"{out['load_before']:>5.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="benchmarks/contrec_vs_tiger.yaml")
    parser.add_argument("--method", default="sasrec")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside the cell")
    parser.add_argument("--kind", choices=sorted(BUSY), default="spin")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds the busy processes run before timing")
    parser.add_argument("--micro", action="store_true", help="time small torch steps instead of a cell")
    parser.add_argument("--steps", type=int, default=300, help="steps of the micro loop")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    (micro if args.micro else cells)(args, cores)


if __name__ == "__main__":
    main()
