"""Paired significance tests over per-user metric values, and multiple-comparison corrections.

Every test compares two aligned vectors ``a`` and ``b`` (one value per user, the same users in the same
order) through the paired differences ``d = a - b``. All tests are two-sided; resampling tests are seeded.

- ``t``: paired t-test (``scipy.stats.ttest_rel``); CI is the t-interval of the mean difference.
- ``permutation``: paired randomization test, flipping the sign of each user's difference (exact through
  ``scipy.stats.permutation_test(permutation_type="samples")`` when ``2**n <= n_resamples``, else Monte Carlo,
  see ``sign_flip_pvalue``); CI is the t-interval.
- ``bootstrap``: paired bootstrap of the mean difference (``scipy.stats.bootstrap(paired=True)``,
  percentile interval); p is the two-sided p that inverts the percentile interval
  (``2 * min(P*(d* <= 0), P*(d* >= 0))``), so p < 0.05 exactly when 0 is outside the 95% interval.
- ``wilcoxon``: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``); CI is the t-interval. It
  over-rejects at large n on recommendation data (Ihemelandu & Ekstrand, SIGIR 2023): prefer ``t``.

Effect size: ``d_z = mean(d) / sd(d)`` (paired Cohen's d, ddof=1). Relative difference: ``mean(a) / mean(b) - 1``;
its CI is a CI of the ratio of means ``rho = mean(a) / mean(b)``, minus 1 (``ratio_ci``): Fieller's interval for the
paired data (the ratios ``rho`` for which the paired t-test of ``a - rho * b`` does not reject), or with
``bootstrap`` the percentile interval of the resampled ratio. Both stay above -100% for non-negative metrics
except where Fieller's lower end passes 0 (``mean(a)`` itself not distinguishable from 0): that end is clipped
at -100% and ``rel_ci_clipped`` says so.

Across data sets (``stratified_test``): each data set is a stratum of paired users and weighs the same; the
pooled difference is the mean of the data sets' mean differences, its standard error from the data sets' own
(independent) variances, and the test a z-test on it, so a claim is judged "on average over the data sets" rather
than by the data set with the most users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

TESTS = ("t", "permutation", "bootstrap", "wilcoxon")
CORRECTIONS = ("holm", "bh", "none")
TEST_NAMES = {
    "t": "paired t-test",
    "permutation": "paired randomization (sign-flip) test",
    "bootstrap": "paired bootstrap test",
    "wilcoxon": "Wilcoxon signed-rank test",
}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg", "none": "no correction"}


@dataclass(frozen=True)
class PairedResult:
    """The outcome of one paired comparison of ``a`` against ``b``."""

    test: str
    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean(a - b)
    rel_diff: float  # diff / mean(b); nan when mean(b) == 0
    ci_low: float  # 95% (by default) interval of diff
    ci_high: float
    rel_ci_low: float  # CI of mean(a) / mean(b) - 1 (see ratio_ci); nan when unbounded
    rel_ci_high: float
    p: float
    d_z: float
    rel_ci_clipped: bool = False  # the lower end was clipped at -100% (metrics >= 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def _batch(n: int) -> int:
    """Resamples per batch so that one batch holds about 4e6 floats (32 MB)."""
    return max(1, int(4e6 // max(n, 1)))


def sign_flip_pvalue(d: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization p of ``mean(d) == 0``: flip the sign of each user's difference.

    Exact (``scipy.stats.permutation_test``, one sample, ``permutation_type="samples"``) when all ``2**n``
    sign patterns fit in ``n_resamples``. Otherwise Monte Carlo in numpy, ``(1 + #{|mean(s*d)| >= |mean(d)|}) /
    (1 + n_resamples)``: scipy's resampling loop is too slow for thousands of users (about 10 s per test at
    n = 10,000), this takes well under a second.
    """
    import scipy.stats as st

    d = np.asarray(d, dtype=np.float64)
    if 2 ** min(len(d), 64) <= n_resamples:
        return float(
            st.permutation_test(
                (d,),
                lambda x, axis: np.mean(x, axis=axis),
                vectorized=True,
                permutation_type="samples",
                n_resamples=n_resamples,
            ).pvalue
        )
    rng = np.random.default_rng(seed)
    observed = abs(d.mean()) * (1 - 1e-12)  # tolerance: sums of the same values in another order
    extreme = 0
    n, total = len(d), d.sum()
    for start in range(0, n_resamples, _batch(n)):
        size = min(_batch(n), n_resamples - start)
        keep = np.unpackbits(rng.integers(0, 256, size=(size, -(-n // 8)), dtype=np.uint8), axis=1, count=n)
        flipped = (2 * (keep.astype(np.float64) @ d) - total) / n  # mean of d with the signs of the zeros flipped
        extreme += int(np.count_nonzero(np.abs(flipped) >= observed))
    return (extreme + 1) / (n_resamples + 1)


def fieller_interval(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Fieller's interval for ``rho = E[a] / E[b]`` on paired data: ``{rho: |t(a - rho*b)| <= t_crit}``.

    Solves ``(mean(a) - rho*mean(b))**2 = q * var(a - rho*b)`` with ``q = t_{n-1}**2 / n``. It is bounded only when
    ``mean(b)`` is itself significantly away from 0 (``mean(b)**2 > q * var(b)``); otherwise returns (nan, nan).
    """
    import scipy.stats as st

    n = len(a)
    q = st.t.ppf(0.5 + confidence / 2, n - 1) ** 2 / n
    cov = np.cov(a, b, ddof=1)
    ma, mb = float(a.mean()), float(b.mean())
    qa, qb, qab = q * cov[0, 0], q * cov[1, 1], q * cov[0, 1]
    A, B, C = mb * mb - qb, -2 * (ma * mb - qab), ma * ma - qa
    if A <= 0:
        return math.nan, math.nan
    root = math.sqrt(max(B * B - 4 * A * C, 0.0))
    return (-B - root) / (2 * A), (-B + root) / (2 * A)


def ratio_ci(
    a: np.ndarray, b: np.ndarray, test: str = "t", n_resamples: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, bool]:
    """CI of ``mean(a) / mean(b) - 1`` and whether its lower end was clipped at -1 (non-negative metrics).

    ``bootstrap``: the paired percentile bootstrap of the ratio of means (``scipy.stats.bootstrap``, same seed as
    the test); every other test: Fieller's interval (``fieller_interval``), which contains 0 exactly when the
    paired t-test does not reject.
    """
    import scipy.stats as st

    if test == "bootstrap":
        boot = st.bootstrap(
            (a, b),
            _ratio,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            batch=_batch(len(a)),
            method="percentile",
            confidence_level=confidence,
            random_state=np.random.default_rng(seed),
        )
        low, high = (float(x) for x in boot.confidence_interval)
    else:
        low, high = fieller_interval(a, b, confidence)
    clipped = bool(low < 0 and a.min() >= 0 and b.min() >= 0)
    return (max(low, 0.0) if clipped else low) - 1, high - 1, clipped


def _ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean(x, axis=axis) / np.mean(y, axis=axis)


def paired_test(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    test: str = "t",
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedResult:
    """Test whether ``mean(a - b)`` differs from 0; see the module docstring for each test."""
    import scipy.stats as st

    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two aligned 1-D vectors, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"need at least 2 paired values, got {len(a)}")
    d = a - b
    diff, sd = float(d.mean()), float(d.std(ddof=1))
    if np.all(d == d[0]):  # no variation: tests are undefined; decide by the sign of the difference
        p, low, high = (1.0 if diff == 0 else 0.0), diff, diff
        d_z = 0.0 if diff == 0 else math.copysign(math.inf, diff)
    else:
        d_z = diff / sd
        ttest = st.ttest_rel(a, b)
        low, high = ttest.confidence_interval(confidence)
        if test == "t":
            p = ttest.pvalue
        elif test == "wilcoxon":
            p = st.wilcoxon(a, b).pvalue
        elif test == "permutation":
            p = sign_flip_pvalue(d, n_resamples, seed)
        else:
            boot = st.bootstrap(
                (a, b),
                _mean_diff,
                paired=True,
                vectorized=True,
                n_resamples=n_resamples,
                batch=_batch(len(a)),
                method="percentile",
                confidence_level=confidence,
                random_state=np.random.default_rng(seed),
            )
            low, high = boot.confidence_interval
            dist = boot.bootstrap_distribution
            tail = min(np.count_nonzero(dist <= 0), np.count_nonzero(dist >= 0))
            p = min(1.0, 2 * (tail + 1) / (len(dist) + 1))
    mean_b = float(b.mean())
    rel = diff / mean_b if mean_b != 0 else math.nan
    if mean_b == 0:
        rel_low, rel_high, clipped = math.nan, math.nan, False
    elif np.all(d == d[0]) and np.all(b == b[0]):  # both constant: the ratio is known exactly
        rel_low, rel_high, clipped = rel, rel, False
    else:
        rel_low, rel_high, clipped = ratio_ci(np.asarray(a), np.asarray(b), test, n_resamples, seed, confidence)
    return PairedResult(
        test=test,
        n=len(a),
        mean_a=float(a.mean()),
        mean_b=mean_b,
        diff=diff,
        rel_diff=rel,
        ci_low=float(low),
        ci_high=float(high),
        rel_ci_low=float(rel_low),
        rel_ci_high=float(rel_high),
        p=float(p),
        d_z=float(d_z),
        rel_ci_clipped=clipped,
    )


def holm(pvalues: npt.ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values (controls the family-wise error rate)."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def benjamini_hochberg(pvalues: npt.ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate)."""
    from scipy.stats import false_discovery_control

    p = np.asarray(pvalues, dtype=np.float64)
    return false_discovery_control(p, method="bh") if len(p) else p.copy()


def adjust(pvalues: npt.ArrayLike, method: str = "holm") -> np.ndarray:
    """Adjust a family of p-values with ``holm``, ``bh`` or ``none``; nan entries stay nan and do not count."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    p = np.asarray(pvalues, dtype=np.float64)
    out = p.copy()
    valid = ~np.isnan(p)
    if method == "holm":
        out[valid] = holm(p[valid])
    elif method == "bh":
        out[valid] = benjamini_hochberg(p[valid])
    return out


def stratified_test(pairs: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]], confidence: float = 0.95) -> PairedResult:
    """Pool paired comparisons over strata (data sets) with equal weight: ``diff = mean_s(mean(a_s - b_s))``,
    ``se = sqrt(sum_s var(d_s) / n_s) / S``, a two-sided z-test and a normal CI; the relative difference and its
    CI divide by ``mean_s(mean(b_s))`` (taken as fixed). ``test`` reads ``stratified-z``; ``n`` is all users."""
    import scipy.stats as st

    if len(pairs) < 2:
        raise ValueError(f"need at least 2 strata to pool, got {len(pairs)}")
    diffs, spreads, sizes, means_a, means_b = [], [], [], [], []
    for a, b in pairs:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
            raise ValueError(f"need aligned 1-D vectors of >= 2 users per stratum, got {a.shape} and {b.shape}")
        d = a - b
        diffs.append(d.mean())
        spreads.append(d.var(ddof=1))
        sizes.append(len(d))
        means_a.append(a.mean())
        means_b.append(b.mean())
    diff = float(np.mean(diffs))
    se = math.sqrt(float(np.sum(np.divide(spreads, sizes)))) / len(pairs)
    z = st.norm.ppf(0.5 + confidence / 2)
    if se == 0:
        p, low, high = (1.0 if diff == 0 else 0.0), diff, diff
    else:
        p, low, high = float(2 * st.norm.sf(abs(diff) / se)), diff - z * se, diff + z * se
    mean_b = float(np.mean(means_b))
    rel = diff / mean_b if mean_b else math.nan
    rel_low, rel_high = (low / mean_b, high / mean_b) if mean_b else (math.nan, math.nan)
    spread = math.sqrt(float(np.mean(spreads)))  # d_z: the pooled difference over the strata's mean sd
    return PairedResult(
        test="stratified-z",
        n=int(np.sum(sizes)),
        mean_a=float(np.mean(means_a)),
        mean_b=mean_b,
        diff=diff,
        rel_diff=rel,
        ci_low=float(low),
        ci_high=float(high),
        rel_ci_low=float(max(rel_low, -1.0)),
        rel_ci_high=float(rel_high),
        p=p,
        d_z=diff / spread if spread else 0.0,
        rel_ci_clipped=bool(rel_low < -1.0),
    )
