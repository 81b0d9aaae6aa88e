"""Notebook 03 · GANs (library: :mod:`metaadv_edu.gan`): the ring and digits GANs, dynamics explorer, exercise."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import cache, data, gan, grading, models
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.widgets import Explorer, int_slider, selection_slider

__all__ = [
    "POINTS",
    "check_discriminator_loss",
    "check_gan_optimum",
    "density_figure",
    "digits_gan",
    "gan_dynamics_explorer",
    "generator_objectives_follow",
    "logit_gradients",
    "ring_gan",
    "ring_run_summary",
    "ring_seed_summary",
    "shifted_generator_gradients",
    "trained_discriminator_check",
    "value_maximiser_check",
    "value_on_grid",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"discriminator loss": 1, "D* and JSD": 2}


def ring_gan(lr_d: float = 1e-3, n_d: int = 1, device=None, *, steps: int = 1200, seed: int = 0):
    """A GAN on the 2-D ring of 8 Gaussians (notebook 03): MLP generator 8-128-128-2 and
    discriminator 2-128-128-1, Adam (lr_g = 1e-3), non-saturating loss, ``n_d`` discriminator steps per
    generator step (n_D). ``seed`` sets the initial weights,
    the noise and the data samples. Returns ``(ModuleDict(G, D), record)`` with the losses and 7 snapshots
    of 512 generated points."""

    device = as_device(device)
    config = {
        "lr_d": v.positive("lr_d", lr_d),
        "k_disc": v.integer("n_d", n_d),  # n_D; the key keeps its old name so the cached runs stay valid
        "lr_g": 1e-3,
        "steps": v.integer("steps", steps),
        "batch_size": 128,
        "noise_dim": 8,
        "seed": v.integer("seed", seed, low=0),
        "ring": [8, 2.0, 0.05],
    }
    ring = data.ring_mixture(*config["ring"])

    build = cache.seeded(
        lambda: nn.ModuleDict(
            {"G": models.mlp([8, 128, 128, 2], nn.ReLU), "D": models.mlp([2, 128, 128, 1], lambda: nn.LeakyReLU(0.2))}
        ),
        config["seed"],
    )

    def train(pair):
        h = gan.train_gan(
            pair["G"],
            pair["D"],
            lambda n, g: ring.sample(n, generator=g),
            noise_dim=config["noise_dim"],
            steps=config["steps"],
            n_d=config["k_disc"],
            lr_g=config["lr_g"],
            lr_d=config["lr_d"],
            batch_size=config["batch_size"],
            generator_rng=torch.Generator().manual_seed(config["seed"]),
            snapshot_every=config["steps"] // 6,
            desc=f"ring GAN (lr_D={lr_d:g}, n_D={n_d}, seed {config['seed']})",
        )
        return {
            "d_loss": h["d_loss"][::5],
            "g_loss": h["g_loss"][::5],
            "snapshot_steps": h["snapshot_steps"],
            "snapshots": h["snapshots"],
        }

    return load_or_train("ring-gan", config, build, train, device=device)


def digits_gan(device=None, *, steps: int = 3000):
    """A small fully connected GAN on the 8×8 digits (notebook 03): G 16-128-128-64 (sigmoid),
    D 64-128-1, non-saturating loss. Returns ``(ModuleDict(G, D), record)``."""

    device = as_device(device)
    config = {"steps": v.integer("steps", steps), "lr": 1e-3, "batch_size": 64, "noise_dim": 16, "seed": 0}
    x, _ = data.load_digits("train", device=device)
    flat = x.flatten(1)

    build = cache.seeded(
        lambda: nn.ModuleDict(
            {
                "G": models.mlp([16, 128, 128, 64], nn.ReLU, nn.Sigmoid()),
                "D": models.mlp([64, 128, 1], lambda: nn.LeakyReLU(0.2)),
            }
        ),
        config["seed"],
    )

    def train(pair):
        h = gan.train_gan(
            pair["G"],
            pair["D"],
            lambda n, g: flat[torch.randint(len(flat), (n,), generator=g).to(device)],
            noise_dim=config["noise_dim"],
            steps=config["steps"],
            lr_g=config["lr"],
            lr_d=config["lr"],
            batch_size=config["batch_size"],
            generator_rng=torch.Generator().manual_seed(config["seed"]),
            desc="digits GAN",
        )
        return {"d_loss": h["d_loss"][::10], "g_loss": h["g_loss"][::10]}

    return load_or_train("digits-gan", config, build, train, device=device)


def gan_dynamics_explorer(runs: dict[tuple[float, int], dict], ring) -> Explorer:
    """Cached 2-D GAN runs on a grid of discriminator learning rates × discriminator steps per
    generator step; a slider scrubs through the training snapshots. Nothing is trained."""
    lrs = sorted({lr for lr, _ in runs})
    n_ds = sorted({n_d for _, n_d in runs})
    n_snap = min(len(r["snapshots"]) for r in runs.values())
    means = ring.means.numpy()
    art: dict = {}

    def setup(fig):
        ax, ax_loss = fig.subplots(1, 2, width_ratios=[1, 1.3])
        ax.scatter(*means.T, s=300, facecolors="none", edgecolors=PALETTE["dark grey"], label="data modes")
        art["pts"] = ax.scatter([], [], s=4, color=series(1).color, alpha=0.5, label="generated")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 4)  # a band above the ring for the legend
        ax.set_aspect("equal")
        ax.set(xlabel="first coordinate", ylabel="second coordinate")
        ax.legend(loc="upper center", ncol=2)
        (art["d"],) = ax_loss.plot([], [], **series(0).line(lw=1, markevery=0.1, ms=4, label="discriminator loss"))
        (art["g"],) = ax_loss.plot([], [], **series(1).line(lw=1, markevery=0.1, ms=4, label="generator loss"))
        art["mark"] = ax_loss.axvline(0, color=PALETTE["grey"], ls="-.")
        log4 = ax_loss.axhline(np.log(4), color=PALETTE["black"], lw=0.8, ls=":", label="log 4 (D = ½ everywhere)")
        ax_loss.set_xlabel("generator step")
        ax_loss.set_ylabel("loss")
        ax_loss.set_ylim(0, 5)
        legend = ax_loss.legend()
        art["ax"], art["ax_loss"] = ax, ax_loss
        # What a move changes is animated: the samples, the loss curves, the snapshot's line, the title, and the
        # loss legend (its "best" place depends on the run's curves). The log 4 line and the loss panel's frame
        # are animated too, so that they stay drawn on top of the curves, as in a full render.
        for artist in (art["pts"], art["d"], art["g"], art["mark"], log4, ax.title, legend, *ax_loss.spines.values()):
            artist.set_animated(True)

    def draw(fig, *, lr_d, n_d, snapshot):
        run = runs[(lr_d, n_d)]
        pts = np.asarray(run["snapshots"][snapshot])
        art["pts"].set_offsets(pts)
        steps = np.arange(len(run["d_loss"])) * 5
        art["d"].set_data(steps, run["d_loss"])
        art["g"].set_data(steps, run["g_loss"])
        art["ax_loss"].set_xlim(0, steps[-1] + 5)
        step = run["snapshot_steps"][snapshot]
        art["mark"].set_xdata([step, step])
        covered, on_mode = gan.mode_coverage(pts, means)
        art["ax"].set_title(f"step {step}: {covered}/8 modes,\n{on_mode:.0%} of samples on a mode")
        return (
            f"lr_D = {lr_d:g}, n_D = {n_d} discriminator steps per generator step, after {step} steps: "
            f"<b>{covered} of 8</b> modes covered"
        )

    sliders = {
        "lr_d": selection_slider("discriminator (inner) lr", lrs),
        "n_d": selection_slider("n_D — D steps per G step", n_ds, n_ds[0]),
        "snapshot": int_slider("training snapshot", n_snap - 1, 0, n_snap - 1),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="GAN training dynamics (cached runs)",
        figsize=(10, 4),
        dpi=72,
        blit=True,
        # the loss axis' x limits (kept in the picture with its tick labels) follow the run's length
        blit_key=lambda lr_d, n_d, snapshot: len(runs[(lr_d, n_d)]["d_loss"]),
    )


def density_figure(
    x_grid: torch.Tensor, p: torch.Tensor, q: torch.Tensor, d_star: torch.Tensor, d_trained: torch.Tensor
):
    """Notebook 03 (a): left, the data density p and the generator's density q over x; right, the optimal
    discriminator D* = p/(p + q) and a trained one, as the probability each gives that x is real data. Every
    curve has its own colour, marker and line style (:func:`~metaadv_edu.plotting.series`). Returns the figure."""
    import matplotlib.pyplot as plt

    curves = {"x_grid": x_grid, "p": p, "q": q, "d_star": d_star, "d_trained": d_trained}
    arrays = {k: torch.as_tensor(c).detach().cpu().reshape(-1).numpy() for k, c in curves.items()}
    for name, values in arrays.items():
        if values.shape != arrays["x_grid"].shape:
            raise ValueError(
                f"{name} must hold one value per point of x_grid ({arrays['x_grid'].size}), got {values.size}"
            )
    x = arrays["x_grid"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    marks = {"lw": 1.8, "markevery": 0.08, "ms": 5}
    ax1.plot(x, arrays["p"], **series(0).line(label="p (data)", **marks))
    ax1.plot(x, arrays["q"], **series(1).line(label="q (generator)", **marks))
    ax1.set(xlim=(-4, 5), xlabel="x", ylabel="probability density", title="the two densities")
    ax1.legend()
    ax2.plot(x, arrays["d_star"], **series(6).line(linestyle="-", label="D* = p/(p+q)", **marks))
    ax2.plot(x, arrays["d_trained"], **series(2).line(label="trained D", **marks))
    ax2.set(xlim=(-4, 5), ylim=(-0.05, 1.05), xlabel="x", ylabel="D(x): P(x is real data)")
    ax2.set_title("the discriminator learns D*")
    ax2.legend()
    return fig


def _discriminator_loss_mistakes(real: torch.Tensor, fake: torch.Tensor, ref: torch.Tensor) -> list:
    """(value, hint) for the typical wrong discriminator losses on one case of the grader."""
    bce = F.binary_cross_entropy_with_logits
    real_bce, fake_bce = bce(real, torch.ones_like(real)), bce(fake, torch.zeros_like(fake))
    joint = bce(torch.cat([real, fake]), torch.cat([torch.ones_like(real), torch.zeros_like(fake)]))
    eps_log = -(torch.log(torch.sigmoid(real) + 1e-8).mean() + torch.log(1 - torch.sigmoid(fake) + 1e-8).mean())
    return [
        (-ref, "that is V(D, G) itself; the discriminator *maximises* V, so its loss is −V"),
        (gan.discriminator_loss(fake, real), "the labels are swapped: real samples are labelled 1, generated ones 0"),
        (
            -(F.logsigmoid(real).sum() + F.logsigmoid(-fake).sum()),
            "average over each batch instead of summing",
        ),
        (
            (real_bce + fake_bce) / 2,
            "you halved the sum: −V is BCE(real, 1) + BCE(fake, 0), the two expectations added, not averaged",
        ),
        (
            joint,
            "BCE on the concatenated batch weighs each half by its size and halves the total: take the mean "
            "over the real batch and the mean over the generated batch separately, and add them",
        ),
        (
            eps_log,
            "log(σ(s) + 1e-8) caps each term at log(1e-8) ≈ −18.4, so confident mistakes cost too little: "
            "use F.logsigmoid(s) and F.logsigmoid(−s), exact for every logit",
        ),
    ]


def check_discriminator_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(real_logits, fake_logits) -> loss``: the discriminator's loss
    −E log D(x) − E log(1 − D(G(z))) with D = sigmoid(logit), as a scalar."""

    def body() -> str:
        for device in grading.devices():
            for seed, scale, n_fake in ((1, 5.0, 12), (0, 1.0, 16), (2, 30.0, 16), (3, 30.0, 10)):
                g = torch.Generator().manual_seed(seed)
                real = (scale * torch.randn(16, 1, generator=g)).to(device)
                fake = (scale * torch.randn(n_fake, 1, generator=g)).to(device)
                ref = gan.discriminator_loss(real, fake)
                out = grading.call(my_loss, real, fake)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise grading.Stop("return the loss as a single-number tensor (average over the batch)")
                value = out.detach().reshape(()).to(ref.dtype)
                if grading.close(value, ref, 1e-4):
                    continue
                if not torch.isfinite(value):
                    raise grading.Stop(
                        "the loss is not finite for confident logits: log(sigmoid(s)) underflows; "
                        "use F.logsigmoid or binary_cross_entropy_with_logits"
                    )
                grading.first_mistake(value, _discriminator_loss_mistakes(real, fake, ref), 1e-4)
                raise grading.Stop("not −E log D(x) − E log(1 − D(G(z)))")
        return "−E log D(x) − E log(1 − D(G(z))), stable for confident logits"

    return grading.run("discriminator loss", body)


