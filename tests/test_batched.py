"""The batched-MLP path of MAML's meta-loss gives the meta-gradient of the vmap path and of the loop."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import batched, data, maml, models
from metaadv_edu.functional import params_of


def _grad(loss, model):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))])


@pytest.mark.parametrize("steps, first_order", [(1, False), (3, False), (2, True)])
def test_same_meta_gradient_as_vmap_and_loop(device, steps, first_order):
    torch.manual_seed(0)
    model = models.SineRegressor().to(device)
    tasks = data.sine_tasks(7, 5, k_query=9, generator=torch.Generator().manual_seed(1), device=device)
    kw = {"inner_lr": 0.05, "steps": steps, "first_order": first_order}
    fast = maml.meta_loss(model, tasks, **kw)
    slow = maml.meta_loss(model, tasks, fast_path=False, **kw)
    loop = maml.meta_loss_loop(model, tasks, **kw)
    assert torch.allclose(fast, loop, rtol=1e-5, atol=1e-6) and torch.allclose(slow, loop, rtol=1e-5, atol=1e-6)
    g_loop = _grad(loop, model)
    assert torch.allclose(_grad(fast, model), g_loop, rtol=1e-4, atol=1e-6)
    assert torch.allclose(_grad(slow, model), g_loop, rtol=1e-4, atol=1e-6)


def test_classification_mlp_with_cross_entropy(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).to(device)
    g = torch.Generator().manual_seed(2)
    tasks = data.Tasks(
        torch.randn(5, 6, 4, generator=g).to(device),
        torch.randint(3, (5, 6), generator=g).to(device),
        torch.randn(5, 4, 4, generator=g).to(device),
        torch.randint(3, (5, 4), generator=g).to(device),
    )
    fast = maml.meta_loss(model, tasks, inner_lr=0.3, steps=2)
    loop = maml.meta_loss_loop(model, tasks, inner_lr=0.3, steps=2)
    assert torch.allclose(_grad(fast, model), _grad(loop, model), rtol=1e-4, atol=1e-6)


def test_the_inner_gradients_need_the_sum_over_tasks():
    # A plausible slip: differentiating the *mean* support loss gives every task ∇L_S / n, a far
    # smaller inner step. The comparison with the loop must catch it.
    torch.manual_seed(0)
    model = models.SineRegressor()
    tasks = data.sine_tasks(6, 5, generator=torch.Generator().manual_seed(3))
    params = params_of(model)
    n = tasks.x_support.shape[0]
    adapted = {k: p.unsqueeze(0).expand(n, *p.shape) for k, p in params.items()}
    mean_support = F.mse_loss(
        batched.batched_forward(model, adapted, tasks.x_support).flatten(0, 1), tasks.y_support.flatten(0, 1)
    )
    grads = torch.autograd.grad(mean_support, list(adapted.values()), create_graph=True)
    wrong = {k: a - 0.5 * g for (k, a), g in zip(adapted.items(), grads)}
    wrong_loss = F.mse_loss(
        batched.batched_forward(model, wrong, tasks.x_query).flatten(0, 1), tasks.y_query.flatten(0, 1)
    )
    loop = maml.meta_loss_loop(model, tasks, inner_lr=0.5)
    right = maml.meta_loss(model, tasks, inner_lr=0.5)
    assert torch.allclose(right, loop, rtol=1e-5)
    assert not torch.allclose(wrong_loss, loop, rtol=1e-3)


def test_only_plain_mlps_take_the_fast_path():
    assert batched.supports(models.SineRegressor())
    assert batched.supports(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)))
    assert not batched.supports(models.TinyCNN(1, 10, width=4))
    assert not batched.supports(nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)))
    assert not batched.supports(nn.Sequential(nn.ReLU()))
    assert not batched.supports(nn.Linear(2, 1))


def test_detached_parameters_and_no_grad_evaluation_work_like_vmap():
    torch.manual_seed(0)
    model = models.SineRegressor()
    tasks = data.sine_tasks(4, 5, generator=torch.Generator().manual_seed(4))
    detached = params_of(model, detach=True)
    plain = {k: p.detach() for k, p in model.named_parameters()}
    reference = maml.meta_loss(model, tasks, inner_lr=0.05, steps=2, fast_path=False, params=plain)
    assert torch.allclose(maml.meta_loss(model, tasks, inner_lr=0.05, steps=2, params=plain), reference)
    assert torch.allclose(maml.meta_loss(model, tasks, inner_lr=0.05, steps=2, params=detached), reference)
    with torch.no_grad():
        value = maml.meta_loss(model, tasks, inner_lr=0.05, steps=2)
    assert not value.requires_grad and torch.allclose(value, reference)
