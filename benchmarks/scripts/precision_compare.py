"""fp32 against bf16 autocast, side by side on this machine: seconds per cell stage and validation NDCG@10.

    python benchmarks/scripts/precision_compare.py benchmarks/contrec_vs_tiger.yaml --method contrec \\
        --method deftrec --seeds 0,1,2 [--set methods.contrec.generator.epochs=2] [--threads 2] [--json FILE]

Runs each chosen cell of the benchmark file once with ``protocol.precision: fp32`` and once with ``bf16``,
alternating the two per seed so that a change in machine load hits both, after a one-epoch warm-up run per
method that fills the caches (item features, the exported backbone); nothing is written to ``results/``.
Per method and precision it prints the mean seconds of every stage (tokenizer, generator training, test
evaluation), the best validation NDCG@10 (the training record's curve) and the test NDCG@10, with each seed's
figures, and the paired bf16 - fp32 differences over seeds. Whether ``precision: auto`` uses bf16 on the CPU for
a path is the plugin's ``CPU_BF16_PAYS``, set from this script's figures (docs/contrec.md, "Precision").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genrec_bench.cli import default_cache_dir
from genrec_bench.config import expand_cells, load_benchmark
from genrec_bench.context import RunContext, cpu_has_bf16_units
from genrec_bench.data import load_dataset
from genrec_bench.runner import run_cell

PRECISIONS = ("fp32", "bf16")


def run_one(bench_file: str, overrides: list[str], method: str, seed: int, precision: str, cache: Path) -> dict:
    bench = load_benchmark(bench_file, [*overrides, f"protocol.precision={precision}", f"seeds=[{seed}]"])
    (cell,) = [c for c in expand_cells(bench) if c.method == method and c.seed == seed][:1]
    dataset = load_dataset(cell.dataset, cell.dataset_spec, cache)
    with tempfile.TemporaryDirectory() as work:
        ctx = RunContext(torch.device("cpu"), seed, cache, Path(work), False, logging.getLogger("precision"))
        start = time.perf_counter()
        metrics, _, extras = run_cell(cell, dataset, ctx)
    record = extras["training"]["generator"] or {}
    curve = [v for _, v in record.get("valid_curve", [])]
    return {
        "method": method,
        "seed": seed,
        "precision": precision,
        "used": extras["precision"]["used"],
        "seconds": time.perf_counter() - start,
        "timings": extras["timings"],
        "best_valid": max(curve) if curve else float("nan"),
        "valid_curve": curve,
        "test_ndcg10": metrics["ndcg@10"],
        "stop_rule": record.get("stop_rule"),
        "epochs_run": record.get("epochs_run"),
    }


def report(rows: list[dict]) -> None:
    stages = ("tokenizer_fit", "generator_fit", "evaluate")
    print(f"\n{'method':10} {'prec':5} " + " ".join(f"{s:>14}" for s in stages) + f" {'valid@10':>9} {'test@10':>8}")
    for method in dict.fromkeys(r["method"] for r in rows):
        by = {p: [r for r in rows if r["method"] == method and r["precision"] == p] for p in PRECISIONS}
        for p, rs in by.items():
            if not rs:
                continue
            secs = " ".join(f"{statistics.mean(r['timings'].get(s, 0.0) for r in rs):14.1f}" for s in stages)
            valid = statistics.mean(r["best_valid"] for r in rs)
            test = statistics.mean(r["test_ndcg10"] for r in rs)
            seeds = ", ".join(f"s{r['seed']} {r['best_valid']:.4f}/{r['test_ndcg10']:.4f}" for r in rs)
            print(f"{method:10} {p:5} {secs} {valid:9.4f} {test:8.4f}   ({seeds})")
        pairs = [
            (a, b)
            for a in by["fp32"]
            for b in by["bf16"]
            if a["seed"] == b["seed"]  # paired by seed
        ]
        if pairs:
            speed = statistics.mean(a["timings"]["generator_fit"] / b["timings"]["generator_fit"] for a, b in pairs)
            dv = [b["best_valid"] - a["best_valid"] for a, b in pairs]
            spread = [r["best_valid"] for r in by["fp32"]]
            sd = statistics.stdev(spread) if len(spread) > 1 else float("nan")
            print(
                f"{'':10} bf16 - fp32: generator_fit {speed:.2f}x faster, valid NDCG@10 "
                f"{statistics.mean(dv):+.4f} (per seed {', '.join(f'{d:+.4f}' for d in dv)}; fp32 seed-to-seed sd "
                f"{sd:.4f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark")
    parser.add_argument("--method", action="append", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--no-warmup", action="store_true", help="skip the one-epoch warm-up run per method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = default_cache_dir()
    load = os.getloadavg()[0]
    print(
        f"CPU bf16 units: {cpu_has_bf16_units()}; torch {torch.__version__}, {args.threads} threads, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start"
    )
    for method in args.method:  # fills the caches (item features, the exported backbone) before any timing
        if not args.no_warmup:
            warm = [*args.overrides, f"methods.{method}.generator.epochs=1"]
            row = run_one(args.benchmark, warm, method, int(args.seeds.split(",")[0]), "bf16", cache)
            print(f"warm-up {method}: {row['seconds']:.1f} s (not counted)", flush=True)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in args.method:
            order = PRECISIONS if seed % 2 == 0 else PRECISIONS[::-1]  # alternate which precision runs first
            for precision in order:
                row = run_one(args.benchmark, args.overrides, method, seed, precision, cache)
                rows.append(row)
                print(
                    f"{method} seed {seed} {precision} (used {','.join(row['used'])}): "
                    f"{row['seconds']:.1f} s, generator_fit {row['timings']['generator_fit']:.1f} s, "
                    f"valid {row['best_valid']:.4f}, test NDCG@10 {row['test_ndcg10']:.4f}, "
                    f"{row['stop_rule']} after {row['epochs_run']} epochs",
                    flush=True,
                )
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    report(rows)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
