"""Notebook 01 · FGSM (library: :mod:`metaadv_edu.attacks`): its model, explorer and exercises."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from metaadv_edu import _validate as v
from metaadv_edu import attacks, cache, certify, data, grading, models, panels
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.widgets import Explorer, epsilon_slider, float_slider, int_slider

__all__ = [
    "POINTS",
    "attack_explorer",
    "attack_suite",
    "brute_force_best_delta",
    "check_fgsm",
    "check_first_order_gain",
    "check_pgd",
    "correct_by_epsilon",
    "digits_logreg",
    "first_order_errors",
    "linear_robust_accuracy",
    "linearised_gain_check",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"FGSM": 1, "first-order gain": 1, "PGD": 2}


def digits_logreg(device=None):
    """Multinomial logistic regression on the 8×8 digits (notebook 01). Returns (model, record)."""
    device = as_device(device)
    config = {"epochs": 60, "lr": 0.05, "batch_size": 64, "seed": 0}

    build = cache.seeded(lambda: models.LogisticRegression(64, 10), config["seed"])

    def train(model):
        return cache.fit_classifier(
            model,
            *data.load_digits("train", device=device),
            data.load_digits("test", device=device),
            epochs=config["epochs"],
            lr=config["lr"],
            desc="logistic regression",
        )

    return load_or_train("digits-logreg", config, build, train, device=device)


def attack_explorer(
    model,
    x_show: torch.Tensor,
    y_show: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    *,
    labels: Sequence[str] | None = None,
    epsilon: float = 0.1,
    max_epsilon: float = 0.3,
) -> Explorer:
    """ε, attack steps and step size → clean image, perturbation, attacked image and class
    probabilities for a few inputs, and the accuracy under the same attack on ``(x_eval, y_eval)``."""
    labels = list(labels) if labels is not None else [str(i) for i in range(10)]
    rows: list[panels.AttackPanels] = []
    p_clean = panels.probabilities(model, x_show)

    def setup(fig):
        rows.append(panels.AttackPanels(fig, x_show, labels))
        rows[0].animate()

    def draw(fig, *, epsilon, steps, step_size):
        x_adv = panels.run_attack(model, x_show, y_show, epsilon, steps, step_size)
        rows[0].show(x_show, x_adv, y_show, p_clean, panels.probabilities(model, x_adv), epsilon)
        adv_eval = panels.run_attack(model, x_eval, y_eval, epsilon, steps, step_size)
        acc = float((panels.probabilities(model, adv_eval).argmax(-1) == y_eval).float().mean())
        name = "FGSM (one step of size ε)" if steps == 1 else f"PGD, {steps} steps of a = {step_size:.3f}"
        return f"{name} at ε = {epsilon:.3f}: accuracy on {len(x_eval)} test inputs <b>{acc:.1%}</b>"

    sliders = {
        "epsilon": epsilon_slider(epsilon, max=max_epsilon, step=0.005),
        "steps": int_slider("T — attack steps (1 = FGSM)", 1, 1, 20),
        "step_size": float_slider("a — PGD step size", 0.02, 0.005, 0.1, 0.005, readout_format=".3f"),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="FGSM and PGD on test inputs",
        figsize=(9, 1.9 * len(x_show) + 0.3),
        dpi=72,
        blit=True,
    )


def check_fgsm(my_fgsm: Callable) -> bool:
    """Grade ``my_fgsm(model, x, y, epsilon) -> x_adv``: untargeted FGSM, clamped to [0, 1]."""

    def body() -> str:
        for model, x, y, eps in grading.cases():
            model.zero_grad(set_to_none=True)
            with grading.leaves_model_as_found(model), grading.watch_parameter_gradients(model) as touched:
                out = grading.tensor_like(grading.call(my_fgsm, model, x, y, eps), x, "x_adv")
            if touched or any(p.grad is not None for p in model.parameters()):
                raise grading.Stop(
                    "your function back-propagated into the model's parameters (that is what "
                    "loss.backward() does, even if .grad is cleared afterwards): use "
                    "torch.autograd.grad(loss, x) to get the gradient with respect to the input only"
                )
            ref = attacks.fgsm(model, x, y, eps)
            if grading.close(out, ref):
                continue
            grad, _ = attacks.input_gradient(model, x, y)
            if grading.close(out, (x - eps * grad.sign()).clamp(0, 1)):
                raise grading.Stop(
                    "wrong sign: you stepped *down* the loss. FGSM adds ε·sign(∇ₓL) to "
                    "increase the loss of the true class"
                )
            if grading.close(out, x + eps * grad.sign()):
                raise grading.Stop("almost: the result must stay a valid image — clamp it to [0, 1]")
            if grading.close(out, (x + eps * grad).clamp(0, 1)) or grading.close(out, x + eps * grad):
                raise grading.Stop(
                    "you moved along the gradient itself; the L∞ maximiser uses only its "
                    "sign, so that every pixel moves by exactly ε"
                )
            if eps == 0 and not grading.close(out, x):
                raise grading.Stop("with ε = 0 the attack must return x unchanged")
            raise grading.Stop(
                f"differs from the reference by up to {float((out - ref).abs().max()):.3g}; "
                "check that you differentiate the cross-entropy of (model(x), y) with "
                "respect to x"
            )
        return "matches the reference on every case, ε = 0 included, and leaves the model untouched"

    return grading.run("FGSM", body)


def check_first_order_gain(my_gain: Callable) -> bool:
    """Grade ``my_gain(grad, epsilon) -> gain``: the first-order loss increase of FGSM per example,
    ε‖g‖₁, for a batch of gradients of shape (B, ...); returns shape (B,)."""

    def body() -> str:
        for device in grading.devices():
            for seed, shape in ((0, (4, 1, 8, 8)), (1, (3, 5)), (2, (2, 3, 4, 4))):
                g = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
                for eps in (0.1, 0.25, 0.0):
                    ref = eps * g.flatten(1).abs().sum(1)
                    out = grading.call(my_gain, g, eps)
                    if isinstance(out, torch.Tensor) and out.ndim == 0:
                        raise grading.Stop(
                            "return one gain per example (shape (B,)), not a single number for the whole batch"
                        )
                    out = grading.tensor_like(out, ref, "gain")
                    if grading.close(out, ref):
                        continue
                    if eps and grading.close(out, eps * g.flatten(1).norm(dim=1)):
                        raise grading.Stop(
                            "you used the L2 norm: the dual norm of L∞ is L1, so the gain is ε times the sum of |gᵢ|"
                        )
                    if eps and grading.close(out, g.flatten(1).abs().sum(1)):
                        raise grading.Stop("the gain scales with the budget: multiply by ε")
                    if eps and grading.close(out, eps * g.flatten(1).sum(1)):
                        raise grading.Stop("δ = ε·sign(g) gives δᵢgᵢ = ε|gᵢ| for every i: sum absolute values")
                    raise grading.Stop("not equal to ε‖g‖₁ per example")
        return "ε‖g‖₁ per example, for every shape and ε"

    return grading.run("first-order gain", body)


def check_pgd(my_pgd: Callable) -> bool:
    """Grade ``my_pgd(model, x, y, epsilon, step_size, steps) -> x_adv``: untargeted L∞ PGD started at x,
    each step an ascent of ``step_size`` along the sign of the input gradient, projected onto the ε-ball
    around x and clamped to [0, 1]."""

    def body() -> str:
        for model, x, y, eps in grading.cases():
            for step_size, steps in ((max(eps, 0.03) / 3, 6), (max(eps, 0.03) / 2, 1)):
                model.zero_grad(set_to_none=True)
                with grading.leaves_model_as_found(model), grading.watch_parameter_gradients(model) as touched:
                    out = grading.call(my_pgd, model, x, y, eps, step_size, steps)
                out = grading.tensor_like(out, x, "x_adv")
                if touched or any(p.grad is not None for p in model.parameters()):
                    raise grading.Stop(
                        "your function back-propagated into the model's parameters (even if .grad is "
                        "cleared afterwards): take the input gradient with torch.autograd.grad(loss, x_adv)"
                    )
                variants = grading.pgd_variants(
                    lambda z, model=model, y=y: F.cross_entropy(model(z), y), x, eps, step_size, steps
                )
                if grading.close(out, variants.pop("ok")):
                    continue
                if eps and (out - x).abs().max() > eps + 1e-6:
                    raise grading.Stop(grading.PGD_HINTS["no projection"])
                grading.first_mistake(out, [(variants[k], grading.PGD_HINTS[k]) for k in variants])
                raise grading.Stop(
                    "not the projected, clamped ascent; start at x (no random start) and check "
                    "each step: ascend, project onto the ε-ball around x, clamp"
                )
        return "several projected, clamped ascent steps, recomputing the gradient each time; ε = 0 included"

    return grading.run("PGD", body)


# ------------------------------------------------------------------ headline robust accuracies (notebooks 01, 02)
def correct_by_epsilon(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    *,
    attack: str = "fgsm",
    steps: int = 20,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-example correctness under ``attack`` (``"fgsm"``, or ``"pgd"``: ``steps`` steps of 2.5ε/steps from a
    random start drawn from ``generator``) at each ε: a bool tensor of shape (len(epsilons), batch), ε = 0 giving
    the clean predictions (notebook 01, §6).

    Its row means are :func:`metaadv_edu.attacks.robust_accuracy`'s numbers with the same arguments (the random
    starts are drawn in the same order); keeping the examples lets two attacks be compared digit by digit with
    :func:`metaadv_edu.stats.paired_binary`. Each accuracy is an upper bound on the robust accuracy."""
    v.choice("attack", attack, ("fgsm", "pgd"))
    steps = v.integer("steps", steps)
    eps_list = [v.nonnegative("epsilons[i]", e) for e in epsilons]

    def run(eps: float) -> Callable:
        if eps == 0:
            return lambda m, xb, yb: xb
        if attack == "fgsm":
            return lambda m, xb, yb: attacks.fgsm(m, xb, yb, eps)
        return lambda m, xb, yb: attacks.pgd(
            m, xb, yb, eps, step_size=2.5 * eps / steps, steps=steps, generator=generator
        )

    return torch.stack([attacks.correct_under(model, x, y, run(eps)) for eps in eps_list])


