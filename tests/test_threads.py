"""Thread counts follow the cores available to the process (affinity, cgroup quota, other busy processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from genrec_bench import environment as env
from genrec_bench.errors import ConfigError


def test_cgroup_v2_and_v1_quota(tmp_path):
    assert env.cgroup_cpu_limit(tmp_path) is None  # no files: unlimited
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert env.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert env.cgroup_cpu_limit(tmp_path) == 1.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert env.cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert env.cgroup_cpu_limit(v1) == 0.5


def test_available_cpus_is_affinity_capped_by_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert env.cpus_available(tmp_path) == 4
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert env.cpus_available(tmp_path) == 3  # 2.5 CPUs of quota: round up
    (tmp_path / "cpu.max").write_text("10000 100000\n")
    assert env.cpus_available(tmp_path) == 1


def test_busy_others_reads_the_running_count(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("2.10 1.50 0.90 3/412 12345\n")
    assert env.busy_others(samples=3, interval=0, proc_loadavg=loadavg) == 2  # ourselves excluded
    loadavg.write_text("0.10 0.10 0.10 1/412 12345\n")
    assert env.busy_others(samples=1, proc_loadavg=loadavg) == 0
    assert env.busy_others(proc_loadavg=tmp_path / "absent") == 0


def test_precedence_flag_then_env_then_auto(monkeypatch):
    monkeypatch.setattr(env, "cpus_available", lambda: 4)
    monkeypatch.setattr(env, "busy_others", lambda: 3)
    assert env.choose_threads(2, {env.THREADS_ENV: "3"}).threads == 2
    assert env.choose_threads(2, {}).busy_others == 3  # measured and recorded even when the count is given
    choice = env.choose_threads(None, {env.THREADS_ENV: "3"})
    assert (choice.threads, choice.source) == (3, env.THREADS_ENV)
    choice = env.choose_threads(None, {})
    assert (choice.threads, choice.source, choice.busy_others, choice.cpus_available) == (1, "auto", 3, 4)
    monkeypatch.setattr(env, "busy_others", lambda: 0)
    assert env.choose_threads(None, {}).threads == 4
    monkeypatch.setattr(env, "busy_others", lambda: 9)
    assert env.choose_threads(None, {}).threads == 1  # never below one
    with pytest.raises(ConfigError, match="GENREC_BENCH_THREADS='two'"):
        env.choose_threads(None, {env.THREADS_ENV: "two"})
    with pytest.raises(ConfigError, match="--threads 0"):
        env.choose_threads(0, {})


def test_configure_sets_torch_pools_env_and_result_record():
    code = """if True:
        import json, os, torch
        from genrec_bench import environment as env
        choice = env.configure_threads()
        info = env.describe(torch.device("cpu"))
        print(json.dumps({"choice": info["threads"], "torch": torch.get_num_threads(),
                          "interop": torch.get_num_interop_threads(), "omp": os.environ["OMP_NUM_THREADS"],
                          "mkl": os.environ["MKL_NUM_THREADS"]}))"""
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, env.THREADS_ENV: "1"},
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["torch"] == out["interop"] == 1 and out["omp"] == out["mkl"] == "1"
    assert out["choice"]["threads"] == 1 and out["choice"]["source"] == env.THREADS_ENV
    assert out["choice"]["interop_threads"] == 1 and out["choice"]["cpus_available"] >= 1


def test_run_has_a_threads_flag():
    from genrec_bench.cli import build_parser

    args = build_parser().parse_args(["run", "bench.yaml", "--threads", "3"])
    assert args.threads == 3


def test_run_records_the_choice_in_result_json(tmp_path, tiny_atomic, monkeypatch):
    from conftest import write_benchmark

    from genrec_bench.cli import main

    for name in env.POOL_ENV:  # configure_threads sets them; restored after the test
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.setattr(env, "_CHOICE", None)
    threads = __import__("torch").get_num_threads()
    try:
        bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic)
        assert (
            main(
                [
                    "run",
                    str(bench),
                    "--results",
                    str(tmp_path / "r"),
                    "--cache-dir",
                    str(tmp_path / "c"),
                    "--threads",
                    "1",
                    "--no-progress",
                    "--no-leaderboard",
                    "--method",
                    "popularity",
                ]
            )
            == 0
        )
    finally:
        __import__("torch").set_num_threads(threads)
    result = json.loads(next((tmp_path / "r").glob("*/*/*/seed-0/result.json")).read_text())
    recorded = result["environment"]["threads"]
    assert recorded["threads"] == 1 and recorded["source"] == "--threads"
    assert result["environment"]["torch_threads"] == 1 and recorded["cpus_available"] >= 1
