"""``select: validation``: each swept method is shown as its variant best on validation, never chosen on test."""

from __future__ import annotations

import json

import pytest
from conftest import write_benchmark
from test_leaderboard import write_results

from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError
from genrec_bench.leaderboard import build_leaderboard

# effects on the target's log-rank: lr=0.01 is the better variant on test, lr=0.001 on validation
METHODS = {"pop": 0.0, "sasrec@lr=0.001": 0.3, "sasrec@lr=0.01": 0.6}
VALID = {"pop": None, "sasrec@lr=0.001": [0.05, 0.08, 0.07], "sasrec@lr=0.01": [0.04, 0.05, 0.05]}


def _results(tmp_path, select: str | None):
    bench = write_results(tmp_path, datasets=("beauty",), methods=METHODS, claims=["sasrec > pop"])
    for path in bench.glob("*/*/seed-*/result.json"):
        result = json.loads(path.read_text())
        curve = VALID[path.parent.parent.name]
        result["select"] = select
        if curve is not None:
            result["training"] = {
                "generator": {
                    "stop_rule": "patience",
                    "converged": True,
                    "valid_curve": [[e + 1, v] for e, v in enumerate(curve)],
                }
            }
        path.write_text(json.dumps(result))
    return bench


def test_the_variant_best_on_validation_stands_for_its_method(tmp_path):
    board = build_leaderboard(_results(tmp_path, "validation"), formats=("markdown", "json"))
    table = board.tables[0]
    assert [r.method for r in table.rows] == ["pop", "sasrec"]
    card = "\n".join(table.card)
    assert "sasrec: lr=0.001 chosen on validation NDCG@10 (0.0800; others: lr=0.01 0.0500)" in card
    # the chosen variant's test figures, not the better-on-test one's
    chosen = board.collection.datasets["beauty"].methods["sasrec"]
    assert chosen.mean("ndcg@10") < 0.3
    assert "sasrec@lr=0.01" not in board.text["markdown"]
    assert [o.verdict for o in table.claims if o.claim.better == "sasrec"]


def test_without_select_every_variant_is_a_row(tmp_path):
    board = build_leaderboard(_results(tmp_path, None), formats=("markdown",))
    assert [r.method for r in board.tables[0].rows] == ["pop", "sasrec@lr=0.001", "sasrec@lr=0.01"]
    assert not any("chosen on validation" in line for line in board.tables[0].card)


def test_select_other_than_validation_is_a_config_error(tmp_path, tiny_atomic):
    path = write_benchmark(tmp_path / "b.yaml", tiny_atomic, extra="select: test\n")
    with pytest.raises(ConfigError, match=r"select: expected 'validation'"):
        load_benchmark(path)


def test_the_file_s_method_names_keep_their_swept_variants(tmp_path):
    """The runner passes the file's methods; a swept method's variants are its cells, not strays."""
    bench = _results(tmp_path, "validation")
    board = build_leaderboard(bench, formats=("markdown",), methods=["pop", "sasrec"])
    assert [r.method for r in board.tables[0].rows] == ["pop", "sasrec"]
    assert not any("not in the benchmark file" in p for p in board.problems)
    stale = build_leaderboard(bench, formats=("markdown",), methods=["pop", "sasrec@lr=0.001"])
    assert any("'sasrec@lr=0.01' is not in the benchmark file" in p for p in stale.problems)
