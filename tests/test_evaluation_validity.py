"""Nothing invalid is scored: hostile retrievers and generators fail their cell with one line, the sweep goes on;
health figures are recorded per stage."""

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_benchmark

from genrec_bench import plugins
from genrec_bench.cli import main
from genrec_bench.evaluation import ranking_violation, score_matrix_violation
from genrec_bench.interfaces import Ranking

HOSTILE = '''
"""Retrievers and generators that break one evaluation rule each (on the user in row 3 only)."""
import torch

from genrec_bench import hookimpl
from genrec_bench.interfaces import Generator, Ranking, Retriever
from genrec_bench.ranking import topk_scores

ROW = 3


class Rule(Retriever):
    def __init__(self, rule: str = "twice"):
        self.rule = rule
        self.ranked = self.calls = 0

    def fit(self, data, tokenizer, ctx):
        self.n_items = data.n_items

    def rank(self, outputs, k, exclude):
        self.ranked += len(outputs)
        self.calls += 1
        if self.rule == "ignores_exclude":
            return topk_scores(outputs, k, None)
        if self.rule == "copies":  # ranks a copy: the evaluator checks the generator's matrix itself
            return topk_scores(outputs * 1.0, k, exclude)
        if self.rule == "chokes" and torch.isnan(outputs).any():
            raise ValueError("cannot rank NaN")
        r = topk_scores(outputs, k, exclude)
        items, scores = r.items.clone(), r.scores.clone()
        if self.rule == "twice":
            items[ROW, 1] = items[ROW, 0]
        elif self.rule == "out_of_range":
            items[ROW, 0] = self.n_items
        elif self.rule == "nan_scores":
            scores[ROW] = float("nan")
        elif self.rule == "float_ids":
            items = items.float()
        elif self.rule == "short":
            items, scores = items[:, :-1], scores[:, :-1]
        return Ranking(items, scores)

    def stage_health(self):
        out = {"users_ranked": float(self.ranked), "calls": float(self.calls), "invalid_id_rate": 0.0}
        self.ranked = self.calls = 0
        return out


class Validating(Generator):
    """Counts items; validates ``times`` times while fitting; ``nan`` scores on row 3 when asked."""

    def __init__(self, times: int = 0, nan: bool = False):
        self.times, self.nan = times, nan

    def fit(self, data, tokenizer, validate, ctx):
        self.counts = torch.as_tensor(data.train_item_counts(), dtype=torch.float32)
        for _ in range(self.times):
            validate()

    def generate(self, batch, ctx):
        scores = self.counts.expand(len(batch), -1).clone()
        if self.nan:
            scores[ROW, 5] = float("nan")
        return scores


@hookimpl
def register_retrievers(register):
    register("hostile", Rule)


@hookimpl
def register_generators(register):
    register("validating", Validating)
'''

RULES = {  # method -> what result.json's error must say
    "twice": "retriever 'hostile' at stage test: broke rule 'no item twice in a row' (user {user}: ranks item",
    "out_of_range": "retriever 'hostile' at stage test: broke rule 'ids in 0..29 or -1' (user {user}: ranks item 30)",
    "ignores_exclude": "retriever 'hostile' at stage test: broke rule 'no excluded item' (user ",
    "nan_scores": "retriever 'hostile' at stage test: broke rule 'finite scores for ranked items' (user {user}: item",
    "float_ids": "retriever 'hostile' at stage test: broke rule 'integer item ids' (items have dtype torch.float32)",
    "short": "retriever 'hostile' at stage test: broke rule 'shape [users, k]' (items of shape (40, 9), expected "
    "(40, 10))",
}


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    (folder / "hostile_plugin.py").write_text(HOSTILE)
    plugins.reset()
    yield folder
    sys.modules.pop("hostile_plugin", None)
    plugins.reset()


def _run(tmp_path: Path, data: Path, methods: str) -> tuple[int, dict]:
    bench = write_benchmark(tmp_path / "b.yaml", data, methods, extra="plugins: [hostile_plugin]\n")
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
    cells = (tmp_path / "r" / "tiny" / "tiny").iterdir()
    return code, {c.name: json.loads((c / "seed-0" / "result.json").read_text()) for c in cells}


def _raw_user(data: Path, row: int = 3) -> str:
    from genrec_bench.data import load_dataset

    return str(load_dataset("tiny", {"loader": "atomic", "path": str(data)}, None).user_ids[row])


