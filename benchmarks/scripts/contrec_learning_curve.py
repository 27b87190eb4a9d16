"""Learning curves of ContRec, DeftRec and DreamRec on MovieLens-100K (CPU): what more training buys.

    python benchmarks/scripts/contrec_learning_curve.py --method contrec [--epochs 6] [--samples 320]
        [--set '{"condition": "hidden"}'] [--users 300] [--bench benchmarks/contrec_vs_tiger.yaml]

Takes the method's tokenizer and generator from the benchmark file (the main job's CPU profile by default),
updates the generator with ``--set`` (JSON), and trains it for ``--epochs`` epochs of ``--samples`` training
pairs (one learning-rate schedule over the whole run), validating after every epoch on a fixed random subset of
``--users`` validation users with the ``latent`` retriever and the method's retriever metric (``--metric`` to
override; hybrid ranks as latent when no text matches).

Per epoch it prints the training samples seen so far, the validation NDCG@10, the epoch's mean loss terms (LM,
diffusion, dispersive or negative) and diagnostics of the generated vector x (item space, unscaled):

- ``d(x,target)`` / ``d(x,mean)``: mean distance of x to the user's validation item and to the item-space mean
  (for scale: the target's own distance to the mean is printed once as ``d(target,mean)``);
- ``spread``: the across-user standard deviation of x, per dimension, relative to the item vectors' own;
- ``same top-10``: the share of users whose top-10 list is the single most common list.

Reference rows on the same users: popularity, and x = the mean of the history's item vectors (what a condition
that only averages the history could give). Only validation users are read; never the test items.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml
from genrec_bench_plugins.contrec.generator import ContRecOutput
from genrec_bench_plugins.contrec.retrievers import Latent

from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench.environment import seed_everything
from genrec_bench.plugins import registry
from genrec_bench.ranking import mask_excluded


def default_cache_dir() -> Path:
    """The CLI's cache folder ($GENREC_BENCH_CACHE, else $XDG_CACHE_HOME or ~/.cache, /genrec-bench)."""
    if os.environ.get("GENREC_BENCH_CACHE"):
        return Path(os.environ["GENREC_BENCH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "genrec-bench"


def ndcg_at_10(items: torch.Tensor, targets: torch.Tensor) -> float:
    match = items[:, :10] == targets[:, None]
    return float((match.any(1).float() / torch.log2(match.float().argmax(1).float() + 2)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="contrec", help="a method of the benchmark file")
    parser.add_argument("--bench", default="benchmarks/contrec_vs_tiger.yaml")
    parser.add_argument("--set", default="{}", help="JSON overrides of the generator settings")
    parser.add_argument("--tokenizer-set", default="{}", help="JSON overrides of the tokenizer settings")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=None, help="training pairs per epoch (default: the file's)")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--metric",
        choices=["l2", "inner", "cos"],
        default=None,
        help="latent ranking metric (default: the method's retriever's, else l2)",
    )
    parser.add_argument(
        "--guidance",
        default="",
        help="also report valid NDCG@10 sampled at these guidance "
        "weights, comma-separated (a diagnostic; the curve uses the configured weight)",
    )
    parser.add_argument(
        "--sample-steps",
        default="",
        help="also report valid NDCG@10 sampled over these numbers of respaced (DDIM) steps, comma-separated "
        "(a diagnostic; the curve uses the configured number)",
    )
    parser.add_argument(
        "--temperatures",
        default="",
        help="sample the --sample-steps diagnostics at these sampling temperatures too, comma-separated "
        "(default: the configured one)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bench = yaml.safe_load(Path(args.bench).read_text())
    method = bench["methods"][args.method]
    cache = default_cache_dir()
    data = SplitData(load_dataset("ml-100k", {}, cache), max_history=bench.get("protocol", {}).get("max_history", 20))
    ctx = RunContext(torch.device("cpu"), args.seed, cache, Path("."), False, logging.getLogger("curve"))
    seed_everything(args.seed)
    reg = registry()
    tok_spec = dict(method["tokenizer"]) if isinstance(method["tokenizer"], dict) else {"name": method["tokenizer"]}
    tok_spec.update(json.loads(args.tokenizer_set))
    retriever = method.get("retriever", {})
    metric = args.metric or (retriever.get("metric", "l2") if isinstance(retriever, dict) else "l2")
    gen_spec = {**method["generator"], **json.loads(args.set)}
    gen_spec.update(epochs=args.epochs, eval_every=1, patience=10**6)
    if args.samples:
        gen_spec["samples_per_epoch"] = args.samples
    start = time.perf_counter()
    tokenizer = reg.get("tokenizers", tok_spec.pop("name"))(**tok_spec)
    tokenizer.fit(data, ctx)
    print(f"method {args.method}: generator {json.dumps(gen_spec)}, ranking by {metric}", flush=True)
    generator = reg.get("generators", gen_spec.pop("name"))(**gen_spec)
    users = np.sort(np.random.default_rng(args.seed).choice(data.n_users, args.users, replace=False))
    batch = next(data.batches("valid", args.users, users=users))
    rows: list[dict] = []

    def space() -> torch.Tensor:
        return generator.space.float() * generator.scale  # the item vectors, unscaled

    latent = Latent(metric)  # the retriever the benchmark cells rank with (the generator's item space)
    latent.fit(data, tokenizer, ctx)

    def masked(scores: torch.Tensor) -> torch.Tensor:
        """Scores with each user's history items set to -inf (the protocol's exclusion)."""
        return mask_excluded(scores.clone(), batch.exclude)

    def retriever_rank(x: torch.Tensor) -> torch.Tensor:
        """Top-10 of the latent retriever for vectors ``x`` (l2 distance, inner product or cosine)."""
        outputs = ContRecOutput(x.float(), [""] * len(x), generator.item_space, [])
        return latent.rank(outputs, 10, batch.exclude).items

    def references() -> None:
        e = space()
        counts = torch.as_tensor(data.train_item_counts(), dtype=torch.float32)
        pop = ndcg_at_10(masked(counts.expand(len(users), -1)).topk(10).indices, batch.targets)
        hist = batch.items.clamp(min=0)
        mask = batch.mask.unsqueeze(-1).float()
        mean_hist = (e[hist] * mask).sum(1) / mask.sum(1).clamp(min=1)
        hist_ndcg = ndcg_at_10(retriever_rank(mean_hist), batch.targets)
        tgt = e[batch.targets]
        print(
            f"reference on {len(users)} validation users: popularity NDCG@10 {pop:.4f}; x = mean of history "
            f"vectors {hist_ndcg:.4f}; d(target,mean) {float((tgt - e.mean(0)).norm(dim=1).mean()):.3f}",
            flush=True,
        )

    def validate() -> dict:
        if not rows:
            references()
        with torch.no_grad():
            out = generator.generate(batch, ctx)
            items = retriever_rank(out.vectors)
            ndcg = ndcg_at_10(items, batch.targets)
            e, x = space(), out.vectors.float()
            mean = e.mean(0)
            lists = Counter(tuple(r) for r in items.tolist())
            rows.append(
                {
                    "ndcg@10": ndcg,
                    "d_target": float((x - e[batch.targets]).norm(dim=1).mean()),
                    "d_mean": float((x - mean).norm(dim=1).mean()),
                    "spread": float(x.std(0).mean() / e.std(0).mean()),
                    "same_top10": lists.most_common(1)[0][1] / len(users),
                    "seconds": time.perf_counter() - start,
                }
            )
        diffusion = generator.head.diffusion if hasattr(generator, "head") else generator.model.diffusion
        for w in [float(v) for v in args.guidance.split(",") if v.strip()]:
            kept, diffusion.guidance = diffusion.guidance, w
            with torch.no_grad():
                rows[-1][f"ndcg@10 w={w:g}"] = ndcg_at_10(
                    retriever_rank(generator.generate(batch, ctx).vectors), batch.targets
                )
            diffusion.guidance = kept
        temperatures = [float(v) for v in args.temperatures.split(",") if v.strip()] or [diffusion.temperature]
        for n in [int(v) for v in args.sample_steps.split(",") if v.strip()]:
            for tau in temperatures:
                kept = diffusion.sample_steps, diffusion.temperature
                diffusion.sample_steps, diffusion.temperature = min(n, diffusion.steps), tau
                name = f"ndcg@10 steps={n}" + (f" tau={tau:g}" if args.temperatures else "")
                with torch.no_grad():
                    rows[-1][name] = ndcg_at_10(retriever_rank(generator.generate(batch, ctx).vectors), batch.targets)
                diffusion.sample_steps, diffusion.temperature = kept
        print(f"  validation {len(rows)}: " + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1].items()), flush=True)
        return {"ndcg@10": ndcg}

    generator.fit(data, tokenizer, validate, ctx)
    per_epoch = gen_spec.get("samples_per_epoch") or len(data.train_pairs(generator.prompt_items)[1])
    loss_names = [k for k in generator.history[0] if k not in ("epoch", "valid", "loss", "samples", "steps")]
    header = (
        ["epoch", "samples seen", "valid NDCG@10"]
        + [f"{k} loss" for k in loss_names]
        + ["d(x,target)", "d(x,mean)", "spread", "same top-10", "wall s"]
    )
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for record, row in zip(generator.history, rows, strict=False):
        cells = [str(record["epoch"]), str(record["epoch"] * per_epoch), f"{row['ndcg@10']:.4f}"]
        cells += [f"{record[k]:.3f}" for k in loss_names]
        cells += [
            f"{row['d_target']:.3f}",
            f"{row['d_mean']:.3f}",
            f"{row['spread']:.3f}",
            f"{row['same_top10']:.2f}",
            f"{row['seconds']:.0f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
