r"""Adversarial examples in the L∞ ball: FGSM, PGD and robustness curves.

Derived in ``notebooks/01_fgsm.ipynb``. Every attack takes any callable ``model`` that maps a batch
of inputs to logits, uses the cross-entropy loss, and differentiates with respect to the **input
only** (``torch.autograd.grad``): the model's parameters receive no ``.grad`` and its train/eval mode
is left as it was. Results are detached and live on the device of ``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from metaadv_edu import _validate as v

__all__ = ["correct_under", "fgsm", "input_gradient", "pgd", "pgd_each_target", "robust_accuracy"]

Model = Callable[[torch.Tensor], torch.Tensor]


def _check_clamp(clamp) -> tuple[float, float] | None:
    if clamp is None:
        return None
    try:
        low, high = (float(c) for c in clamp)
    except (TypeError, ValueError):
        raise ValueError(f"clamp must be None or a pair (low, high), got {clamp!r}") from None
    if not low < high:
        raise ValueError(f"clamp must have low < high, got {clamp!r}")
    return low, high


def _check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    v.same_batch(x, y, "x", "y")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    if y.ndim != 1 or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 class labels of shape (batch,), got {y.dtype} {tuple(y.shape)}")


def input_gradient(
    model: Model, x: torch.Tensor, y: torch.Tensor, *, targeted: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Return :math:`\nabla_x L(x, y)` and the per-example losses, parameters untouched.

    The summed cross-entropy is differentiated, so each example's gradient is its own loss's
    gradient (not divided by the batch size). ``targeted`` only changes the error message context.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"model must return logits of shape (batch={x.shape[0]}, n_classes), got {shape}")
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            what = "target labels" if targeted else "labels"
            raise ValueError(
                f"y holds {what} outside [0, {logits.shape[1]}) for a model with {logits.shape[1]} classes"
            )
        losses = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return grad, losses.detach()


def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    targeted: bool = False,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    r"""Fast gradient sign method (Goodfellow, Shlens & Szegedy 2015).

    .. math:: x_{adv} = \Pi_{clamp}\big(x + \epsilon\,\mathrm{sign}(\nabla_x L(x, y))\big)

    the maximiser of the linearised loss :math:`L(x) + \delta^\top\nabla_x L` over
    :math:`\|\delta\|_\infty \le \epsilon`, with first-order gain :math:`\epsilon\|\nabla_x L\|_1`.
    With ``targeted=True``, ``y`` holds the target classes and the step *descends* their loss:
    :math:`x - \epsilon\,\mathrm{sign}(\nabla_x L(x, y_{target}))`. ``clamp=None`` disables the
    clamp to the valid pixel range.
    """
    _check_inputs(x, y)
    epsilon = v.nonnegative("epsilon", epsilon)
    clamp = _check_clamp(clamp)
    grad, _ = input_gradient(model, x, y, targeted=targeted)
    direction = -1.0 if targeted else 1.0
    x_adv = x.detach() + direction * epsilon * grad.sign()
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    return x_adv.detach()


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    step_size: float,
    steps: int,
    random_start: bool = True,
    targeted: bool = False,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    restarts: int = 1,
) -> torch.Tensor:
    r"""Projected gradient descent on the negative loss, in the L∞ ball (Madry et al. 2018).

    .. math:: x^{t+1} = \Pi_{x + \mathcal{S}}\big(x^t + a\,\mathrm{sign}(\nabla_x L(x^t, y))\big),
              \quad \mathcal{S} = \{\delta : \|\delta\|_\infty \le \epsilon\}

    starting from a uniform random point of the ball (``random_start``, drawn from ``generator`` on
    the CPU) or from ``x``. With one step, ``step_size = epsilon`` and no random start it is FGSM.

    ``restarts`` > 1 runs the attack that many times, each from its own random start (``random_start``
    must be True), and keeps **per example** the worst case: a run that succeeds (misclassifies; for
    ``targeted``, reaches the target) beats one that does not, and between two runs with the same outcome
    the one with the higher loss (for ``targeted``, the lower target loss) is kept. So the accuracy under
    the result is never above the accuracy under any single run.
    """
    _check_inputs(x, y)
    epsilon = v.nonnegative("epsilon", epsilon)
    step_size = v.positive("step_size", step_size)
    steps = v.integer("steps", steps)
    restarts = v.integer("restarts", restarts)
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts={restarts} needs random_start=True: restarts from x would all be equal")
    clamp = _check_clamp(clamp)
    if restarts > 1:
        return _pgd_restarts(model, x, y, epsilon, step_size, steps, targeted, clamp, generator, restarts)
    x0 = x.detach()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype) * 2 - 1
        x_adv = x0 + epsilon * noise.to(x0.device)
    else:
        x_adv = x0.clone()
    if clamp is not None:
        x_adv = x_adv.clamp(*clamp)
    direction = -1.0 if targeted else 1.0
    for _ in range(steps):
        grad, _ = input_gradient(model, x_adv, y, targeted=targeted)
        x_adv = x_adv + direction * step_size * grad.sign()
        x_adv = x0 + (x_adv - x0).clamp(-epsilon, epsilon)
        if clamp is not None:
            x_adv = x_adv.clamp(*clamp)
    return x_adv.detach()


def _pgd_restarts(model, x, y, epsilon, step_size, steps, targeted, clamp, generator, restarts) -> torch.Tensor:
    """Per-example worst case of ``restarts`` random-start PGD runs (see :func:`pgd`)."""
    sign = -1.0 if targeted else 1.0  # the attacker maximises sign · loss

    def score(x_adv):
        with torch.no_grad():
            logits = model(x_adv)
            success = (logits.argmax(-1) == y) if targeted else (logits.argmax(-1) != y)
            return success, sign * F.cross_entropy(logits, y, reduction="none")

    kwargs = {"step_size": step_size, "steps": steps, "targeted": targeted, "clamp": clamp, "generator": generator}
    best = pgd(model, x, y, epsilon, **kwargs)
    best_success, best_value = score(best)
    for _ in range(restarts - 1):
        x_adv = pgd(model, x, y, epsilon, **kwargs)
        success, value = score(x_adv)
        better = (success & ~best_success) | ((success == best_success) & (value > best_value))
        best = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x_adv, best)
        best_success, best_value = best_success | success, torch.where(better, value, best_value)
    return best


def pgd_each_target(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    step_size: float,
    steps: int,
    random_start: bool = True,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
    targets: int | None = None,
) -> torch.Tensor:
    r"""Targeted PGD towards **every** class other than the true one, keeping per example the worst case.

    For each class :math:`t \ne y` (the targets :math:`(y + s) \bmod C`, :math:`s = 1, \dots, C - 1`) the
    attack descends the target's loss, notebook 01 eq. (6) iterated as in eq. (7):
    :math:`x^{t+1} = \Pi\big(x^t - a\,\mathrm{sign}\,\nabla_x L(x^t, t)\big)`. Among the unperturbed input and
    the results it keeps, per example, one that is misclassified if any is, and among equals the one with
    the highest loss of the true class. So an example survives only if no targeted run (and not δ = 0)
    fools the model: the accuracy under the result is never above that under any single run.
    Costs :math:`C - 1` PGD runs; ``targets=m`` attacks, per example, only the ``m`` wrong classes with
    the highest clean logits (the likeliest targets, as AutoAttack's targeted APGD chooses them), ``m`` runs.
    """
    _check_inputs(x, y)
    epsilon = v.nonnegative("epsilon", epsilon)
    v.positive("step_size", step_size)
    v.integer("steps", steps)
    _check_clamp(clamp)
    if targets is not None:
        targets = v.integer("targets", targets, low=1)
    x0 = x.detach()

    def score(x_adv):
        with torch.no_grad():
            logits = model(x_adv)
            return logits.argmax(-1) != y, F.cross_entropy(logits, y, reduction="none"), logits.shape[-1]

    best_wrong, best_loss, n_classes = score(x0)
    best = x0.clone()
    if targets is None:
        order = torch.stack([(y + shift) % n_classes for shift in range(1, n_classes)], dim=1)
    else:
        if targets > n_classes - 1:
            raise ValueError(f"targets must be between 1 and {n_classes - 1} (the other classes), got {targets}")
        with torch.no_grad():
            logits = model(x0).masked_fill(F.one_hot(y, n_classes).bool(), float("-inf"))
        order = logits.topk(targets, dim=-1).indices
    for target in order.T:
        x_adv = pgd(
            model,
            x0,
            target,
            epsilon,
            step_size=step_size,
            steps=steps,
            random_start=random_start,
            targeted=True,
            clamp=clamp,
            generator=generator,
        )
        wrong, loss, _ = score(x_adv)
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
        best = torch.where(better.view(-1, *[1] * (x0.ndim - 1)), x_adv, best)
        best_wrong, best_loss = best_wrong | wrong, torch.where(better, loss, best_loss)
    return best


def correct_under(model: Model, x: torch.Tensor, y: torch.Tensor, attack: Callable, *, batch_size: int = 512):
    """Per-example correctness, a bool tensor of shape (batch,), on ``attack(model, x, y) -> x_adv``.

    The AND of the results of several attacks is the per-example worst case over them: an example counts
    as robust only if *every* attack failed on it. Its mean is the accuracy under the strongest
    combination of those attacks, still an upper bound on the true robust accuracy.
    """
    _check_inputs(x, y)
    batch_size = v.integer("batch_size", batch_size)
    if not callable(attack):
        raise TypeError(f"attack must be a callable attack(model, x, y) -> x_adv, got {type(attack).__name__}")
    parts = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb)
        with torch.no_grad():
            parts.append(model(x_adv).argmax(-1) == yb)
    return torch.cat(parts)


def robust_accuracy(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    *,
    attack: str | Callable = "fgsm",
    batch_size: int = 512,
    steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    restarts: int = 1,
) -> list[float]:
    r"""Accuracy on attacked inputs for each ε (ε = 0 gives the clean accuracy).

    ``attack`` is ``"fgsm"``, ``"pgd"`` (``steps`` steps of ``step_size``, by default
    :math:`2.5\,\epsilon/\text{steps}`, a common choice that lets the iterate cross the ball; a random
    start; ``restarts`` random starts with the per-example worst case kept) or a callable
    ``attack(model, x, y, epsilon) -> x_adv``.
    Every number is an **upper bound** on the true robust accuracy at that ε: a stronger attack can only
    lower it.
    """
    _check_inputs(x, y)
    batch_size = v.integer("batch_size", batch_size)
    eps_list = [v.nonnegative("epsilons[i]", e) for e in epsilons]
    if isinstance(attack, str):
        v.choice("attack", attack, ("fgsm", "pgd"))
    elif not callable(attack):
        raise TypeError("attack must be 'fgsm', 'pgd' or a callable attack(model, x, y, epsilon)")
    steps = v.integer("steps", steps)
    restarts = v.integer("restarts", restarts)

    def run(xb, yb, eps):
        if eps == 0:
            return xb
        if attack == "fgsm":
            return fgsm(model, xb, yb, eps)
        if attack == "pgd":
            a = step_size if step_size is not None else 2.5 * eps / steps
            return pgd(model, xb, yb, eps, step_size=a, steps=steps, generator=generator, restarts=restarts)
        return attack(model, xb, yb, eps)

    results = []
    for eps in eps_list:
        correct = 0
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            with torch.no_grad():
                correct += int((model(run(xb, yb, eps)).argmax(-1) == yb).sum())
        results.append(correct / len(x))
    return results
