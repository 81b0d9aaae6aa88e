"""Notebook 02 · Adversarial training (library: :mod:`metaadv_edu.defenses`): hardened models, explorer, exercises."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from metaadv_edu import _validate as v
from metaadv_edu import attacks, cache, covers, data, defenses, grading, models, panels
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.plotting import PALETTE, image_hwc, mark_prediction, series, show_image
from metaadv_edu.widgets import Explorer, epsilon_slider, float_slider, selection_slider

__all__ = [
    "POINTS",
    "binary_logistic",
    "brute_force_linear_robust_loss",
    "check_linear_robust_loss",
    "check_mixed_loss",
    "danskin_error",
    "digits_cnn_adversarial",
    "l2_maximiser",
    "library_cnn_adversarial",
    "logistic_loss",
    "pgd_restart_gap",
    "robust_logistic_loss",
    "robustness_explorer",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"linear robust loss": 2, "mixed loss": 1}


def digits_cnn_adversarial(method: str = "pgd", epsilon: float = 0.1, device=None):
    """The digits CNN trained by :func:`metaadv_edu.defenses.adversarial_training` (notebook 02).

    Same architecture as :func:`digits_cnn`, 25 epochs; PGD training uses 5 steps of 2.5·ε/5.
    """
    device = as_device(device)
    v.choice("method", method, defenses.METHODS)
    config = {
        "method": method,
        "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
        "width": 16,
        "epochs": 25,
        "lr": 3e-3,
        "batch_size": 64,
        "pgd_steps": 5,
        "alpha": 0.5,  # the mixing weight ω of eq. (2) (Goodfellow's α); the key names cached models
        "seed": 0,
    }

    build = cache.seeded(lambda: models.TinyCNN(1, 10, width=config["width"], image_size=8), config["seed"])

    def train(model):
        history = defenses.adversarial_training(
            model,
            *data.load_digits("train", device=device),
            method=method,
            epsilon=epsilon,
            alpha=config["alpha"],
            pgd_steps=config["pgd_steps"],
            epochs=config["epochs"],
            lr=config["lr"],
            batch_size=config["batch_size"],
            generator=torch.Generator().manual_seed(config["seed"]),
            eval_data=data.load_digits("test", device=device),
        )
        return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}

    return load_or_train(f"digits-cnn-{method}", config, build, train, device=device)


def library_cnn_adversarial(epsilon: float = 16 / 255, device=None):
    """The library's cover classifier hardened by PGD adversarial training (2 steps, notebook 02)."""
    device = as_device(device)
    config = {
        "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
        "width": 16,
        "epochs": 6,
        "lr": 3e-3,
        "batch_size": 64,
        "pgd_steps": 2,
        "seed": 0,
        "size": 32,
    }

    build = cache.seeded(
        lambda: models.TinyCNN(3, len(covers.GENRE_NAMES), width=config["width"], image_size=32), config["seed"]
    )

    def train(model):
        history = defenses.adversarial_training(
            model,
            *covers.library_dataset("train", device=device),
            method="pgd",
            epsilon=epsilon,
            pgd_steps=config["pgd_steps"],
            epochs=config["epochs"],
            lr=config["lr"],
            batch_size=config["batch_size"],
            generator=torch.Generator().manual_seed(config["seed"]),
            eval_data=covers.library_dataset("test", device=device),
        )
        return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}

    return load_or_train("library-cnn-pgd", config, build, train, device=device)


