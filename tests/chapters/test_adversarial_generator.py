"""Notebook 04 · Adversarial generator: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import data, models
from metaadv_edu.chapters import adversarial_generator as chapter
from tests.wrong import rejects


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda x, h, e: (x + e * torch.tanh(h)).clamp(0, 1), True, "the gradient ε·tanh′(h)"),
        (lambda x, h, e: (x + e * torch.tanh(h)).clamp(0, 1).detach(), False, "does not carry a gradient to h"),
        (
            lambda x, h, e: torch.from_numpy(np.clip(x.numpy() + e * np.tanh(h.detach().numpy()), 0, 1)),
            False,
            "does not carry a gradient to h",
        ),
        (
            lambda x, h, e: (x + e * torch.tanh(h)).clamp(0, 1).detach() + 0 * h,
            False,
            "gradient to h is not",
        ),
        (lambda x, h, e: x + e * torch.tanh(h), False, "clip the result"),
        (lambda x, h, e: (x + h.clamp(-e, e)).clamp(0, 1), False, "kills the gradient"),
        (lambda x, h, e: (x + torch.tanh(h)).clamp(0, 1), False, "scale the tanh"),
    ],
)
def test_check_bounded_perturbation(fn, ok, hint, capsys):
    assert chapter.check_bounded_perturbation(fn) is ok
    assert hint in capsys.readouterr().out


def test_generator_explorer_runs_forward_passes_only(device):
    from torch import nn

    from metaadv_edu import gan

    x, y = data.load_digits("test", device=device)
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=4).to(device)
    pairs = {
        (e, lr): nn.ModuleDict(
            {"G": gan.PerturbationGenerator((1, 8, 8), e), "D": nn.Sequential(nn.Flatten(), nn.Linear(64, 1))}
        ).to(device)
        for e in (0.1, 0.2)
        for lr in (1e-4, 1e-3)
    }
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in pairs.items()}
    ex = chapter.generator_explorer(pairs, f, x[:2], y[:2], x[:30], y[:30])
    images = {ex.image.value}
    assert ex.blit_error() == 0  # the first image: the one a stored notebook shows
    for name, value in (("epsilon", 0.1), ("lr_g", 1e-4)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is not what a full render draws"
    assert len(images) == 3 and "30 generated examples" in ex.caption.value
    assert set(ex.sliders) == {"epsilon", "lr_g"}
    for k, m in pairs.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters()))


def _margin(logits, y, *, floor=True, include_true=False, flip=False, zero_true=False):
    true = logits.gather(1, y[:, None])[:, 0]
    fill = 0.0 if zero_true else float("-inf")
    masked = logits if include_true else logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), fill)
    m = masked.amax(1) - true if flip else true - masked.amax(1)
    return (m.clamp(min=0) if floor else m).mean()


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda z, y, d, w: _margin(z, y) - w * F.logsigmoid(d).mean(), True, "stable"),
        (lambda z, y, d, w: _margin(z, y) - w * torch.log(torch.sigmoid(d) + 1e-8).mean(), False, "1e-8"),
        (lambda z, y, d, w: _margin(z, y) - w * torch.log(torch.sigmoid(d)).mean(), False, "not finite"),
        (lambda z, y, d, w: _margin(z, y) + w * F.logsigmoid(-d).mean(), False, "saturating"),
        (lambda z, y, d, w: _margin(z, y) + w * F.logsigmoid(d).mean(), False, "realism term has the wrong sign"),
        (lambda z, y, d, w: _margin(z, y, floor=False) - w * F.logsigmoid(d).mean(), False, "floor"),
        (lambda z, y, d, w: _margin(z, y, include_true=True) - w * F.logsigmoid(d).mean(), False, "*other* classes"),
        (lambda z, y, d, w: -F.cross_entropy(z, y) - w * F.logsigmoid(d).mean(), False, "Carlini–Wagner"),
        (lambda z, y, d, w: _margin(z, y, flip=True) - w * F.logsigmoid(d).mean(), False, "wrong sign"),
        (lambda z, y, d, w: _margin(z, y) - F.logsigmoid(d).mean(), False, "gan_weight"),
        (lambda z, y, d, w: (_margin(z, y) - w * F.logsigmoid(d).mean()).detach(), False, "gradient to logits"),
        (lambda z, y, d, w: _margin(z, y) - w * F.logsigmoid(d.detach()).mean(), False, "gradient to d_logits"),
        (lambda z, y, d, w: _margin(z, y, zero_true=True) - w * F.logsigmoid(d).mean(), False, "zeroing the true"),
    ],
)
def test_check_generator_loss(fn, ok, hint, capsys):
    assert chapter.check_generator_loss(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


@rejects("generator_budget", "a generator that scales its tanh by 2ε instead of ε")
def test_budget_check_rejects_a_generator_with_the_wrong_scale(device):
    from metaadv_edu import gan

    x, _ = data.load_digits("test", device=device)
    torch.manual_seed(0)
    right = gan.PerturbationGenerator((1, 8, 8), 0.1).to(device)
    with torch.no_grad():
        right.net[-1].bias.fill_(5.0)  # push tanh towards ±1: the bound is nearly active
    assert chapter.budget_holds(right, x, 0.1)[1]
    too_big = gan.PerturbationGenerator((1, 8, 8), 0.2).to(device)  # scales its tanh by 2ε
    too_big.load_state_dict(right.state_dict())
    worst, ok = chapter.budget_holds(too_big, x, 0.1)
    assert not ok and worst > 0.1


def test_generator_report_measures_noise_spread_and_fooling(device):
    from torch import nn

    from metaadv_edu import gan

    x, y = data.load_digits("test", device=device)
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=4).to(device)
    pair = nn.ModuleDict(
        {"G": gan.PerturbationGenerator((1, 8, 8), 0.2), "D": nn.Sequential(nn.Flatten(), nn.Linear(64, 1))}
    ).to(device)
    report = chapter.generator_report(pair, f, x[:50], y[:50], 0.2)
    assert report["z_spread"] > 0  # an untrained generator does use its noise
    with torch.no_grad():
        pair["G"].net[0].weight[:, 64:] = 0  # cut z off: the spread must vanish
    assert chapter.generator_report(pair, f, x[:50], y[:50], 0.2)["z_spread"] == 0
    assert all(0 <= report[k] <= 1 for k in ("fooled_generator", "fooled_random", "fooled_fgsm", "d_real", "d_fake"))


def test_saturation_report_sees_a_saturated_tanh_and_the_noise_it_erases():
    from metaadv_edu import gan

    x, _ = data.load_digits("test")
    torch.manual_seed(0)
    generator = gan.PerturbationGenerator((1, 8, 8), 0.2)
    calm = chapter.saturation_report(generator, x[:64])
    assert calm["tanh_above_0.9"] < 0.05 and calm["mean_tanh_slope"] > 0.9
    with torch.no_grad():
        generator.net[-1].weight.mul_(400.0)  # a huge pre-tanh scale: h is large everywhere
    hot = chapter.saturation_report(generator, x[:64])
    assert hot["tanh_above_0.9"] > 0.9 and hot["mean_tanh_slope"] < 0.1 and hot["zero_gradient"] > 0.3
    # the noise moves h more than before, but the saturated tanh moves less than h would suggest
    assert hot["h_spread_over_z"] > calm["h_spread_over_z"]
    assert hot["tanh_spread_over_z"] < 0.2 * hot["h_spread_over_z"]
    assert 0 <= hot["delta_above_0.9eps"] <= 1
    # the split by cause: three shares that sum to 1, the flat tanh showing up as such where nothing clips
    for r in (calm, hot):
        assert r["clip_active"] + r["tanh_flat"] + r["gradient_passes"] == pytest.approx(1.0)
    assert calm["gradient_passes"] > 0.5 and hot["tanh_flat"] > 0.3 and hot["gradient_passes"] < 0.1
    # on a mid-grey image nothing can leave [0, 1] at ε = 0.2: only the tanh can stop the gradient
    grey = chapter.saturation_report(generator, torch.full_like(x[:64], 0.5))
    assert grey["clip_active"] == 0 and grey["tanh_flat"] > 0.8
    # on a black image every pixel that the tanh pushes down is clipped, flat or not
    black = chapter.saturation_report(generator, torch.zeros_like(x[:64]))
    assert black["clip_active"] > 0.3
    with pytest.raises(ValueError, match="n_draws"):
        chapter.saturation_report(generator, x[:4], n_draws=1)
    with pytest.raises(ValueError, match="flat_slope"):
        chapter.saturation_report(generator, x[:4], flat_slope=0.0)


def test_fooled_by_is_per_example_and_seeded():
    from metaadv_edu import gan

    x, y = data.load_digits("test")
    torch.manual_seed(0)
    generator = gan.PerturbationGenerator((1, 8, 8), 0.3)
    f = models.TinyCNN(1, 10, width=4)
    a = chapter.fooled_by(generator, f, x[:40], y[:40], seed=1)
    assert a.shape == (40,) and a.dtype == torch.bool
    assert torch.equal(a, chapter.fooled_by(generator, f, x[:40], y[:40], seed=1))
    with torch.no_grad():
        expected = (
            f(generator(x[:40], torch.randn(40, 8, generator=torch.Generator().manual_seed(1)))).argmax(1) != y[:40]
        )
    assert torch.equal(a, expected)


def test_adversarial_generator_rejects_an_unknown_target():
    with pytest.raises(ValueError, match="target"):
        chapter.adversarial_generator(0.2, 1e-3, "cpu", target="robust")


def test_generator_report_pairs_the_generator_with_random_signs_and_counts_decisions_that_move_with_z():
    from torch import nn

    from metaadv_edu import gan

    x, y = data.load_digits("test")
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=4)
    pair = nn.ModuleDict(
        {"G": gan.PerturbationGenerator((1, 8, 8), 0.3), "D": nn.Sequential(nn.Flatten(), nn.Linear(64, 1))}
    )
    report = chapter.generator_report(pair, f, x[:60], y[:60], 0.3)
    paired = report["generator_minus_random"]
    assert paired.n == 60
    assert paired.mean == pytest.approx(report["fooled_generator"] - report["fooled_random"])
    vs_fgsm = report["fgsm_minus_generator"]
    assert vs_fgsm.n == 60 and vs_fgsm.mean == pytest.approx(report["fooled_fgsm"] - report["fooled_generator"])
    assert 0 <= report["decision_changes_over_z"] <= 1
    with torch.no_grad():
        pair["G"].net[0].weight[:, 64:] = 0  # cut z off: no decision can move with the noise
    assert chapter.generator_report(pair, f, x[:60], y[:60], 0.3)["decision_changes_over_z"] == 0


def test_frozen_wrong_sign_finds_the_saturated_pixels_that_push_against_the_gradient():
    from metaadv_edu import gan

    x, y = data.load_digits("test")
    x, y = x[:80], y[:80]
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=4)
    generator = gan.PerturbationGenerator((1, 8, 8), 0.2)
    calm = chapter.frozen_wrong_sign(generator, f, x, y)
    assert calm["frozen"] == 0 and calm["frozen_wrong"] == 0  # an untrained tanh is nowhere flat
    assert torch.equal(calm["fooled_before"], calm["fooled_after"])  # nothing to flip
    assert torch.equal(calm["fooled_before"], chapter.fooled_by(generator, f, x, y, seed=0))
    with torch.no_grad():
        generator.net[-1].weight.mul_(400.0)  # saturate the tanh: h is large almost everywhere
    hot = chapter.frozen_wrong_sign(generator, f, x, y)
    assert hot["frozen"] > 0.3 and 0 < hot["frozen_wrong"] <= hot["frozen"]
    # the agreeing and the wrong pixels split the frozen ones (the gradient is nowhere exactly 0 here)
    assert hot["frozen_wrong"] == pytest.approx(hot["frozen"] * (1 - hot["frozen_agree"]), abs=1e-6)
    # on this example, turning the wrong-sign frozen pixels to FGSM's sign fools f at least as often
    assert hot["fooled_after"].float().mean() >= hot["fooled_before"].float().mean()
    with pytest.raises(ValueError, match="flat_slope"):
        chapter.frozen_wrong_sign(generator, f, x, y, flat_slope=1.5)


class _FixedSignGenerator:
    """A stand-in generator whose h is ``big`` (tanh saturated) on ``frozen`` pixels and ``small`` elsewhere."""

    noise_dim = 2
    epsilon = 0.1

    def __init__(self, frozen_sign: torch.Tensor, passing_sign: torch.Tensor, frozen: torch.Tensor):
        self.h = torch.where(frozen, 20.0 * frozen_sign, 0.5 * passing_sign)

    def pre_activation(self, x, z):
        return self.h.expand_as(x)


def test_frozen_wrong_sign_compares_frozen_pixels_with_those_the_gradient_reaches():
    # f's logit 0 is w·x and logit 1 is 0; with y = 1 the gradient of CE is p₀·w: its sign is sign(w) everywhere
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, generator=gen)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with torch.no_grad():
        f[1].weight.zero_()
        f[1].weight[0] = w
        f[1].bias.zero_()
    x, y = torch.full((5, 1, 8, 8), 0.5), torch.ones(5, dtype=torch.long)  # mid-grey: the clip is never active
    right = torch.sign(w).view(1, 8, 8)
    frozen = (torch.arange(64) % 2 == 0).view(1, 8, 8)
    # frozen pixels always right, reachable ones always wrong: the sign errors are *not* where saturation is
    g = _FixedSignGenerator(right, -right, frozen)
    r = chapter.frozen_wrong_sign(g, f, x, y)
    assert r["frozen"] == pytest.approx(0.5)
    assert r["frozen_agree"] == 1.0 and r["passing_agree"] == 0.0 and r["frozen_wrong"] == 0.0
    # and the other way round
    r = chapter.frozen_wrong_sign(_FixedSignGenerator(-right, right, frozen), f, x, y)
    assert r["frozen_agree"] == 0.0 and r["passing_agree"] == 1.0 and r["frozen_wrong"] == pytest.approx(0.5)
    # no pixel frozen: the frozen share is NaN, the control is still measured
    r = chapter.frozen_wrong_sign(_FixedSignGenerator(right, right, torch.zeros_like(frozen)), f, x, y)
    assert math.isnan(r["frozen_agree"]) and r["passing_agree"] == 1.0
