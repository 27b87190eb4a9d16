"""How much of ContRec's batches is padding on a data set, and what packing and length sorting save (no model run).

    python benchmarks/scripts/contrec_padding.py --data ../shared/data/beauty     # SmolLM2's tokenizer, cached

Prompts as the GPU profile builds them (20-item cap, 50-character titles, answers cut to 40 characters):
prompt-length statistics, the share of real tokens in random padded training batches vs packed rows
(``packing.py``), and in test chunks unsorted, sorted by length, and sorted with bucketed widths
(``fast_decode.py``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from genrec_bench_plugins.contrec.backbone import load_backbone
from genrec_bench_plugins.contrec.fast_decode import bucketed
from genrec_bench_plugins.contrec.packing import pack_plan
from genrec_bench_plugins.contrec.prompt import PromptBuilder

from genrec_bench.cli import default_cache_dir
from genrec_bench.data import SplitData, load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/beauty")
    parser.add_argument("--backbone", default="smollm2")
    parser.add_argument("--prompt-items", type=int, default=20)
    parser.add_argument("--title-chars", type=int, default=50)
    parser.add_argument("--target-chars", type=int, default=40)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--eval-batch", type=int, default=512)
    parser.add_argument("--bucket", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, tok = load_backbone(args.backbone, default_cache_dir())
    data = SplitData(
        load_dataset("data", {"loader": "contrec", "path": args.data}, default_cache_dir()),
        max_history=args.prompt_items,
    )
    prompts = PromptBuilder(
        tok,
        data.item_text,
        2,
        title_chars=args.title_chars,
        target_chars=args.target_chars,
        target_template="The user might lean towards {text}",
    )
    hist, targets, _ = data.train_pairs(args.prompt_items)
    rng = np.random.default_rng(0)
    padded = packed = real = 0
    for _ in range(args.batches):
        idx = rng.choice(targets.numel(), args.train_batch, replace=False)
        lengths = [len(prompts._row(hist[i].numpy(), None, int(targets[i]))[0]) for i in idx]
        width = max(lengths)
        padded, real = padded + len(lengths) * width, real + sum(lengths)
        packed += len(pack_plan(lengths, width)) * width
    test = np.array([len(prompts._row(h, None, None)[0]) for h in data.histories("test", np.arange(data.n_users))])

    def share(order: np.ndarray, bucket: int = 1) -> float:
        chunks = [order[lo : lo + args.eval_batch] for lo in range(0, len(order), args.eval_batch)]  # as generate()
        total = sum(len(c) * bucketed(int(test[c].max()), bucket) for c in chunks)
        return float(test.sum() / total)

    answers = [len(a) for a in prompts.answers]
    order = np.argsort(test, kind="stable")
    print(f"{data.n_users} users, {data.n_items} items, {targets.numel()} training pairs")
    print(
        f"test prompts: mean {test.mean():.1f} tokens, median {np.median(test):.0f}, p90 "
        f"{np.percentile(test, 90):.0f}, max {test.max()}; answers mean {np.mean(answers):.1f}, max {max(answers)}"
    )
    print(
        f"training batches of {args.train_batch} ({args.batches} random): real tokens {real / padded:.3f} of the "
        f"padded batch, {real / packed:.3f} of the packed rows ({packed / padded:.3f} of the padded size)"
    )
    print(
        f"test chunks of {args.eval_batch}: real tokens {share(np.arange(len(test))):.3f} unsorted, "
        f"{share(order):.3f} sorted by length, {share(order, args.bucket):.3f} sorted with {args.bucket}-token "
        f"buckets"
    )


if __name__ == "__main__":
    main()