def _density_pairs(device):
    grid = torch.linspace(-6, 6, 601, dtype=torch.float64)
    dx = float(grid[1] - grid[0])

    def normal(mu, sd):
        return torch.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * (2 * torch.pi) ** 0.5)

    def uniform(lo, hi):
        return ((grid >= lo) & (grid < hi)).double() / (hi - lo)

    for p, q in ((normal(-1, 1), normal(1.5, 0.7)), (normal(0, 1.5), uniform(0, 2)), (uniform(-4, -1), uniform(1, 3))):
        yield p.to(device), q.to(device), dx


def check_gan_optimum(my_optimum: Callable) -> bool:
    """Grade ``my_optimum(p_data, p_g, dx) -> (d_star, jsd, d_loss)`` for densities sampled on a uniform
    grid of spacing dx: the optimal discriminator on the grid, JSD(p_data ‖ p_g) in nats, and the
    discriminator's loss L_D = −∫p_data log D* − ∫p_g log(1 − D*) at D*."""

    def body() -> str:
        for device in grading.devices():
            for p, q, dx in _density_pairs(device):
                out = grading.call(my_optimum, p, q, dx)
                if not isinstance(out, tuple | list) or len(out) != 3:
                    raise grading.Stop("return three things: (d_star, jsd, d_loss)")
                both = (p + q) > 0
                ref_d = gan.optimal_discriminator(p, q)
                d_star = grading.tensor_like(out[0], ref_d, "d_star")
                if not torch.isfinite(d_star).all():
                    raise grading.Stop(
                        "d_star is NaN or infinite somewhere: where both densities are 0 any value in [0, 1] "
                        "is optimal (the package uses ½), but not NaN — guard the division p / (p + p_g)"
                    )
                if ((d_star < 0) | (d_star > 1)).any():
                    raise grading.Stop("d_star is a probability: every value must lie in [0, 1]")
                if not grading.close(d_star[both], ref_d[both]):
                    grading.first_mistake(
                        d_star[both],
                        [
                            (
                                (q / (p + q))[both],
                                "D* is the probability that x is *real*: the data density over the sum of both",
                            )
                        ],
                    )
                    raise grading.Stop("d_star is not the optimal discriminator at every grid point")
                ref_j = gan.js_divergence(p, q, dx)
                values = []
                for what, got in zip(("jsd", "d_loss"), out[1:]):
                    if not isinstance(got, torch.Tensor | float) or torch.as_tensor(got).numel() != 1:
                        raise grading.Stop(f"{what} should be a single number")
                    values.append(torch.as_tensor(got).detach().double().reshape(()).cpu())
                jsd, d_loss = values
                mass = float((p.sum() + q.sum()) * dx)  # 2 up to the grid's rounding
                ref_j = ref_j.double().cpu()
                ref_l = mass * torch.log(torch.tensor(2.0, dtype=torch.float64)) - 2 * ref_j  # log 4 − 2·JSD
                for value in values:
                    if torch.isnan(value):
                        raise grading.Stop(
                            "a NaN: where a density is 0 the term 0·log 0 counts as 0 — use "
                            "torch.xlogy(p, p / m), or keep only the points where p > 0"
                        )
                    if torch.isinf(value):
                        raise grading.Stop(
                            "infinite: where p_g ≪ p_data, 1 − D* rounds to 0 and its log to −∞; "
                            "write log(1 − D*) as the log of a ratio of densities instead"
                        )
                if not grading.close(jsd, ref_j, 1e-6):
                    grading.first_mistake(
                        jsd,
                        [
                            (
                                2 * ref_j,
                                "JSD averages the two KLs to the mixture m = (p + p_g)/2: ½KL(p‖m) + ½KL(p_g‖m)",
                            ),
                            (ref_j / dx, "integrate: multiply the sum over the grid by dx"),
                            (ref_j / torch.log(torch.tensor(2.0)).double(), "use natural logarithms (nats), not log2"),
                        ],
                        1e-6,
                    )
                    raise grading.Stop("jsd is not the Jensen–Shannon divergence of the two densities")
                if not grading.close(d_loss, ref_l, 1e-6):
                    grading.first_mistake(
                        d_loss,
                        [
                            (
                                ref_l / 2,
                                "that is half of L_D — the ½ that d2l puts in its discriminator loss "
                                "(the mean of the two BCE terms); the loss of eq. (1) is their sum",
                            ),
                            (-ref_l, "that is V(D*, G); the discriminator minimises −V"),
                            (ref_l / dx, "integrate: multiply the sum over the grid by dx"),
                            (
                                torch.log(torch.tensor(4.0, dtype=torch.float64)) - 2 * ref_j,
                                "that is log 4 − 2·JSD, the identity to compare with afterwards: compute "
                                "d_loss from D* itself (on a grid the two densities' mass is not exactly 2, "
                                "so the two numbers differ slightly)",
                            ),
                        ],
                        1e-6,
                    )
                    raise grading.Stop("d_loss is not −∫p log D* − ∫p_g log(1 − D*)")
        return "D* = p/(p + p_g), the JSD in nats and L_D(D*) = log 4 − 2·JSD, disjoint supports included"

    return grading.run("D* and JSD", body)


