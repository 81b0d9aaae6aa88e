"""The mathematical tools the course leans on, each with a numerical check (notebook 00's toolkit).

* **Finite differences** check a gradient: :math:`\\partial f/\\partial x_i \\approx
  (f(x + h e_i) - f(x - h e_i)) / 2h`, with an error of order h² (central differences, float64).
* **Hessian-vector products** :math:`Hv = \\nabla_x(\\nabla_x f(x)^\\top v)` cost two backward passes and
  never form H (used by MAML in 05, Meta-SGD in 07, implicit MAML in 10). Finite differences of the
  gradient check them: :math:`Hv \\approx (\\nabla f(x + hv) - \\nabla f(x - hv)) / 2h`.
* **Dual norms**: :math:`\\max_{\\|\\delta\\|_p \\le 1} \\delta^\\top g = \\|g\\|_q` with 1/p + 1/q = 1; for
  p = ∞ the maximiser is sign(g) and the value ‖g‖₁ (FGSM in 01), for p = 2 it is g/‖g‖₂
  (02's Danskin check, 08's L2 step).
* **KL and Jensen–Shannon divergences** of discrete distributions, in nats:
  :math:`\\mathrm{KL}(p\\|q) = \\sum_i p_i \\log(p_i/q_i)`, :math:`\\mathrm{JSD}(p, q) = \\tfrac12\\mathrm{KL}(p\\|m)
  + \\tfrac12\\mathrm{KL}(q\\|m)` with m = (p + q)/2; 0 ≤ JSD ≤ log 2 (GANs in 03).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from metaadv_edu import _validate

__all__ = [
    "autograd_gradient",
    "ball_maximiser",
    "check_ball_maximiser",
    "check_gradient",
    "check_hessian_vector_product",
    "check_js_divergence",
    "finite_difference_gradient",
    "hessian_vector_product",
    "js_divergence",
    "kl_divergence",
    "relative_error",
]

Function = Callable[[torch.Tensor], torch.Tensor]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / max(‖b‖, 1e-12)."""
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def finite_difference_gradient(f: Function, x: torch.Tensor, *, h: float = 1e-6) -> torch.Tensor:
    """Central-difference gradient of a scalar function ``f`` at ``x`` (computed in float64)."""
    h = _validate.positive("h", h)
    x = x.detach().to(torch.float64)
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for i in range(x.numel()):
        e = torch.zeros_like(x).view(-1)
        e[i] = h
        e = e.view_as(x)
        flat[i] = (f(x + e) - f(x - e)).item() / (2 * h)
    return grad


def hessian_vector_product(f: Function, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hv = ∇ₓ(∇ₓf(x)ᵀv) by two backward passes; the Hessian is never formed."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    return hv


def autograd_gradient(f: Function, x: torch.Tensor) -> torch.Tensor:
    """∇ₓf(x) by one backward pass (the reference the checks compare formulas with)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    return g


def check_gradient(f: Function, gradient: Function, x: torch.Tensor, *, tol: float = 1e-6) -> tuple[float, bool]:
    """Compare a claimed gradient ``gradient(x)`` of ``f`` with central finite differences at ``x``.

    Returns the relative error and whether it is below ``tol``; in float64 the finite differences are
    accurate to about 1e-9 for smooth functions, so a formula with a wrong factor or sign fails clearly.
    """
    x = x.detach().to(torch.float64)
    error = relative_error(gradient(x).detach(), finite_difference_gradient(f, x))
    return error, error < tol


def check_hessian_vector_product(
    f: Function,
    hvp: Callable[[Function, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    v: torch.Tensor,
    *,
    h: float = 1e-5,
    tol: float = 1e-6,
) -> tuple[float, bool]:
    """Compare ``hvp(f, x, v)`` with the central difference of gradients (∇f(x + hv) − ∇f(x − hv)) / 2h."""
    x, v = x.detach().to(torch.float64), v.detach().to(torch.float64)
    h = _validate.positive("h", h)
    reference = (autograd_gradient(f, x + h * v) - autograd_gradient(f, x - h * v)) / (2 * h)
    error = relative_error(hvp(f, x, v).detach(), reference)
    return error, error < tol


def ball_maximiser(g: torch.Tensor, p: float) -> torch.Tensor:
    """argmax of δᵀg over the unit ball ‖δ‖_p ≤ 1, for p = ∞ (sign g) or p = 2 (g/‖g‖₂)."""
    if p == math.inf:
        return torch.sign(g)
    if p == 2:
        return g / g.norm().clamp_min(1e-12)
    raise ValueError(f"p must be math.inf or 2, got {p}")


def _ball_points(dim: int, p: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Points on the boundary of the unit L_p ball: every corner (p = ∞, small dim) or random directions."""
    if p == math.inf:
        corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0], dtype=torch.float64)] * dim).reshape(-1, dim)
        inside = 2 * torch.rand(n, dim, generator=generator, dtype=torch.float64) - 1
        return torch.cat([corners, inside])
    points = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return points / points.norm(dim=1, keepdim=True)


