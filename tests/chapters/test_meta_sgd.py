"""Notebook 07 · Meta-SGD: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch

from metaadv_edu import metasgd, models
from metaadv_edu.chapters import meta_sgd as chapter


def no_grad_step(p, g, a):
    with torch.no_grad():
        return {k: p[k] - a[k] * g[k] for k in p}


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda p, g, a: {k: p[k] - a[k] * g[k] for k in p}, True, "differentiable with respect to θ and α"),
        (lambda p, g, a: {k: p[k] + a[k] * g[k] for k in p}, False, "wrong sign"),
        (lambda p, g, a: {k: p[k] - a[k].mean() * g[k] for k in p}, False, "not a scalar"),
        (lambda p, g, a: p, False, "not θ − α∘∇L"),
        (lambda p, g, a: {k: -a[k] * g[k] for k in p}, False, "without θ"),
        (lambda p, g, a: {k: p[k] - a[k].detach() * g[k] for k in p}, False, "does not reach α"),
        (lambda p, g, a: {k: p[k] - a[k].data * g[k] for k in p}, False, "does not reach α"),
        (lambda p, g, a: {k: (p[k] - a[k] * g[k]).detach() for k in p}, False, "detached"),
        (lambda p, g, a: {k: p[k].detach() - a[k] * g[k] for k in p}, False, "does not reach θ"),
        (no_grad_step, False, "detached"),
    ],
)
def test_check_meta_sgd_step(fn, ok, hint, capsys):
    assert chapter.check_meta_sgd_step(fn) is ok
    assert hint in capsys.readouterr().out


def test_metasgd_explorer_switches_models_and_scales_alpha(device):
    from metaadv_edu import metasgd

    variants = {}
    for i, k in enumerate((5, 10)):
        torch.manual_seed(i)
        net, maml_net = models.SineRegressor().to(device), models.SineRegressor().to(device)
        variants[f"K={k}"] = (net, metasgd.init_inner_lrs(net, 0.01 * (i + 1)), maml_net, k)
    ex = chapter.metasgd_explorer(variants, n_tasks=3)
    images = {ex.image.value}
    assert ex.blit_error() == 0  # the first image: the one a stored notebook shows
    # the model slider changes the histogram's y-axis: the kept picture is rendered again, both ways
    for name, value in (("model", "K=10"), ("alpha_scale", 2.0), ("task", 2), ("model", "K=5")):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is not what a full render draws"
    assert len(images) == 5 and "K = 5" in ex.caption.value


def _grad(fn, t, create_graph=False):
    if not t.requires_grad:
        t = t.detach().requires_grad_(True)
    return torch.autograd.grad(fn(t), t, create_graph=create_graph)[0]


def alpha_grad(S, Q, theta, alpha, *, detach=False, sign=1.0, q_at_theta=False, s_at_adapted=False, dot=False):
    g_s = _grad(S, theta)
    adapted = theta - alpha * g_s
    if s_at_adapted:
        g_s = _grad(S, adapted)
    g_q = _grad(Q, theta if q_at_theta else adapted)
    out = -sign * g_q * g_s
    return out.sum() if dot else out


def alpha_grad_autograd(S, Q, theta, alpha, detach=False):
    a = alpha.clone().requires_grad_(True)
    adapted = theta - (a.detach() if detach else a) * _grad(S, theta)
    return torch.autograd.grad(Q(adapted), a)[0]


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (alpha_grad, True, "one entry per learning rate"),
        (alpha_grad_autograd, True, "one entry per learning rate"),
        (lambda S, Q, t, a: alpha_grad_autograd(S, Q, t, a, detach=True), False, "detached"),
        (lambda S, Q, t, a: torch.zeros_like(a), False, "detached"),
        (lambda S, Q, t, a: None, False, "detached"),
        (lambda S, Q, t, a: alpha_grad(S, Q, t, a, sign=-1.0), False, "wrong sign"),
        (lambda S, Q, t, a: alpha_grad(S, Q, t, a, q_at_theta=True), False, "adapted θ′"),
        (lambda S, Q, t, a: alpha_grad(S, Q, t, a, s_at_adapted=True), False, "inner step's gradient"),
        (lambda S, Q, t, a: alpha_grad(S, Q, t, a, dot=True), False, "elementwise"),
        (lambda S, Q, t, a: _grad(Q, t - a * _grad(S, t)), False, "chain rule"),
    ],
)
def test_check_alpha_gradient(fn, ok, hint, capsys):
    assert chapter.check_alpha_gradient(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_initial_inner_lrs_are_the_training_runs_first_draw():
    model = models.SineRegressor()
    again = chapter.initial_inner_lrs(models.SineRegressor())
    first = metasgd.init_inner_lrs(model, (0.005, 0.1), generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(first[k].detach(), again[k]) for k in first)
    assert all(((a >= 0.005) & (a <= 0.1)).all() for a in again.values())


def test_rate_changes_reports_growth_and_signs_per_tensor():
    initial = {"w": torch.tensor([0.01, 0.02, 0.03, 0.04]), "b": torch.tensor([0.05])}
    learned = {"w": torch.tensor([0.02, -0.01, 0.01, 0.08]), "b": torch.tensor([-0.2])}
    rows = chapter.rate_changes(initial, learned)
    learned["w"][2] = 0.03  # unchanged
    rows = chapter.rate_changes(initial, learned)
    assert rows[0][:2] == ["w", "4"] and rows[0][4:8] == ["50%", "25%", "25%", "25%"]
    assert rows[1][4:9] == ["0%", "100%", "0%", "100%", "0.200"]
    with pytest.raises(ValueError, match="same parameter tensors"):
        chapter.rate_changes(initial, {"w": learned["w"]})


def test_alpha_variants_keep_shapes_and_simplify_alpha():
    learned = {"w": torch.tensor([[0.1, -0.3], [0.2, 0.0]]), "b": torch.tensor([0.4, 0.2])}
    variants = chapter.alpha_variants(learned)
    assert next(iter(variants)) == "learned α" and len(variants) == 6
    assert all(v[k].shape == learned[k].shape for v in variants.values() for k in learned)
    assert torch.equal(variants["|α| (signs dropped)"]["w"], learned["w"].abs())
    torch.testing.assert_close(variants["one rate per tensor (its mean)"]["b"], torch.full((2,), 0.3))
    torch.testing.assert_close(variants["one rate for all (the mean α)"]["w"], torch.full((2, 2), 0.1))
    torch.testing.assert_close(variants["learned α × 0.5 (size only)"]["w"], 0.5 * learned["w"])
    torch.testing.assert_close(variants["learned α × 2 (size only)"]["b"], 2 * learned["b"])
    with pytest.raises(ValueError, match="scales"):
        chapter.alpha_variants(learned, scales=(0.0,))
