"""Full-ranking evaluation speed: every test user of a data set scored by a random generator.

    python benchmarks/scripts/eval_speed.py --dataset beauty=contrec:../shared/data/beauty --threads 2

Prints users/s and peak memory; the score matrix per batch is bounded by --memory-mb.
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from genrec_bench.cli import _dataset_override, default_cache_dir
from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench.evaluation import eval_batch_size, per_user_metrics, ranking_hits, summarize
from genrec_bench.metrics import BUILTIN
from genrec_bench_plugins.baselines import AtomicTokenizer, FullRanking, RandomScores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", help="a loader name or NAME=LOADER:PATH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mb", type=float, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, spec = _dataset_override(args.dataset)
    data = SplitData(load_dataset(name, spec, default_cache_dir()), max_history=20)
    ctx = RunContext(torch.device(args.device), 0, default_cache_dir(), Path("."), show_progress=False)
    tokenizer, generator, retriever = AtomicTokenizer(), RandomScores(), FullRanking()
    tokenizer.fit(data, ctx)
    generator.fit(data, tokenizer, lambda: {}, ctx)
    batch = eval_batch_size(data.n_items, args.memory_mb)
    start = time.perf_counter()
    hits = ranking_hits(generator, retriever, data, "test", 20, ctx, batch)
    metrics = summarize(per_user_metrics(hits, [10, 20], {"recall": BUILTIN["recall"], "ndcg": BUILTIN["ndcg"]}))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: {data.n_users} users x {data.n_items} items, batch {batch} users, {args.threads} threads: "
          f"{seconds:.2f} s ({data.n_users / seconds:,.0f} users/s), peak RSS {peak:.0f} MB; "
          f"random recall@10 {metrics['recall@10']:.4f} (expected ~{10 / data.n_items:.4f})")


if __name__ == "__main__":
    main()
