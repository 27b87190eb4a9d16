"""TIGER's speed levers give what the plain path gives: per-epoch losses, weights and rankings on a tiny model."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from genrec_bench_plugins.tiger import BeamSearch, RandomIds, Tiger
from test_tiger import _rule_dataset

from genrec_bench.context import RunContext
from genrec_bench.data import SplitData, load_dataset
from genrec_bench.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    d_model=16,
    d_kv=4,
    d_ff=32,
    heads=2,
    encoder_layers=1,
    decoder_layers=1,
    n_user_tokens=4,
    dropout=0.1,
    epochs=3,
    batch_size=24,
    lr=3e-3,
    warmup_steps=5,
    patience=10,
)
FAST = dict(resident_data=True, host_sync=False, fused_adamw=True, bf16=True)


def _setup(tmp_path):
    data = SplitData(
        load_dataset("rule", {"loader": "atomic", "path": str(_rule_dataset(tmp_path))}, tmp_path / "c"), max_history=5
    )
    ctx = RunContext(torch.device("cpu"), 0, tmp_path / "c", tmp_path, show_progress=False)
    tokenizer = RandomIds(levels=2, codebook_size=8)
    tokenizer.fit(data, ctx)
    return data, ctx, tokenizer


def _fit(data, ctx, tokenizer, **params) -> Tiger:
    torch.manual_seed(0)  # the runner seeds every cell; dropout draws from this generator
    scores = itertools.count()  # validation always improves: the last epoch's weights are kept
    tiger = Tiger(**{**TINY, **params})
    tiger.fit(data, tokenizer, lambda: {"ndcg@10": float(next(scores))}, ctx)
    return tiger


def _rank(tiger, data, ctx, tokenizer, users_per_chunk=128):
    retriever = BeamSearch(beam_size=10, users_per_chunk=users_per_chunk)
    retriever.fit(data, tokenizer, ctx)
    batch = next(data.batches("test", 64))
    with torch.inference_mode():
        return retriever.rank(tiger.generate(batch, ctx), 10, batch.exclude)


@pytest.mark.parametrize("backbone", ["compact", "t5"])
def test_fast_path_gives_the_plain_losses_weights_and_rankings(tmp_path, backbone):
    data, ctx, tokenizer = _setup(tmp_path)
    plain = _fit(data, ctx, tokenizer, backbone=backbone)
    fast = _fit(data, ctx, tokenizer, backbone=backbone, **FAST)
    assert [r["epoch"] for r in plain.history] == [r["epoch"] for r in fast.history] == [1, 2, 3]
    for a, b in zip(plain.history, fast.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    for (name, a), b in zip(plain.model.state_dict().items(), fast.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    r_plain, r_fast = _rank(plain, data, ctx, tokenizer), _rank(fast, data, ctx, tokenizer)
    assert torch.equal(r_plain.items, r_fast.items)
    assert torch.allclose(r_plain.scores, r_fast.scores, atol=1e-4)


def test_each_lever_alone_matches_and_max_steps_is_honoured(tmp_path):
    data, ctx, tokenizer = _setup(tmp_path)
    plain = _fit(data, ctx, tokenizer, max_steps=20, epochs=5)
    for lever in ({"resident_data": True}, {"host_sync": False}, {"fused_adamw": True}):
        other = _fit(data, ctx, tokenizer, max_steps=20, epochs=5, **lever)
        assert len(other.history) == len(plain.history) == 2  # 17 steps an epoch: step 20 ends epoch 2
        assert [r["loss"] for r in other.history] == pytest.approx([r["loss"] for r in plain.history], rel=1e-5)


def test_beam_chunking_does_not_change_rankings(tmp_path):
    data, ctx, tokenizer = _setup(tmp_path)
    tiger = _fit(data, ctx, tokenizer, epochs=1)
    small, large = _rank(tiger, data, ctx, tokenizer, 7), _rank(tiger, data, ctx, tokenizer, 4096)
    assert torch.equal(small.items, large.items) and torch.allclose(small.scores, large.scores)


def test_max_train_minutes_stops_at_an_epoch_end_with_validation(tmp_path):
    data, ctx, tokenizer = _setup(tmp_path)
    tiger = _fit(data, ctx, tokenizer, epochs=50, max_train_minutes=1e-9, eval_every=10)
    assert len(tiger.history) == 1 and "valid" in tiger.history[0] and tiger.best_epoch == 1


def test_bad_lever_combinations_are_refused():
    with pytest.raises(ConfigError, match="compile needs host_sync"):
        Tiger(compile=True)
    with pytest.raises(ConfigError, match="single-device"):
        Tiger(devices=2, host_sync=False)
    with pytest.raises(ConfigError, match="max_train_minutes"):
        Tiger(max_train_minutes=0)
    with pytest.raises(ConfigError, match="compile_mode"):
        Tiger(compile=True, host_sync=False, compile_mode="fastest")


@pytest.mark.skipif(
    shutil.which("g++") is None or not os.environ.get("GENREC_BENCH_SLOW_TESTS"),
    reason="torch.compile on CPU takes minutes (GENREC_BENCH_SLOW_TESTS=1) and needs a C++ compiler",
)
def test_compiled_model_gives_the_eager_losses(tmp_path):
    data, ctx, tokenizer = _setup(tmp_path)
    eager = _fit(data, ctx, tokenizer, epochs=1, dropout=0.0, host_sync=False)
    compiled = _fit(data, ctx, tokenizer, epochs=1, dropout=0.0, host_sync=False, compile=True)
    assert compiled.history[0]["loss"] == pytest.approx(eager.history[0]["loss"], rel=1e-4)


def test_speed_script_tiny_runs_on_cpu_and_prints_both_paths():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scripts" / "tiger_speed.py"), "--tiny", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout
    assert "plain-t5" in lines and "genrec-bench" in lines and "train" in lines and "beam-20" in lines


def test_gpu_script_parses_and_carry_preparation_writes_data_and_features(tmp_path):
    script = ROOT / "benchmarks" / "scripts" / "gpu" / "tiger_beauty.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    pytest.importorskip("sentence_transformers")
    sys.path.insert(0, str(ROOT / "benchmarks" / "scripts" / "gpu"))
    import numpy as np
    from prepare_carry import prepare

    data = tmp_path / "shop"
    data.mkdir()
    lines = [f"{u} " + " ".join(str((u + s) % 6) for s in range(5)) for u in range(8)]
    (data / "test.txt").write_text("\n".join(lines) + "\n")
    (data / "train.txt").write_text("\n".join(line.rsplit(" ", 1)[0] for line in lines) + "\n")
    (data / "item_list.txt").write_text(
        "org_id remap_id title\n" + "".join(f'a{i} {i} "red shoe {i}"\n' for i in range(6))
    )
    target = prepare(data, tmp_path / "carry", "shop", threads=1)
    x = np.load(target)
    assert x.shape == (6, 384) and x.dtype == np.float16
    assert (tmp_path / "carry" / "shop" / "test.txt").read_text() == (data / "test.txt").read_text()
