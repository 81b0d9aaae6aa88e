r"""Meta-SGD (Li, Zhou, Chen & Li 2017): MAML with a learned learning rate for every parameter.

Derived in ``notebooks/07_meta_sgd.ipynb``. The inner step is elementwise,

.. math:: \theta' = \theta - \alpha\circ\nabla_\theta L_S(\theta),

with α of the same shape as θ, learned together with θ. For one step,
:math:`\partial L_Q(\theta')/\partial\alpha = -\nabla_{\theta'}L_Q(\theta')\circ\nabla_\theta L_S(\theta)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from metaadv_edu import _validate as v
from metaadv_edu import maml
from metaadv_edu.data import Tasks
from metaadv_edu.functional import LossFn, Params

__all__ = ["init_inner_lrs", "meta_loss", "meta_train"]


def init_inner_lrs(
    model: nn.Module, value: float | tuple[float, float] = 0.01, *, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """A learnable α for every parameter, with the parameter's shape and device.

    ``value`` is a constant, or a range (low, high) to draw α uniformly from, as the paper does.
    """
    out = {}
    if isinstance(value, tuple):
        low = v.positive("value[0]", value[0])
        high = v.finite_number("value[1]", value[1], low=low)
    else:
        low = high = v.positive("value", value)
    for name, p in model.named_parameters():
        alpha = low + (high - low) * torch.rand(p.shape, generator=generator, dtype=p.dtype)
        out[name] = alpha.to(p.device).requires_grad_(True)
    return out


def _check_lrs(model: nn.Module, inner_lrs: dict[str, torch.Tensor]) -> None:
    if not isinstance(inner_lrs, dict):
        raise TypeError("inner_lrs must be a dict name → tensor, see init_inner_lrs")
    for name, p in model.named_parameters():
        if name not in inner_lrs:
            raise ValueError(f"inner_lrs has no entry for parameter {name!r}")
        if inner_lrs[name].shape != p.shape:
            raise ValueError(
                f"inner_lrs[{name!r}] must have shape {tuple(p.shape)}, got {tuple(inner_lrs[name].shape)}"
            )


def meta_loss(
    model: nn.Module,
    inner_lrs: dict[str, torch.Tensor],
    tasks: Tasks,
    *,
    steps: int = 1,
    params: Params | None = None,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """Mean query loss after ``steps`` elementwise steps θ − α∘∇L_S; vectorised over tasks.

    ``.backward()`` puts gradients in the model's parameters and in ``inner_lrs``.
    """
    _check_lrs(model, inner_lrs)
    return maml.meta_loss(model, tasks, inner_lr=inner_lrs, steps=steps, params=params, loss_fn=loss_fn)


def meta_train(
    model: nn.Module,
    inner_lrs: dict[str, torch.Tensor],
    sample_tasks: Callable[[torch.Generator], Tasks],
    *,
    iterations: int,
    outer_lr: float = 1e-3,
    steps: int = 1,
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    desc: str = "Meta-SGD",
) -> dict[str, list[float]]:
    """Update θ and α together with Adam on the Meta-SGD objective."""
    _check_lrs(model, inner_lrs)
    iterations = v.integer("iterations", iterations)
    outer_lr = v.positive("outer_lr", outer_lr)
    opt = torch.optim.Adam([*model.parameters(), *inner_lrs.values()], lr=outer_lr)
    history: dict[str, list[float]] = {"meta_loss": []}
    for _ in tqdm(range(iterations), desc=desc, disable=not progress, leave=False):
        loss = meta_loss(model, inner_lrs, sample_tasks(generator), steps=steps, loss_fn=loss_fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["meta_loss"].append(float(loss.detach()))
    return history
