"""Notebook 05 · MAML (library: :mod:`metaadv_edu.maml`): the sinusoid models, the adaptation explorer, exercises."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from matplotlib.ticker import NullLocator
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import cache, data, grading, maml, models, stats
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
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


def sine_panel(ax, lines: dict[str, dict], points: dict[str, dict], *, legend: dict | None = None) -> dict:
    """Lay out a sine-task panel of the explorers of notebooks 05 and 07 on ``ax``: the true task's curve
    (artist ``"truth"``), one empty line per entry of ``lines`` and one empty scatter per entry of
    ``points`` (key → Matplotlib keyword arguments), x ∈ [−5, 5], y ∈ [−6, 6]. Returns the artists by key,
    for the explorer's ``draw`` to fill in. The true task is a wide light-grey band, so a fitted curve drawn
    over it stays visible."""
    (truth,) = ax.plot([], [], color=PALETTE["grey"], lw=4, alpha=0.7, label="true task")
    art = {"truth": truth}
    for key, style in lines.items():
        (art[key],) = ax.plot([], [], **style)
    for key, style in points.items():
        art[key] = ax.scatter([], [], **style)
    ax.set_xlim(-5, 5)
    ax.set_ylim(-6, 6)
    ax.legend(**{"loc": "lower left", **(legend or {})})
    ax.set_xlabel("input x")
    ax.set_ylabel("output y")
    return art


def _adaptation_path(model, theta, xs, ys, grid, truth, inner_lr, keep_step, max_steps=10):
    """Plain gradient descent on (xs, ys) from θ: the MSE on the whole curve after 0..max_steps
    steps, and the prediction on ``grid`` after ``keep_step`` steps. One pass, no graph kept."""

    params = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
    losses, kept = [], None
    for step in range(max_steps + 1):
        with torch.no_grad():
            pred = forward(model, params, grid)
        losses.append(F.mse_loss(pred, truth))
        if step == keep_step:
            kept = pred
        if step == max_steps:
            break
        grads = torch.autograd.grad(F.mse_loss(forward(model, params, xs), ys), list(params.values()))
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
        art.update(sine_panel(ax, lines, points, legend={"ncol": 2}))
        steps_axis = list(range(11))
        (art["loss_maml"],) = ax_loss.plot(steps_axis, [1.0] * 11, **series(0).line(ms=4), label="MAML")
        (art["loss_pre"],) = ax_loss.plot(steps_axis, [1.0] * 11, **series(1).line(ms=4), label="pretrained")
        art["marker"] = ax_loss.axvline(1, color=PALETTE["grey"], ls=":")
        ax_loss.set_yscale("log")
        ax_loss.set_ylim(1e-3, 30)
        # plain-text labels at fixed ticks: minor ticks and mathtext labels triple the drawing time
        ax_loss.yaxis.set_minor_locator(NullLocator())
        ax_loss.set_yticks([1e-3, 1e-2, 1e-1, 1, 10], ["0.001", "0.01", "0.1", "1", "10"])
        ax_loss.set_xlabel("inner steps k")
        ax_loss.set_ylabel("MSE on the whole curve")
        ax_loss.legend()
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
    return Explorer(draw, sliders, setup=setup, title="MAML: adapt to a new sine wave", figsize=(10, 3.6), dpi=72)


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


def _sine_case(device, seed: int, n_tasks: int = 3, k: int = 5):
    """A small tanh MLP, ``n_tasks`` sinusoid tasks, and parameters θ that differ from the module's own
    weights: a step that ignores ``params`` and differentiates ``model(x)`` cannot pass."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    tasks = data.sine_tasks(n_tasks, k, generator=torch.Generator().manual_seed(seed), device=device)
    g = torch.Generator().manual_seed(100 + seed)
    params = {
        name: (p.detach() + 0.5 * torch.randn(p.shape, generator=g).to(device)).requires_grad_(True)
        for name, p in model.named_parameters()
    }
    return model, tasks, params


