"""Data for the course. Nothing here downloads anything.

* :func:`load_digits` — scikit-learn's bundled 8×8 handwritten digits (1,797 real images).
* :func:`sine_tasks` — the sinusoid regression tasks of MAML (Finn et al. 2017, §5.1).
* :class:`GaussianMixture` — mixtures with exact densities, for GAN theory (notebook 03).
* :func:`few_shot_tasks` — N-way K-shot classification tasks from any labelled tensor dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch

from metaadv_edu import _validate as v

__all__ = ["GaussianMixture", "Tasks", "few_shot_tasks", "load_digits", "ring_mixture", "sine_tasks"]

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
SINE_AMPLITUDE = (0.1, 5.0)
SINE_PHASE = (0.0, math.pi)
SINE_X = (-5.0, 5.0)


class Tasks(NamedTuple):
    """A batch of tasks: support (training) and query (evaluation) sets, task index first."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return self.x_support.shape[0]

    def to(self, device) -> Tasks:
        return Tasks(*(t.to(device) for t in self))

    def task(self, i: int) -> Tasks:
        """The ``i``-th task, keeping a leading task dimension of size one."""
        return Tasks(*(t[i : i + 1] for t in self))


# ----------------------------------------------------------------------------------------- digits
@lru_cache(maxsize=1)
def _digits_numpy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    return images, labels, order


