"""Notebook 07 · Meta-SGD (library: :mod:`metaadv_edu.metasgd`): its sinusoid models, explorer, exercise."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import cache, data, grading, maml, metasgd, models
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.maml import SINE_META, sine_panel, sine_sampler
from metaadv_edu.functional import forward, params_of
from metaadv_edu.plotting import PALETTE, parameter_label, series
from metaadv_edu.widgets import Explorer, float_slider, int_slider, selection_slider

__all__ = [
    "POINTS",
    "Variant",
    "alpha_histograms",
    "alpha_variants",
    "check_alpha_gradient",
    "check_meta_sgd_step",
    "initial_inner_lrs",
    "learned_inner_lrs",
    "metasgd_explorer",
    "rate_changes",
    "sine_metasgd",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"Meta-SGD step": 1, "Meta-SGD ∂L/∂α": 2}


def sine_metasgd(
    device=None, *, iterations: int = 1200, k_support: int = 10, alpha_init: float | tuple[float, float] = (0.005, 0.1)
):
    """Meta-SGD on sinusoids (notebook 07): the 1-40-40-1 regressor and an elementwise α learned
    together with Adam (β = 1e-3), one inner step, meta-batch 25. ``alpha_init`` is a constant or a
    range for the uniform initialisation of α (the paper draws it from a small range).

    Returns ``(model, record)``; ``record["inner_lrs"]`` holds the learned α by parameter name.
    """
    device = as_device(device)
    init = list(alpha_init) if isinstance(alpha_init, tuple) else v.positive("alpha_init", alpha_init)
    config = {
        "n_tasks": SINE_META["n_tasks"],
        "k_support": v.integer("k_support", k_support),
        "outer_lr": SINE_META["outer_lr"],
        "iterations": v.integer("iterations", iterations),
        "alpha_init": init,
        "seed": 0,
    }

    build = cache.seeded(models.SineRegressor, config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        lrs = metasgd.init_inner_lrs(model, tuple(init) if isinstance(init, list) else init, generator=g)
        history = metasgd.meta_train(
            model,
            lrs,
            sine_sampler(config, device),
            iterations=config["iterations"],
            outer_lr=config["outer_lr"],
            generator=g,
            desc=f"Meta-SGD (K = {config['k_support']})",
        )
        return {
            "meta_loss": history["meta_loss"][::10],
            "inner_lrs": {k: t.detach().cpu().tolist() for k, t in lrs.items()},
        }

    return load_or_train("sine-metasgd", config, build, train, device=device)


def learned_inner_lrs(record: dict, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The learned α of a :func:`sine_metasgd` record as tensors on the model's device."""
    return {
        name: torch.tensor(record["inner_lrs"][name], dtype=p.dtype, device=p.device)
        for name, p in model.named_parameters()
    }


def initial_inner_lrs(model: nn.Module, alpha_init: float | tuple[float, float] = (0.005, 0.1)) -> dict:
    """The α a :func:`sine_metasgd` run started from: its first draw from the seed-0 generator."""
    lrs = metasgd.init_inner_lrs(model, alpha_init, generator=torch.Generator().manual_seed(0))
    return {name: a.detach() for name, a in lrs.items()}


def rate_changes(initial: dict, learned: dict) -> list[list[str]]:
    """One row per parameter tensor: its size, the median α before and after training, the shares of its
    rates that grew, shrank and stayed exactly unchanged, the share now negative, and the mean |α| — the
    table of notebook 07."""
    if set(initial) != set(learned):
        raise ValueError("initial and learned must name the same parameter tensors")
    rows = []
    for name in learned:
        a0 = initial[name].detach().reshape(-1).cpu()
        a1 = learned[name].detach().reshape(-1).cpu()
        rows.append(
            [
                name,
                f"{a1.numel()}",
                f"{a0.median():.4f}",
                f"{a1.median():+.4f}",
                f"{(a1 > a0).float().mean():.0%}",
                f"{(a1 < a0).float().mean():.0%}",
                f"{(a1 == a0).float().mean():.0%}",
                f"{(a1 < 0).float().mean():.0%}",
                f"{a1.abs().mean():.3f}",
            ]
        )
    return rows


