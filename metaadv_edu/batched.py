r"""Many small MLPs at once: parameters with a leading task dimension, run by batched matrix products.

MAML's meta-loss adapts one copy of θ per task. :mod:`torch.func.vmap` does this for any model; for
the plain MLPs of the sinusoid notebooks (a ``Sequential`` of ``Linear`` layers and elementwise
activations) the same computation can be written with ``torch.baddbmm`` directly, which avoids
vmap's per-operator batching rules and is several times faster on a CPU. With the per-task copies
:math:`\theta_i = \theta` (an ``expand``, not a copy),

.. math:: \nabla_{\theta_i} \sum_j L_{S_j}(\theta_j) = \nabla_\theta L_{S_i}(\theta),

because :math:`\theta_i` reaches no other task's loss; so one backward pass gives every task's
inner gradient, and the gradient of the query loss flows back to θ through the ``expand``.
:func:`metaadv_edu.maml.meta_loss` uses this path when the model allows it; tests check that it
gives the same meta-gradient as the vmap path and the per-task loop.
"""

from __future__ import annotations

import torch
from torch import nn

from metaadv_edu.functional import LossFn, Params, sgd_step

__all__ = ["ELEMENTWISE", "batched_forward", "meta_loss", "supports"]

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Softplus, nn.SiLU, nn.Identity)


def supports(model: nn.Module) -> bool:
    """True for an ``nn.Sequential`` of ``nn.Linear`` layers and elementwise activations only."""
    return (
        isinstance(model, nn.Sequential)
        and len(model) > 0
        and all(isinstance(m, (nn.Linear, *ELEMENTWISE)) for m in model)
        and any(isinstance(m, nn.Linear) for m in model)
    )


def batched_forward(model: nn.Sequential, params: Params, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` once per task: ``params[name]`` has shape ``(n, *shape)``, ``x`` has ``(n, k, d)``."""
    for index, layer in enumerate(model):
        if isinstance(layer, nn.Linear):
            weight = params[f"{index}.weight"]
            bias = params.get(f"{index}.bias")
            x = (
                torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
                if bias is not None
                else torch.bmm(x, weight.transpose(1, 2))
            )
        else:
            x = layer(x)
    return x


def _task_mean_loss(loss_fn: LossFn, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Mean over every example of every task = mean over tasks of each task's mean loss (equal k per task).
    return loss_fn(out.flatten(0, 1), y.flatten(0, 1))


def meta_loss(
    model: nn.Sequential, params: Params, tasks, *, inner_lr, steps: int, first_order: bool, loss_fn: LossFn
) -> torch.Tensor:
    r""":math:`\frac1n\sum_i L_{Q_i}(\theta'_i)` for an MLP, all tasks in one batched pass per step.

    ``loss_fn`` must average over examples (``F.mse_loss``, ``F.cross_entropy`` with their default
    reduction); the callers check the model with :func:`supports` and validate the arguments.
    """
    xs, ys, xq, yq = tasks
    n = xs.shape[0]
    outer_graph = torch.is_grad_enabled()
    with torch.enable_grad():  # the inner steps need gradients even where the caller evaluates without
        # Parameters that carry no gradient (detached, or under no_grad) get a leaf of their own.
        leaves = {
            k: p if p.requires_grad and outer_graph else p.detach().requires_grad_(True) for k, p in params.items()
        }
        adapted = {k: p.unsqueeze(0).expand(n, *p.shape) for k, p in leaves.items()}
        for _ in range(steps):
            # n × (mean over tasks) = sum over tasks: its gradient in θ_i is task i's own ∇L_S.
            support = n * _task_mean_loss(loss_fn, batched_forward(model, adapted, xs), ys)
            grads = torch.autograd.grad(support, list(adapted.values()), create_graph=outer_graph and not first_order)
            adapted = sgd_step(adapted, dict(zip(adapted, grads)), inner_lr)
    if not outer_graph:
        adapted = {k: a.detach() for k, a in adapted.items()}
    return _task_mean_loss(loss_fn, batched_forward(model, adapted, xq), yq)
