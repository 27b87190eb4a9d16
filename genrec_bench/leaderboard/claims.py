"""Claims a paper makes (``claims:`` in the benchmark YAML) and their verdicts on every data set.

A claim is ``"contrec > tiger"`` (on the default metric: ``claims_metric``, else the protocol's ``valid_metric``)
or ``{"contrec > tiger": "recall@10"}``; ``"a < b"`` means ``"b > a"``. Each claim is one paired test of
``better - worse`` in the leaderboard's family: a claim whose pair and metric the leaderboard already tests
(e.g. a method against the baseline) takes that test's adjusted p and adds nothing to the family.

Every verdict rule lives here: which test a claim shares (``run_claim``), and what its adjusted p and sign
mean (``ClaimOutcome.verdict``). With several data sets each claim is also decided pooled over them
(``pooled_claim``: every data set weighs the same, ``stats.stratified_test``), as one more member of the family.
``compare_with_claims`` runs the leaderboard's whole family, claims included.
Imports collect.py and compare.py of the leaderboard.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import stats
from ..errors import ConfigError
from .collect import Collection, DatasetRecord, protocol_primary
from .compare import Comparison, adjust_family, dataset_family, paired_comparison, paired_users

_CLAIM = re.compile(r"^\s*([^\s<>]+)\s*([<>])(?!=)\s*([^\s<>]+)\s*$")
BETTER, WORSE, NO_DIFFERENCE, NOT_TESTED = "better", "worse", "no significant difference", "not tested"
UNDECIDED = "undecided"
POOLED = "pooled"  # the data set name of a claim decided over all data sets at once


def budget_rule(record: DatasetRecord, methods: list[str], budget: str | None) -> str:
    """Why a comparison of ``methods`` on ``record`` gets no verdict: each method whose generator stopped at a
    cap while its validation still improved (in any seed), e.g. ``tiger stopped by budget while improving``.
    Empty when every method converged, did not train, or the benchmark declares a matched ``budget``."""
    if budget:
        return ""
    open_ = [m for m in methods if m in record.methods and record.methods[m].stopped_improving]
    return "; ".join(f"{m} stopped by budget while improving" for m in open_)


def seed_note(record: DatasetRecord, better: str, worse: str) -> str:
    """``contrec seed 0 against sasrec seeds 0, 1, 2`` where the two methods' per-user values average different
    seeds (a verdict then rests on the one-seed side's single run), else ``""``."""
    sides = [(m, record.methods[m].seeds) for m in (better, worse)]
    if sides[0][1] == sides[1][1]:
        return ""
    return " against ".join(f"{m} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}" for m, s in sides)


@dataclass(frozen=True)
class Claim:
    better: str  # the method claimed to score higher
    worse: str
    metric: str | None  # None: the default metric
    text: str  # as written

    def label(self) -> str:
        return f"{self.better} > {self.worse}"


def parse_claim(item: Any, where: str = "claims") -> Claim:
    """``"a > b"``, ``"a < b"`` or a one-key mapping ``{"a > b": "metric@K"}``; ConfigError otherwise."""
    metric = None
    if isinstance(item, dict) and len(item) == 1:
        item, metric = next(iter(item.items()))
        if not isinstance(metric, str) or "@" not in metric:
            raise ConfigError(f"{where}: {item!r}: the metric must look like 'recall@10', got {metric!r}")
    match = _CLAIM.match(item) if isinstance(item, str) else None
    if match is None or match.group(1) == match.group(3):
        raise ConfigError(f"{where}: expected 'method_a > method_b' (optionally 'a > b: metric@K'), got {item!r}")
    a, op, b = match.groups()
    better, worse = (a, b) if op == ">" else (b, a)
    return Claim(better, worse, metric, f"{a} {op} {b}")


def parse_claims(items: Any, methods: list[str] | None = None, where: str = "claims") -> list[Claim]:
    """All claims of a ``claims:`` list; with ``methods``, every name must be one of them."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: expected a list like ['contrec > tiger', 'tiger > sasrec']")
    claims = [parse_claim(item, f"{where}[{i}]") for i, item in enumerate(items)]
    for i, claim in enumerate(claims):
        unknown = [m for m in (claim.better, claim.worse) if methods is not None and m not in methods]
        if unknown:
            raise ConfigError(f"{where}[{i}]: {unknown[0]!r} is not one of the methods ({', '.join(methods or [])})")
    return claims


@dataclass
class ClaimOutcome:
    """One claim on one data set: its paired test (``better - worse``) and the family member it counts as."""

    claim: Claim
    dataset: str
    metric: str
    own: Comparison | None = None  # the claim's test, ``method = better``, ``reference = worse``
    member: Comparison | None = None  # the family member that carries the adjusted p (``own`` or an existing one)
    note: str = ""
    #: why no verdict is given (a method stopped by budget while improving), or "" (see :func:`budget_rule`)
    undecided: str = ""
    budget: str | None = None  # the declared matched budget the verdict holds at

    @property
    def p_adj(self) -> float:
        return self.member.p_adj if self.member is not None else math.nan

    @property
    def significant(self) -> bool:
        return bool(self.member is not None and self.member.significant)

    @property
    def test_verdict(self) -> str:
        """What the paired test alone says: better / worse / no significant difference / not tested."""
        if self.own is None or self.own.result is None:
            return NOT_TESTED
        if not self.significant:
            return NO_DIFFERENCE
        return BETTER if self.own.result.diff > 0 else WORSE

    @property
    def verdict(self) -> str:
        """The test's verdict, unless a method stopped by budget while improving: then ``undecided (...)``, or,
        where the benchmark declares the comparison budget-matched, the verdict ``at a budget of ...``."""
        verdict = self.test_verdict
        if verdict == NOT_TESTED:
            return verdict
        if self.undecided:
            return f"{UNDECIDED} ({self.undecided})"
        return f"{verdict} at a budget of {self.budget}" if self.budget else verdict

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "claim": self.claim.text,
            "better": self.claim.better,
            "worse": self.claim.worse,
            "dataset": self.dataset,
            "metric": self.metric,
            "verdict": self.verdict,
            "test_verdict": self.test_verdict,
            "undecided": self.undecided,
            "budget": self.budget,
            "p_adj": self.p_adj,
            "significant": self.significant,
            "note": self.note,
            "shared_test": self.member is not None and self.member is not self.own,
        }
        out.update(self.own.result.to_dict() if self.own is not None and self.own.result else {})
        return out


def claim_metric(record: DatasetRecord, claim: Claim, claims_metric: str | None) -> str:
    """The metric a claim is tested on: its own, else ``claims_metric``, else the protocol's ``valid_metric``
    (else the data set's primary column), in the record's canonical spelling."""
    metric = record.canonical(claim.metric or claims_metric or str(record.protocol.get("valid_metric") or ""))
    return metric if metric in record.columns else metric or protocol_primary(record)


def run_claim(
    record: DatasetRecord,
    claim: Claim,
    claims_metric: str | None,
    comparisons: list[Comparison],
    test: str,
    n_resamples: int,
    seed: int,
    budget: str | None = None,
) -> ClaimOutcome:
    """Test one claim on one data set; it joins the family (appended to ``comparisons``, the data set's share
    so far) unless that pair and metric are tested already, in which case it shares that test."""
    outcome = ClaimOutcome(claim, record.name, claim_metric(record, claim, claims_metric), budget=budget)
    metric = outcome.metric
    outcome.undecided = budget_rule(record, [claim.better, claim.worse], budget)
    absent = [m for m in (claim.better, claim.worse) if m not in record.methods or not record.methods[m].per_user]
    if absent:
        outcome.note = f"{absent[0]} has no valid cells on {record.name}"
        return outcome
    if metric not in record.columns:
        outcome.note = f"no values for {metric} (known: {', '.join(record.columns)})"
        return outcome
    outcome.own = paired_comparison(record, claim.better, claim.worse, "claim", metric, test, n_resamples, seed)
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
    outcome.note = "; ".join(n for n in (outcome.own.note, seed_note(record, claim.better, claim.worse)) if n)
    return outcome


def pooled_claim(
    collection: Collection, claim: Claim, claims_metric: str | None, budget: str | None = None
) -> ClaimOutcome:
    """One claim over every data set where both methods have per-user values (at least two), each data set
    weighing the same (``stats.stratified_test``). Undecided when a method stopped by budget while improving on
    any data set pooled; ``note`` names the data sets used and those left out."""
    records = list(collection.datasets.values())
    metric = claim_metric(records[0], claim, claims_metric)
    outcome = ClaimOutcome(claim, POOLED, metric, budget=budget)
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    used: list[str] = []
    left_out: list[str] = []
    reasons: list[str] = []
    unequal: list[str] = []
    for record in records:
        present = all(m in record.methods and record.methods[m].per_user for m in (claim.better, claim.worse))
        a, b = (paired_users(record, claim.better, claim.worse, metric)[:2]) if present else (np.empty(0), np.empty(0))
        if len(a) < 2:
            left_out.append(record.name)
            continue
        pairs.append((a, b))
        used.append(record.name)
        if seeds := seed_note(record, claim.better, claim.worse):
            unequal.append(f"{record.name}: {seeds}")
        rule = budget_rule(record, [claim.better, claim.worse], budget)
        if rule:
            reasons.append(f"{record.name}: {rule}")
    outcome.undecided = "; ".join(reasons)
    outcome.note = f"over {', '.join(used)}" + (f"; without {', '.join(left_out)} (no cells)" if left_out else "")
    outcome.note += f"; unequal seeds ({'; '.join(unequal)})" if unequal else ""
    if len(pairs) < 2:
        outcome.note = f"both methods have cells on {len(pairs)} data set(s); pooling needs 2"
        return outcome
    outcome.own = Comparison(POOLED, metric, claim.better, claim.worse, "claim", note=outcome.note)
    outcome.own.result = stats.stratified_test(pairs)
    outcome.member = outcome.own
    return outcome


def compare_with_claims(
    collection: Collection,
    baseline: str | None,
    test: str = "t",
    correction: str = "holm",
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int = 0,
    claims: list[Claim] | None = None,
    claims_metric: str | None = None,
    budget: str | None = None,
) -> tuple[list[Comparison], list[str], list[ClaimOutcome]]:
    """Run the family of paired tests (per data set: baseline and runner-up comparisons, then the claims) and
    adjust it; returns the comparisons, any problems and the claims' outcomes."""
    problems: list[str] = []
    comparisons: list[Comparison] = []
    outcomes: list[ClaimOutcome] = []
    for record in collection.datasets.values():
        own = dataset_family(collection, record, baseline, test, n_resamples, seed, problems)
        for claim in claims or []:
            outcomes.append(run_claim(record, claim, claims_metric, own, test, n_resamples, seed, budget))
        for c in own:  # a "significantly better / worse" mark is a verdict too
            c.undecided = budget_rule(record, [c.method, c.reference], budget)
        comparisons += own
    if len(collection.datasets) > 1:
        for claim in claims or []:
            pooled = pooled_claim(collection, claim, claims_metric, budget)
            outcomes.append(pooled)
            if pooled.own is not None:
                comparisons.append(pooled.own)  # one more member of the family, adjusted with the rest
    return comparisons, adjust_family(collection, comparisons, test, correction, alpha, problems), outcomes
