"""A method's ``per_dataset`` profile: applied on its data set only, nothing else runs again; bad input refused."""

import json

import pytest
import yaml

from genrec_bench.config import expand_cells, load_benchmark
from genrec_bench.errors import ConfigError
from genrec_bench.leaderboard import build_leaderboard
from genrec_bench.runner import Runner

METHOD = """
  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 16, layers: 1, epochs: 2, batch_size: 64}
    retriever: full_ranking
"""


def _bench(path, data, extra_method=""):
    path.write_text(f"""name: profiles
seeds: [0]
protocol: {{ks: [5, 10], max_history: 8}}
datasets:
  a: {{loader: atomic, path: {data}, name: tiny}}
  b: {{loader: atomic, path: {data}, name: tiny}}
methods:{METHOD}{extra_method}""")
    return path


def _run(path, tmp_path):
    return Runner(load_benchmark(path), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()


def test_profile_applies_to_its_data_set_only_and_reruns_only_that_cell(tmp_path, tiny_atomic):
    bench = _bench(tmp_path / "b.yaml", tiny_atomic)
    first = {o.cell.dataset: o for o in _run(bench, tmp_path)}
    assert {d: o.status for d, o in first.items()} == {"a": "ok", "b": "ok"}
    _bench(bench, tiny_atomic, "    per_dataset:\n      b: {generator.hidden: 8, generator.epochs: 1}\n")
    cells = {c.dataset: c for c in expand_cells(load_benchmark(bench))}
    assert cells["a"].components["generator"]["hidden"] == 16 and cells["b"].components["generator"]["hidden"] == 8
    assert cells["b"].method == "sasrec"  # the label stays the method's name
    second = {o.cell.dataset: o for o in _run(bench, tmp_path)}
    assert second["a"].status == "skipped" and second["b"].status == "ok"
    assert second["a"].metrics == first["a"].metrics
    recorded = yaml.safe_load((tmp_path / "r" / "profiles" / "b" / "sasrec" / "seed-0" / "config.yaml").read_text())
    assert recorded["method"]["generator"]["hidden"] == 8 and recorded["method"]["generator"]["epochs"] == 1
    result = json.loads((tmp_path / "r" / "profiles" / "b" / "sasrec" / "seed-0" / "result.json").read_text())
    assert result["profile"] == {"generator.hidden": 8, "generator.epochs": 1}
    assert "profile" not in json.loads(
        (tmp_path / "r" / "profiles" / "a" / "sasrec" / "seed-0" / "result.json").read_text()
    )
    board = build_leaderboard(tmp_path / "r" / "profiles", formats=["markdown"], n_resamples=100)
    card = {t.dataset: t.card for t in board.tables}
    line = "Profile for this data set (per_dataset): sasrec: generator.epochs=1, generator.hidden=8"
    assert line in card["b"] and not any("per_dataset" in x for x in card["a"])


def test_profile_and_sweep_combine(tmp_path, tiny_atomic):
    extra = "    sweep: {generator.layers: [1, 2]}\n    per_dataset:\n      a: {generator.hidden: 8}\n"
    cells = expand_cells(load_benchmark(_bench(tmp_path / "b.yaml", tiny_atomic, extra)))
    got = {(c.dataset, c.method): c.components["generator"]["hidden"] for c in cells}
    assert got == {
        ("a", "sasrec@layers=1"): 8,
        ("a", "sasrec@layers=2"): 8,
        ("b", "sasrec@layers=1"): 16,
        ("b", "sasrec@layers=2"): 16,
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    per_dataset:\n      c: {generator.hidden: 8}\n", "'c' is not one of the data sets (a, b)"),
        ("    per_dataset:\n      a: {hidden: 8}\n", "per_dataset keys look like 'generator.hidden'"),
        ("    per_dataset:\n      a: {}\n", "expected a mapping 'component.param: value'"),
        ("    per_dataset: [a]\n", "expected a mapping 'data set: {component.param: value}'"),
        (
            "    sweep: {generator.hidden: [8, 16]}\n    per_dataset:\n      a: {generator.hidden: 8}\n",
            "'generator.hidden' is also swept",
        ),
    ],
)
def test_bad_profile_is_refused_with_file_line_and_field(tmp_path, tiny_atomic, extra, message):
    bench = _bench(tmp_path / "b.yaml", tiny_atomic, extra)
    with pytest.raises(ConfigError) as err:
        load_benchmark(bench)
    assert message in str(err.value) and "b.yaml:" in str(err.value) and "methods.sasrec.per_dataset" in str(err.value)


