"""--max-minutes, --dry-run, status and merge on tiny cells (recorded seconds are faked where needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import write_benchmark

from genrec_bench import store
from genrec_bench.cli import main

TWO = """
  popularity:
    tokenizer: atomic
    generator: popularity
    retriever: full_ranking
  random:
    tokenizer: atomic
    generator: random
    retriever: full_ranking
"""


def _bench(tmp_path, tiny_atomic, methods=TWO, seeds="[0, 1, 2]"):
    path = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods)
    path.write_text(path.read_text().replace("seeds: [0]", f"seeds: {seeds}"))
    return path


def _run(capsys, *argv):
    code = main(["run", *map(str, argv), "--no-progress", "--no-leaderboard"])
    return code, capsys.readouterr().out


def _fake_seconds(cell_dir, seconds):
    result = json.loads((cell_dir / store.RESULT_FILE).read_text())
    result["seconds"] = seconds
    (cell_dir / store.RESULT_FILE).write_text(json.dumps(result))


def test_a_cell_that_does_not_fit_is_deferred_and_the_rest_run(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0]), tmp_path / "r"
    assert _run(capsys, bench, "--results", results)[0] == 0
    cells = results / "tiny" / "tiny" / "popularity"
    _fake_seconds(cells / "seed-1", 600.0)  # its own earlier run took 10 minutes
    code, out = _run(capsys, bench, "--results", results, "--rerun", "--max-minutes", "5")
    assert code == 0, out  # deferred cells are not failures
    assert "3 cells: 2 run, 0 skipped (finished earlier), 0 failed, 1 deferred (--max-minutes)" in out
    assert "deferred: tiny/popularity/seed-1: needs ~10.0 min (this cell's earlier run)" in out
    assert json.loads((cells / "seed-1" / store.RESULT_FILE).read_text())["seconds"] == 600.0  # not started


def test_other_seeds_then_expected_minutes_then_first_cell_only(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic), tmp_path / "r"
    code, out = _run(capsys, bench, "--results", results, "--max-minutes", "5")
    # popularity seed 0 has no estimate but is the first cell; seeds 1 and 2 use seed 0's time;
    # random has no evidence at all and is not first: deferred.
    assert code == 0 and "3 run" in out and "3 deferred" in out, out
    assert "deferred: tiny/random/seed-0: no time estimate" in out
    _fake_seconds(results / "tiny" / "tiny" / "popularity" / "seed-0", 400.0)
    _fake_seconds(results / "tiny" / "tiny" / "popularity" / "seed-1", 30.0)
    (results / "tiny" / "tiny" / "popularity" / "seed-2" / store.RESULT_FILE).unlink()
    bench.write_text(bench.read_text().replace("generator: random\n", "generator: random\n    expected_minutes: 1\n"))
    code, out = _run(capsys, bench, "--results", results, "--max-minutes", "5")
    assert "deferred: tiny/popularity/seed-2: needs ~6.7 min (the same method at seed-0)" in out, out
    assert "3 run" in out and "1 deferred" in out  # random: expected_minutes 1 fits
    bench.write_text(bench.read_text().replace("expected_minutes: 1", "expected_minutes: 9"))
    shutil.rmtree(results / "tiny" / "tiny" / "random")
    code, out = _run(capsys, bench, "--results", results, "--max-minutes", "5")
    assert "deferred: tiny/random/seed-0: needs ~9.0 min (expected_minutes)" in out, out


def test_a_new_data_set_is_estimated_from_another_scaled_by_training_pairs(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0], seeds="[0]"), tmp_path / "r"
    assert _run(capsys, bench, "--results", results)[0] == 0
    cell = results / "tiny" / "tiny" / "popularity" / "seed-0"
    result = json.loads((cell / store.RESULT_FILE).read_text())
    users, interactions = result["n_users"], result["n_interactions"]
    assert interactions > 3 * users  # recorded so that other data sets can be estimated from this one
    # the reference had half the training pairs the new data set has (the same data under another name)
    timings = {"tokenizer_fit": 0.0, "generator_fit": 100.0, "evaluate": 20.0}
    result.update(seconds=120.0, timings=timings, n_interactions=3 * users + (interactions - 3 * users) // 2)
    (cell / store.RESULT_FILE).write_text(json.dumps(result))
    ratio = (interactions - 3 * users) / ((interactions - 3 * users) // 2)
    other = ["--dataset", f"other=atomic:{tiny_atomic}"]
    code, out = _run(capsys, bench, "--results", results, *other, "--dry-run", "--max-minutes", "60")
    # training (a full pass per epoch) grows with the pairs, evaluation stays (the same users)
    expected = (
        f"~{(100 * ratio + 20) / 60:.1f} min (popularity on tiny (120 s) scaled: training x{ratio:.2f}, users x1.00)"
    )
    assert expected in out, out
    code, out = _run(capsys, bench, "--results", results, *other, "--max-minutes", "3")
    assert "1 deferred" in out and "deferred: other/popularity/seed-0: needs ~3.7 min (popularity on tiny" in out, out


def test_an_estimate_measured_on_another_cpu_says_so(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0], seeds="[0]"), tmp_path / "r"
    assert _run(capsys, bench, "--results", results)[0] == 0
    cell = results / "tiny" / "tiny" / "popularity" / "seed-0"
    result = json.loads((cell / store.RESULT_FILE).read_text())
    result["seconds"] = 600.0
    (cell / store.RESULT_FILE).write_text(json.dumps(result))
    code, out = _run(capsys, bench, "--results", results, "--rerun", "--dry-run", "--max-minutes", "60")
    assert "(this cell's earlier run)" in out, out  # the same CPU: no note
    result["environment"]["cpu_model"] = "Some Other CPU"
    (cell / store.RESULT_FILE).write_text(json.dumps(result))
    code, out = _run(capsys, bench, "--results", results, "--rerun", "--dry-run", "--max-minutes", "60")
    assert "~10.0 min (this cell's earlier run; measured on another machine (Some Other CPU, " in out, out
    assert "not rescaled: nothing has run on both)" in out, out


def _timed(cell_dir, seconds, fit, epochs, **environment):
    result = json.loads((cell_dir / store.RESULT_FILE).read_text())
    result.update(seconds=seconds, timings={"generator_fit": fit})
    result.setdefault("training", {})["generator"] = {"epochs_run": epochs}
    result["environment"].update(environment)
    (cell_dir / store.RESULT_FILE).write_text(json.dumps(result))


def test_an_estimate_from_another_machine_is_rescaled_by_epochs_timed_on_both(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0], seeds="[0, 1]"), tmp_path / "r"
    assert _run(capsys, bench, "--results", results)[0] == 0
    cells = results / "tiny" / "tiny" / "popularity"
    # seed 0 ran elsewhere at 10 s an epoch; seed 1 here at 30 s: this machine is 3x slower for this method
    _timed(cells / "seed-0", 600.0, 100.0, 10, cpu_model="Fast CPU", torch_threads=2)
    _timed(cells / "seed-1", 90.0, 30.0, 1)
    code, out = _run(capsys, bench, "--results", results, "--seeds", "2", "--dry-run", "--max-minutes", "60")
    assert "~30.0 min (the same method at seed-0; measured on another machine (Fast CPU, " in out, out
    assert ", 2 threads), x3.00 here (popularity's training time per epoch on both, 1 data set(s)))" in out, out
    _timed(cells / "seed-1", 90.0, 30.0, 0)  # no epochs here: nothing to compare, so the figure stays as measured
    code, out = _run(capsys, bench, "--results", results, "--seeds", "2", "--dry-run", "--max-minutes", "60")
    assert "~10.0 min (the same method at seed-0; measured on another machine (Fast CPU, " in out, out
    assert "not rescaled: nothing has run on both)" in out, out


def test_eta_counts_cells_without_an_estimate_instead_of_guessing(tmp_path, tiny_atomic):
    from genrec_bench.config import expand_cells, load_benchmark
    from genrec_bench.schedule import Budget

    bench = load_benchmark(_bench(tmp_path, tiny_atomic, seeds="[0]"))
    cells = expand_cells(bench)
    budget = Budget(bench, tmp_path / "r" / "tiny", None)
    budget.ran.append(1.0)  # a 1-second cell says nothing about the others
    assert budget.eta(cells) == "ETA unknown (2 cell(s) without an estimate)"
    bench.methods["random"]["expected_minutes"] = 3.0
    assert budget.eta(cells).startswith("ETA >= ~3.0 min (at ")
    assert budget.eta(cells).endswith(", plus 1 cell(s) without an estimate")


def test_dry_run_says_why_and_writes_nothing(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic, seeds="[0, 1]"), tmp_path / "r"
    code, out = _run(capsys, bench, "--results", results, "--dry-run")
    assert code == 0 and out.count("would run") >= 4 and "(new; no time estimate)" in out
    assert not results.exists()
    assert _run(capsys, bench, "--results", results, "--method", "popularity")[0] == 0
    cell = results / "tiny" / "tiny" / "popularity" / "seed-1"
    result = json.loads((cell / store.RESULT_FILE).read_text())
    (cell / store.RESULT_FILE).write_text(json.dumps({**result, "status": "failed", "error": "OOM: boom"}))
    bench.write_text(bench.read_text().replace("generator: random\n", "generator: random\n    expected_minutes: 8\n"))
    before = sorted(p.name for p in (results / "tiny").iterdir())
    code, out = _run(capsys, bench, "--results", results, "--dry-run", "--max-minutes", "5")
    lines = {
        next(w for w in line.split() if w.startswith("tiny/")): line for line in out.splitlines() if " tiny/" in line
    }
    assert lines["tiny/popularity/seed-0"].startswith("skip") and "finished with the same identity" in out
    assert "failed before: OOM: boom" in lines["tiny/popularity/seed-1"]
    assert lines["tiny/random/seed-0"].startswith("deferred") and "needs ~8.0 min (expected_minutes)" in out
    assert sorted(p.name for p in (results / "tiny").iterdir()) == before
    bench.write_text(bench.read_text().replace("ks: [1, 5, 10]", "ks: [1, 5, 20]"))
    code, out = _run(capsys, bench, "--results", results, "--dry-run")
    assert "would run  tiny/popularity/seed-0  (configuration, data or plugin versions changed" in out


def test_status_lists_ok_failed_and_missing(tmp_path, tiny_atomic, capsys):
    bench, results = _bench(tmp_path, tiny_atomic, seeds="[0, 1]"), tmp_path / "r"
    assert _run(capsys, bench, "--results", results, "--method", "popularity")[0] == 0
    cell = results / "tiny" / "tiny" / "popularity" / "seed-1"
    result = json.loads((cell / store.RESULT_FILE).read_text())
    (cell / store.RESULT_FILE).write_text(
        json.dumps({**result, "status": "failed", "error": "OOM: boom", "failed_stage": "generator_fit"})
    )
    assert main(["status", str(results)]) == 0
    out = capsys.readouterr().out
    assert "tiny (" in out and "1 ok, 1 failed, 0 missing" in out
    assert "failed   tiny/popularity/seed-1  generator_fit: OOM: boom" in out
    assert main(["status", str(results), str(bench)]) == 0
    out = capsys.readouterr().out
    assert "1 ok, 1 failed, 2 missing" in out and "missing  tiny/random/seed-0" in out
    assert main(["status", str(tmp_path / "nowhere")]) == 2


def test_results_given_as_the_benchmarks_own_folder_does_not_nest(tmp_path, tiny_atomic, capsys):
    """`--results r/tiny` after a run into `r`: the same folder, its finished cells skipped, nothing nested."""
    bench, results = _bench(tmp_path, tiny_atomic), tmp_path / "r"
    assert _run(capsys, bench, "--results", results, "--method", "popularity")[0] == 0
    code, out = _run(capsys, bench, "--results", results / "tiny", "--method", "popularity")
    assert code == 0 and "0 run, 3 skipped" in out, out
    assert not (results / "tiny" / "tiny" / "tiny").exists()  # benchmark and data set are both named tiny
    assert [p.relative_to(results) for p in results.rglob(store.LOG_FILE)] == [Path("tiny") / store.LOG_FILE]


def test_merge_never_replaces_a_finished_cell_with_another_identity(tmp_path, tiny_atomic, capsys):
    bench = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0], seeds="[0, 1]")
    src, dst = tmp_path / "call", tmp_path / "results"
    assert _run(capsys, bench, "--results", src)[0] == 0
    assert _run(capsys, bench, "--results", dst, "--seeds", "0")[0] == 0
    mine = dst / "tiny" / "tiny" / "popularity" / "seed-0"
    result = json.loads((mine / store.RESULT_FILE).read_text())
    (mine / store.RESULT_FILE).write_text(json.dumps({**result, "identity": "another"}))
    assert main(["merge", str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "1 copied, 0 already there, 0 kept (the source failed), 1 conflicts" in out
    assert "conflict: tiny/tiny/popularity/seed-0" in out
    log = (dst / "tiny" / "run.log").read_text()  # the copied cell's log comes with it
    assert "# --- genrec-bench merge from " in log and "tiny/tiny/popularity/seed-1 ---" in log
    assert json.loads((mine / store.RESULT_FILE).read_text())["identity"] == "another"
    assert store.read_result(dst / "tiny" / "tiny" / "popularity" / "seed-1")["status"] == "ok"
    assert main(["merge", str(src), str(dst)]) == 0
    assert "0 copied, 1 already there" in capsys.readouterr().out
    assert (dst / "tiny" / "run.log").read_text() == log  # nothing copied, nothing appended
    theirs = src / "tiny" / "tiny" / "popularity" / "seed-1"  # a failure never replaces a finished cell
    ok = json.loads((theirs / store.RESULT_FILE).read_text())
    (theirs / store.RESULT_FILE).write_text(json.dumps({**ok, "status": "failed", "error": "boom"}))
    assert main(["merge", str(src), str(dst)]) == 0
    assert "0 copied, 0 already there, 1 kept (the source failed), 1 conflicts" in capsys.readouterr().out
    assert store.read_result(dst / "tiny" / "tiny" / "popularity" / "seed-1")["status"] == "ok"
    (theirs / store.RESULT_FILE).write_text(json.dumps(ok))  # a finished cell replaces a failed one
    ours = dst / "tiny" / "tiny" / "popularity" / "seed-1"
    (ours / store.RESULT_FILE).write_text(json.dumps({**ok, "status": "failed", "error": "boom"}))
    assert main(["merge", str(src), str(dst)]) == 0
    assert "1 copied" in capsys.readouterr().out and store.read_result(ours)["status"] == "ok"


def test_merge_of_one_benchmark_folder_into_another_is_not_nested(tmp_path, tiny_atomic, capsys):
    bench = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0], seeds="[0, 1]")
    src, dst = tmp_path / "call", tmp_path / "results"
    assert _run(capsys, bench, "--results", src)[0] == 0
    assert _run(capsys, bench, "--results", dst, "--seeds", "0")[0] == 0
    assert main(["merge", str(src / "tiny"), str(dst / "tiny")]) == 0
    assert "1 copied" in capsys.readouterr().out
    assert store.read_result(dst / "tiny" / "tiny" / "popularity" / "seed-1")["status"] == "ok"
    assert not (dst / "tiny" / "tiny" / "tiny").exists()
    other = tmp_path / "elsewhere" / "other"
    shutil.copytree(dst / "tiny", other)  # a benchmark folder of another name: refused, with the fix
    assert main(["merge", str(src / "tiny"), str(other)]) == 2
    err = capsys.readouterr().err
    assert "not a results folder" in err and f"genrec-bench merge {src} {other.parent}" in err


def test_a_swept_variant_is_estimated_from_another_variant(tmp_path, tiny_atomic, capsys):
    swept = (
        TWO.split("  random:")[0]
        + """  sasrec:
    tokenizer: atomic
    generator: {name: sasrec, hidden: 8, layers: 1, epochs: 1, batch_size: 64}
    retriever: full_ranking
    sweep: {generator.hidden: [8, 16]}