# ------------------------------------------------------------------ checks of §2–§4 (notebook 03, §5)
def value_on_grid(d: torch.Tensor, p: torch.Tensor, q: torch.Tensor, dx: float) -> float:
    """V(D, G) = ∫ p log D + q log(1 − D) dx for densities and a discriminator sampled on a uniform grid."""
    tiny = torch.finfo(d.dtype).tiny
    return float((p * torch.log(d.clamp_min(tiny)) + q * torch.log((1 - d).clamp_min(tiny))).sum() * dx)


def value_maximiser_check(
    d: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    dx: float,
    *,
    n_directions: int = 200,
    size: float = 0.05,
    generator: torch.Generator | None = None,
) -> dict:
    """Does the discriminator ``d`` (sampled on the grid) maximise V(·, G)? Without using the formula
    p/(p + q): ``n_directions`` random smooth perturbations d ± t·η (η a sum of a few random bumps, t up to
    ``size``, kept inside (0, 1)) must all lower V. Returns ``{"value", "best_perturbed", "passes"}``."""
    n_directions = v.integer("n_directions", n_directions)
    grid = torch.linspace(0, 1, len(d), dtype=d.dtype)
    value = value_on_grid(d, p, q, dx)
    best = -float("inf")
    for _ in range(n_directions):
        centres = torch.rand(4, generator=generator, dtype=d.dtype)
        widths = 0.02 + 0.2 * torch.rand(4, generator=generator, dtype=d.dtype)
        signs = torch.randn(4, generator=generator, dtype=d.dtype)
        eta = (signs[:, None] * torch.exp(-0.5 * ((grid[None] - centres[:, None]) / widths[:, None]) ** 2)).sum(0)
        eta = eta / eta.abs().max()
        t = size * float(torch.rand((), generator=generator, dtype=d.dtype))
        for sign in (1, -1):
            logit = torch.logit(d.clamp(1e-12, 1 - 1e-12)) + sign * t * eta * 4
            best = max(best, value_on_grid(torch.sigmoid(logit), p, q, dx))
    return {"value": value, "best_perturbed": best, "passes": best < value}