def robustness_explorer(
    models: dict[float, torch.nn.Module],
    x_show,
    y_show,
    x_eval,
    y_eval,
    *,
    curves: dict[float, Sequence[float]],
    curve_epsilons: Sequence[float],
    labels: Sequence[str] | None = None,
    max_epsilon: float = 0.3,
    steps: int = 10,
) -> Explorer:
    """Training ε (a cached model per grid value) × evaluation ε × attack step size.

    ``curves[train_eps]`` holds precomputed PGD accuracies at ``curve_epsilons``; a slider move
    attacks only the selected model at the selected evaluation ε.
    """
    labels = list(labels) if labels is not None else [str(i) for i in range(10)]
    grid = sorted(models)
    art: dict = {}

    def setup(fig):
        left, right = fig.subfigures(1, 2, width_ratios=[1, 1.25])
        ax = right.subplots()
        art["lines"] = {
            e: ax.plot(curve_epsilons, curves[e], **series(j).line(ms=4), label=f"trained at ε = {e:g}")[0]
            for j, e in enumerate(grid)
        }
        (art["star"],) = ax.plot([], [], "*", color=PALETTE["black"], ms=12, label="attack below")
        ax.set_xlabel(f"evaluation ε (PGD-{steps})")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")  # where "best" puts it, and fixed: the kept picture holds the legend
        axes = left.subplots(len(x_show), 2, squeeze=False)
        art["axes"] = axes
        art["clean"] = [
            show_image(x_show[i], axes[i, 0], title=f"clean ({labels[int(y_show[i])]})") for i in range(len(x_show))
        ]
        art["adv"] = [show_image(x_show[i], axes[i, 1]).images[0] for i in range(len(x_show))]
        # What a move changes is animated: the curves (width and alpha), the star, the attacked images and their
        # titles. Frames the curves (accuracy 0) and images touch are animated too, so they stay drawn on top.
        frames = [spine for a in (ax, *axes[:, 1]) for spine in a.spines.values()]
        moving = [*art["lines"].values(), art["star"], *art["adv"], *(a.title for a in axes[:, 1]), *frames]
        for artist in moving:
            artist.set_animated(True)

    def draw(fig, *, train_epsilon, epsilon, step_size):
        model = models[train_epsilon]
        # the shown and the evaluated inputs attacked as one batch: each input's PGD path from the clean point is
        # its own, and one batch pays the per-step overhead once
        both = panels.run_attack(
            model, torch.cat([x_show, x_eval]), torch.cat([y_show, y_eval]), epsilon, steps, step_size
        )
        x_adv, adv_eval = both[: len(x_show)], both[len(x_show) :]
        acc = float((panels.probabilities(model, adv_eval).argmax(-1) == y_eval).float().mean())
        for e, line in art["lines"].items():
            line.set_linewidth(2.5 if e == train_epsilon else 1.0)
            line.set_alpha(1.0 if e == train_epsilon else 0.45)
        art["star"].set_data([epsilon], [acc])
        p_adv = panels.probabilities(model, x_adv)
        for i, image in enumerate(art["adv"]):
            a = int(p_adv[i].argmax())
            image.set_data(image_hwc(x_adv[i]))
            text, colour = mark_prediction(f"{labels[a]} ({p_adv[i, a]:.0%})", a == int(y_show[i]))
            art["axes"][i, 1].set_title(f"attacked: {text}", color=colour)
        return (
            f"model trained at ε = {train_epsilon:g}, attacked by PGD-{steps} (a = {step_size:.3f}) "
            f"at ε = {epsilon:.3f}: accuracy on {len(x_eval)} test inputs <b>{acc:.1%}</b>"
        )

    sliders = {
        "train_epsilon": selection_slider("training ε (cached models)", grid),
        "epsilon": epsilon_slider(0.1, max=max_epsilon, step=0.01, description="ε — evaluation budget"),
        "step_size": float_slider("a — attack step size", 0.025, 0.005, 0.1, 0.005, readout_format=".3f"),
    }
    return Explorer(draw, sliders, setup=setup, title="Train ε × test ε", figsize=(9.5, 4.2), dpi=72, blit=True)


