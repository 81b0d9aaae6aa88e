"""Notebook 06 · Reptile (library: :mod:`metaadv_edu.reptile`): its sinusoid model, the quadratic-task
explorer, the exercise."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import cache, grading, maml, models, reptile, stats
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.maml import sine_sampler
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.widgets import Explorer, float_slider, inner_lr_slider, int_slider

__all__ = [
    "POINTS",
    "Learner",
    "check_reptile_joint_step",
    "check_reptile_update",
    "evaluate_own_rules",
    "paired_comparisons",
    "quadratic_fixed_points",
    "reptile_explorer",
    "sine_reptile",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"Reptile update": 1, "one-step Reptile as SGD": 2}


def sine_reptile(device=None, *, iterations: int = 2000, inner_steps: int = 5):
    """The 1-40-40-1 regressor trained by Reptile on sinusoids (notebook 06): ``inner_steps`` (k, default 5)
    SGD steps of α = 0.02 per task on K = 10 points, meta-batch 25, outer step β annealed linearly from 1 to 0.
    With ``inner_steps=1`` it is SGD on the joint loss, eq. (2) of notebook 06 (its Going further)."""
    device = as_device(device)
    config = {
        "n_tasks": 25,
        "k_support": 10,
        "inner_lr": 0.02,
        "inner_steps": v.integer("inner_steps", inner_steps),
        "outer_lr": 1.0,
        "iterations": v.integer("iterations", iterations),
        "seed": 0,
    }

    build = cache.seeded(models.SineRegressor, config["seed"])

    def train(model):
        history = reptile.train(
            model,
            sine_sampler(config, device),
            iterations=config["iterations"],
            inner_lr=config["inner_lr"],
            inner_steps=config["inner_steps"],
            outer_lr=config["outer_lr"],
            generator=torch.Generator().manual_seed(config["seed"]),
        )
        return {"support_loss": history["support_loss"][::10]}

    return load_or_train("sine-reptile", config, build, train, device=device)


class Learner(NamedTuple):
    """A trained meta-learner and the inner rule it was trained with: ``inner_steps`` steps of
    ``inner_lr`` (a number, or Meta-SGD's dict of per-parameter rates)."""

    model: nn.Module
    inner_lr: float | dict
    inner_steps: int


def evaluate_own_rules(learners: dict[str, Learner], tasks, *, max_steps: int = 10) -> dict[str, dict]:
    """Score each learner on the same ``tasks`` with the inner rule it was trained with.

    Returns, per learner, the query loss of every task (a 1-D tensor, in the order of ``tasks``) after its
    own ``inner_steps`` steps (``"own"``) and after ``max_steps`` steps of its own α (``"long"``). Because
    every learner is scored on the same tasks, compare them with :func:`paired_comparisons`.
    """
    out = {}
    for name, learner in learners.items():
        model, inner_lr, steps = Learner(*learner)
        steps = v.integer("inner_steps", steps, low=1, high=max_steps)
        losses = maml.adaptation_losses(model, tasks, inner_lr=inner_lr, max_steps=max_steps)
        out[name] = {"own": losses[steps], "long": losses[max_steps]}
    return out


def paired_comparisons(scores: dict[str, torch.Tensor], *, lower_is_better: bool = True) -> list[str]:
    """Every pair of learners scored on the same tasks, compared by the mean of their per-task differences.

    ``scores[name]`` holds one loss (or accuracy, with ``lower_is_better=False``) per task, the same tasks
    in the same order for every learner. Learners are listed by mean score, best first; each line gives
    the paired difference a − b with its 95 % t interval (:func:`metaadv_edu.stats.paired_difference`)
    and its verdict.
    """
    if len(scores) < 2:
        raise ValueError(f"scores must hold at least two learners, got {len(scores)}")
    order = sorted(scores, key=lambda n: float(scores[n].mean()), reverse=not lower_is_better)
    lines = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            d = stats.paired_difference(scores[a], scores[b])
            verdict = d.verdict(a, b, lower_is_better=lower_is_better)
            lines.append(f"{a} − {b}: {d.format(3)} ({d.n} tasks) → {verdict}")
    return lines


def _quadratic_tasks(n: int = 4, seed: int = 0):
    """n quadratic task losses ½(θ − cᵢ)ᵀAᵢ(θ − cᵢ) in a 2-D parameter space, with different
    minima and curvatures (eigenvalues 0.5–4, random orientations)."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-2, 2, size=(n, 2))
    mats = []
    for _ in range(n):
        a = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        mats.append(rot @ np.diag(rng.uniform([2.0, 0.3], [4.0, 0.8])) @ rot.T)
    return centers, np.stack(mats)


def _quadratic_updates(theta, centers, mats, alpha, k):
    """Closed forms for quadratic tasks: θ′ − c = (I − αA)^k (θ − c). Returns the adapted points
    (n, 2) and the mean Reptile, FOMAML and MAML update directions (each −gradient-like)."""
    eye = np.eye(2)
    powers = np.stack([np.linalg.matrix_power(eye - alpha * a, k) for a in mats])
    adapted = centers + np.einsum("nij,nj->ni", powers, theta - centers)
    grads_at_adapted = np.einsum("nij,nj->ni", mats, adapted - centers)
    reptile = (adapted - theta).mean(0)
    fomaml = -grads_at_adapted.mean(0)
    maml = -np.einsum("nij,nj->ni", powers, grads_at_adapted).mean(0)
    return adapted, reptile, fomaml, maml


def _update_maps(centers, mats, alpha: float, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every mean outer update on the quadratic tasks is affine in θ: mean_i Bᵢ(cᵢ − θ) = b − Bθ with
    B = mean_i Bᵢ and b = mean_i Bᵢcᵢ, where Bᵢ = I − Pᵢ (Reptile), AᵢPᵢ (FOMAML) or PᵢAᵢPᵢ (MAML),
    Pᵢ = (I − αAᵢ)^k, and Bᵢ = Aᵢ for the average loss's negative gradient. Returns (B, b) by name."""
    eye = np.eye(2)
    powers = [np.linalg.matrix_power(eye - alpha * a, k) for a in mats]
    weights = {
        "Reptile": [eye - p for p in powers],
        "FOMAML": [a @ p for a, p in zip(mats, powers)],
        "MAML": [p @ a @ p for a, p in zip(mats, powers)],
        "average loss": list(mats),
    }
    return {name: (sum(b) / len(b), sum(bi @ c for bi, c in zip(b, centers)) / len(b)) for name, b in weights.items()}


def quadratic_fixed_points(centers, mats, alpha: float, k: int) -> dict[str, np.ndarray]:
    """Where each algorithm's outer updates stop on the quadratic tasks, exactly, and the minimum of the
    average task loss. Every update is linear in θ, mean_i Bᵢ(cᵢ − θ) with Bᵢ = I − Pᵢ (Reptile), AᵢPᵢ
    (FOMAML) or PᵢAᵢPᵢ (MAML), Pᵢ = (I − αAᵢ)^k, so it vanishes at θ* = (Σ Bᵢ)⁻¹ Σ Bᵢcᵢ.
    With k = 1 Reptile's Bᵢ = αAᵢ: its fixed point is the average-loss minimum."""
    return {name: np.linalg.solve(big, small) for name, (big, small) in _update_maps(centers, mats, alpha, k).items()}


def reptile_explorer(*, n_tasks: int = 4, seed: int = 3, outer_iterations: int = 60) -> Explorer:
    """Reptile, FOMAML and MAML on quadratic tasks in a 2-D parameter plane, exactly.

    Sliders: α, inner steps k and the outer step β. Shown: the MAML objective (mean loss after k
    steps) as an image, each task's minimum and its k inner steps from the start θ₀, and the paths of
    ``outer_iterations`` outer updates of each algorithm. Reptile moves by β·mean(θ′ − θ); to put
    the three on the same scale, FOMAML and MAML move by β·α·k times their negative gradients.
    """
    centers, mats = _quadratic_tasks(n_tasks, seed)
    theta0 = np.array([2.6, -2.6])
    side = np.linspace(-3.5, 3.5, 90)
    gx, gy = np.meshgrid(side, side)
    points = np.stack([gx.ravel(), gy.ravel()], 1)
    styles = {"Reptile": series(1), "FOMAML": series(2), "MAML": series(0)}  # colour, marker and line style
    art: dict = {}

    def objective(alpha, k):
        eye = np.eye(2)
        total = np.zeros(len(points))
        for c, a in zip(centers, mats):
            p = np.linalg.matrix_power(eye - alpha * a, k)
            d = (points - c) @ p.T
            total += 0.5 * np.einsum("ni,ij,nj->n", d, a, d)
        return np.log10(total / len(centers) + 1e-3).reshape(gx.shape)

    def setup(fig):
        ax = fig.subplots()
        art["image"] = ax.imshow(
            np.zeros_like(gx), origin="lower", extent=(-3.5, 3.5, -3.5, 3.5), cmap="Greys", vmin=-2, vmax=1.5, alpha=0.6
        )
        minima = ax.scatter(*centers.T, marker="x", color=PALETTE["black"], s=40, label="task minima cᵢ")
        art["inner"] = [ax.plot([], [], ":", color=PALETTE["dark grey"], lw=1)[0] for _ in centers]
        art["paths"] = {
            name: ax.plot([], [], **style.line(ms=4, lw=1.5, markevery=6), label=name)[0]
            for name, style in styles.items()
        }
        start = ax.plot(*theta0, "s", color=PALETTE["black"], ms=6, label="start θ₀")[0]
        avg = quadratic_fixed_points(centers, mats, 0.1, 1)["average loss"]
        star = ax.plot(
            *avg, "*", color=PALETTE["yellow"], mec=PALETTE["black"], ms=14, label="minimum of the average loss"
        )[0]
        # What draw changes (the shading, the inner steps, the paths) is animated, and so is what a full render
        # draws over the shading (the markers, the frame): a blit draws them all again, in z-order.
        for artist in (art["image"], minima, start, star, *art["inner"], *art["paths"].values(), *ax.spines.values()):
            artist.set_animated(True)
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.set_xlabel("parameter θ₁")
        ax.set_ylabel("parameter θ₂")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # outside: no path hidden
        ax.set_title("shading: log₁₀ of the MAML objective\n(mean task loss after k steps; lighter is lower)")
        art["ax"] = ax

    def draw(fig, *, inner_lr, inner_steps, outer_lr):
        art["image"].set_data(objective(inner_lr, inner_steps))
        for line, c, a in zip(art["inner"], centers, mats):
            path = [theta0]
            for _ in range(inner_steps):
                path.append(path[-1] - inner_lr * a @ (path[-1] - c))
            line.set_data(*np.array(path).T)
        scale = {
            "Reptile": outer_lr,
            "FOMAML": outer_lr * inner_lr * inner_steps,
            "MAML": outer_lr * inner_lr * inner_steps,
        }
        ends = {}
        maps = _update_maps(centers, mats, inner_lr, inner_steps)  # each update is b − Bθ: no per-step adaptation
        for name in styles:
            big, small = maps[name]
            theta, path = theta0.copy(), [theta0.copy()]
            for _ in range(outer_iterations):
                theta = np.clip(theta + scale[name] * (small - big @ theta), -50, 50)
                path.append(theta)
            art["paths"][name].set_data(*np.array(path).T)
            ends[name] = theta
        spread = max(np.abs(np.linalg.eigvals(np.eye(2) - inner_lr * a)).max() for a in mats)
        warn = " — inner steps diverge (|1 − αλ| > 1)" if spread > 1 else ""
        fixed = quadratic_fixed_points(centers, mats, inner_lr, inner_steps)
        return (
            "after "
            + f"{outer_iterations} outer steps: "
            + ", ".join(f"{n} at ({e[0]:.2f}, {e[1]:.2f})" for n, e in ends.items())
            + warn
            + "; fixed points: "
            + ", ".join(f"{n} ({e[0]:.2f}, {e[1]:.2f})" for n, e in fixed.items())
        )

    sliders = {
        "inner_lr": inner_lr_slider(0.1, -2, 0),
        "inner_steps": int_slider("k — inner steps", 3, 1, 10),
        "outer_lr": float_slider("β — outer step size", 0.3, 0.05, 1.0, 0.05),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="Reptile, FOMAML and MAML on quadratic tasks",
        figsize=(8.8, 5.2),
        dpi=72,
        blit=True,
    )


def check_reptile_update(my_update: Callable) -> bool:
    """Grade ``my_update(theta, adapted, outer_lr) -> new_theta``: the batched Reptile step
    θ + β·mean_i(θ′ᵢ − θ), for ``theta`` a dict of tensors and ``adapted`` a dict of the same names
    holding each task's adapted tensors stacked along a first dimension."""

    def body() -> str:
        for device in grading.devices():
            for seed, n, beta in ((0, 4, 0.5), (1, 1, 1.0), (2, 7, 0.1)):
                g = torch.Generator().manual_seed(seed)
                theta = {"w": torch.randn(3, 2, generator=g).to(device), "b": torch.randn(3, generator=g).to(device)}
                adapted = {k: (t + 0.3 * torch.randn(n, *t.shape, generator=g).to(device)) for k, t in theta.items()}
                out = grading.call(my_update, {k: t.clone() for k, t in theta.items()}, adapted, beta)
                if not isinstance(out, dict) or set(out) != set(theta):
                    raise grading.Stop("return a dict with the same names as theta")
                ref = {k: theta[k] + beta * (adapted[k] - theta[k]).mean(0) for k in theta}
                values = {k: grading.tensor_like(out[k], ref[k], f"new_theta[{k!r}]") for k in ref}
                if all(grading.close(values[k], ref[k]) for k in ref):
                    continue
                if all(grading.close(values[k], theta[k] - beta * (adapted[k] - theta[k]).mean(0)) for k in ref):
                    raise grading.Stop("wrong sign: Reptile moves θ *towards* the adapted weights, θ + β(θ′ − θ)")
                if n > 1 and all(
                    grading.close(values[k], theta[k] + beta * (adapted[k] - theta[k]).sum(0)) for k in ref
                ):
                    raise grading.Stop("average over tasks (mean), do not sum")
                if all(grading.close(values[k], theta[k] + (adapted[k] - theta[k]).mean(0)) for k in ref) and beta != 1:
                    raise grading.Stop("scale the step by the outer step size β")
                if all(grading.close(values[k], adapted[k].mean(0)) for k in ref) and beta != 1:
                    raise grading.Stop("that jumps all the way to the mean of θ′ (β = 1); interpolate with β")
                raise grading.Stop("not θ + β·mean(θ′ − θ)")
        return "θ + β·mean(θ′ − θ) for one task and for many"

    return grading.run("Reptile update", body)


def _mean_loss(losses: list[Callable], theta: torch.Tensor) -> torch.Tensor:
    """J(θ) = mean_i L_i(θ), the joint loss of the tasks whose losses are ``losses``."""
    return torch.stack([loss(theta) for loss in losses]).mean()


def _scaled(factor: float, loss: Callable, theta: torch.Tensor) -> torch.Tensor:
    """``factor``·loss(θ): with factor n, the sum of the task losses instead of their mean."""
    return factor * loss(theta)


def check_reptile_joint_step(my_step: Callable) -> bool:
    """Grade ``my_step(joint_loss, theta, inner_lr, outer_lr) -> new_theta``: the plain gradient step on the
    joint loss J(θ) = mean_i L_i(θ) that equals one Reptile iteration with one inner SGD step per task
    (inner rate α, outer rate β). The grader runs Reptile on the separate tasks, which ``my_step`` never sees."""

    def grad(fn, t):
        t = t.detach().requires_grad_(True)
        return torch.autograd.grad(fn(t), t)[0].detach()

    def body() -> str:
        for device in grading.devices():
            for seed, n, alpha, beta in ((0, 3, 0.02, 0.5), (1, 1, 0.1, 1.0), (2, 5, 0.01, 0.3)):
                theta = grading.toy_regression(device, seed)[0]
                tasks = [grading.toy_regression(device, 10 * seed + i)[1] for i in range(n)]
                joint = partial(_mean_loss, tasks)
                adapted = [theta - alpha * grad(L, theta) for L in tasks]
                reptile = theta + beta * torch.stack([theta_i - theta for theta_i in adapted]).mean(0)
                out = grading.call(my_step, joint, theta.clone(), alpha, beta)
                out = grading.tensor_like(out, theta, "new_theta")
                if grading.close(out, reptile, 1e-8):
                    continue
                g = grad(joint, theta)
                grading.first_mistake(
                    out,
                    [
                        (theta + alpha * beta * g, "wrong sign: SGD on J descends, θ − (step)·∇J(θ)"),
                        (
                            theta - beta * g,
                            "the step is not β alone: each θ′ᵢ − θ is itself −α∇Lᵢ(θ), so what is the "
                            "learning rate of the step on J?",
                        ),
                        (
                            theta - alpha * g,
                            "the step is not α alone: Reptile moves only a fraction β of the way to "
                            "the θ′ᵢ, so what is the learning rate of the step on J?",
                        ),
                        (
                            theta - alpha * beta * grad(partial(_scaled, n, joint), theta),
                            "J is the *mean* of the task losses, not their sum",
                        ),
                    ],
                    1e-8,
                )
                raise grading.Stop(
                    "not the same point as one-step Reptile; write θ′ᵢ − θ for one inner SGD step"
                    " and average over tasks"
                )
        return "one-step Reptile is SGD on the mean task loss, and your step lands exactly where Reptile does"

    return grading.run("one-step Reptile as SGD", body)
