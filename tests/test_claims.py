"""Claims (``claims:`` in the benchmark YAML): parsing, verdicts, the shared Holm family, every format, the runner."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import scipy.stats as st
from conftest import write_benchmark
from test_leaderboard import write_results

from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError
from genrec_bench.leaderboard import LeaderboardError, build_leaderboard
from genrec_bench.leaderboard.claims import parse_claim, parse_claims
from genrec_bench.runner import Runner
from genrec_bench.stats import holm
from genrec_bench.store import read_per_user

METHODS = {"pop": 0.0, "twin": 0.0, "sasrec": 0.3, "tiger": 0.6}  # twin: pop with fresh noise
CLAIMS = ["tiger > pop", "pop > tiger", "sasrec < tiger", "twin > pop", {"sasrec > pop": "recall@5"}, "twin > sasrec"]


def test_parse_claims():
    assert parse_claim("contrec > tiger").label() == "contrec > tiger"
    c = parse_claim("tiger < contrec")
    assert (c.better, c.worse, c.metric, c.text) == ("contrec", "tiger", None, "tiger < contrec")
    assert parse_claim({"a@x=1 > b": "ndcg@10"}).metric == "ndcg@10"
    for bad in ("contrec", "a > a", "a >= b", 3, {"a > b": 10}):
        with pytest.raises(ConfigError):
            parse_claim(bad)
    with pytest.raises(ConfigError, match="'bert4rec' is not one of the methods"):
        parse_claims(["tiger > bert4rec"], ["tiger", "pop"])
    with pytest.raises(ConfigError, match="expected a list"):
        parse_claims("tiger > pop")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    bench = write_results(tmp_path_factory.mktemp("claims"), methods=METHODS, claims=CLAIMS)
    return build_leaderboard(bench)


def _claims(board, dataset="beauty"):
    return {c["claim"]: c for c in json.loads(board.text["json"])["datasets"][dataset]["claims"]}


def test_verdicts_and_statistics_match_scipy(board):
    claims = _claims(board)
    assert claims["tiger > pop"]["verdict"] == "better" and claims["pop > tiger"]["verdict"] == "worse"
    assert claims["sasrec < tiger"]["verdict"] == "better" and claims["sasrec < tiger"]["better"] == "tiger"
    assert claims["twin > pop"]["verdict"] == "no significant difference"
    assert claims["sasrec > pop"]["metric"] == "recall@5"
    assert all(c["metric"] == "ndcg@10" for k, c in claims.items() if k != "sasrec > pop")  # the valid_metric
    cells = board.path / "beauty"
    a, b = (
        np.mean([read_per_user(cells / m / f"seed-{s}")["ndcg@10"] for s in (0, 1)], axis=0) for m in ("pop", "tiger")
    )
    ref = st.ttest_rel(a, b)
    assert claims["pop > tiger"]["diff"] == pytest.approx((a - b).mean())
    assert claims["pop > tiger"]["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (claims["pop > tiger"]["ci_low"], claims["pop > tiger"]["ci_high"]) == pytest.approx(
        tuple(ref.confidence_interval()), rel=1e-9
    )
    assert claims["pop > tiger"]["d_z"] == pytest.approx((a - b).mean() / (a - b).std(ddof=1))


def test_claims_join_one_holm_family_without_double_counting(board):
    data = json.loads(board.text["json"])
    members = [c for d in data["datasets"].values() for c in d["comparisons"]]
    own = [c for d in data["datasets"].values() for c in d["claims"] if not c["shared_test"]]
    shared = [c for d in data["datasets"].values() for c in d["claims"] if c["shared_test"]]
    # against the baseline (either direction) or best vs runner-up: already tested, so shared
    assert {c["claim"] for c in shared} == {
        "tiger > pop",
        "pop > tiger",
        "sasrec < tiger",
        "twin > pop",
        "sasrec > pop",
    }
    assert [c["claim"] for c in own] == ["twin > sasrec"] * 2  # one new member per data set
    assert all(c["verdict"] == "worse" for c in own)
    pooled = [c for c in data["pooled_claims"] if c["p"] is not None]  # each claim over both data sets
    assert len(pooled) == len(data["pooled_claims"]) == 6 and all(c["dataset"] == "pooled" for c in pooled)
    family = members + own + pooled
    assert data["settings"]["family_size"] == len(family)
    adjusted = holm([c["p"] for c in family])
    for c, p in zip(family, adjusted, strict=True):
        assert c["p_adj"] == pytest.approx(p)
    beauty = {c["claim"]: c for c in data["datasets"]["beauty"]["claims"]}
    baseline = next(
        c
        for c in data["datasets"]["beauty"]["comparisons"]
        if (c["method"], c["reference"], c["metric"]) == ("tiger", "pop", "ndcg@10")
    )
    assert beauty["pop > tiger"]["p_adj"] == beauty["tiger > pop"]["p_adj"] == baseline["p_adj"]


def test_claims_in_every_format(board):
    assert "### Claims (beauty)" in board.text["markdown"] and "no significant difference" in board.text["markdown"]
    assert "Claims:" in board.text["terminal"]
    rows = [r for r in csv.DictReader(io.StringIO(board.text["csv"])) if r["kind"] == "claim"]
    assert len(rows) == 3 * len(CLAIMS) and {r["verdict"] for r in rows} >= {"better", "worse"}
    assert sum(r["dataset"] == "pooled" for r in rows) == len(CLAIMS)
    tex = board.text["latex"]
    assert r"tiger $>$ pop" in tex and "Verdict" in tex
    assert "Claims (beauty)" in board.text["html"] and 'class="verdict"' in board.text["html"]


def test_claims_given_on_the_command_line_replace_the_recorded_ones(tmp_path):
    bench = write_results(tmp_path, datasets=("beauty",), seeds=(0,), n_users=100, methods=METHODS, claims=CLAIMS)
    board = build_leaderboard(bench, formats=("json",), claims=["sasrec > twin: ndcg@5"])
    assert list(_claims(board)) == ["sasrec > twin"] and _claims(board)["sasrec > twin"]["metric"] == "ndcg@5"
    with pytest.raises(LeaderboardError, match="'bert4rec' is not one of the methods"):
        build_leaderboard(bench, formats=("json",), claims=["bert4rec > pop"])
    board = build_leaderboard(bench, formats=("json",), claims=["tiger > pop: mrr@10"])
    untested = _claims(board)["tiger > pop"]
    assert untested["verdict"] == "not tested" and "mrr@10" in untested["note"]


def test_runner_records_claims_and_the_leaderboard_reads_them(tmp_path, tiny_atomic):
    extra = "claims:\n  - sasrec > popularity\n  - popularity > sasrec: recall@5\nclaims_metric: ndcg@5\n"
    path = write_benchmark(tmp_path / "b.yaml", tiny_atomic, extra=extra)
    Runner(load_benchmark(path), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()
    result = json.loads(next((tmp_path / "r" / "tiny").glob("*/*/seed-0/result.json")).read_text())
    assert result["claims"] == ["sasrec > popularity", {"popularity > sasrec": "recall@5"}]
    board = build_leaderboard(tmp_path / "r" / "tiny", formats=("json",))
    claims = _claims(board, "tiny")
    assert claims["sasrec > popularity"]["metric"] == "ndcg@5" and claims["popularity > sasrec"]["metric"] == "recall@5"
    assert all(c["test_verdict"] in ("better", "worse", "no significant difference") for c in claims.values())
    # the 3-epoch SASRec may stop at its epoch cap while still improving: then no verdict is given
    assert all(
        c["verdict"] == c["test_verdict"] or c["verdict"].startswith("undecided (sasrec") for c in claims.values()
    )
    bad = write_benchmark(tmp_path / "bad.yaml", tiny_atomic, extra="claims: [sasrec > bert4rec]\n")
    with pytest.raises(ConfigError, match="bert4rec"):
        load_benchmark(bad)


def test_cli_claims_option(tmp_path, capsys):
    import argparse

    from genrec_bench.leaderboard import add_arguments, main

    bench = write_results(tmp_path, datasets=("beauty",), seeds=(0,), n_users=80, methods=METHODS)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert (
        main(
            parser.parse_args(
                [str(bench), "--claims", "tiger > twin, twin > pop: recall@10", "--format", "terminal", "--no-color"]
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Claims:" in out and "tiger > twin" in out and "Recall@10" in out
    assert main(parser.parse_args([str(bench), "--claims", "tiger >= twin", "--format", "terminal"])) == 2
    assert "expected 'method_a > method_b'" in capsys.readouterr().err


def test_a_claim_pooled_over_data_sets_weighs_each_data_set_the_same(board):
    data = json.loads(board.text["json"])
    pooled = {c["claim"]: c for c in data["pooled_claims"]}
    per_set = [{c["claim"]: c for c in d["claims"]}["twin > sasrec"] for d in data["datasets"].values()]
    claim = pooled["twin > sasrec"]
    assert claim["test"] == "stratified-z" and claim["n"] == sum(c["n"] for c in per_set)
    assert claim["diff"] == pytest.approx(np.mean([c["diff"] for c in per_set]))
    assert claim["ci_low"] < claim["diff"] < claim["ci_high"]
    assert claim["note"].startswith("over ") and claim["verdict"] == "worse"
    assert "Claims pooled over the data sets" in board.text["markdown"]
    assert "== Claims pooled over the data sets ==" in board.text["terminal"]
    assert (
        "Claims pooled over the data sets" in board.text["html"] and "pooled over the data sets." in board.text["latex"]
    )


def test_a_claim_names_unequal_seeds_of_its_two_methods(tmp_path):
    import shutil

    bench = write_results(tmp_path, methods=METHODS, claims=["tiger > pop"])
    shutil.rmtree(bench / "beauty" / "tiger" / "seed-1")  # tiger keeps one seed on beauty, two on toys
    board = build_leaderboard(bench)
    data = json.loads(board.text["json"])
    beauty, toys = (_claims(board, d)["tiger > pop"] for d in ("beauty", "toys"))
    assert beauty["note"] == "tiger seed 0 against pop seeds 0, 1" and toys["note"] == ""
    assert data["pooled_claims"][0]["note"].endswith("; unequal seeds (beauty: tiger seed 0 against pop seeds 0, 1)")
    assert "tiger seed 0 against pop seeds 0, 1" in board.text["markdown"]
