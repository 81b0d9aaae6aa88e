"""Confidence intervals for the course's comparisons: one mean, and the paired difference of two.

Every number the course reports over a sample of tasks or examples is a mean with the half-width of its
95 % confidence interval, from Student's t distribution with n − 1 degrees of freedom:

.. math:: \\bar x \\pm t_{0.975,\\,n-1}\\, s / \\sqrt{n}

Two learners, attacks or models scored on the *same* tasks or examples are compared through their
per-task differences d_i = a_i − b_i, never by whether their two intervals overlap: the shared tasks
make a and b correlated, so the interval of the mean difference is usually far narrower than either
interval alone, and "the intervals overlap" is not a test even for independent samples. The comparison
is resolved when the interval of d̄ excludes 0.

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

__all__ = ["MeanCI", "PairedDifference", "mean_ci", "paired_difference", "t_quantile"]


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