def attack_suite(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    seed: int = 0,
    steps: int = 20,
    strong_steps: int = 100,
    restarts: int = 5,
    targets: int | None = None,
) -> dict[str, torch.Tensor]:
    r"""Per-example correctness (bool, shape (batch,)) under FGSM, PGD with ``steps`` steps (one random
    start), a stronger PGD with ``strong_steps`` steps from ``restarts`` random starts (each attack's step is
    2.5ε/steps, a common choice that lets the iterate cross the ball), targeted PGD with ``steps`` steps towards
    every other class (:func:`metaadv_edu.attacks.pgd_each_target`; ``targets=m``: only towards the ``m``
    likeliest wrong classes), and under **all** of them (notebooks 01, 02 and 04).

    Each attack draws its random starts from its own generator (seeds ``seed``, ``seed + 1`` and ``seed + 2``
    for PGD, the stronger PGD and the targeted runs), so the stronger run never repeats PGD's start.

    ``"all attacks"`` is the per-example worst case: an example counts only if every attack failed on it.
    Every accuracy from this dictionary is an upper bound on the true robust accuracy
    :math:`\mathbb{E}\,\mathbf{1}[f(x+\delta) = y\ \forall \|\delta\|_\infty \le \epsilon]`."""
    epsilon = v.positive("epsilon", epsilon)
    steps = v.integer("steps", steps)
    strong_steps = v.integer("strong_steps", strong_steps)
    restarts = v.integer("restarts", restarts)

    def pgd(n_steps: int, n_starts: int, offset: int) -> Callable:
        generator = torch.Generator().manual_seed(seed + offset)
        return lambda m, xb, yb: attacks.pgd(
            m, xb, yb, epsilon, step_size=2.5 * epsilon / n_steps, steps=n_steps, restarts=n_starts, generator=generator
        )

    targeted_generator = torch.Generator().manual_seed(seed + 2)

    def each_target(m, xb, yb):
        return attacks.pgd_each_target(
            m,
            xb,
            yb,
            epsilon,
            step_size=2.5 * epsilon / steps,
            steps=steps,
            generator=targeted_generator,
            targets=targets,
        )

    strong = f"PGD-{strong_steps} × {restarts} restarts" if restarts > 1 else f"PGD-{strong_steps}"
    towards = "every other class" if targets is None else f"{targets} likeliest other classes"
    targeted = f"targeted PGD-{steps}, {towards}"
    suite = {
        "FGSM": attacks.correct_under(model, x, y, lambda m, xb, yb: attacks.fgsm(m, xb, yb, epsilon)),
        f"PGD-{steps}": attacks.correct_under(model, x, y, pgd(steps, 1, 0)),
        strong: attacks.correct_under(model, x, y, pgd(strong_steps, restarts, 1)),
        targeted: attacks.correct_under(model, x, y, each_target),
    }
    suite["all attacks"] = torch.stack(list(suite.values())).all(0)
    return suite


