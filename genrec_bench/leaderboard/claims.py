"""Claims a paper makes (``claims:`` in the benchmark YAML) and their verdicts on every data set.

A claim is ``"contrec > tiger"`` (on the default metric: ``claims_metric``, else the protocol's ``valid_metric``)
or ``{"contrec > tiger": "recall@10"}``; ``"a < b"`` means ``"b > a"``. Each claim is one paired test of
``better - worse`` in the leaderboard's family: a claim whose pair and metric the leaderboard already tests
(e.g. a method against the baseline) takes that test's adjusted p and adds nothing to the family.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .compare import Comparison

_CLAIM = re.compile(r"^\s*([^\s<>]+)\s*([<>])(?!=)\s*([^\s<>]+)\s*$")
BETTER, WORSE, NO_DIFFERENCE, NOT_TESTED = "better", "worse", "no significant difference", "not tested"


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

    @property
    def p_adj(self) -> float:
        return self.member.p_adj if self.member is not None else math.nan

    @property
    def significant(self) -> bool:
        return bool(self.member is not None and self.member.significant)

    @property
    def verdict(self) -> str:
        if self.own is None or self.own.result is None:
            return NOT_TESTED
        if not self.significant:
            return NO_DIFFERENCE
        return BETTER if self.own.result.diff > 0 else WORSE

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "claim": self.claim.text,
            "better": self.claim.better,
            "worse": self.claim.worse,
            "dataset": self.dataset,
            "metric": self.metric,
            "verdict": self.verdict,
            "p_adj": self.p_adj,
            "significant": self.significant,
            "note": self.note,
            "shared_test": self.member is not None and self.member is not self.own,
        }
        out.update(self.own.result.to_dict() if self.own is not None and self.own.result else {})
        return out