def alpha_variants(learned: dict, *, scales: tuple[float, ...] = (0.5, 2.0)) -> dict[str, dict]:
    """The learned α, and simplifications of it to test which of its features matter (notebook 07, §5):
    every rate made positive (|α|), one rate per parameter tensor (the tensor's mean α), one rate for all
    (the mean of all 1,761), and the learned α multiplied by each of ``scales`` (the same pattern of rates,
    parameter by parameter and sign by sign, at another overall size)."""
    scales = tuple(v.positive(f"scales[{i}]", s) for i, s in enumerate(scales))
    overall = torch.cat([a.detach().reshape(-1) for a in learned.values()]).mean()
    variants = {
        "learned α": {k: a.detach() for k, a in learned.items()},
        "|α| (signs dropped)": {k: a.detach().abs() for k, a in learned.items()},
        "one rate per tensor (its mean)": {k: torch.full_like(a, float(a.mean())) for k, a in learned.items()},
        "one rate for all (the mean α)": {k: torch.full_like(a, float(overall)) for k, a in learned.items()},
    }
    for scale in scales:
        variants[f"learned α × {scale:g} (size only)"] = {k: scale * a.detach() for k, a in learned.items()}
    return variants


class Variant(NamedTuple):
    """One choice of the Meta-SGD explorer: a Meta-SGD model, its learned α, the MAML model trained at
    the same shot count, and that shot count K."""

    model: nn.Module
    inner_lrs: dict
    maml_model: nn.Module
    k_support: int


def alpha_histograms(alphas: dict[str, torch.Tensor], model: nn.Module, *, bins: int = 30):
    """Notebook 07: one histogram per parameter tensor of its learned inner rates α (``alphas[name]``, shaped like
    ``model``'s parameter ``name``), titled with the tensor's name in words (:func:`~metaadv_edu.plotting.
    parameter_label`: "layer 1 weights (40 × 1)") and marked at α = 0, where a rate changes sign. Returns the
    figure."""
    import matplotlib.pyplot as plt

    named = dict(model.named_parameters())
    if not alphas or set(alphas) - set(named):
        raise ValueError(f"alphas must map some of the model's parameter names {sorted(named)} to rates")
    cols = min(3, len(alphas))
    rows = -(-len(alphas) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), layout="constrained", squeeze=False)
    for ax in axes.flat[len(alphas) :]:
        ax.set_axis_off()
    for ax, (name, a) in zip(axes.flat, alphas.items()):
        values = a.detach().reshape(-1).cpu().numpy()
        ax.hist(values, bins=bins, color=series(4).color, edgecolor=PALETTE["black"], linewidth=0.3)
        ax.axvline(0, color=PALETTE["black"], lw=0.8, ls="--")
        ax.set_title(parameter_label(name, model))
        ax.set_xlabel("learned α")
    for row in axes:
        row[0].set_ylabel("number of parameters")
    return fig


