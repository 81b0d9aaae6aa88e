r"""Meta-adversarial training: robust few-shot learning by adversarial querying (attacks against θ′).

Derived in ``notebooks/08_meta_adversarial_training.ipynb``.

**Adversarial querying** (Goldblum, Fowl & Goldstein 2020) keeps MAML's inner loop on the *clean*
support set and attacks the *query* set against the *adapted* weights:

.. math:: \min_\theta\; \mathbb{E}_T\; \max_{\|\delta\|_\infty\le\epsilon}
          L_Q\big(\theta'(\theta),\, x_Q + \delta\big), \qquad
          \theta'(\theta) = \theta - \alpha\nabla_\theta L_S(\theta).

By Danskin's theorem the gradient of the inner maximum is the gradient of the loss at the maximiser
with the perturbation held fixed, so the attack runs without a graph (its result is detached) and
the meta-gradient flows through :math:`\theta'(\theta)` only, exactly as in :mod:`metaadv_edu.maml`.

Everything here works on batches of tasks (:class:`metaadv_edu.data.Tasks`) with ``torch.func.vmap``:
adapted parameters carry a leading task dimension, and every task is attacked against its own
adapted model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metaadv_edu import _validate as v
from metaadv_edu import attacks, maml
from metaadv_edu.data import Tasks
from metaadv_edu.functional import Params, forward, params_of

__all__ = [
    "ATTACKS",
    "Learner",
    "adapt_tasks",
    "adversarial_query_loss",
    "attack_one_task",
    "attack_tasks",
    "check_adapted",
    "functional_attack",
    "meta_train_adversarial",
    "representative_task",
    "robust_task_accuracy",
    "task_accuracy",
    "tune_inner_lr_by_accuracy",
]

ATTACKS = ("fgsm", "pgd")
"""The L∞ attacks of the evaluation. ``"l2"`` (normalised-gradient steps in the L2 ball) is also accepted
by the attack functions: its δ moves smoothly with the weights, which the derivation checks need."""
_ALL_ATTACKS = ATTACKS + ("l2",)


def _attack_settings(epsilon, attack: str, attack_steps, step_size) -> tuple[float, int, float]:
    """(ε, steps, step size) after checks: FGSM is one step of ε; PGD and L2 default to 2.5ε/steps (Madry et al.)."""
    epsilon = v.nonnegative("epsilon", epsilon)
    v.choice("attack", attack, _ALL_ATTACKS)
    attack_steps = v.integer("attack_steps", attack_steps)
    if attack == "fgsm":
        return epsilon, 1, epsilon
    if step_size is None:
        return epsilon, attack_steps, 2.5 * epsilon / attack_steps
    return epsilon, attack_steps, v.positive("step_size", step_size)


def _random_starts(x: torch.Tensor, epsilon: float, attack: str, generator: torch.Generator | None) -> torch.Tensor:
    """PGD's uniform random start in the ε-ball (drawn on the CPU for reproducibility); FGSM and L2 start at x."""
    if attack != "pgd" or epsilon == 0:
        return torch.zeros_like(x)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    return epsilon * noise.to(x.device)


