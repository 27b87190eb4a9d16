"""ContRec generation and training speed, side by side: the plain decoding loop, the static-cache decoder
(eager and CUDA-graph), transformers' ``generate``, the batched diffusion sampler; training tokens/s for LoRA vs
the whole backbone, padded vs packed rows, for-each vs fused AdamW.

    python benchmarks/scripts/contrec_speed.py --tiny --out speed.json          # CPU, random tiny Llama, seconds
    python benchmarks/scripts/contrec_speed.py --backbone smollm2 --out speed.json   # one GPU (bf16 autocast)

Prompts are synthetic: lengths drawn around ``--prompt-len`` (left padded per batch, users sorted by length),
with two continuous-token slots every 17 tokens as ContRec's item blocks; no end-of-sequence, so every row
decodes ``--new-tokens`` tokens. Every number in the JSON is a measurement of this run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from genrec_bench_plugins.contrec.backbone import load_backbone
from genrec_bench_plugins.contrec.diffusion import Denoiser, GaussianDiffusion
from genrec_bench_plugins.contrec.fast_decode import StaticDecoder, bucketed
from genrec_bench_plugins.contrec.model import DiffusionHead, embed_prompt, greedy_generate, lm_and_condition
from genrec_bench_plugins.contrec.packing import packing_ratio
from genrec_bench_plugins.contrec.prompt import PromptBatch
from torch import nn

from genrec_bench.cli import default_cache_dir

TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prompts(n: int, length: int, vocab: int, pad: int, answer: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    """``n`` synthetic rows: (ids, slots) of lengths around ``length``; the last ``answer`` tokens are the answer."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = max(answer + 4, int(length * 0.6)), int(length * 1.4)
    rows = []
    for _ in range(n):
        m = int(torch.randint(lo, hi + 1, (1,), generator=g))
        ids = torch.randint(0, vocab, (m,), generator=g)
        slots = torch.full((m,), -1)
        for start in range(17, m - answer - 2, 17):
            slots[start : start + 2] = torch.randint(0, 1000, (2,), generator=g)
            ids[start : start + 2] = pad
        rows.append((ids, slots))
    return rows


def batch(
    rows: list[tuple[torch.Tensor, ...]], pad: int, answer: int, device: torch.device, bucket: int = 1
) -> PromptBatch:
    width = bucketed(max(len(r[0]) for r in rows), bucket)
    b = len(rows)
    ids = torch.full((b, width), pad)
    slots = torch.full((b, width), -1)
    mask = torch.zeros(b, width, dtype=torch.long)
    ans = torch.zeros(b, width, dtype=torch.bool)
    for i, (r_ids, r_slots) in enumerate(rows):
        ids[i, width - len(r_ids) :], slots[i, width - len(r_ids) :] = r_ids, r_slots
        mask[i, width - len(r_ids) :] = 1
        if answer:
            ans[i, width - answer :] = True
    return PromptBatch(ids, mask, slots, ans).to(device)


