"""Notebook 11 · Certified robustness (library: :mod:`metaadv_edu.certify`, :mod:`metaadv_edu.masking`):
the interval-trained model, the derivation checks, the explorer and the exercises."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from scipy import stats as scipy_stats
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import attacks, cache, certify, data, masking, models, stats, training
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.graders.certified_robustness import (
    check_interval_affine,
    check_linear_radius,
    check_smoothing_radius,
)
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.widgets import Explorer, dropdown, float_slider, selection_slider

__all__ = [
    "POINTS",
    "bounds_explorer",
    "certify_and_attack",
    "check_interval_affine",
    "check_linear_radius",
    "check_smoothing_radius",
    "digits_cnn_ibp",
    "evaluation_checklist",
    "interval_soundness_check",
    "linear_radius_check",
    "masking_sweep",
    "pgd_run",
    "smoothing_radius_check",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"linear radius": 1, "interval affine rule": 2, "smoothing radius": 1}


# ------------------------------------------------------------------ the interval-trained model
def digits_cnn_ibp(epsilon: float = 0.1, device=None):
    """The digits CNN trained with interval bound propagation (Gowal et al. 2018; notebook 11, §3).

    Same architecture as the course's digits CNN. Loss :func:`metaadv_edu.certify.ibp_loss`: ε ramps
    linearly from 0 to ``epsilon`` and κ from 1 to 0.5 over epochs ``warmup`` … ``warmup + ramp``, then
    both stay. One training run.
    """
    device = as_device(device)
    config = {
        "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
        "width": 16,
        "epochs": 40,
        "warmup": 3,
        "ramp": 20,
        "kappa_end": 0.5,
        "lr": 3e-3,
        "batch_size": 64,
        "seed": 0,
    }
    build = cache.seeded(lambda: models.TinyCNN(1, 10, width=config["width"], image_size=8), config["seed"])

    def train(model):
        x, y = data.load_digits("train", device=device)
        per_epoch = -(-len(x) // config["batch_size"])
        step = {"n": 0}

        def loss_fn(model, xb, yb):
            epoch = step["n"] / per_epoch
            step["n"] += 1
            ramp = min(max((epoch - config["warmup"]) / config["ramp"], 0.0), 1.0)
            kappa = 1 - ramp * (1 - config["kappa_end"])
            return certify.ibp_loss(model, xb, yb, ramp * epsilon, kappa=kappa)

        torch.manual_seed(config["seed"])
        history = training.train_classifier(
            model,
            x,
            y,
            epochs=config["epochs"],
            lr=config["lr"],
            batch_size=config["batch_size"],
            loss_fn=loss_fn,
            generator=torch.Generator().manual_seed(config["seed"]),
            eval_data=data.load_digits("test", device=device),
            desc="interval bound propagation training",
        )
        return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}

    return load_or_train("digits-cnn-ibp", config, build, train, device=device)


# ------------------------------------------------------------------ derivation checks (notebook 11)
def linear_radius_check(radius_fn: Callable, weight, bias, x, y, *, tol: float = 1e-6) -> dict:
    """Does ``radius_fn(weight, bias, x, y)`` equal the LP's smallest adversarial L∞ budget (no box)?

    Returns ``{"max_error", "passes"}``; the LP (:func:`metaadv_edu.certify.linear_radius_lp`) is the
    independent answer."""
    out = torch.as_tensor(radius_fn(weight, bias, x, y), dtype=torch.float64).cpu()
    lp = certify.linear_radius_lp(weight, bias, x, y)
    error = float((out - lp).abs().max()) if out.shape == lp.shape else float("inf")
    return {"max_error": error, "passes": error <= tol}


def interval_soundness_check(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float,
    *,
    layer_rule=certify.interval_layer,
    n_samples: int = 400,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> dict:
    r"""Is ``layer_rule`` exact on every layer, and do its bounds contain sampled outputs?

    Two independent tests (notebook 11, §3). *Layer by layer*: a ReLU, MaxPool2d or Flatten layer is
    monotone in every input, so its exact bounds are (layer(lower), layer(upper)); for each Linear or
    Conv2d layer, the box
    (μ, r) entering it must leave as centre ``layer(μ)`` and radius :math:`|J|\,r`, where J is the layer's
    Jacobian, read off the layer's own forward pass on unit vectors (an affine layer's image of a box has
    exactly that half-width; interval bounds are loose only across layers, so this test catches rules that
    are slightly too tight or too loose, which sampling of the whole network never could). *End to end*:
    sampled corners and uniform points of the ε-ball (clamped to [0, 1]) must give logits within the final
    bounds. Returns ``{"layer_error": largest |rule − exact| over the layers' bounds (centres and radii for
    the affine layers)
    — passes when ≤ ``tol``, room for float32 rounding —, "outside": share of sampled logits outside the
    bounds, "passes"}``."""
    n_samples = v.integer("n_samples", n_samples, low=2)
    epsilon = v.nonnegative("epsilon", epsilon)
    lower, upper = (x - epsilon).clamp(0, 1), (x + epsilon).clamp(0, 1)
    layer_error = 0.0
    for layer in certify.flat_layers(model):
        with torch.no_grad():
            new_lower, new_upper = layer_rule(layer, lower, upper)
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            mid, rad = (upper + lower) / 2, (upper - lower) / 2
            with torch.no_grad():  # an affine layer's Jacobian, column k: layer(e_k) − layer(0)
                basis = torch.eye(mid[0].numel(), dtype=mid.dtype, device=mid.device).reshape(-1, *mid.shape[1:])
                jac = (layer(basis) - layer(torch.zeros_like(basis[:1]))).flatten(1).T.abs()
            exact_rad = (rad.flatten(1) @ jac.T).reshape(new_lower.shape)
            with torch.no_grad():
                exact_mid = layer(mid)
            error = max(
                float(((new_upper + new_lower) / 2 - exact_mid).abs().max()),
                float(((new_upper - new_lower) / 2 - exact_rad).abs().max()),
            )
            layer_error = max(layer_error, error) if error == error else math.inf  # NaN fails
        elif isinstance(layer, (nn.ReLU, nn.MaxPool2d, nn.Flatten)):
            with torch.no_grad():  # monotone in every input: the exact bounds are the layer at the corners
                exact_lower, exact_upper = layer(lower), layer(upper)
            error = max(float((new_lower - exact_lower).abs().max()), float((new_upper - exact_upper).abs().max()))
            layer_error = max(layer_error, error) if error == error else math.inf
        lower, upper = new_lower.detach(), new_upper.detach()
    outside, total = 0, 0
    with torch.no_grad():
        for i in range(n_samples):
            u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            noise = (2 * (u > 0.5).to(x.dtype) - 1) if i % 2 else 2 * u - 1
            z = model((x + epsilon * noise).clamp(0, 1))
            outside += int(((z < lower - 1e-5) | (z > upper + 1e-5)).sum())
            total += z.numel()
    return {"layer_error": layer_error, "outside": outside / total, "passes": outside == 0 and layer_error <= tol}


def smoothing_radius_check(
    radius_fn: Callable,
    *,
    sigmas: Sequence[float] = (0.5, 2.0),
    n: int = 20_000,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
) -> dict:
    r"""Check a smoothing radius ``radius_fn(p, sigma)`` on binary linear classifiers, where Theorem 1 is tight.

    For f(x) = [wᵀx + b > 0] the smoothed classifier equals f, so its exact certified L2 radius at x is the
    distance to the boundary, :math:`d = |w^\top x + b| / \|w\|_2`, and the exact
    :math:`p_A = \Phi(d/\sigma)`. The radius from that p_A must be *sound*, R ≤ d + ``tol``·σ, and *tight*,
    R ≥ d − ``tol``·σ, at points σ/2 … 3σ/2 from the boundary (4 random classifiers in 10 dimensions per
    σ), at every σ in ``sigmas`` (at least two distinct values, so that a radius off by a power of σ fails
    at one of them). It must also *abstain*: a lower bound p ≤ ½ (here 0.3 and 0.5) certifies nothing,
    radius 0. Monte Carlo with ``n`` noisy copies confirms the reference d, independently of ``radius_fn``:
    the smoothed classifier keeps its answer at 0.8·d towards the boundary and changes it at 1.2·d.
    Returns ``{"max_error": largest |R − d| / σ, "sound", "tight", "abstains", "monte_carlo", "passes"}``."""
    sigmas = [v.positive("sigmas", s) for s in sigmas]
    if len(set(sigmas)) < 2:
        raise ValueError(f"sigmas must hold at least two distinct noise levels, got {sigmas}")
    n = v.integer("n", n, low=100)
    tol = v.positive("tol", tol)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    sound, tight, monte_carlo, max_error = True, True, True, 0.0
    abstains = all(float(np.asarray(radius_fn(p, s))) == 0.0 for s in sigmas for p in (0.3, 0.5))

    for sigma in sigmas:

        def top_share(point, w, b, positive, sigma=sigma):
            noisy = point + sigma * torch.randn((n, len(point)), generator=g, dtype=torch.float64)
            return float(((noisy @ w + b > 0) == positive).double().mean())

        for _ in range(4):
            w = torch.randn(10, generator=g, dtype=torch.float64)
            b = float(torch.randn((), generator=g, dtype=torch.float64))
            x = torch.randn(10, generator=g, dtype=torch.float64)
            x = x - (x @ w + b) / (w @ w) * w  # onto the boundary, then a distance in [σ/2, 3σ/2] off it
            side = 1.0 if float(torch.rand((), generator=g)) > 0.5 else -1.0
            x = x + side * sigma * (0.5 + float(torch.rand((), generator=g, dtype=torch.float64))) * w / w.norm()
            score = float(x @ w + b)
            distance = abs(score) / float(w.norm())
            radius = float(np.asarray(radius_fn(float(scipy_stats.norm.cdf(distance / sigma)), sigma)))
            error = (radius - distance) / sigma
            max_error = max(max_error, abs(error)) if error == error else math.inf  # NaN fails
            sound &= error <= tol
            tight &= error >= -tol
            towards = -np.sign(score) * w / w.norm()
            args = (w, b, score > 0)
            monte_carlo &= top_share(x + 0.8 * distance * towards, *args) > 0.5
            monte_carlo &= top_share(x + 1.2 * distance * towards, *args) < 0.5
    sound, tight = sound and max_error < math.inf, tight and max_error < math.inf
    return {
        "max_error": max_error,
        "sound": sound,
        "tight": tight,
        "abstains": abstains,
        "monte_carlo": monte_carlo,
        "passes": sound and tight and abstains and monte_carlo,
    }


# ------------------------------------------------------------------ attack sweeps (§1, §3)
def _correct(model, x, y) -> np.ndarray:
    with torch.no_grad():
        return (model(x).argmax(1) == y).cpu().numpy().astype(float)


def pgd_run(
    model, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, steps: int = 10, restarts: int = 1, seed: int = 0
):
    """PGD as notebook 11 runs it: ``steps`` steps of 2.5ε/``steps`` from a random start drawn with ``seed``,
    keeping per example the worst of ``restarts`` runs (at ε = 0 the step is 0.01, and the ball is a point).
    Returns the adversarial inputs."""
    epsilon = v.nonnegative("epsilon", epsilon)
    steps = v.integer("steps", steps, low=1)
    return attacks.pgd(
        model,
        x,
        y,
        epsilon,
        step_size=2.5 * epsilon / steps if epsilon else 0.01,
        steps=steps,
        restarts=restarts,
        generator=torch.Generator().manual_seed(seed),
    )


def masking_sweep(
    model: nn.Module,
    defended: nn.Module,
    through: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: Sequence[float],
    *,
    search_iterations: int = 150,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every attack of notebook 11, §1 on the quantising ``defended`` model, at each ε of ``epsilons``.

    ``model`` is the undefended network f inside the defence g = f ∘ q, ``through`` the defence's BPDA twin
    (:func:`metaadv_edu.masking.bpda`). The attacks: FGSM and PGD-10 on g, BPDA-PGD (3 restarts × 30 steps
    through ``through``), PGD-10 on f alone (its examples handed to g) and random search
    (:func:`metaadv_edu.masking.random_search`, ``search_iterations`` proposals). Returns
    ``({attack: correct}, undefended)``: ``correct[k, i]`` is 1.0 where g still classifies example i
    correctly under that attack at ``epsilons[k]``, and ``undefended`` the same for f under PGD-10. Each
    accuracy is an upper bound on the true robust accuracy.
    """
    epsilons = [v.nonnegative("epsilons", e) for e in epsilons]
    search_iterations = v.integer("search_iterations", search_iterations, low=1)
    runs = {
        "FGSM": lambda e: attacks.fgsm(defended, x, y, e),
        "PGD-10": lambda e: pgd_run(defended, x, y, e),
        "BPDA-PGD (3 × 30)": lambda e: pgd_run(through, x, y, e, steps=30, restarts=3, seed=1),
        "PGD on f alone (skips q)": lambda e: pgd_run(model, x, y, e),
        "random search": lambda e: masking.random_search(
            defended, x, y, e, iterations=search_iterations, generator=torch.Generator().manual_seed(0)
        ),
    }
    correct = {name: np.stack([_correct(defended, run(e), y) for e in epsilons]) for name, run in runs.items()}
    undefended = np.stack([_correct(model, pgd_run(model, x, y, e), y) for e in epsilons])
    return correct, undefended