def shifted_generator_gradients(
    p_dist, q_dist, x_grid: torch.Tensor, *, h: float = 1e-3, generator_loss: Callable | None = None
) -> dict[str, float]:
    r"""Move the generator's density along θ, q_θ(x) = q(x − θ) (a generator x = G(z) + θ), and freeze the
    optimal discriminator D* = p/(p + q) of θ = 0, whose logit is s(x) = log p(x) − log q(x). Central
    differences at θ = 0 of

    * ``minimax``: E_{q_θ} ℓ_minimax(s) — the generator's side of V;
    * ``non_saturating``: E_{q_θ} ℓ_NS(s);
    * ``two_jsd``: 2·JSD(p‖q_θ), and ``kl_minus_two_jsd``: KL(q_θ‖p) − 2·JSD(p‖q_θ).

    ℓ is ``generator_loss(logits, kind)`` (default :func:`metaadv_edu.gan.generator_loss`), evaluated one
    grid point at a time, so the check tests the package's losses themselves, signs included.
    Goodfellow et al.: minimax ≈ two_jsd. Arjovsky & Bottou (2017, Thm 2.5): non_saturating ≈ kl_minus_two_jsd."""
    loss_fn = gan.generator_loss if generator_loss is None else generator_loss
    dx = float(x_grid[1] - x_grid[0])
    p = p_dist.density(x_grid)
    logits = torch.log(p) - torch.log(q_dist.density(x_grid))
    per_point = {
        kind: torch.func.vmap(lambda s, kind=kind: loss_fn(s.view(1, 1), kind))(logits)
        for kind in ("minimax", "non-saturating")
    }

    def at(theta):
        q = q_dist.density(x_grid - theta)
        return {
            "minimax": float((q * per_point["minimax"]).sum() * dx),
            "non_saturating": float((q * per_point["non-saturating"]).sum() * dx),
            "two_jsd": 2 * float(gan.js_divergence(p, q, dx)),
            "kl_minus_two_jsd": float(gan.kl_divergence(q, p, dx)) - 2 * float(gan.js_divergence(p, q, dx)),
        }

    plus, minus = at(h), at(-h)
    return {k: (plus[k] - minus[k]) / (2 * h) for k in plus}