def metasgd_explorer(
    variants: dict[str, tuple], *, n_tasks: int = 10, seed: int = 77, maml_lr: float = 0.01
) -> Explorer:
    """Switch between cached Meta-SGD models (by shot count and α initialisation) and adapt each to a
    new task with one step of its learned α, next to MAML with one step of ``maml_lr``.

    ``variants[label]`` is a :class:`Variant` (or a tuple in its order). Sliders: the model, a scale
    applied to the learned α (1 = as learned), and the test task. Nothing is trained.
    """
    variants = {label: Variant(*variant) for label, variant in variants.items()}
    labels = list(variants)
    device = next(variants[labels[0]].model.parameters()).device
    pool = max(variant.k_support for variant in variants.values())
    tasks, amp, phase = data.sine_tasks(
        n_tasks, pool, generator=torch.Generator().manual_seed(seed), device=device, return_params=True
    )
    grid = torch.linspace(-5, 5, 200, device=device).view(-1, 1)
    bins = np.logspace(-4, 0, 25)
    hists = {
        label: np.histogram(
            np.abs(torch.cat([a.detach().reshape(-1) for a in variant.inner_lrs.values()]).cpu().numpy()), bins=bins
        )[0]
        for label, variant in variants.items()
    }
    art: dict = {}

    def setup(fig):
        ax, ax_h = fig.subplots(1, 2, width_ratios=[1.6, 1])
        lines = {
            "msgd": {"ls": "-", "color": series(4).color, "lw": 2, "label": "Meta-SGD, 1 step of learned α"},
            "maml": {"ls": "--", "color": series(0).color, "lw": 1.8, "label": f"MAML, 1 step of α = {maml_lr}"},
        }
        points = {"pts": {"marker": "D", "color": PALETTE["black"], "s": 20, "zorder": 3, "label": "support points"}}
        art.update(sine_panel(ax, lines, points, animated=True))
        centers = np.sqrt(bins[:-1] * bins[1:])
        art["bars"] = ax_h.bar(centers, np.ones(len(centers)), width=np.diff(bins), color=series(4).color)
        ax_h.set_xscale("log")
        ax_h.set_xlabel("|learned α| (all 1,761 parameters)")
        ax_h.set_ylabel("number of parameters")
        art["ax"], art["ax_h"] = ax, ax_h

    def draw(fig, *, model, alpha_scale, task):
        net, lrs, maml_net, k_support = variants[model]
        xs, ys = tasks.x_support[task, :k_support], tasks.y_support[task, :k_support]
        truth = amp[task] * torch.sin(grid - phase[task])
        scaled = {name: alpha_scale * a.detach() for name, a in lrs.items()}
        adapted = maml.adapt(net, params_of(net, detach=True), xs, ys, inner_lr=scaled)
        adapted_maml = maml.adapt(maml_net, params_of(maml_net, detach=True), xs, ys, inner_lr=maml_lr)
        pred, pred_maml = forward(net, adapted, grid).detach(), forward(maml_net, adapted_maml, grid).detach()
        g = grid[:, 0].cpu()
        art["truth"].set_data(g, truth[:, 0].cpu())
        art["msgd"].set_data(g, pred[:, 0].cpu())
        art["maml"].set_data(g, pred_maml[:, 0].cpu())
        art["pts"].set_offsets(torch.cat([xs, ys], 1).cpu().numpy())
        counts = hists[model]
        for rect, c in zip(art["bars"], counts):
            rect.set_height(c)
        art["ax_h"].set_ylim(0, counts.max() * 1.1)
        art["ax"].set_title(f"task {task}: y = {amp[task]:.2f}·sin(x − {phase[task]:.2f}), K = {k_support}")
        mse = float(((pred - truth) ** 2).mean())
        mse_maml = float(((pred_maml - truth) ** 2).mean())
        return (
            f"one step on K = {k_support} points: MSE <b>{mse:.3f}</b> (Meta-SGD, α × {alpha_scale:.2f}) vs "
            f"<b>{mse_maml:.3f}</b> (MAML)"
        )

    model_slider = selection_slider("cached Meta-SGD model", labels, labels[0])
    model_slider.layout.width = "44em"  # the labels name shots and α's initialisation
    sliders = {
        "model": model_slider,
        "alpha_scale": float_slider("scale of learned α", 1.0, 0.0, 3.0, 0.1),
        "task": int_slider("test task", 0, 0, n_tasks - 1),
    }
    # The sine panel's curves, points and title change on every move: blitting redraws just those over a
    # picture rendered once. The histogram and its y-axis change with the model only: the picture is
    # rendered again when the model slider moves.
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="Meta-SGD: the learned α at work",
        figsize=(10, 3.6),
        dpi=72,
        blit=True,
        blit_key=lambda model, **_: model,
    )


def check_meta_sgd_step(my_step: Callable) -> bool:
    """Grade ``my_step(params, grads, inner_lrs) -> new_params``: θ′ = θ − α∘∇L with an α of the
    same shape as each parameter (all three arguments are dicts of tensors). Meta-SGD learns α through
    this step, so the result must stay differentiable with respect to ``inner_lrs`` (∂θ′/∂α = −∇L)
    and to ``params``."""

    def body() -> str:
        for device in grading.devices():
            for seed in (0, 1):
                g = torch.Generator().manual_seed(seed)
                shapes = {"w": (4, 3), "b": (4,)}
                params = {k: torch.randn(s, generator=g).to(device).requires_grad_(True) for k, s in shapes.items()}
                grads = {k: torch.randn(s, generator=g).to(device) for k, s in shapes.items()}
                lrs = {k: (torch.rand(s, generator=g).to(device) * 0.1).requires_grad_(True) for k, s in shapes.items()}
                out = grading.call(my_step, params, grads, lrs)
                if not isinstance(out, dict) or set(out) != set(params):
                    raise grading.Stop("return a dict with the same names as params")
                ref = {k: (params[k] - lrs[k] * grads[k]).detach() for k in params}
                values = {k: grading.tensor_like(out[k], ref[k], f"new_params[{k!r}]") for k in ref}
                if not all(grading.close(values[k], ref[k]) for k in ref):
                    if all(grading.close(values[k], (params[k] + lrs[k] * grads[k]).detach()) for k in ref):
                        raise grading.Stop("wrong sign: the inner step descends, θ − α∘∇L")
                    if all(grading.close(values[k], (-lrs[k] * grads[k]).detach()) for k in ref):
                        raise grading.Stop("that is the step −α∘∇L alone, without θ: return θ′ = θ − α∘∇L")
                    if all(grading.close(values[k], (params[k] - lrs[k].mean() * grads[k]).detach()) for k in ref):
                        raise grading.Stop("α is not a scalar here: multiply elementwise, one rate per parameter")
                    raise grading.Stop("not θ − α∘∇L (elementwise product)")
                _check_graph(out, params, grads, lrs)
        return "θ − α∘∇L, elementwise, differentiable with respect to θ and α"

    return grading.run("Meta-SGD step", body)


