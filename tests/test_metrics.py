"""Closed-form metric values on hand-built hit matrices."""

import math

import numpy as np
import pytest

from genrec_bench import metrics
from genrec_bench.evaluation import per_user_metrics, summarize

# user 0: hit at rank 1; user 1: hit at rank 3; user 2: no hit; user 3: hit at rank 5
HITS = np.zeros((4, 5), dtype=bool)
HITS[0, 0] = HITS[1, 2] = HITS[3, 4] = True
ONE = np.ones(4, dtype=int)


def test_recall_and_hit_rate():
    assert metrics.recall(HITS, ONE, 1).tolist() == [1, 0, 0, 0]
    assert metrics.recall(HITS, ONE, 3).tolist() == [1, 1, 0, 0]
    assert metrics.hit_rate(HITS, ONE, 5).tolist() == [1, 1, 0, 1]


def test_ndcg_closed_form():
    values = metrics.ndcg(HITS, ONE, 5)
    assert values == pytest.approx([1.0, 1 / math.log2(4), 0.0, 1 / math.log2(6)])
    assert metrics.ndcg(HITS, ONE, 2).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_ndcg_with_several_relevant_items():
    hits = np.array([[False, True, True, False]])
    idcg = 1 + 1 / math.log2(3)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics.ndcg(hits, np.array([2]), 4)[0] == pytest.approx(dcg / idcg)
    assert metrics.recall(hits, np.array([4]), 4)[0] == pytest.approx(0.5)


def test_mrr_and_precision():
    assert metrics.mrr(HITS, ONE, 5) == pytest.approx([1.0, 1 / 3, 0.0, 1 / 5])
    assert metrics.mrr(HITS, ONE, 4) == pytest.approx([1.0, 1 / 3, 0.0, 0.0])
    assert metrics.precision(HITS, ONE, 5) == pytest.approx([0.2, 0.2, 0.0, 0.2])


def test_cutoff_longer_than_ranking_is_an_error():
    with pytest.raises(ValueError):
        metrics.recall(HITS, ONE, 6)


def test_per_user_arrays_and_single_aggregation_point():
    per_user = per_user_metrics(HITS, [1, 5], {"ndcg": metrics.ndcg, "hr": metrics.hit_rate})
    assert set(per_user) == {"ndcg@1", "ndcg@5", "hr@1", "hr@5"}
    assert per_user["hr@5"].dtype == np.float64 and per_user["hr@5"].shape == (4,)
    assert summarize(per_user)["hr@5"] == pytest.approx(0.75)
