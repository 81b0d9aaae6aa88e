"""Notebook 02 · Adversarial training: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import attacks, data, models
from metaadv_edu.chapters import adversarial_training as chapter
from tests.wrong import rejects


def grad_of(model, x, y):
    return attacks.input_gradient(model, x, y)[0]


def mixed_ok(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)


def mixed_swapped(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    return (1 - alpha) * F.cross_entropy(model(x), y) + alpha * F.cross_entropy(model(x_adv), y)


def mixed_detached(model, x, y, eps, alpha):
    return mixed_ok(model, x, y, eps, alpha).detach()


def mixed_adv_only(model, x, y, eps, alpha):
    return F.cross_entropy(model(attacks.fgsm(model, x, y, eps)), y)


def mixed_unclamped(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps, clamp=None)
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)


def mixed_adversarial_term_without_gradient(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    with torch.no_grad():
        adv = F.cross_entropy(model(x_adv), y)
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * adv


def mixed_fgsm_by_backward(model, x, y, eps, alpha):
    x_req = x.clone().requires_grad_(True)
    F.cross_entropy(model(x_req), y).backward()
    model.zero_grad(set_to_none=True)
    x_adv = (x + eps * x_req.grad.sign()).clamp(0, 1)
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)


def mixed_sum(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    return F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y)


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (mixed_ok, True, "gradient for the model"),
        (mixed_unclamped, False, "clip x + ε·sign(∇ₓJ) to [0, 1]"),
        (mixed_sum, False, "eq. (2)"),
        (mixed_swapped, False, "swapped"),
        (mixed_detached, False, "no gradient"),
        (mixed_adv_only, False, "adversarial loss alone"),
        (mixed_adversarial_term_without_gradient, False, "right value, wrong gradient"),
        (mixed_fgsm_by_backward, False, "back-propagated into the model"),
    ],
)
def test_check_mixed_loss(fn, ok, hint, capsys):
    assert chapter.check_mixed_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_robustness_explorer_switches_cached_models(device):
    x, y = data.load_digits("test", device=device)
    grid = {}
    for i, e in enumerate((0.0, 0.1)):
        torch.manual_seed(i)
        grid[e] = models.TinyCNN(1, 10, width=4).to(device).eval()
    curves = {e: [0.9, 0.5] for e in grid}
    ex = chapter.robustness_explorer(grid, x[:2], y[:2], x[:40], y[:40], curves=curves, curve_epsilons=[0.0, 0.1])
    first = ex.image.value
    assert ex.blit_error() == 0, "the first image (the one a stored notebook shows) matches a full render"
    ex.sliders["train_epsilon"].value = 0.0 if ex.sliders["train_epsilon"].value else 0.1
    second = ex.image.value
    assert ex.blit_error() == 0, "the blitted image is what a full render draws"
    ex.sliders["epsilon"].value = 0.2
    third = ex.image.value
    assert ex.blit_error() == 0
    ex.sliders["step_size"].value = 0.05
    assert ex.blit_error() == 0
    assert len({first, second, third, ex.image.value}) == 4
    assert "accuracy on 40 test inputs" in ex.caption.value
    assert ex.values["train_epsilon"] in grid


def robust(w, b, x, y, eps):
    return F.softplus(-y * (x @ w + b) + eps * w.abs().sum()).mean()


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (robust, True, "brute force over the corners"),
        (lambda w, b, x, y, e: F.softplus(-y * (x @ w + b) + e * w.norm()).mean(), False, "‖w‖₂"),
        (lambda w, b, x, y, e: F.softplus(-y * (x @ w + b) - e * w.abs().sum()).mean(), False, "wrong sign"),
        (
            lambda w, b, x, y, e: torch.log(1 + torch.exp(-y * (x @ w + b) + e * w.abs().sum())).mean(),
            False,
            "overflows",
        ),
        (lambda w, b, x, y, e: F.softplus(-y * (x @ w + b) + e * w.abs().sum()).sum(), False, "average"),
        (lambda w, b, x, y, e: F.softplus(-y * (x @ w + b)).mean(), False, "clean loss"),
        (lambda w, b, x, y, e: F.softplus(-(x @ w + b) + e * w.abs().sum()).mean(), False, "includes the label"),
    ],
)
def test_check_linear_robust_loss(fn, ok, hint, capsys):
    assert chapter.check_linear_robust_loss(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_brute_force_over_the_corners_is_the_closed_form():
    """−ε·y·sign(w) is the worst corner, so the enumeration of all 2^d corners gives ε‖w‖₁ in the margin;
    an interior point of the ball never does better."""
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(6, generator=g, dtype=torch.float64), torch.randn((), generator=g, dtype=torch.float64)
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    y = (2 * torch.randint(2, (9,), generator=g) - 1).double()
    brute = chapter.brute_force_linear_robust_loss(w, b, x, y, 0.2)
    assert float(brute) == pytest.approx(float(robust(w, b, x, y, 0.2)), rel=1e-12)
    inside = 0.2 * (2 * torch.rand(500, 9, 6, generator=g, dtype=torch.float64) - 1)
    assert float(F.softplus(-y * ((x + inside) @ w + b)).mean(1).max()) <= float(brute)
    with pytest.raises(ValueError, match="len"):
        chapter.brute_force_linear_robust_loss(torch.ones(13), b, torch.ones(2, 13), y[:2], 0.1)


def test_robust_linear_loss_is_what_pgd_reaches():
    """The closed form is the maximum: PGD on the same loss gets to it, and never above."""
    g = torch.Generator().manual_seed(0)
    w, b, x = torch.randn(5, generator=g), torch.randn((), generator=g), torch.randn(7, 5, generator=g)
    y = (2 * torch.randint(2, (7,), generator=g) - 1).float()
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(20):
        loss = F.softplus(-y * ((x + delta) @ w + b)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta + 0.05 * grad.sign()).clamp(-0.3, 0.3).detach().requires_grad_(True)
    pgd_loss = F.softplus(-y * ((x + delta) @ w + b)).mean()
    assert float(pgd_loss.detach()) == pytest.approx(float(robust(w, b, x, y, 0.3)), rel=1e-5)


def _two_digit_classes(dtype=torch.float64):
    from metaadv_edu.chapters import fgsm

    logreg, _ = fgsm.digits_logreg("cpu")
    x, y = data.load_digits("train")
    two = (y == 3) | (y == 8)
    w, b = chapter.binary_logistic(logreg, 3, 8)
    return w, b, x[two].flatten(1).to(dtype), torch.where(y[two] == 3, 1.0, -1.0).to(dtype)


def test_l2_maximiser_is_the_maximum():
    w, b, x, y = _two_digit_classes()
    delta = chapter.l2_maximiser(w, b, x, y, 1.0)
    assert torch.allclose(delta.norm(dim=1), torch.ones(len(x), dtype=torch.float64))
    exact = chapter.robust_logistic_loss(w, b, x, y, 1.0)
    assert chapter.logistic_loss(w, b, x + delta, y) == pytest.approx(float(exact), rel=1e-12)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):  # no other point of the sphere does better
        other = torch.randn(x.shape, generator=g, dtype=torch.float64)
        other = other / other.norm(dim=1, keepdim=True)
        assert chapter.logistic_loss(w, b, x + other, y) < exact


@rejects("danskin_frozen_maximiser", "δ frozen at the step towards the wrong label")
@rejects("danskin_frozen_maximiser", "a sign step scaled into the L2 ball (not the maximiser)")
@rejects("danskin_frozen_maximiser", "the clean gradient (no attack, δ = 0)")
@rejects("danskin_frozen_maximiser", "δ* without the factor ε (the unit vector −y·w/‖w‖)")
@pytest.mark.parametrize("radius", [0.75, 1.5])
@pytest.mark.parametrize("name", ["wrong label", "random", "sign", "zero", "no epsilon"])
def test_danskin_check_rejects_a_non_maximiser(name, radius):
    w, b, x, y = _two_digit_classes()
    point = torch.randn(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    wrong = {
        "wrong label": lambda w, b, x, y, e: chapter.l2_maximiser(w, b, x, -y, e),
        "random": lambda w, b, x, y, e: (e * point / point.norm()).expand_as(x),
        "sign": lambda w, b, x, y, e: -e / 8 * y[:, None] * w.sign(),
        "zero": lambda w, b, x, y, e: torch.zeros_like(x),
        "no epsilon": lambda w, b, x, y, e: -y[:, None] * (w / w.norm())[None, :],
    }[name]
    assert chapter.danskin_error(chapter.l2_maximiser, w, b, x, y, radius) < 1e-6
    assert chapter.danskin_error(wrong, w, b, x, y, radius) > 0.1


def test_danskin_check_compares_every_coordinate():
    """A δ that matches the true gradient in all coordinates but one is still caught: the check is not a
    projection on one direction, which a wrong gradient can pass by chance."""
    w, b, x, y = _two_digit_classes()
    worst = w.abs().argmax()

    def one_pixel_off(w, b, x, y, e):
        delta = chapter.l2_maximiser(w, b, x, y, e).clone()
        delta[:, worst] = 0.0
        return delta

    assert chapter.danskin_error(one_pixel_off, w, b, x, y, 0.75) > 0.1


def test_pgd_restart_gap_sees_a_weak_maximiser():
    from metaadv_edu.chapters import fgsm

    logreg, _ = fgsm.digits_logreg("cpu")
    x, y = data.load_digits("test")
    strong = chapter.pgd_restart_gap(logreg, x[:100], y[:100], 0.1, generator=torch.Generator().manual_seed(0))
    weak = chapter.pgd_restart_gap(logreg, x[:100], y[:100], 0.1, steps=1, generator=torch.Generator().manual_seed(0))
    assert 0 < strong["share_higher"] < weak["share_higher"] <= 1
