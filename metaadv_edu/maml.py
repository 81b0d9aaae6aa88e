r"""Model-agnostic meta-learning (Finn, Abbeel & Levine 2017), vectorised over tasks.

Derived in ``notebooks/05_maml.ipynb``. For a task with support set S and query set Q,

.. math:: \theta' = \theta - \alpha\nabla_\theta L_S(\theta), \qquad
          \min_\theta \; \mathbb{E}_T\, L_Q(\theta'(\theta)),

and for one inner step the meta-gradient of a task is
:math:`(I - \alpha\nabla^2_\theta L_S(\theta))\,\nabla_{\theta'} L_Q(\theta')`. First-order MAML drops
the Hessian term. Tasks are batched with ``torch.func.vmap``; :func:`meta_loss_loop` is the same
computation as a plain per-task loop, kept as the readable reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, vmap
from tqdm.auto import tqdm

from metaadv_edu import _validate as v
from metaadv_edu import batched
from metaadv_edu.data import Tasks
from metaadv_edu.functional import LossFn, Params, default_loss, forward, params_of, sgd_step, task_loss

__all__ = [
    "adapt",
    "adaptation_losses",
    "check_inner_lr",
    "check_tasks",
    "meta_gradient_by_formula",
    "meta_loss",
    "meta_loss_loop",
    "meta_train",
    "tune_inner_lr",
]


def check_tasks(tasks: Tasks) -> None:
    """Raise a clear error unless ``tasks`` is a :class:`~metaadv_edu.data.Tasks` of tensors shaped
    (n_tasks, k, ...) with matching task counts, inputs and targets. Shared by every meta-learner."""
    if not isinstance(tasks, tuple) or len(tasks) != 4:
        raise TypeError("tasks must be a Tasks(x_support, y_support, x_query, y_query) tuple")
    xs, ys, xq, yq = tasks
    for name, t in zip(Tasks._fields, tasks):
        if not isinstance(t, torch.Tensor) or t.ndim < 2:
            raise ValueError(f"tasks.{name} must be a tensor of shape (n_tasks, k, ...)")
    if len({xs.shape[0], ys.shape[0], xq.shape[0], yq.shape[0]}) != 1:
        raise ValueError(
            f"tasks must hold the same number of tasks in every tensor; got {[tuple(t.shape) for t in tasks]}"
        )
    if xs.shape[1] != ys.shape[1] or xq.shape[1] != yq.shape[1]:
        raise ValueError(
            "each support (query) set needs as many targets as inputs; got "
            f"x_support {tuple(xs.shape)}, y_support {tuple(ys.shape)}, "
            f"x_query {tuple(xq.shape)}, y_query {tuple(yq.shape)}"
        )
    if xs.shape[2:] != xq.shape[2:]:
        raise ValueError(
            f"support and query inputs must have the same shape per example; got "
            f"{tuple(xs.shape[2:])} and {tuple(xq.shape[2:])}"
        )


def check_inner_lr(inner_lr, steps) -> tuple:
    """Validate an inner rule: ``inner_lr`` a positive number (or a tensor/dict of per-parameter rates,
    Meta-SGD's α) and ``steps`` an integer ≥ 1. Returns them, validated."""
    if not isinstance(inner_lr, (torch.Tensor, dict)):
        inner_lr = v.positive("inner_lr", inner_lr)
    return inner_lr, v.integer("steps", steps)


def adapt(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    inner_lr,
    steps: int = 1,
    first_order: bool = False,
    loss_fn: LossFn | None = None,
) -> Params:
    r"""``steps`` gradient steps on one task's support set,
    :math:`\theta \leftarrow \theta - \alpha\nabla_\theta L(\theta; x, y)`.

    Differentiable: gradients of the result flow back to ``params`` through every step (second
    order) unless ``first_order=True``, which treats each inner gradient as a constant (FOMAML).
    Works inside ``torch.func.vmap`` (it uses ``torch.func.grad``).
    """
    inner_lr, steps = check_inner_lr(inner_lr, steps)
    loss_fn = loss_fn or default_loss(y)
    for _ in range(steps):
        grads = grad(task_loss)(params, model, x, y, loss_fn)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        params = sgd_step(params, grads, inner_lr)
    return params


def meta_loss(
    model: nn.Module,
    tasks: Tasks,
    *,
    inner_lr,
    steps: int = 1,
    first_order: bool = False,
    params: Params | None = None,
    loss_fn: LossFn | None = None,
    fast_path: bool = True,
) -> torch.Tensor:
    r"""Mean query loss after adapting to each task's support set, vectorised over tasks.

    :math:`\frac1n\sum_i L_{Q_i}\big(\theta'_i\big)`; calling ``.backward()`` on it puts the
    meta-gradient in the model's parameters (or in ``params`` when given).

    Any model runs through ``torch.func.vmap``. A plain MLP with the default loss takes a faster,
    equivalent path (:mod:`metaadv_edu.batched`: batched matrix products instead of vmap) unless
    ``fast_path=False``.
    """
    check_tasks(tasks)
    inner_lr, steps = check_inner_lr(inner_lr, steps)
    params = params if params is not None else params_of(model)
    if fast_path and loss_fn is None and batched.supports(model):
        return batched.meta_loss(
            model,
            params,
            tasks,
            inner_lr=inner_lr,
            steps=steps,
            first_order=first_order,
            loss_fn=default_loss(tasks.y_support),
        )
    loss_fn = loss_fn or default_loss(tasks.y_support)

    def one_task(xs, ys, xq, yq):
        adapted = adapt(model, params, xs, ys, inner_lr=inner_lr, steps=steps, first_order=first_order, loss_fn=loss_fn)
        return loss_fn(forward(model, adapted, xq), yq)

    return vmap(one_task)(*tasks).mean()


def meta_loss_loop(
    model: nn.Module,
    tasks: Tasks,
    *,
    inner_lr,
    steps: int = 1,
    first_order: bool = False,
    params: Params | None = None,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """The same as :func:`meta_loss`, written as a plain loop over tasks with ``torch.autograd.grad``."""
    check_tasks(tasks)
    inner_lr, steps = check_inner_lr(inner_lr, steps)
    params = params if params is not None else params_of(model)
    loss_fn = loss_fn or default_loss(tasks.y_support)
    losses = []
    for xs, ys, xq, yq in zip(*tasks):
        adapted = dict(params)
        for _ in range(steps):
            loss = loss_fn(forward(model, adapted, xs), ys)
            grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
            adapted = sgd_step(adapted, dict(zip(adapted, grads)), inner_lr)
        losses.append(loss_fn(forward(model, adapted, xq), yq))
    return torch.stack(losses).mean()


def adaptation_losses(
    model: nn.Module,
    tasks: Tasks,
    *,
    inner_lr,
    max_steps: int = 10,
    params: Params | None = None,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """Query loss of every task after 0, 1, …, ``max_steps`` inner steps: shape (max_steps+1, n_tasks).

    The evaluation protocol of MAML's sinusoid experiment: fine-tune on the K support points,
    measure on the query points. No graph is kept.
    """
    check_tasks(tasks)
    inner_lr, max_steps = check_inner_lr(inner_lr, max_steps)
    params = params_of(model, detach=True) if params is None else params
    params = {k: p.detach() for k, p in params.items()}
    loss_fn = loss_fn or default_loss(tasks.y_support)

    def one_task(xs, ys, xq, yq):
        current, out = params, [loss_fn(forward(model, params, xq), yq)]
        for _ in range(max_steps):
            current = sgd_step(current, grad(task_loss)(current, model, xs, ys, loss_fn), inner_lr)
            out.append(loss_fn(forward(model, current, xq), yq))
        return torch.stack(out)

    return vmap(one_task)(*tasks).T.detach()


def tune_inner_lr(
    model: nn.Module, tasks: Tasks, candidates, *, max_steps: int = 10, loss_fn: LossFn | None = None
) -> tuple[float, torch.Tensor]:
    """Choose a fine-tuning step size on held-out tasks: the candidate with the lowest mean query loss
    over steps 1..``max_steps`` (a diverging candidate counts as infinitely bad).

    Returns ``(best, mean_losses)`` with ``mean_losses[i, s]`` the mean query loss after ``s`` steps
    of ``candidates[i]``.
    """
    candidates = [v.positive("candidates", c) for c in candidates]
    if not candidates:
        raise ValueError("candidates must hold at least one step size")
    table = torch.stack(
        [adaptation_losses(model, tasks, inner_lr=c, max_steps=max_steps, loss_fn=loss_fn).mean(1) for c in candidates]
    )
    score = table[:, 1:].mean(1)
    score = torch.where(torch.isfinite(score), score, torch.full_like(score, float("inf")))
    return candidates[int(score.argmin())], table


def meta_train(
    model: nn.Module,
    sample_tasks: Callable[[torch.Generator], Tasks],
    *,
    iterations: int,
    inner_lr: float,
    steps: int = 1,
    first_order: bool = False,
    outer_lr: float = 1e-3,
    generator: torch.Generator | None = None,
    eval_tasks: Tasks | None = None,
    eval_every: int = 500,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    desc: str = "meta-training",
    objective: Callable | None = None,
) -> dict[str, list[float]]:
    """Meta-train ``model`` in place with Adam on the MAML objective.

    ``sample_tasks(generator)`` returns a fresh meta-batch each iteration. Returns a history with
    the meta-loss of every iteration and, every ``eval_every`` iterations, the mean query loss after
    ``steps`` inner steps on ``eval_tasks``. ``objective`` replaces :func:`meta_loss` by another
    function with its signature (adversarial querying in :mod:`metaadv_edu.robust_meta` uses this).
    """
    objective = objective or meta_loss
    iterations = v.integer("iterations", iterations)
    outer_lr = v.positive("outer_lr", outer_lr)
    inner_lr, steps = check_inner_lr(inner_lr, steps)
    opt = torch.optim.Adam(model.parameters(), lr=outer_lr)
    history: dict[str, list[float]] = {"meta_loss": [], "eval_iteration": [], "eval_loss": []}
    for it in tqdm(range(iterations), desc=desc, disable=not progress, leave=False):
        loss = objective(
            model, sample_tasks(generator), inner_lr=inner_lr, steps=steps, first_order=first_order, loss_fn=loss_fn
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["meta_loss"].append(float(loss.detach()))
        if eval_tasks is not None and ((it + 1) % eval_every == 0 or it + 1 == iterations):
            after = adaptation_losses(model, eval_tasks, inner_lr=inner_lr, max_steps=steps, loss_fn=loss_fn)[-1]
            history["eval_iteration"].append(it + 1)
            history["eval_loss"].append(float(after.mean()))
    return history


def meta_gradient_by_formula(
    model: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xq: torch.Tensor,
    yq: torch.Tensor,
    *,
    inner_lr: float,
    steps: int = 1,
    loss_fn: LossFn | None = None,
) -> Params:
    r"""The meta-gradient of one task from the chain rule, without differentiating through the loop.

    With :math:`\theta_0 = \theta`, :math:`\theta_{j+1} = \theta_j - \alpha\nabla L_S(\theta_j)`:

    .. math:: \nabla_\theta L_Q(\theta_k) = (I - \alpha H_0)(I - \alpha H_1)\cdots(I - \alpha H_{k-1})
              \,\nabla L_Q(\theta_k), \qquad H_j = \nabla^2 L_S(\theta_j),

    applied right to left with Hessian-vector products. Used to check :func:`meta_loss`.
    """
    inner_lr, steps = check_inner_lr(inner_lr, steps)
    loss_fn = loss_fn or default_loss(ys)
    thetas = [params_of(model, detach=True)]
    for _ in range(steps):
        g = torch.autograd.grad(task_loss(thetas[-1], model, xs, ys, loss_fn), list(thetas[-1].values()))
        thetas.append(
            {k: (p - inner_lr * gi).detach().requires_grad_(True) for (k, p), gi in zip(thetas[-1].items(), g)}
        )
    last = thetas[-1]
    vec = dict(zip(last, torch.autograd.grad(task_loss(last, model, xq, yq, loss_fn), list(last.values()))))
    for theta in reversed(thetas[:-1]):
        g = torch.autograd.grad(task_loss(theta, model, xs, ys, loss_fn), list(theta.values()), create_graph=True)
        dot = sum((gi * vec[k]).sum() for gi, k in zip(g, theta))
        hv = dict(zip(theta, torch.autograd.grad(dot, list(theta.values()))))
        vec = {k: vec[k] - inner_lr * hv[k] for k in vec}
    return vec