def certify_and_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *, search_iterations: int = 150
) -> tuple[np.ndarray, np.ndarray]:
    """A lower and an upper bound per example, at each ε of ``epsilons`` (notebook 11, §3).

    Returns boolean arrays ``(certified, survives)`` of shape (len(epsilons), len(x)): ``certified[k, i]``
    when interval bounds prove example i right over the whole ε-ball
    (:func:`metaadv_edu.certify.certified_by_intervals`), ``survives[k, i]`` when the model is still right
    under every attack tried — PGD-10, PGD with 3 restarts × 20 steps and random search with
    ``search_iterations`` proposals (per example, the worst case). A certified example always survives.
    """
    epsilons = [v.nonnegative("epsilons", e) for e in epsilons]
    search_iterations = v.integer("search_iterations", search_iterations, low=1)

    def survives(e: float) -> np.ndarray:
        if e == 0:
            return _correct(model, x, y) > 0
        runs = [
            pgd_run(model, x, y, e),
            pgd_run(model, x, y, e, steps=20, restarts=3, seed=1),
            masking.random_search(
                model, x, y, e, iterations=search_iterations, generator=torch.Generator().manual_seed(0)
            ),
        ]
        return np.minimum.reduce([_correct(model, adv, y) for adv in runs]) > 0

    certified = np.stack([certify.certified_by_intervals(model, x, y, e).cpu().numpy() for e in epsilons])
    return certified, np.stack([survives(e) for e in epsilons])


