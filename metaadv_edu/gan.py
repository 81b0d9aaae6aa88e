r"""Generative adversarial networks (Goodfellow et al. 2014) and an adversarial generator.

Derived in ``notebooks/03_gan.ipynb`` and ``notebooks/04_adversarial_generator.ipynb``.

.. math:: \min_G\max_D V(D, G) = \mathbb{E}_{x\sim p}\log D(x) + \mathbb{E}_{z}\log(1 - D(G(z))),
          \qquad D^*(x) = \frac{p(x)}{p(x) + p_g(x)}, \qquad C(G) = -\log 4 + 2\,\mathrm{JSD}(p\,\|\,p_g).

Discriminators return **logits** s; D = σ(s). The losses use ``binary_cross_entropy_with_logits``,
which is exact where log D would underflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from metaadv_edu import _validate as v

__all__ = [
    "PerturbationGenerator",
    "adversarial_generator_losses",
    "covered_modes",
    "discriminator_loss",
    "generator_loss",
    "harden_with_generator",
    "js_divergence",
    "kl_divergence",
    "margin_loss",
    "mode_coverage",
    "optimal_discriminator",
    "train_adversarial_generator",
    "train_gan",
    "value_function",
]


# ------------------------------------------------------------------------------------ theory
def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    """D*(x) = p(x) / (p(x) + p_g(x)), elementwise; ½ where both densities are 0 (any value is optimal there)."""
    p_data, p_g = torch.as_tensor(p_data), torch.as_tensor(p_g)
    if p_data.shape != p_g.shape:
        raise ValueError(f"p_data and p_g must have the same shape, got {tuple(p_data.shape)} and {tuple(p_g.shape)}")
    if bool((p_data < 0).any()) or bool((p_g < 0).any()):
        raise ValueError("densities must be >= 0")
    total = p_data + p_g
    return torch.where(
        total > 0, p_data / torch.where(total > 0, total, torch.ones_like(total)), torch.full_like(total, 0.5)
    )


def _kl_on_grid(p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    ratio = torch.where(p > 0, p / torch.where(q > 0, q, torch.ones_like(q)), torch.ones_like(p))
    return (torch.where(p > 0, p * torch.log(ratio), torch.zeros_like(p))).sum() * dx


def kl_divergence(p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    """KL(p‖q) = ∫ p log(p/q) dx (nats) of two densities on a uniform grid of spacing ``dx``, with 0·log 0 = 0."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return _kl_on_grid(p, q, v.positive("dx", dx))


