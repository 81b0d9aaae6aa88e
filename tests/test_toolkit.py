"""Notebook 00's toolkit: each check accepts the right tool and rejects a plausible wrong one."""

import math

import pytest
import torch

from metaadv_edu import toolkit
from tests.wrong import rejects

X = torch.tensor([0.3, -1.2, 0.7, 2.0], dtype=torch.float64)
A = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.3, -0.7, 1.1, 2.0], [-1.5, 0.4, 0.9, -0.2]], dtype=torch.float64)


def f(x):  # log-sum-exp of a linear map, times a smooth factor: a non-separable test function
    return torch.logsumexp(A @ x, 0) * (1 + x.pow(2).sum()).sqrt()


def g(x):
    return (x.pow(2) * torch.sin(x)).sum()


def test_gradient_check_accepts_autograd():
    error, ok = toolkit.check_gradient(f, lambda x: toolkit.autograd_gradient(f, x), X)
    assert ok and error < 1e-8


def test_gradient_check_accepts_the_hand_derived_formula():
    assert toolkit.check_gradient(g, lambda x: 2 * x * torch.sin(x) + x.pow(2) * torch.cos(x), X)[1]


@rejects("toolkit_gradient", "product rule with one term dropped: d/dx x² sin x written as 2x sin x")
def test_gradient_check_rejects_a_dropped_product_rule_term():
    error, ok = toolkit.check_gradient(g, lambda x: 2 * x * torch.sin(x), X)
    assert not ok and error > 0.1


@rejects("toolkit_gradient", "sign error: the gradient of the loss used as the ascent direction")
def test_gradient_check_rejects_a_flipped_sign():
    assert not toolkit.check_gradient(f, lambda x: -toolkit.autograd_gradient(f, x), X)[1]


def test_hvp_matches_the_explicit_hessian():
    v = torch.tensor([1.0, 0.5, -2.0, 0.1], dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(f, X)
    assert torch.allclose(toolkit.hessian_vector_product(f, X, v), hessian @ v, atol=1e-12)
    assert toolkit.check_hessian_vector_product(f, toolkit.hessian_vector_product, X, v)[1]


@rejects("toolkit_hvp", "gradient times v elementwise instead of the derivative of ∇fᵀv")
def test_hvp_check_rejects_gradient_times_v():
    v = torch.ones(4, dtype=torch.float64)
    assert not toolkit.check_hessian_vector_product(f, lambda f_, x, v_: toolkit.autograd_gradient(f_, x) * v_, X, v)[1]


@rejects("toolkit_hvp", "only the Hessian's diagonal: diag(H) ⊙ v")
def test_hvp_check_rejects_the_diagonal_approximation():
    v = torch.tensor([1.0, 0.5, -2.0, 0.1], dtype=torch.float64)

    def diagonal(f_, x, v_):
        return torch.autograd.functional.hessian(f_, x).diagonal() * v_

    assert not toolkit.check_hessian_vector_product(f, diagonal, X, v)[1]


@pytest.mark.parametrize("p", [math.inf, 2])
def test_ball_check_accepts_the_dual_norm_maximisers(p):
    worst, ok = toolkit.check_ball_maximiser(toolkit.ball_maximiser, p)
    assert ok and worst <= 1e-9


@rejects("toolkit_dual_norm", "the L2 maximiser g/‖g‖₂ used for the L∞ ball")
def test_ball_check_rejects_the_l2_direction_in_the_linf_ball():
    assert not toolkit.check_ball_maximiser(lambda g_, p: toolkit.ball_maximiser(g_, 2), math.inf)[1]


@rejects("toolkit_dual_norm", "sign(g) used in the L2 ball (outside it) or scaled into it (not the maximiser)")
def test_ball_check_rejects_sign_steps_in_the_l2_ball():
    assert not toolkit.check_ball_maximiser(lambda g_, p: torch.sign(g_), 2)[1]
    assert not toolkit.check_ball_maximiser(lambda g_, p: torch.sign(g_) / math.sqrt(g_.numel()), 2)[1]


@rejects("toolkit_dual_norm", "0.98·g/‖g‖₂: feasible and in the right direction, but short of the sphere")
@rejects("toolkit_dual_norm", "the L2 maximiser with one coordinate's sign flipped")
def test_ball_check_rejects_near_maximisers_in_the_l2_ball():
    def flipped(g_, p):
        delta = toolkit.ball_maximiser(g_, 2).clone()
        delta[0] = -delta[0]
        return delta

    worst, ok = toolkit.check_ball_maximiser(lambda g_, p: 0.98 * toolkit.ball_maximiser(g_, 2), 2)
    assert not ok and worst > 1e-3
    assert not toolkit.check_ball_maximiser(flipped, 2)[1]


def test_jsd_check_accepts_the_definition_and_agrees_with_the_gan_module_on_a_grid():
    assert toolkit.check_js_divergence(toolkit.js_divergence)[1]
    from metaadv_edu import gan

    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    q = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    assert toolkit.js_divergence(p, q).item() == pytest.approx(gan.js_divergence(p, q, 1.0).item())


@rejects("toolkit_jsd", "the symmetrised KL ½(KL(p‖q) + KL(q‖p)) taken for the JSD")
def test_jsd_check_rejects_the_symmetrised_kl():
    def symmetrised(p, q):
        return 0.5 * (toolkit.kl_divergence(p, q) + toolkit.kl_divergence(q, p))

    assert not toolkit.check_js_divergence(symmetrised)[1]


@rejects("toolkit_jsd", "the JSD in bits (log base 2) instead of nats")
def test_jsd_check_rejects_bits():
    assert not toolkit.check_js_divergence(lambda p, q: toolkit.js_divergence(p, q) / math.log(2))[1]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: toolkit.finite_difference_gradient(g, X, h=0.0), "h must be"),
        (lambda: toolkit.ball_maximiser(X, 1), "p must be"),
        (lambda: toolkit.check_ball_maximiser(toolkit.ball_maximiser, 3), "p must be"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
