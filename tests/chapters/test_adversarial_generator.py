"""Notebook 04 · Adversarial generator: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import data, models
from metaadv_edu.chapters import adversarial_generator as chapter
from tests.wrong import rejects


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda x, h, e: (x + e * torch.tanh(h)).clamp(0, 1), True, "differentiable"),
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
    for name, value in (("epsilon", 0.1), ("lr_g", 1e-4)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 3 and "30 generated examples" in ex.caption.value
    assert set(ex.sliders) == {"epsilon", "lr_g"}
    for k, m in pairs.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters()))


def _margin(logits, y, *, floor=True, include_true=False, flip=False):
    true = logits.gather(1, y[:, None])[:, 0]
    masked = logits if include_true else logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    m = masked.amax(1) - true if flip else true - masked.amax(1)
    return (m.clamp(min=0) if floor else m).mean()


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda z, y, d, w: _margin(z, y) - w * F.logsigmoid(d).mean(), True, "stable"),
        (lambda z, y, d, w: _margin(z, y) - w * torch.log(torch.sigmoid(d) + 1e-8).mean(), False, "1e-8"),
        (lambda z, y, d, w: _margin(z, y) - w * torch.log(torch.sigmoid(d)).mean(), False, "not finite"),
        (lambda z, y, d, w: _margin(z, y) + w * F.logsigmoid(-d).mean(), False, "saturating"),
        (lambda z, y, d, w: _margin(z, y, floor=False) - w * F.logsigmoid(d).mean(), False, "floor"),
        (lambda z, y, d, w: _margin(z, y, include_true=True) - w * F.logsigmoid(d).mean(), False, "*other* classes"),
        (lambda z, y, d, w: -F.cross_entropy(z, y) - w * F.logsigmoid(d).mean(), False, "Carlini–Wagner"),
        (lambda z, y, d, w: _margin(z, y, flip=True) - w * F.logsigmoid(d).mean(), False, "wrong sign"),
        (lambda z, y, d, w: _margin(z, y) - F.logsigmoid(d).mean(), False, "gan_weight"),
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
