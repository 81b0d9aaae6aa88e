"""Exercise graders of notebook 08 · Meta-adversarial training (re-exported by
:mod:`metaadv_edu.chapters.meta_adversarial_training`, whose ``POINTS`` weigh them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from metaadv_edu import grading, maml, models, robust_checks
from metaadv_edu.functional import forward, params_of
from metaadv_edu.robust_meta import functional_attack

__all__ = ["check_adversarial_query_loss", "check_linf_robust_loss", "check_pgd_query_loss"]


def _query_loss(model: torch.nn.Module, y: torch.Tensor) -> Callable:
    """``ce(params, z)``: the cross-entropy of ``model`` run with ``params`` on inputs ``z`` against labels ``y``."""

    def ce(params, z):
        return F.cross_entropy(forward(model, params, z), y)

    return ce


def _pgd_variants_against(ce: Callable, x: torch.Tensor, epsilon: float) -> Callable:
    """``attack(params, step_size, steps)``: :func:`metaadv_edu.grading.pgd_variants` from ``x`` on the loss
    ``ce(params, ·)`` of :func:`_query_loss`, the right PGD under key ``"ok"`` and its typical wrong versions."""

    def attack(params, step_size, steps):
        def loss_of_x(z):
            return ce(params, z)

        return grading.pgd_variants(loss_of_x, x, epsilon, step_size, steps)

    return attack


def check_adversarial_query_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, adapted, x, y, epsilon) -> loss``: adversarial querying's outer loss for
    one task. ``adapted`` holds θ′ (a dict, still attached to θ); attack the query inputs ``x`` with one
    L2 step x + ε·g/‖g‖₂ per cover against θ′ (clamped to [0, 1], held fixed), then
    return the cross-entropy of θ′ on them. The step moves smoothly with θ′, so an attack left attached
    to the graph changes the meta-gradient, and the grader sees it."""

    def attacked(model, params, x, y, eps, clamp=True, sign=1.0, norm="l2"):
        return functional_attack(
            model, params, x, y, torch.zeros_like(x), epsilon=eps, steps=1, step_size=sign * eps, clamp=clamp, norm=norm
        )

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.8), (1, 0.3), (2, 0.0), (3, 0.5)):
                model = grading.toy_classifier(device, seed)
                xs, ys = grading.toy_batch(device, seed + 20, n=8)
                x, y = grading.toy_batch(device, seed + 40, n=6)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=0.5)
                ce = _query_loss(model, y)
                ref = ce(adapted, attacked(model, adapted, x, y, eps))
                out = grading.call(my_loss, model, adapted, x, y, eps)
                value = grading.scalar_loss(out).to(ref.dtype)
                if not grading.close(value, ref.detach(), 1e-4):
                    theta0 = {k: p.detach() for k, p in theta.items()}
                    mistakes = [
                        (ce(adapted, x), "that is the clean query loss: perturb the query inputs first"),
                        (
                            ce(adapted, attacked(model, theta0, x, y, eps)),
                            "the attack targets θ, but the query is answered by θ′: compute the input gradient "
                            "with forward(model, adapted, ·)",
                        ),
                        (
                            ce(theta0, attacked(model, adapted, x, y, eps)),
                            "the attacked query must be scored by the adapted weights θ′, not by the model's own θ",
                        ),
                        (
                            ce(adapted, attacked(model, adapted, x, y, eps, clamp=False)),
                            "forgot to clamp: the attacked covers must stay in [0, 1]",
                        ),
                        (
                            ce(adapted, attacked(model, adapted, x, y, eps, sign=-1.0)),
                            "wrong sign: the attack *raises* the loss, x + ε·g/‖g‖₂",
                        ),
                        (
                            ce(adapted, attacked(model, adapted, x, y, eps, norm="linf")),
                            "that is FGSM's L∞ step ε·sign(g); this exercise uses the L2 step ε·g/‖g‖₂",
                        ),
                    ]
                    for wrong, hint in mistakes:
                        if eps and grading.close(value, wrong.detach(), 1e-4):
                            raise grading.Stop(hint)
                    raise grading.Stop(
                        "not the cross-entropy of θ′ at the L2-attacked query inputs "
                        "(normalise g per cover, over its pixels)"
                    )
                if not out.requires_grad:
                    raise grading.Stop(
                        "the value is right but has no gradient: keep θ′ attached (do not detach adapted)"
                    )
                grading.same_gradient(
                    out,
                    ref,
                    list(theta.values()),
                    "the value is right but the meta-gradient "
                    "is not: the loss must depend on θ only through θ′, with the perturbation "
                    "held fixed (detach it)",
                )
        return "L2 step against θ′, clamped, scored by θ′; the meta-gradient flows through the adaptation only"

    return grading.run("adversarial-query loss", body)