def generator_objectives_follow(slopes: dict[str, float], tol: float = 1e-4) -> bool:
    """The verdict of notebook 03's check (d): the minimax slope equals that of 2·JSD, the non-saturating one
    that of KL(q‖p) − 2·JSD, and the latter differs from 2·JSD's (relative differences)."""

    def rel(a: str, b: str) -> float:
        return abs(slopes[a] - slopes[b]) / abs(slopes[b])

    return (
        rel("minimax", "two_jsd") < tol
        and rel("non_saturating", "kl_minus_two_jsd") < tol
        and rel("non_saturating", "two_jsd") > 0.5
    )


def logit_gradients(generator_loss: Callable | None = None, d_fakes=(0.5, 0.1, 1e-2, 1e-3)) -> list[dict]:
    r"""Notebook 03's check (c): the *signed* derivative of each generator loss with respect to the
    discriminator's logit s on a generated sample, at D(G(z)) = σ(s) = each of ``d_fakes``, by autograd.

    G minimises both losses, so both derivatives must be negative (lowering the loss raises D(G(z))):
    eq. (4) ∂/∂s log(1 − σ(s)) = −D and eq. (5) ∂/∂s (−log σ(s)) = −(1 − D). Returns one dict per D with
    ``d``, ``minimax``, ``non_saturating`` and ``ok`` (both equal to −D and −(1 − D) within 1e-6)."""
    loss_fn = gan.generator_loss if generator_loss is None else generator_loss
    rows = []
    for d in d_fakes:
        s = torch.tensor([[math.log(d / (1 - d))]], dtype=torch.float64, requires_grad=True)
        (g_mm,) = torch.autograd.grad(loss_fn(s, "minimax"), s)
        (g_ns,) = torch.autograd.grad(loss_fn(s, "non-saturating"), s)
        mm, ns = float(g_mm), float(g_ns)
        rows.append(
            {"d": d, "minimax": mm, "non_saturating": ns, "ok": abs(mm + d) < 1e-6 and abs(ns + (1 - d)) < 1e-6}
        )
    return rows


