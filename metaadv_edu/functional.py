"""Parameters as a plain ``dict[str, Tensor]``, the model run with ``torch.func.functional_call``.

The meta-learning notebooks (05–08) never mutate a module to adapt it: they compute new parameter
dictionaries, θ′ = θ − α∇L, and run the same module with them. Nothing here touches private state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = ["Params", "default_loss", "forward", "params_of", "sgd_step", "task_loss"]

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def params_of(model: nn.Module, *, detach: bool = False) -> Params:
    """The model's parameters by name: the live tensors (gradients reach the model), or detached
    copies that require grad (``detach=True``) for computations that must not touch it."""
    if detach:
        return {k: p.detach().clone().requires_grad_(True) for k, p in model.named_parameters()}
    return dict(model.named_parameters())


def forward(model: nn.Module, params: Params, x: torch.Tensor) -> torch.Tensor:
    """Run ``model`` with ``params`` instead of its own parameters."""
    return functional_call(model, params, (x,))


def default_loss(y: torch.Tensor) -> LossFn:
    """Mean squared error for float targets, cross-entropy for integer class labels."""
    if y.is_floating_point():
        return F.mse_loss
    return F.cross_entropy


def task_loss(params: Params, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """L(θ; x, y) with θ first, the form ``torch.func.grad`` differentiates."""
    return loss_fn(forward(model, params, x), y)


def sgd_step(params: Params, grads: Params, lr) -> Params:
    """θ − lr·g for every tensor; ``lr`` is a number, a tensor, or a dict of per-tensor rates."""
    if isinstance(lr, dict):
        return {k: p - lr[k] * grads[k] for k, p in params.items()}
    return {k: p - lr * grads[k] for k, p in params.items()}