def test_each_broken_rule_fails_its_cell_with_one_line_and_the_sweep_goes_on(tmp_path, tiny_atomic, module_dir):
    methods = "\n  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}\n"
    methods += "".join(
        f"  {m}: {{tokenizer: atomic, generator: popularity, retriever: {{name: hostile, rule: {m}}}}}\n" for m in RULES
    )
    methods += (
        "  nan_generator: {tokenizer: atomic, generator: {name: validating, nan: true}, retriever: full_ranking}\n"
    )
    methods += (
        "  twice_valid: {tokenizer: atomic, generator: {name: validating, times: 1}, "
        "retriever: {name: hostile, rule: twice}}\n"
    )
    for rule in ("copies", "chokes"):
        methods += (
            f"  nan_{rule}: {{tokenizer: atomic, generator: {{name: validating, nan: true}}, "
            f"retriever: {{name: hostile, rule: {rule}}}}}\n"
        )
    code, results = _run(tmp_path, tiny_atomic, methods)
    assert code == 1 and results["popularity"]["status"] == "ok"
    user = _raw_user(tiny_atomic)
    expected = {m: f"InvalidOutput: method '{m}' " + text.format(user=user) for m, text in RULES.items()}
    expected["nan_generator"] = (
        f"InvalidOutput: method 'nan_generator' generator 'validating' at stage test: broke "
        f"rule 'score matrix without NaN or +inf' (user {user}: item 5 has score nan)"
    )
    for rule in ("copies", "chokes"):
        expected[f"nan_{rule}"] = expected["nan_generator"].replace("'nan_generator'", f"'nan_{rule}'")
    expected["twice_valid"] = (
        f"InvalidOutput: method 'twice_valid' retriever 'hostile' at stage valid: broke rule "
        f"'no item twice in a row' (user {user}: ranks item"
    )
    for method, message in expected.items():
        result = results[method]
        assert result["status"] == "failed" and "metrics" not in result, method
        assert result["error"].startswith(message) and "\n" not in result["error"], (method, result["error"])


def test_health_is_recorded_per_stage(tmp_path, tiny_atomic, module_dir):
    methods = (
        "\n  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}\n"
        "  counted: {tokenizer: atomic, generator: {name: validating, times: 2}, "
        "retriever: {name: hostile, rule: none}}\n"
    )
    code, results = _run(tmp_path, tiny_atomic, methods)
    health = results["counted"]["health"]
    assert code == 0 and results["counted"]["status"] == "ok"
    assert health["retriever/valid/users_ranked"] == 80 and health["retriever/valid/calls"] == 2
    assert health["retriever/test/users_ranked"] == 40 and health["retriever/test/calls"] == 1
    assert "retriever/users_ranked" not in health
    from genrec_bench.leaderboard.collect import collect

    record = collect(tmp_path / "r" / "tiny").datasets["tiny"]  # the leaderboard shows the test stage's figure
    assert record.health_columns == ["retriever/test/invalid_id_rate"]
    assert record.methods["counted"].health["retriever/test/invalid_id_rate"] == {0: 0.0}


def _ranking(items, scores=None) -> Ranking:
    items = torch.tensor(items)
    return Ranking(items, torch.zeros(items.shape) if scores is None else torch.tensor(scores))


@pytest.mark.parametrize(
    "ranking,exclude,rule,row",
    [
        (_ranking([[0, 1], [2, 2]]), None, "no item twice in a row", 1),
        (_ranking([[0, -1], [-1, -1]]), None, None, None),  # padding may repeat
        (_ranking([[0, 5], [1, 2]]), None, "ids in 0..4 or -1", 0),
        (_ranking([[0, -2], [1, 2]]), None, "ids in 0..4 or -1", 0),
        (_ranking([[0, 1], [3, 2]]), torch.tensor([[2, -1], [4, 3]]), "no excluded item", 1),
        (_ranking([[0, 1], [3, 2]]), torch.tensor([[2, -1], [4, 0]]), None, None),  # another row's history
        (_ranking([[0, 1], [3, -1]], [[1.0, 0.5], [1.0, float("-inf")]]), None, None, None),
        (_ranking([[0, 1], [3, 2]], [[1.0, 0.5], [1.0, float("-inf")]]), None, "finite scores for ranked items", 1),
        (_ranking([[0, 1], [3, 2]], [[1.0, float("nan")], [1.0, 0.0]]), None, "finite scores for ranked items", 0),
        (_ranking([[0.0, 1.0], [3.0, 2.0]]), None, "integer item ids", None),
        (_ranking([[0, 1, 2], [3, 2, 1]]), None, "shape [users, k]", None),
        ((torch.zeros(2, 2),), None, "rank() returns a Ranking of two tensors", None),
    ],
)
def test_ranking_rules(ranking, exclude, rule, row):
    found = ranking_violation(ranking, 2, 5, exclude, 2)
    assert (found is None) if rule is None else (found[0] == rule and found[1] == row), found