def js_divergence(p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    """Jensen–Shannon divergence (nats) of two densities sampled on a uniform grid of spacing ``dx``:
    ½KL(p‖m) + ½KL(q‖m), m = (p + q)/2, with 0·log 0 = 0."""
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    dx = v.positive("dx", dx)
    m = (p + q) / 2
    return 0.5 * _kl_on_grid(p, m, dx) + 0.5 * _kl_on_grid(q, m, dx)


def _near_counts(points, means, radius: float) -> tuple[np.ndarray, int]:
    """Samples within ``radius`` of each mode (the nearest one), and the number of samples."""
    pts, centres = np.asarray(points), np.asarray(means)
    if pts.ndim != 2 or centres.ndim != 2 or pts.shape[1] != centres.shape[1]:
        raise ValueError(f"points and means must be (n, d) and (m, d), got {pts.shape} and {centres.shape}")
    dist = np.linalg.norm(pts[:, None, :] - centres[None], axis=2)
    near = dist.min(1) < radius
    return np.bincount(dist.argmin(1)[near], minlength=len(centres)), len(pts)


def covered_modes(points, means, *, radius: float = 0.3, min_share: float | None = None) -> frozenset[int]:
    """The indices of the modes ``means`` that the samples ``points`` cover: at least ``min_share`` of all
    samples within ``radius`` of the mode's centre (default: a quarter of a fair share, 1/(4·number of
    modes) — 3.1 % for 8 modes), so that a few stray samples do not count as covering a mode (notebook 03)."""
    radius = v.positive("radius", radius)
    counts, n = _near_counts(points, means, radius)
    min_share = 0.25 / len(counts) if min_share is None else v.finite_number("min_share", min_share, low=0.0, high=1.0)
    return frozenset(np.flatnonzero(counts >= min_share * n).tolist())


def mode_coverage(points, means, *, radius: float = 0.3, min_share: float | None = None) -> tuple[int, float]:
    """(number of modes covered, as in :func:`covered_modes`; share of samples within ``radius`` of a mode)."""
    covered = covered_modes(points, means, radius=radius, min_share=min_share)
    counts, n = _near_counts(points, means, radius)
    return len(covered), float(counts.sum() / n)


def value_function(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Monte Carlo estimate of V(D, G) = E log D(x) + E log(1 − D(G(z))) from discriminator logits."""
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = −E log D(x) − E log(1 − D(G(z))) = −V(D, G): binary cross-entropy, real = 1, fake = 0."""
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(fake_logits: torch.Tensor, kind: str = "non-saturating") -> torch.Tensor:
    """``"minimax"``: E log(1 − D(G(z))) (minimised); ``"non-saturating"``: −E log D(G(z))."""
    v.choice("kind", kind, ("minimax", "non-saturating"))
    if kind == "minimax":
        return F.logsigmoid(-fake_logits).mean()
    return -F.logsigmoid(fake_logits).mean()


def train_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    sample_real: Callable[[int, torch.Generator], torch.Tensor],
    *,
    noise_dim: int,
    steps: int,
    n_d: int = 1,
    lr_g: float = 1e-3,
    lr_d: float = 1e-3,
    batch_size: int = 128,
    kind: str = "non-saturating",
    generator_rng: torch.Generator | None = None,
    snapshot_every: int = 0,
    snapshot_size: int = 512,
    progress: bool = True,
    desc: str = "GAN",
) -> dict:
    """Alternate ``n_d`` discriminator steps (n_D in notebook 03) and one generator step, with Adam (β₁ = 0.5).

    ``sample_real(n, rng)`` draws real data. Returns a history with both losses per step and, every
    ``snapshot_every`` steps, ``snapshot_size`` generated samples (lists, for caching).
    """
    steps = v.integer("steps", steps)
    n_d = v.integer("n_d", n_d)
    lr_g, lr_d = v.positive("lr_g", lr_g), v.positive("lr_d", lr_d)
    noise_dim = v.integer("noise_dim", noise_dim)
    v.choice("kind", kind, ("minimax", "non-saturating"))
    device = next(generator.parameters()).device
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.5, 0.999))
    rng = generator_rng
    fixed_noise = torch.randn(snapshot_size, noise_dim, generator=rng).to(device)
    history: dict = {"d_loss": [], "g_loss": [], "snapshot_steps": [], "snapshots": []}

    def noise(n):
        return torch.randn(n, noise_dim, generator=rng).to(device)

    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        for _ in range(n_d):
            real = sample_real(batch_size, rng).to(device)
            with torch.no_grad():
                fake = generator(noise(batch_size))
            d_loss = discriminator_loss(discriminator(real), discriminator(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        g_loss = generator_loss(discriminator(generator(noise(batch_size))), kind)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        history["d_loss"].append(float(d_loss.detach()))
        history["g_loss"].append(float(g_loss.detach()))
        if snapshot_every and (step % snapshot_every == 0 or step == steps - 1):
            with torch.no_grad():
                history["snapshot_steps"].append(step + 1)
                history["snapshots"].append(generator(fixed_noise).cpu().tolist())
    return history


# ------------------------------------------------------------------- the adversarial generator
class PerturbationGenerator(nn.Module):
    r"""G(x, z) = clip(x + ε·tanh(h(x, z)), 0, 1): a perturbation with ‖δ‖∞ ≤ ε by construction.

    ``h`` is a small MLP on the flattened input and ``noise_dim`` noise values. Since |tanh| < 1 the
    raw perturbation is strictly inside the ball, and clipping to [0, 1] only moves a pixel back
    towards its clean value, so the bound survives it.
    """

    def __init__(self, in_shape: tuple[int, ...], epsilon: float, *, noise_dim: int = 8, hidden: int = 256):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.epsilon = v.nonnegative("epsilon", epsilon)
        self.noise_dim = v.integer("noise_dim", noise_dim, low=0)
        n = math.prod(self.in_shape)
        self.net = nn.Sequential(
            nn.Linear(n + self.noise_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n)
        )

    def pre_activation(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The network's raw output h(x, z), shaped like ``x`` (before ε·tanh)."""
        if x.shape[1:] != self.in_shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        flat = x.flatten(1)
        if self.noise_dim:
            if z is None:
                z = torch.zeros(len(x), self.noise_dim, device=x.device, dtype=x.dtype)
            flat = torch.cat([flat, z], dim=1)
        return self.net(flat).view_as(x)

    def perturbation(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """ε·tanh(h(x, z)), strictly inside the ε-ball (before the clip to [0, 1])."""
        return self.epsilon * torch.tanh(self.pre_activation(x, z))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return (x + self.perturbation(x, z)).clamp(0, 1)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
    """AdvGAN's (Carlini–Wagner) untargeted loss: max(Z_y − max_{j≠y} Z_j, −κ), averaged over the batch.

    Lowering it pushes the true class's logit below the best other one; once the margin reaches −κ an
    example stops contributing (Xiao et al. 2018; notebooks 04 and 09).
    """
    kappa = v.nonnegative("kappa", kappa)
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return torch.clamp(true - other, min=-kappa).mean()


def adversarial_generator_losses(
    classifier: nn.Module,
    discriminator: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    gan_weight: float = 1.0,
    hinge_weight: float = 0.0,
    hinge_bound: float = 0.0,
) -> dict[str, torch.Tensor]:
    r"""The losses of one training step of the adversarial generator.

    * L_D = −E log D(x) − E log(1 − D(x_adv))  (x_adv held fixed)
    * L_G = L_adv + λ_GAN·(−E log D(x_adv)) + λ_hinge·E max(0, ‖x_adv − x‖₂ − c)

    L_adv is the margin loss that pushes f to misclassify x_adv (AdvGAN; Xiao et al. 2018).
    """
    d_loss = discriminator_loss(discriminator(x), discriminator(x_adv.detach()))
    adv = margin_loss(classifier(x_adv), y)
    gan = generator_loss(discriminator(x_adv), "non-saturating")
    hinge = torch.clamp((x_adv - x).flatten(1).norm(dim=1) - hinge_bound, min=0).mean()
    g_loss = adv + gan_weight * gan + hinge_weight * hinge
    return {"d_loss": d_loss, "g_loss": g_loss, "adv": adv, "gan": gan, "hinge": hinge}


def train_adversarial_generator(
    generator: PerturbationGenerator,
    discriminator: nn.Module,
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int,
    lr_g: float = 1e-3,
    lr_d: float = 1e-3,
    batch_size: int = 128,
    gan_weight: float = 0.03,
    rng: torch.Generator | None = None,
    progress: bool = True,
    train_classifier: bool = False,
    lr_f: float = 1e-3,
) -> dict:
    """Train G against a fixed classifier f (or, with ``train_classifier``, against an f that learns
    from G's examples at the same time — the defence loop) while D learns to spot G's outputs.

    The classifier's parameters are never updated unless ``train_classifier`` is set.
    """
    v.same_batch(x, y)
    steps = v.integer("steps", steps)
    lr_g, lr_d, lr_f = v.positive("lr_g", lr_g), v.positive("lr_d", lr_d), v.positive("lr_f", lr_f)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d)
    opt_f = torch.optim.Adam(classifier.parameters(), lr=lr_f) if train_classifier else None
    keys = ("d_loss", "g_loss", "adv", "fooled", "f_loss")
    history: dict = {k: [] for k in keys}
    for _ in tqdm(range(steps), desc="adversarial generator", disable=not progress, leave=False):
        idx = torch.randint(len(x), (batch_size,), generator=rng).to(x.device)
        xb, yb = x[idx], y[idx]
        z = torch.randn(batch_size, generator.noise_dim, generator=rng).to(x.device)
        x_adv = generator(xb, z)
        d_loss = discriminator_loss(discriminator(xb), discriminator(x_adv.detach()))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # the generator's loss uses the discriminator as it is after its step
        losses = adversarial_generator_losses(classifier, discriminator, xb, yb, x_adv, gan_weight=gan_weight)
        losses["d_loss"] = d_loss
        opt_g.zero_grad(set_to_none=True)
        flags = [p.requires_grad for p in classifier.parameters()]
        classifier.requires_grad_(False)
        losses["g_loss"].backward()
        for p, flag in zip(classifier.parameters(), flags):  # restore: a frozen target stays frozen
            p.requires_grad_(flag)
        opt_g.step()
        f_loss = torch.tensor(float("nan"))
        if opt_f is not None:
            f_loss = (F.cross_entropy(classifier(xb), yb) + F.cross_entropy(classifier(x_adv.detach()), yb)) / 2
            opt_f.zero_grad(set_to_none=True)
            f_loss.backward()
            opt_f.step()
        with torch.no_grad():
            fooled = (classifier(x_adv).argmax(1) != yb).float().mean()
        for k, val in zip(keys, (losses["d_loss"], losses["g_loss"], losses["adv"], fooled, f_loss)):
            history[k].append(float(val.detach()))
    for p in classifier.parameters():
        p.grad = None
    return history


def harden_with_generator(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    steps: int,
    rng: torch.Generator | None = None,
    progress: bool = True,
) -> dict:
    """The AI-vs-AI defence: a fresh generator and discriminator attack ``classifier`` while it
    trains on a mix of clean and generated examples. Returns the history."""
    gen = PerturbationGenerator(tuple(x.shape[1:]), epsilon).to(x.device)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(x.shape[1:]), 64), nn.LeakyReLU(0.2), nn.Linear(64, 1)).to(
        x.device
    )
    return train_adversarial_generator(
        gen, disc, classifier, x, y, steps=steps, rng=rng, progress=progress, train_classifier=True
    )