def _summed_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, target, reduction="sum")


def _inner_step_mistakes(model, params, x, y, alpha) -> list[tuple[dict, str]]:
    """Values (detached) that typical wrong inner steps return, each with its hint."""
    own = {k: p.detach().requires_grad_(True) for k, p in model.named_parameters()}
    own_step = maml.adapt(model, own, x, y, inner_lr=alpha)
    grad_at_own = {k: (own[k] - own_step[k]) / alpha for k in own}
    grad = {k: (params[k] - t) / alpha for k, t in maml.adapt(model, params, x, y, inner_lr=alpha).items()}
    summed = maml.adapt(model, params, x, y, inner_lr=alpha, loss_fn=_summed_mse)
    ignoring = (
        "that is a step from the module's own weights: the loss must be computed with params — "
        "forward(model, params, x) — and differentiated with respect to params, which here differ "
        "from the module's weights (in MAML's outer loop they are the meta-parameters, in Exercise 2 "
        "any θ)"
    )
    return [
        ({k: own_step[k].detach() for k in own}, ignoring),
        (
            {k: (params[k] - alpha * grad_at_own[k]).detach() for k in own},
            "you start from params but take the gradient at the module's own weights (model(x)): the "
            "gradient must be the loss's at params, through forward(model, params, x)",
        ),
        ({k: (params[k] + alpha * grad[k]).detach() for k in own}, "wrong sign: gradient *descent* subtracts α·∇L"),
        (
            {k: t.detach() for k, t in summed.items()},
            "the loss is the *mean* squared error over the support points (F.mse_loss), not their sum",
        ),
        ({k: (params[k] - grad[k]).detach() for k in own}, "scale the gradient by the inner learning rate α"),
    ]


def check_inner_step(my_step: Callable) -> bool:
    """Grade ``my_step(model, params, x, y, inner_lr) -> new_params``: one differentiable MAML inner
    step θ′ = θ − α∇_θ L(θ; x, y) on the MSE loss, for ``params`` a dict of tensors θ that differ from
    the module's own weights."""

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((0, 0.1), (1, 0.01)):
                model, tasks, params = _sine_case(device, seed)
                x, y = tasks.x_support[0], tasks.y_support[0]
                before = [p.detach().clone() for p in model.parameters()]
                out = grading.call(my_step, model, dict(params), x, y, alpha)
                if any(not torch.equal(b, p) for b, p in zip(before, model.parameters())):
                    raise grading.Stop(
                        "your step changed the model's own parameters: return a new dict "
                        "θ′ and leave the module untouched"
                    )
                if not isinstance(out, dict) or set(out) != set(params):
                    raise grading.Stop("return a dict with the same keys as params (name → tensor)")
                ref = maml.adapt(model, params, x, y, inner_lr=alpha)
                values = {k: grading.tensor_like(out[k], ref[k], f"new_params[{k!r}]") for k in ref}
                if all(grading.close(values[k], ref[k].detach()) for k in ref):
                    if not all(out[k].requires_grad for k in out):
                        raise grading.Stop(
                            "the values are right, but θ′ is detached from θ: MAML needs to "
                            "differentiate through the step (torch.autograd.grad(..., "
                            "create_graph=True) or torch.func.grad)"
                        )
                    g_out = torch.autograd.grad(
                        sum(t.sum() ** 2 for t in out.values()), list(params.values()), allow_unused=True
                    )
                    g_ref = torch.autograd.grad(sum(t.sum() ** 2 for t in ref.values()), list(params.values()))
                    if any(a is None for a in g_out) or not all(
                        grading.close(a, b, 1e-4) for a, b in zip(g_out, g_ref)
                    ):
                        raise grading.Stop(
                            "θ′ has the right values but the wrong derivative with respect to θ: "
                            "the gradient term must stay in the graph (create_graph=True) — "
                            "without it the Hessian term of the meta-gradient is lost"
                        )
                    continue
                for wrong, hint in _inner_step_mistakes(model, params, x, y, alpha):
                    if all(grading.close(values[k], wrong[k]) for k in ref):
                        raise grading.Stop(hint)
                raise grading.Stop(
                    "θ′ differs from θ − α∇L(θ); differentiate the loss of "
                    "forward(model, params, x) with respect to params"
                )
        return "θ′ = θ − α∇L(θ) at the given params, differentiable, model untouched"

    return grading.run("MAML inner step", body)