def check_ball_maximiser(
    maximiser: Callable[[torch.Tensor, float], torch.Tensor],
    p: float,
    *,
    dim: int = 6,
    n_gradients: int = 20,
    n_points: int = 2000,
    generator: torch.Generator | None = None,
) -> tuple[float, bool]:
    """Does ``maximiser(g, p)`` return a point of the unit L_p ball with δᵀg = max over the ball?

    For random g, the claimed δ must lie in the ball and no point of the ball may do better (for p = ∞
    every corner is tried, for p = 2 random boundary points, the radial point δ/‖δ‖₂ and small moves from
    it along the sphere, so that a feasible near-maximiser such as 0.98·g/‖g‖₂ is caught); returns the
    largest amount by which a point beat the claimed maximiser (0 when none did) and the verdict.
    """
    if p not in (math.inf, 2):
        raise ValueError(f"p must be math.inf or 2, got {p}")
    dim = _validate.integer("dim", dim, low=1, high=12)
    generator = generator or torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(n_gradients):
        g = torch.randn(dim, generator=generator, dtype=torch.float64)
        delta = maximiser(g, p).detach().to(torch.float64)
        if delta.norm(p=p) > 1 + 1e-9:
            return math.inf, False
        candidates = _ball_points(dim, p, n_points, generator)
        if p == 2 and delta.norm() > 0:
            radial = delta / delta.norm()
            moves = radial + 0.05 * torch.randn(n_points, dim, generator=generator, dtype=torch.float64)
            candidates = torch.cat([candidates, radial[None], moves / moves.norm(dim=1, keepdim=True)])
        beaten = (candidates @ g).max() - delta @ g
        worst = max(worst, beaten.item())
    return worst, worst <= 1e-9


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ p log(p/q) in nats for probability vectors (0·log 0 = 0; ∞ where q = 0 < p)."""
    terms = torch.where(p > 0, p * (torch.log(p) - torch.log(q)), torch.zeros_like(p))
    return terms.sum(-1)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JSD(p, q) = ½KL(p‖m) + ½KL(q‖m), m = (p + q)/2, in nats; between 0 and log 2."""
    m = (p + q) / 2
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def check_js_divergence(
    jsd: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, generator: torch.Generator | None = None
) -> tuple[float, bool]:
    """Hold a claimed JSD to its defining properties, in nats: JSD(p, p) = 0, JSD = log 2 for disjoint
    supports, symmetry, and ½KL(p‖m) + ½KL(q‖m) on random pairs. Returns the largest violation."""
    generator = generator or torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(50, 8, generator=generator, dtype=torch.float64), -1)
    q = torch.softmax(torch.randn(50, 8, generator=generator, dtype=torch.float64), -1)
    disjoint_p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    disjoint_q = torch.tensor([0.0, 0.0, 0.25, 0.75], dtype=torch.float64)
    m = (p + q) / 2
    gaps = [
        jsd(p, p).abs().max(),
        (jsd(disjoint_p, disjoint_q) - math.log(2)).abs(),
        (jsd(p, q) - jsd(q, p)).abs().max(),
        (jsd(p, q) - 0.5 * kl_divergence(p, m) - 0.5 * kl_divergence(q, m)).abs().max(),
    ]
    worst = max(torch.nan_to_num(gap, nan=math.inf, posinf=math.inf).item() for gap in gaps)
    return worst, worst < 1e-9
