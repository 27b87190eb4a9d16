"""No verdict on a method stopped by budget while improving, unless the benchmark declares a matched budget."""

from __future__ import annotations

import json

from test_leaderboard import write_results

from genrec_bench.convergence import assess
from genrec_bench.leaderboard import build_leaderboard
from genrec_bench.store import RESULT_FILE
from genrec_bench.training import training_summary

METHODS = {"pop": 0.0, "sasrec": 0.3, "tiger": 0.6}
CLAIMS = ["tiger > pop", "sasrec > pop", "tiger > sasrec"]


def _record(rule: str, values: list[float]) -> dict:
    curve = list(enumerate(values, start=1))
    history = [{"epoch": e, "valid": v} for e, v in curve]
    return assess(training_summary(rule, history, len(values), 2, len(values)))


def _stamp(bench, budget: str | None = None) -> None:
    """tiger: epoch cap while rising; sasrec: patience; pop: no training."""
    for path in bench.glob(f"*/*/seed-*/{RESULT_FILE}"):
        result = json.loads(path.read_text())
        method = path.parent.parent.name
        generator = {
            "tiger": _record("epoch_cap", [0.1, 0.2, 0.3, 0.4]),
            "sasrec": _record("patience", [0.3, 0.35, 0.34, 0.33]),
        }.get(method)
        result["training"] = {"tokenizer": None, "generator": generator}
        result["budget"] = budget
        path.write_text(json.dumps(result))


def _claims(board) -> dict:
    return {c["claim"]: c for c in json.loads(board.text["json"])["datasets"]["beauty"]["claims"]}


def test_claims_with_an_unconverged_method_are_undecided(tmp_path):
    bench = write_results(tmp_path, datasets=("beauty",), methods=METHODS, claims=CLAIMS)
    before = _claims(build_leaderboard(bench))
    assert before["tiger > pop"]["verdict"] == "better"  # no training records: the test decides
    _stamp(bench)
    board = build_leaderboard(bench)
    claims = _claims(board)
    assert claims["tiger > pop"]["verdict"] == "undecided (tiger stopped by budget while improving)"
    assert claims["tiger > pop"]["test_verdict"] == "better"
    assert claims["tiger > sasrec"]["verdict"].startswith("undecided (tiger")
    assert claims["sasrec > pop"]["verdict"] == "better"  # sasrec stopped by patience: converged
    markdown = board.text["markdown"]
    assert "| tiger§" in markdown and "Stopped by" in markdown and "epoch cap, improving" in markdown
    assert "no significance mark or verdict involves it" in markdown
    tiger_row = next(line for line in markdown.splitlines() if line.startswith("| tiger§"))
    assert "†" not in tiger_row  # the significance mark against the baseline is withheld too
    assert r"tiger\S{}" in board.text["latex"] and "tiger§" in board.text["html"]


def test_a_declared_budget_gives_verdicts_at_that_budget(tmp_path):
    bench = write_results(tmp_path, datasets=("beauty",), methods=METHODS, claims=CLAIMS)
    _stamp(bench, budget="12 epochs of 16,384 samples")
    claims = _claims(build_leaderboard(bench))
    assert claims["tiger > pop"]["verdict"] == "better at a budget of 12 epochs of 16,384 samples"
