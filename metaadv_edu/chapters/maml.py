"""Notebook 05 · MAML (library: :mod:`metaadv_edu.maml`): the sinusoid models, their evaluation, the adaptation
explorer; the exercise graders live in :mod:`metaadv_edu.chapters.graders.maml` and are re-exported here."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from matplotlib.ticker import NullLocator
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import cache, data, maml, models, stats
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.graders.maml import (
    check_inner_step,
    check_maml_hvp,
    check_maml_meta_loss,
    check_two_step_lr_gradient,
    data_swap,
    two_step_lr_gradient,
)
from metaadv_edu.functional import forward, params_of
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.widgets import Explorer, float_slider, inner_lr_slider, int_slider

__all__ = [
    "AVERAGE_TASK_AMPLITUDE",
    "LI_2017_TABLE1",
    "POINTS",
    "SINE_META",
    "SineEvaluation",
    "average_task_gap",
    "check_inner_step",
    "check_maml_hvp",
    "check_maml_meta_loss",
    "check_two_step_lr_gradient",
    "data_swap",
    "evaluation_figure",
    "evaluation_table",
    "maml_explorer",
    "one_step_shift",
    "one_task_figure",
    "sine_evaluation",
    "sine_maml",
    "sine_panel",
    "sine_pretrained",
    "sine_sampler",
    "two_step_lr_gradient",
]


#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {
    "MAML inner step": 1,
    "MAML meta-loss": 1,
    "MAML meta-gradient by HVP": 2,
    "MAML learning-rate gradient, two steps": 2,
}

# Li, Zhou, Chen & Li (2017), Table 1: sinusoid regression, one adaptation step, MSE ± 95 % CI.
LI_2017_TABLE1 = {
    ("MAML", 5): (1.13, 0.18),
    ("MAML", 10): (0.77, 0.11),
    ("MAML", 20): (0.48, 0.08),
    ("Meta-SGD", 5): (0.90, 0.16),
    ("Meta-SGD", 10): (0.53, 0.09),
    ("Meta-SGD", 20): (0.31, 0.05),
}

SINE_META = {"n_tasks": 25, "k_support": 10, "inner_lr": 0.01, "outer_lr": 1e-3}


def sine_sampler(config: dict, device):
    """Meta-batches of ``config["n_tasks"]`` sinusoid tasks with ``config["k_support"]`` points each."""
    return lambda g: data.sine_tasks(config["n_tasks"], config["k_support"], generator=g, device=device)


def sine_maml(
    device=None, *, iterations: int = 6000, first_order: bool = False, k_support: int = 10, inner_lr: float = 0.01
):
    """The 1-40-40-1 regressor meta-trained by MAML on sinusoids (notebook 05): one inner step,
    K = 10, α = 0.01, Adam with β = 1e-3, meta-batch 25, as in Finn et al. (2017, §5.1) but with
    fewer iterations (the paper ran 70,000). ``inner_lr`` changes α (notebook 07 trains α = 0.03 to ask
    whether a larger fixed step explains Meta-SGD's advantage)."""

    device = as_device(device)
    config = {
        **SINE_META,
        "iterations": v.integer("iterations", iterations),
        "first_order": bool(first_order),
        "seed": 0,
        "k_support": v.integer("k_support", k_support),
        "inner_lr": v.positive("inner_lr", inner_lr),
    }

    build = cache.seeded(models.SineRegressor, config["seed"])

    def train(model):
        history = maml.meta_train(
            model,
            sine_sampler(config, device),
            iterations=config["iterations"],
            inner_lr=config["inner_lr"],
            outer_lr=config["outer_lr"],
            first_order=config["first_order"],
            generator=torch.Generator().manual_seed(config["seed"]),
            desc="FOMAML meta-training" if first_order else "MAML meta-training",
        )
        return {"meta_loss": history["meta_loss"][::10]}

    name = "sine-fomaml" if first_order else "sine-maml"
    return load_or_train(name, config, build, train, device=device)


def sine_pretrained(device=None, *, iterations: int = 6000):
    """The baseline of MAML's sinusoid experiment: the same network trained on all tasks jointly
    (plain regression on points pooled from a batch of tasks), to be fine-tuned afterwards."""

    device = as_device(device)
    config = {**SINE_META, "iterations": v.integer("iterations", iterations), "seed": 0}

    build = cache.seeded(models.SineRegressor, config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        opt = torch.optim.Adam(model.parameters(), lr=config["outer_lr"])
        losses = []
        sample = sine_sampler(config, device)
        for _ in range(config["iterations"]):
            t = sample(g)
            loss = F.mse_loss(model(t.x_support), t.y_support)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"loss": losses[::10]}

    return load_or_train("sine-pretrained", config, build, train, device=device)


# E[A sin(x − φ)] = E[A]·E[sin(x − φ)] for independent A ~ U[0.1, 5], φ ~ U[0, π]:
# E[A] = 2.55 and (1/π)∫₀^π sin(x − φ) dφ = −(2/π) cos x, so the average task is −(2·2.55/π) cos x.
AVERAGE_TASK_AMPLITUDE = 2 * (0.1 + 5.0) / 2 / math.pi


def average_task_gap(model: nn.Module) -> float:
    """RMS distance on x ∈ [−5, 5] between ``model`` and the average task −1.62·cos x, relative to
    the RMS of that function."""
    device = next(model.parameters()).device
    grid = torch.linspace(-5, 5, 201, device=device).view(-1, 1)
    with torch.no_grad():
        pred = model(grid)
    target = -AVERAGE_TASK_AMPLITUDE * torch.cos(grid)
    return ((pred - target).pow(2).mean().sqrt() / target.pow(2).mean().sqrt()).item()


def one_step_shift(model: nn.Module, tasks: data.Tasks, inner_lr: float) -> tuple[float, float]:
    """How far one step moves the function: the mean over tasks of the RMS change of the prediction
    on the query inputs after one step of ``inner_lr`` on the support set, and of the RMS distance
    from the prediction before the step to the query targets."""
    from torch.func import vmap

    theta = params_of(model, detach=True)

    def one(xs, ys, xq, yq):
        before = forward(model, theta, xq)
        after = forward(model, maml.adapt(model, theta, xs, ys, inner_lr=inner_lr), xq)
        return (after - before).pow(2).mean().sqrt(), (yq - before).pow(2).mean().sqrt()

    moved, needed = vmap(one)(*tasks)
    return moved.mean().item(), needed.mean().item()


class SineEvaluation(NamedTuple):
    """The evaluation of notebook 05, §7: the baseline's tuned step size and every model's scores."""

    pretrained_lr: float  #: the baseline's fine-tuning step size, chosen on the validation tasks
    candidates: tuple[float, ...]  #: the step sizes tried for the baseline
    validation: torch.Tensor  #: (candidates, max_steps + 1): mean validation MSE after 0, 1, … steps
    inner_lrs: dict[str, float]  #: the step size each model adapts with on the test tasks
    scores: dict[tuple[str, int], torch.Tensor]  #: (model, K) → (max_steps + 1, n_tasks) query MSE per task


def sine_evaluation(
    meta_model: nn.Module,
    pretrained: nn.Module,
    val_tasks: data.Tasks,
    *,
    candidates: tuple[float, ...] = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05),
    shots: tuple[int, ...] = (5, 10, 20),
    n_tasks: int = 600,
    max_steps: int = 10,
    meta_lr: float = 0.01,
) -> SineEvaluation:
    """Finn et al.'s sinusoid evaluation (notebook 05, §7). The baseline's step size is the candidate with
    the lowest mean validation MSE over steps 1..``max_steps`` (:func:`maml.tune_inner_lr` on ``val_tasks``);
    then, for each K in ``shots``, ``n_tasks`` new tasks (seed 100 + K, 100 query points) are drawn, and each
    model is fine-tuned on them by plain gradient descent — MAML with the α = ``meta_lr`` it was trained for,
    the baseline with its tuned step — and scored on the query points after 0, 1, …, ``max_steps`` steps. Both
    models see the same tasks, so their scores can be paired task by task."""
    shots = tuple(v.integer(f"shots[{i}]", k) for i, k in enumerate(shots))
    n_tasks = v.integer("n_tasks", n_tasks, low=2)
    max_steps = v.integer("max_steps", max_steps)
    meta_lr = v.positive("meta_lr", meta_lr)
    candidates = tuple(v.positive(f"candidates[{i}]", c) for i, c in enumerate(candidates))
    pretrained_lr, validation = maml.tune_inner_lr(pretrained, val_tasks, candidates, max_steps=max_steps)
    device = next(meta_model.parameters()).device
    nets = {"MAML": meta_model, "pretrained": pretrained}
    inner_lrs = {"MAML": meta_lr, "pretrained": pretrained_lr}
    scores = {}
    for k_support in shots:
        g = torch.Generator().manual_seed(100 + k_support)
        test_tasks = data.sine_tasks(n_tasks, k_support, 100, generator=g, device=device)
        for name, net in nets.items():
            scores[(name, k_support)] = maml.adaptation_losses(
                net, test_tasks, inner_lr=inner_lrs[name], max_steps=max_steps
            )
    return SineEvaluation(pretrained_lr, candidates, validation, inner_lrs, scores)


