"""Notebook 01 · FGSM: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import attacks, data, models
from metaadv_edu.chapters import fgsm as chapter
from tests.wrong import rejects


def no_grads(model):
    return all(p.grad is None for p in model.parameters())


def grad_of(model, x, y):
    return attacks.input_gradient(model, x, y)[0]


def fgsm_ok(model, x, y, eps):
    return attacks.fgsm(model, x, y, eps)


def fgsm_wrong_sign(model, x, y, eps):
    return (x - eps * grad_of(model, x, y).sign()).clamp(0, 1)


def fgsm_no_clamp(model, x, y, eps):
    return x + eps * grad_of(model, x, y).sign()


def fgsm_raw_gradient(model, x, y, eps):
    return (x + eps * grad_of(model, x, y)).clamp(0, 1)


def fgsm_backward(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_backward_then_cleared(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_backward_then_zeroed(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    for p in model.parameters():
        p.grad.zero_()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_wrong_shape(model, x, y, eps):
    return x[0]


def fgsm_raises(model, x, y, eps):
    return x.nonexistent


def fgsm_stub(model, x, y, eps):
    raise NotImplementedError


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (fgsm_ok, True, "matches the reference"),
        (fgsm_wrong_sign, False, "wrong sign"),
        (fgsm_no_clamp, False, "clamp"),
        (fgsm_raw_gradient, False, "sign"),
        (fgsm_backward, False, "torch.autograd.grad"),
        (fgsm_backward_then_cleared, False, "torch.autograd.grad"),
        (fgsm_backward_then_zeroed, False, "torch.autograd.grad"),
        (fgsm_wrong_shape, False, "shape"),
        (fgsm_raises, False, "AttributeError"),
        (fgsm_stub, False, "not written yet"),
    ],
)
def test_check_fgsm(fn, ok, hint, capsys):
    assert chapter.check_fgsm(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and ("✓" in out) == ok
    assert "Traceback" not in out


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda g, e: e * g.flatten(1).abs().sum(1), True, "ε‖g‖₁"),
        (lambda g, e: e * g.flatten(1).norm(dim=1), False, "L2 norm"),
        (lambda g, e: g.flatten(1).abs().sum(1), False, "multiply by ε"),
        (lambda g, e: e * g.flatten(1).sum(1), False, "absolute values"),
        (lambda g, e: e * g.abs().sum(), False, "one gain per example"),
        (lambda g, e: (e * g.flatten(1).abs().sum(1)).cpu() if g.is_cuda else "nope", False, "tensor"),
    ],
)
def test_check_first_order_gain(fn, ok, hint, capsys):
    assert chapter.check_first_order_gain(fn) is ok
    assert hint in capsys.readouterr().out


def test_attack_explorer_every_slider_changes_the_figure(small_cnn, device):
    x, y = data.load_digits("test", device=device)
    ex = chapter.attack_explorer(small_cnn, x[:2], y[:2], x[:50], y[:50])
    before_params = [p.detach().clone() for p in small_cnn.parameters()]
    open_figures = plt.get_fignums()
    images = {ex.image.value}
    assert ex.blit_error() == 0, "the first image (the one a stored notebook shows) matches a full render"
    for name, value in (("epsilon", 0.25), ("steps", 5), ("step_size", 0.08)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is what a full render draws"
    assert len(images) == 4, "each slider move must change the picture"
    assert "PGD, 5 steps" in ex.caption.value and "accuracy on 50 test inputs" in ex.caption.value
    assert all(torch.equal(a, b) for a, b in zip(before_params, small_cnn.parameters()))
    assert no_grads(small_cnn)
    assert plt.get_fignums() == open_figures


def _pgd(model, x, y, eps, a, k, *, project=True, clamp=True, sign=1.0, stale=False, backward=False):
    x_adv, g0 = x.clone(), grad_of(model, x, y)
    for _ in range(k):
        if backward:
            z = x_adv.clone().requires_grad_(True)
            F.cross_entropy(model(z), y).backward()
            g = z.grad
        else:
            g = g0 if stale else grad_of(model, x_adv, y)
        x_adv = x_adv + sign * a * g.sign()
        if project:
            x_adv = x + (x_adv - x).clamp(-eps, eps)
        if clamp:
            x_adv = x_adv.clamp(0, 1)
    return x_adv.detach()


@pytest.mark.parametrize(
    "kwargs, ok, hint",
    [
        ({}, True, "several projected"),
        ({"project": False}, False, "projected back onto the ε-ball"),
        ({"clamp": False}, False, "clamp to [0, 1]"),
        ({"stale": True}, False, "recomputed at the current iterate"),
        ({"sign": -1.0}, False, "wrong sign"),
        ({"backward": True}, False, "back-propagated"),
    ],
)
def test_check_pgd(kwargs, ok, hint, capsys):
    assert chapter.check_pgd(lambda m, x, y, e, a, k: _pgd(m, x, y, e, a, k, **kwargs)) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_check_pgd_names_a_single_step(capsys):
    assert chapter.check_pgd(lambda m, x, y, e, a, k: _pgd(m, x, y, e, a, 1)) is False
    assert "single step" in capsys.readouterr().out


def test_check_pgd_accepts_the_library_attack(capsys):
    assert chapter.check_pgd(lambda m, x, y, e, a, k: attacks.pgd(m, x, y, e, step_size=a, steps=k, random_start=False))


def _gradients(device):
    model = models_digits_cnn()
    x, y = data.load_digits("test")
    return attacks.input_gradient(model, x[:8], y[:8])[0]


def models_digits_cnn():
    from metaadv_edu.chapters import start_here

    return start_here.digits_cnn("cpu")[0]


@rejects("fgsm_linear_maximiser", "the gradient rescaled into the ball, ε·g/‖g‖∞, instead of ε·sign(g)")
@rejects("fgsm_linear_maximiser", "the L2 step ε·g/‖g‖₂ for an L∞ budget")
@rejects("fgsm_linear_maximiser", "one pixel's sign flipped")
@pytest.mark.parametrize(
    "name, ok", [("fgsm", True), ("rescaled", False), ("l2", False), ("too big", False), ("one sign flipped", False)]
)
def test_linearised_gain_check_rejects_non_maximisers(name, ok):
    g = _gradients("cpu")
    eps = 0.1
    per = lambda n: n.view(-1, 1, 1, 1)  # noqa: E731
    flipped = eps * g.sign()
    flipped.view(8, -1)[:, 0] *= -1
    delta = {
        "fgsm": eps * g.sign(),
        "rescaled": eps * g / per(g.flatten(1).abs().amax(1)),
        "l2": eps * g / per(g.flatten(1).norm(dim=1)),
        "too big": 2 * eps * g.sign(),
        "one sign flipped": flipped,
    }[name]
    result = chapter.linearised_gain_check(delta, g, eps, generator=torch.Generator().manual_seed(1))
    assert result["passes"] is ok


@rejects("fgsm_brute_force_corner", "the gradient rescaled into the square, ε·g/‖g‖∞ (not a corner)")
def test_brute_force_finds_the_fgsm_corner_and_not_the_rescaled_gradient():
    from torch import nn

    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x, y = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([1])
    best = chapter.brute_force_best_delta(toy, x, y, 1e-3)
    g, _ = attacks.input_gradient(toy, x, y)
    assert torch.allclose(best, 1e-3 * g[0].sign())
    assert not torch.allclose(best, 1e-3 * g[0] / g.abs().max())


@rejects("fgsm_brute_force_corner", "the descent corner −ε·sign(g) (sign flipped)")
def test_brute_force_rejects_the_descent_corner():
    from torch import nn

    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x, y = torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([1])
    best = chapter.brute_force_best_delta(toy, x, y, 1e-3)
    g, _ = attacks.input_gradient(toy, x, y)
    assert not torch.allclose(best, -1e-3 * g[0].sign())
    flipped_one = 1e-3 * g[0].sign() * torch.tensor([1.0, -1.0], dtype=torch.float64)
    assert not torch.allclose(best, flipped_one)


@rejects("fgsm_first_order_limit", "the direction g/‖g‖∞ instead of sign(g)")
def test_first_order_errors_shrink_only_for_the_sign_direction():
    import copy

    model = copy.deepcopy(models_digits_cnn()).double()
    x, y = data.load_digits("test")
    x = x[:8].double() + 0.01 * torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = (1e-3, 1e-4, 1e-5)
    right = chapter.first_order_errors(model, x, y[:8], eps)
    wrong = chapter.first_order_errors(
        model, x, y[:8], eps, direction=lambda g: g / g.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    )
    assert right[0] > right[1] > right[2] and right[2] < 1e-2
    assert wrong[2] > 0.1


def test_check_pgd_rejects_backward_even_when_the_gradients_are_cleared(capsys):
    def pgd_backward(model, x, y, epsilon, step_size, steps):
        x_adv = x.clone()
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            F.cross_entropy(model(x_adv), y).backward()
            model.zero_grad(set_to_none=True)
            x_adv = (x + (x_adv + step_size * x_adv.grad.sign() - x).clamp(-epsilon, epsilon)).clamp(0, 1)
        return x_adv.detach()

    assert not chapter.check_pgd(pgd_backward)
    assert "torch.autograd.grad" in capsys.readouterr().out


def test_attack_suite_takes_the_per_example_worst_case():
    model = models_digits_cnn()
    x, y = data.load_digits("test")
    suite = chapter.attack_suite(model, x[:100], y[:100], 0.1, strong_steps=40, restarts=2)
    members = ["FGSM", "PGD-20", "PGD-40 × 2 restarts", "targeted PGD-20, every other class"]
    assert list(suite) == [*members, "all attacks"]
    worst = suite["all attacks"]
    assert torch.equal(worst, torch.stack([suite[k] for k in members]).all(0))
    assert all(worst.float().mean() <= suite[k].float().mean() for k in members)
    assert suite["PGD-40 × 2 restarts"].float().mean() <= suite["FGSM"].float().mean()
    with pytest.raises(ValueError, match="epsilon"):
        chapter.attack_suite(model, x[:4], y[:4], 0.0)
    with pytest.raises(ValueError, match="restarts"):
        chapter.attack_suite(model, x[:4], y[:4], 0.1, restarts=0)


def test_attack_suite_reaches_the_exact_robust_accuracy_of_the_linear_model():
    """For logistic regression the exact robust accuracy inside the pixel box is known (certify); the
    worst case over the suite can only lie above it, and with the targeted runs it reaches it."""
    model, _ = chapter.digits_logreg("cpu")
    x, y = data.load_digits("test")
    exact = chapter.linear_robust_accuracy(model, x, y, 0.1)
    unboxed = chapter.linear_robust_accuracy(model, x, y, 0.1, box=None)
    suite = chapter.attack_suite(model, x, y, 0.1, strong_steps=40, restarts=2)
    worst = float(suite["all attacks"].float().mean())
    assert unboxed <= exact <= worst
    assert worst - exact < 0.005
    assert float(suite["targeted PGD-20, every other class"].float().mean()) < float(suite["PGD-20"].float().mean())


def test_attack_suite_gives_each_attack_its_own_random_start(monkeypatch):
    x, y = data.load_digits("test")
    model = models.TinyCNN(1, 10, width=4).eval()
    starts = []
    original = attacks.pgd

    def recording_pgd(m, xb, yb, epsilon, **kwargs):
        if "restarts" in kwargs:  # a call from the suite, not one restart inside attacks.pgd
            copy = torch.Generator()
            copy.set_state(kwargs["generator"].get_state())
            starts.append(torch.rand(xb.shape, generator=copy))
        return original(m, xb, yb, epsilon, **kwargs)

    monkeypatch.setattr(attacks, "pgd", recording_pgd)
    chapter.attack_suite(model, x[:8], y[:8], 0.1, steps=2, strong_steps=2, restarts=2)
    plain, strong = starts
    assert not torch.equal(plain, strong)


def fgsm_frozen_then_backward(model, x, y, eps):
    model.requires_grad_(False)  # the tutorials' way to keep .grad off the parameters
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_switches_to_eval(model, x, y, eps):
    model.eval()
    return attacks.fgsm(model, x, y, eps)


def pgd_frozen(model, x, y, epsilon, step_size, steps):
    for p in model.parameters():
        p.requires_grad_(False)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = (x + (x_adv + step_size * g.sign() - x).clamp(-epsilon, epsilon)).clamp(0, 1)
    return x_adv.detach()


@rejects("fgsm_grader", "freezes the model with requires_grad_(False), then loss.backward()")
@rejects("fgsm_grader", "switches the model to eval mode and leaves it there")
@pytest.mark.parametrize("fn", [fgsm_frozen_then_backward, fgsm_switches_to_eval])
def test_check_fgsm_rejects_an_attack_that_changes_the_model(fn, capsys):
    assert chapter.check_fgsm(fn) is False
    out = capsys.readouterr().out
    assert "changed the model" in out and "torch.autograd.grad" in out and "Traceback" not in out


@rejects("pgd_grader", "freezes the model with requires_grad_(False), input gradient otherwise right")
def test_check_pgd_rejects_a_frozen_model_without_crashing(capsys):
    assert chapter.check_pgd(pgd_frozen) is False
    out = capsys.readouterr().out
    assert "changed the model" in out and "Traceback" not in out


def test_the_graders_restore_the_model_they_lend():
    from metaadv_edu import grading

    model = grading.toy_classifier("cpu", 0)
    x, y = grading.toy_batch("cpu", 10)
    with pytest.raises(grading.Stop, match="changed the model"):
        with grading.leaves_model_as_found(model):
            pgd_frozen(model, x, y, 0.1, 0.05, 2)
            model.eval()
    assert all(p.requires_grad for p in model.parameters()) and model.training


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_correct_by_epsilon_keeps_the_digits_behind_robust_accuracy(attack):
    model = models_digits_cnn()
    x, y = data.load_digits("test")
    epsilons = [0.0, 0.05, 0.1, 0.2]
    kwargs = {"steps": 5, "generator": torch.Generator().manual_seed(0)} if attack == "pgd" else {}
    correct = chapter.correct_by_epsilon(model, x, y, epsilons, attack=attack, **kwargs)
    assert correct.shape == (4, len(x)) and correct.dtype == torch.bool
    if attack == "pgd":
        kwargs["generator"] = torch.Generator().manual_seed(0)
    expected = attacks.robust_accuracy(model, x, y, epsilons, attack=attack, **kwargs)
    assert correct.sum(1).tolist() == [round(a * len(x)) for a in expected]
    with pytest.raises(ValueError, match="attack"):
        chapter.correct_by_epsilon(model, x, y, epsilons, attack="cw")
