"""A plugin raising in fit, generate or rank fails only its own cells; finished results stay byte-identical."""

import json

import pytest
from conftest import write_benchmark

from genrec_bench import hookimpl, plugins
from genrec_bench.cli import main
from genrec_bench.interfaces import Generator, Retriever, Tokenizer


class FailingGenerator(Generator):
    """Raises in ``fit`` or in ``generate`` (during validation, or only on the test users)."""

    def __init__(self, stage: str = "fit"):
        self.stage = stage

    def fit(self, data, tokenizer, validate, ctx):
        if self.stage == "fit":
            raise ValueError("generator fit went wrong")
        self.n_items = data.n_items
        if self.stage == "validate":
            validate()

    def generate(self, batch, ctx):
        import torch

        if self.stage in ("generate", "validate"):
            raise RuntimeError(f"generate went wrong ({self.stage})")
        return torch.zeros(len(batch), self.n_items)


class FailingTokenizer(Tokenizer):
    def fit(self, data, ctx):
        raise KeyError("no codes for item 7")

    def encode(self, items):
        raise AssertionError("unreachable")


class FailingRetriever(Retriever):
    def rank(self, outputs, k, exclude):
        raise IndexError("rank went wrong")


class FailingPlugin:
    @staticmethod
    @hookimpl
    def register_generators(register):
        register("failing", FailingGenerator)

    @staticmethod
    @hookimpl
    def register_tokenizers(register):
        register("failing_tok", FailingTokenizer)

    @staticmethod
    @hookimpl
    def register_retrievers(register):
        register("failing_ret", FailingRetriever)


@pytest.fixture
def failing_plugin():
    plugins.reset()
    plugins.register_plugin(FailingPlugin, "failing-fixture")
    yield
    plugins.reset()


GOOD = """
  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}
"""
BAD = """
  fit_fails: {tokenizer: atomic, generator: {name: failing, stage: fit}, retriever: full_ranking}
  validate_fails: {tokenizer: atomic, generator: {name: failing, stage: validate}, retriever: full_ranking}
  generate_fails: {tokenizer: atomic, generator: {name: failing, stage: generate}, retriever: full_ranking}
  tokenizer_fails: {tokenizer: failing_tok, generator: popularity, retriever: full_ranking}
  rank_fails: {tokenizer: atomic, generator: popularity, retriever: failing_ret}
  random: {tokenizer: atomic, generator: random, retriever: full_ranking}
"""
REASONS = {
    "fit_fails": "ValueError: generator fit went wrong",
    "validate_fails": "RuntimeError: generate went wrong (validate)",
    "generate_fails": "RuntimeError: generate went wrong (generate)",
    "tokenizer_fails": "KeyError: 'no codes for item 7'",
    "rank_fails": "IndexError: rank went wrong",
}


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(tmp_path, bench, *extra):
    return main(
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
            *extra,
        ]
    )


def test_failures_stay_in_their_cells(tmp_path, tiny_atomic, failing_plugin, capsys):
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, GOOD)
    assert _run(tmp_path, bench) == 0
    good_cell = tmp_path / "r" / "tiny" / "tiny" / "popularity" / "seed-0"
    before = _snapshot(good_cell)

    write_benchmark(bench, tiny_atomic, GOOD + BAD)
    capsys.readouterr()
    assert _run(tmp_path, bench) == 1  # some cells failed
    out = capsys.readouterr().out
    assert "7 cells: 1 run, 1 skipped (finished earlier), 5 failed" in out
    assert _snapshot(good_cell) == before  # the finished cell was skipped, its files untouched
    for method, reason in REASONS.items():
        cell = tmp_path / "r" / "tiny" / "tiny" / method / "seed-0"
        result = json.loads((cell / "result.json").read_text())
        assert result["status"] == "failed" and result["error"] == reason
        assert f"failed: tiny/{method}/seed-0: {reason}" in out
        assert reason.split(": ", 1)[1].strip("'") in (cell / "error.txt").read_text()
        assert not (cell / "per_user.npz").exists()
    random_cell = tmp_path / "r" / "tiny" / "tiny" / "random" / "seed-0"
    assert json.loads((random_cell / "result.json").read_text())["status"] == "ok"  # after the failures

    assert _run(tmp_path, bench, "--rerun") == 1  # rerun everything: a good cell may be rewritten...
    assert json.loads((good_cell / "result.json").read_text())["status"] == "ok"
    assert set(_snapshot(good_cell)) == set(before)  # ...but never turned into a failure


def test_a_finished_cell_is_never_replaced_by_a_failure(tmp_path, tiny_atomic, failing_plugin, monkeypatch):
    methods = "\n  m: {tokenizer: atomic, generator: {name: failing, stage: none}, retriever: full_ranking}\n"
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods.replace("none", "ok"))
    bench.write_text(bench.read_text().replace("baseline: popularity\n", ""))
    assert _run(tmp_path, bench) == 0
    cell = tmp_path / "r" / "tiny" / "tiny" / "m" / "seed-0"
    before = _snapshot(cell)
    monkeypatch.setattr(FailingGenerator, "generate", lambda self, batch, ctx: 1 / 0)
    assert _run(tmp_path, bench, "--rerun") == 1
    assert _snapshot(cell) == before
