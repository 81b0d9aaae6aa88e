"""Notebook 03 · GANs: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import data
from metaadv_edu.chapters import gan as chapter


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
    ],
)
def test_check_discriminator_loss(fn, ok, hint, capsys):
    assert chapter.check_discriminator_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_gan_dynamics_explorer_scrubs_cached_runs():

    ring = data.ring_mixture(8, 2.0, 0.05)
    g = torch.Generator().manual_seed(0)
    runs = {
        (lr, k): {
            "d_loss": [1.0] * 10,
            "g_loss": [2.0] * 10,
            "snapshot_steps": [1, 25, 50],
            "snapshots": [ring.sample(64, generator=g).tolist() for _ in range(3)],
        }
        for lr in (1e-4, 1e-3)
        for k in (1, 5)
    }
    ex = chapter.gan_dynamics_explorer(runs, ring)
    images = {ex.image.value}
    for name, value in (("lr_d", 1e-4), ("k_disc", 5), ("snapshot", 0)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "modes covered" in ex.caption.value


def _kl(p, q, dx):
    return torch.xlogy(p, p / torch.where(q > 0, q, torch.ones_like(q))).sum() * dx


def optimum(p, q, dx, *, half_kl=0.5, d2l=1.0, swap=False, naive=False, no_dx=False, one_minus=False):
    m, total = (p + q) / 2, torch.where(p + q > 0, p + q, 1.0)
    d = torch.where(p + q > 0, (q if swap else p) / total, 0.5)  # any value is optimal where both vanish
    kl = (lambda a, c, dx: (a * torch.log(a / c)).sum() * dx) if naive else _kl
    jsd = half_kl * (kl(p, m, dx) + kl(q, m, dx))
    log_fake = torch.log(1 - d) if one_minus else torch.log(q / total)  # log(1 − D*) = log(p_g / (p + p_g))
    d_loss = -(torch.xlogy(p, d).sum() + torch.where(q > 0, q * log_fake, 0.0).sum()) * (1 if no_dx else dx)
    return d, jsd, d2l * d_loss


@pytest.mark.parametrize(
    "kwargs, ok, hint",
    [
        ({}, True, "log 4 − 2·JSD"),
        ({"swap": True}, False, "*real*"),
        ({"naive": True}, False, "0·log 0"),
        ({"half_kl": 1.0}, False, "averages the two KLs"),
        ({"d2l": 0.5}, False, "d2l"),
        ({"d2l": -1.0}, False, "V(D*, G)"),
        ({"no_dx": True}, False, "multiply the sum over the grid by dx"),
        ({"one_minus": True}, False, "rounds to 0"),
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


def test_non_saturating_gradient_is_not_that_of_the_jsd():
    x, _, p_dist, q_dist, *_ = _densities()
    s = chapter.shifted_generator_gradients(p_dist, q_dist, x)
    assert s["minimax"] == pytest.approx(s["two_jsd"], rel=1e-4)
    assert s["non_saturating"] == pytest.approx(s["kl_minus_two_jsd"], rel=1e-4)
    assert abs(s["non_saturating"] - s["two_jsd"]) > 0.5 * abs(s["two_jsd"])


def test_mode_coverage_counts_modes_and_share():
    means = [[0.0, 0.0], [3.0, 0.0]]
    assert chapter.mode_coverage([[0.1, 0.0], [0.0, 0.1], [9.0, 9.0]], means) == (1, pytest.approx(2 / 3))