def test_topk_scores_checks_the_watched_matrix_on_its_way():
    from genrec_bench.ranking import ScoreWatch, tie_breaking, topk_scores

    scores = torch.rand(3, 50)
    scores[1, 7], scores[2, 4] = float("nan"), float("nan")
    watch = ScoreWatch(scores)
    with tie_breaking(0, torch.arange(3), watch):
        topk_scores(scores * 1.0, 5)  # another tensor: not this watch's business
        assert not watch.checked
        topk_scores(scores, 5, torch.tensor([[-1], [-1], [4]]))  # row 2's NaN is excluded: never ranked
    assert watch.checked and watch.bad_row == 1


def test_score_matrix_rules():
    scores = torch.zeros(3, 4)
    assert score_matrix_violation(scores, 4) is None
    scores[:, 0] = float("-inf")  # 'never rank this item' is allowed
    assert score_matrix_violation(scores, 4) is None
    scores[2, 1] = float("inf")
    assert score_matrix_violation(scores, 4)[:2] == ("score matrix without NaN or +inf", 2)
    assert score_matrix_violation(torch.full((2, 3), float("nan")), 4) is None  # not a score matrix: not judged


def test_constant_scorer_scores_like_a_random_one_on_ml100k():
    """Ties broken by item id gave a constant scorer Recall@10 0.0170 on ML-100K (popular items have low ids);
    fair ties give a random scorer's expectation: min(10, c) / c per user with c rankable items."""
    import numpy as np
    from genrec_bench_plugins.baselines import FullRanking

    from genrec_bench.context import RunContext
    from genrec_bench.data import SplitData, load_dataset
    from genrec_bench.evaluation import eval_batch_size, ranking_hits

    data = SplitData(load_dataset("ml-100k", {}, None), 20, True)

    class Constant:
        def generate(self, batch, ctx):
            return torch.zeros(len(batch), data.n_items)

    expected = []
    for batch in data.batches("test", 4096):
        excluded = [set(row[row >= 0].tolist()) for row in batch.exclude.numpy()]
        for target, seen in zip(batch.targets.tolist(), excluded, strict=True):
            candidates = data.n_items - len(seen)
            expected.append(0.0 if target in seen else min(10, candidates) / candidates)
    p = np.asarray(expected)
    seeds = range(6)
    recall = np.mean(
        [
            ranking_hits(
                Constant(),
                FullRanking(),
                data,
                "test",
                20,
                RunContext(torch.device("cpu"), s, Path("."), Path("."), show_progress=False),
                eval_batch_size(data.n_items),
            )[:, :10]
            .any(1)
            .mean()
            for s in seeds
        ]
    )
    sigma = np.sqrt((p * (1 - p)).sum() / len(seeds)) / len(p)
    assert abs(recall - p.mean()) < 4 * sigma, (recall, p.mean(), sigma)
    assert 0.0170 - p.mean() > 6 * sigma  # the old id-order figure is far outside the band


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_history_search_agrees_with_the_batch_exclusion_mask(tiny_atomic, stage):
    from genrec_bench.data import SplitData, load_dataset
    from genrec_bench.evaluation import _excluded, history_keys

    split = SplitData(load_dataset("tiny", {"loader": "atomic", "path": str(tiny_atomic)}, None), 8, True)
    keys = history_keys(split, stage)
    g = torch.Generator().manual_seed(0)
    for batch in split.batches(stage, 16):
        items = torch.randint(-1, split.n_items, (len(batch), 12), generator=g).numpy()
        mask = _excluded(items, batch.exclude.numpy(), split.n_items, None)
        searched = _excluded(items, None, split.n_items, (keys, batch.users.numpy()))
        assert mask.any() and (mask == searched).all()
