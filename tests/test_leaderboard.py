"""genrec_bench.leaderboard on synthetic results written with the store: formats, statistics, bad input."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st

from genrec_bench.leaderboard import LeaderboardError, add_arguments, build_leaderboard, main
from genrec_bench.stats import holm
from genrec_bench.store import read_per_user, write_cell

PROTOCOL = {
    "split": "leave-one-out",
    "max_history": 20,
    "exclude_history": True,
    "ks": [5, 10],
    "metrics": ["recall", "ndcg", "hr"],
    "valid_metric": "ndcg@10",
}
SWEEP = "sasrec@hidden=64,layers=2"
METHODS = {"pop": 0.0, SWEEP: 0.3, "tiger": 0.6}  # effect on the log-rank of the target item


def _values(ranks: np.ndarray, protocol: dict) -> dict[str, np.ndarray]:
    out = {}
    for k in protocol["ks"]:
        hit = ranks <= k
        out[f"recall@{k}"] = hit.astype(float)
        out[f"ndcg@{k}"] = np.where(hit, 1 / np.log2(ranks + 1), 0.0)
        if "mrr" in protocol["metrics"]:
            out[f"mrr@{k}"] = np.where(hit, 1 / ranks, 0.0)
        out[f"hr@{k}"] = hit.astype(float)  # = recall@k with one target per user: merged by the leaderboard
    return out


def write_results(
    root: Path,
    datasets=("beauty", "toys"),
    seeds=(0, 1),
    n_users=300,
    baseline="pop",
    methods: dict[str, float] | None = None,
    claims: list | None = None,
    protocol: dict | None = None,
) -> Path:
    """results/quick/<dataset>/<method>/seed-<s>/ with a shared per-user level, so the tests are paired."""
    bench = root / "quick"
    protocol = protocol or PROTOCOL
    for d, dataset in enumerate(datasets):
        level = np.random.default_rng(100 + d).normal(3.0, 1.2, n_users)
        for m, (method, effect) in enumerate((methods or METHODS).items()):
            for seed in seeds:
                noise = np.random.default_rng([d, m, seed]).normal(0, 0.7, n_users)
                per_user = _values(np.maximum(1, np.round(np.exp(level - effect + noise))), protocol)
                health = (
                    {"tokenizer/codebook_usage": 0.8, "retriever/invalid_id_rate": 0.02} if method == "tiger" else {}
                )
                result = {
                    "status": "ok",
                    "identity": "x",
                    "error": None,
                    "n_users": n_users,
                    "baseline": baseline,
                    "benchmark": "quick",
                    "metrics": {k: float(v.mean()) for k, v in per_user.items()},
                    "health": health,
                    "claims": claims or [],
                    "timings": {
                        "tokenizer_fit": 1.0 + m,
                        "generator_fit": 10.0 * (m + 1),
                        "evaluate": 2.0,
                        "total": 13.0 + 11 * m + seed,
                    },
                    "environment": {"peak_rss_mb": 500.0 + 100 * m + seed},
                }
                config = {
                    "benchmark": "quick",
                    "seed": seed,
                    "protocol": protocol,
                    "method": {"name": method},
                    "dataset": {"name": dataset, "loader": "amazon", "min_rating": 4, "k_core": 5, "dedup": True},
                }
                ids = np.array([f"u{i}" for i in range(n_users)])
                write_cell(
                    bench / dataset / method / f"seed-{seed}",
                    result,
                    config,
                    {"users": np.arange(n_users, dtype=np.int64), "user_ids": ids, **per_user},
                )
    return bench


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    bench = write_results(tmp_path_factory.mktemp("results"))
    return build_leaderboard(bench)


def test_all_formats_written(board):
    out = board.path / "leaderboard"
    assert {p.name for p in out.iterdir()} == {f"leaderboard.{e}" for e in ("md", "tex", "csv", "json", "html")}
    assert set(board.text) == {"terminal", "markdown", "latex", "csv", "json", "html"}
    assert board.problems == []


def test_markdown_table_ranks_marks_gain_footnote_card(board):
    md = board.text["markdown"]
    tiger = next(line for line in md.splitlines() if line.startswith("| tiger"))
    sweep = next(line for line in md.splitlines() if line.startswith(f"| {SWEEP}"))
    assert tiger.count("**") == 2 * 4 and "†" in tiger  # best in all four metric columns, beats the baseline
    assert sweep.count("<u>") == 4
    assert re.search(r"\| Gain over pop +\| +\+\d+\.\d%", md)
    assert "codebook usage" in md and "invalid-id rate" in md and "collision rate" not in md
    for text in (
        "paired t-test",
        "Holm",
        "alpha = 0.05",
        "unit: user (n = 300)",
        "seeds (0, 1)",
        "averaged over seeds before testing",
        f"across {board.n_comparisons} comparisons",
    ):
        assert text in md
    for text in (
        "Split: leave-one-out",
        "History cap: 20 items",
        "history excluded",
        "k_core=5",
        "NDCG@K = sum",
        "Recall@K = |relevant",
        "model selection on ndcg@10",
    ):
        assert text in md.replace("\\", "")  # markdown escapes removed
    assert md.count("Protocol:") == 2  # under every table
    assert "HR@K = Recall@K for every user and method (K = 5, 10); tested and shown once, as Recall@K." in md
    assert "HR@" not in md.split("HR@K = Recall@K")[0]  # merged: neither shown nor tested


def test_identical_columns_are_tested_once(board):
    data = json.loads(board.text["json"])
    beauty = data["datasets"]["beauty"]
    assert beauty["columns"] == ["recall@5", "recall@10", "ndcg@5", "ndcg@10"]
    assert beauty["identical_columns"] == {"recall@5": ["hr@5"], "recall@10": ["hr@10"]}
    assert not any(c["metric"].startswith("hr@") for d in data["datasets"].values() for c in d["comparisons"])
    # 2 data sets x 4 columns x (2 methods vs pop + best vs runner-up, since pop is never in the top two)
    assert data["settings"]["family_size"] == 2 * 4 * 3


def test_p_values_and_correction_match_scipy(board):
    data = json.loads(board.text["json"])
    comparisons = [c for d in data["datasets"].values() for c in d["comparisons"]]
    # per-user values averaged over seeds, then scipy's paired t-test
    cell = board.path / "beauty"
    a = np.mean([read_per_user(cell / "tiger" / f"seed-{s}")["ndcg@10"] for s in (0, 1)], axis=0)
    b = np.mean([read_per_user(cell / "pop" / f"seed-{s}")["ndcg@10"] for s in (0, 1)], axis=0)
    ours = next(
        c
        for c in comparisons
        if (c["dataset"], c["method"], c["reference"], c["metric"]) == ("beauty", "tiger", "pop", "ndcg@10")
    )
    ref = st.ttest_rel(a, b)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx(tuple(ref.confidence_interval()), rel=1e-9)
    assert ours["rel_diff"] == pytest.approx(a.mean() / b.mean() - 1)
    assert [c["p_adj"] for c in comparisons] == pytest.approx(list(holm([c["p"] for c in comparisons])))
    kinds = {c["kind"] for c in comparisons}
    assert kinds == {"baseline", "runner-up"} and data["settings"]["family_size"] == len(comparisons)


def test_csv_is_long_format(board):
    rows = list(csv.DictReader(io.StringIO(board.text["csv"])))
    values = [r for r in rows if r["comparison"] != "runner-up"]
    assert len(values) == 2 * (3 * 4 + 2)  # data sets x (methods x metrics + tiger's two health figures)
    sweep = [r for r in rows if r["method"] == SWEEP]
    assert sweep and all(r["reference"] == "pop" and float(r["p_adj"]) >= float(r["p"]) for r in sweep)
    assert {r["metric"] for r in rows if r["kind"] == "health"} == {
        "tokenizer/codebook_usage",
        "retriever/invalid_id_rate",
    }


def _compile(tex: str, folder: Path) -> str:
    """pdflatex's log of ``tex`` (skips without pdflatex); fails on an error."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex not found (apt-get install texlive-latex-recommended to compile the LaTeX)")
    (folder / "board.tex").write_text(tex)
    run = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "board.tex"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    return (folder / "board.log").read_text(errors="replace")


