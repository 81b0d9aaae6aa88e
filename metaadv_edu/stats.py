"""Confidence intervals for the course's comparisons: one mean, and the paired difference of two.

Every number the course reports over a sample of tasks or examples is a mean with the half-width of its
95 % confidence interval, from Student's t distribution with n − 1 degrees of freedom:

.. math:: \\bar x \\pm t_{0.975,\\,n-1}\\, s / \\sqrt{n}

Two learners, attacks or models scored on the *same* tasks or examples are compared through their
per-task differences d_i = a_i − b_i, never by whether their two intervals overlap: the shared tasks
make a and b correlated, so the interval of the mean difference is usually far narrower than either
interval alone, and "the intervals overlap" is not a test even for independent samples. The comparison
is resolved when the interval of d̄ excludes 0.

Two classifiers or attacks scored right/wrong on the same examples, where few examples differ, are
compared by the exact sign (McNemar) test of :func:`paired_binary` instead: only the discordant
examples, those where exactly one of the two succeeds, carry information, and with a handful of them the
t interval is unreliable.

Each trained model is one training run: these intervals speak of the tasks or examples drawn, not of
the spread between training runs (seeds).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats as _scipy_stats

from metaadv_edu import _validate

__all__ = ["MeanCI", "PairedBinary", "PairedDifference", "mean_ci", "paired_binary", "paired_difference", "t_quantile"]


class MeanCI(NamedTuple):
    """A sample mean and the half-width of its confidence interval: ``mean ± half_width``."""

    mean: float
    half_width: float
    n: int

    def format(self, digits: int = 3, *, percent: bool = False) -> str:
        """``"0.575 ± 0.056"``, or ``"57.5% ± 5.6%"`` with ``percent`` (for accuracies in [0, 1])."""
        if percent:
            return f"{100 * self.mean:.{digits}f}% ± {100 * self.half_width:.{digits}f}%"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


class PairedDifference(NamedTuple):
    """The mean of a − b over shared tasks or examples, its interval's half-width, and the verdict."""

    mean: float
    half_width: float
    n: int

    @property
    def resolved(self) -> bool:
        """True when the interval excludes 0: the sample tells a and b apart at this confidence."""
        return abs(self.mean) > self.half_width

    def verdict(self, a: str = "a", b: str = "b", *, lower_is_better: bool | None = None) -> str:
        """``"a < b"``, ``"a > b"`` or ``"a and b not resolved"``; with ``lower_is_better`` (losses) or
        ``lower_is_better=False`` (accuracies) the sentence says which one is better."""
        if not self.resolved:
            return f"{a} vs {b}: not resolved (the interval contains 0)"
        sign = "<" if self.mean < 0 else ">"
        if lower_is_better is None:
            return f"{a} {sign} {b}"
        better = a if (self.mean < 0) == lower_is_better else b
        return f"{a} {sign} {b}: {better} is better"

    def format(self, digits: int = 3, *, percent: bool = False) -> str:
        """``"-0.196 ± 0.059"``, or ``"-2.7% ± 2.9%"`` with ``percent``, signed."""
        if percent:
            return f"{100 * self.mean:+.{digits}f}% ± {100 * self.half_width:.{digits}f}%"
        return f"{self.mean:+.{digits}f} ± {self.half_width:.{digits}f}"


def t_quantile(n: int, confidence: float = 0.95) -> float:
    """The two-sided Student-t quantile t_{(1+confidence)/2, n−1} for a sample of ``n`` values."""
    n = _validate.integer("n", n, low=2)
    confidence = _validate.finite_number("confidence", confidence, low=0.0, low_inclusive=False, high=1.0)
    if confidence >= 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))


def _sample(name: str, values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per task or example), got shape {array.shape}")
    if array.size < 2:
        raise ValueError(f"{name} needs at least two values for an interval, got {array.size}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite values only")
    return array


def mean_ci(values, confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` and the half-width t_{n−1}·s/√n of its ``confidence`` interval.

    ``values``: one number per task or example (a 1-D tensor, array or sequence, at least two).
    """
    x = _sample("values", values)
    half = t_quantile(x.size, confidence) * x.std(ddof=1) / math.sqrt(x.size)
    return MeanCI(float(x.mean()), float(half), int(x.size))


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """Mean of a − b over shared tasks or examples and the half-width of its t interval.

    ``a`` and ``b`` hold one score each per task or example, in the same order (the same tasks, the same
    examples). ``.resolved`` says whether the interval excludes 0; ``.verdict(name_a, name_b)`` says it
    in words.
    """
    x, y = _sample("a", a), _sample("b", b)
    if x.shape != y.shape:
        raise ValueError(f"a and b must score the same tasks or examples: shapes {x.shape} and {y.shape} differ")
    d = mean_ci(x - y, confidence)
    return PairedDifference(d.mean, d.half_width, d.n)


class PairedBinary(NamedTuple):
    """Paired yes/no outcomes on shared examples: ``a_only`` examples where only a succeeds, ``b_only``
    where only b does, ``n`` examples in all, and the exact two-sided sign-test p-value."""

    a_only: int
    b_only: int
    n: int
    p_value: float

    @property
    def resolved(self) -> bool:
        """True when the exact sign test rejects "a and b succeed equally often" at the 5 % level."""
        return self.p_value < 0.05

    def verdict(self, a: str = "a", b: str = "b") -> str:
        """``"a > b (exact sign test p = 0.002)"``, or ``"a vs b: not resolved (exact sign test p = 0.125)"``."""
        test = f"exact sign test p = {self.p_value:.3g}"
        if not self.resolved:
            return f"{a} vs {b}: not resolved ({test})"
        return f"{a} {'>' if self.a_only > self.b_only else '<'} {b} ({test})"

    def format(self) -> str:
        """``"4 vs 0 of 449"``: the discordant counts, a's first."""
        return f"{self.a_only} vs {self.b_only} of {self.n}"


def paired_binary(a, b) -> PairedBinary:
    r"""Exact sign (McNemar) test for two yes/no outcomes on the same examples.

    With :math:`n_a` examples where only a succeeds and :math:`n_b` where only b does, under the null
    hypothesis each discordant example is a's with probability ½, so
    :math:`p = P\big(|X - m/2| \ge |n_a - m/2|\big)` for :math:`X \sim \mathrm{Bin}(m, \tfrac12)`,
    :math:`m = n_a + n_b` (``scipy.stats.binomtest``). With no discordant example, p = 1.

    ``a`` and ``b``: one boolean (or 0/1) per example each, in the same order. Used in notebook 04, §5.
    """
    x, y = _sample("a", a), _sample("b", b)
    if x.shape != y.shape:
        raise ValueError(f"a and b must score the same examples: shapes {x.shape} and {y.shape} differ")
    for name, values in (("a", x), ("b", y)):
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"{name} must hold yes/no outcomes (booleans, or 0 and 1 only)")
    a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    m = a_only + b_only
    p = float(_scipy_stats.binomtest(a_only, m, 0.5).pvalue) if m else 1.0
    return PairedBinary(a_only, b_only, int(x.size), p)