# ------------------------------------------------------------------ evaluation checklist (§1)


def evaluation_checklist(
    model,
    attack_model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float = 0.1,
    tolerance: float = 0.05,
    restart_seeds: Sequence[int] = (1, 2),
    details: bool = False,
) -> dict:
    """Carlini et al.'s (2019) sanity checks for an evaluation of ``model`` attacked through ``attack_model``
    (the model whose gradients PGD follows: ``model`` itself, or its BPDA twin). True = the check passes.

    * the input gradient of ``attack_model``'s loss is finite and not identically zero;
    * PGD-10 (steps of ε/4) is clearly stronger than FGSM: the paired difference of per-example accuracy
      is resolved in PGD's favour (iterative attacks should beat single-step ones; a failure asks to look
      further, it is not by itself evidence of masking);
    * at ε = 1 (every image with pixels in [0, 1] is reachable) PGD-10 reaches 0 % accuracy;
    * two restarts of PGD-10 (the same attack from fresh random starts, seeds ``restart_seeds``; PGD-10
      itself uses seed 0) find no more than PGD-10: the
      digits broken by a restart but left intact by PGD-10 are fewer than ``tolerance`` of all digits (a
      converged attack's result should not change with more effort). The evidence is their count, an
      effect size and not a test: the per-digit worst case over PGD-10 and more runs can only break more
      digits, so no interval or sign test applies to it;
    * steps of ε/8 (20 of them) or ε/2 (10) find no more than steps of ε/4: the same share, each run from
      PGD-10's own random start, so that only the step size changes. A single other run can break digits
      that PGD-10 leaves intact *and* leave intact digits that PGD-10 breaks, so the evidence reads
      "b vs c, p = …" for each step size: b digits broken only by that run, c only by PGD-10, and the exact
      McNemar test of the two (:func:`metaadv_edu.stats.paired_binary`); the share b/n alone decides the row;
    * a gradient-free attack (:func:`metaadv_edu.masking.random_search`, 150 proposals) is not stronger than
      PGD-10: the paired difference of per-example accuracy is not resolved in its favour.

    Returns ``{check: passes}``; with ``details=True``, ``{check: (passes, evidence)}``, where the evidence
    is the number the check rests on (a paired difference of accuracy with its 95 % half-width, a count of
    digits out of all n, two opposite counts with their McNemar p-value, or an accuracy or gradient size).
    """
    epsilon = v.positive("epsilon", epsilon)
    tolerance = v.positive("tolerance", tolerance)
    restart_seeds = [v.integer("restart_seeds", seed) for seed in restart_seeds]
    if not restart_seeds or 0 in restart_seeds:
        raise ValueError(f"restart_seeds must be non-empty and avoid PGD-10's seed 0, got {restart_seeds}")

    def pgd(eps, step_size, steps, seed):
        gen = torch.Generator().manual_seed(seed)
        adv = attacks.pgd(attack_model, x, y, eps, step_size=step_size, steps=steps, generator=gen)
        return _correct(model, adv, y)

    gradient, _ = attacks.input_gradient(attack_model, x, y)
    base = pgd(epsilon, epsilon / 4, 10, 0)
    single = _correct(model, attacks.fgsm(attack_model, x, y, epsilon), y)
    pgd_vs_fgsm = stats.paired_difference(base, single)
    restarts = [pgd(epsilon, epsilon / 4, 10, seed) for seed in restart_seeds]  # same attack, fresh starts
    small = pgd(epsilon, epsilon / 8, 20, 0)  # same start as PGD-10: only the step size changes
    half = pgd(epsilon, epsilon / 2, 10, 0)

    def finds_no_more(*others) -> tuple[bool, int]:
        worst = np.minimum.reduce([base, *others])  # per example: broken by PGD-10 or by the other attacks
        k = int((worst < base).sum())  # broken only by the extra effort: a count, one-sided by construction
        return k / len(base) < tolerance, k

    def versus_base(other, label: str) -> tuple[bool, str]:
        passes, _ = finds_no_more(other)
        both_ways = stats.paired_binary(base > other, other > base)  # a single run can differ both ways
        return passes, f"{label}: {both_ways.a_only} vs {both_ways.b_only}, p = {both_ways.p_value:.2f}"

    search = masking.random_search(model, x, y, epsilon, iterations=150, generator=torch.Generator().manual_seed(0))
    black = _correct(model, search, y)
    black_vs_white = stats.paired_difference(black, base)
    at_one = pgd(1.0, 0.25, 10, 0).mean()
    restarts_ok, restarts_gain = finds_no_more(*restarts)
    (small_ok, small_gain), (large_ok, large_gain) = versus_base(small, "ε/8"), versus_base(half, "ε/2")
    out = {
        "input gradient not identically zero": (
            bool(torch.isfinite(gradient).all() and (gradient != 0).any()),
            f"max |∇| = {float(gradient.abs().max()):.1e}",
        ),
        "PGD-10 clearly stronger than FGSM": (
            bool(pgd_vs_fgsm.resolved and pgd_vs_fgsm.mean < 0),
            pgd_vs_fgsm.format(2, percent=True),
        ),
        "accuracy at ε = 1 is 0": (bool(at_one == 0), f"{at_one:.1%}"),
        "2 restarts of PGD-10 break no more than one run": (restarts_ok, f"{restarts_gain}/{len(base)}"),
        "steps ε/8 (×20) or ε/2 (×10) break no more than ε/4": (
            small_ok and large_ok,
            f"{small_gain}; {large_gain}",
        ),
        "random search not stronger than PGD-10": (
            not (black_vs_white.resolved and black_vs_white.mean < 0),
            black_vs_white.format(2, percent=True),
        ),
    }
    return out if details else {name: passes for name, (passes, _) in out.items()}