def check_maml_meta_loss(my_meta_loss: Callable) -> bool:
    """Grade ``my_meta_loss(model, params, tasks, inner_lr) -> loss``: the mean over tasks of the query MSE
    after one second-order inner step from ``params`` (θ, which differ from the module's own weights) on
    each support set; ``.backward()`` gives the meta-gradient with respect to ``params``."""

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((3, 0.1), (2, 0.05)):
                model, tasks, params = _sine_case(device, seed)
                ref = maml.meta_loss(model, tasks, inner_lr=alpha, params=params)
                out = grading.call(my_meta_loss, model, dict(params), tasks, alpha)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise grading.Stop("return the meta-loss as a single-number tensor")
                value = out.detach().reshape(())
                if not grading.close(value, ref.detach(), 1e-4):
                    _meta_loss_mistake(value, ref.detach(), model, params, tasks, alpha)
                if not out.requires_grad:
                    raise grading.Stop("the meta-loss has no gradient: keep the graph through adaptation")
                theta = list(params.values())
                g_out = torch.autograd.grad(out, theta, allow_unused=True)
                if any(g is None for g in g_out):
                    raise grading.Stop(
                        "the meta-gradient does not reach every entry of params: adapt from params "
                        "(not from the module's own weights) and keep the graph"
                    )
                g_ref = torch.autograd.grad(ref, theta)
                fo = maml.meta_loss(model, tasks, inner_lr=alpha, first_order=True, params=params)
                g_fo = torch.autograd.grad(fo, theta)
                if not all(grading.close(a, b, 1e-4) for a, b in zip(g_out, g_ref)):
                    if all(grading.close(a, b, 1e-4) for a, b in zip(g_out, g_fo)):
                        raise grading.Stop(
                            "Hessian term missing: the value is right but the gradient is "
                            "first-order MAML's; keep create_graph=True in the inner step"
                        )
                    raise grading.Stop("the value is right but the meta-gradient is not")
        return "value and second-order meta-gradient with respect to params both match"

    return grading.run("MAML meta-loss", body)


def _meta_loss_mistake(value, ref, model, params, tasks, alpha) -> None:
    """Name the typical mistake whose value the meta-loss matches, or raise the generic hint."""
    own = {k: p.detach() for k, p in model.named_parameters()}
    with torch.no_grad():
        no_adapt = F.mse_loss(forward(model, params, tasks.x_query), tasks.y_query)

    def summed_inner_step(xs, ys, xq, yq):
        adapted = maml.adapt(model, params, xs, ys, inner_lr=alpha, loss_fn=_summed_mse)
        return F.mse_loss(forward(model, adapted, xq), yq)

    candidates = [
        (tasks.n_tasks * ref, "you summed over tasks; take the mean"),
        (no_adapt, "that is the query loss at θ: adapt to each task's support set first"),
        (
            maml.meta_loss(model, data_swap(tasks), inner_lr=alpha, params=params).detach(),
            "the outer loss must be measured on the *query* set, not the support set",
        ),
        (
            maml.meta_loss(model, tasks, inner_lr=alpha, params=own).detach(),
            "that is the meta-loss at the module's own weights: adapt from params, with "
            "forward(model, params, x), not model(x)",
        ),
        (
            torch.stack([summed_inner_step(*task) for task in zip(*tasks)]).mean().detach(),
            "use the mean squared error (F.mse_loss) in the inner step too, not the sum over support points",
        ),
    ]
    for wrong, hint in candidates:
        if grading.close(value, wrong, 1e-4):
            raise grading.Stop(hint)
    raise grading.Stop("not the mean query loss after one inner step on the support set")


