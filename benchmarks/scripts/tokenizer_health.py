"""Fit the discrete tokenizers on one data set and print their health figures, fit time and peak memory.

    python benchmarks/scripts/tokenizer_health.py --loader contrec --path ../shared/data/beauty

Features are computed once (and cached); each tokenizer is then fitted in a fresh process, so that its peak
resident memory (``ru_maxrss``) is its own. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from pathlib import Path
from queue import Empty

import yaml

COLUMNS = [
    "recon_rel",
    "recon_mse",
    "usage_l0",
    "usage_l1",
    "usage_l2",
    "perplexity_l0",
    "perplexity_l1",
    "perplexity_l2",
    "collision_rate",
    "max_collision",
    "collision_rate_dedup",
    "reseeded_codes",
]


def _context(args: argparse.Namespace, device: str | None = None):
    import torch

    from genrec_bench.context import RunContext

    torch.set_num_threads(args.threads)
    device = device or args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return RunContext(torch.device(device), args.seed, Path(args.cache_dir), Path(args.cache_dir), show_progress=False)


def _data(args: argparse.Namespace):
    from genrec_bench.data import SplitData, load_dataset

    dataset = load_dataset(
        Path(args.path).name, {"loader": args.loader, "path": args.path}, cache_dir=Path(args.cache_dir)
    )
    return SplitData(dataset)


def _rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited across fork/exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _fit_one(args: argparse.Namespace, name: str, params: dict, queue: mp.Queue) -> None:
    import torch

    from genrec_bench.config import instantiate
    from genrec_bench.plugins import registry

    ctx, data = _context(args), _data(args)
    tokenizer = instantiate(registry().get("tokenizers", name), {"features": args.features, **params}, name)
    before = _rss_mb()
    start = time.perf_counter()
    tokenizer.fit(data, ctx)
    seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() / 2**20 if ctx.device.type == "cuda" else float("nan")
    queue.put(
        {
            "tokenizer": name,
            "L": len(tokenizer.codebook_sizes),
            **tokenizer.health(),
            "fit_s": seconds,
            "rss_before_MB": before,
            "peak_rss_MB": _rss_mb(),
            "peak_gpu_MB": gpu,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loader", default="contrec")
    parser.add_argument("--path", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "beauty"))
    parser.add_argument(
        "--features",
        type=yaml.safe_load,
        default="text",
        help="feature spec as YAML, e.g. text or '{name: lightgcn, dim: 64}'",
    )
    parser.add_argument("--tokenizers", default="vqvae,rqvae,mqvae")
    parser.add_argument(
        "--params",
        type=yaml.safe_load,
        default={},
        help="per-tokenizer parameters as YAML, e.g. '{rqvae: {epochs: 50}, mqvae: {lr: 0.001}}'",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override every tokenizer's epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None, help="default: $GENREC_BENCH_CACHE or ~/.cache/genrec-bench")
    args = parser.parse_args()
    if args.cache_dir is None:
        from genrec_bench.cli import default_cache_dir

        args.cache_dir = str(default_cache_dir())

    from tabulate import tabulate

    from genrec_bench.features import item_features

    start = time.perf_counter()
    data = _data(args)
    x = item_features(args.features, data, _context(args))
    print(
        f"data: {args.path} ({data.n_items} items, {data.n_users} users); features {args.features!r} "
        f"{list(x.shape)} in {time.perf_counter() - start:.1f} s (cached after the first run); "
        f"parent peak RSS {_rss_mb():.0f} MB"
    )
    rows = []
    spawn = mp.get_context("spawn")
    for name in args.tokenizers.split(","):
        params = dict((args.params or {}).get(name, {}))
        if args.epochs is not None:
            params["epochs"] = args.epochs
        queue = spawn.Queue()
        worker = spawn.Process(target=_fit_one, args=(args, name, params, queue))
        worker.start()
        while True:
            try:
                row = queue.get(timeout=5)
                break
            except Empty:
                if not worker.is_alive():
                    raise SystemExit(
                        f"{name}: the fit failed (exit code {worker.exitcode}); see the error above"
                    ) from None
        worker.join()
        rows.append(row)
        print(f"  {name}: fitted in {row['fit_s']:.1f} s", flush=True)
    figures = ["L", *COLUMNS, "fit_s", "rss_before_MB", "peak_rss_MB", "peak_gpu_MB"]
    table = [[figure, *(row.get(figure, "") for row in rows)] for figure in figures]
    print(tabulate(table, headers=["figure", *(row["tokenizer"] for row in rows)], floatfmt=".4g"))


if __name__ == "__main__":
    main()
