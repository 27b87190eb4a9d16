"""The Ray executor on a local 2-CPU cluster: same per-user metrics as the local executor, lost workers survived."""

import sys

import numpy as np
import pytest
from conftest import write_benchmark

from genrec_bench import plugins, store
from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError
from genrec_bench.runner import Runner

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

MODULE = "genrec_ray_fixture"
PLUGIN = '''
"""Generators that kill their own worker process: on the first attempt only, or always."""
import os
from pathlib import Path

import torch

from genrec_bench import hookimpl
from genrec_bench.interfaces import Generator


class CrashOnce(Generator):
    def __init__(self, marker: str = "", always: bool = False):
        self.marker, self.always = Path(marker), always

    def fit(self, data, tokenizer, validate, ctx):
        if self.always or not self.marker.exists():
            self.marker.write_text("crashed")
            os._exit(1)  # a worker lost mid-cell: no exception, no cleanup
        self.n_items = data.n_items

    def generate(self, batch, ctx):
        return torch.arange(self.n_items, dtype=torch.float32).expand(len(batch), -1)


@hookimpl
def register_generators(register):
    register("crash_once", CrashOnce)
'''


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster whose workers can import the fixture plugin module."""
    folder = tmp_path_factory.mktemp("ray_modules")
    (folder / f"{MODULE}.py").write_text(PLUGIN)
    sys.path.insert(0, str(folder))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()
    sys.path.remove(str(folder))
    plugins.unregister_plugin(MODULE)
    sys.modules.pop(MODULE, None)


def _run(bench_file, results, cache, executor="local"):
    return Runner(load_benchmark(bench_file), results, cache, "cpu", show_progress=False, executor=executor).run()


SWEEP = """
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
    resources: {cpus: 1, gpus: 0, memory_gb: 0.5}
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 16, layers: 1, epochs: 1, batch_size: 64}
    retriever: full_ranking
    resources: {cpus: 1}
"""


def test_ray_matches_local_and_resumes_across_executors(tmp_path, tiny_atomic, ray_cluster):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, SWEEP)
    local = _run(bench, tmp_path / "local", tmp_path / "cache")
    remote = _run(bench, tmp_path / "ray", tmp_path / "cache", executor="ray")
    assert [o.status for o in local] == [o.status for o in remote] == ["ok", "ok"]
    for method in ("popularity", "sasrec"):
        cells = [tmp_path / r / "tiny" / "tiny" / method / "seed-0" for r in ("local", "ray")]
        a, b = store.read_per_user(cells[0]), store.read_per_user(cells[1])
        assert set(a) == set(b)
        for key in a:
            if a[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-12, err_msg=f"{method} {key}")
            else:
                assert np.array_equal(a[key], b[key])
        assert store.read_result(cells[0])["identity"] == store.read_result(cells[1])["identity"]
    # The same identity on both executors: either one skips what the other finished.
    assert [o.status for o in _run(bench, tmp_path / "ray", tmp_path / "cache")] == ["skipped", "skipped"]
    assert [o.status for o in _run(bench, tmp_path / "local", tmp_path / "cache", "ray")] == ["skipped", "skipped"]


def test_lost_worker_is_retried_then_recorded_and_the_sweep_goes_on(tmp_path, tiny_atomic, ray_cluster):
    methods = f"""
  popularity: {{tokenizer: atomic, generator: popularity, retriever: full_ranking}}
  flaky:
    tokenizer: atomic
    generator: {{name: crash_once, marker: {tmp_path / "flaky.marker"}}}
    retriever: full_ranking
    resources: {{retries: 2}}
  doomed:
    tokenizer: atomic
    generator: {{name: crash_once, marker: {tmp_path / "doomed.marker"}, always: true}}
    retriever: full_ranking
    resources: {{retries: 1}}
"""
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods, extra=f"plugins: [{MODULE}]")
    outcomes = _run(bench, tmp_path / "r", tmp_path / "cache", executor="ray")
    assert [(o.cell.method, o.status) for o in outcomes] == [
        ("popularity", "ok"),
        ("flaky", "ok"),
        ("doomed", "failed"),
    ]
    assert "worker lost after 2 attempts" in outcomes[2].error
    root = tmp_path / "r" / "tiny" / "tiny"
    doomed = store.read_result(root / "doomed" / "seed-0")
    assert doomed["status"] == "failed" and doomed["failed_stage"] == "worker"
    assert sorted(p.name for p in (root / "doomed" / "seed-0").iterdir()) == ["config.yaml", "error.txt", "result.json"]
    assert store.read_result(root / "flaky" / "seed-0")["status"] == "ok"
    leftovers = [p for p in root.rglob(".*")]  # no half-written cell or temporary folder anywhere
    assert not leftovers
    again = _run(bench, tmp_path / "r", tmp_path / "cache", executor="ray")
    assert [o.status for o in again] == ["skipped", "skipped", "failed"]  # failed cells are tried again


def test_bad_resources_stop_the_run_before_ray(tmp_path, tiny_atomic):
    methods = SWEEP.replace("resources: {cpus: 1}", "resources: {cpu: 1}")
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods)
    with pytest.raises(ConfigError, match="resources.cpu: unknown key"):
        _run(bench, tmp_path / "r", tmp_path / "cache", executor="ray")