def functional_attack(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    *,
    epsilon: float,
    steps: int,
    step_size: float,
    clamp: bool = True,
    norm: str = "linf",
) -> torch.Tensor:
    r"""PGD against ``model`` run with ``params``: :math:`x \leftarrow \Pi(x + a\,\mathrm{sign}\nabla_x L)` in the
    L∞ ball, or :math:`x \leftarrow \Pi(x + a\,\nabla_x L / \|\nabla_x L\|_2)` per example in the L2 ball
    (``norm="l2"``; one step of ε from ``start = 0`` is the exact maximiser for a linear model).

    One batch; runs inside ``vmap`` (it uses ``torch.func.grad``). ``start`` is the initial offset
    (zeros and one step of ε: FGSM). The parameters are detached, and so is the result: by Danskin's
    theorem no gradient needs to flow through the attack. Arguments are not checked here; the public
    callers check them once.
    """
    if epsilon == 0:
        return x.detach()
    params = {k: p.detach() for k, p in params.items()}
    x0 = x.detach()

    def loss(z):
        return F.cross_entropy(forward(model, params, z), y, reduction="sum")

    def per_example_norm(t):
        return t.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *[1] * (t.dim() - 1))

    x_adv = x0 + start
    if clamp:
        x_adv = x_adv.clamp(0, 1)
    for _ in range(steps):
        g = grad(loss)(x_adv)
        if norm == "l2":
            delta = x_adv + step_size * g / per_example_norm(g) - x0
            x_adv = x0 + delta * (epsilon / per_example_norm(delta)).clamp(max=1.0)
        else:
            x_adv = x0 + (x_adv + step_size * g.sign() - x0).clamp(-epsilon, epsilon)
        if clamp:
            x_adv = x_adv.clamp(0, 1)
    return x_adv.detach()


def _check_classification(tasks: Tasks) -> None:
    maml.check_tasks(tasks)
    if tasks.y_support.is_floating_point() or tasks.y_query.is_floating_point():
        raise TypeError("robust few-shot learning needs integer class labels in tasks.y_support and tasks.y_query")


def adapt_tasks(model: nn.Module, tasks: Tasks, *, inner_lr, steps: int = 1, params: Params | None = None) -> Params:
    r"""θ′ for every task (``steps`` SGD steps of ``inner_lr`` on its clean support set), detached.

    The result has a leading task dimension on every tensor. ``steps=0`` returns θ for every task.
    """
    maml.check_tasks(tasks)
    steps = v.integer("steps", steps, low=0)
    if not isinstance(inner_lr, (torch.Tensor, dict)):
        inner_lr = v.positive("inner_lr", inner_lr)
    # Constants, and first-order steps: no autograd graph is kept, so memory does not grow with steps.
    params = {k: p.detach() for k, p in (params_of(model) if params is None else params).items()}
    n = tasks.x_support.shape[0]
    if steps == 0:
        return {k: p.expand(n, *p.shape) for k, p in params.items()}
    adapted = vmap(lambda xs, ys: maml.adapt(model, params, xs, ys, inner_lr=inner_lr, steps=steps, first_order=True))(
        tasks.x_support, tasks.y_support
    )
    return {k: p.detach() for k, p in adapted.items()}


def check_adapted(adapted: Params, x: torch.Tensor) -> None:
    """Raise unless ``adapted`` is a dict of per-task parameters (from :func:`adapt_tasks`) for the tasks of ``x``."""
    if not isinstance(adapted, dict) or not adapted:
        raise TypeError("adapted must be the dict of per-task parameters returned by adapt_tasks")
    n = {p.shape[0] for p in adapted.values()}
    if n != {x.shape[0]}:
        raise ValueError(
            f"adapted parameters hold {sorted(n)} tasks but x holds {x.shape[0]}; "
            "pass the adapted parameters of the same tasks"
        )


