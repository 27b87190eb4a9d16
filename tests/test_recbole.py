"""The recbole plugin: metric cross-check against RecBole's evaluator, an end-to-end run, bad input."""

import inspect
import sys

import numpy as np
import pytest
import torch
from conftest import write_benchmark

from genrec_bench import metrics, store
from genrec_bench.config import load_benchmark
from genrec_bench.errors import ConfigError, PluginError
from genrec_bench.evaluation import per_user_metrics, summarize
from genrec_bench.ranking import topk_scores
from genrec_bench.runner import Runner

pytest.importorskip("recbole")
from genrec_bench_plugins.recbole import data as rbdata  # noqa: E402
from genrec_bench_plugins.recbole.compat import import_recbole_metrics  # noqa: E402
from genrec_bench_plugins.recbole.generator import RecBoleGenerator  # noqa: E402

KS = [1, 3, 5, 10, 20]
OURS = {"recall": metrics.recall, "ndcg": metrics.ndcg, "mrr": metrics.mrr, "hr": metrics.hit_rate}
THEIRS = {"recall": "Recall", "ndcg": "NDCG", "mrr": "MRR", "hr": "Hit"}


def _planted(n_users: int = 300, n_items: int = 60, seed: int = 0):
    """Random scores, histories to exclude, and a target planted at a chosen rank (or beyond the top 20)."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand((n_users, n_items), generator=g)
    history = torch.stack([torch.randperm(n_items, generator=g)[:8] for _ in range(n_users)])
    history[::3, 5:] = -1  # shorter histories for some users
    masked = scores.clone()
    rows = torch.arange(n_users)[:, None].expand_as(history)
    masked[rows[history >= 0], history[history >= 0]] = float("-inf")
    order = masked.argsort(dim=1, descending=True)
    ranks = torch.randint(0, 30, (n_users,), generator=g)  # 0-based rank of the target after exclusion
    targets = order[torch.arange(n_users), ranks]
    return scores, masked, history, targets


def _recbole_evaluate(masked: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """RecBole's own path: Collector (topk over -inf-masked scores) then Evaluator."""
    import_recbole_metrics()
    from recbole.evaluator import Collector, Evaluator

    config = {
        "metrics": list(THEIRS.values()),
        "topk": KS,
        "metric_decimal_place": 12,
        "device": torch.device("cpu"),
        "eval_args": {"mode": {"valid": "full", "test": "full"}},
    }
    collector = Collector(config)
    collector.eval_batch_collect(masked, None, torch.arange(len(targets)), targets)
    return dict(Evaluator(config).evaluate(collector.get_data_struct()))


def test_metrics_match_recbole_evaluator_on_planted_targets():
    scores, masked, history, targets = _planted()
    ranking = topk_scores(scores, max(KS), history)
    hits = (ranking.items == targets[:, None]).numpy()
    ours = summarize(per_user_metrics(hits, KS, OURS))
    theirs = _recbole_evaluate(masked, targets)
    for name, their_name in THEIRS.items():
        for k in KS:
            assert ours[f"{name}@{k}"] == pytest.approx(theirs[f"{their_name.lower()}@{k}"], abs=1e-10), (name, k)
    assert 0 < ours["recall@10"] < 1  # the planted ranks put some targets inside, some outside


def test_per_user_metrics_match_recbole_with_several_relevant_items():
    rb_metrics = import_recbole_metrics()
    config = {"topk": KS, "metric_decimal_place": 12}
    g = np.random.default_rng(1)
    hits = g.random((200, max(KS))) < 0.15
    n_relevant = np.maximum(hits.sum(axis=1), g.integers(1, 6, 200))  # >= the hits in the top K
    for name, their_name in THEIRS.items():
        metric = getattr(rb_metrics, their_name)(config)
        needs_len = "pos_len" in inspect.signature(metric.metric_info).parameters  # MRR, Hit take hits only
        theirs = metric.metric_info(hits, n_relevant) if needs_len else metric.metric_info(hits)
        for k in KS:
            np.testing.assert_allclose(OURS[name](hits, n_relevant, k), theirs[:, k - 1], atol=1e-12)


def test_training_examples_and_histories_follow_recbole_layout():
    item_map, user_map = torch.arange(1, 7), torch.arange(1, 3)  # RecBole id = index + 1
    ex = rbdata.training_examples([np.array([0, 1, 2, 3]), np.array([5, 4])], 2, item_map, user_map)
    assert ex.item_seq.tolist() == [[1, 0], [1, 2], [2, 3], [6, 0]]
    assert ex.item_len.tolist() == [1, 2, 2, 1] and ex.targets.tolist() == [2, 3, 4, 5]
    assert ex.users.tolist() == [1, 1, 1, 2]
    seq, length = rbdata.histories(torch.tensor([[-1, -1, 3], [0, 1, 2]]), item_map)
    assert seq.tolist() == [[4, 0, 0], [1, 2, 3]] and length.tolist() == [1, 3]