def _check_printable(tex: str) -> None:
    """Natural size (nothing scaled to the line), booktabs, math as math, no raw unicode marks."""
    assert all(
        s in tex
        for s in (r"\toprule", r"\midrule", r"\bottomrule", r"$\uparrow$", "$d_z$", r"$p_{\mathrm{adj}}$", r"$\Delta$")
    )
    assert "resizebox" not in tex and "scalebox" not in tex and "graphicx" not in tex
    assert not re.search(r"[−Δ†‡±]", tex)  # every symbol spelled in LaTeX
    assert not re.search(r"(?<![\w$\-{])-\d", tex.split(r"\begin{document}")[1].split(r"\section*")[0]), (
        "a negative number without a true minus sign"
    )


def test_latex_is_booktabs_printable_and_compiles(board, tmp_path):
    tex = board.text["latex"]
    assert all(
        s in tex
        for s in (
            r"\textbf{",
            r"\underline{",
            r"$^{\dagger",
            r"k\_core=5",
            r"hidden=\allowbreak{}64,\allowbreak{}layers=",
        )
    )  # long names wrap
    _check_printable(tex)
    log = _compile(tex, tmp_path)
    assert "Overfull \\hbox" not in log and "Float too large" not in log, "a table wider or taller than the page"


def test_latex_splits_wide_tables_by_k(tmp_path):
    protocol = {**PROTOCOL, "ks": [5, 10, 20], "metrics": ["recall", "ndcg", "mrr", "hr"]}
    methods = {"pop": 0.0, "embedding_condition": 0.3, "frozen_tokenizer": -0.4, "tiger": 0.6}
    bench = write_results(
        tmp_path, datasets=("beauty",), seeds=(0, 1, 2), n_users=300, methods=methods, protocol=protocol
    )
    board = build_leaderboard(bench, formats=("latex", "json"))
    tex = board.text["latex"]
    assert len(json.loads(board.text["json"])["datasets"]["beauty"]["columns"]) == 9  # hr merged into recall
    for k in (5, 10, 20):
        assert f"Leaderboard on beauty, $K = {k}$" in tex
    assert tex.count(r"\begin{table}") == 4  # three K tables and the comparisons
    assert "$-$" in tex  # frozen_tokenizer is worse than pop: true minus signs
    _check_printable(tex)
    log = _compile(tex, tmp_path)
    assert "Overfull \\hbox" not in log and "Float too large" not in log, "a table wider or taller than the page"


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def test_html_renders_tables_and_images_in_headless_chromium(board, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary found (apt-get install -y chromium)")
    page = board.paths["html"]
    assert "http" not in re.sub(r'xmlns="[^"]*"', "", board.text["html"]).split("<body>")[1]  # self-contained
    run = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", run.stdout).group(1)
    total = int(re.search(r'data-images-total="(\d+)"', body).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', body).group(1))
    assert total == loaded == 2 * 4  # per data set: metric vs K, bars with CI, per-user differences, cost
    # per data set: one table per metric (recall, ndcg) and health, comparisons, cost
    assert run.stdout.count("<table") == 2 * 5 and "<b>" in run.stdout and "Gain over pop" in run.stdout
    assert "peak RSS (MB)" in run.stdout and "generator_fit (s)" in run.stdout
    assert re.search(r'data-viewport="1400"', body)
    assert re.search(r'data-overflow="0"', body), "a table is wider than the page at 1400 px"


@pytest.fixture
def damaged(tmp_path) -> Path:
    return damage(write_results(tmp_path, seeds=(0, 1, 2), n_users=120))


def damage(bench: Path) -> Path:
    """A failed cell, an interrupted one, a method and a seed never run, a seed with fewer users."""
    failed = bench / "beauty" / "tiger" / "seed-1"
    write_cell(
        failed,
        {"status": "failed", "error": "Traceback ...\nRuntimeError: CUDA out of memory", "baseline": "pop"},
        {"protocol": PROTOCOL},
        None,
    )
    (bench / "beauty" / "tiger" / "seed-2" / "result.json").unlink()  # interrupted cell
    shutil.rmtree(bench / "toys" / SWEEP)  # method never run on this data set
    shutil.rmtree(bench / "toys" / "pop" / "seed-2")  # seed missing
    short = bench / "toys" / "tiger" / "seed-0"  # evaluated fewer users
    per_user = {k: v[:100] for k, v in read_per_user(short).items()}
    write_cell(short, json.loads((short / "result.json").read_text()), {"protocol": PROTOCOL}, per_user)
    return bench


def test_bad_cells_become_gaps_and_messages(damaged):
    board = build_leaderboard(damaged, formats=("terminal", "markdown", "json"))
    problems = "\n".join(board.problems)
    assert "tiger/seed-1: failed: RuntimeError: CUDA out of memory" in problems
    assert "tiger/seed-2: no result.json" in problems
    assert f"toys/{SWEEP}: missing" in problems and "toys/pop: seeds 2 missing" in problems
    assert "seeds evaluated different users" in problems and "tested on the 100 in common" in problems
    md = board.text["markdown"]
    assert re.search(r"\| +0/3 \| +missing \|", md) and re.search(r"\| +1/3 \|", md) and re.search(r"\| +2/3 \|", md)
    assert "users differ (120 vs 120)" not in problems  # same users, only stored in another order
    assert "Gaps and warnings" in md and "Gaps and warnings" in board.text["terminal"]
    toys = json.loads(board.text["json"])["datasets"]["toys"]
    tiger = next(c for c in toys["comparisons"] if c["method"] == "tiger" and c["metric"] == "ndcg@10")
    assert tiger["n"] == 100 and tiger["p"] is not None


def test_unknown_baseline_still_builds(damaged):
    board = build_leaderboard(damaged, baseline="bert4rec", formats=("markdown",))
    assert any("baseline 'bert4rec' is not in the results" in p for p in board.problems)
    assert "Gain over" not in board.text["markdown"] and "(baseline)" not in board.text["markdown"]
    assert all(c.kind == "runner-up" for t in board.tables for c in t.comparisons)


def test_methods_not_in_the_benchmark_file_stay_off_the_board(tmp_path):
    """A renamed or removed method's old cells linger in the results folder; the runner passes the file's
    methods and those cells are left out with one line each, not ranked beside the current ones."""
    bench = write_results(tmp_path, datasets=("beauty",), seeds=(0,), n_users=60)
    kept = [m for m in METHODS if m != "tiger"]
    board = build_leaderboard(bench, formats=("markdown",), methods=kept)
    table = board.text["markdown"].split("### Comparisons")[0]
    assert "tiger" not in table and all(m in table for m in kept)
    assert any("method 'tiger' is not in the benchmark file; left out" in p for p in board.problems)
    full = build_leaderboard(bench, formats=("markdown",))
    assert "tiger" in full.text["markdown"].split("### Comparisons")[0]


def test_unusable_folders_raise_one_line_errors(tmp_path):
    with pytest.raises(LeaderboardError, match="results folder not found"):
        build_leaderboard(tmp_path / "nope")
    with pytest.raises(LeaderboardError, match="no cells found"):
        build_leaderboard(tmp_path)
    cell = tmp_path / "b" / "d" / "m" / "seed-0"
    write_cell(cell, {"status": "failed", "error": "boom"}, {}, None)
    with pytest.raises(LeaderboardError, match="no valid cell"):
        build_leaderboard(tmp_path / "b")
    with pytest.raises(LeaderboardError, match="unknown test"):
        build_leaderboard(tmp_path / "b", test="sign")


@pytest.mark.parametrize("test,correction", [("permutation", "bh"), ("bootstrap", "none"), ("wilcoxon", "holm")])
def test_other_tests_and_corrections(tmp_path, test, correction):
    bench = write_results(tmp_path, datasets=("beauty",), seeds=(0,), n_users=80)
    board = build_leaderboard(
        bench, test=test, correction=correction, formats=("json",), n_resamples=300, metrics=["ndcg@10"]
    )
    data = json.loads(board.text["json"])
    comparisons = data["datasets"]["beauty"]["comparisons"]
    assert data["datasets"]["beauty"]["columns"] == ["ndcg@10"] and len(comparisons) == 3
    if correction == "none":
        assert all(c["p_adj"] == c["p"] for c in comparisons)
    assert data["settings"]["test"] == test


def test_cli_main(tmp_path, capsys):
    bench = write_results(tmp_path, datasets=("beauty",), seeds=(0,), n_users=60)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main(parser.parse_args([str(bench), "--format", "terminal", "--format", "csv", "--no-color"])) == 0
    out, err = capsys.readouterr()
    assert "== beauty ==" in out and "\033[" not in out and "wrote csv" in err
    assert [p.name for p in (bench / "leaderboard").iterdir()] == ["leaderboard.csv"]
    assert main(parser.parse_args([str(tmp_path / "missing")])) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_import_is_cheap():
    code = "import sys, genrec_bench.leaderboard; print(sorted({'scipy', 'matplotlib'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
