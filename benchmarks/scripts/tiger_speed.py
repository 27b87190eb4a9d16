"""TIGER throughput: training sequences/s and constrained beam-search users/s (beam 20, top-10).

    python benchmarks/scripts/tiger_speed.py --dataset beauty=contrec:../shared/data/beauty --profile cpu

Uses random unique semantic ids (3 x 256 + nothing else), so the figures measure the generator and the
retriever, not a tokenizer. Prints one line per device (the GPU with bf16 autocast when one is present).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genrec_bench.cli import _dataset_override, default_cache_dir
from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench_plugins.tiger import BeamSearch, RandomIds, Tiger

PROFILES = {
    "cpu": dict(backbone="compact", d_model=64, d_ff=256, heads=4, encoder_layers=2, decoder_layers=2),
    "cpu-t5": dict(backbone="t5", d_model=64, d_kv=16, d_ff=256, heads=4, encoder_layers=2, decoder_layers=2),
    "paper": dict(backbone="t5", d_model=128, d_kv=64, d_ff=1024, heads=6, encoder_layers=4, decoder_layers=4),
}


def measure(data: SplitData, device: torch.device, profile: str, train_steps: int, users: int) -> dict:
    ctx = RunContext(device, 0, default_cache_dir(), Path("."), show_progress=False)
    tokenizer = RandomIds(levels=3, codebook_size=256)
    tokenizer.fit(data, ctx)
    tiger = Tiger(**PROFILES[profile], epochs=1, max_steps=train_steps, batch_size=256, patience=1)
    start = time.perf_counter()
    tiger.fit(data, tokenizer, lambda: {"ndcg@10": 0.0}, ctx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - start
    sequences = min(train_steps * 256, data.train_pairs()[1].numel())
    retriever = BeamSearch(beam_size=20)
    retriever.fit(data, tokenizer, ctx)
    batch = next(data.batches("test", users, device=device))
    start = time.perf_counter()
    with torch.inference_mode():
        retriever.rank(tiger.generate(batch, ctx), 10, batch.exclude)
    if device.type == "cuda":
        torch.cuda.synchronize()
    beam_seconds = time.perf_counter() - start
    return {"device": str(device), "profile": profile, "train_seq_per_s": sequences / train_seconds,
            "beam_users_per_s": len(batch) / beam_seconds, "parameters": tiger.health()["parameters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", help="a loader name or NAME=LOADER:PATH")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--users", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, spec = _dataset_override(args.dataset)
    data = SplitData(load_dataset(name, spec, default_cache_dir()), max_history=20)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"data set {name}: {data.n_users} users, {data.n_items} items; profile {args.profile}; "
          f"{args.threads} CPU threads")
    for device in devices:
        r = measure(data, device, args.profile, args.train_steps, args.users)
        print(f"{r['device']:>5}  params {r['parameters'] / 1e6:.2f}M  train {r['train_seq_per_s']:8.0f} seq/s  "
              f"beam-20 top-10 {r['beam_users_per_s']:7.1f} users/s")


if __name__ == "__main__":
    main()
