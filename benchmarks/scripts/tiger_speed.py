"""TIGER throughput, side by side on one machine: a plain transformers T5 loop and genrec-bench's path.

    python benchmarks/scripts/tiger_speed.py --tiny                                  # CPU, seconds
    python benchmarks/scripts/tiger_speed.py --dataset beauty=contrec:../shared/data/beauty --profile paper \\
        --batch-sizes 256,1024 --levers --json speed.json                            # the GPU run

For each path: training sequences/s (teacher-forced steps after warm-up steps, timed between epoch ends with the
device synchronised) and beam users/s (beam 20, top-10, history excluded, test users).

- ``plain-t5``: what a reproduction writes with transformers: batches indexed and built on the host and copied
  every step, ``loss.item()`` every step, AdamW, bf16 autocast on CUDA; beam search with ``model.generate``
  (``num_beams=20``) constrained to real ids by ``prefix_allowed_tokens_fn`` over a Python trie, history items
  dropped from the 20 returned ids afterwards.
- ``genrec-bench-<backbone>``: the ``tiger`` generator with its speed levers on (resident data, no host sync per
  step, fused AdamW on CUDA, bf16 on CUDA) and the vectorised trie-constrained ``beam`` retriever (users batched).
- ``--levers``: genrec-bench T5 at the largest batch with the levers switched on one after another (and, on
  CUDA, torch.compile, then CUDA graphs through compile's reduce-overhead mode), so each lever is measured rather
  than assumed; ``--levers-only`` skips the side-by-side part.

Same model size on both paths (the ``--profile``); random unique semantic ids (3 x 256), random weights: the
figures measure the generator and the retriever, not a tokenizer or a trained model.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from genrec_bench_plugins.tiger import BeamSearch, RandomIds, Tiger
from genrec_bench_plugins.tiger.model import TokenLayout, build_t5, encoder_inputs

from genrec_bench.cli import _dataset_override, default_cache_dir
from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset

PROFILES = {
    "tiny": dict(d_model=32, d_kv=8, d_ff=64, heads=2, encoder_layers=1, decoder_layers=1),
    "cpu": dict(d_model=64, d_kv=16, d_ff=256, heads=4, encoder_layers=2, decoder_layers=2),
    "paper": dict(d_model=128, d_kv=64, d_ff=1024, heads=6, encoder_layers=4, decoder_layers=4),
}
FAST = dict(resident_data=True, host_sync=False, fused_adamw=True, bf16=True)
LEVERS = [
    ("plain loop", {}),
    ("+ resident data", {"resident_data": True}),
    ("+ no host sync", {"host_sync": False}),
    ("+ fused AdamW", {"fused_adamw": True}),
    ("+ torch.compile", {"compile": True}),
    ("+ CUDA graphs (compile reduce-overhead)", {"compile": True, "compile_mode": "reduce-overhead"}),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Epoch-end timestamps (device synchronised); throughput over the epochs after the first (warm-up)."""

    def __init__(self, device: torch.device):
        self.device, self.stamps = device, [time.perf_counter()]

    def __call__(self) -> dict:
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return {"ndcg@10": -float(len(self.stamps))}  # never improves after the first: no weight copies

    def per_second(self, items_per_epoch: int) -> float:
        timed = self.stamps[2:]
        if len(timed) < 2:
            return items_per_epoch / max(1e-9, self.stamps[-1] - self.stamps[0])
        return items_per_epoch * (len(timed) - 1) / (timed[-1] - timed[0])


# --- the plain transformers path --------------------------------------------------------------------------
def plain_train(
    data: SplitData,
    codes: torch.Tensor,
    layout: TokenLayout,
    arch: dict,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(0)
    model = build_t5(layout, **arch, dropout=0.1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    histories, targets, users = data.train_pairs(20)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(targets), generator=g)
    model.train()
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        rows = order[(step * batch) % len(order) :][:batch]
        if len(rows) < batch:
            rows = order[:batch]
        input_ids, mask = encoder_inputs(layout, codes, histories[rows], users[rows])
        labels = layout.code_tokens(codes[targets[rows]])
        input_ids, mask, labels = input_ids.to(device), mask.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
    sync(device)
    return model, steps * batch / (time.perf_counter() - start)


def plain_beam(
    model,
    data: SplitData,
    codes: torch.Tensor,
    layout: TokenLayout,
    device: torch.device,
    users: int,
    chunk: int,
    beam: int = 20,
    k: int = 10,
) -> float:
    tokens = layout.code_tokens(codes).tolist()
    trie: dict[tuple[int, ...], list[int]] = {}
    for row in tokens:
        for t in range(len(row)):
            trie.setdefault(tuple(row[:t]), []).append(row[t])
    trie = {key: sorted(set(v)) for key, v in trie.items()}
    item_of = {tuple(row): i for i, row in enumerate(tokens)}
    levels = codes.shape[1]
    dtype = torch.bfloat16 if device.type == "cuda" else None
    model.eval()
    sync(device)
    start = time.perf_counter()
    done = 0
    for batch in data.batches("test", chunk, users=torch.arange(min(users, data.n_users)).numpy()):
        input_ids, mask = encoder_inputs(layout, codes, batch.items, batch.users)
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                num_beams=beam,
                num_return_sequences=beam,
                max_new_tokens=levels,
                do_sample=False,
                prefix_allowed_tokens_fn=lambda _, ids: trie.get(tuple(ids.tolist()[1:]), [1]),
                early_stopping=True,
            )
        out = out[:, 1 : 1 + levels].cpu().view(len(batch.users), beam, -1).tolist()
        for u, hyps in enumerate(out):
            seen = set(batch.exclude[u].tolist()) if batch.exclude is not None else set()
            ranked = [item_of.get(tuple(h), -1) for h in hyps]
            _ = [i for i in ranked if i >= 0 and i not in seen][:k]
        done += len(batch.users)
    sync(device)
    return done / (time.perf_counter() - start)


