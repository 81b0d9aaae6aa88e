r"""Adversarial training: the classifier learns on attacked inputs.

Derived in ``notebooks/02_adversarial_training.ipynb``.

* ``"standard"`` — empirical risk, :math:`\min_\theta \mathbb{E}\,L(\theta, x, y)`.
* ``"fgsm"`` — Goodfellow et al. (2015)'s mixed objective (notebook 02, eq. 2)
  :math:`\tilde J = \omega J(\theta, x, y) + (1-\omega) J(\theta, x + \epsilon\,\mathrm{sign}\nabla_x J, y)`,
  with mixing weight ω, passed as the keyword ``alpha`` (the paper's name for it; the course writes ω because
  it reserves α for the inner learning rate of meta-learning).
* ``"pgd"`` — Madry et al. (2018)'s saddle point
  :math:`\min_\theta \mathbb{E}\max_{\|\delta\|_\infty\le\epsilon} L(\theta, x+\delta, y)`,
  the inner maximum approximated by PGD with a random start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu.attacks import fgsm, pgd
from metaadv_edu.training import LossFn, cross_entropy_loss, train_classifier

__all__ = ["METHODS", "adversarial_training", "fgsm_mixed_loss", "pgd_loss"]

METHODS = ("standard", "fgsm", "pgd")


def fgsm_mixed_loss(epsilon: float, alpha: float = 0.5) -> LossFn:
    """Goodfellow's mixed loss ω·J(x) + (1 − ω)·J(x_FGSM) (notebook 02, eq. 2); the FGSM point is a constant.

    ``alpha`` is the mixing weight ω in [0, 1] (Goodfellow et al. call it α; notebook 02 writes ω because the
    course reserves α for the inner learning rate)."""
    epsilon = v.nonnegative("epsilon", epsilon)
    alpha = v.finite_number("alpha", alpha, low=0.0, high=1.0)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = fgsm(model, x, y, epsilon)
        return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)

    return loss


def pgd_loss(epsilon: float, *, step_size: float, steps: int, generator: torch.Generator | None = None) -> LossFn:
    """Madry's inner maximisation by PGD, then the loss at the attacked point (Danskin's theorem
    says its gradient in θ is the gradient of the robust loss)."""
    epsilon = v.nonnegative("epsilon", epsilon)
    step_size = v.positive("step_size", step_size)
    steps = v.integer("steps", steps)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if epsilon == 0:
            return F.cross_entropy(model(x), y)
        x_adv = pgd(model, x, y, epsilon, step_size=step_size, steps=steps, generator=generator)
        return F.cross_entropy(model(x_adv), y)

    return loss


def adversarial_training(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    method: str = "pgd",
    epsilon: float = 0.1,
    alpha: float = 0.5,
    pgd_steps: int = 7,
    pgd_step_size: float | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train ``model`` in place by ``method`` (``"standard"``, ``"fgsm"`` or ``"pgd"``).

    ``alpha`` is the mixing weight ω of ``method="fgsm"`` (:func:`fgsm_mixed_loss`; Goodfellow's α, written ω in
    notebook 02). ``pgd_step_size`` defaults to 2.5·ε / ``pgd_steps``. Returns the history of
    :func:`metaadv_edu.training.train_classifier` (loss per epoch, clean accuracy on ``eval_data``).
    """
    v.choice("method", method, METHODS)
    epsilon = v.nonnegative("epsilon", epsilon)
    if method == "standard":
        loss_fn = cross_entropy_loss
    elif method == "fgsm":
        loss_fn = fgsm_mixed_loss(epsilon, alpha)
    else:
        steps = v.integer("pgd_steps", pgd_steps)
        a = pgd_step_size if pgd_step_size is not None else 2.5 * max(epsilon, 1e-12) / steps
        loss_fn = pgd_loss(epsilon, step_size=a, steps=steps, generator=generator)
    return train_classifier(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        loss_fn=loss_fn,
        generator=generator,
        eval_data=eval_data,
        progress=progress,
        desc=f"{method} training (ε = {epsilon:g})",
    )
