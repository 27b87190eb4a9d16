"""How much of the LLM backbone the CPU profile can drop: LM loss of SmolLM2 cut to a subset of its layers.

    python benchmarks/scripts/backbone_truncation.py [--pairs 64] [--threads 2]

Builds plain-text prompts from MovieLens-100K training pairs ("The user watched <10 titles>. The user might lean
towards <next title>") and prints the mean next-token loss (nats per token) of the untouched backbone, of its first
k layers (what ContRec's ``layers: k`` keeps) and of a few other subsets. No training: this is the starting point
that LoRA fine-tuning has to recover from.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from genrec_bench_plugins.contrec.backbone import decoder_layers, load_backbone
from torch import nn

from genrec_bench.cli import default_cache_dir
from genrec_bench.data import SplitData, load_dataset


def prompts(data: SplitData, n: int, seed: int = 0) -> list[str]:
    hist, targets, _ = data.train_pairs(10)
    rows = np.random.default_rng(seed).choice(len(targets), n, replace=False)
    texts = []
    for r in rows:
        watched = ", ".join(data.item_text[i] for i in hist[r].tolist() if i >= 0)
        texts.append(f"The user watched {watched}. The user might lean towards {data.item_text[int(targets[r])]}")
    return texts


def keep_layers(model: nn.Module, keep: list[int]) -> nn.Module:
    """A copy of ``model`` with only the decoder layers ``keep`` (renumbered for the KV cache)."""
    model = copy.deepcopy(model)
    layers = list(decoder_layers(model))
    chosen = [layers[i] for i in keep]
    for index, layer in enumerate(chosen):
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = index
    model.model.layers = nn.ModuleList(chosen)
    model.config.num_hidden_layers = len(chosen)
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    return model


@torch.no_grad()
def lm_loss(model: nn.Module, batch: dict) -> float:
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return float(model(**batch, labels=labels).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = SplitData(load_dataset("ml-100k", {}, default_cache_dir()), max_history=20)
    model, tokenizer = load_backbone("smollm2", default_cache_dir(), None, 0)
    model.eval()
    batch = dict(tokenizer(prompts(data, args.pairs), return_tensors="pt", padding=True))
    n = len(decoder_layers(model))
    subsets = {f"all {n}": list(range(n))}
    subsets.update({f"first {k}": list(range(k)) for k in (4, 8, 12, 20, 26)})
    subsets.update(
        {
            "first 2 + last 2": [0, 1, n - 2, n - 1],
            "first 3 + last 3": [0, 1, 2, n - 3, n - 2, n - 1],
            "first 8 + last 4": list(range(8)) + list(range(n - 4, n)),
            "every other": list(range(0, n, 2)),
        }
    )
    print(
        f"{args.pairs} ML-100K prompts, {batch['input_ids'].shape[1]} tokens padded; uniform over the "
        f"vocabulary would be {np.log(len(tokenizer)):.2f} nats"
    )
    for name, keep in subsets.items():
        start = time.perf_counter()
        loss = lm_loss(keep_layers(model, keep), batch)
        print(
            f"{name:>18}  {len(keep):2d} layers  LM loss {loss:6.2f} nats/token  ({time.perf_counter() - start:.1f} s)"
        )


if __name__ == "__main__":
    main()
