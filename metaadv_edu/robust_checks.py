r"""The derivation checks of adversarial querying (notebook 08, section 3).

Three checks, each with wrong implementations it must reject (``tests/test_robust_meta.py`` and
``tests/test_robust_eval.py``):

* :func:`meta_gradient_check` — on a two-class linear model the inner maximum over an L2 ball is known
  in closed form (:func:`linear_robust_loss`), and one normalised-gradient step of ε is its exact
  maximiser. The meta-gradient of :func:`metaadv_edu.robust_meta.adversarial_query_loss` must equal the
  finite differences of the *true* robust objective. The L2 ball matters: its maximiser
  :math:`-\epsilon s\,w/\|w\|_2` moves with θ, so a wrong δ (aimed at θ instead of θ′, or not a
  maximiser) gives a visibly wrong gradient, whereas the L∞ maximiser :math:`-\epsilon s\,\mathrm{sign}(w)`
  sits on a corner of the ball that does not move.
* :func:`frozen_attack_check` — eqs. (3)–(4) on the real cover network: the meta-gradient must be MAML's
  meta-gradient (:func:`metaadv_edu.maml.meta_loss`, second order) with the attacked query inputs
  substituted and held fixed. A multi-step L2 attack on a non-linear network is not an exact maximiser,
  so an attack left attached to the graph adds a term :math:`\partial L/\partial\delta\cdot
  \partial\delta/\partial\theta` and fails; so does an attack aimed at θ, or a first-order adaptation.
  Both sides of this check use the same attack, so it tests how the gradient flows, not how strong the
  attack is.
* :func:`attack_strength_check` — the attack inside ``adversarial_query_loss`` must raise the query loss
  of θ′ as much as an independent PGD (notebook 01's :func:`metaadv_edu.attacks.pgd`, plain autograd, run
  task by task against θ′ with its own random starts). An attack aimed at θ, or one that descends the
  loss, falls short and fails.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import attacks, maml, robust_meta
from metaadv_edu.data import Tasks
from metaadv_edu.functional import Params, forward, params_of

__all__ = [
    "attack_strength_check",
    "directional_derivatives",
    "frozen_attack_check",
    "linear_robust_loss",
    "meta_gradient_check",
]


def linear_robust_loss(
    params: Params, x: torch.Tensor, y: torch.Tensor, epsilon: float, norm: str = "l2"
) -> torch.Tensor:
    r"""The exact inner maximum for a two-class linear model, in closed form.

    With :math:`w = w_1 - w_0`, :math:`b = b_1 - b_0` and :math:`s = \pm1` for class 1/0, the
    cross-entropy is :math:`\log(1 + e^{-s(w^\top x + b)})`, increasing as the margin falls, and the
    margin is linear in δ, so the worst δ in the ball :math:`\|\delta\|_p \le \epsilon` lowers it by
    :math:`\epsilon\|w\|_q` (q the dual norm: L2 ↔ L2, L∞ ↔ L1):

    .. math:: \max_{\|\delta\|_p\le\epsilon} L = \log\big(1 + e^{-s(w^\top x + b) + \epsilon\|w\|_q}\big).

    ``params`` are a :class:`metaadv_edu.models.LogisticRegression` with two classes (no pixel clamp);
    ``norm`` is ``"l2"`` or ``"linf"``.
    """
    v.choice("norm", norm, ("l2", "linf"))
    weight, bias = params["1.weight"], params["1.bias"]
    if weight.shape[0] != 2:
        raise ValueError(f"linear_robust_loss needs a two-class model, got {weight.shape[0]} classes")
    w, b = weight[1] - weight[0], bias[1] - bias[0]
    s = 2 * y.to(w.dtype) - 1
    margin = s * (x.flatten(1) @ w + b)
    dual = w.norm() if norm == "l2" else w.abs().sum()
    return F.softplus(-margin + epsilon * dual).mean()


def directional_derivatives(
    f: Callable[[Params], torch.Tensor], params: Params, directions: list[Params], *, h: float = 1e-6
) -> torch.Tensor:
    """Central differences (f(θ + h·v) − f(θ − h·v)) / 2h along each direction v: a gradient check that
    costs two evaluations per direction instead of two per coordinate."""
    h = v.positive("h", h)
    base = {k: p.detach() for k, p in params.items()}
    with torch.no_grad():
        return torch.stack(
            [
                (f({k: base[k] + h * d[k] for k in base}) - f({k: base[k] - h * d[k] for k in base})) / (2 * h)
                for d in directions
            ]
        )


def _relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    scale = max(float(t.abs().max()) for t in b)
    return max(float((x - y).abs().max()) for x, y in zip(a, b)) / scale


def meta_gradient_check(
    *,
    epsilon: float = 1.0,
    inner_lr: float = 0.5,
    n_tasks: int = 2,
    seed: int = 0,
    h: float = 1e-6,
    n_directions: int = 24,
    query_loss: Callable | None = None,
) -> dict[str, float]:
    r"""Check the adversarial-querying meta-gradient on a tiny model where the inner maximum is exact.

    Two-way tasks of 8×8 covers, a two-class :class:`metaadv_edu.models.LogisticRegression` in float64,
    one inner step, an L2 ball of radius ``epsilon`` and one normalised-gradient step of ε without the
    pixel clamp (the exact maximiser, see :func:`linear_robust_loss`). The true objective
    :math:`J(\theta) = \frac1n\sum_i \max_\delta L_{Q_i}(\theta'_i, x + \delta)` is differentiated by central
    differences along ``n_directions`` random directions v and compared with :math:`\nabla J\cdot v` from
    autograd through ``query_loss`` (default :func:`metaadv_edu.robust_meta.adversarial_query_loss`), once
    attacking θ′ (``"adapted"``) and once attacking θ (``"initial"``). Errors are max-abs differences
    relative to the largest finite difference.
    """
    from metaadv_edu import covers, models

    query_loss = query_loss or robust_meta.adversarial_query_loss
    epsilon, inner_lr = v.nonnegative("epsilon", epsilon), v.positive("inner_lr", inner_lr)
    tasks = covers.cover_tasks(
        v.integer("n_tasks", n_tasks),
        n_way=2,
        k_shot=4,
        k_query=6,
        size=8,
        generator=torch.Generator().manual_seed(seed),
    )
    tasks = Tasks(*(t.double() if t.is_floating_point() else t for t in tasks))
    torch.manual_seed(seed)
    model = models.LogisticRegression(3 * 8 * 8, 2).double()
    theta = params_of(model, detach=True)
    g = torch.Generator().manual_seed(seed + 1)
    directions = [
        {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in theta.items()}
        for _ in range(v.integer("n_directions", n_directions))
    ]

    def objective(p: Params) -> torch.Tensor:
        total = 0.0
        for xs, ys, xq, yq in zip(*tasks):
            total = total + linear_robust_loss(maml.adapt(model, p, xs, ys, inner_lr=inner_lr), xq, yq, epsilon)
        return total / len(tasks.x_support)

    fd = directional_derivatives(objective, theta, directions, h=h)
    out = {"robust_loss": float(objective(theta).detach())}
    for target in ("adapted", "initial"):
        params = {k: p.clone().requires_grad_(True) for k, p in theta.items()}
        loss = query_loss(
            model,
            tasks,
            inner_lr=inner_lr,
            epsilon=epsilon,
            attack="l2",
            attack_steps=1,
            step_size=epsilon,
            clamp=False,
            params=params,
            target=target,
        )
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        along = torch.stack([sum((grads[k] * d[k]).sum() for k in grads) for d in directions])
        out[f"loss_{target}"] = float(loss.detach())
        out[f"error_{target}"] = _relative_error([along], [fd])
    return out


def frozen_attack_check(
    model: nn.Module,
    tasks: Tasks,
    *,
    inner_lr: float,
    steps: int,
    epsilon: float,
    attack_steps: int = 5,
    query_loss: Callable | None = None,
) -> dict[str, float]:
    r"""Eqs. (3)–(4) of notebook 08 in the code: ``query_loss`` (default
    :func:`metaadv_edu.robust_meta.adversarial_query_loss`, L2 attack of ``attack_steps`` steps against θ′)
    must have the value and the θ-gradient of MAML's second-order meta-loss on the same tasks with the
    query inputs replaced by the attacked ones, computed separately and frozen.

    Returns ``{"loss_error", "grad_error"}``: |Δ value| / value and the largest |Δ gradient| relative to
    the largest reference entry.
    """
    query_loss = query_loss or robust_meta.adversarial_query_loss
    params = [p for p in model.parameters()]
    loss = query_loss(
        model, tasks, inner_lr=inner_lr, steps=steps, epsilon=epsilon, attack="l2", attack_steps=attack_steps
    )
    grads = torch.autograd.grad(loss, params)
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
    x_adv = robust_meta.attack_tasks(
        model, adapted, tasks.x_query, tasks.y_query, epsilon=epsilon, attack="l2", attack_steps=attack_steps
    )
    frozen = Tasks(tasks.x_support, tasks.y_support, x_adv, tasks.y_query)
    ref = maml.meta_loss(model, frozen, inner_lr=inner_lr, steps=steps)
    ref_grads = torch.autograd.grad(ref, params)
    loss, ref = float(loss.detach()), float(ref.detach())
    return {"loss_error": abs(loss - ref) / ref, "grad_error": _relative_error(list(grads), list(ref_grads))}


def attack_strength_check(
    model: nn.Module,
    tasks: Tasks,
    *,
    inner_lr: float,
    steps: int,
    epsilon: float,
    attack_steps: int = 10,
    seed: int = 0,
    query_loss: Callable | None = None,
) -> dict[str, float]:
    r"""Is the attack inside the adversarial-query loss as strong as an independent attack?

    ``query_loss`` (default :func:`metaadv_edu.robust_meta.adversarial_query_loss`, L∞ PGD of
    ``attack_steps`` steps of 2.5ε/steps against θ′) gives the mean query loss of the adapted weights at
    its attacked inputs. The reference is :func:`metaadv_edu.attacks.pgd` (notebook 01, another code path)
    with the same ε, steps and step size, run task by task against the same θ′ from other random starts.
    Returns the clean query loss (MAML's :func:`metaadv_edu.maml.meta_loss`), both attacked losses and
    ``ratio`` = (ours − clean) / (independent − clean): about 1 for an equally strong attack, well below 1
    for a weaker one, negative for an attack that lowers the loss.
    """
    query_loss = query_loss or robust_meta.adversarial_query_loss
    epsilon = v.positive("epsilon", epsilon)
    attack_steps = v.integer("attack_steps", attack_steps)
    ours = query_loss(
        model,
        tasks,
        inner_lr=inner_lr,
        steps=steps,
        epsilon=epsilon,
        attack="pgd",
        attack_steps=attack_steps,
        generator=torch.Generator().manual_seed(seed),
    )
    clean = maml.meta_loss(model, tasks, inner_lr=inner_lr, steps=steps)
    theta = params_of(model, detach=True)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for xs, ys, xq, yq in zip(*tasks):
        adapted = {k: p.detach() for k, p in maml.adapt(model, theta, xs, ys, inner_lr=inner_lr, steps=steps).items()}

        def logits(z, adapted=adapted):
            return forward(model, adapted, z)

        x_adv = attacks.pgd(
            logits, xq, yq, epsilon, step_size=2.5 * epsilon / attack_steps, steps=attack_steps, generator=g
        )
        with torch.no_grad():
            losses.append(F.cross_entropy(logits(x_adv), yq))
    ours, clean, independent = float(ours.detach()), float(clean.detach()), float(torch.stack(losses).mean())
    return {
        "clean": clean,
        "ours": ours,
        "independent": independent,
        "ratio": (ours - clean) / (independent - clean),
    }