def data_swap(tasks):
    """The same tasks with the query set replaced by the support set (a typical mistake's value)."""

    return data.Tasks(tasks.x_support, tasks.y_support, tasks.x_support, tasks.y_support)


def check_maml_hvp(my_meta_grad: Callable) -> bool:
    """Grade ``my_meta_grad(support_loss, query_grad, theta, inner_lr) -> g``: MAML's one-step meta-gradient
    (I − α∇²L_S(θ))∇L_Q(θ′) with θ′ = θ − α∇L_S(θ), for a flat θ; ``query_grad(θ′)`` returns ∇L_Q(θ′)
    without a graph, so the Hessian term must come from a Hessian-vector product."""

    def grad(fn, t, vector=None):
        t = t.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(t), t, create_graph=vector is not None)
        return g.detach() if vector is None else torch.autograd.grad(g, t, vector)[0].detach()

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((0, 0.05), (1, 0.2), (2, 0.0)):
                theta, support, query = grading.toy_regression(device, seed)
                q_grad = partial(grad, query)
                adapted = theta - alpha * grad(support, theta)
                g = q_grad(adapted)
                ref = g - alpha * grad(support, theta, g)
                try:
                    out = grading.call(my_meta_grad, support, q_grad, theta.clone(), alpha)
                except grading.Stop as stop:
                    if "does not require grad" in str(stop):
                        raise grading.Stop(
                            "to differentiate ∇L_S a second time (the Hessian-vector product), "
                            "compute it with create_graph=True"
                        ) from None
                    raise
                out = grading.tensor_like(out, ref, "the meta-gradient")
                if grading.close(out, ref, 1e-6):
                    continue
                grading.first_mistake(
                    out,
                    [
                        (
                            g,
                            "that is ∇L_Q(θ′) alone — first-order MAML: the Hessian term −α∇²L_S(θ)∇L_Q(θ′) is missing",
                        ),
                        (
                            g + alpha * grad(support, theta, g),
                            "the Hessian term has the wrong sign: dθ′/dθ = I − α∇²L_S(θ)",
                        ),
                        (
                            g - alpha * grad(support, adapted, g),
                            "the Hessian belongs to the inner step: take it at θ, "
                            "where the inner step starts, not at θ′",
                        ),
                        (
                            g - alpha * grad(query, adapted, g),
                            "the Hessian is the *support* loss's (the inner step "
                            "differentiates L_S), not the query loss's",
                        ),
                        (-alpha * grad(support, theta, g), "(I − αH)v keeps v itself: add the query gradient"),
                        (
                            q_grad(theta) - alpha * grad(support, theta, q_grad(theta)),
                            "the query gradient is taken at the adapted θ′ = θ − α∇L_S(θ), not at θ",
                        ),
                    ],
                    1e-6,
                )
                raise grading.Stop("not (I − α∇²L_S(θ))∇L_Q(θ′)")
        return "(I − α∇²L_S(θ))∇L_Q(θ′) through a Hessian-vector product, α = 0 included"

    return grading.run("MAML meta-gradient by HVP", body)


def _linear_task(device, seed: int, dim: int = 3):
    """A tiny linear regression task: support and query inputs (n, dim), targets (n,) and weights w (dim,), float64."""
    g = torch.Generator().manual_seed(seed)
    x_support, x_query = (
        torch.randn(5, dim, generator=g, dtype=torch.float64),
        torch.randn(7, dim, generator=g, dtype=torch.float64),
    )
    w_true, w = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g, dtype=torch.float64)
    y_support = x_support @ w_true + 0.1 * torch.randn(5, generator=g, dtype=torch.float64)
    y_query = x_query @ w_true + 0.1 * torch.randn(7, generator=g, dtype=torch.float64)
    return tuple(t.to(device) for t in (x_support, y_support, x_query, y_query, w))


