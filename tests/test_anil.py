"""ANIL through MAML's functions: per-tensor inner rates (α on the head, 0 on the body), and its meta-gradient
(I − αHD)∇L_Q — MAML's with α replaced by αD, the body's inner step set to 0 (the body still receives a
second-order term) — against autograd."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import anil, data, maml, models
from metaadv_edu.chapters import feature_reuse as chapter
from metaadv_edu.functional import forward, params_of, task_loss
from tests.wrong import rejects


def test_head_names_and_inner_lrs():
    net = models.TinyCNN(3, 5, width=4, image_size=16)
    assert anil.head_names(net) == ["7.weight", "7.bias"]
    lrs = anil.inner_lrs(net, 0.3)
    assert lrs == {"0.weight": 0.0, "0.bias": 0.0, "3.weight": 0.0, "3.bias": 0.0, "7.weight": 0.3, "7.bias": 0.3}
    with pytest.raises(ValueError, match="inner_lr"):
        anil.inner_lrs(net, 0.0)
    with pytest.raises(ValueError, match="head"):
        anil.inner_lrs(net, 0.1, head=["9.weight"])


def test_adapt_with_anil_rates_moves_only_the_head():
    net = models.SineRegressor()
    t = data.sine_tasks(1, 10, generator=torch.Generator().manual_seed(0))
    theta = params_of(net, detach=True)
    adapted = maml.adapt(net, theta, t.x_support[0], t.y_support[0], inner_lr=anil.inner_lrs(net, 0.01))
    for k in theta:
        assert torch.equal(adapted[k], theta[k]) == (k not in anil.head_names(net))


@pytest.mark.parametrize("steps", [1, 3])
def test_formula_equals_autograd_through_maml_with_body_rate_zero(steps):
    torch.manual_seed(0)
    net = models.SineRegressor(activation="tanh").double()
    t = data.Tasks(*(x.double() for x in data.sine_tasks(1, 10, generator=torch.Generator().manual_seed(1))))
    maml.meta_loss(net, t, inner_lr=anil.inner_lrs(net, 0.05), steps=steps).backward()
    auto = torch.cat([p.grad.flatten() for p in net.parameters()])
    formula = anil.meta_gradient_by_formula(net, *(x[0] for x in t), inner_lr=0.05, steps=steps)
    assert torch.allclose(torch.cat([g.flatten() for g in formula.values()]), auto, rtol=1e-9, atol=1e-12)


def test_the_notebook_check_passes_and_anil_differs_from_maml():
    out = chapter.anil_gradient_check()
    assert out["error"] < 1e-10 and out["vs_maml"] > 0.05


def _body_without_mixed_term(model, xs, ys, xq, yq, *, inner_lr, steps=1, **_):
    """ANIL's gradient with the body taking only ∂L_Q/∂θ_b: the dependence of w′ on θ_b is ignored."""
    exact = anil.meta_gradient_by_formula(model, xs, ys, xq, yq, inner_lr=inner_lr, steps=steps)
    theta = params_of(model, detach=True)
    adapted = maml.adapt(model, theta, xs, ys, inner_lr=anil.inner_lrs(model, inner_lr), steps=steps, first_order=True)
    adapted = {k: p.detach().requires_grad_(True) for k, p in adapted.items()}
    direct = torch.autograd.grad(task_loss(adapted, model, xq, yq, F.mse_loss), list(adapted.values()))
    head = anil.head_names(model)
    return {k: exact[k] if k in head else d for k, d in zip(adapted, direct)}


def _full_hessian_factor(model, xs, ys, xq, yq, *, inner_lr, steps=1, **_):
    """(I − αH)∇L_Q at ANIL's θ′: MAML's factor applied to ANIL's adapted weights (the mask D forgotten)."""
    theta = params_of(model, detach=True)
    lrs = anil.inner_lrs(model, inner_lr)
    thetas = [theta]
    for _ in range(steps):
        g = torch.autograd.grad(task_loss(thetas[-1], model, xs, ys, F.mse_loss), list(thetas[-1].values()))
        thetas.append({k: (p - lrs[k] * gi).detach().requires_grad_(True) for (k, p), gi in zip(thetas[-1].items(), g)})
    vec = dict(
        zip(theta, torch.autograd.grad(task_loss(thetas[-1], model, xq, yq, F.mse_loss), list(thetas[-1].values())))
    )
    for th in reversed(thetas[:-1]):
        g = torch.autograd.grad(task_loss(th, model, xs, ys, F.mse_loss), list(th.values()), create_graph=True)
        hv = torch.autograd.grad(sum((gi * vec[k]).sum() for gi, k in zip(g, th)), list(th.values()))
        vec = {k: vec[k] - inner_lr * h for k, h in zip(vec, hv)}
    return vec


