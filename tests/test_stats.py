"""genrec_bench.stats: agreement with scipy, hand-worked corrections, A/A calibration and power."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st

from genrec_bench.stats import TESTS, adjust, benjamini_hochberg, holm, paired_test


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    a = rng.random(60)
    return a, a - 0.04 + rng.normal(0, 0.15, 60)


def _mean_diff(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def test_t_matches_scipy(pair):
    a, b = pair
    result, ref = paired_test(a, b, "t"), st.ttest_rel(a, b)
    assert result.p == pytest.approx(ref.pvalue, rel=1e-12)
    low, high = ref.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), rel=1e-12)
    d = a - b
    assert result.diff == pytest.approx(d.mean())
    assert result.d_z == pytest.approx(d.mean() / d.std(ddof=1))
    assert result.rel_diff == pytest.approx(d.mean() / b.mean())
    assert result.n == 60


def test_relative_ci_is_fieller_interval_inverting_the_t_test(pair):
    a, b = pair
    a = a + 0.3  # keep every value non-negative and mean(b) well away from 0
    b = b + 0.3
    result = paired_test(a, b, "t")
    for rho in (1 + result.rel_ci_low, 1 + result.rel_ci_high):  # both ends: the t-test of a - rho*b has p = alpha
        assert st.ttest_1samp(a - rho * b, 0.0).pvalue == pytest.approx(0.05, rel=1e-6)
    inside = 1 + (result.rel_ci_low + result.rel_ci_high) / 2
    assert st.ttest_1samp(a - inside * b, 0.0).pvalue > 0.05
    assert result.rel_ci_low < result.rel_diff < result.rel_ci_high and not result.rel_ci_clipped


@pytest.mark.parametrize("seed", range(6))
def test_relative_ci_excludes_zero_exactly_when_the_t_test_rejects(seed):
    rng = np.random.default_rng(seed)
    b = rng.binomial(1, 0.1, 400).astype(float)
    a = np.where(rng.random(400) < 0.1 + 0.015 * seed, 1.0, b * (rng.random(400) < 0.7))
    result = paired_test(a, b, "t")
    assert (result.p < 0.05) == (result.rel_ci_low > 0 or result.rel_ci_high < 0)


def test_relative_ci_never_below_minus_100_percent_for_sparse_hits():
    rng = np.random.default_rng(3)
    b = (rng.random(200) < 0.10).astype(float)
    a = np.zeros(200)
    a[:3] = 1.0  # 3 hits against ~20: the old interval (absolute CI / mean(b)) went below -100%
    result = paired_test(a, b, "t")
    assert result.ci_low / result.mean_b < -1  # what dividing the absolute CI would have printed
    assert result.rel_ci_low == -1.0 and result.rel_ci_clipped
    assert -1 < result.rel_diff < result.rel_ci_high < 0


def test_relative_ci_covers_the_true_ratio():
    rng = np.random.default_rng(12)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        level = rng.beta(0.5, 2.0, n)  # paired: a shared per-user level, like NDCG
        return np.clip(1.2 * level + rng.normal(0, 0.1, n), 0, 1), np.clip(level + rng.normal(0, 0.1, n), 0, 1)

    big_a, big_b = draw(4_000_000)
    truth = big_a.mean() / big_b.mean()  # E[a] / E[b] to about 1e-3
    reps, covered = 300, 0
    for _ in range(reps):
        a, b = draw(200)
        r = paired_test(a, b, "t")
        covered += (1 + r.rel_ci_low) <= truth <= (1 + r.rel_ci_high)
    low, high = st.binom.interval(0.999, reps, 0.95)
    assert low <= covered <= high


def test_bootstrap_relative_ci_is_scipys_ratio_bootstrap(pair):
    a, b = pair
    a, b = a + 0.3, b + 0.3
    ratio = lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis)  # noqa: E731
    ref = st.bootstrap(
        (a, b),
        ratio,
        paired=True,
        vectorized=True,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(5),
    )
    result = paired_test(a, b, "bootstrap", n_resamples=2000, seed=5)
    low, high = ref.confidence_interval
    assert (result.rel_ci_low, result.rel_ci_high) == pytest.approx((low - 1, high - 1), rel=1e-12)


def test_wilcoxon_matches_scipy(pair):
    a, b = pair
    assert paired_test(a, b, "wilcoxon").p == pytest.approx(st.wilcoxon(a, b).pvalue, rel=1e-12)


def test_permutation_exact_equals_scipy():
    rng = np.random.default_rng(4)
    a, b = rng.random(12), rng.random(12)  # 2**12 = 4096 sign patterns <= n_resamples: enumerated
    ref = st.permutation_test((a, b), _mean_diff, permutation_type="samples", vectorized=True, n_resamples=10_000)
    assert paired_test(a, b, "permutation", n_resamples=10_000).p == pytest.approx(ref.pvalue, rel=1e-12)
    # all four differences positive: 2 of the 16 sign patterns are as extreme -> p = 2/16
    assert paired_test([1.0, 2.0, 3.0, 4.0], [0.0, 0.5, 1.0, 1.5], "permutation").p == pytest.approx(2 / 16)


def test_permutation_monte_carlo_agrees_with_scipy(pair):
    a, b = pair
    a = a - 0.025  # a p-value near 0.07, where Monte Carlo error is visible
    ref = st.permutation_test(
        (a, b),
        _mean_diff,
        permutation_type="samples",
        vectorized=True,
        n_resamples=4000,
        random_state=np.random.default_rng(3),
    ).pvalue
    ours = paired_test(a, b, "permutation", n_resamples=4000, seed=3).p
    assert 0.01 < ref < 0.5
    assert abs(ours - ref) < 4 * math.sqrt(2 * ref * (1 - ref) / 4000)  # two independent Monte Carlo estimates


def test_bootstrap_interval_matches_scipy_and_p_inverts_it(pair):
    a, b = pair
    ref = st.bootstrap(
        (a, b),
        _mean_diff,
        paired=True,
        vectorized=True,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(5),
    )
    result = paired_test(a, b, "bootstrap", n_resamples=2000, seed=5)
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(ref.confidence_interval), rel=1e-12)
    assert (result.p < 0.05) == (result.ci_low > 0 or result.ci_high < 0)


def test_resampling_tests_are_seeded(pair):
    a, b = pair
    for test in ("permutation", "bootstrap"):
        assert paired_test(a, b, test, n_resamples=500, seed=1) == paired_test(a, b, test, n_resamples=500, seed=1)


def test_degenerate_and_bad_inputs():
    same = np.array([0.2, 0.4, 0.6])
    for test in TESTS:
        result = paired_test(same, same, test, n_resamples=100)
        assert (result.p, result.diff, result.d_z) == (1.0, 0.0, 0.0)
    shifted = paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], "t")  # a constant, non-zero difference
    assert shifted.p == 0.0 and shifted.d_z == math.inf
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([1.0], [0.0])
    with pytest.raises(ValueError, match="aligned"):
        paired_test([1.0, 2.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(same, same, "sign")


def test_holm_hand_worked():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # clipped at 1


def test_bh_hand_worked():
    # sorted: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04 -> running min from the top
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg([0.01, 0.02, 0.9]) == pytest.approx([0.03, 0.03, 0.9])


def test_adjust_keeps_nan_out_of_the_family():
    out = adjust([0.01, math.nan, 0.04], "holm")
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert adjust([0.01, 0.04], "none") == pytest.approx([0.01, 0.04])
    with pytest.raises(ValueError, match="unknown correction"):
        adjust([0.1], "bonferroni")


def _aa_rates(test: str, reps: int, n: int, n_resamples: int = 0) -> float:
    """One method against itself: a shared per-user level plus fresh noise per run (e.g. a new seed)."""
    rng = np.random.default_rng(2024)
    rejections = 0
    for rep in range(reps):
        level = rng.beta(0.5, 2.0, n)  # skewed, like NDCG
        a = np.clip(level + rng.normal(0, 0.1, n), 0, 1)
        b = np.clip(level + rng.normal(0, 0.1, n), 0, 1)
        rejections += paired_test(a, b, test, n_resamples=n_resamples, seed=rep).p < 0.05
    return rejections / reps


@pytest.mark.parametrize("test,reps,resamples", [("t", 400, 0), ("permutation", 150, 500)])
def test_aa_false_positive_rate_within_binomial_band(test, reps, resamples):
    rate = _aa_rates(test, reps, n=200, n_resamples=resamples)
    low, high = st.binom.interval(0.999, reps, 0.05)
    assert low / reps <= rate <= high / reps, (
        f"A/A false-positive rate {rate:.3f} outside [{low / reps}, {high / reps}]"
    )


@pytest.mark.parametrize("test", TESTS)
def test_planted_difference_is_detected(test):
    rng = np.random.default_rng(11)
    level = rng.beta(0.5, 2.0, 200)
    a = level + 0.05 + rng.normal(0, 0.1, 200)
    b = level + rng.normal(0, 0.1, 200)
    result = paired_test(a, b, test, n_resamples=2000)
    assert result.p < 0.001
    assert result.ci_low < 0.05 < result.ci_high and result.d_z > 0.3