def trained_discriminator_check(
    d: torch.Tensor, d_star: torch.Tensor, p: torch.Tensor, q: torch.Tensor, dx: float, *, mass: float = 0.05
) -> dict:
    """Notebook 03's check (b) of a *trained* discriminator ``d`` on the grid: ``gap`` = max |d − D*| where
    the mixture (p + q)/2 exceeds ``mass``, ``shortfall`` = V(D*) − V(d) (≥ 0, since D* maximises V);
    ``passes`` when the gap is below 0.05 and the shortfall in [0, 0.01)."""
    where = (p + q) / 2 > mass
    gap = float((d - d_star)[where].abs().max())
    shortfall = value_on_grid(d_star, p, q, dx) - value_on_grid(d, p, q, dx)
    return {"gap": gap, "shortfall": shortfall, "passes": gap < 0.05 and 0 <= shortfall < 0.01}


def _modes_hit(points, means, radius: float = 0.3) -> frozenset:
    return gan.covered_modes(points, means, radius=radius)


def _verdict(final: int, share: float, n_modes: int) -> str:
    if share < 0.25:
        return "off the ring"
    if final == n_modes:
        return "all modes"
    if final <= n_modes // 2:
        return "collapsed"
    return "partial"


def ring_run_summary(runs: dict[tuple[float, int], dict], means) -> list[list]:
    """One row per cached ring run: lr_D, n_D, modes covered (:func:`metaadv_edu.gan.mode_coverage`) at each
    snapshot, the share of samples on a mode at the end, and a verdict read off those numbers (all modes /
    collapsed (≤ half the modes) / off the ring (< 25 % of samples on a mode) / partial), noting when a mode
    covered at one of the last four snapshots is no longer covered at the next."""
    rows = []
    for (lr, k), run in sorted(runs.items()):
        counts = [gan.mode_coverage(s, means) for s in run["snapshots"]]
        final, share = counts[-1]
        verdict = _verdict(final, share, len(means))
        if len(means) // 2 < final < len(means) and verdict == "partial":
            verdict = f"covers {final} of {len(means)} modes"
        elif verdict == "collapsed":
            verdict = f"collapsed onto {final} mode{'s' if final != 1 else ''}"
        elif verdict == "all modes":
            verdict = "covers all modes"
        else:
            verdict = "most samples off the ring's modes"
        late = [_modes_hit(s, means) for s in run["snapshots"][-4:]]
        if any(not a <= b for a, b in zip(late, late[1:])) and share >= 0.25:
            verdict += "; covered modes are lost between snapshots"
        rows.append([f"{lr:g}", k, " ".join(str(c) for c, _ in counts), f"{share:.0%}", verdict])
    return rows


def ring_seed_summary(runs: dict[tuple[float, int, int], dict], means) -> list[list]:
    """One row per setting (lr_D, n_D) over its seeds: the modes covered at the end by each seed, the share
    of samples on a mode by each seed, and how many seeds end in each verdict (all modes / partial /
    collapsed / off the ring, as in :func:`ring_run_summary`)."""
    settings = sorted({(lr, k) for lr, k, _ in runs})
    rows = []
    for lr, k in settings:
        seeds = sorted(seed for a, b, seed in runs if (a, b) == (lr, k))
        finals = [gan.mode_coverage(runs[(lr, k, seed)]["snapshots"][-1], means) for seed in seeds]
        verdicts = [_verdict(c, share, len(means)) for c, share in finals]
        tally = ", ".join(f"{name} {verdicts.count(name)}" for name in dict.fromkeys(verdicts))
        rows.append(
            [
                f"{lr:g}",
                k,
                " / ".join(str(c) for c, _ in finals),
                " / ".join(f"{share:.0%}" for _, share in finals),
                f"{tally} (of {len(seeds)})",
            ]
        )
    return rows
