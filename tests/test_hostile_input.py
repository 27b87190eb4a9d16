"""Hostile input: names that are paths, duplicate keys, tags, huge files, bad CLI values. One line, exit 2."""

from __future__ import annotations

import pytest
from conftest import write_benchmark

from genrec_bench import config
from genrec_bench.cli import main

METHOD = "{tokenizer: atomic, generator: popularity, retriever: full_ranking}"


def _error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _bench(tmp_path, body: str, name: str = "b.yaml"):
    path = tmp_path / name
    path.write_text("name: x\ndatasets:\n  ml-100k: {}\n" + body)
    return str(path)


@pytest.mark.parametrize("method", ["../../x", "a/b", "/abs", ".hidden", "a..b", "x y", "a\\\\b"])
def test_method_names_are_never_paths(tmp_path, capsys, method):
    bench = _bench(tmp_path, f"methods:\n  '{method}': {METHOD}\n")
    err = _error(capsys, ["run", bench, "--results", str(tmp_path / "r")])
    assert "b.yaml:5: methods." in err and "method name" in err and "is not allowed" in err
    assert not (tmp_path / "r").exists()


def test_benchmark_dataset_and_sweep_names_are_checked(tmp_path, capsys):
    bench = _bench(tmp_path, f"methods:\n  a: {METHOD}\n").replace
    path = tmp_path / "b.yaml"
    path.write_text(f"name: ../up\ndatasets:\n  ml-100k: {{}}\nmethods:\n  a: {METHOD}\n")
    assert "b.yaml:1: name: benchmark name '../up' is not allowed" in _error(capsys, ["run", str(path)])
    path.write_text(f"datasets:\n  a/b: {{}}\nmethods:\n  a: {METHOD}\n")
    assert "b.yaml:2: datasets.a/b: data set name 'a/b'" in _error(capsys, ["run", str(path)])
    path.write_text(
        "datasets:\n  ml-100k: {}\nmethods:\n  a: {tokenizer: atomic, generator: popularity, "
        "retriever: full_ranking, sweep: {generator.x: [ok, ../../etc]}}\n"
    )
    assert "swept value '../../etc' is not allowed" in _error(capsys, ["run", str(path)])
    assert bench  # the helper works with any body


def test_dataset_name_on_the_command_line_is_checked(tmp_path, capsys):
    bench = _bench(tmp_path, f"methods:\n  a: {METHOD}\n")
    err = _error(capsys, ["run", bench, "--dataset", "../x=contrec:/tmp"])
    assert err.startswith("error: --dataset '../x=contrec:/tmp': data set name '../x' is not allowed")
    err = _error(capsys, ["run", bench, "--dataset", "beauty=:/tmp"])
    assert "--dataset 'beauty=:/tmp': expected a loader name or NAME=LOADER[:PATH]" in err


def test_duplicate_keys_name_both_lines(tmp_path, capsys):
    bench = _bench(
        tmp_path,
        f"methods:\n  a: {METHOD}\n  b: {METHOD}\n  a: {{tokenizer: atomic, generator: random, "
        "retriever: full_ranking}\n",
    )
    err = _error(capsys, ["run", bench])
    assert "b.yaml:7: duplicate key 'a' (first defined on line 5)" in err


def test_merge_keys_are_still_allowed(tmp_path):
    bench = _bench(
        tmp_path,
        "methods:\n  a: &m {tokenizer: atomic, generator: popularity, retriever: full_ranking}\n"
        "  b: {<<: *m, generator: random}\n",
    )
    assert config.load_benchmark(bench).methods["b"]["generator"] == {"name": "random"}


def test_python_tags_are_refused_with_the_line(tmp_path, capsys):
    bench = _bench(tmp_path, "methods: !!python/object/apply:os.system ['echo pwned']\n")
    err = _error(capsys, ["run", bench])
    assert "b.yaml:4: YAML tags are not allowed (found '!!python/object/apply:os.system')" in err
    assert "indentation" not in err