def evaluation_table(evaluation: SineEvaluation, steps: tuple[int, ...] = (0, 1, 5, 10)) -> list[list[str]]:
    """Rows of notebook 05's results table: K, the model and its step size, then the mean query MSE with
    its 95 % t interval over the test tasks after each number of steps in ``steps``."""
    return [
        [f"K = {k}", f"{name}, α = {evaluation.inner_lrs[name]:g}"]
        + [stats.mean_ci(per_step[s]).format(3) for s in steps]
        for (name, k), per_step in evaluation.scores.items()
    ]


def evaluation_figure(evaluation: SineEvaluation):
    """Notebook 05's adaptation curves: one panel per K, the mean query MSE of each model after 0, 1, …
    steps with its 95 % t band, each model with its own colour, marker and line style. Returns the figure."""
    import matplotlib.pyplot as plt

    shots = sorted({k for _, k in evaluation.scores})
    names = list(evaluation.inner_lrs)
    fig, axes = plt.subplots(1, len(shots), figsize=(10, 3), sharey=True, layout="constrained", squeeze=False)
    for ax, k_support in zip(axes[0], shots):
        for j, name in enumerate(names):
            cis = [stats.mean_ci(per_task) for per_task in evaluation.scores[(name, k_support)]]
            mean = torch.tensor([c.mean for c in cis])
            half = torch.tensor([c.half_width for c in cis])
            steps = range(len(cis))
            ax.plot(steps, mean, **series(j).line(ms=4), label=name)
            ax.fill_between(steps, mean - half, mean + half, color=series(j).color, alpha=0.2)
        ax.set_title(f"K = {k_support}")
        ax.set_xlabel("gradient steps")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("query MSE (95% CI)")
    axes[0, 0].legend()
    return fig


