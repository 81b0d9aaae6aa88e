"""Implicit MAML: conjugate gradient solves SPD systems, the proximal inner loop minimises
L_S + λ/2‖θ′ − θ‖², and (I + H/λ)⁻¹∇L_Q(θ′*) equals the unrolled meta-gradient as the inner loop converges."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import data, imaml, models
from metaadv_edu.chapters import feature_reuse as chapter
from metaadv_edu.functional import params_of, task_loss
from tests.wrong import rejects


def _spd(n, seed=0, cond=100.0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)) @ q.T, torch.randn(
        n, generator=g, dtype=torch.float64
    )


def test_conjugate_gradient_solves_in_n_steps():
    a, b = _spd(8)
    u = imaml.conjugate_gradient(lambda p: {"v": a @ p["v"]}, {"v": b}, iterations=8)["v"]
    assert torch.allclose(u, torch.linalg.solve(a, b), atol=1e-8)


def test_conjugate_gradient_rejects_an_indefinite_matrix():
    a, b = _spd(4)
    with pytest.raises(ValueError, match="positive definite"):
        imaml.conjugate_gradient(lambda p: {"v": -(a @ p["v"])}, {"v": b}, iterations=4)
    with pytest.raises(TypeError, match="b must be"):
        imaml.conjugate_gradient(lambda p: p, {}, iterations=4)


def _setup():
    torch.manual_seed(0)
    net = models.SineRegressor(activation="tanh").double()
    t = data.sine_tasks(1, 10, generator=torch.Generator().manual_seed(1))
    return net, [x[0].double() for x in t]


def test_proximal_adapt_reaches_the_stationary_point_of_the_regularised_loss():
    net, (xs, ys, _, _) = _setup()
    theta = params_of(net, detach=True)
    phi = imaml.proximal_adapt(net, theta, xs, ys, lam=20.0, inner_lr=0.02, steps=400)
    phi = {k: p.requires_grad_(True) for k, p in phi.items()}
    g = torch.autograd.grad(task_loss(phi, net, xs, ys, F.mse_loss), list(phi.values()))
    residual = max(float((gi + 20.0 * (phi[k] - theta[k])).detach().abs().max()) for gi, k in zip(g, phi))
    assert residual < 1e-10
    assert all(
        not p.requires_grad or p.grad_fn is None
        for p in imaml.proximal_adapt(net, theta, xs, ys, lam=1.0, inner_lr=0.01, steps=2).values()
    )


def test_implicit_gradient_equals_unrolled_at_convergence():
    errors = chapter.implicit_gradient_check(steps=(5, 200))
    assert errors[0] > 1e-3 and errors[1] < 1e-10


@pytest.mark.parametrize(
    "kwargs, match", [({"lam": 0.0}, "lam"), ({"inner_lr": -1.0}, "inner_lr"), ({"steps": -1}, "steps")]
)
def test_bad_hyperparameters_name_the_argument(kwargs, match):
    net, (xs, ys, _, _) = _setup()
    settings = {"lam": 1.0, "inner_lr": 0.01, "steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        imaml.proximal_adapt(net, params_of(net), xs, ys, **settings)


def _with_matvec(factor):
    """An implicit meta-gradient solving a wrong linear system ``factor(v, Hv, λ)`` by CG."""

    def meta_gradient(model, params, xs, ys, xq, yq, *, lam, inner_lr, steps, cg_steps=10):
        phi = imaml.proximal_adapt(model, params, xs, ys, lam=lam, inner_lr=inner_lr, steps=steps)
        phi = {k: p.requires_grad_(True) for k, p in phi.items()}
        gq = torch.autograd.grad(task_loss(phi, model, xq, yq, F.mse_loss), list(phi.values()))
        gs = torch.autograd.grad(task_loss(phi, model, xs, ys, F.mse_loss), list(phi.values()), create_graph=True)

        def matvec(vec):
            hv = torch.autograd.grad(
                sum((g * vec[k]).sum() for g, k in zip(gs, phi)), list(phi.values()), retain_graph=True
            )
            return {k: factor(vec[k], h, lam) for k, h in zip(phi, hv)}

        return imaml.conjugate_gradient(matvec, dict(zip(phi, gq)), iterations=cg_steps)

    return meta_gradient


@rejects("implicit_gradient", "(I + λH)⁻¹ instead of (I + H/λ)⁻¹ (λ on the wrong side)")
def test_the_check_rejects_lambda_on_the_wrong_side():
    errors = chapter.implicit_gradient_check(_with_matvec(lambda v, hv, lam: v + lam * hv))
    assert errors[-1] > 1e-3


@rejects("implicit_gradient", "first-order iMAML: ∇L_Q(θ′*) without the (I + H/λ)⁻¹ factor")
def test_the_check_rejects_the_first_order_gradient():
    errors = chapter.implicit_gradient_check(_with_matvec(lambda v, hv, lam: v))
    assert errors[-1] > 1e-3


@rejects("implicit_gradient", "(I − H/λ)⁻¹ (sign of the Hessian term flipped)")
def test_the_check_rejects_a_flipped_hessian_sign():
    errors = chapter.implicit_gradient_check(_with_matvec(lambda v, hv, lam: v - hv / lam))
    assert errors[-1] > 1e-3


def test_the_check_scores_a_refused_solve_as_infinite_error():
    def refuses(*args, **kwargs):
        raise ValueError("the matrix is not positive definite along a search direction; raise lam")

    assert chapter.implicit_gradient_check(refuses, steps=(5, 20)) == [float("inf"), float("inf")]


def test_the_check_names_a_bad_argument():
    with pytest.raises(ValueError, match="lam"):
        chapter.implicit_gradient_check(lam=0.0)