# ------------------------------------------------------------------ explorer
def bounds_explorer(
    epsilons: Sequence[float],
    attacked_correct: np.ndarray,
    certified: np.ndarray,
    x_show: torch.Tensor,
    y_show: torch.Tensor,
    masked_epsilons: Sequence[float],
    masked_curves: dict[str, Sequence[float]],
    smoothing: dict[float, tuple[np.ndarray, np.ndarray]],
    *,
    n_gap_shown: int = 6,
) -> Explorer:
    """ε, σ and the attack on the masked defence → three precomputed panels and the examples in the gap.

    ``attacked_correct[k, i]`` / ``certified[k, i]``: example i is still right under the attack / is
    certified at ``epsilons[k]``; ``masked_curves[name][k]``: the quantising defence's accuracy under
    attack ``name`` at ``masked_epsilons[k]``; ``smoothing[σ] = (radii, correct)`` per example. A move only
    indexes and thresholds.
    """
    eps = np.asarray(epsilons, dtype=float)
    masked_eps = np.asarray(masked_epsilons, dtype=float)
    upper, lower = attacked_correct.mean(1), certified.mean(1)
    names = list(masked_curves)
    sigmas = sorted(smoothing)
    images = x_show.detach().cpu().float().mean(1).numpy()  # (N, H, W), channels averaged for display
    side = images.shape[-1]
    max_r = max(float(r[c].max()) if c.any() else 0.0 for r, c in smoothing.values())
    r_grid = np.linspace(0, max(max_r, 1e-3) * 1.05, 60)
    art: dict = {}

    def setup(fig):
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.3, 1])
        axes = top.subplots(1, 3, sharey=True)  # few tick labels: text is most of a redraw's cost
        ax = axes[0]
        ax.plot(eps, upper, **series(1).line(ms=4), label="attack (upper bound)")
        ax.plot(eps, lower, **series(0).line(ms=4), label="certified (lower bound)")
        ax.fill_between(eps, lower, upper, color=PALETTE["purple"], alpha=0.25, hatch="..", label="unknown")
        art["vline"] = [a.axvline(0, color=PALETTE["black"], lw=0.8, animated=True) for a in axes[:2]]
        ax.set(xlabel="ε (L∞)", ylabel="test accuracy", ylim=(0, 1), title="interval-trained CNN")
        ax.legend()
        art["masked"] = {
            n: axes[1].plot(masked_eps, masked_curves[n], **series(j).line(ms=4), label=n, animated=True)[0]
            for j, n in enumerate(names)
        }
        axes[1].set(xlabel="ε (L∞)", ylim=(0, 1), title="quantising defence")
        axes[1].legend(loc="lower left")  # the curves start near 1: the lower left is empty
        art["smooth"] = {
            s: axes[2].plot(
                r_grid,
                [(c & (r >= t)).mean() for t in r_grid],
                **series(j).line(markevery=6),
                label=f"σ = {s:g}",
                animated=True,
            )[0]
            for j, (s, (r, c)) in enumerate(smoothing.items())
        }
        axes[2].set(xlabel="L2 radius", ylim=(0, 1), title="randomized smoothing (certified)")
        axes[2].legend()
        for a in axes:
            a.grid(alpha=0.3)
            a.set_yticks([0, 0.5, 1])
            a.xaxis.set_major_locator(MaxNLocator(4))
        strip = bottom.subplots()  # one image strip: one axes instead of one per digit (faster redraws)
        art["strip"] = strip.imshow(
            np.zeros((side, n_gap_shown * (side + 1))), cmap="gray", vmin=0, vmax=1, animated=True
        )
        strip.set_axis_off()
        strip.title.set_animated(True)
        art["strip_axes"] = strip

    def draw(fig, *, epsilon, sigma, attack):
        k = int(np.abs(eps - epsilon).argmin())
        m = int(np.abs(masked_eps - epsilon).argmin())
        for line in art["vline"]:
            line.set_xdata([epsilon, epsilon])
        for n, line in art["masked"].items():
            line.set_linewidth(2.8 if n == attack else 1.0)
            line.set_alpha(1.0 if n == attack else 0.4)
        for s, line in art["smooth"].items():
            line.set_linewidth(2.8 if s == sigma else 1.0)
            line.set_alpha(1.0 if s == sigma else 0.4)
        gap = np.flatnonzero(attacked_correct[k] & ~certified[k])
        shown = gap[:n_gap_shown]
        picture = np.zeros((side, n_gap_shown * (side + 1)))
        for j, i in enumerate(shown):
            picture[:, j * (side + 1) : j * (side + 1) + side] = images[i]
        art["strip"].set_data(picture)
        labels = ", ".join(str(int(y_show[i])) for i in shown)
        art["strip_axes"].set_title(f"in the gap at ε = {eps[k]:.3f} (labels {labels or '—'})")
        return (
            f"ε = {eps[k]:.3f} (nearest computed): attack leaves <b>{upper[k]:.1%}</b> right, "
            f"intervals certify <b>{lower[k]:.1%}</b>; "
            f"{len(gap)} test digits are in the gap (first {min(len(gap), n_gap_shown)} shown) · "
            f"quantising defence under {attack} at ε = {masked_eps[m]:.2f}: {masked_curves[attack][m]:.1%}"
        )

    step = float(np.diff(eps).min()) if len(eps) > 1 else 0.025  # the slider stops on the computed ε
    sliders = {
        "epsilon": float_slider(
            "ε — L∞ budget", float(eps[len(eps) // 2]), float(eps[0]), float(eps[-1]), step, readout_format=".3f"
        ),
        "sigma": selection_slider("σ — smoothing noise", sigmas, sigmas[0]),
        "attack": dropdown("attack on the defence", names),
    }
    # Only the ε lines, the highlighted curves and the image strip change: blitting redraws just those
    # over a background rendered once (tick labels and legends are most of a full redraw's cost).
    return Explorer(draw, sliders, setup=setup, title="Upper and lower bounds", figsize=(9.5, 4.2), dpi=72, blit=True)