def load_digits(split: str = "train", *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The UCI handwritten digits bundled with scikit-learn, as tensors.

    Returns ``X`` float32 of shape (N, 1, 8, 8) with values in [0, 1] and ``y`` int64 of shape (N,).
    The train/test split is fixed (seed 0, 25 % test): 1,348 train and 449 test images.
    ``split="all"`` returns all 1,797 images in their original order.
    """
    v.choice("split", split, ("train", "test", "all"))
    device = v.as_device(device)
    images, labels, order = _digits_numpy()
    n_test = round(DIGITS_TEST_FRACTION * len(labels))
    if split == "train":
        idx = np.sort(order[n_test:])
    elif split == "test":
        idx = np.sort(order[:n_test])
    else:
        idx = np.arange(len(labels))
    x = torch.from_numpy(images[idx]).to(device)
    y = torch.from_numpy(labels[idx]).to(device)
    return x, y


# -------------------------------------------------------------------------------------- sinusoids
def _uniform(shape, low, high, generator, device):
    return (torch.rand(shape, generator=generator) * (high - low) + low).to(device)


def sine_tasks(
    n_tasks: int,
    k_support: int,
    k_query: int | None = None,
    *,
    generator: torch.Generator | None = None,
    device=None,
    return_params: bool = False,
):
    """Sinusoid regression tasks: y = A·sin(x − φ), A ~ U[0.1, 5], φ ~ U[0, π], x ~ U[−5, 5].

    This is the task distribution of Finn et al. (2017), §5.1. Each tensor of the returned
    :class:`Tasks` has shape (n_tasks, k, 1). ``k_query`` defaults to ``k_support``. With
    ``return_params=True`` the amplitudes and phases, each of shape (n_tasks,), come back too.
    Random numbers are drawn on the CPU from ``generator`` and then moved, so a seed gives the same
    tasks on every device.
    """
    n_tasks = v.integer("n_tasks", n_tasks)
    k_support = v.integer("k_support", k_support)
    k_query = k_support if k_query is None else v.integer("k_query", k_query)
    device = v.as_device(device)
    amplitude = _uniform((n_tasks, 1, 1), *SINE_AMPLITUDE, generator, device)
    phase = _uniform((n_tasks, 1, 1), *SINE_PHASE, generator, device)
    x_s = _uniform((n_tasks, k_support, 1), *SINE_X, generator, device)
    x_q = _uniform((n_tasks, k_query, 1), *SINE_X, generator, device)
    tasks = Tasks(x_s, amplitude * torch.sin(x_s - phase), x_q, amplitude * torch.sin(x_q - phase))
    if return_params:
        return tasks, amplitude.view(-1), phase.view(-1)
    return tasks


# ----------------------------------------------------------------------------- Gaussian mixtures
@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of isotropic Gaussians in D dimensions with an exact density.

    ``means`` has shape (M, D), ``stds`` (M,) and ``weights`` (M,) summing to one.
    """

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        means = torch.as_tensor(self.means, dtype=torch.float32)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2:
            raise ValueError(f"means must have shape (M, D), got {tuple(means.shape)}")
        m = means.shape[0]
        stds = torch.as_tensor(self.stds, dtype=torch.float32).reshape(-1).expand(m).clone()
        weights = torch.as_tensor(self.weights, dtype=torch.float32).reshape(-1).expand(m).clone()
        if not bool((stds > 0).all()):
            raise ValueError("stds must all be > 0")
        if not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be >= 0 and not all zero")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / weights.sum())

    @classmethod
    def one_d(cls, means, stds, weights=None) -> GaussianMixture:
        means = torch.as_tensor(means, dtype=torch.float32).reshape(-1, 1)
        weights = torch.ones(means.shape[0]) if weights is None else weights
        return cls(means, stds, weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """``n`` samples of shape (n, D)."""
        n = v.integer("n", n)
        device = v.as_device(device)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return (self.means[comp] + self.stds[comp, None] * noise).to(device)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x of shape (N, D) (or (N,) when D = 1)."""
        x = torch.as_tensor(x)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        means, stds, w = (t.to(x.device, x.dtype) for t in (self.means, self.stds, self.weights))
        sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
        log_norm = -0.5 * self.dim * torch.log(2 * math.pi * stds**2)
        return torch.logsumexp(torch.log(w) + log_norm - 0.5 * sq / stds**2, dim=1)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_density(x).exp()


def ring_mixture(n_modes: int = 8, radius: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """The classic 2-D benchmark of GAN mode coverage: equal Gaussians on a circle."""
    n_modes = v.integer("n_modes", n_modes)
    angles = torch.arange(n_modes) * (2 * math.pi / n_modes)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, v.positive("std", std), torch.ones(n_modes))


# -------------------------------------------------------------------------------- few-shot tasks
def few_shot_tasks(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_tasks: int,
    n_way: int,
    k_shot: int,
    k_query: int,
    classes=None,
    generator: torch.Generator | None = None,
) -> Tasks:
    """N-way K-shot classification tasks drawn from a labelled dataset.

    Each task picks ``n_way`` distinct classes (from ``classes``, default: every label in ``y``),
    relabels them 0..n_way−1 in random order, and draws ``k_shot`` support and ``k_query`` query
    examples per class without overlap. Support tensors have shape (n_tasks, n_way·k_shot, ...),
    labels (n_tasks, n_way·k_shot). Tensors stay on the device of ``x``.
    """
    v.same_batch(x, y, "x", "y")
    n_tasks = v.integer("n_tasks", n_tasks)
    n_way = v.integer("n_way", n_way, low=2)
    k_shot = v.integer("k_shot", k_shot)
    k_query = v.integer("k_query", k_query)
    labels = y.detach().cpu()
    pool = torch.unique(labels) if classes is None else torch.as_tensor(list(classes))
    if len(pool) < n_way:
        raise ValueError(f"n_way={n_way} needs at least that many classes; the dataset offers {len(pool)}")
    by_class = {int(c): torch.nonzero(labels == c).view(-1) for c in pool}
    need = k_shot + k_query
    short = [c for c, idx in by_class.items() if len(idx) < need]
    if short:
        raise ValueError(f"k_shot + k_query = {need} exceeds the examples of class(es) {short[:5]}")
    sup_idx, qry_idx = [], []
    for _ in range(n_tasks):
        chosen = pool[torch.randperm(len(pool), generator=generator)[:n_way]]
        s, q = [], []
        for c in chosen.tolist():
            idx = by_class[c][torch.randperm(len(by_class[c]), generator=generator)[:need]]
            s.append(idx[:k_shot])
            q.append(idx[k_shot:])
        sup_idx.append(torch.cat(s))
        qry_idx.append(torch.cat(q))
    sup_idx, qry_idx = torch.stack(sup_idx), torch.stack(qry_idx)
    way = torch.arange(n_way)
    y_s = way.repeat_interleave(k_shot).expand(n_tasks, -1)
    y_q = way.repeat_interleave(k_query).expand(n_tasks, -1)
    dev = x.device
    return Tasks(x[sup_idx.to(dev)], y_s.to(dev).clone(), x[qry_idx.to(dev)], y_q.to(dev).clone())
