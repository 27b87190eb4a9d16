"""Data-parallel SASRec and TIGER (DDP, gloo, 2 CPU processes) equal single-process training at the same global
batch."""

import json
import logging

import pytest
import torch
from conftest import write_benchmark

from genrec_bench.config import load_benchmark
from genrec_bench.context import RunContext
from genrec_bench.distributed import shard_of
from genrec_bench.runner import Runner
from plugins.sasrec import SASRec


class _Data:
    """The two things SASRec.fit reads from a split: sizes and training windows."""

    n_items, max_history = 20, 6

    def train_windows(self, length):
        g = torch.Generator().manual_seed(3)
        windows = torch.randint(0, self.n_items, (33, length), generator=g)  # 33 rows: last batch of 8 has 1
        pad = torch.randint(0, length - 1, (33,), generator=g)
        return windows.masked_fill(torch.arange(length) < pad.unsqueeze(1), -1)


def _fit(devices, tmp_path):
    torch.manual_seed(0)
    ctx = RunContext(torch.device("cpu"), 0, tmp_path, tmp_path / f"work{devices}", False, logging.getLogger("test"))
    ctx.work_dir.mkdir()
    calls = iter(range(100))
    model = SASRec(
        hidden=16,
        layers=1,
        heads=2,
        dropout=0.0,
        epochs=3,
        batch_size=8,
        lr=1e-2,
        weight_decay=0.01,
        patience=10,
        eval_every=1,
        devices=devices,
    )
    model.fit(_Data(), None, lambda: {"ndcg@10": float(next(calls))}, ctx)  # rising: best = last epoch
    return model


def shard(batch, rank, world_size):
    part = shard_of(batch, rank, world_size)
    return batch[part.lo : part.hi]


def test_shard_splits_a_global_batch_in_order():
    batch = torch.arange(10).unsqueeze(1)
    assert torch.equal(torch.cat([shard(batch, r, 3) for r in range(3)]), batch)
    assert shard(torch.arange(1).unsqueeze(1), 1, 2).shape[0] == 0


def test_two_process_ddp_matches_single_process(tmp_path):
    single, ddp = _fit(1, tmp_path), _fit(2, tmp_path)
    assert single.best_epoch == ddp.best_epoch == 3
    for (name, a), b in zip(single.model.state_dict().items(), ddp.model.state_dict().values(), strict=True):
        if name.endswith("in_proj_bias"):
            # the attention *key* bias has an exactly-zero true gradient (softmax ignores a per-query shift);
            # AdamW turns its ~1e-9 float-noise gradient into lr-sized steps, so it is compared through the outputs
            a, b = torch.cat([a[:16], a[32:]]), torch.cat([b[:16], b[32:]])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    windows = _Data().train_windows(7)[:, 1:]
    assert torch.allclose(single.model(windows), ddp.model(windows), atol=1e-5)
    assert not torch.equal(single.model.item_embedding.weight, _init_weights())  # it did train
    for a, b in zip(single.history, ddp.history, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["valid"] == b["valid"]


def _init_weights():
    torch.manual_seed(0)
    from plugins.sasrec.model import SASRecModel

    return SASRecModel(20, hidden=16, layers=1, heads=2, dropout=0.0, max_len=6).item_embedding.weight


def test_runner_cell_with_two_devices(tmp_path, tiny_atomic):
    methods = """
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 16, layers: 1, epochs: 2, batch_size: 64, devices: 2}
    retriever: full_ranking
"""
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods).read_text().replace("baseline: popularity\n", "")
    (tmp_path / "b.yaml").write_text(bench)
    outcomes = Runner(
        load_benchmark(tmp_path / "b.yaml"), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False
    ).run()
    assert [o.status for o in outcomes] == ["ok"], outcomes
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "sasrec" / "seed-0" / "result.json").read_text())
    assert 0.0 <= result["metrics"]["ndcg@10"] <= 1.0 and "recall@5" in result["metrics"]


def _fit_tiger(backbone, devices, tmp_path):
    from genrec_bench_plugins.tiger import RandomIds, Tiger
    from test_tiger import _rule_dataset

    from genrec_bench.data import SplitData, load_dataset

    folder = tmp_path / "data"
    data = SplitData(
        load_dataset("rule", {"loader": "atomic", "path": str(_rule_dataset(folder, n_users=30))}, tmp_path / "c"),
        max_history=4,
    )
    ctx = RunContext(
        torch.device("cpu"), 0, tmp_path / "c", tmp_path / f"work{devices}", False, logging.getLogger("test")
    )
    ctx.work_dir.mkdir(exist_ok=True)
    tokenizer = RandomIds(levels=2, codebook_size=8)
    tokenizer.fit(data, ctx)
    torch.manual_seed(0)
    calls = iter(range(100))
    tiger = Tiger(
        backbone=backbone,
        d_model=16,
        d_kv=4,
        d_ff=32,
        heads=2,
        encoder_layers=1,
        decoder_layers=1,
        dropout=0.0,
        n_user_tokens=4,
        epochs=3,
        max_steps=9,
        batch_size=45,
        lr=3e-3,
        warmup_steps=2,
        patience=10,
        devices=devices,
    )
    tiger.fit(data, tokenizer, lambda: {"ndcg@10": float(next(calls))}, ctx)
    return tiger


