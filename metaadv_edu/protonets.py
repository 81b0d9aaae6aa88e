r"""Prototypical networks (Snell, Swersky & Zemel 2017): classify by the nearest class mean in an embedding.

Derived in ``notebooks/10_feature_reuse.ipynb``. An embedding network f maps each cover to a vector; the
prototype of class k is the mean embedding of its support examples, :math:`c_k = \frac{1}{|S_k|}\sum_{x\in S_k} f(x)`,
and a query q scores each class by the negative squared distance,

.. math:: z_k(q) = -\|f(q) - c_k\|^2 = 2c_k^\top f(q) - \|c_k\|^2 - \|f(q)\|^2 .

The last term is the same for every class, so the softmax over k is that of a **linear classifier** on
the embedding with :math:`w_k = 2c_k` and :math:`b_k = -\|c_k\|^2` (Snell et al. 2017, section
"Reinterpretation as a Linear Model").
Training minimises the cross-entropy of these logits on the query sets of many tasks (episodes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu.data import Tasks

__all__ = ["episode_accuracy", "episode_loss", "linear_head", "prototype_logits", "prototypes"]


def _check(support_embeddings, support_labels, n_way) -> int:
    n_way = v.integer("n_way", n_way, low=2)
    for name, t in (("support_embeddings", support_embeddings), ("support_labels", support_labels)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if support_embeddings.ndim < 2 or support_labels.shape != support_embeddings.shape[:-1]:
        raise ValueError(
            "support_embeddings must have shape (..., n_support, dim) and support_labels (..., n_support); got "
            f"{tuple(support_embeddings.shape)} and {tuple(support_labels.shape)}"
        )
    if support_labels.is_floating_point():
        raise TypeError("support_labels must be integer class labels")
    if support_labels.numel() and (support_labels.min() < 0 or support_labels.max() >= n_way):
        raise ValueError(f"support_labels must lie in [0, n_way - 1] = [0, {n_way - 1}]")
    return n_way


def prototypes(support_embeddings: torch.Tensor, support_labels: torch.Tensor, n_way: int) -> torch.Tensor:
    r"""Class means :math:`c_k = \frac{1}{|S_k|}\sum_{i: y_i = k} f(x_i)`, shape (..., n_way, dim).

    Leading dimensions (tasks) are kept. Every class needs at least one support example.
    """
    n_way = _check(support_embeddings, support_labels, n_way)
    onehot = F.one_hot(support_labels, n_way).to(support_embeddings.dtype)  # (..., n_support, n_way)
    counts = onehot.sum(-2)
    if (counts == 0).any():
        raise ValueError("support_labels must hold at least one example of every class 0..n_way-1")
    return (onehot.transpose(-1, -2) @ support_embeddings) / counts.unsqueeze(-1)


def prototype_logits(
    support_embeddings: torch.Tensor, support_labels: torch.Tensor, query_embeddings: torch.Tensor, n_way: int
) -> torch.Tensor:
    r"""Logits :math:`z_k(q) = -\|f(q) - c_k\|^2` of every query for every class, shape (..., n_query, n_way).

    Parameters
    ----------
    support_embeddings : Tensor (..., n_support, dim)
    support_labels : LongTensor (..., n_support), values in [0, n_way)
    query_embeddings : Tensor (..., n_query, dim), the same leading dimensions and dim
    n_way : int ≥ 2
    """
    c = prototypes(support_embeddings, support_labels, n_way)
    if not isinstance(query_embeddings, torch.Tensor) or query_embeddings.shape[:-2] != c.shape[:-2]:
        raise ValueError("query_embeddings must have shape (..., n_query, dim) with the support's leading dimensions")
    if query_embeddings.shape[-1] != c.shape[-1]:
        raise ValueError(
            f"query_embeddings have dim {query_embeddings.shape[-1]}, the support embeddings {c.shape[-1]}"
        )
    diff = query_embeddings.unsqueeze(-2) - c.unsqueeze(-3)  # (..., n_query, n_way, dim)
    return -(diff**2).sum(-1)


def linear_head(prototype_matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The linear classifier equivalent to :func:`prototype_logits`: :math:`w_k = 2c_k`, :math:`b_k = -\|c_k\|^2`.

    Returns ``(weight, bias)`` of shapes (..., n_way, dim) and (..., n_way): logits ``q @ weightᵀ + bias``
    differ from the prototype logits by :math:`\|f(q)\|^2` in every class, so their softmax is the same.
    """
    if not isinstance(prototype_matrix, torch.Tensor) or prototype_matrix.ndim < 2:
        raise ValueError("prototype_matrix must be a tensor of shape (..., n_way, dim)")
    return 2 * prototype_matrix, -(prototype_matrix**2).sum(-1)


def _embed_tasks(embed: nn.Module, tasks: Tasks) -> tuple[torch.Tensor, torch.Tensor]:
    n = tasks.x_support.shape[0]
    both = torch.cat([tasks.x_support.flatten(0, 1), tasks.x_query.flatten(0, 1)])
    z = embed(both).flatten(1)
    n_support = tasks.x_support.shape[0] * tasks.x_support.shape[1]
    return z[:n_support].view(n, -1, z.shape[-1]), z[n_support:].view(n, -1, z.shape[-1])


def _episode_logits(embed: nn.Module, tasks: Tasks) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(tasks, Tasks):
        raise TypeError("tasks must be a Tasks(x_support, y_support, x_query, y_query) tuple")
    if tasks.y_support.is_floating_point():
        raise TypeError("prototypical networks classify: tasks need integer labels")
    n_way = int(tasks.y_support.max()) + 1
    zs, zq = _embed_tasks(embed, tasks)
    return prototype_logits(zs, tasks.y_support, zq, n_way), tasks.y_query


def episode_loss(embed: nn.Module, tasks: Tasks) -> torch.Tensor:
    """Mean cross-entropy of the prototype logits on every task's query set: the training objective."""
    logits, y = _episode_logits(embed, tasks)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


@torch.no_grad()
def episode_accuracy(embed: nn.Module, tasks: Tasks) -> torch.Tensor:
    """Query accuracy of every task (nearest prototype), shape (n_tasks,)."""
    logits, y = _episode_logits(embed, tasks)
    return (logits.argmax(-1) == y).float().mean(-1)