def _run(bench_file, tmp_path):
    return Runner(load_benchmark(bench_file), tmp_path / "r", tmp_path / "c", "cpu", show_progress=False).run()


def test_end_to_end_tiny_run_through_the_runner(tmp_path, tiny_atomic):
    methods = """
  popularity: {tokenizer: atomic, generator: popularity, retriever: full_ranking}
  gru4rec:
    tokenizer: atomic
    generator: {name: recbole, model: GRU4Rec, config: {embedding_size: 16, hidden_size: 16, epochs: 3,
                train_batch_size: 64}}
    retriever: full_ranking
  sasrec:
    tokenizer: atomic
    generator: {name: recbole, model: SASRec, config: {hidden_size: 16, inner_size: 32, n_layers: 1, epochs: 2,
                train_batch_size: 64, loss_type: BPR, train_neg_sample_args: {distribution: uniform, sample_num: 1}}}
    retriever: full_ranking
  bert4rec:
    tokenizer: atomic
    generator: {name: recbole, model: BERT4Rec, config: {hidden_size: 16, inner_size: 32, n_layers: 1, epochs: 2,
                train_batch_size: 64}}
    retriever: full_ranking
"""
    outcomes = _run(write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods), tmp_path)
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.error for o in outcomes]
    cell = tmp_path / "r" / "tiny" / "tiny" / "gru4rec" / "seed-0"
    result = store.read_result(cell)
    assert result["health"]["generator/epochs_run"] == 3 and result["health"]["generator/best_epoch"] >= 1
    assert store.read_per_user(cell)["ndcg@10"].shape == (40,)


def test_scores_come_back_in_genrec_item_order(tmp_path, tiny_atomic):
    from genrec_bench.context import RunContext
    from genrec_bench.data import SplitData, load_dataset

    split = SplitData(load_dataset("tiny", {"loader": "atomic", "path": str(tiny_atomic)}, tmp_path), 8)
    ctx = RunContext(torch.device("cpu"), 0, tmp_path, tmp_path, show_progress=False)
    gen = RecBoleGenerator("GRU4Rec", {"embedding_size": 8, "hidden_size": 8, "epochs": 1})
    gen.fit(split, None, lambda: {"ndcg@10": 0.0}, ctx)
    batch = next(split.batches("test", 16))
    scores = gen.generate(batch, ctx)
    seq, length = rbdata.histories(batch.items, gen.item_map)
    raw = gen.model.full_sort_predict(gen.rb.Interaction({"item_id_list": seq, "item_length": length}))
    assert scores.shape == (16, split.n_items)
    assert torch.allclose(scores, raw[:, gen.item_map]) and gen.item_map.unique().numel() == split.n_items


@pytest.mark.parametrize(
    "model, config, message",
    [
        ("SASRek", {}, "not a RecBole sequential model; did you mean 'SASRec'"),
        ("BPR", {}, "not a RecBole sequential model"),
        ("SASRec", {"hiden_size": 64}, "no such setting; did you mean 'hidden_size'"),
        ("SASRec", {"MAX_ITEM_LIST_LENGTH": 50}, "use protocol.max_history"),
        ("SASRec", {"hidden_size": 63}, "not a multiple of the number of attention heads"),
        ("SASRec", {"loss_type": "XYZ"}, "loss_type"),
        ("GRU4Rec", {"learner": "lion"}, "unknown optimizer 'lion'"),
    ],
)
def test_bad_input_is_one_clear_line(model, config, message):
    with pytest.raises(ConfigError, match=message) as info:
        RecBoleGenerator(model, config)
    assert "\n" not in str(info.value)


def test_missing_recbole_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "recbole", None)  # makes `import recbole` fail
    with pytest.raises(PluginError, match="pip install --no-deps recbole==1.2.1"):
        RecBoleGenerator("SASRec")


def test_failed_construction_is_recorded_as_the_cell_reason(tmp_path, tiny_atomic):
    methods = """
  broken:
    tokenizer: atomic
    generator: {name: recbole, model: NoSuchRec}
    retriever: full_ranking
"""
    bench = write_benchmark(tmp_path / "b.yaml", tiny_atomic, methods).read_text().replace("baseline: popularity\n", "")
    (tmp_path / "b.yaml").write_text(bench)
    outcome = _run(tmp_path / "b.yaml", tmp_path)[0]
    assert outcome.status == "failed" and "'NoSuchRec' is not a RecBole sequential model" in outcome.error