def attack_tasks(
    model: nn.Module,
    adapted: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    attack: str = "pgd",
    attack_steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attack each task's inputs ``x`` (n_tasks, k, …) against that task's own adapted parameters."""
    check_adapted(adapted, x)
    v.same_batch(x, y)
    epsilon, steps, step = _attack_settings(epsilon, attack, attack_steps, step_size)
    starts = _random_starts(x, epsilon, attack, generator)

    norm = "l2" if attack == "l2" else "linf"

    def one(p, xb, yb, sb):
        return functional_attack(model, p, xb, yb, sb, epsilon=epsilon, steps=steps, step_size=step, norm=norm)

    return vmap(one)(adapted, x, y, starts)


def attack_one_task(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    attack_steps: int = 10,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PGD on one task's inputs ``x`` (k, …) against its adapted ``params`` (no task dimension), with the
    step size 2.5ε/steps and the seeded random start of :func:`attack_tasks` (a test keeps the two equal),
    run with plain autograd: for a single task faster than ``vmap``, which is what an explorer needs.
    Returns ``(x_adv, clean predictions, attacked predictions)``."""
    epsilon, steps, step = _attack_settings(epsilon, "pgd", attack_steps, None)

    def logits(z):
        return forward(model, params, z)

    x_adv = (
        x
        if epsilon == 0
        else attacks.pgd(
            logits, x, y, epsilon, step_size=step, steps=steps, generator=torch.Generator().manual_seed(seed)
        )
    )
    with torch.no_grad():
        return x_adv, logits(x).argmax(-1), logits(x_adv).argmax(-1)


def task_accuracy(model: nn.Module, adapted: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy of each task's adapted model on its inputs: shape (n_tasks,)."""
    check_adapted(adapted, x)
    with torch.no_grad():
        logits = vmap(lambda p, xb: forward(model, p, xb))(adapted, x)
    return (logits.argmax(-1) == y).float().mean(-1)


def robust_task_accuracy(
    model: nn.Module,
    tasks: Tasks,
    epsilons: Sequence[float],
    *,
    inner_lr,
    steps: int = 1,
    attack: str = "pgd",
    attack_steps: int = 10,
    params: Params | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adapt to each task's clean support set, then attack its query set at every ε (0 = clean).

    Returns the per-task query accuracies, shape (len(epsilons), n_tasks), for means with CIs.
    """
    _check_classification(tasks)
    adapted = adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps, params=params)
    return _accuracy_under_attack(
        model, adapted, tasks, epsilons, attack=attack, attack_steps=attack_steps, generator=generator
    )


def _accuracy_under_attack(model, adapted, tasks, epsilons, *, attack, attack_steps, generator) -> torch.Tensor:
    rows = []
    for eps in epsilons:
        x_adv = attack_tasks(
            model,
            adapted,
            tasks.x_query,
            tasks.y_query,
            epsilon=eps,
            attack=attack,
            attack_steps=attack_steps,
            generator=generator,
        )
        rows.append(task_accuracy(model, adapted, x_adv, tasks.y_query))
    return torch.stack(rows)


class Learner(NamedTuple):
    """A few-shot learner ready to be evaluated: the network it starts every task from, the inner learning
    rate α of its ``steps`` SGD steps on a task's clean support set (:func:`adapt_tasks`)."""

    model: nn.Module
    inner_lr: float
    steps: int


def tune_inner_lr_by_accuracy(
    model: nn.Module, tasks: Tasks, inner_lrs: Sequence[float], *, steps: int
) -> tuple[float, list[float]]:
    """The inner learning rate among ``inner_lrs`` with the best mean clean query **accuracy** after ``steps``
    steps on the support sets of ``tasks`` (meta-validation tasks, never the test tasks); ties go to the
    smaller rate. Returns (best rate, mean accuracy for every rate).

    Unlike :func:`metaadv_edu.maml.tune_inner_lr` (regression, notebook 05: the lowest mean query *loss* over
    1..k steps), the criterion is the accuracy after exactly ``steps`` steps, the number every learner of
    notebook 08 adapts with.
    """
    _check_classification(tasks)
    if not inner_lrs:
        raise ValueError("inner_lrs must hold at least one learning rate")
    scores = []
    for lr in inner_lrs:
        adapted = adapt_tasks(model, tasks, inner_lr=lr, steps=steps)
        scores.append(float(task_accuracy(model, adapted, tasks.x_query, tasks.y_query).mean()))
    best = max(range(len(scores)), key=lambda i: (scores[i], -inner_lrs[i]))
    return float(inner_lrs[best]), scores


def adversarial_query_loss(
    model: nn.Module,
    tasks: Tasks,
    *,
    inner_lr,
    steps: int = 1,
    first_order: bool = False,
    epsilon: float,
    attack: str = "pgd",
    attack_steps: int = 3,
    step_size: float | None = None,
    target: str = "adapted",
    clamp: bool = True,
    params: Params | None = None,
    generator: torch.Generator | None = None,
    loss_fn=None,
) -> torch.Tensor:
    r"""The adversarial-querying meta-loss, vectorised over tasks:

    .. math:: \frac1n\sum_i L_{Q_i}\big(\theta'_i,\; x_{Q_i} + \delta^\star_i\big), \qquad
              \delta^\star_i \approx \arg\max_{\|\delta\|_\infty\le\epsilon} L_{Q_i}(\theta'_i, x_{Q_i} + \delta)

    with θ′ from the clean support set (as in :func:`metaadv_edu.maml.meta_loss`) and δ* from
    FGSM/PGD (or, with ``attack="l2"``, normalised-gradient steps in the L2 ball) held fixed (Danskin).
    ``target="initial"`` attacks θ instead of θ′ — the mistake the notebook measures; ``loss_fn`` is
    accepted for :func:`metaadv_edu.maml.meta_train` and must be
    None (the loss is the cross-entropy).
    """
    _check_classification(tasks)
    if loss_fn is not None:
        raise ValueError("adversarial_query_loss uses the cross-entropy; loss_fn must be None")
    v.choice("target", target, ("adapted", "initial"))
    inner_lr, steps = maml.check_inner_lr(inner_lr, steps)
    epsilon, a_steps, a_step = _attack_settings(epsilon, attack, attack_steps, step_size)
    params = params if params is not None else params_of(model)
    starts = _random_starts(tasks.x_query, epsilon, attack, generator)

    def one_task(xs, ys, xq, yq, start):
        adapted = maml.adapt(model, params, xs, ys, inner_lr=inner_lr, steps=steps, first_order=first_order)
        attacked = adapted if target == "adapted" else params
        xq_adv = functional_attack(
            model,
            attacked,
            xq,
            yq,
            start,
            epsilon=epsilon,
            steps=a_steps,
            step_size=a_step,
            clamp=clamp,
            norm="l2" if attack == "l2" else "linf",
        )
        return F.cross_entropy(forward(model, adapted, xq_adv), yq)

    return vmap(one_task)(*tasks, starts).mean()


def meta_train_adversarial(
    model: nn.Module,
    sample_tasks: Callable[[torch.Generator], Tasks],
    *,
    iterations: int,
    inner_lr: float,
    epsilon: float,
    steps: int = 1,
    attack: str = "pgd",
    attack_steps: int = 3,
    outer_lr: float = 1e-3,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Meta-train ``model`` in place on :func:`adversarial_query_loss` with Adam (adversarial querying)."""
    _attack_settings(epsilon, attack, attack_steps, None)

    def objective(model, tasks, **kw):
        return adversarial_query_loss(
            model, tasks, epsilon=epsilon, attack=attack, attack_steps=attack_steps, generator=generator, **kw
        )

    return maml.meta_train(
        model,
        sample_tasks,
        iterations=iterations,
        inner_lr=inner_lr,
        steps=steps,
        outer_lr=outer_lr,
        generator=generator,
        progress=progress,
        desc="adversarial querying",
        objective=objective,
    )


def representative_task(
    learners: dict[str, torch.nn.Module], tasks, *, inner_lr: float, steps: int, epsilon: float, attack_steps: int = 10
) -> tuple[int, torch.Tensor]:
    """The task whose robust-accuracy gap (last learner minus first, PGD at ``epsilon`` against the adapted
    weights) is closest to the mean gap over ``tasks``: the explorer's default. Returns (index, gaps)."""
    accs = [
        robust_task_accuracy(
            m,
            tasks,
            [epsilon],
            inner_lr=inner_lr,
            steps=steps,
            attack_steps=attack_steps,
            generator=torch.Generator().manual_seed(0),
        )[0]
        for m in learners.values()
    ]
    gaps = accs[-1] - accs[0]
    return int((gaps - gaps.mean()).abs().argmin()), gaps
