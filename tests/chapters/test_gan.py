"""Notebook 03 · GANs: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import data, gan
from metaadv_edu.chapters import gan as chapter
from tests.wrong import rejects


def _bce(logits, target):
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, target)


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda r, f: -(F.logsigmoid(r).mean() + F.logsigmoid(-f).mean()), True, "stable"),
        (lambda r, f: F.logsigmoid(r).mean() + F.logsigmoid(-f).mean(), False, "−V"),
        (lambda r, f: -(F.logsigmoid(f).mean() + F.logsigmoid(-r).mean()), False, "swapped"),
        (
            lambda r, f: -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean()),
            False,
            "not finite",
        ),
        (lambda r, f: -(F.logsigmoid(r).sum() + F.logsigmoid(-f).sum()), False, "average"),
        (lambda r, f: (_bce(r, 1) + _bce(f, 0)) / 2, False, "halved the sum"),
        (
            lambda r, f: _bce(torch.cat([r, f]), torch.cat([torch.ones_like(r), torch.zeros_like(f)])),
            False,
            "concatenated",
        ),
        (
            lambda r, f: -(torch.log(torch.sigmoid(r) + 1e-8).mean() + torch.log(1 - torch.sigmoid(f) + 1e-8).mean()),
            False,
            "1e-8",
        ),
    ],
)
def test_check_discriminator_loss(fn, ok, hint, capsys):
    assert chapter.check_discriminator_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_gan_dynamics_explorer_scrubs_cached_runs():

    ring = data.ring_mixture(8, 2.0, 0.05)
    g = torch.Generator().manual_seed(0)
    n_losses = {1e-4: 10, 1e-3: 14}  # runs of two lengths: the loss axis' x limits change with lr_d
    runs = {
        (lr, k): {
            "d_loss": [1.0] * n_losses[lr],
            "g_loss": [2.0] * n_losses[lr],
            "snapshot_steps": [1, 25, 50],
            "snapshots": [ring.sample(64, generator=g).tolist() for _ in range(3)],
        }
        for lr in (1e-4, 1e-3)
        for k in (1, 5)
    }
    ex = chapter.gan_dynamics_explorer(runs, ring)
    images = {ex.image.value}
    assert ex.blit_error() == 0, "the first image (the one a stored notebook shows) matches a full render"
    for name, value in (("lr_d", 1e-4), ("n_d", 5), ("snapshot", 0), ("lr_d", 1e-3)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is what a full render draws"
        assert ex.figure.axes[1].get_xlim() == (0, 5 * n_losses[ex.values["lr_d"]])
    assert len(images) == 5 and "modes covered" in ex.caption.value


def _kl(p, q, dx):
    return torch.xlogy(p, p / torch.where(q > 0, q, torch.ones_like(q))).sum() * dx


def optimum(
    p,
    q,
    dx,
    *,
    half_kl=0.5,
    d2l=1.0,
    swap=False,
    naive=False,
    no_dx=False,
    one_minus=False,
    from_jsd=False,
    nan_d=False,
):
    m, total = (p + q) / 2, torch.where(p + q > 0, p + q, 1.0)
    d = torch.where(p + q > 0, (q if swap else p) / total, 0.5)  # any value is optimal where both vanish
    kl = (lambda a, c, dx: (a * torch.log(a / c)).sum() * dx) if naive else _kl
    jsd = half_kl * (kl(p, m, dx) + kl(q, m, dx))
    log_fake = torch.log(1 - d) if one_minus else torch.log(q / total)  # log(1 − D*) = log(p_g / (p + p_g))
    d_loss = -(torch.xlogy(p, d).sum() + torch.where(q > 0, q * log_fake, 0.0).sum()) * (1 if no_dx else dx)
    if from_jsd:
        d_loss = math.log(4) - 2 * jsd
    if nan_d:  # the division left unguarded: 0/0 = NaN where both densities vanish (d_loss computed safely)
        d = p / (p + q)
    return d, jsd, d2l * d_loss


@pytest.mark.parametrize(
    "kwargs, ok, hint",
    [
        ({}, True, "log 4 − 2·JSD"),
        ({"swap": True}, False, "*real*"),
        ({"nan_d": True}, False, "not NaN"),
        ({"naive": True}, False, "0·log 0"),
        ({"half_kl": 1.0}, False, "averages the two KLs"),
        ({"d2l": 0.5}, False, "d2l"),
        ({"d2l": -1.0}, False, "V(D*, G)"),
        ({"no_dx": True}, False, "multiply the sum over the grid by dx"),
        ({"one_minus": True}, False, "rounds to 0"),
        ({"from_jsd": True}, False, "compute d_loss from D* itself"),
    ],
)
def test_check_gan_optimum(kwargs, ok, hint, capsys):
    assert chapter.check_gan_optimum(lambda p, q, dx: optimum(p, q, dx, **kwargs)) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_check_gan_optimum_names_bits_and_a_missing_output(capsys):
    ln2 = torch.log(torch.tensor(2.0, dtype=torch.float64))
    bits = lambda p, q, dx: (lambda d, j, lo: (d, j / ln2, lo))(*optimum(p, q, dx))  # noqa: E731
    assert chapter.check_gan_optimum(bits) is False
    assert "nats" in capsys.readouterr().out
    assert chapter.check_gan_optimum(lambda p, q, dx: optimum(p, q, dx)[:2]) is False
    assert "three things" in capsys.readouterr().out


def _densities():
    from metaadv_edu import gan

    x = torch.linspace(-8, 9, 20001, dtype=torch.float64)
    p_dist = data.GaussianMixture.one_d([0.0], [1.0])
    q_dist = data.GaussianMixture.one_d([1.5, -1.0], [0.7, 0.5], [0.7, 0.3])
    p, q = p_dist.density(x), q_dist.density(x)
    return x, float(x[1] - x[0]), p_dist, q_dist, p, q, gan.optimal_discriminator(p, q)


@rejects("gan_value_maximiser", "the labels swapped: q/(p + q) instead of p/(p + q)")
@rejects("gan_value_maximiser", "the likelihood ratio p/q (clipped) instead of p/(p + q)")
@pytest.mark.parametrize(
    "name, ok", [("D*", True), ("half", False), ("p/q", False), ("swapped", False), ("slightly off", False)]
)
def test_value_maximiser_check_rejects_a_wrong_optimal_discriminator(name, ok):
    _, dx, _, _, p, q, d_star = _densities()
    d = {
        "D*": d_star,
        "half": torch.full_like(d_star, 0.5),
        "p/q": (p / q).clamp(1e-12, 1 - 1e-12),
        "swapped": 1 - d_star,
        "slightly off": d_star**1.1,
    }[name]
    result = chapter.value_maximiser_check(d, p, q, dx, generator=torch.Generator().manual_seed(0))
    assert result["passes"] is ok


@rejects("gan_trained_discriminator", "a discriminator trained with the labels swapped (learns q/(p + q))")
def test_trained_discriminator_check_rejects_swapped_labels():
    _, dx, _, _, p, q, d_star = _densities()
    near = torch.sigmoid(torch.logit(d_star) + 0.02)  # a trained D: close to D*, slightly below its value
    assert chapter.trained_discriminator_check(near, d_star, p, q, dx)["passes"]
    swapped = chapter.trained_discriminator_check(1 - near, d_star, p, q, dx)
    assert not swapped["passes"] and swapped["gap"] > 0.05


def _sign_flipped_loss(fake_logits, kind="non-saturating"):
    return -gan.generator_loss(fake_logits, kind)


def _kinds_swapped_loss(fake_logits, kind="non-saturating"):
    return gan.generator_loss(fake_logits, "minimax" if kind == "non-saturating" else "non-saturating")


@rejects("gan_logit_gradients", "both generator losses with their sign flipped (G ascends its loss)")
@rejects("gan_logit_gradients", "the minimax and the non-saturating loss swapped")
def test_logit_gradients_check_the_direction_of_both_losses():
    assert all(row["ok"] for row in chapter.logit_gradients())
    assert not any(row["ok"] for row in chapter.logit_gradients(_sign_flipped_loss))
    assert not all(row["ok"] for row in chapter.logit_gradients(_kinds_swapped_loss))
    assert all(row["minimax"] < 0 and row["non_saturating"] < 0 for row in chapter.logit_gradients())


@rejects("gan_generator_objectives", "both generator losses with their sign flipped (G ascends its loss)")
@rejects("gan_generator_objectives", "the minimax and the non-saturating loss swapped")
def test_generator_objectives_check_uses_the_package_losses():
    x, _, p_dist, q_dist, *_ = _densities()
    assert chapter.generator_objectives_follow(chapter.shifted_generator_gradients(p_dist, q_dist, x))
    for wrong in (_sign_flipped_loss, _kinds_swapped_loss):
        slopes = chapter.shifted_generator_gradients(p_dist, q_dist, x, generator_loss=wrong)
        assert not chapter.generator_objectives_follow(slopes)


def test_non_saturating_gradient_is_not_that_of_the_jsd():
    x, _, p_dist, q_dist, *_ = _densities()
    s = chapter.shifted_generator_gradients(p_dist, q_dist, x)
    assert s["minimax"] == pytest.approx(s["two_jsd"], rel=1e-4)
    assert s["non_saturating"] == pytest.approx(s["kl_minus_two_jsd"], rel=1e-4)
    assert abs(s["non_saturating"] - s["two_jsd"]) > 0.5 * abs(s["two_jsd"])


def test_mode_coverage_counts_modes_by_their_share_of_samples():
    means = [[0.0, 0.0], [3.0, 0.0]]
    assert gan.mode_coverage([[0.1, 0.0], [0.0, 0.1], [9.0, 9.0]], means) == (1, pytest.approx(2 / 3))
    # one stray sample near the second mode among 100 is below a quarter of its fair share (12.5 %)
    points = [[0.0, 0.1]] * 99 + [[3.0, 0.1]]
    assert gan.mode_coverage(points, means) == (1, pytest.approx(1.0))
    assert gan.mode_coverage(points, means, min_share=0.01)[0] == 2
    with pytest.raises(ValueError, match="min_share"):
        gan.mode_coverage(points, means, min_share=2.0)


def test_ring_seed_summary_tallies_verdicts_over_seeds():
    means = [[2.0 * np.cos(a), 2.0 * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]
    everywhere = [m for m in means for _ in range(10)]
    one_mode = [means[0]] * 80
    runs = {
        (1e-3, 1, 0): {"snapshots": [everywhere]},
        (1e-3, 1, 1): {"snapshots": [one_mode]},
        (1e-3, 1, 2): {"snapshots": [everywhere]},
    }
    [row] = chapter.ring_seed_summary(runs, means)
    assert row[2] == "8 / 1 / 8" and row[4] == "all modes 2, collapsed 1 (of 3)"