def check_alpha_gradient(my_grad: Callable) -> bool:
    """Grade ``my_grad(support_loss, query_loss, theta, alpha) -> g``: ∂L_Q(θ′)/∂α for the Meta-SGD inner
    step θ′ = θ − α ∘ ∇L_S(θ), with θ and α flat tensors of the same shape; g has α's shape."""

    def grad(fn, t):
        t = t.detach().requires_grad_(True)
        return torch.autograd.grad(fn(t), t)[0].detach()

    detached = (
        "your ∂L/∂α is zero or missing: α was detached (or never required a gradient), so autograd "
        "cannot see that L_Q depends on α through θ′"
    )

    def body() -> str:
        for device in grading.devices():
            for seed in (0, 1, 2):
                theta, support, query = grading.toy_regression(device, seed)
                alpha = 0.01 + 0.05 * torch.rand(
                    theta.shape, generator=torch.Generator().manual_seed(seed), dtype=theta.dtype
                ).to(device)
                g_s = grad(support, theta)
                adapted = theta - alpha * g_s
                ref = -grad(query, adapted) * g_s
                try:
                    out = grading.call(my_grad, support, query, theta.clone(), alpha.clone())
                except grading.Stop as stop:
                    if "does not require grad" in str(stop) or "not have been used in the graph" in str(stop):
                        raise grading.Stop(detached) from None
                    raise
                if out is None:
                    raise grading.Stop(detached)
                if isinstance(out, torch.Tensor) and out.numel() == 1:
                    raise grading.Stop(
                        "return one entry per learning rate (α's shape): the product with ∇L_S "
                        "is elementwise, not a dot product"
                    )
                out = grading.tensor_like(out, alpha, "∂L/∂α")
                if grading.close(out, ref, 1e-6):
                    continue
                if not out.abs().max():
                    raise grading.Stop(detached)
                grading.first_mistake(
                    out,
                    [
                        (-ref, "wrong sign: θ′ moves by −α ∘ ∇L_S(θ), so ∂θ′/∂α = −∇L_S(θ)"),
                        (-grad(query, theta) * g_s, "∇L_Q is taken at the adapted θ′, not at θ"),
                        (-grad(query, adapted) * grad(support, adapted), "∇L_S is the inner step's gradient, at θ"),
                        (grad(query, adapted), "that is ∂L/∂θ′; the chain rule multiplies it by ∂θ′/∂α"),
                    ],
                    1e-6,
                )
                raise grading.Stop("not ∂L_Q(θ′)/∂α")
        return "−∇L_Q(θ′) ∘ ∇L_S(θ), one entry per learning rate"

    return grading.run("Meta-SGD ∂L/∂α", body)


def _check_graph(out, params, grads, lrs) -> None:
    """∂(Σ θ′)/∂α must be −∇L and ∂(Σ θ′)/∂θ must be 1: the graph to α and θ is kept."""
    names = list(params)
    if not all(out[k].requires_grad for k in names):
        raise grading.Stop(
            "the values are right, but θ′ is detached: Meta-SGD learns α (and θ) by "
            "differentiating through this step, so do not use .detach(), .item(), .data "
            "or torch.no_grad() here"
        )
    total = sum(out[k].sum() for k in names)
    d_alpha = torch.autograd.grad(total, [lrs[k] for k in names], retain_graph=True, allow_unused=True)
    if any(d is None for d in d_alpha) or not all(grading.close(d, -grads[k]) for d, k in zip(d_alpha, names)):
        raise grading.Stop(
            "the values are right, but the gradient does not reach α: ∂θ′/∂α must be "
            "−∇L — keep inner_lrs in the graph (no .detach() or .data on α)"
        )
    d_theta = torch.autograd.grad(total, [params[k] for k in names], allow_unused=True)
    if any(d is None for d in d_theta) or not all(grading.close(d, torch.ones_like(d)) for d in d_theta):
        raise grading.Stop("the values are right, but the gradient does not reach θ: keep params in the graph")
