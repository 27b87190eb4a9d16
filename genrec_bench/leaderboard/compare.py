"""The comparison family of a leaderboard, tested over users and corrected together.

Family: for every data set and metric@K column, every method against the baseline, plus the best
method against the runner-up (when that pair is not already a baseline comparison), plus every claim of the
benchmark YAML not already among them (see claims.py). All of them, across all data sets, form one family for
the Holm / Benjamini-Hochberg correction. Columns identical for every user (HR@K = Recall@K) are tested once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import stats
from .collect import Collection, DatasetRecord

if TYPE_CHECKING:
    from .claims import Claim, ClaimOutcome


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


def _paired(record: DatasetRecord, method: str, reference: str, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
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


def compare(
    collection: Collection,
    baseline: str | None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
    claims: list[Claim] | None = None,
    claims_metric: str | None = None,
) -> tuple[list[Comparison], list[str], list[ClaimOutcome]]:
    """Run the family of paired tests and adjust it; returns the comparisons, any problems and the claims."""
    problems: list[str] = []
    comparisons: list[Comparison] = []
    outcomes: list[ClaimOutcome] = []
    for record in collection.datasets.values():
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
                comparisons.append(_run(record, method, reference, kind, metric, test, n_resamples, seed))
        for claim in claims or []:
            outcomes.append(_claim(record, claim, claims_metric, comparisons, test, n_resamples, seed))
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
    return comparisons, _unique(problems), outcomes


def _claim(
    record: DatasetRecord,
    claim: Claim,
    claims_metric: str | None,
    comparisons: list[Comparison],
    test: str,
    n_resamples: int,
    seed: int,
) -> ClaimOutcome:
    """Test one claim on one data set; it joins the family unless that pair and metric are tested already."""
    from .claims import ClaimOutcome
    from .table import protocol_primary

    metric = record.canonical(claim.metric or claims_metric or str(record.protocol.get("valid_metric") or ""))
    if metric not in record.columns:
        metric = metric or protocol_primary(record)
    outcome = ClaimOutcome(claim, record.name, metric)
    absent = [m for m in (claim.better, claim.worse) if m not in record.methods or not record.methods[m].per_user]
    if absent:
        outcome.note = f"not tested: {absent[0]} has no valid cells on {record.name}"
        return outcome
    if metric not in record.columns:
        outcome.note = f"not tested: no values for {metric} (known: {', '.join(record.columns)})"
        return outcome
    outcome.own = _run(record, claim.better, claim.worse, "claim", metric, test, n_resamples, seed)
    pair = {claim.better, claim.worse}
    outcome.member = next(
        (
            c
            for c in comparisons
            if c.dataset == record.name
            and c.metric == metric
            and {c.method, c.reference} == pair
            and c.result is not None
        ),
        None,
    )
    if outcome.member is None:
        comparisons.append(outcome.own)
        outcome.member = outcome.own
    outcome.note = outcome.own.note
    return outcome


def _run(
    record: DatasetRecord, method: str, reference: str, kind: str, metric: str, test: str, n_resamples: int, seed: int
) -> Comparison:
    a, b, note = _paired(record, method, reference, metric)
    comparison = Comparison(record.name, metric, method, reference, kind, note=note)
    try:
        comparison.result = stats.paired_test(a, b, test=test, n_resamples=n_resamples, seed=seed)
    except ValueError as exc:
        comparison.note = f"not tested ({exc})"
    return comparison


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
