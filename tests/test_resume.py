"""An interrupted TIGER cell resumes at its last finished epoch and trains as the uninterrupted one would."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from genrec_bench_plugins.tiger import Tiger
from test_tiger import _rule_benchmark, _rule_dataset
from test_tiger_speed import FAST, TINY, _setup

from genrec_bench import store
from genrec_bench.config import load_benchmark
from genrec_bench.runner import Runner


class Interrupted(Exception):
    pass


def _fit(data, ctx, tokenizer, scores, stop_at: int | None = None, **params) -> Tiger:
    """Fit 4 epochs, validating each; ``stop_at``: raise inside that epoch's validation (the process dies)."""
    torch.manual_seed(0)
    calls = itertools.count(1)

    def validate():
        if stop_at is not None and next(calls) == stop_at:
            raise Interrupted
        return {"ndcg@10": float(next(scores))}  # always improving: the last epoch's weights are kept

    tiger = Tiger(**{**TINY, "epochs": 4, **params})
    tiger.fit(data, tokenizer, validate, ctx)
    return tiger


@pytest.mark.parametrize("levers", [{}, FAST], ids=["plain_loop", "fast_loop"])
def test_a_resumed_fit_trains_as_the_uninterrupted_one(tmp_path, levers, caplog):
    data, ctx, tokenizer = _setup(tmp_path)
    whole = _fit(data, ctx, tokenizer, itertools.count(), **levers)

    ctx.resume_dir, ctx.identity = tmp_path / "resume", "cell-a"
    scores = itertools.count()
    with pytest.raises(Interrupted):
        _fit(data, ctx, tokenizer, scores, stop_at=3, **levers)  # dies in epoch 3: epochs 1-2 snapshotted
    assert (tmp_path / "resume" / "tiger.pt").exists()
    torch.manual_seed(123)  # a new process: other global random state, restored from the snapshot
    with caplog.at_level(logging.INFO, logger="genrec_bench"):
        resumed = _fit(data, ctx, tokenizer, scores, **levers)
    assert "resumed after epoch 2" in caplog.text

    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert a == pytest.approx(b, rel=1e-6), (a, b)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    assert resumed.training["steps"] is None or resumed.training["steps"] == whole.training["steps"]
    assert resumed.training["valid_curve"] == whole.training["valid_curve"]


def test_a_snapshot_of_another_configuration_is_not_resumed(tmp_path, caplog):
    data, ctx, tokenizer = _setup(tmp_path)
    ctx.resume_dir, ctx.identity = tmp_path / "resume", "cell-a"
    with pytest.raises(Interrupted):
        _fit(data, ctx, tokenizer, itertools.count(), stop_at=3)
    ctx.identity = "cell-b"  # e.g. the learning rate changed in the YAML
    with caplog.at_level(logging.INFO, logger="genrec_bench"):
        tiger = _fit(data, ctx, tokenizer, itertools.count())
    assert "of another configuration; training from the start" in caplog.text
    assert [r["epoch"] for r in tiger.history] == [1, 2, 3, 4]


def test_the_runner_removes_a_finished_cells_snapshots(tmp_path):
    bench = load_benchmark(_rule_benchmark(tmp_path, _rule_dataset(tmp_path), epochs=3))
    runner = Runner(bench, results_dir=tmp_path / "out", cache_dir=tmp_path / "cache", show_progress=False)
    runner.run()
    cell_dir = next(store.iter_cells(runner.out_dir))
    assert (cell_dir / "result.json").exists()
    assert not store.resume_dir(cell_dir).exists()
    assert not list(runner.out_dir.rglob("*.resume"))


def test_status_names_a_cell_that_would_resume(tmp_path):
    from genrec_bench.status import status_lines

    bench = load_benchmark(_rule_benchmark(tmp_path, _rule_dataset(tmp_path), epochs=1))
    runner = Runner(bench, results_dir=tmp_path / "out", cache_dir=tmp_path / "cache", show_progress=False)
    runner.run()
    cell_dir = next(store.iter_cells(runner.out_dir))
    store.resume_dir(cell_dir).mkdir()
    (store.resume_dir(cell_dir) / "tiger.pt").write_bytes(b"")
    lines, _ = status_lines(runner.out_dir)
    assert any("rule/tiger/seed-0: training unfinished" in line and "resumes tiger" in line for line in lines), lines