"""
    )
    bench, results = _bench(tmp_path, tiny_atomic, swept, seeds="[0]"), tmp_path / "r"
    assert _run(capsys, bench, "--results", results)[0] == 0
    _fake_seconds(results / "tiny" / "tiny" / "sasrec@hidden=8" / "seed-0", 420.0)
    shutil.rmtree(results / "tiny" / "tiny" / "sasrec@hidden=16")
    code, out = _run(capsys, bench, "--results", results, "--max-minutes", "5")
    assert (
        "deferred: tiny/sasrec@hidden=16/seed-0: needs ~7.0 min (the same method at seed-0 of sasrec@hidden=8)" in out
    ), out


def test_a_training_time_cap_bounds_the_estimate(tmp_path):
    from types import SimpleNamespace

    from genrec_bench.config import Cell
    from genrec_bench.schedule import estimate

    def cell(dataset, cap):
        generator = {"name": "tiger", "samples_per_epoch": 0.5, "max_train_minutes": cap}
        return Cell("b", dataset, {}, "tiger", {"generator": generator}, 0, {})

    def write(dataset, seconds, fit, rule, users=100, interactions=1300):
        folder = tmp_path / dataset / "tiger" / "seed-0"
        folder.mkdir(parents=True)
        result = {
            "status": "ok",
            "seconds": seconds,
            "timings": {"tokenizer_fit": 0.0, "generator_fit": fit, "evaluate": seconds - fit},
            "training": {"generator": {"stop_rule": rule}},
            "n_users": users,
            "n_items": 50,
            "n_interactions": interactions,
        }
        (folder / store.RESULT_FILE).write_text(json.dumps(result))

    bench = SimpleNamespace(methods={"tiger": {}})
    # a small data set's 10-minute training scaled x10 would be 100 minutes; the 20-minute cap bounds it
    write("small", 660.0, 600.0, "patience")
    sizes = {"big": (100, 50, 300 + 10 * 1000)}
    seconds, source = estimate(bench, tmp_path, cell("big", 20), sizes)
    assert seconds == 60.0 + 20 * 60 * 1.1 and "users x1.00; training capped at 20 min" in source, source
    seconds, source = estimate(bench, tmp_path, cell("big", None), sizes)
    assert seconds == 60.0 + 6000.0 and "capped" not in source
    # an earlier run stopped at its 20-minute time cap, and the cap is now 90 minutes: count 90
    write("lastfm", 1290.0, 1230.0, "time_cap")
    seconds, source = estimate(bench, tmp_path, cell("lastfm", 90), {})
    assert seconds == 60.0 + 90 * 60 and source.startswith("this cell's earlier run; training capped at 90 min")
    # the same cap as before: the earlier run's own time stands (its last epoch ended past the cap)
    seconds, source = estimate(bench, tmp_path, cell("lastfm", 20), {})
    assert seconds == 1290.0 and "capped" not in source, source


def test_a_side_folder_is_estimated_from_the_default_results_folder(tmp_path, tiny_atomic, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default results folder is ./results
    bench = _bench(tmp_path, tiny_atomic, TWO.split("  random:")[0], seeds="[0]")
    assert _run(capsys, bench)[0] == 0
    _fake_seconds(tmp_path / "results" / "tiny" / "tiny" / "popularity" / "seed-0", 300.0)
    # a second job writing a side folder (to be merged) has no cells of its own yet
    code, out = _run(capsys, bench, "--results", tmp_path / "side", "--seeds", "1,2", "--dry-run")
    assert code == 0 and "~5.0 min (the same method at seed-0, in results/tiny)" in out, out
    # without the main folder's evidence the first cell would start unestimated; now both need ~5 of 4 minutes
    code, out = _run(capsys, bench, "--results", tmp_path / "side", "--seeds", "1,2", "--max-minutes", "4")
    assert "2 cells: 0 run" in out and "2 deferred" in out, out
    assert "deferred: tiny/popularity/seed-1: needs ~5.0 min (the same method at seed-0, in results/tiny)" in out


def test_a_changed_epoch_cap_bounds_the_estimate(tmp_path):
    """An earlier run that stopped at its 12-epoch cap, now capped at 30: its training is counted to 30 epochs;
    a run of 20 epochs (patience) now capped at 10 counts 10; an unchanged cap keeps the run's own time."""
    from types import SimpleNamespace

    from genrec_bench.config import Cell
    from genrec_bench.schedule import estimate

    def cell(seed, epochs):
        return Cell("b", "d", {}, "contrec", {"generator": {"name": "contrec", "epochs": epochs}}, seed, {})

    def write(seed, rule, run, cap):
        folder = tmp_path / "d" / "contrec" / f"seed-{seed}"
        folder.mkdir(parents=True)
        record = {"stop_rule": rule, "epochs_run": run, "epochs_cap": cap}
        result = {
            "status": "ok",
            "seconds": 1500.0,
            "timings": {"tokenizer_fit": 0.0, "generator_fit": 1200.0, "evaluate": 300.0},
            "training": {"generator": record},
        }
        (folder / store.RESULT_FILE).write_text(json.dumps(result))

    bench = SimpleNamespace(methods={"contrec": {}})
    write(0, "epoch_cap", 12, 12)
    seconds, source = estimate(bench, tmp_path, cell(0, 30), {})
    assert seconds == 300.0 + 1200.0 * 30 / 12, (seconds, source)
    assert source.startswith("this cell's earlier run; epoch cap raised 12 -> 30"), source
    seconds, source = estimate(bench, tmp_path, cell(0, 12), {})
    assert seconds == 1500.0 and "epoch cap" not in source, source
    # another seed's run bounds a new seed the same way
    seconds, source = estimate(bench, tmp_path, cell(1, 30), {})
    assert seconds == 300.0 + 1200.0 * 30 / 12 and source.startswith("the same method at seed-0; epoch cap"), source
    write(2, "patience", 20, 30)
    seconds, source = estimate(bench, tmp_path, cell(2, 10), {})
    assert seconds == 300.0 + 1200.0 * 10 / 20 and "epoch cap lowered to 10 (it ran 20)" in source, source
    seconds, source = estimate(bench, tmp_path, cell(2, 40), {})  # patience fired: a higher cap changes nothing
    assert seconds == 1500.0, (seconds, source)