def check_pgd_query_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, adapted, x, y, epsilon, step_size, steps) -> loss``: the query loss of the
    adapted weights θ′ at the query inputs attacked by L∞ PGD (:func:`metaadv_edu.attacks.pgd`, from x itself)
    aimed at θ′ with the weights frozen, the result held fixed. The grader checks the value and that the
    meta-gradient reaches θ through θ′ only."""

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.3), (1, 0.1), (3, 0.2)):
                model = grading.toy_classifier(device, seed)
                (xs, ys), (x, y) = grading.toy_batch(device, seed + 20, n=8), grading.toy_batch(device, seed + 40)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=0.5)
                frozen = {k: p.detach() for k, p in adapted.items()}
                ce = _query_loss(model, y)
                attack = _pgd_variants_against(ce, x, eps)
                variants = attack(frozen, eps / 4, 6)
                x_adv = variants["ok"]
                ref = ce(adapted, x_adv)
                out = grading.call(my_loss, model, adapted, x, y, eps, eps / 4, 6)
                value = grading.scalar_loss(out)
                again = grading.scalar_loss(grading.call(my_loss, model, adapted, x, y, eps, eps / 4, 6))
                if not grading.close(value, again, 1e-9):
                    raise grading.Stop(
                        "two calls with the same inputs gave different losses: attacks.pgd starts from a random "
                        "point of the ball unless you pass random_start=False; this exercise starts at x itself, "
                        "so that its result is reproducible"
                    )
                if not grading.close(value, ref.detach(), 1e-4):
                    theta0 = {k: p.detach() for k, p in theta.items()}
                    grading.first_mistake(
                        value,
                        [
                            (
                                ce(adapted, attack(theta0, eps / 4, 6)["ok"]),
                                "the attack must aim at θ′: give attacks.pgd the adapted model, "
                                "lambda z: forward(model, frozen, z), not `model` (which runs θ)",
                            ),
                            (
                                ce(theta0, x_adv),
                                "the attacked covers must be scored by θ′, forward(model, adapted, x_adv), "
                                "not by model(x_adv), which runs θ",
                            ),
                            (
                                ce(adapted, attack(frozen, eps, 1)["ok"]),
                                "that is FGSM: pass step_size=step_size and steps=steps to attacks.pgd",
                            ),
                            (ce(adapted, variants["one step"]), "that is a single PGD step: pass steps=steps"),
                            (ce(adapted, x), "that is the clean query loss: attack the query inputs first"),
                            (
                                ce(adapted, variants["no clamp"]),
                                "keep attacks.pgd's clamp to [0, 1] (no clamp=None): attacked covers stay images",
                            ),
                            (
                                ce(adapted, variants["descent"]),
                                "the attack must raise the loss of the true labels: leave targeted=False",
                            ),
                        ],
                        1e-4,
                    )
                    raise grading.Stop("not the cross-entropy of θ′ at the PGD-attacked query inputs")
                if not out.requires_grad:
                    raise grading.Stop(
                        "the value is right but has no gradient: score the attacked covers with `adapted`, "
                        "not with its frozen copy"
                    )
                grading.same_gradient(
                    out,
                    ref,
                    list(theta.values()),
                    "the value is right but the meta-gradient "
                    "is not: the loss must reach θ only through θ′, scored by `adapted`",
                )
        return "PGD aimed at the frozen θ′, its result held fixed, scored by θ′; the meta-gradient flows through θ′"

    return grading.run("PGD query loss", body)


def _linear_two_class_task(device, seed: int, n_in: int = 6):
    """A two-class linear model in float64 with random weights, a support and a query set of ``n_in`` features."""
    g = torch.Generator().manual_seed(seed)
    model = models.LogisticRegression(n_in, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    xs, ys = torch.rand(8, n_in, generator=g, dtype=torch.float64), torch.randint(2, (8,), generator=g)
    x, y = torch.rand(6, n_in, generator=g, dtype=torch.float64), torch.randint(2, (6,), generator=g)
    return model.to(device), xs.to(device), ys.to(device), x.to(device), y.to(device)


def _margin_shift_loss(params, x: torch.Tensor, y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """log(1 + e^(−m + shift)) averaged over the examples, with m = s(wᵀx + b) the two-class margin."""
    w, b = params["1.weight"][1] - params["1.weight"][0], params["1.bias"][1] - params["1.bias"][0]
    margin = (2 * y.to(w.dtype) - 1) * (x.flatten(1) @ w + b)
    return F.softplus(-margin + shift).mean()


def check_linf_robust_loss(my_loss: Callable) -> bool:
    r"""Grade ``my_loss(theta, adapted, x, y, epsilon) -> loss``: the exact L∞ robust query loss of a two-class
    linear model after one adaptation step, eq. (5) with q = 1,
    :math:`\log(1 + e^{-s(w'^\top x + b') + \epsilon\|w'\|_1})` with :math:`w' = w'_1 - w'_0` of θ′. ``theta``
    holds θ (before adaptation), ``adapted`` θ′ (still attached to θ). The grader checks the value against
    :func:`metaadv_edu.robust_checks.linear_robust_loss` and the meta-gradient with respect to θ."""

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.3), (1, 0.1), (2, 0.5)):
                model, xs, ys, x, y = _linear_two_class_task(device, seed)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=2.0)
                ref = robust_checks.linear_robust_loss(adapted, x, y, eps, norm="linf")
                out = grading.call(my_loss, theta, adapted, x, y, eps)
                value = grading.scalar_loss(out).to(ref.dtype)
                if not grading.close(value, ref.detach(), 1e-8):
                    w0 = theta["1.weight"][1] - theta["1.weight"][0]
                    w1 = adapted["1.weight"][1] - adapted["1.weight"][0]
                    grading.first_mistake(
                        value,
                        [
                            (
                                robust_checks.linear_robust_loss(adapted, x, y, eps, norm="l2"),
                                "that is the L2 ball's ε‖w‖₂: over the L∞ ball the margin falls by ε‖w‖₁ "
                                "(the dual norm of L∞ is L1)",
                            ),
                            (
                                _margin_shift_loss(adapted, x, y, eps * w1.abs().max()),
                                "ε‖w‖∞ is the L1 ball's answer: over the L∞ ball every coordinate moves by ε, so "
                                "the margin falls by ε‖w‖₁",
                            ),
                            (
                                robust_checks.linear_robust_loss(adapted, x, y, -eps, norm="linf"),
                                "wrong sign: the worst perturbation *lowers* the margin, −m + ε‖w‖₁",
                            ),
                            (
                                _margin_shift_loss(adapted, x, y, eps * (w1 * w0.sign()).sum()),
                                "the perturbation −ε·s·sign(w) must use θ′'s w, not θ's: the attacker sees the "
                                "adapted model",
                            ),
                            (
                                robust_checks.linear_robust_loss(theta, x, y, eps, norm="linf"),
                                "that is the robust loss of θ: the library deploys θ′, use `adapted`",
                            ),
                            (
                                robust_checks.linear_robust_loss(adapted, x, y, 0.0, norm="linf"),
                                "that is the clean query loss: the margin must fall by ε‖w‖₁",
                            ),
                        ],
                        1e-8,
                    )
                    raise grading.Stop("not log(1 + exp(−s(w′ᵀx + b′) + ε‖w′‖₁)), averaged over the query set")
                if not out.requires_grad:
                    raise grading.Stop("the value is right but has no gradient: compute it from `adapted`, attached")
                grading.same_gradient(
                    out,
                    ref,
                    list(theta.values()),
                    "the value is right but the meta-gradient is not: compute the loss from θ′ (`adapted`), "
                    "which still depends on θ",
                    tol=1e-8,
                )
        return "the margin falls by ε‖w′‖₁ at θ′; the meta-gradient reaches θ through the adaptation"

    return grading.run("L∞ robust loss", body)