def sine_panel(
    ax, lines: dict[str, dict], points: dict[str, dict], *, legend: dict | None = None, animated: bool = False
) -> dict:
    """Lay out a sine-task panel of the explorers of notebooks 05 and 07 on ``ax``: the true task's curve
    (artist ``"truth"``), one empty line per entry of ``lines`` and one empty scatter per entry of
    ``points`` (key → Matplotlib keyword arguments), x ∈ [−5, 5], y ∈ [−6, 6]. Returns the artists by key,
    for the explorer's ``draw`` to fill in. The true task is a wide light-grey band, so a fitted curve drawn
    over it stays visible.

    ``animated=True`` prepares the panel for an explorer that blits: the returned artists, the title (which
    ``draw`` sets) and the frame (drawn over the curves' ends) are marked animated, and the legend is
    opaque, as the blitted picture pastes it over the curves."""
    (truth,) = ax.plot([], [], color=PALETTE["grey"], lw=4, alpha=0.7, label="true task")
    art = {"truth": truth}
    for key, style in lines.items():
        (art[key],) = ax.plot([], [], **style)
    for key, style in points.items():
        art[key] = ax.scatter([], [], **style)
    for artist in [*art.values(), ax.title, *ax.spines.values()]:
        artist.set_animated(animated)
    ax.set_xlim(-5, 5)
    ax.set_ylim(-6, 6)
    ax.legend(**{"loc": "lower left", **({"framealpha": 1.0} if animated else {}), **(legend or {})})
    ax.set_xlabel("input x")
    ax.set_ylabel("output y")
    return art


def _adaptation_path(model, theta, xs, ys, grid, truth, inner_lr, keep_step, max_steps=10):
    """Plain gradient descent on (xs, ys) from θ: the MSE on the whole curve after 0..max_steps
    steps, and the prediction on ``grid`` after ``keep_step`` steps. One forward pass per step on the
    support points and the grid together (the grid's rows add nothing to the support loss's gradient);
    no graph kept across steps."""

    n, both = len(xs), torch.cat([xs, grid])
    params = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
    losses, kept = [], None
    for step in range(max_steps + 1):
        out = forward(model, params, both)
        pred = out[n:].detach()
        losses.append(F.mse_loss(pred, truth))
        if step == keep_step:
            kept = pred
        if step == max_steps:
            break
        grads = torch.autograd.grad(F.mse_loss(out[:n], ys), list(params.values()))
        params = {k: (p - inner_lr * g).detach().requires_grad_(True) for (k, p), g in zip(params.items(), grads)}
    return torch.stack(losses), kept


