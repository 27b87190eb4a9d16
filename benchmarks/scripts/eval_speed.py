"""Full-ranking evaluation speed: every test user of a data set scored by a random generator.

    python benchmarks/scripts/eval_speed.py --dataset beauty=contrec:../shared/data/beauty --threads 2

Prints users/s, peak memory, and the share of evaluation time spent validating rankings and score matrices
(``genrec_bench.evaluation``: every batch is checked before it is scored); the score matrix per batch is
bounded by --memory-mb. ``--scores constant`` ranks an all-ties matrix (the worst case for tie-breaking).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from genrec_bench_plugins.baselines import AtomicTokenizer, FullRanking, Popularity, RandomScores

from genrec_bench import evaluation
from genrec_bench.cli import _dataset_override, default_cache_dir
from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench.evaluation import eval_batch_size, per_user_metrics, ranking_hits, summarize
from genrec_bench.metrics import BUILTIN


class Constant(RandomScores):
    """Every item scores 0: the whole catalogue ties."""

    def generate(self, batch, ctx) -> torch.Tensor:
        return torch.zeros((len(batch), self.n_items), device=ctx.device)


class DotProduct(RandomScores):
    """Random 64-d user and item vectors, scored by their inner product (a trained model's last layer)."""

    def fit(self, data, tokenizer, validate, ctx) -> None:
        super().fit(data, tokenizer, validate, ctx)
        self.items = torch.randn((data.n_items, 64), generator=self.rng).to(ctx.device)

    def generate(self, batch, ctx) -> torch.Tensor:
        return torch.randn((len(batch), 64), generator=self.rng).to(ctx.device) @ self.items.T


CHECKS = ("score_matrix_violation", "ranking_violation")


def timed_checks() -> dict[str, float]:
    """Wrap the evaluator's two validity checks so that their time adds up in the returned dict."""
    spent = dict.fromkeys(CHECKS, 0.0)
    for name in CHECKS:
        check = getattr(evaluation, name)

        def wrapper(*args, _check=check, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _check(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - start

        setattr(evaluation, name, wrapper)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", help="a loader name or NAME=LOADER:PATH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-mb", type=float, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scores", choices=("random", "dot", "constant", "popularity"), default="random")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="evaluate this often; the first run warms up, the figures add up the others",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, spec = _dataset_override(args.dataset)
    data = SplitData(load_dataset(name, spec, default_cache_dir()), max_history=20)
    ctx = RunContext(torch.device(args.device), 0, default_cache_dir(), Path("."), show_progress=False)
    generators = {"random": RandomScores, "dot": DotProduct, "constant": Constant, "popularity": Popularity}
    tokenizer, generator, retriever = AtomicTokenizer(), generators[args.scores](), FullRanking()
    tokenizer.fit(data, ctx)
    generator.fit(data, tokenizer, lambda: {}, ctx)
    batch = eval_batch_size(data.n_items, args.memory_mb)
    spent, seconds = timed_checks(), 0.0
    for run in range(args.repeats):
        if run == 1:  # the first of several runs is a warm-up
            spent.update(dict.fromkeys(CHECKS, 0.0))
            seconds = 0.0
        start = time.perf_counter()
        hits = ranking_hits(generator, retriever, data, "test", 20, ctx, batch)
        metrics = summarize(per_user_metrics(hits, [10, 20], {"recall": BUILTIN["recall"], "ndcg": BUILTIN["ndcg"]}))
        seconds += time.perf_counter() - start
    runs = max(1, args.repeats - 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{name}: {data.n_users} users x {data.n_items} items, batch {batch} users, {args.threads} threads, "
        f"{args.scores} scores: {seconds / runs:.2f} s per run ({runs * data.n_users / seconds:,.0f} users/s), "
        f"peak RSS {peak:.0f} MB; "
        f"recall@10 {metrics['recall@10']:.4f} (random: ~{10 / data.n_items:.4f}); validation "
        f"{sum(spent.values()) / runs:.3f} s = {100 * sum(spent.values()) / seconds:.2f}% of evaluation time (score "
        f"matrices {100 * spent[CHECKS[0]] / seconds:.2f}%, rankings {100 * spent[CHECKS[1]] / seconds:.2f}%)"
    )


if __name__ == "__main__":
    main()
