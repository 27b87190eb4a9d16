"""What a point prediction in a fixed item space can score, by ranking metric (issue 16), on MovieLens-100K (CPU).

    python benchmarks/scripts/item_space_probe.py [--epochs 6] [--samples 16384] [--threads 1]   (0: references only)
        [--space '{"name": "lightgcn", "dim": 64, "epochs": 25, "batch_size": 8192, "lr": 0.01}']

ContRec, DeftRec and DreamRec generate one vector in the item space and rank items by its distance (l2) or inner
product to their vectors. This probe takes the diffusion out: DreamRec's condition path (``DreamRecModel``
without its head: the history's item vectors + learned per-item offsets through ContRec's ``ConditionEncoder``),
then a linear layer, is trained to output the next item's vector directly,

- ``mse``: by mean squared error (the regression a diffusion head's x0 estimate approaches),
- ``softmax``: by full-softmax cross-entropy over inner products with the (fixed) item vectors (how SASRec-like
  models train; an upper reference for this space),

and after every epoch the validation NDCG@10 of all users is printed for both rankings, l2 and inner product.
Reference rows: popularity, x = the mean of the history's item vectors, of its last k, or weighted by recency
(``g ** r``, r = 0 for the most recent item); and how far an item's vector norm
follows its popularity (what the inner product keeps and the l2 distance around a central point discards).
Only validation items are read.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from contrec_learning_curve import default_cache_dir, ndcg_at_10
from genrec_bench_plugins.deftrec.model import rank_from_end
from genrec_bench_plugins.dreamrec.generator import DreamRecModel
from scipy.stats import spearmanr

from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench.features import item_features
from genrec_bench.ranking import mask_excluded

SPACE = {"name": "lightgcn", "dim": 64, "epochs": 25, "batch_size": 8192, "lr": 0.01}  # the main job's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=json.dumps(SPACE), help="item space spec (JSON)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=16384, help="training pairs per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = default_cache_dir()
    data = SplitData(load_dataset("ml-100k", {}, cache), max_history=20)
    ctx = RunContext(torch.device("cpu"), args.seed, cache, Path("."), False, logging.getLogger("probe"))
    space = item_features(json.loads(args.space), data, ctx, where="--space").float()
    space = space / float(space.std())  # unit scale, as the generators diffuse in (ranking unchanged)
    users = np.arange(data.n_users)
    batch = next(data.batches("valid", data.n_users, users=users))

    def masked(scores: torch.Tensor) -> torch.Tensor:
        return mask_excluded(scores.clone(), batch.exclude)

    def both(x: torch.Tensor) -> tuple[float, float]:
        l2 = ndcg_at_10(masked(-torch.cdist(x, space)).topk(10).indices, batch.targets)
        inner = ndcg_at_10(masked(x @ space.T).topk(10).indices, batch.targets)
        return l2, inner

    counts = torch.as_tensor(data.train_item_counts(), dtype=torch.float32)
    rho = spearmanr(space.norm(dim=1).numpy(), counts.numpy())[0]
    print(f"Spearman correlation of an item's vector norm with its training count: {rho:.2f}")
    pop = ndcg_at_10(masked(counts.expand(len(users), -1)).topk(10).indices, batch.targets)
    mask = batch.mask.unsqueeze(-1).float()
    mean_hist = (space[batch.items.clamp(min=0)] * mask).sum(1) / mask.sum(1).clamp(min=1)
    l2, inner = both(mean_hist)
    print(f"{len(users)} validation users: popularity NDCG@10 {pop:.4f}; x = mean of history: l2 {l2:.4f}, ", end="")
    print(f"inner {inner:.4f}")
    # recency references (issue 16, DeftRec's pooling): r counts a history item's position from the most recent
    valid = batch.mask.float()
    recency = rank_from_end(batch.mask).float()
    for name, weights in [
        *((f"mean of the last {k}", (recency < k).float()) for k in (1, 3, 5, 10)),
        *((f"{g} ** r-weighted mean", g**recency) for g in (0.5, 0.7, 0.9)),
    ]:
        weights = weights * valid
        x = (space[batch.items.clamp(min=0)] * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)
        l2, inner = both(x)
        print(f"x = {name} of the history's vectors: l2 {l2:.4f}, inner {inner:.4f}")
    hist, targets, _ = data.train_pairs(20)
    print("| loss | epoch | samples seen | NDCG@10 by l2 | NDCG@10 by inner product | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in ("mse", "softmax"):
        torch.manual_seed(args.seed)
        probe = PointPredictor(space)
        optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-3)
        start = time.perf_counter()
        rng = torch.Generator().manual_seed(args.seed)
        for epoch in range(1, args.epochs + 1):
            probe.train()
            order = torch.randperm(len(targets), generator=rng)[: args.samples]
            for lo in range(0, len(order), 256):
                idx = order[lo : lo + 256]
                y = probe(hist[idx])
                if mode == "mse":
                    loss = ((y - space[targets[idx]]) ** 2).mean()
                else:
                    loss = torch.nn.functional.cross_entropy(y @ space.T, targets[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            probe.eval()
            with torch.no_grad():
                l2, inner = both(probe(batch.items))
            wall = time.perf_counter() - start
            print(f"| {mode} | {epoch} | {epoch * len(order)} | {l2:.4f} | {inner:.4f} | {wall:.0f} |", flush=True)


class PointPredictor(torch.nn.Module):
    """DreamRec's condition path without the diffusion (``DreamRecModel`` with no head: the history's item vectors
    + learned per-item offsets -> ContRec's ``ConditionEncoder``), then a linear layer onto the item space."""

    def __init__(self, space: torch.Tensor, hidden: int = 64, max_len: int = 20):
        super().__init__()
        self.condition = DreamRecModel(space, hidden, max_len, dropout=0.1, item_embedding=True, diffusion=None)
        self.out = torch.nn.Linear(hidden, space.shape[1])

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.out(self.condition.condition(history))


if __name__ == "__main__":
    main()