def test_unknown_profile_parameter_is_caught_before_anything_runs(tmp_path, tiny_atomic):
    bench = _bench(tmp_path / "b.yaml", tiny_atomic, "    per_dataset:\n      b: {generator.hiddden: 8}\n")
    with pytest.raises(ConfigError, match="unknown parameter 'hiddden'"):
        Runner(load_benchmark(bench), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).prepare()
    assert not (tmp_path / "r" / "profiles" / "b").exists()


# --- protocol.per_dataset: a data set's own number of validation users ------------------------------------------


def _bench_protocol(path, data, per_dataset=""):
    path.write_text(f"""name: profiles
seeds: [0]
protocol:
  ks: [5, 10]
  max_history: 8
  valid_users: 5
{per_dataset}datasets:
  a: {{loader: atomic, path: {data}, name: tiny}}
  b: {{loader: atomic, path: {data}, name: tiny}}
methods:{METHOD}""")
    return path


def test_protocol_per_dataset_sets_valid_users_on_its_data_set_only(tmp_path, tiny_atomic, monkeypatch):
    import genrec_bench.runner as runner_module

    bench = _bench_protocol(tmp_path / "b.yaml", tiny_atomic)
    first = {o.cell.dataset: o for o in _run(bench, tmp_path)}
    assert {d: o.status for d, o in first.items()} == {"a": "ok", "b": "ok"}
    _bench_protocol(bench, tiny_atomic, "  per_dataset:\n    b: {valid_users: 3}\n")
    cells = {c.dataset: c for c in expand_cells(load_benchmark(bench))}
    assert cells["a"].protocol["valid_users"] == 5 and cells["b"].protocol["valid_users"] == 3
    assert "per_dataset" not in cells["a"].protocol and "per_dataset" not in cells["b"].protocol
    # the same cell as the file's protocol with valid_users 3 for every data set (e.g. --set protocol.valid_users=3)
    same = {
        c.dataset: c
        for c in expand_cells(
            load_benchmark(_bench_protocol(tmp_path / "s.yaml", tiny_atomic), ["protocol.valid_users=3"])
        )
    }
    assert same["b"].resolved() == cells["b"].resolved() and same["a"].resolved() != cells["a"].resolved()

    seen = []
    original = runner_module.ranking_hits

    def spy(generator, retriever, split, part, *args):
        if part == "valid":
            seen.append(len(args[3]))
        return original(generator, retriever, split, part, *args)

    monkeypatch.setattr(runner_module, "ranking_hits", spy)
    second = {o.cell.dataset: o for o in _run(bench, tmp_path)}
    assert second["a"].status == "skipped" and second["b"].status == "ok"  # only b's cell changed
    assert seen and set(seen) == {3}  # b's cell validated on 3 users
    recorded = yaml.safe_load((tmp_path / "r" / "profiles" / "b" / "sasrec" / "seed-0" / "config.yaml").read_text())
    assert recorded["protocol"]["valid_users"] == 3 and "per_dataset" not in recorded["protocol"]


@pytest.mark.parametrize(
    ("per_dataset", "message"),
    [
        ("  per_dataset:\n    c: {valid_users: 3}\n", "'c' is not one of the data sets (a, b)"),
        ("  per_dataset:\n    a: {ks: [5]}\n", "not settable per data set; a data set may set valid_users"),
        ("  per_dataset:\n    a: {valid_users: 0}\n", "expected a positive integer or null (all users), got 0"),
        ("  per_dataset:\n    a: {}\n", "expected a mapping such as {valid_users: 2000}"),
        ("  per_dataset: [a]\n", "expected a mapping 'data set: {valid_users: N}'"),
    ],
)
def test_bad_protocol_per_dataset_is_refused_with_file_line_and_field(tmp_path, tiny_atomic, per_dataset, message):
    bench = _bench_protocol(tmp_path / "b.yaml", tiny_atomic, per_dataset)
    with pytest.raises(ConfigError) as err:
        load_benchmark(bench)
    assert message in str(err.value) and "b.yaml:" in str(err.value) and "protocol.per_dataset" in str(err.value)