def maml_explorer(
    meta_model: torch.nn.Module,
    baseline: torch.nn.Module,
    *,
    n_tasks: int = 10,
    pool: int = 20,
    seed: int = 2024,
    inner_lr: float = 0.01,
) -> Explorer:
    """Adapt a meta-learned sinusoid regressor (and a baseline) to a new task, live.

    Sliders: α (log), inner steps, K support points, ε (an FGSM-style shift of the K support
    inputs, x + ε·sign(∇ₓL_S), computed at the meta-learned initialisation) and which test task.
    Adapting 1-40-40-1 on ≤ 20 points for ≤ 10 steps takes milliseconds; nothing is meta-trained.
    """

    device = next(meta_model.parameters()).device
    tasks, amp, phase = data.sine_tasks(
        n_tasks, pool, generator=torch.Generator().manual_seed(seed), device=device, return_params=True
    )
    grid = torch.linspace(-5, 5, 200, device=device).view(-1, 1)
    nets = {"MAML": meta_model, "pretrained": baseline}
    thetas = {name: params_of(net, detach=True) for name, net in nets.items()}
    art: dict = {}

    def setup(fig):
        ax, ax_loss = fig.subplots(1, 2, width_ratios=[1.6, 1])
        lines = {
            "init": {"ls": ":", "color": series(0).color, "lw": 1.5, "label": "MAML init θ"},
            "maml": {"ls": "-", "color": series(0).color, "lw": 2, "label": "MAML adapted"},
            "pre": {"ls": "--", "color": series(1).color, "lw": 1.8, "label": "pretrained, fine-tuned"},
        }
        points = {
            "clean_pts": {
                "s": 22,
                "marker": "o",
                "facecolors": "none",
                "edgecolors": PALETTE["dark grey"],
                "label": "clean support x",
            },
            "pts": {"s": 26, "marker": "D", "color": PALETTE["black"], "zorder": 3, "label": "support points used"},
        }
        art.update(sine_panel(ax, lines, points, legend={"ncol": 2}, animated=True))
        steps_axis = list(range(11))
        (art["loss_maml"],) = ax_loss.plot(steps_axis, [1.0] * 11, **series(0).line(ms=4), label="MAML")
        (art["loss_pre"],) = ax_loss.plot(steps_axis, [1.0] * 11, **series(1).line(ms=4), label="pretrained")
        art["marker"] = ax_loss.axvline(1, color=PALETTE["grey"], ls=":")
        for artist in (art["loss_maml"], art["loss_pre"], art["marker"], *ax_loss.spines.values()):
            artist.set_animated(True)  # the frame too: a full render draws it over the curves and the marker
        ax_loss.set_yscale("log")
        ax_loss.set_ylim(1e-3, 30)
        # plain-text labels at fixed ticks: minor ticks and mathtext labels triple the drawing time
        ax_loss.yaxis.set_minor_locator(NullLocator())
        ax_loss.set_yticks([1e-3, 1e-2, 1e-1, 1, 10], ["0.001", "0.01", "0.1", "1", "10"])
        ax_loss.set_xlabel("inner steps k")
        ax_loss.set_ylabel("MSE on the whole curve")
        ax_loss.legend(loc="upper right", framealpha=1.0)  # fixed and opaque: the kept picture holds it
        ax_loss.grid(alpha=0.3)
        art["ax"] = ax

    def draw(fig, *, inner_lr, steps, k_support, epsilon, task):
        xs, ys = tasks.x_support[task, :k_support], tasks.y_support[task, :k_support]
        truth = amp[task] * torch.sin(grid - phase[task])
        if epsilon > 0:
            x_var = xs.clone().requires_grad_(True)
            loss = F.mse_loss(forward(meta_model, thetas["MAML"], x_var), ys)
            (gx,) = torch.autograd.grad(loss, x_var)
            xs_used = (xs + epsilon * gx.sign()).clamp(-5, 5)
        else:
            xs_used = xs
        losses, preds = {}, {}
        for name, net in nets.items():
            losses[name], preds[name] = _adaptation_path(net, thetas[name], xs_used, ys, grid, truth, inner_lr, steps)
        with torch.no_grad():
            init = forward(meta_model, thetas["MAML"], grid)
        g = grid[:, 0].cpu()
        art["truth"].set_data(g, truth[:, 0].cpu())
        art["init"].set_data(g, init[:, 0].cpu())
        art["maml"].set_data(g, preds["MAML"][:, 0].cpu())
        art["pre"].set_data(g, preds["pretrained"][:, 0].cpu())
        art["clean_pts"].set_offsets(torch.cat([xs, ys], 1).cpu().numpy() if epsilon > 0 else torch.empty(0, 2).numpy())
        art["pts"].set_offsets(torch.cat([xs_used, ys], 1).detach().cpu().numpy())
        art["loss_maml"].set_ydata(losses["MAML"].clamp(1e-3, 30).cpu())
        art["loss_pre"].set_ydata(losses["pretrained"].clamp(1e-3, 30).cpu())
        art["marker"].set_xdata([steps, steps])
        art["ax"].set_title(f"task {task}: y = {amp[task]:.2f}·sin(x − {phase[task]:.2f}), K = {k_support}")
        m, p = losses["MAML"][steps].item(), losses["pretrained"][steps].item()
        return (
            f"after {steps} step(s) of α = {inner_lr:.2g} on K = {k_support} points (ε = {epsilon:.2f}): "
            f"MSE <b>{m:.3f}</b> (MAML) vs <b>{p:.3f}</b> (pretrained)"
        )

    sliders = {
        "inner_lr": inner_lr_slider(inner_lr, -3, 0),
        "steps": int_slider("k — inner steps", 1, 0, 10),
        "k_support": int_slider("K — support points", 10, 2, pool),
        "epsilon": float_slider("ε — shift of support inputs", 0.0, 0.0, 1.0, 0.05),
        "task": int_slider("test task", 0, 0, n_tasks - 1),
    }
    # Only the curves, the points, the step marker and the sine panel's title change: blitting redraws just
    # those over a picture rendered once (tick labels and legends are most of a full redraw's cost).
    return Explorer(
        draw, sliders, setup=setup, title="MAML: adapt to a new sine wave", figsize=(10, 3.6), dpi=72, blit=True
    )