@pytest.mark.parametrize("backbone", ["compact", "t5"])
def test_tiger_two_process_ddp_matches_single_process(tmp_path, backbone):
    """Same global batch, same order, max_steps cutting the last epoch short: the same weights and losses."""
    single, ddp = _fit_tiger(backbone, 1, tmp_path), _fit_tiger(backbone, 2, tmp_path)
    assert (
        single.best_epoch == ddp.best_epoch == len(single.history) == len(ddp.history) == 3
    )  # 4 + 4 + 1 steps of 45, 45, 45, 15 rows
    for (name, a), b in zip(single.model.state_dict().items(), ddp.model.state_dict().values(), strict=True):
        keys = _key_bias_rows(name, a.shape[0] if a.dim() else 0, d=16)
        if keys is not None:  # zero true gradient (see the SASRec test): compared through the loss below
            a, b = a[~keys], b[~keys]
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), name
    for a, b in zip(single.history, ddp.history, strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and a["valid"] == b["valid"]
    assert not list((tmp_path / "work2" / "tiger-ddp").glob("*.pt"))  # checkpoints cleaned up


def _key_bias_rows(name: str, size: int, d: int):
    """Rows of an attention bias that belong to the key projection (softmax cancels them), or None."""
    rows = torch.zeros(size, dtype=torch.bool)
    if name.endswith(("in_proj_bias", "self_qkv.bias")):
        rows[d : 2 * d] = True
    elif name.endswith("cross_kv.bias"):
        rows[:d] = True
    else:
        return None
    return rows


TINY_LLAMA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def _fit_llm_generator(kind, devices, tmp_path, folder):
    """ContRec / DeftRec on a tiny random Llama with every per-rank random source off (dropout 0, codes as
    tokens); the per-sample draws (diffusion steps, noise, condition dropout, negatives) stay on."""
    from genrec_bench_plugins.contrec.generator import ContRec
    from genrec_bench_plugins.deftrec.generator import DeftRec
    from genrec_bench_plugins.tiger import RandomIds

    from genrec_bench.data import SplitData, load_dataset

    data = SplitData(load_dataset("tiny", {"loader": "atomic", "path": str(folder)}, tmp_path / "c"), max_history=8)
    ctx = RunContext(
        torch.device("cpu"), 0, tmp_path / "c", tmp_path / f"{kind}{devices}", False, logging.getLogger("test")
    )
    ctx.precision = "fp32"  # exact equality of the two paths; bf16 rounds per shard
    ctx.work_dir.mkdir()
    tokenizer = RandomIds(levels=2, codebook_size=8)
    tokenizer.fit(data, ctx)
    common = dict(
        backbone="random",
        backbone_config=TINY_LLAMA,
        lora_r=2,
        lora_dropout=0.0,
        cond_dim=8,
        item_space={"name": "lightgcn", "dim": 8, "epochs": 2},
        epochs=2,
        samples_per_epoch=32,
        batch_size=15,
        max_new_tokens=3,
        title_chars=6,
        target_chars=6,
        patience=5,
        devices=devices,
    )
    if kind == "contrec":  # 15 + 15 + 2 rows: uneven shards (8 + 7), then one row per rank
        generator = ContRec(**common, condition_dropout=0.0, p_uncond=0.3, diffusion_steps=10)
    else:
        generator = DeftRec(
            **common,
            denoiser_dropout=0.0,
            diffusion_steps=20,
            diffusion_repeats=2,
            negative_sampler="in-batch",
            n_negatives=2,
            negative_mean=False,
        )
    torch.manual_seed(0)
    calls = iter(range(100))
    generator.fit(data, tokenizer, lambda: {"ndcg@10": float(next(calls))}, ctx)
    return generator


@pytest.mark.parametrize("kind", ["contrec", "deftrec"])
def test_llm_generators_two_process_ddp_match_single_process(tmp_path, tiny_atomic, kind):
    """LM, diffusion and negative terms normalised by global counts; the dispersive loss over the gathered batch."""
    from genrec_bench_plugins.contrec.generator import Trainable

    single = _fit_llm_generator(kind, 1, tmp_path, tiny_atomic)
    ddp = _fit_llm_generator(kind, 2, tmp_path, tiny_atomic)
    a_state, b_state = Trainable(single).state_dict(), Trainable(ddp).state_dict()
    assert a_state.keys() == b_state.keys() and any(k.startswith("lora.") for k in a_state)
    for name, a in a_state.items():
        b = b_state[name]
        keys = _key_bias_rows(name, a.shape[0] if a.dim() else 0, d=8)
        if keys is not None:
            a, b = a[~keys], b[~keys]
        assert torch.allclose(a, b, atol=5e-5, rtol=1e-3), name
    assert len(single.history) == len(ddp.history) == 2
    for a, b in zip(single.history, ddp.history, strict=True):
        assert a.keys() == b.keys() and a["valid"] == b["valid"]
        for term in a.keys() - {"epoch", "valid"}:
            assert abs(a[term] - b[term]) < 1e-4 * max(1.0, abs(a[term])), term
