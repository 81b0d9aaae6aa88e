import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import data, maml, metasgd, models, reptile


def tiny(device, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(device=device, dtype=dtype)


def sine(n, k, device, dtype=torch.float32, seed=0):
    t = data.sine_tasks(n, k, generator=torch.Generator().manual_seed(seed), device=device)
    return data.Tasks(*(x.to(dtype) for x in t))


# ------------------------------------------------------------------------------------- Reptile
def test_reptile_with_one_step_is_sgd_on_the_joint_loss(device):
    model = tiny(device, torch.float64)
    tasks = sine(6, 5, device, torch.float64)
    start = [p.detach().clone() for p in model.parameters()]
    joint = torch.stack([F.mse_loss(model(x), y) for x, y in zip(tasks.x_support, tasks.y_support)]).mean()
    grads = torch.autograd.grad(joint, list(model.parameters()))
    alpha, beta = 0.05, 0.3
    reptile.outer_step(model, tasks, inner_lr=alpha, inner_steps=1, outer_lr=beta)
    for p, p0, g in zip(model.parameters(), start, grads):
        torch.testing.assert_close(p.detach(), p0 - alpha * beta * g, rtol=1e-10, atol=1e-12)


def test_reptile_moves_towards_the_mean_of_adapted_weights(device):
    model = tiny(device)
    tasks = sine(4, 10, device)
    start = [p.detach().clone() for p in model.parameters()]
    loss = reptile.outer_step(model, tasks, inner_lr=0.02, inner_steps=5, outer_lr=1.0)
    # with β = 1 the new θ is the mean of the per-task adapted weights: check against a loop
    phis = []
    for x, y in zip(tasks.x_support, tasks.y_support):
        net = tiny(device)
        with torch.no_grad():
            for p, p0 in zip(net.parameters(), start):
                p.copy_(p0)
        opt = torch.optim.SGD(net.parameters(), lr=0.02)
        for _ in range(5):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
        phis.append([p.detach() for p in net.parameters()])
    for i, p in enumerate(model.parameters()):
        torch.testing.assert_close(p.detach(), torch.stack([phi[i] for phi in phis]).mean(0), rtol=1e-4, atol=1e-5)
    assert loss > 0
    assert all(p.grad is None for p in model.parameters())


def test_reptile_training_anneals_and_learns():
    torch.manual_seed(0)
    model = models.SineRegressor()
    evals = sine(100, 10, "cpu", seed=5)
    before = maml.adaptation_losses(model, evals, inner_lr=0.01, max_steps=5)[-1].mean()
    hist = reptile.train(
        model,
        lambda g: data.sine_tasks(10, 10, generator=g),
        iterations=300,
        inner_lr=0.02,
        inner_steps=5,
        outer_lr=0.5,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    after = maml.adaptation_losses(model, evals, inner_lr=0.01, max_steps=5)[-1].mean()
    assert len(hist["support_loss"]) == 300 and after < 0.8 * before


@pytest.mark.parametrize("k", [2, 3])
def test_taylor_predictions_error_shrinks_like_alpha_squared(k):
    model = tiny("cpu", torch.float64, seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, generator=g, dtype=torch.float64) * 10 - 5
    y = 2 * torch.sin(x - 1)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]
    terms = reptile.taylor_terms(model, batches)
    errors = []
    for alpha in (1e-2, 1e-3):
        measured = reptile.expected_updates(model, batches, inner_lr=alpha, k=k)
        predicted = reptile.predicted_updates(terms, inner_lr=alpha, k=k)
        errors.append(max((measured[n] - predicted[n]).norm().item() for n in measured))
    assert 50 < errors[0] / errors[1] < 200  # O(α²): ×100 per decade


def test_avg_grad_inner_is_half_the_gradient_of_the_dot_product():
    model = tiny("cpu", torch.float64, seed=2)
    x = torch.linspace(-4, 4, 8, dtype=torch.float64).view(-1, 1)
    y = torch.cos(x)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    terms = reptile.taylor_terms(model, batches)
    params = list(model.parameters())
    g1 = torch.autograd.grad(F.mse_loss(model(x[:4]), y[:4]), params, create_graph=True)
    g2 = torch.autograd.grad(F.mse_loss(model(x[4:]), y[4:]), params, create_graph=True)
    dot = sum((a * b).sum() for a, b in zip(g1, g2))
    half = torch.cat([t.reshape(-1) for t in torch.autograd.grad(dot, params)]) / 2
    torch.testing.assert_close(terms["AvgGradInner"], half)


def test_reptile_bad_arguments():
    model = tiny("cpu")
    with pytest.raises(ValueError, match="outer_lr"):
        reptile.outer_step(model, sine(2, 3, "cpu"), inner_lr=0.1, inner_steps=1, outer_lr=0)
    with pytest.raises(ValueError, match="inner_steps"):
        reptile.outer_step(model, sine(2, 3, "cpu"), inner_lr=0.1, inner_steps=0, outer_lr=1)
    with pytest.raises(ValueError, match="inner_lr"):
        reptile.outer_step(model, sine(2, 3, "cpu"), inner_lr=-1, inner_steps=1, outer_lr=1)


# ------------------------------------------------------------------------------------ Meta-SGD
def test_inner_lrs_have_parameter_shapes(device):
    model = models.SineRegressor().to(device)
    lrs = metasgd.init_inner_lrs(model, (0.005, 0.1), generator=torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        assert lrs[name].shape == p.shape and lrs[name].requires_grad
        assert lrs[name].device.type == device.type
        assert 0.005 <= lrs[name].detach().min().item() and lrs[name].detach().max().item() <= 0.1


def test_gradient_wrt_alpha_is_the_closed_form(device):
    model = tiny(device, torch.float64)
    tasks = sine(1, 6, device, torch.float64)
    lrs = metasgd.init_inner_lrs(model, (0.01, 0.1), generator=torch.Generator().manual_seed(0))
    lrs = {k: v.to(torch.float64).detach().requires_grad_(True) for k, v in lrs.items()}
    loss = metasgd.meta_loss(model, lrs, tasks)
    auto = torch.autograd.grad(loss, list(lrs.values()))
    xs, ys, xq, yq = (t[0] for t in tasks)
    params = list(model.parameters())
    g_s = torch.autograd.grad(F.mse_loss(model(xs), ys), params)
    adapted = {n: (p - lrs[n] * g).detach().requires_grad_(True) for (n, p), g in zip(model.named_parameters(), g_s)}
    from torch.func import functional_call

    g_q = torch.autograd.grad(F.mse_loss(functional_call(model, adapted, (xq,)), yq), list(adapted.values()))
    for a, gq, gs in zip(auto, g_q, g_s):
        torch.testing.assert_close(a, -gq * gs, rtol=1e-10, atol=1e-12)


def test_scalar_alpha_is_maml(device):
    model = tiny(device)
    tasks = sine(5, 5, device)
    lrs = {k: torch.full_like(p, 0.03) for k, p in model.named_parameters()}
    torch.testing.assert_close(metasgd.meta_loss(model, lrs, tasks), maml.meta_loss(model, tasks, inner_lr=0.03))
    g1 = torch.autograd.grad(metasgd.meta_loss(model, lrs, tasks), list(model.parameters()))
    g2 = torch.autograd.grad(maml.meta_loss(model, tasks, inner_lr=0.03), list(model.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_meta_sgd_trains_theta_and_alpha():
    torch.manual_seed(0)
    model = models.SineRegressor()
    lrs = metasgd.init_inner_lrs(model, 0.01)
    start = {k: v.detach().clone() for k, v in lrs.items()}
    hist = metasgd.meta_train(
        model,
        lrs,
        lambda g: data.sine_tasks(10, 10, generator=g),
        iterations=50,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert len(hist["meta_loss"]) == 50
    assert any(not torch.equal(start[k], lrs[k].detach()) for k in lrs)


def test_meta_sgd_bad_inputs():
    model = tiny("cpu")
    with pytest.raises(ValueError, match="value"):
        metasgd.init_inner_lrs(model, -0.1)
    with pytest.raises(ValueError, match="shape"):
        metasgd.meta_loss(model, {k: torch.ones(2) for k, _ in model.named_parameters()}, sine(2, 3, "cpu"))
    with pytest.raises(ValueError, match="no entry"):
        metasgd.meta_loss(model, {}, sine(2, 3, "cpu"))


def test_k_counts_inner_steps_one_step_reptile_has_no_meta_term():
    model = tiny("cpu", torch.float64, seed=1)
    x = torch.rand(12, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10 - 5
    batches = [(x[i : i + 4], 2 * torch.sin(x[i : i + 4] - 1)) for i in range(0, 12, 4)]
    terms = reptile.taylor_terms(model, batches)
    measured = reptile.expected_updates(model, batches, inner_lr=1e-3, k=1)
    torch.testing.assert_close(measured["Reptile"], terms["AvgGrad"])  # exactly: one step is the gradient
    predicted = reptile.predicted_updates(terms, inner_lr=1e-3, k=1)
    for name in ("MAML", "FOMAML"):  # the meta-learning term is already there with one inner step
        without = (measured[name] - terms["AvgGrad"]).norm()
        assert (measured[name] - predicted[name]).norm() < 0.05 * without
    with pytest.raises(ValueError, match="k"):
        reptile.expected_updates(model, batches, inner_lr=1e-3, k=3)  # needs k + 1 = 4 minibatches
