"""End-to-end runs on a tiny synthetic data set: results layout, skipping, determinism, failures."""

import json

import numpy as np
import pytest
from conftest import write_benchmark

from genrec_bench import hookimpl, plugins, store
from genrec_bench.config import load_benchmark
from genrec_bench.interfaces import Generator
from genrec_bench.runner import Runner


def _run(bench_file, results, cache, **kw):
    return Runner(load_benchmark(bench_file), results, cache, "cpu", show_progress=False, **kw).run()


def test_end_to_end_writes_every_file(tmp_path, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    outcomes = _run(bench, tmp_path / "results", tmp_path / "cache")
    assert [o.status for o in outcomes] == ["ok", "ok"]
    cell = tmp_path / "results" / "tiny" / "tiny" / "sasrec" / "seed-0"
    assert sorted(p.name for p in cell.iterdir()) == ["config.yaml", "per_user.npz", "result.json"]
    result = json.loads((cell / "result.json").read_text())
    assert result["status"] == "ok" and set(result["timings"]) >= {"tokenizer_fit", "generator_fit", "evaluate"}
    assert result["environment"]["torch"] and result["n_users"] == 40
    per_user = store.read_per_user(cell)
    assert per_user["ndcg@10"].shape == (40,) and per_user["ndcg@10"].dtype == np.float64
    assert result["metrics"]["recall@5"] == pytest.approx(per_user["recall@5"].mean())


def test_rerun_skips_finished_cells_and_changed_config_reruns(tmp_path, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    first = _run(bench, tmp_path / "r", tmp_path / "c")
    again = _run(bench, tmp_path / "r", tmp_path / "c")
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert again[1].metrics == first[1].metrics
    text = bench.read_text().replace("epochs: 3", "epochs: 2")
    bench.write_text(text)
    changed = _run(bench, tmp_path / "r", tmp_path / "c")
    assert [o.status for o in changed] == ["skipped", "ok"]


def test_cpu_runs_repeat_exactly(tmp_path, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    a = _run(bench, tmp_path / "a", tmp_path / "c")
    b = _run(bench, tmp_path / "b", tmp_path / "c")
    cells = [p / "tiny" / "tiny" / "sasrec" / "seed-0" for p in (tmp_path / "a", tmp_path / "b")]
    assert np.array_equal(store.read_per_user(cells[0])["ndcg@10"], store.read_per_user(cells[1])["ndcg@10"])
    assert a[1].metrics == b[1].metrics


def test_sweep_and_seeds_expand_into_cells(tmp_path, tiny_atomic):
    methods = """
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 8, layers: 1, epochs: 1}
    retriever: full_ranking
    sweep: {generator.hidden: [8, 16]}
"""
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods).read_text()
    bench = bench.replace("seeds: [0]", "seeds: [0, 1]").replace("baseline: popularity\n", "")
    (tmp_path / "b.yaml").write_text(bench)
    outcomes = _run(tmp_path / "b.yaml", tmp_path / "r", tmp_path / "c")
    assert sorted(str(o.cell.relative_dir()) for o in outcomes) == [
        "tiny/sasrec@hidden=16/seed-0",
        "tiny/sasrec@hidden=16/seed-1",
        "tiny/sasrec@hidden=8/seed-0",
        "tiny/sasrec@hidden=8/seed-1",
    ]


class Exploding(Generator):
    def fit(self, data, tokenizer, validate, ctx):
        raise RuntimeError("exploded during fit")

    def generate(self, batch, ctx):
        raise AssertionError


class ExplodingPlugin:
    @staticmethod
    @hookimpl
    def register_generators(register):
        register("exploding", Exploding)


@pytest.fixture
def exploding_plugin():
    plugins.register_plugin(ExplodingPlugin, "exploding-fixture")
    yield
    plugins.unregister_plugin("exploding-fixture")


def test_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_atomic, exploding_plugin):
    methods = """
  bad:
    tokenizer: atomic
    generator: exploding
    retriever: full_ranking
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
"""
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods)
    outcomes = _run(bench, tmp_path / "r", tmp_path / "c")
    assert [o.status for o in outcomes] == ["failed", "ok"]
    bad = store.read_result(tmp_path / "r" / "tiny" / "tiny" / "bad" / "seed-0")
    assert bad["status"] == "failed" and bad["error"] == "RuntimeError: exploded during fit"
    assert bad["failed_stage"] == "generator_fit"
    assert (tmp_path / "r" / "tiny" / "tiny" / "bad" / "seed-0" / "error.txt").is_file()
    again = _run(bench, tmp_path / "r", tmp_path / "c")  # failed cells are retried, finished ones kept
    assert [o.status for o in again] == ["failed", "skipped"]


def test_interrupted_cell_leaves_earlier_results_intact(tmp_path, tiny_atomic, monkeypatch):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    _run(bench, tmp_path / "r", tmp_path / "c")
    cell = tmp_path / "r" / "tiny" / "tiny" / "sasrec" / "seed-0"
    before = (cell / "result.json").read_text()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("genrec_bench.runner.run_cell", interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(bench, tmp_path / "r", tmp_path / "c", rerun=True)
    assert (cell / "result.json").read_text() == before
    assert not [p for p in cell.parent.iterdir() if p.name.startswith(".")]


def test_nan_loss_stops_the_cell_with_a_reason(tmp_path, tiny_atomic):
    methods = """
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 8, layers: 1, epochs: 2, lr: 1.0e+30}
    retriever: full_ranking
"""
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods).read_text().replace("baseline: popularity\n", "")
    (tmp_path / "b.yaml").write_text(bench)
    outcome = _run(tmp_path / "b.yaml", tmp_path / "r", tmp_path / "c")[0]
    # the NaN weights' scores are caught at validation, before the next epoch's loss check
    assert outcome.status == "failed" and (
        "loss became nan" in outcome.error or "generator 'sasrec' at stage valid" in outcome.error
    )