def linear_robust_accuracy(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    box: tuple[float, float] | None = (0.0, 1.0),
) -> float:
    r"""The **exact** L∞ robust accuracy of a linear classifier (its last ``nn.Linear`` on the flattened input).

    An example is robust at budget ε when its exact radius (:func:`metaadv_edu.certify.linear_certified_radius`,
    derived in notebook 11 §2) exceeds ε. Without the pixel box the radius is
    :math:`\min_{j \ne y} (z_y - z_j)/\|w_y - w_j\|_1`; ``box=(0, 1)`` (the default, as the attacks clamp)
    solves the boxed problem exactly, and the unboxed radius is a lower bound on it."""
    epsilon = v.nonnegative("epsilon", epsilon)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if len(linear) != 1:
        raise ValueError(f"model must be linear (one nn.Linear layer), found {len(linear)} nn.Linear layers")
    radius = certify.linear_certified_radius(linear[0].weight, linear[0].bias, x, y, box=box)
    return float((radius > epsilon).double().mean())


# ------------------------------------------------------------------ checks of §2 (notebook 01, §4)
def linearised_gain_check(
    delta: torch.Tensor,
    grad: torch.Tensor,
    epsilon: float,
    *,
    n_random: int = 10_000,
    generator: torch.Generator | None = None,
    tol: float = 1e-6,
) -> dict:
    r"""Is ``delta`` the maximiser of the linearised gain δᵀg over the L∞ ball ‖δ‖∞ ≤ ε, example by example?

    Without using the formula ε‖g‖₁: ``delta`` must be feasible, and no point of ``n_random`` random
    feasible ones may beat it — random corners, uniform points of the ball, and random feasible moves away
    from ``delta`` itself (a maximiser cannot be improved by any move that stays in the ball) — nor any
    change of a single coordinate of ``delta`` to −ε, 0 or +ε.
    Returns ``{"feasible", "beaten" (share of examples some sample beats), "passes"}``."""
    v.nonnegative("epsilon", epsilon)
    n_random = v.integer("n_random", n_random, low=3)
    flat_d, flat_g = delta.flatten(1), grad.flatten(1)
    feasible = bool((flat_d.abs() <= epsilon * (1 + tol) + 1e-12).all())
    third = n_random // 3

    def draw(n, d):
        return torch.rand((n, d), generator=generator, dtype=flat_g.dtype).to(flat_g.device)

    beaten = []
    for d_i, g_i in zip(flat_d, flat_g):
        n = d_i.numel()
        corners = epsilon * (2 * (draw(third, n) > 0.5).to(g_i.dtype) - 1)
        uniform = epsilon * (2 * draw(third, n) - 1)
        moves = (d_i + epsilon * (draw(n_random - 2 * third, n) - 0.5)).clamp(-epsilon, epsilon)
        single = d_i.repeat(3 * n, 1)  # every coordinate in turn set to −ε, 0 and +ε
        rows = torch.arange(3 * n, device=d_i.device)
        single[rows, rows % n] = epsilon * (rows // n - 1).to(d_i.dtype)
        others = torch.cat([corners, uniform, moves, single]) @ g_i
        gain = d_i @ g_i
        beaten.append(bool((others > gain + tol * max(abs(float(gain)), 1e-12)).any()))
    share = sum(beaten) / len(beaten)
    return {"feasible": feasible, "beaten": share, "passes": feasible and share == 0}


def brute_force_best_delta(
    model, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, n_side: int = 201
) -> torch.Tensor:
    """For a 2-D input ``x`` of shape (1, 2): the point of an ``n_side`` × ``n_side`` grid on the square
    [−ε, ε]² with the largest *actual* cross-entropy (not the linearisation)."""
    if x.shape != (1, 2):
        raise ValueError(f"x must have shape (1, 2), got {tuple(x.shape)}")
    side = torch.linspace(-epsilon, epsilon, v.integer("n_side", n_side, low=2), dtype=x.dtype).to(x.device)
    deltas = torch.cartesian_prod(side, side)
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(model(x + deltas), y.expand(len(deltas)), reduction="none")
    return deltas[losses.argmax()]


def first_order_errors(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    direction: Callable[[torch.Tensor], torch.Tensor] = torch.sign,
) -> list[float]:
    r"""|actual gain / predicted gain − 1| for δ = ε·direction(g), the prediction being eq. (3)'s ε‖g‖₁.

    For the FGSM direction (sign) the errors shrink like ε; for any other direction they tend to a
    non-zero constant, because its first-order gain is smaller than ε‖g‖₁."""
    g, loss0 = attacks.input_gradient(model, x, y)
    errors = []
    for eps in epsilons:
        _, loss1 = attacks.input_gradient(model, x + eps * direction(g), y)
        ratio = (loss1 - loss0).sum() / (eps * g.abs().sum())
        errors.append(abs(float(ratio) - 1))
    return errors