def test_yaml_size_method_and_cell_limits(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.yaml"
    big.write_text("datasets:\n  ml-100k: {}\nmethods:\n" + "".join(f"  m{i}: {METHOD}\n" for i in range(20000)))
    err = _error(capsys, ["run", str(big)])
    assert "over the limit of 262,144" in err and "big.yaml" in err
    monkeypatch.setattr(config, "MAX_YAML_BYTES", 10**8)
    assert "20,000 methods, over the limit of 1,000" in _error(capsys, ["run", str(big)])
    sweep = _bench(
        tmp_path,
        "methods:\n  a: {tokenizer: atomic, generator: popularity, retriever: full_ranking, "
        "sweep: {generator.a: ["
        + ",".join(map(str, range(400)))
        + "], generator.b: ["
        + ",".join(map(str, range(400)))
        + "]}}\n",
    )
    assert "160,000 cells" in _error(capsys, ["run", sweep])


def test_nested_aliases_cannot_blow_up(tmp_path, capsys):
    levels = "".join(f"a{i + 1}: &a{i + 1} [" + ", ".join([f"*a{i}"] * 10) + "]\n" for i in range(9))
    path = tmp_path / "bomb.yaml"
    path.write_text("a0: &a0 [x]\n" + levels + f"datasets:\n  ml-100k: {{}}\nmethods:\n  a: {METHOD}\n")
    assert "bomb.yaml: the YAML expands to more than 1,000,000 values" in _error(capsys, ["run", str(path)])
    path.write_text("methods: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in _error(capsys, ["run", str(path)])


def test_misspelt_metric_is_blamed_on_protocol_metrics(tmp_path, capsys, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    err = _error(
        capsys, ["run", str(bench), "--results", str(tmp_path / "r"), "--set", "protocol.metrics=[recall, ndgc]"]
    )
    assert "protocol.metrics: unknown metric 'ndgc'" in err and "valid_metric" not in err
    err = _error(capsys, ["run", str(bench), "--results", str(tmp_path / "r"), "--set", "protocol.metrics=[recall]"])
    assert "protocol.valid_metric: 'ndcg' is not one of protocol.metrics (recall)" in err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--seeds", "a,b"], "--seeds 'a,b': expected comma-separated integers, e.g. --seeds 0,1,2"),
        (["--seeds", "0,0"], "--seeds '0,0': seed 0 is listed twice"),
        (["--set", "protocol.ks=[1,"], "--set 'protocol.ks=[1,': the value is not valid YAML"),
        (["--set", "nokey"], "--set 'nokey': expected 'dotted.key=value'"),
        (["--device", "gpu"], "--device 'gpu': not a device; use auto, cpu, cuda or cuda:N"),
        (["--method", "nope"], "--method nope: not in"),
        (["--max-minutes", "-3"], "--max-minutes '-3': expected a positive number of minutes"),
        (["--executor", "spark"], "argument --executor: invalid choice: 'spark'"),
        (["--address", "x:1"], "--address is for --executor ray"),
        (["--seeds", ""], "--seeds '': expected comma-separated integers"),
        (["--seeds", "-1"], "--seeds '-1': seeds are integers from 0 to 2**32-1"),
        (["--set", "seeds=[-1]"], "seeds: seeds must be a list of integers from 0 to 2**32-1"),
        (["--set", "protocol.valid_users=abc"], "protocol.valid_users: expected a positive integer or null"),
        (["--set", "protocol.eval_memory_mb=-5"], "protocol.eval_memory_mb: expected a positive number of MB"),
        (["--set", "protocol.ks=[5,5]"], "protocol.ks: 5 is listed twice"),
        (["--executor", "ray", "--max-minutes", "5"], "--max-minutes works with --executor local"),
        (["--results", "/proc/no/such"], "--results: cannot create folder /proc/no/such/x (No such file or directory)"),
        (["--cache-dir", "b.yaml"], "--cache-dir: "),
    ],
)
def test_every_cli_value_gets_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    bench = _bench(tmp_path, f"methods:\n  a: {METHOD}\n")
    err = _error(capsys, ["run", bench, "--results", str(tmp_path / "r"), *argv])
    assert message in err


def test_merge_and_status_paths_get_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert "nowhere: no such results folder" in _error(capsys, ["merge", str(tmp_path / "nowhere"), str(tmp_path)])
    err = _error(capsys, ["merge", str(tmp_path), str(tmp_path / "file")])
    assert "merge DST: " in err and "is a file, not a folder" in err
    assert "no such results folder" in _error(capsys, ["status", str(tmp_path / "file")])


def test_unknown_command_line_option_is_one_line(capsys):
    err = _error(capsys, ["run"])
    assert "the following arguments are required: benchmark" in err and "genrec-bench run --help" in err


def test_version(capsys):
    from genrec_bench import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"genrec-bench {__version__}"


def test_validation_errors_are_written_to_run_log(tmp_path, capsys, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
    err = _error(
        capsys, ["run", str(bench), "--results", str(tmp_path / "r"), "--set", "methods.sasrec.generator.nonsense=1"]
    )
    log = (tmp_path / "r" / "tiny" / "run.log").read_text()
    assert err.removeprefix("error: ") in log and "ERROR" in log


# --- One writer per results folder, and what killed runs leave behind ----------------------------------------


def _holder(tmp_path, folder):
    """A separate process holding the results lock of ``folder`` until killed."""
    import subprocess
    import sys

    code = (
        "import sys, time\nfrom genrec_bench.lock import ResultsLock\n"
        f"ResultsLock({str(folder)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_the_same_results_stops_naming_the_holder(tmp_path, capsys, tiny_atomic):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, "\n  p: " + METHOD + "\n").read_text()
    (tmp_path / "b.yaml").write_text(bench.replace("baseline: popularity\n", ""))
    results = tmp_path / "r"
    proc = _holder(tmp_path, results / "tiny")
    try:
        err = _error(capsys, ["run", str(tmp_path / "b.yaml"), "--results", str(results), "--no-leaderboard"])
        assert f"{results / 'tiny'}: another run (pid {proc.pid} on " in err and "pass --wait" in err
        assert not (results / "tiny" / "tiny").exists() and not (results / "tiny" / "run.log").exists()
    finally:
        proc.kill()  # kill -9: the lock file stays behind, stale
        proc.wait()
    assert (results / "tiny" / ".lock").exists()
    assert main(["run", str(tmp_path / "b.yaml"), "--results", str(results), "--no-leaderboard"]) == 0
    assert "taking over the stale lock" in (results / "tiny" / "run.log").read_text()
    assert not (results / "tiny" / ".lock").exists()  # released at the end


def test_wait_waits_for_the_holder(tmp_path, tiny_atomic):
    import threading

    from genrec_bench import lock

    folder = tmp_path / "r" / "x"
    held = lock.ResultsLock(folder)
    held.acquire()
    threading.Timer(0.5, held.release).start()
    waiter = lock.ResultsLock(folder, wait=True, poll_seconds=0.1)
    with pytest.raises(lock.LockedError):
        lock.ResultsLock(folder).acquire()
    waiter.acquire()
    assert waiter.held and json_pid(folder / ".lock") == __import__("os").getpid()
    waiter.release()


def json_pid(path):
    import json

    return json.loads(path.read_text())["pid"]


def test_lock_of_another_boot_or_a_reused_pid_is_stale(tmp_path):
    import json
    import os
    import socket

    from genrec_bench import lock

    folder = tmp_path / "r"
    folder.mkdir()
    base = {"pid": os.getppid(), "host": socket.gethostname()}  # a live process that is not us
    for stale in ({**base, "boot_id": "another-boot"}, {**base, "start": "1"}, {**base, "pid": 2**22 + 7}):
        (folder / ".lock").write_text(json.dumps(stale))
        with lock.ResultsLock(folder) as taken:
            assert taken.held
    (folder / ".lock").write_text(json.dumps({**base, "host": "elsewhere"}))  # cannot be checked: respected
    with pytest.raises(lock.LockedError, match="pid .* on elsewhere"):
        lock.ResultsLock(folder).acquire()


def test_stale_tmp_old_and_work_folders_are_cleaned_at_the_next_run(tmp_path, tiny_atomic, monkeypatch):
    import subprocess
    import sys
    import tempfile

    from genrec_bench import lock
    from genrec_bench.config import load_benchmark
    from genrec_bench.runner import Runner

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (temp / f"genrec-cell-{dead}-abc").mkdir()
    (temp / f"genrec-cell-{os_getpid()}-live").mkdir()  # ours: alive, kept
    (temp / "genrec-cell-k2j3h4g5").mkdir()  # the old form, no pid: kept until untouched for a day
    (temp / "genrec-cell-a1b2c3d4").mkdir()
    __import__("os").utime(temp / "genrec-cell-a1b2c3d4", (1, 1))
    method = tmp_path / "r" / "tiny" / "tiny" / "p"
    (method / ".seed-0.tmp-x1y2").mkdir(parents=True)  # killed while writing
    (method / ".seed-0.old-123").mkdir()  # killed after the swap, before removing the old copy
    (method / ".seed-3.old-123").mkdir()  # killed between the two renames: the only copy
    (method / ".seed-3.old-123" / "result.json").write_text("{}")
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, "\n  p: " + METHOD + "\n").read_text()
    (tmp_path / "b.yaml").write_text(bench.replace("baseline: popularity\n", ""))
    Runner(load_benchmark(tmp_path / "b.yaml"), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert sorted(p.name for p in method.iterdir()) == ["seed-0", "seed-3"]
    assert (method / "seed-3" / "result.json").read_text() == "{}"
    assert sorted(p.name for p in temp.iterdir()) == [f"genrec-cell-{os_getpid()}-live", "genrec-cell-k2j3h4g5"]
    assert lock.work_prefix() == f"genrec-cell-{os_getpid()}-"


def os_getpid():
    import os

    return os.getpid()


def test_a_benchmark_built_in_python_cannot_write_outside_the_results(tmp_path, tiny_atomic):
    from genrec_bench.config import load_benchmark
    from genrec_bench.errors import ConfigError
    from genrec_bench.runner import Runner

    bench = load_benchmark(write_benchmark(tmp_path / "b.yaml", tiny_atomic))
    bench.methods["../../escape"] = bench.methods.pop("sasrec")
    with pytest.raises(ConfigError, match="is not a plain <dataset>/<method>/seed-N path"):
        Runner(bench, tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    assert not (tmp_path / "escape").exists()


def test_bad_input_is_refused_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    bench = _bench(tmp_path, f"methods:\n  a: {METHOD}\n  a: {METHOD}\n")
    code = (
        "import sys\nfrom genrec_bench.cli import main\n"
        f"assert main(['run', {bench!r}, '--seeds', '0']) == 2\n"
        "assert 'torch' not in sys.modules, 'torch imported before the YAML was checked'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
