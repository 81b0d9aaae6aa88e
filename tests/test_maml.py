"""MAML: the vectorised meta-gradient equals the loop, the explicit Hessian formula, finite
differences for k steps; FOMAML equals the gradient at a detached θ′."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from metaadv_edu import data, maml, models
from metaadv_edu.functional import params_of


def tiny(device, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1)).to(device=device, dtype=dtype)


def sine(n, k, device, dtype=torch.float32, seed=0):
    tasks = data.sine_tasks(n, k, generator=torch.Generator().manual_seed(seed), device=device)
    return data.Tasks(*(t.to(dtype) for t in tasks))


def meta_grad(loss, model):
    return torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("steps, first_order", [(1, False), (3, False), (2, True)])
def test_vmap_equals_loop(device, steps, first_order):
    model = models.SineRegressor().to(device)
    tasks = sine(7, 5, device)
    a = maml.meta_loss(model, tasks, inner_lr=0.02, steps=steps, first_order=first_order)
    b = maml.meta_loss_loop(model, tasks, inner_lr=0.02, steps=steps, first_order=first_order)
    torch.testing.assert_close(a, b)
    for ga, gb in zip(meta_grad(a, model), meta_grad(b, model)):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


def test_classification_tasks_use_cross_entropy(device):
    torch.manual_seed(0)
    model = models.MLP(64, (16,), 3).to(device)
    x, y = data.load_digits("train", device=device)
    tasks = data.few_shot_tasks(
        x, y, n_tasks=4, n_way=3, k_shot=2, k_query=3, generator=torch.Generator().manual_seed(0)
    )
    a = maml.meta_loss(model, tasks, inner_lr=0.1)
    b = maml.meta_loss_loop(model, tasks, inner_lr=0.1)
    torch.testing.assert_close(a, b)
    assert a.item() > 0


def hvp(loss_fn, params, vec):
    """Hessian-vector product of a scalar function of the parameter dict."""
    grads = torch.autograd.grad(loss_fn(params), list(params.values()), create_graph=True)
    dot = sum((g * vec[k]).sum() for g, k in zip(grads, params))
    return dict(zip(params, torch.autograd.grad(dot, list(params.values()))))


def test_one_step_meta_gradient_is_the_hessian_formula(device):
    model = tiny(device, torch.float64)
    tasks = sine(1, 6, device, torch.float64)
    xs, ys, xq, yq = (t[0] for t in tasks)
    alpha = 0.1
    auto = meta_grad(maml.meta_loss(model, tasks, inner_lr=alpha), model)
    theta = params_of(model, detach=True)
    support = lambda p: torch.nn.functional.mse_loss(functional_call(model, p, (xs,)), ys)  # noqa: E731
    query = lambda p: torch.nn.functional.mse_loss(functional_call(model, p, (xq,)), yq)  # noqa: E731
    g_s = torch.autograd.grad(support(theta), list(theta.values()))
    theta_prime = {k: (p - alpha * g).detach().requires_grad_(True) for (k, p), g in zip(theta.items(), g_s)}
    g_q = dict(zip(theta, torch.autograd.grad(query(theta_prime), list(theta_prime.values()))))
    h_g = hvp(support, theta, g_q)
    explicit = [g_q[k] - alpha * h_g[k] for k in theta]  # (I − α H_S) ∇L_Q(θ′)
    for a, e in zip(auto, explicit):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    # and the Hessian term matters: dropping it (FOMAML) gives a different vector
    assert max((a - g_q[k]).abs().max().item() for a, k in zip(auto, theta)) > 1e-6


def test_first_order_is_the_gradient_at_detached_theta_prime(device):
    model = tiny(device, torch.float64)
    tasks = sine(3, 6, device, torch.float64)
    auto = meta_grad(maml.meta_loss(model, tasks, inner_lr=0.05, steps=2, first_order=True), model)
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for xs, ys, xq, yq in zip(*tasks):
        p = params_of(model, detach=True)
        for _ in range(2):
            loss = torch.nn.functional.mse_loss(functional_call(model, p, (xs,)), ys)
            g = torch.autograd.grad(loss, list(p.values()))
            p = {k: (t - 0.05 * gi).detach().requires_grad_(True) for (k, t), gi in zip(p.items(), g)}
        q = torch.nn.functional.mse_loss(functional_call(model, p, (xq,)), yq)
        for e, gq in zip(expected, torch.autograd.grad(q, list(p.values()))):
            e += gq / 3
    for a, e in zip(auto, expected):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_k_step_meta_gradient_matches_finite_differences(device):
    model = tiny(device, torch.float64)
    tasks = sine(2, 5, device, torch.float64)
    auto = meta_grad(maml.meta_loss(model, tasks, inner_lr=0.05, steps=3), model)
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(device) for p in model.parameters()]
    h = 1e-6

    def shifted(sign):
        params = {k: p.detach() + sign * h * d for (k, p), d in zip(model.named_parameters(), direction)}
        return maml.meta_loss(model, tasks, inner_lr=0.05, steps=3, params=params).item()

    fd = (shifted(1) - shifted(-1)) / (2 * h)
    analytic = sum((a * d).sum() for a, d in zip(auto, direction)).item()
    assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(analytic))


def test_meta_gradient_reaches_every_parameter(device):
    model = models.SineRegressor().to(device)
    maml.meta_loss(model, sine(4, 5, device), inner_lr=0.01).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_adapt_reduces_the_support_loss(device):
    model = models.SineRegressor().to(device)
    xs, ys, _, _ = (t[0] for t in sine(1, 10, device))
    theta = params_of(model)
    adapted = maml.adapt(model, theta, xs, ys, inner_lr=0.01, steps=5)
    before = torch.nn.functional.mse_loss(model(xs), ys)
    after = torch.nn.functional.mse_loss(functional_call(model, adapted, (xs,)), ys)
    assert after < before
    assert all(not torch.equal(adapted[k], theta[k]) for k in theta)


def test_adaptation_losses_are_per_step_and_per_task(device):
    model = models.SineRegressor().to(device)
    tasks = sine(20, 10, device)
    losses = maml.adaptation_losses(model, tasks, inner_lr=0.01, max_steps=4)
    assert losses.shape == (5, 20) and not losses.requires_grad
    torch.testing.assert_close(losses[0], ((model(tasks.x_query) - tasks.y_query) ** 2).mean((1, 2)).detach())
    theta = {k: p.detach() for k, p in model.named_parameters()}
    adapted = maml.adapt(model, theta, tasks.x_support[3], tasks.y_support[3], inner_lr=0.01, steps=2)
    query = torch.nn.functional.mse_loss(functional_call(model, adapted, (tasks.x_query[3],)), tasks.y_query[3])
    torch.testing.assert_close(losses[2, 3], query.detach())  # row = steps taken, column = task


def test_meta_training_lowers_the_post_adaptation_loss():
    torch.manual_seed(0)
    model = models.SineRegressor()
    eval_tasks = sine(50, 10, "cpu", seed=99)
    before = maml.adaptation_losses(model, eval_tasks, inner_lr=0.01, max_steps=1)[-1].mean().item()
    sample = lambda g: data.sine_tasks(10, 10, generator=g)  # noqa: E731
    history = maml.meta_train(
        model,
        sample,
        iterations=400,
        inner_lr=0.01,
        outer_lr=3e-3,
        generator=torch.Generator().manual_seed(0),
        eval_tasks=eval_tasks,
        eval_every=100,
        progress=False,
    )
    assert history["eval_iteration"] == [100, 200, 300, 400]
    assert len(history["meta_loss"]) == 400
    assert history["eval_loss"][-1] < 0.75 * before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"inner_lr": -0.1}, "inner_lr"),
        ({"inner_lr": float("nan")}, "inner_lr"),
        ({"inner_lr": float("inf")}, "inner_lr"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    model = models.SineRegressor()
    args = {"inner_lr": 0.01, "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        maml.meta_loss(model, sine(2, 3, "cpu"), **args)


def test_mismatched_task_shapes():
    model = models.SineRegressor()
    t = sine(2, 3, "cpu")
    with pytest.raises(ValueError, match="number of tasks"):
        maml.meta_loss(model, data.Tasks(t.x_support, t.y_support, t.x_query[:1], t.y_query[:1]), inner_lr=0.1)
    with pytest.raises(ValueError, match="as many targets"):
        maml.meta_loss(model, data.Tasks(t.x_support, t.y_support[:, :2], t.x_query, t.y_query), inner_lr=0.1)
    with pytest.raises(TypeError, match="Tasks"):
        maml.meta_loss(model, (t.x_support,), inner_lr=0.1)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_formula_helper_matches_autograd(device, steps):
    model = tiny(device, torch.float64)
    tasks = sine(1, 6, device, torch.float64)
    auto = meta_grad(maml.meta_loss(model, tasks, inner_lr=0.07, steps=steps), model)
    formula = maml.meta_gradient_by_formula(model, *(t[0] for t in tasks), inner_lr=0.07, steps=steps)
    for a, k in zip(auto, formula):
        torch.testing.assert_close(a, formula[k], rtol=1e-9, atol=1e-12)


def test_tune_inner_lr_picks_the_best_candidate_and_survives_divergence(device):
    torch.manual_seed(0)
    model = models.SineRegressor().to(device)
    tasks = data.sine_tasks(20, 10, 20, generator=torch.Generator().manual_seed(0), device=device)
    best, table = maml.tune_inner_lr(model, tasks, [1e-4, 0.01, 100.0], max_steps=3)
    assert table.shape == (3, 4)
    assert not torch.isfinite(table[2, 1:]).all()  # a step of 100 diverges and is never chosen
    scores = table[:2, 1:].mean(1)
    assert best == [1e-4, 0.01][int(scores.argmin())]
    with pytest.raises(ValueError, match="candidates"):
        maml.tune_inner_lr(model, tasks, [])
    with pytest.raises(ValueError, match="candidates"):
        maml.tune_inner_lr(model, tasks, [-0.1])
