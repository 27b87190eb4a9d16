"""``genrec-bench new-plugin``: the package installs, its tests pass, and it runs through the real entry point.

The package is installed with pip into a private ``--target`` folder put on the path (PYTHONPATH for the
subprocesses, sys.path here): entry points are found there exactly as in site-packages, and nothing outside
tmp_path changes, so other test runs on the machine never see it and nothing is left behind if a run is killed.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import write_benchmark

from genrec_bench import plugins, scaffold
from genrec_bench.cli import main

NAME = "scaffold-cooc"


def _cli() -> list[str]:
    script = shutil.which("genrec-bench")
    return [script] if script else [sys.executable, "-m", "genrec_bench.cli"]


def _env(site) -> dict:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


def test_scaffold_install_run_leaderboard(tmp_path, tiny_atomic, fresh_plugins, monkeypatch, capsys):
    package = tmp_path / "pkg"
    assert main(["new-plugin", NAME, "--kind", "generator", "--dir", str(package)]) == 0
    assert "pip install -e" in capsys.readouterr().out
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
        capture_output=True,
    )
    env = _env(site)
    # the package's own tests (entry point included) run alongside the benchmark
    own_tests = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    results = tmp_path / "results"
    run = subprocess.run(
        [
            *_cli(),
            "-q",
            "run",
            str(package / "benchmark.yaml"),
            "--dataset",
            f"tiny=atomic:{tiny_atomic}",
            "--results",
            str(results),
            "--device",
            "cpu",
            "--set",
            "protocol.ks=[1,5,10]",
            "--no-progress",
            "--no-leaderboard",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    output = own_tests.communicate(timeout=300)[0]
    assert own_tests.returncode == 0, output
    assert run.returncode == 0, run.stdout + run.stderr
    cell = results / f"{NAME}-quick" / "tiny" / NAME / "seed-0"
    result = json.loads((cell / "result.json").read_text())
    assert result["status"] == "ok" and result["metrics"]["recall@1"] > 0.5  # the planted rule is found
    assert result["health"]["generator/item_pairs"] > 0

    monkeypatch.syspath_prepend(str(site))  # the same installation, seen from this process
    plugins.reset()
    capsys.readouterr()
    assert main(["plugins"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(NAME))
    assert row.split()[:2] == [NAME, "0.1.0"] and f"generators: {NAME}" in row
    assert main(["leaderboard", str(results / f"{NAME}-quick"), "--format", "terminal", "--no-color"]) == 0
    board = capsys.readouterr().out
    assert any(line.startswith(NAME) for line in board.splitlines()) and "popularity (baseline)" in board


HEALTH = {
    "tokenizer": "tokenizer/collision_rate",
    "generator": "generator/cold_user_rate",
    "retriever": "retriever/empty_slot_rate",
}


@pytest.mark.parametrize("kind", scaffold.KINDS)
def test_every_kind_runs_as_a_module_plugin(tmp_path, tiny_atomic, fresh_plugins, monkeypatch, capsys, kind):
    names = scaffold.Names.of(f"tmpl-{kind}", kind)
    folder = scaffold.write_plugin(names.name, kind, tmp_path / "pkg", check=False)
    assert f"{names.name} = {names.package}.plugin" in (folder / "setup.cfg").read_text()
    monkeypatch.syspath_prepend(str(folder))
    parts = {"tokenizer": "atomic", "generator": "popularity", "retriever": "full_ranking", kind: names.name}
    methods = "\n  m: {" + ", ".join(f"{k}: {v}" for k, v in parts.items()) + "}\n"
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods, extra=f"plugins: [{names.package}.plugin]\n")
    bench.write_text(bench.read_text().replace("baseline: popularity\n", ""))
    try:
        code = main(
            [
                "-q",
                "run",
                str(bench),
                "--results",
                str(tmp_path / "r"),
                "--device",
                "cpu",
                "--no-progress",
                "--no-leaderboard",
            ]
        )
    finally:
        for module in [m for m in sys.modules if m.startswith(names.package)]:
            del sys.modules[module]
    assert code == 0, capsys.readouterr()
    result = json.loads((tmp_path / "r" / "tiny" / "tiny" / "m" / "seed-0" / "result.json").read_text())
    assert result["status"] == "ok" and HEALTH[kind] in result["health"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["Bad_Name", "--kind", "generator"], "not a usable plugin name"),
        (["popularity", "--kind", "generator"], "generator 'popularity' is already registered by plugin 'baselines'"),
        (["sasrec", "--kind", "tokenizer"], "already uses the entry-point name 'sasrec'"),
    ],
)
def test_bad_names_are_refused_in_one_line(tmp_path, fresh_plugins, capsys, argv, message):
    assert main(["new-plugin", *argv, "--dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_a_non_empty_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new-plugin", "fresh", "--kind", "retriever", "--dir", str(tmp_path), "--no-check"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