# --- genrec-bench's path ----------------------------------------------------------------------------------
def genrec_train(
    data: SplitData,
    tokenizer,
    arch: dict,
    backbone: str,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    levers: dict,
) -> tuple[Tiger, float]:
    ctx = RunContext(device, 0, default_cache_dir(), Path("."), show_progress=False)
    epochs = 1 + max(2, math.ceil(steps / max(1, warmup)))
    per_epoch = max(1, steps // (epochs - 1))
    torch.manual_seed(0)
    tiger = Tiger(
        backbone=backbone,
        **arch,
        dropout=0.1,
        epochs=epochs,
        samples_per_epoch=per_epoch * batch,
        batch_size=batch,
        lr=1e-3,
        warmup_steps=100,
        patience=epochs + 1,
        **levers,
    )
    clock = Clock(device)
    tiger.fit(data, tokenizer, clock, ctx)
    return tiger, clock.per_second(per_epoch * batch)


def genrec_beam(tiger: Tiger, data: SplitData, tokenizer, device: torch.device, users: int, chunk: int) -> float:
    ctx = RunContext(device, 0, default_cache_dir(), Path("."), show_progress=False)
    retriever = BeamSearch(beam_size=20, users_per_chunk=chunk)
    retriever.fit(data, tokenizer, ctx)
    ids = torch.arange(min(users, data.n_users)).numpy()
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in data.batches("test", chunk, users=ids, device=device):
            retriever.rank(tiger.generate(batch, ctx), 10, batch.exclude)
    sync(device)
    return len(ids) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", help="a loader name or NAME=LOADER:PATH")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="paper")
    parser.add_argument("--batch-sizes", default="256,1024")
    parser.add_argument("--train-steps", type=int, default=60, help="timed steps per path (after warm-up)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--users", type=int, default=2048, help="test users ranked per beam measurement")
    parser.add_argument("--plain-users", type=int, default=512, help="test users for the plain generate beam")
    parser.add_argument("--chunk", type=int, default=1024, help="users per beam batch (genrec-bench)")
    parser.add_argument("--backbones", default="t5,compact")
    parser.add_argument("--levers", action="store_true", help="also measure the levers one after another")
    parser.add_argument("--levers-only", action="store_true", help="only the levers (implies --levers)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument(
        "--tiny", action="store_true", help="CPU in seconds: tiny profile, ml-100k, batch 64, few steps and users"
    )
    args = parser.parse_args()
    if args.tiny:
        args.profile, args.batch_sizes, args.train_steps, args.warmup_steps = "tiny", "64", 6, 2
        args.users, args.plain_users, args.chunk, args.device = 64, 16, 64, "cpu"
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    name, spec = _dataset_override(args.dataset)
    data = SplitData(load_dataset(name, spec, default_cache_dir()), max_history=20)
    ctx = RunContext(device, 0, default_cache_dir(), Path("."), show_progress=False)
    tokenizer = RandomIds(levels=3, codebook_size=256)
    tokenizer.fit(data, ctx)
    codes = tokenizer.codes
    arch = PROFILES[args.profile]
    layout = TokenLayout((256, 256, 256), 2000)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"data set {name}: {data.n_users} users, {data.n_items} items, {data.train_pairs()[1].numel()} training "
        f"pairs; profile {args.profile} {arch}; {device} ({where}); beam 20, top-10; torch {torch.__version__}",
        flush=True,
    )
    rows: list[dict] = []

    def report(path: str, batch: int, train: float, beam: float | None, params: float) -> None:
        rows.append(
            {
                "path": path,
                "batch": batch,
                "train_seq_per_s": train,
                "beam_users_per_s": beam,
                "parameters": params,
                "device": str(device),
                "profile": args.profile,
            }
        )
        shown = "" if beam is None else f"  beam-20 top-10 {beam:9.1f} users/s"
        print(f"{path:<28} batch {batch:>5}  params {params / 1e6:5.2f}M  train {train:9.0f} seq/s{shown}", flush=True)
        if args.json:  # after every line, so that a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(rows, indent=1))

    for batch in [] if args.levers_only else batches:
        model, train = plain_train(data, codes, layout, arch, device, batch, args.train_steps, args.warmup_steps)
        beam = plain_beam(model, data, codes, layout, device, args.plain_users, min(args.chunk, 256))
        report("plain-t5 (transformers)", batch, train, beam, sum(p.numel() for p in model.parameters()))
        del model
        for backbone in args.backbones.split(","):
            tiger, train = genrec_train(
                data, tokenizer, arch, backbone, device, batch, args.train_steps, args.warmup_steps, FAST
            )
            beam = genrec_beam(tiger, data, tokenizer, device, args.users, args.chunk)
            report(f"genrec-bench-{backbone}", batch, train, beam, tiger.health()["parameters"])
    if args.levers or args.levers_only:
        batch, levers = max(batches), {}
        for label, lever in LEVERS:
            if "compile" in lever and device.type != "cuda":
                continue
            levers.update(lever)
            try:
                tiger, train = genrec_train(
                    data, tokenizer, arch, "t5", device, batch, args.train_steps, args.warmup_steps, levers
                )
            except Exception as exc:  # a lever that fails here (e.g. compile) is reported, not fatal
                print(
                    f"levers t5: {label}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", flush=True
                )
                levers = {k: v for k, v in levers.items() if k not in lever}
                continue
            report(f"levers t5: {label}", batch, train, None, tiger.health()["parameters"])


if __name__ == "__main__":
    main()
