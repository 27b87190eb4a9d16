"""ContRec's fast paths give what the plain code gives: the static-cache decoder the plain greedy loop's tokens
(tiny random Llama, with LoRA, and with ContRec's real continuous-token prompts), packed training the padded
batch's loss and gradients; the speed script's tiny CPU mode and the weights split/join/hash round trip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from genrec_bench_plugins.contrec.backbone import random_llama  # noqa: E402
from genrec_bench_plugins.contrec.fast_decode import (  # noqa: E402
    StaticDecoder,
    bucketed,
    decoder_for,
    parse_speed,
    sorted_generate,
    supports,
)
from genrec_bench_plugins.contrec.generator import ContRec  # noqa: E402
from genrec_bench_plugins.contrec.model import greedy_generate, lm_and_condition  # noqa: E402
from genrec_bench_plugins.contrec.packing import pack_plan, packing_ratio  # noqa: E402
from genrec_bench_plugins.contrec.prompt import PromptBatch  # noqa: E402
from genrec_bench_plugins.contrec.tokenizer import SigmaVAETokenizer  # noqa: E402

from genrec_bench.context import RunContext  # noqa: E402
from genrec_bench.data import SplitData, load_dataset  # noqa: E402
from genrec_bench.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _lm(lora: bool = False):
    lm, tok = random_llama(TINY, 0)
    if lora:
        from peft import LoraConfig, inject_adapter_in_model

        lm = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]), lm)
        with torch.no_grad():  # LoRA's B starts at zero: make the adapters matter
            for name, p in lm.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    return lm.eval(), tok


def _prompt(rows: int = 6, width: int = 18, seed: int = 0, answer: bool = False) -> PromptBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, width + 1, (rows,), generator=g)
    lengths[0] = width
    ids = torch.randint(0, 250, (rows, width), generator=g)
    mask = (torch.arange(width)[None] >= (width - lengths)[:, None]).long()
    slots = torch.full((rows, width), -1)
    slots[:, -3] = torch.arange(rows)  # one continuous token per row
    ans = torch.zeros(rows, width, dtype=torch.bool)
    if answer:
        ans[:, -4:] = True
    return PromptBatch(ids * mask, mask, slots, ans)


def _every_row_ends(lm, source, prompt, max_new):
    """An end-of-sequence id that every row emits within ``max_new`` steps (so the loop stops early), or None."""
    tokens, _, _ = greedy_generate(lm, source, prompt, max_new, -1, "hidden")
    common = set(tokens[0].tolist())
    for row in tokens[1:]:
        common &= set(row.tolist())
    return min(common) if common else None


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("condition", ["hidden", "embedding"])
def test_static_decoder_gives_the_plain_loops_tokens(lora, condition):
    lm, _ = _lm(lora)
    assert supports(lm)
    source = torch.nn.Embedding(8, TINY["hidden_size"])
    prompt = _prompt()
    decoder = StaticDecoder(lm, condition)
    for eos, width in ((-1, None), (-1, 32), (_every_row_ends(lm, source, prompt, 10), 24)):
        if eos is None:
            continue
        t0, c0, v0 = greedy_generate(lm, source, prompt, 10, eos, condition)
        t1, c1, v1 = decoder.generate(source, prompt, 10, eos, width=width)
        assert t0.shape == t1.shape and torch.equal(t0, t1) and torch.equal(v0, v1)
        assert torch.allclose(c0.float(), c1, atol=1e-5)


def test_static_decoder_stops_where_the_plain_loop_stops():
    lm, _ = _lm()
    source = torch.nn.Embedding(8, TINY["hidden_size"])
    base = _prompt(rows=1, width=12)
    pad = lambda t, v: torch.cat([torch.full((3, 4), v, dtype=t.dtype), t.repeat(3, 1)], 1)  # noqa: E731
    prompt = PromptBatch(
        pad(base.input_ids, 0), pad(base.attention_mask, 0), pad(base.slots, -1), pad(base.answer, False)
    )  # three copies of one prompt: every row emits the same tokens
    free, _, _ = greedy_generate(lm, source, prompt, 12, -1, "hidden")
    eos = int(free[0, 3])
    t0, _, v0 = greedy_generate(lm, source, prompt, 12, eos, "hidden")
    assert t0.shape[1] <= 4  # the plain loop stopped early
    t1, _, v1 = StaticDecoder(lm).generate(source, prompt, 12, eos)
    assert t1.shape == t0.shape and torch.equal(t0, t1) and torch.equal(v0, v1)


def test_bf16_autocast_decoding_matches_on_cpu():
    lm, _ = _lm()
    source = torch.nn.Embedding(8, TINY["hidden_size"])
    prompt = _prompt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t0, _, _ = greedy_generate(lm, source, prompt, 8, -1, "hidden")
        t1, _, _ = StaticDecoder(lm).generate(source, prompt, 8, -1)
    assert (t0 == t1).float().mean() >= 0.9  # bf16 rounding differs between kernels; nearly all tokens agree


def test_speed_options_are_checked():
    assert parse_speed(None)["decode"] == "plain" and bucketed(33, 32) == 64 and bucketed(7, 1) == 7
    with pytest.raises(ConfigError, match="unknown option 'fast'"):
        parse_speed({"fast": True})
    with pytest.raises(ConfigError, match="decode"):
        parse_speed({"decode": "turbo"})


@pytest.fixture
def built(tiny_atomic, tmp_path):
    """A ContRec built on the tiny data set: real sigma-VAE tokens in the prompts, random tiny Llama."""
    ctx = RunContext(torch.device("cpu"), 0, tmp_path / "cache", tmp_path / "work", show_progress=False)
    ctx.precision = "fp32"  # the fast paths must equal the plain ones exactly; bf16 rounds by batch layout
    data = SplitData(
        load_dataset("tiny", {"loader": "atomic", "path": str(tiny_atomic), "name": "tiny"}, tmp_path / "cache"),
        max_history=8,
    )
    tok = SigmaVAETokenizer(
        features={"name": "lightgcn", "dim": 8, "epochs": 2}, token_dim=8, hidden=[8, 8], epochs=2, user_tokens=True
    )
    tok.fit(data, ctx)

    def make(speed=None, **extra) -> ContRec:
        gen = ContRec(
            backbone="random",
            backbone_config=TINY,
            item_space={"name": "lightgcn", "dim": 8, "epochs": 2},
            lora_r=2,
            cond_dim=8,
            diffusion_steps=10,
            max_new_tokens=6,
            title_chars=6,
            target_chars=6,
            eval_batch=16,
            speed=speed,
            **extra,
        )
        gen._build(data, tok, ctx)
        gen.lm.eval(), gen.source.eval(), gen.head.eval()  # LoRA dropout off, as generate() does
        return gen

    return make, data, ctx


def _batch(data, n=40):
    return next(iter(data.batches("test", n)))


def test_contrec_generate_with_the_static_decoder_equals_the_plain_loop(built):
    make, data, ctx = built
    batch = _batch(data)
    gen = make()
    prompt = gen.prompts.build(batch.items, batch.users, reserve=6)
    assert bool((prompt.slots >= 0).any())  # continuous tokens are in the prompt
    t0, c0, v0 = greedy_generate(gen.lm, gen.source, prompt, 6, gen.prompts.eos, "hidden")
    a = gen.generate(batch, ctx)
    gen.speed, gen._sample_rng = parse_speed({"decode": "static", "bucket": 16}), None  # same weights, same noise
    t1, c1, v1 = decoder_for(gen)(gen.lm, gen.source, prompt, 6, gen.prompts.eos, "hidden")
    assert torch.equal(t0, t1) and torch.equal(v0, v1) and torch.allclose(c0, c1, atol=1e-5)
    b = gen.generate(batch, ctx)
    assert a.texts == b.texts and torch.allclose(a.vectors, b.vectors, atol=1e-4)
    # sorted by prompt length: the same texts per user, outputs back in the users' order
    gen.speed = parse_speed({"decode": "static", "sort_by_length": True})
    c = sorted_generate(gen, batch, ctx)
    assert c.texts == a.texts and c.vectors.shape == a.vectors.shape


@pytest.mark.parametrize("condition", ["prompt", "history"])
def test_prompt_only_conditions_through_the_static_decoder(built, condition):
    make, data, _ = built
    batch = _batch(data, 16)
    gen = make({"decode": "static", "bucket": 16}, condition=condition)
    prompt = gen.prompts.build(batch.items, batch.users, reserve=6)
    a = greedy_generate(gen.lm, gen.source, prompt, 6, gen.prompts.eos, condition)
    b = decoder_for(gen)(gen.lm, gen.source, prompt, 6, gen.prompts.eos, condition)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert a[1].shape == b[1].shape and torch.allclose(a[1][a[2]], b[1][b[2]], atol=1e-5)


def test_pack_plan_fits_rows_into_bins():
    bins = pack_plan([10, 3, 7, 5, 2], 10)
    assert sorted(r for b in bins for r in b) == [0, 1, 2, 3, 4]
    assert all(sum([10, 3, 7, 5, 2][r] for r in b) <= 10 for b in bins) and len(bins) == 3


@pytest.mark.parametrize("condition", ["hidden", "embedding"])
def test_packed_training_gives_the_padded_loss_and_gradients(condition):
    lm, _ = _lm(lora=True)
    lm.train()
    source = torch.nn.Embedding(8, TINY["hidden_size"])
    prompt = _prompt(rows=7, width=20, answer=True)
    padded, packed = packing_ratio(prompt)
    assert packed < padded
    results = []
    for pack in (None, 0):
        lm.zero_grad(), source.zero_grad()
        lm_sum, n, cond, mask = lm_and_condition(lm, source, prompt, condition, pack_width=pack)
        (lm_sum / n + (cond.float() * mask[..., None]).pow(2).mean()).backward()
        grads = [p.grad.clone() for p in lm.parameters() if p.requires_grad]
        results.append((float(lm_sum), n, cond.detach(), mask, grads, source.weight.grad.clone()))
    (l0, n0, c0, m0, g0, s0), (l1, n1, c1, m1, g1, s1) = results
    assert n0 == n1 and l0 == pytest.approx(l1, rel=1e-5) and torch.equal(m0, m1)
    assert torch.allclose(c0[m0], c1[m1], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g0, g1, strict=True))
    assert torch.allclose(s0, s1, atol=1e-5)


def test_contrec_full_finetune_and_packing_options(built):
    make, data, _ = built
    gen = make({"pack": True, "fused_adam": True}, full_finetune=True)
    trainable = [p for p in gen.lm.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in gen.lm.parameters())
    _, _, params = gen._optimizer(10)  # fused AdamW only on CUDA: CPU keeps the default
    assert len(params) >= len(trainable)


def test_speed_script_tiny_cpu_mode(tmp_path):
    out = tmp_path / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/scripts/contrec_speed.py"), "--tiny", "--out", str(out)],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    report = json.loads(out.read_text())
    assert report["decode"]["static"]["tokens_equal_plain"] is True
    assert report["train"]["packed"]["loss_rel_diff"] < 1e-4
    assert report["decode"]["plain"]["users_per_s"] > 0 and report["train"]["full"]["tokens_per_s"] > 0


def test_weights_split_join_and_hash(tmp_path):
    blob = tmp_path / "model.gguf"
    blob.write_bytes(np.random.default_rng(0).integers(0, 256, 3 * 1024 * 1024 + 17, dtype=np.uint8).tobytes())
    script = ROOT / "benchmarks/scripts/gpu/weights_transfer.sh"
    parts = tmp_path / "parts"
    env = {**os.environ, "PART_MB": "1"}
    subprocess.run(["bash", str(script), "split", str(blob), str(parts)], check=True, env=env, capture_output=True)
    names = sorted(p.name for p in parts.iterdir())
    assert "SHA256SUMS" in names and len([n for n in names if ".part-" in n]) == 4
    staging = tmp_path / "staging"
    for part in sorted(parts.glob("*.part-*")):  # one device call per part: each copies its part to staging
        subprocess.run(["bash", str(script), "stash", str(part), str(staging)], check=True, capture_output=True)
    out = tmp_path / "joined.gguf"
    subprocess.run(
        ["bash", str(script), "join", str(staging), str(parts / "SHA256SUMS"), str(out)],
        check=True,
        capture_output=True,
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(blob.read_bytes()).hexdigest()
    (staging / sorted(p.name for p in staging.iterdir() if ".part-" in p.name)[0]).write_bytes(b"broken")
    bad = subprocess.run(
        ["bash", str(script), "join", str(staging), str(parts / "SHA256SUMS"), str(tmp_path / "x")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "sha256" in (bad.stderr + bad.stdout).lower()


def test_a_contrec_cell_runs_with_every_speed_option(tmp_path, tiny_atomic):
    from conftest import write_benchmark

    from genrec_bench.config import load_benchmark
    from genrec_bench.runner import Runner

    methods = """
  contrec:
    tokenizer: {name: sigma_vae, features: {name: lightgcn, dim: 8, epochs: 2}, token_dim: 8, hidden: [8, 8],
                epochs: 3}
    generator: {name: contrec, backbone: random, backbone_config: {hidden_size: 32, intermediate_size: 64,
                num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2},
                item_space: {name: lightgcn, dim: 8, epochs: 2}, lora_r: 0, full_finetune: true, cond_dim: 8,
                diffusion_steps: 10, epochs: 1, samples_per_epoch: 32, batch_size: 16, max_new_tokens: 4,
                title_chars: 6, target_chars: 6, eval_batch: 8, eval_every: 0,
                speed: {decode: static, sort_by_length: true, bucket: 16, pack: true, fused_adam: true}}
    retriever: hybrid
