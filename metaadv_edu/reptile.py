r"""Reptile (Nichol, Achiam & Schulman 2018), batched over tasks.

Derived in ``notebooks/06_reptile.ipynb``. Each task's parameters θ′ᵢ come from k plain SGD steps on
its data, starting at θ; the outer step moves θ towards their mean:

.. math:: \theta \leftarrow \theta + \beta\,\frac1n\sum_i(\theta'_i - \theta).

With k = 1 this is SGD on the joint loss with step αβ. The Taylor analysis of §5 of the paper is in
:func:`taylor_terms` and :func:`expected_updates`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, vmap
from tqdm.auto import tqdm

from metaadv_edu import _validate as v
from metaadv_edu.data import Tasks
from metaadv_edu.functional import LossFn, Params, default_loss, params_of, sgd_step, task_loss
from metaadv_edu.maml import check_tasks

__all__ = ["adapted_weights", "expected_updates", "outer_step", "predicted_updates", "taylor_terms", "train"]


def _adapted(
    model: nn.Module, theta: Params, x, y, inner_lr: float, inner_steps: int, loss_fn: LossFn
) -> tuple[Params, torch.Tensor]:
    """θ′ after ``inner_steps`` SGD steps from θ on (x, y), and the support loss there."""
    params = theta
    for _ in range(inner_steps):
        params = sgd_step(params, grad(task_loss)(params, model, x, y, loss_fn), inner_lr)
    return params, task_loss(params, model, x, y, loss_fn)


def _batched_adaptation(model, tasks, inner_lr, inner_steps, loss_fn):
    theta = {k: p.detach() for k, p in params_of(model, detach=True).items()}
    return vmap(lambda x, y: _adapted(model, theta, x, y, inner_lr, inner_steps, loss_fn))(
        tasks.x_support, tasks.y_support
    )


def adapted_weights(
    model: nn.Module, tasks: Tasks, *, inner_lr: float, inner_steps: int, loss_fn: LossFn | None = None
) -> Params:
    """Every task's θ′ᵢ after ``inner_steps`` SGD steps of ``inner_lr`` from the model's detached θ, stacked
    along a first (task) dimension. No autograd graph reaches θ: Reptile's update needs only these values."""
    check_tasks(tasks)
    inner_lr = v.positive("inner_lr", inner_lr)
    inner_steps = v.integer("inner_steps", inner_steps)
    loss_fn = loss_fn or default_loss(tasks.y_support)
    return _batched_adaptation(model, tasks, inner_lr, inner_steps, loss_fn)[0]


def outer_step(
    model: nn.Module, tasks: Tasks, *, inner_lr: float, inner_steps: int, outer_lr: float, loss_fn: LossFn | None = None
) -> float:
    """One batched Reptile update of ``model``, in place; returns the mean post-adaptation support loss.

    Only the support sets of ``tasks`` are used (Reptile has no query set).
    """
    check_tasks(tasks)
    inner_lr = v.positive("inner_lr", inner_lr)
    inner_steps = v.integer("inner_steps", inner_steps)
    outer_lr = v.positive("outer_lr", outer_lr)
    loss_fn = loss_fn or default_loss(tasks.y_support)
    adapted, losses = _batched_adaptation(model, tasks, inner_lr, inner_steps, loss_fn)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(outer_lr * (adapted[name].mean(0) - p))
    return float(losses.mean())


def train(
    model: nn.Module,
    sample_tasks: Callable[[torch.Generator], Tasks],
    *,
    iterations: int,
    inner_lr: float,
    inner_steps: int,
    outer_lr: float = 0.1,
    anneal: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "Reptile",
) -> dict[str, list[float]]:
    """Reptile training; the outer step decays linearly from ``outer_lr`` to 0 when ``anneal``."""
    iterations = v.integer("iterations", iterations)
    outer_lr = v.positive("outer_lr", outer_lr)
    history: dict[str, list[float]] = {"support_loss": []}
    for it in tqdm(range(iterations), desc=desc, disable=not progress, leave=False):
        beta = outer_lr * (1 - it / iterations) if anneal else outer_lr
        history["support_loss"].append(
            outer_step(model, sample_tasks(generator), inner_lr=inner_lr, inner_steps=inner_steps, outer_lr=beta)
        )
    return history