def _mse_grad(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """∇_w of the mean squared error (1/n)‖xw − y‖² of a linear model: (2/n)xᵀ(xw − y)."""
    return scale / len(y) * x.T @ (x @ w - y)


def two_step_lr_gradient(
    x_support,
    y_support,
    x_query,
    y_query,
    w,
    inner_lr: float,
    *,
    hessian_sign: float = -1.0,
    through_step_two: bool = True,
    scale: float = 2.0,
) -> torch.Tensor:
    r"""dL_Q(w₂)/dα for w₁ = w − α∇L_S(w), w₂ = w₁ − α∇L_S(w₁): a linear model, MSE losses (notebook 05,
    Exercise 4). With :math:`H_S = \tfrac{2}{n}X_S^\top X_S`,

    .. math::

        \frac{dL_Q(w_2)}{d\alpha} = -\nabla L_Q(w_2)^\top\big[(I - \alpha H_S)\nabla L_S(w) + \nabla L_S(w_1)\big].

    ``hessian_sign=+1``, ``through_step_two=False`` (the second step's gradient treated as constant in α) and
    ``scale=1`` (the MSE's gradient without its factor 2) give typical mistakes, for the grader's hints.
    """
    g0 = _mse_grad(x_support, y_support, w, scale)
    w1 = w - inner_lr * g0
    g1 = _mse_grad(x_support, y_support, w1, scale)
    g_query = _mse_grad(x_query, y_query, w1 - inner_lr * g1, scale)
    hessian_g0 = scale / len(y_support) * x_support.T @ (x_support @ g0)
    direction = g0 + g1 + (hessian_sign * inner_lr * hessian_g0 if through_step_two else 0.0)
    return -(g_query @ direction)


def _two_step_lr_gradient_by_autograd(x_support, y_support, x_query, y_query, w, inner_lr: float) -> torch.Tensor:
    """The reference: α as a leaf tensor, two differentiable steps, torch.autograd.grad of L_Q(w₂)."""
    alpha = torch.tensor(inner_lr, dtype=w.dtype, device=w.device, requires_grad=True)
    w2 = w
    for _ in range(2):
        w2 = w2 - alpha * _mse_grad(x_support, y_support, w2)
    (d_alpha,) = torch.autograd.grad(((x_query @ w2 - y_query) ** 2).mean(), alpha)
    return d_alpha.detach()


_BY_HAND = (
    "this exercise asks for the derivative by hand: write ∇L(w) = (2/n)Xᵀ(Xw − y) and the chain rule with "
    "tensor operations; the grader blocks autograd (torch.autograd, torch.func) while your function runs"
)

# Every entry point through which a learner's function could let PyTorch differentiate for it.
_AUTOGRAD_ENTRY_POINTS = (
    (torch.autograd, ("grad", "backward")),
    (torch.Tensor, ("backward",)),
    (torch, ("enable_grad",)),
    (torch.func, ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian")),
    (torch.autograd.functional, ("jacobian", "hessian", "vjp", "jvp", "hvp", "vhp")),
)


@contextlib.contextmanager
def _autograd_blocked() -> Iterator[None]:
    """Replace autograd's entry points by functions raising :class:`grading.Stop`; restore them on exit."""

    def refuse(*args, **kwargs):
        raise grading.Stop(_BY_HAND)

    set_grad_enabled = torch.set_grad_enabled

    def only_disable(mode: bool):  # torch.no_grad itself calls torch.set_grad_enabled(False)
        if mode:
            raise grading.Stop(_BY_HAND)
        return set_grad_enabled(mode)

    saved = [(owner, name, getattr(owner, name)) for owner, names in _AUTOGRAD_ENTRY_POINTS for name in names]
    saved.append((torch, "set_grad_enabled", set_grad_enabled))
    with torch.no_grad():
        try:
            for owner, name, _ in saved:
                setattr(owner, name, refuse)
            torch.set_grad_enabled = only_disable
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)


def _call_by_hand(fn: Callable, *args):
    """Call ``fn`` with autograd blocked; a refusal is the verdict, any other failure is phrased by
    :func:`grading.call` (which runs the deterministic ``fn`` again, still blocked)."""
    try:
        with _autograd_blocked():
            return fn(*args)
    except grading.Stop:
        raise
    except Exception:  # the learner's code may fail in any way; report it kindly
        with _autograd_blocked():
            return grading.call(fn, *args)


def check_two_step_lr_gradient(my_lr_gradient: Callable) -> bool:
    """Grade ``my_lr_gradient(x_support, y_support, x_query, y_query, w, inner_lr) -> dL/dα``, written by hand:
    the derivative of the query MSE of a linear model after two SGD steps of size α on the support MSE,
    compared with torch.autograd. The learner's function runs under ``torch.no_grad()`` with autograd's entry points
    (``torch.autograd``, ``Tensor.backward``, ``torch.enable_grad``, ``torch.func``) replaced by a refusal."""

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((0, 0.1), (1, 0.3), (2, 0.05)):
                task = _linear_task(device, seed)
                ref = _two_step_lr_gradient_by_autograd(*task, alpha)
                out = _call_by_hand(my_lr_gradient, *task, alpha)
                out = torch.as_tensor(out, dtype=ref.dtype, device=ref.device) if isinstance(out, float) else out
                out = grading.tensor_like(
                    out.reshape(()) if isinstance(out, torch.Tensor) and out.numel() == 1 else out, ref, "dL/dα"
                )
                if grading.close(out, ref, 1e-8):
                    continue
                x_support, y_support, x_query, y_query, w = task
                w1 = w - alpha * _mse_grad(x_support, y_support, w)
                w2 = w1 - alpha * _mse_grad(x_support, y_support, w1)
                grading.first_mistake(
                    out,
                    [
                        (
                            two_step_lr_gradient(*task, alpha, through_step_two=False),
                            "the second step's gradient ∇L_S(w₁) depends on α too, through w₁ = w − α∇L_S(w): "
                            "its derivative adds −α·H_S·(dw₁/dα), with H_S = (2/n)X_Sᵀ X_S",
                        ),
                        (-ref, "wrong sign: each step subtracts α times a gradient, so dw₁/dα = −∇L_S(w)"),
                        (
                            two_step_lr_gradient(*task, alpha, hessian_sign=1.0),
                            "the Hessian term has the wrong sign: d∇L_S(w₁)/dα = H_S·dw₁/dα = −H_S∇L_S(w) "
                            "(or you took dw₂/dα = −2∇L_S(w): ∇L_S(w₁) ≠ ∇L_S(w))",
                        ),
                        (
                            -(_mse_grad(x_query, y_query, w1) @ _mse_grad(x_support, y_support, w)),
                            "that is the one-step formula −∇L_Q(w₁)·∇L_S(w): take two steps, to w₂",
                        ),
                        (
                            -(_mse_grad(x_query, y_query, w2) @ _mse_grad(x_support, y_support, w)),
                            "only the first step's gradient appears: w₂ = w − α∇L_S(w) − α∇L_S(w₁), "
                            "and both terms depend on α",
                        ),
                        (
                            two_step_lr_gradient(*task, alpha, scale=1.0),
                            "a factor 2 is missing: the gradient of (1/n)‖Xw − y‖² is (2/n)Xᵀ(Xw − y)",
                        ),
                    ],
                    1e-8,
                )
                raise grading.Stop("not dL_Q(w₂)/dα; apply the chain rule step by step: dw₁/dα, then dw₂/dα")
        return "dL_Q(w₂)/dα by hand agrees with autograd, the second step's dependence on α included"

    return grading.run("MAML learning-rate gradient, two steps", body)