class Source(nn.Module):
    """Stands in for ContRec's token projector: a table of continuous tokens in the embedding space."""

    def __init__(self, hidden: int, std: float):
        super().__init__()
        self.table = nn.Embedding(1000, hidden)
        nn.init.normal_(self.table.weight, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table(idx)


def timed(fn, device: torch.device) -> tuple[Any, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def decode_section(lm, source, rows, args, device, dtype) -> dict[str, Any]:
    """Users/s for each decoder over the same prompts (users sorted by length, chunks of ``--batch``)."""
    rows = sorted(rows, key=lambda r: len(r[0]))
    chunks = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    n_users = len(rows)
    ctx = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731
    out: dict[str, Any] = {}
    results: dict[str, list[torch.Tensor]] = {}

    def run(name: str, fn, warm: bool = True) -> None:
        try:
            measure(name, fn, warm)
        except Exception as exc:  # noqa: BLE001  (reported, not fatal: one mode failing keeps the others)
            out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            results.pop(name, None)

    def measure(name: str, fn, warm: bool) -> None:
        with torch.no_grad(), ctx():
            if warm:  # first chunk once untimed: allocations, cuBLAS plans, graph capture
                _, first = timed(lambda: fn(chunks[0]), device)
                out.setdefault(name, {})["first_chunk_s"] = round(first, 4)
            tokens, seconds = timed(lambda: [fn(c) for c in chunks], device)
        results[name] = tokens
        steps = args.new_tokens * len(chunks)
        out.setdefault(name, {}).update(
            users_per_s=round(n_users / seconds, 2),
            seconds=round(seconds, 4),
            ms_per_step=round(1000 * seconds / steps, 3),
        )

    eos = -1  # never ends: every row decodes --new-tokens tokens
    run(
        "plain", lambda c: greedy_generate(lm, source, batch(c, args.pad, 0, device), args.new_tokens, eos, "hidden")[0]
    )
    static = StaticDecoder(lm, "hidden")
    run(
        "static", lambda c: static.generate(source, batch(c, args.pad, 0, device, args.bucket), args.new_tokens, eos)[0]
    )
    if device.type == "cuda":
        graph = StaticDecoder(lm, "hidden", graphs=True)
        run(
            "graph",
            lambda c: graph.generate(source, batch(c, args.pad, 0, device, args.bucket), args.new_tokens, eos)[0],
        )

    def hf(c):
        p = batch(c, args.pad, 0, device)
        return lm.generate(
            inputs_embeds=embed_prompt(lm, source, p),
            attention_mask=p.attention_mask,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=args.pad,
            eos_token_id=None,
        )[:, -args.new_tokens :]

    lm.generation_config.eos_token_id = None
    run("hf_generate", hf)
    if "plain" not in results:
        return out
    plain = torch.cat(results["plain"])
    for name in ("static", "graph", "hf_generate"):
        if name in results:
            other = torch.cat(results[name])
            out[name]["tokens_equal_plain"] = bool(torch.equal(plain, other))
            out[name]["token_agreement"] = round(float((plain == other).float().mean()), 5)
            out[name]["speedup_vs_plain"] = round(out[name]["users_per_s"] / out["plain"]["users_per_s"], 2)
    return out


def diffusion_section(hidden: int, args, device, dtype) -> dict[str, Any]:
    """The diffusion sampler over ``--batch`` users at once (ContRec's head: x0, exp, w = 2)."""
    head = (
        DiffusionHead(
            hidden,
            args.cond_dim,
            args.new_tokens + 2,
            GaussianDiffusion(
                Denoiser(args.item_dim, args.cond_dim, 0),
                args.cond_dim,
                steps=args.diffusion_steps,
                schedule="exp",
                prediction="x0",
                guidance=2.0,
                p_uncond=0.1,
            ),
        )
        .to(device)
        .eval()
    )
    states = torch.randn(args.batch, args.new_tokens, hidden, device=device)
    mask = torch.ones(args.batch, args.new_tokens, dtype=torch.bool, device=device)
    rng = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        head.sample(states, mask, rng)
        _, seconds = timed(lambda: head.sample(states, mask, rng), device)
    return {
        "users_per_s": round(args.batch / seconds, 2),
        "seconds_per_batch": round(seconds, 4),
        "batch": args.batch,
        "steps": args.diffusion_steps,
    }


def train_section(base: nn.Module, source: nn.Module, args, device, dtype) -> dict[str, Any]:
    """Training tokens/s (valid tokens, forward + backward + optimiser step) for each configuration."""
    from peft import LoraConfig, inject_adapter_in_model

    rows = prompts(args.train_batch * (args.train_steps + 1), args.train_len, args.vocab, args.pad, args.answer, seed=1)
    batches = [
        batch(rows[i : i + args.train_batch], args.pad, args.answer, device)
        for i in range(0, len(rows), args.train_batch)
    ]
    real = int(sum(b.attention_mask.sum() for b in batches[1:]))
    padded_tokens, packed_tokens = map(sum, zip(*(packing_ratio(b) for b in batches[1:]), strict=True))
    out: dict[str, Any] = {
        "valid_tokens": real,
        "padded_tokens": int(padded_tokens),
        "packed_tokens": int(packed_tokens),
    }
    ctx = lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)  # noqa: E731

    def model(kind: str) -> nn.Module:
        lm = copy.deepcopy(base).to(device)
        lm.requires_grad_(False)
        if kind == "lora":
            lm = inject_adapter_in_model(
                LoraConfig(
                    r=16,
                    lora_alpha=32,
                    lora_dropout=0.0,
                    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                ),
                lm,
            )
        else:
            lm.requires_grad_(True)
        return lm.train()

    def loss(lm, p, pack):
        lm_sum, n, cond, mask = lm_and_condition(lm, source, p, "hidden", pack_width=pack)
        return lm_sum / n + 1e-3 * (cond.float() * mask[..., None]).pow(2).mean()

    lm = model("full")  # packed vs padded: the same loss before any step
    with ctx():
        a, b = float(loss(lm, batches[0], None)), float(loss(lm, batches[0], 0))
    out["packed"] = {"loss_padded": a, "loss_packed": b, "loss_rel_diff": abs(a - b) / max(abs(a), 1e-12)}
    del lm
    for kind in ("lora", "full"):
        for pack in (None, 0):
            for fused in (False, True) if device.type == "cuda" else (False,):
                name = kind + ("_packed" if pack is not None else "") + ("_fused" if fused else "")
                try:
                    out[name] = train_rate(model(kind), source, batches, pack, fused, loss, ctx, device, real)
                except Exception as exc:  # noqa: BLE001  (reported: one configuration failing keeps the rest)
                    out[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return out


def train_rate(lm, source, batches, pack, fused, loss, ctx, device, real: int) -> dict[str, Any]:
    params = [p for p in lm.parameters() if p.requires_grad] + list(source.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, **({"fused": True} if fused else {}))

    def step(p) -> None:
        with ctx():
            value = loss(lm, p, pack)
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    _, seconds = timed(lambda: [step(p) for p in batches[1:]], device)
    return {
        "tokens_per_s": round(real / seconds, 1),
        "seconds": round(seconds, 4),
        "trained_parameters": sum(p.numel() for p in params),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="random tiny Llama on the CPU: a smoke run in seconds")
    parser.add_argument("--backbone", default="smollm2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--users", type=int, default=2048)
    parser.add_argument("--prompt-len", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--bucket", type=int, default=32)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--train-len", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--answer", type=int, default=24)
    parser.add_argument("--diffusion-steps", type=int, default=200)
    parser.add_argument("--cond-dim", type=int, default=512)
    parser.add_argument("--item-dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma list of sections to skip: decode,diffusion,train")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.tiny:
        args.backbone, args.device = "random", "cpu"
        args.users, args.prompt_len, args.new_tokens, args.batch, args.bucket = 24, 40, 6, 8, 8
        args.train_batch, args.train_len, args.train_steps, args.answer = 6, 48, 2, 8
        args.diffusion_steps, args.cond_dim, args.item_dim = 20, 16, 16
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    lm, tok = load_backbone(args.backbone, default_cache_dir(), TINY_LLAMA if args.tiny else None)
    lm = lm.to(device).eval()
    args.pad, args.vocab = int(tok.pad_token_id), min(int(lm.config.vocab_size), 50000)
    hidden = int(lm.config.hidden_size)
    emb_std = float(lm.get_input_embeddings().weight.detach().std())
    source = Source(hidden, emb_std).to(device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "autocast": str(dtype),
        "backbone": args.backbone,
        "layers": int(lm.config.num_hidden_layers),
        "config": {k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool)},
    }
    skip = set(filter(None, args.skip.split(",")))

    def save() -> None:  # after every section: a run stopped by a time limit keeps what it measured
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1))

    if "decode" not in skip:
        rows = prompts(args.users, args.prompt_len, args.vocab, args.pad, 0, seed=0)
        report["mean_prompt_tokens"] = round(sum(len(r[0]) for r in rows) / len(rows), 1)
        report["decode"] = decode_section(lm, source, rows, args, device, dtype)
        print(json.dumps(report["decode"], indent=1), flush=True)
        save()
    if "diffusion" not in skip:
        report["diffusion"] = diffusion_section(hidden, args, device, dtype)
        print(json.dumps(report["diffusion"]), flush=True)
        save()
    if "train" not in skip:
        report["train"] = train_section(lm.cpu() if device.type != "cpu" else lm, source, args, device, dtype)
        print(json.dumps(report["train"], indent=1), flush=True)
    if device.type == "cuda":
        report["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    text = json.dumps(report, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
    main()