# ------------------------------------------------------------------------------ Taylor analysis
def _grad(loss_fn, model, params, x, y):
    loss = task_loss(params, model, x, y, loss_fn)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()), create_graph=True)))


def _flat(params: Params) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in params.values()])


def taylor_terms(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *, loss_fn: LossFn | None = None
) -> dict[str, torch.Tensor]:
    r"""AvgGrad = E[ḡ₁] and AvgGradInner = E[H̄₂ ḡ₁] at the model's parameters, over ordered pairs of
    distinct minibatches of one task (Nichol et al. 2018, §5), as flat vectors."""
    loss_fn = loss_fn or default_loss(batches[0][1])
    theta = params_of(model, detach=True)
    grads = [_grad(loss_fn, model, theta, x, y) for x, y in batches]
    avg_grad = torch.stack([_flat(g).detach() for g in grads]).mean(0)
    inner = []
    for i, j in itertools.permutations(range(len(batches)), 2):
        dot = sum((grads[j][k] * grads[i][k].detach()).sum() for k in theta)  # ḡ_j · ḡ_i, ḡ_i fixed
        inner.append(
            torch.cat([h.reshape(-1) for h in torch.autograd.grad(dot, list(theta.values()), retain_graph=True)])
        )
    return {"AvgGrad": avg_grad, "AvgGradInner": torch.stack(inner).mean(0)}


def expected_updates(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    inner_lr: float,
    k: int = 2,
    loss_fn: LossFn | None = None,
) -> dict[str, torch.Tensor]:
    r"""The measured expected gradients of MAML, FOMAML and Reptile with ``k`` inner SGD steps of
    size α (this course's k; Nichol et al.'s k is k + 1 for MAML and FOMAML), averaged over every ordered
    (k+1)-tuple of distinct minibatches.

    The k inner steps use minibatches 1..k, θ₁ → θ_{k+1}; MAML and FOMAML take their outer gradient
    on minibatch k+1: g_MAML = ∂L_{k+1}(θ_{k+1})/∂θ₁, g_FOMAML = L_{k+1}'(θ_{k+1}),
    g_Reptile = (θ₁ − θ_{k+1})/α.
    """
    inner_lr = v.positive("inner_lr", inner_lr)
    k = v.integer("k", k, low=1, high=len(batches) - 1)
    loss_fn = loss_fn or default_loss(batches[0][1])
    sums = {"MAML": 0.0, "FOMAML": 0.0, "Reptile": 0.0}
    tuples = list(itertools.permutations(range(len(batches)), k + 1))
    for order in tuples:
        theta = params_of(model, detach=True)
        params = theta
        for idx in order[:-1]:
            params = sgd_step(params, _grad(loss_fn, model, params, *batches[idx]), inner_lr)
        last = _grad(loss_fn, model, params, *batches[order[-1]])
        sums["FOMAML"] = sums["FOMAML"] + _flat(last).detach()
        sums["Reptile"] = sums["Reptile"] + ((_flat(theta) - _flat(params)) / inner_lr).detach()
        final = task_loss(params, model, *batches[order[-1]], loss_fn)
        maml_grad = torch.autograd.grad(final, list(theta.values()))
        sums["MAML"] = sums["MAML"] + torch.cat([g.reshape(-1) for g in maml_grad])
    return {name: total / len(tuples) for name, total in sums.items()}


def predicted_updates(terms: dict[str, torch.Tensor], *, inner_lr: float, k: int = 2) -> dict[str, torch.Tensor]:
    r"""Nichol et al.'s first-order predictions for k inner SGD steps, up to O(α²):

    E[g_MAML] = AvgGrad − 2kα·AvgGradInner, E[g_FOMAML] = AvgGrad − kα·AvgGradInner,
    E[g_Reptile] = k·AvgGrad − ½k(k−1)α·AvgGradInner.
    """
    g, gi, a = terms["AvgGrad"], terms["AvgGradInner"], inner_lr
    return {"MAML": g - 2 * k * a * gi, "FOMAML": g - k * a * gi, "Reptile": k * g - 0.5 * k * (k - 1) * a * gi}