"""
    path = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods)
    path.write_text(path.read_text().replace("baseline: popularity\n", ""))
    outcomes = Runner(load_benchmark(path), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "contrec" / "seed-0" / "result.json").read_text())
    assert 0.0 <= result["metrics"]["ndcg@10"] <= 1.0
    # the whole backbone trained: far more parameters than the heads alone
    assert result["health"]["generator/parameters_trained"] > 20000


def test_graph_warm_up_writes_are_overwritten():
    """What ``_capture`` does before capturing (two warm-up steps on the real buffers, then a reset) leaves the
    tokens unchanged: checked eagerly here, since CUDA graphs need a GPU."""
    lm, _ = _lm()
    source = torch.nn.Embedding(8, TINY["hidden_size"])
    prompt = _prompt()
    expected, _, _ = greedy_generate(lm, source, prompt, 8, -1, "hidden")
    decoder = StaticDecoder(lm)
    with torch.no_grad():
        from genrec_bench_plugins.contrec.model import embed_prompt

        buf = decoder._buffers(prompt.input_ids.shape[0], 32, 8, torch.device("cpu"), torch.float32)
        decoder._prefill(embed_prompt(lm, source, prompt), prompt, buf)
        saved = buf.state.clone()
        for _ in range(2):
            decoder._step(buf)
        buf.step.zero_()
        buf.state.copy_(saved)
        for _ in range(8):
            decoder._step(buf)
    assert torch.equal(buf.tokens, expected)
