r"""ANIL, "almost no inner loop" (Raghu, Raghu, Bengio & Vinyals 2020): adapt only the head.

Derived in ``notebooks/10_feature_reuse.ipynb``. Split θ = (θ_b, w) into the body θ_b and the last layer w.
ANIL's inner step moves w only, :math:`w' = w - \alpha\nabla_w L_S(\theta_b, w)`, θ_b′ = θ_b. That is MAML's step
with a per-tensor learning rate, α on the head and 0 on the body: with the diagonal mask D (1 on the
head's entries, 0 on the body's),

.. math:: \theta' = \theta - \alpha D \nabla L_S(\theta), \qquad
          \nabla_\theta L_Q(\theta') = (I - \alpha H D)\,\nabla L_Q(\theta'), \quad H = \nabla^2 L_S(\theta),

i.e. body :math:`\nabla_{\theta_b} L_Q - \alpha H_{\theta_b w}\nabla_w L_Q` and head
:math:`(I - \alpha H_{ww})\nabla_w L_Q`: MAML's meta-gradient with the inner rate α replaced by αD (the
body's inner step set to 0); the body still receives a second-order term. The learner runs through
:func:`metaadv_edu.maml.meta_loss`/:func:`~metaadv_edu.maml.adapt` with :func:`inner_lrs`.
"""

from __future__ import annotations

import torch
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu.functional import LossFn, Params, default_loss, params_of, task_loss

__all__ = ["head_names", "inner_lrs", "meta_gradient_by_formula"]


def head_names(model: nn.Module) -> list[str]:
    """Names of the parameters of the model's last module that has any (the head)."""
    last = None
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    if last is None:
        raise ValueError("model has no parameters")
    return [f"{last}.{n}" if last else n for n, _ in model.get_submodule(last).named_parameters(recurse=False)]


def inner_lrs(model: nn.Module, inner_lr: float, head: list[str] | None = None) -> dict[str, float]:
    """Per-tensor inner learning rates: ``inner_lr`` for the head's tensors, 0 for the body's.

    Passed as ``inner_lr`` to :func:`metaadv_edu.maml.adapt` or :func:`~metaadv_edu.maml.meta_loss`, it
    turns MAML into ANIL. ``head`` defaults to :func:`head_names`.
    """
    inner_lr = v.positive("inner_lr", inner_lr)
    names = [k for k, _ in model.named_parameters()]
    head = head_names(model) if head is None else list(head)
    unknown = sorted(set(head) - set(names))
    if unknown or not head:
        raise ValueError(f"head must name some of the model's parameters {names}; got unknown names {unknown}")
    return {k: (inner_lr if k in head else 0.0) for k in names}


def meta_gradient_by_formula(
    model: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xq: torch.Tensor,
    yq: torch.Tensor,
    *,
    inner_lr: float,
    steps: int = 1,
    head: list[str] | None = None,
    loss_fn: LossFn | None = None,
) -> Params:
    r"""ANIL's meta-gradient of one task from the chain rule, without differentiating through the loop.

    With :math:`\theta_{j+1} = \theta_j - \alpha D\nabla L_S(\theta_j)`,

    .. math:: \nabla_\theta L_Q(\theta_k) = (I - \alpha H_0 D)\cdots(I - \alpha H_{k-1} D)\,\nabla L_Q(\theta_k),

    applied right to left: each factor takes the vector v to :math:`v - H_j(\alpha D v)`, one
    Hessian-vector product with the head part of v only (its body part set to 0).
    """
    lrs = inner_lrs(model, inner_lr, head)
    steps = v.integer("steps", steps)
    loss_fn = loss_fn or default_loss(ys)
    thetas = [params_of(model, detach=True)]
    for _ in range(steps):
        g = torch.autograd.grad(task_loss(thetas[-1], model, xs, ys, loss_fn), list(thetas[-1].values()))
        thetas.append({k: (p - lrs[k] * gi).detach().requires_grad_(True) for (k, p), gi in zip(thetas[-1].items(), g)})
    last = thetas[-1]
    vec = dict(zip(last, torch.autograd.grad(task_loss(last, model, xq, yq, loss_fn), list(last.values()))))
    for theta in reversed(thetas[:-1]):
        g = torch.autograd.grad(task_loss(theta, model, xs, ys, loss_fn), list(theta.values()), create_graph=True)
        dot = sum((gi * (lrs[k] * vec[k])).sum() for gi, k in zip(g, theta))
        hv = dict(zip(theta, torch.autograd.grad(dot, list(theta.values()))))
        vec = {k: vec[k] - hv[k] for k in vec}
    return vec
