"""Paired comparisons over users: one test per pair of methods, and the correction of the whole family.

Family: for every data set and metric@K column, every method against the baseline, plus the best
method against the runner-up (when that pair is not already a baseline comparison), plus every claim of the
benchmark YAML not already among them (claims.py adds those, above this module). All of them, across all data
sets, form one family for the Holm / Benjamini-Hochberg correction (``adjust_family``). Columns identical for
every user (HR@K = Recall@K) are tested once. Imports only collect.py of the leaderboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import stats
from .collect import Collection, DatasetRecord


@dataclass
class Comparison:
    dataset: str
    metric: str
    method: str
    reference: str
    kind: str  # "baseline", "runner-up" or "claim"
    result: stats.PairedResult | None = None
    p_adj: float = math.nan
    significant: bool = False
    note: str = ""  # why there is no result, or a caveat about the users tested
    undecided: str = ""  # set by claims.budget_rule: a method stopped by budget while improving; no mark

    def to_dict(self) -> dict:
        out = {
            "dataset": self.dataset,
            "metric": self.metric,
            "method": self.method,
            "reference": self.reference,
            "kind": self.kind,
            "p_adj": self.p_adj,
            "significant": self.significant,
            "note": self.note,
            "undecided": self.undecided,
        }
        out.update(self.result.to_dict() if self.result else {})
        return out


def ranked_means(record: DatasetRecord, metric: str) -> list[tuple[str, float]]:
    """(method, mean over seeds) for the methods with a value for ``metric``, best (highest mean) first."""
    scored = [(name, mean) for name, m in record.methods.items() if (mean := m.mean(metric)) is not None]
    return sorted(scored, key=lambda x: -x[1])


def ranking(record: DatasetRecord, metric: str) -> list[str]:
    """Methods with a value for ``metric``, best (highest mean over seeds) first."""
    return [name for name, _ in ranked_means(record, metric)]


def paired_users(record: DatasetRecord, method: str, reference: str, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Aligned per-user vectors of two methods on the users both have."""
    a, b = record.methods[method], record.methods[reference]
    if metric not in a.per_user or metric not in b.per_user:
        return np.empty(0), np.empty(0), "no per-user values"
    ids_a, ids_b = a.user_ids, b.user_ids
    assert ids_a is not None and ids_b is not None  # set together with per_user (collect._average_seeds)
    if len(ids_a) == len(ids_b) and np.array_equal(ids_a, ids_b):
        return a.per_user[metric], b.per_user[metric], ""
    common, ia, ib = np.intersect1d(ids_a, ids_b, return_indices=True)
    same = len(common) == len(ids_a) == len(ids_b)
    note = "" if same else (f"users differ ({len(ids_a)} vs {len(ids_b)}); tested on the {len(common)} in common")
    return a.per_user[metric][ia], b.per_user[metric][ib], note


def resolve_baseline(collection: Collection, baseline: str | None, problems: list[str]) -> str | None:
    """The baseline to test against: the one asked for, else the one the runner recorded."""
    baseline = baseline or collection.baseline
    known = sorted({m for d in collection.datasets.values() for m in d.methods})
    if baseline is None:
        problems.append(
            f"{collection.path}: no baseline named (set 'baseline' in the benchmark YAML or pass "
            "--baseline); only best vs runner-up is tested"
        )
    elif baseline not in known:
        problems.append(
            f"{collection.path}: baseline {baseline!r} is not in the results (methods: "
            f"{', '.join(known)}); pass --baseline with one of them. No baseline comparisons made"
        )
        return None
    return baseline


def dataset_family(
    collection: Collection,
    record: DatasetRecord,
    baseline: str | None,
    test: str,
    n_resamples: int,
    seed: int,
    problems: list[str],
) -> list[Comparison]:
    """One data set's share of the family, not yet corrected: every method against the baseline and, per
    column, the best against the runner-up (unless that is a baseline comparison)."""
    comparisons: list[Comparison] = []
    base_ok = baseline is not None and bool(baseline in record.methods and record.methods[baseline].per_user)
    if baseline is not None and not base_ok:
        problems.append(
            f"{collection.path / record.name}: baseline {baseline!r} has no valid cells here; "
            "no baseline comparisons on this data set"
        )
    for metric in record.columns:
        ranked = ranking(record, metric)
        pairs = [(m, baseline, "baseline") for m in ranked if base_ok and baseline is not None and m != baseline]
        if len(ranked) > 1 and baseline not in ranked[:2]:
            pairs.append((ranked[0], ranked[1], "runner-up"))
        for method, reference, kind in pairs:
            comparisons.append(paired_comparison(record, method, reference, kind, metric, test, n_resamples, seed))
    return comparisons


def adjust_family(
    collection: Collection,
    comparisons: list[Comparison],
    test: str,
    correction: str,
    alpha: float,
    problems: list[str],
) -> list[str]:
    """Correct the whole family at once (sets ``p_adj`` and ``significant``); returns ``problems`` plus the
    comparisons' notes and test warnings, without repeats."""
    for c in comparisons:
        if c.note:
            problems.append(f"{collection.path / c.dataset}: {c.method} vs {c.reference}: {c.note}")
    p_raw = np.array([c.result.p if c.result else math.nan for c in comparisons])
    for c, p in zip(comparisons, stats.adjust(p_raw, correction), strict=True):
        c.p_adj = float(p)
        c.significant = bool(p < alpha)
    if test == "wilcoxon" and any(c.result and c.result.n > 1000 for c in comparisons):
        problems.append(
            "Wilcoxon signed-rank over more than 1000 users over-rejects on recommendation data "
            "(Ihemelandu & Ekstrand, SIGIR 2023); prefer the t-test or randomization test"
        )
    return _unique(problems)


def paired_comparison(
    record: DatasetRecord, method: str, reference: str, kind: str, metric: str, test: str, n_resamples: int, seed: int
) -> Comparison:
    """``method - reference`` on ``metric``, paired over the users both have; untested ones say why in ``note``."""
    a, b, note = paired_users(record, method, reference, metric)
    comparison = Comparison(record.name, metric, method, reference, kind, note=note)
    try:
        comparison.result = stats.paired_test(a, b, test=test, n_resamples=n_resamples, seed=seed)
    except ValueError as exc:
        comparison.note = f"not tested ({exc})"
    return comparison


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