def one_task_figure(
    learners: dict[str, nn.Module],
    xs: torch.Tensor,
    ys: torch.Tensor,
    amp: float,
    phase: float,
    *,
    inner_lr: float = 0.01,
    steps: tuple[int, ...] = (0, 1, 10),
):
    """Notebook 05, "One task, step by step": one panel per learner, with the true task y = A·sin(x − φ), the
    learner's curve after each number of plain gradient steps in ``steps`` (step size α = ``inner_lr`` on the
    support points ``xs``, ``ys``) and the support points. Each step count has its own colour, marker and line style.
    Returns the figure."""
    import matplotlib.pyplot as plt

    if not learners:
        raise ValueError("learners must name at least one model")
    inner_lr = v.positive("inner_lr", inner_lr)
    steps = tuple(v.integer(f"steps[{i}]", s, low=0) for i, s in enumerate(steps))
    grid = torch.linspace(-5, 5, 200, device=xs.device).view(-1, 1)
    fig, axes = plt.subplots(1, len(learners), figsize=(5 * len(learners), 3.2), sharey=True, layout="constrained")
    axes = [axes] if len(learners) == 1 else list(axes)
    for ax, (name, net) in zip(axes, learners.items()):
        truth = (amp * torch.sin(grid - phase)).cpu()
        ax.plot(grid.cpu(), truth, color=PALETTE["grey"], lw=4, alpha=0.7, label="true task")
        params = params_of(net, detach=True)
        for j, k in enumerate(steps):
            adapted = params if k == 0 else maml.adapt(net, params, xs, ys, inner_lr=inner_lr, steps=k)
            with torch.no_grad():
                curve = forward(net, adapted, grid).cpu()
            ax.plot(
                grid.cpu(),
                curve,
                **series(j).line(lw=1.8, ms=4, markevery=(5 * j, 25)),
                label=f"{k} step" + ("" if k == 1 else "s"),
            )
        ax.scatter(
            xs.cpu(),
            ys.detach().cpu(),
            marker="D",
            color=PALETTE["black"],
            s=18,
            zorder=3,
            label=f"K = {len(xs)} points",
        )
        ax.set(title=name, xlabel="input x")
        ax.legend(loc="lower left")
    axes[0].set_ylabel("output y")
    return fig
