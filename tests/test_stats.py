"""The course's intervals agree with scipy.stats, and paired comparisons resolve what unpaired ones cannot."""

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from metaadv_edu import stats


@pytest.mark.parametrize("n", [2, 5, 30, 600])
def test_mean_ci_matches_scipy_t_interval(n):
    x = np.random.default_rng(n).normal(1.0, 2.0, size=n)
    low, high = scipy_stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
    result = stats.mean_ci(torch.tensor(x))
    assert result.mean == pytest.approx((low + high) / 2, rel=1e-12)
    assert result.half_width == pytest.approx((high - low) / 2, rel=1e-10)
    assert result.n == n


def test_small_samples_use_t_not_the_normal_quantile():
    x = [0.1, 0.4, 0.35, 0.8, 0.2]
    normal = 1.96 * np.std(x, ddof=1) / np.sqrt(5)
    assert stats.mean_ci(x).half_width > 1.4 * normal  # t_{0.975, 4} = 2.776


@pytest.mark.parametrize("seed", range(5))
def test_paired_difference_agrees_with_scipy_paired_t_test(seed):
    rng = np.random.default_rng(seed)
    task_difficulty = rng.normal(0, 1, size=40)
    a = task_difficulty + rng.normal(0.0, 0.3, size=40)
    b = task_difficulty + rng.normal(0.15 * seed, 0.3, size=40)
    d = stats.paired_difference(a, b)
    assert d.mean == pytest.approx(np.mean(a - b))
    assert d.resolved == (scipy_stats.ttest_rel(a, b).pvalue < 0.05)


def test_pairing_resolves_a_difference_that_overlapping_intervals_hide():
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 1, size=50)
    a, b = shared, shared + 0.1 + rng.normal(0, 0.02, size=50)
    ia, ib = stats.mean_ci(a), stats.mean_ci(b)
    assert abs(ia.mean - ib.mean) < ia.half_width + ib.half_width  # the intervals overlap
    d = stats.paired_difference(a, b)
    assert d.resolved and d.mean < 0
    assert d.verdict("A", "B", lower_is_better=True) == "A < B: A is better"
    assert d.verdict("A", "B", lower_is_better=False) == "A < B: B is better"


def test_unresolved_verdict_says_so():
    d = stats.paired_difference([1.0, 2.0, 3.0], [2.0, 1.0, 3.1])
    assert not d.resolved and "not resolved" in d.verdict("A", "B")


def test_formatting():
    assert stats.MeanCI(0.5751, 0.0562, 10).format() == "0.575 ± 0.056"
    assert stats.PairedDifference(-0.027, 0.029, 10).format(1, percent=True) == "-2.7% ± 2.9%"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: stats.mean_ci([1.0]), "at least two"),
        (lambda: stats.mean_ci([[1.0, 2.0]]), "one-dimensional"),
        (lambda: stats.mean_ci([1.0, float("nan")]), "finite"),
        (lambda: stats.paired_difference([1.0, 2.0], [1.0, 2.0, 3.0]), "same tasks"),
        (lambda: stats.mean_ci([1.0, 2.0], confidence=1.0), "confidence"),
        (lambda: stats.mean_ci([1.0, 2.0], confidence=0.0), "confidence"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("a_only, b_only, same", [(4, 0, 445), (9, 1, 90), (0, 0, 20), (3, 7, 40), (30, 12, 400)])
def test_paired_binary_matches_scipy_exact_binomial_test(a_only, b_only, same):
    a = torch.tensor([True] * a_only + [False] * b_only + [True, False] * (same // 2))
    b = torch.tensor([False] * a_only + [True] * b_only + [True, False] * (same // 2))
    result = stats.paired_binary(a, b)
    assert (result.a_only, result.b_only, result.n) == (a_only, b_only, len(a))
    m = a_only + b_only
    expected = scipy_stats.binomtest(a_only, m, 0.5).pvalue if m else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-12)
    assert result.resolved is bool(expected < 0.05)


def test_paired_binary_does_not_resolve_four_discordant_examples_that_the_t_interval_would():
    a = torch.zeros(449, dtype=torch.bool)
    a[:4] = True
    b = torch.zeros(449, dtype=torch.bool)
    t_interval = stats.paired_difference(a.float(), b.float())
    sign_test = stats.paired_binary(a, b)
    assert t_interval.resolved  # the t interval pretends to tell them apart ...
    assert not sign_test.resolved and sign_test.p_value == pytest.approx(0.125)  # ... 4 coin flips cannot
    assert sign_test.verdict("hardened f", "standard f") == (
        "hardened f vs standard f: not resolved (exact sign test p = 0.125)"
    )
    assert sign_test.format() == "4 vs 0 of 449"
    b_wins = stats.paired_binary(torch.zeros(40), torch.tensor([1.0] * 9 + [0.0] * 31))
    assert b_wins.resolved and b_wins.verdict("x", "y").startswith("x < y")


def test_paired_binary_rejects_scores_that_are_not_yes_no():
    with pytest.raises(ValueError, match="yes/no"):
        stats.paired_binary([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same examples"):
        stats.paired_binary([0, 1, 1], [0, 1])