def brute_force_linear_robust_loss(w, b, x, y, epsilon: float) -> torch.Tensor:
    r"""Mean over the batch of :math:`\max_{\|\delta\|_\infty \le \epsilon} \log(1 + e^{-y(w^\top(x+\delta) + b)})`
    by enumeration of the :math:`2^d` corners of the ball (the loss is convex in δ, so its maximum over the
    box is attained at a corner). For tiny ``d`` only (≤ 12): the reference of :func:`check_linear_robust_loss`."""
    d = v.integer("d (len(w))", len(w), high=12)
    corners = epsilon * (2 * torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=w.dtype)] * d) - 1).reshape(-1, d)
    margins = y[:, None] * ((x[:, None, :] + corners.to(x.device)[None]) @ w + b)  # (n, 2^d)
    return F.softplus(-margins).amax(1).mean()


def check_linear_robust_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(w, b, x, y, epsilon) -> loss``: the worst-case logistic loss of the linear model
    f(x) = w·x + b with labels y ∈ {−1, +1} over ‖δ‖∞ ≤ ε (inputs not clamped), averaged over the batch,
    against a brute force over the corners of the ball (notebook 02, Exercise 1)."""

    def body() -> str:
        for device in grading.devices():
            for seed, scale, eps in ((0, 1.0, 0.1), (1, 3.0, 0.3), (2, 1.0, 0.0), (3, 600.0, 0.05)):
                g = torch.Generator().manual_seed(seed)
                w = (scale * torch.randn(5, generator=g, dtype=torch.float64)).to(device)
                b = torch.randn((), generator=g, dtype=torch.float64).to(device)
                x = torch.randn(7, 5, generator=g, dtype=torch.float64).to(device)
                y = (2 * torch.randint(2, (7,), generator=g) - 1).double().to(device)
                ref = brute_force_linear_robust_loss(w, b, x, y, eps)
                out = grading.call(my_loss, w, b, x, y, eps)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise grading.Stop("return the loss as a single-number tensor (the mean over the batch)")
                value = out.detach().reshape(()).to(ref.dtype)
                if grading.close(value, ref, 1e-6):
                    continue
                if not torch.isfinite(value):
                    raise grading.Stop(
                        "the loss overflows for a confidently wrong example (a large negative margin): "
                        "log(1 + exp(z)) is F.softplus(z), which stays finite"
                    )
                margin, l1 = y * (x @ w + b), w.abs().sum()
                if eps:
                    grading.first_mistake(
                        value,
                        [
                            (
                                F.softplus(-margin + eps * w.norm()).mean(),
                                "you used ‖w‖₂: for an L∞ budget the worst δ·w is ε‖w‖₁ (L1 is the dual norm of L∞)",
                            ),
                            (
                                F.softplus(-margin - eps * l1).mean(),
                                "wrong sign: the adversary *lowers* the margin y(w·x + b), which raises the loss",
                            ),
                            (F.softplus(-margin + eps * l1).sum(), "average over the batch instead of summing"),
                            (F.softplus(-margin).mean(), "that is the clean loss: the worst δ changes the margin"),
                        ],
                        1e-6,
                    )
                grading.first_mistake(
                    value,
                    [
                        (
                            F.softplus(-(x @ w + b) + eps * l1).mean(),
                            "the margin includes the label: y(w·x + b), and the worst δ is −ε·y·sign(w)",
                        )
                    ],
                    1e-6,
                )
                raise grading.Stop("not the worst-case logistic loss; which δ with ‖δ‖∞ ≤ ε lowers y·w·δ most?")
        return (
            "equals the brute force over the corners of the ball, finite for confidently wrong examples "
            "(large negative margins), ε = 0 included"
        )

    return grading.run("linear robust loss", body)


# ------------------------------------------------------------------ Danskin's theorem, checked
def binary_logistic(model: torch.nn.Module, class_a: int, class_b: int, dtype=torch.float64, device=None):
    """The two-class restriction of a multinomial logistic regression: on digits of classes a and b the
    softmax over (z_a, z_b) is σ(z_a − z_b), so the model is a binary logistic regression with
    w = W_a − W_b, b = b_a − b_b (label +1 for a, −1 for b). Returns detached (w, b) on ``device``
    (default: the model's), moved there before the cast to ``dtype``."""
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    device = linear.weight.device if device is None else torch.device(device)
    w = (linear.weight[class_a] - linear.weight[class_b]).detach().to(device).to(dtype)
    b = (linear.bias[class_a] - linear.bias[class_b]).detach().to(device).to(dtype)
    return w, b


def l2_maximiser(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""The exact maximiser of softplus(−y(wᵀ(x+δ) + b)) over ‖δ‖₂ ≤ ε: δ* = −ε·y·w/‖w‖ (unique for w ≠ 0).

    The loss decreases in the margin y·wᵀδ, and Cauchy–Schwarz gives y·wᵀδ ≥ −ε‖w‖ with equality only there.
    ``x`` is (N, n), ``y`` in {−1, +1}."""
    return -epsilon * y[:, None] * (w / w.norm())[None, :]


def logistic_loss(w, b, x, y):
    """Mean softplus(−y(wᵀx + b)): binary logistic loss with labels ±1."""
    return F.softplus(-y * (x @ w + b)).mean()


def robust_logistic_loss(w, b, x, y, epsilon: float) -> torch.Tensor:
    r"""ρ(θ) = mean max_{‖δ‖₂≤ε} softplus(−y(wᵀ(x+δ)+b)) = mean softplus(−y(wᵀx+b) + ε‖w‖), exactly."""
    return F.softplus(-y * (x @ w + b) + epsilon * w.norm()).mean()


DeltaFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def danskin_error(delta_fn: DeltaFn, w, b, x, y, epsilon: float, *, h: float = 1e-6) -> float:
    r"""Relative error between Danskin's gradient and the true gradient of the robust loss (notebook 02, eq. 4).

    ``delta_fn(w, b, x, y, ε) -> δ`` is the attack; its δ is **frozen** and g = ∇_θ L(θ, x + δ), θ = (w, b),
    is taken by autograd. The reference is the whole gradient of the *exact* max ρ(θ)
    (:func:`robust_logistic_loss`, eq. 5) by central finite differences in every coordinate of θ, the maximiser
    recomputed at each θ ± h·e_i. Returns ‖g − ∇ρ‖ / ‖∇ρ‖: rounding error (about 1e-8) at the maximiser
    δ* = −ε·y·w/‖w‖. Every coordinate is compared, so a wrong δ cannot pass by agreeing along one lucky
    direction; use ε ≠ 1, where a δ* that forgets the factor ε differs from δ*."""
    delta = delta_fn(w, b, x, y, epsilon).detach()
    w_, b_ = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    grads = torch.autograd.grad(logistic_loss(w_, b_, x + delta, y), (w_, b_))
    danskin = torch.cat([g.reshape(-1) for g in grads])
    theta = torch.cat([w.reshape(-1), b.reshape(1)])

    def rho(t: torch.Tensor) -> float:
        return float(robust_logistic_loss(t[:-1], t[-1], x, y, epsilon))

    steps = h * torch.eye(len(theta), dtype=theta.dtype, device=theta.device)
    fd = torch.tensor([(rho(theta + e) - rho(theta - e)) / (2 * h) for e in steps], dtype=theta.dtype)
    return float((danskin.cpu() - fd).norm() / fd.norm())


def pgd_restart_gap(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    steps: int = 50,
    random_restarts: int = 5,
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
) -> dict[str, float]:
    """How far PGD (``steps`` sign steps of ε/4 from x, no clamp to [0, 1]) is from the inner maximum: the share
    of examples on which the best of ``random_restarts`` random starts and one targeted run towards every
    other class reaches a loss higher by more than ``tol`` (relative), and on those examples the median
    relative gain and the mean absolute gain in loss (nats). The mean relative gain is kept too; it is
    dominated by examples whose PGD loss is small."""

    def losses(x_adv):
        with torch.no_grad():
            return F.cross_entropy(model(x_adv), y, reduction="none")

    kwargs = {"step_size": epsilon / 4, "steps": steps, "clamp": None}
    plain = losses(attacks.pgd(model, x, y, epsilon, random_start=False, **kwargs))
    best = plain.clone()
    for _ in range(random_restarts):
        best = torch.maximum(best, losses(attacks.pgd(model, x, y, epsilon, generator=generator, **kwargs)))
    with torch.no_grad():
        n_classes = model(x[:1]).shape[1]
    for shift in range(1, n_classes):
        target = (y + shift) % n_classes
        x_t = attacks.pgd(model, x, target, epsilon, random_start=False, targeted=True, **kwargs)
        best = torch.maximum(best, losses(x_t))
    higher = best > plain * (1 + tol)
    gain = ((best - plain) / plain)[higher]
    absolute = (best - plain)[higher]
    return {
        "share_higher": float(higher.float().mean()),
        "mean_relative_gain": float(gain.mean()) if len(gain) else 0.0,
        "median_relative_gain": float(gain.median()) if len(gain) else 0.0,
        "mean_absolute_gain": float(absolute.mean()) if len(gain) else 0.0,
    }


def check_mixed_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, x, y, epsilon, omega) -> loss``: Goodfellow's mixed objective
    ω·J(x) + (1 − ω)·J(x + ε·sign(∇ₓJ)), a scalar whose gradient flows into the model (notebook 02, eq. 2)."""

    def body() -> str:
        for model, x, y, eps in grading.cases():
            for omega in (0.5, 0.2):
                x_adv = attacks.fgsm(model, x, y, eps)
                clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
                ref = omega * clean + (1 - omega) * adv
                model.zero_grad(set_to_none=True)
                with grading.watch_parameter_gradients(model) as touched:
                    out = grading.call(my_loss, model, x, y, eps, omega)
                if touched or any(p.grad is not None for p in model.parameters()):
                    raise grading.Stop(
                        "you back-propagated into the model while building x_FGSM (that is what loss.backward() "
                        "does, even if .grad is cleared afterwards): use attacks.fgsm or torch.autograd.grad(loss, x)"
                    )
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise grading.Stop("return the loss as a single-number tensor")
                if not out.requires_grad:
                    raise grading.Stop(
                        "the loss has no gradient: do not detach it or compute it under "
                        "torch.no_grad(), the model must learn from it"
                    )
                value = out.detach().reshape(())
                if grading.close(value, ref.detach()):
                    grading.same_gradient(
                        out.reshape(()),
                        ref,
                        list(model.parameters()),
                        "right value, wrong gradient: both J(x) and J(x_FGSM) must carry a gradient into the "
                        "model (no torch.no_grad() or .detach() on either term)",
                    )
                    continue
                if grading.close(value, ((1 - omega) * clean + omega * adv).detach()):
                    raise grading.Stop("ω and 1 − ω are swapped: ω weighs the clean loss")
                if grading.close(value, adv.detach()):
                    raise grading.Stop("that is the adversarial loss alone; mix in the clean loss with weight ω")
                unclamped = F.cross_entropy(model(attacks.fgsm(model, x, y, eps, clamp=None)), y)
                if grading.close(value, (omega * clean + (1 - omega) * unclamped).detach()):
                    raise grading.Stop("eq. (2) clamps the FGSM input to valid pixels: clip x + ε·sign(∇ₓJ) to [0, 1]")
                raise grading.Stop("not equal to ω·J(x) + (1 − ω)·J(clip(x + ε·sign(∇ₓJ))), eq. (2)")
        return "ω·J(x) + (1 − ω)·J(x_FGSM), with a gradient for the model"

    return grading.run("mixed loss", body)