def _first_order(model, xs, ys, xq, yq, *, inner_lr, steps=1, **_):
    """First-order ANIL: ∇L_Q(θ′) with the Hessian term dropped."""
    theta = params_of(model, detach=True)
    adapted = maml.adapt(model, theta, xs, ys, inner_lr=anil.inner_lrs(model, inner_lr), steps=steps, first_order=True)
    adapted = {k: p.detach().requires_grad_(True) for k, p in adapted.items()}
    return dict(
        zip(adapted, torch.autograd.grad(task_loss(adapted, model, xq, yq, F.mse_loss), list(adapted.values())))
    )


@rejects("anil_meta_gradient", "body gradient ∂L_Q/∂θ_b only (w′'s dependence on θ_b, −αH_θb,w∇_wL_Q, dropped)")
def test_the_check_rejects_a_body_without_the_mixed_term():
    assert chapter.anil_gradient_check(_body_without_mixed_term)["error"] > 1e-3


@rejects("anil_meta_gradient", "MAML's factor (I − αH) instead of (I − αHD)")
def test_the_check_rejects_the_unmasked_hessian_factor():
    assert chapter.anil_gradient_check(_full_hessian_factor)["error"] > 1e-3


@rejects("anil_meta_gradient", "first-order ANIL (Hessian term dropped)")
def test_the_check_rejects_first_order():
    assert chapter.anil_gradient_check(_first_order)["error"] > 1e-3


def test_forward_runs_with_adapted_params():
    net = models.SineRegressor()
    x = torch.rand(4, 1)
    assert forward(net, params_of(net), x).shape == (4, 1)


def test_body_rates_are_the_complement_of_anils():
    net = models.SineRegressor()
    head, body = anil.inner_lrs(net, 0.1), chapter.body_inner_lrs(net, 0.1)
    assert set(head) == set(body)
    assert all((head[k] == 0.0) != (body[k] == 0.0) for k in head)
    assert [k for k, r in body.items() if r == 0.0] == anil.head_names(net)


def test_adaptation_by_part_moves_only_the_named_part():
    torch.manual_seed(0)
    net = models.SineRegressor()
    tasks = data.sine_tasks(6, 5, generator=torch.Generator().manual_seed(1))
    scores = chapter.adaptation_by_part(net, tasks, inner_lr=0.01, steps=3, classification=False)
    assert set(scores) == {"all weights", "head only", "body only"}
    expected = maml.adaptation_losses(net, tasks, inner_lr=anil.inner_lrs(net, 0.01), max_steps=3)[3]
    assert torch.allclose(scores["head only"], expected)
    expected = maml.adaptation_losses(net, tasks, inner_lr=0.01, max_steps=3)[3]
    assert torch.allclose(scores["all weights"], expected)
    with pytest.raises(ValueError, match="steps"):
        chapter.adaptation_by_part(net, tasks, inner_lr=0.01, steps=0, classification=False)


def _scores(head_shift, body_shift, n=30):
    full = torch.linspace(1.0, 2.0, n)
    wobble = 0.01 * torch.sin(torch.arange(n, dtype=torch.float32))
    return {"all weights": full, "head only": full + head_shift + wobble, "body only": full + body_shift - wobble}


@pytest.mark.parametrize(
    ("head_shift", "body_shift", "expected"),
    [
        (0.0, 0.5, "consistent with feature reuse"),
        (0.8, 0.1, "mainly through its body"),
        (0.3, 0.9, "the head more"),
        (0.5, 0.5, "neither is resolved"),
    ],
)
def test_where_adaptation_happens_reads_the_paired_differences(head_shift, body_shift, expected):
    assert expected in chapter.where_adaptation_happens(_scores(head_shift, body_shift), lower_is_better=True)
    # accuracies: higher is better, so a loss of accuracy is a negative shift
    flipped = {k: -s for k, s in _scores(head_shift, body_shift).items()}
    assert expected in chapter.where_adaptation_happens(flipped, lower_is_better=False)
