r"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019): the meta-gradient without the unrolled loop.

Derived in ``notebooks/10_feature_reuse.ipynb``. The inner problem is regularised towards θ,

.. math:: \theta^{\prime\star}(\theta) = \arg\min_{\theta'}\; G(\theta', \theta), \qquad
          G(\theta', \theta) = L_S(\theta') + \tfrac{\lambda}{2}\|\theta' - \theta\|^2

(Rajeswaran et al. 2019, eq. 3–4; they write φ for θ′, a letter this course keeps for the sine phase).
At the minimum :math:`\nabla L_S(\theta^{\prime\star}) + \lambda(\theta^{\prime\star} - \theta) = 0`;
differentiating this identity in θ gives
:math:`(H + \lambda I)\,\mathrm d\theta^{\prime\star}/\mathrm d\theta = \lambda I`, so

.. math:: \frac{\mathrm d\theta^{\prime\star}}{\mathrm d\theta} = \Big(I + \frac{H}{\lambda}\Big)^{-1}, \qquad
          \nabla_\theta L_Q(\theta^{\prime\star})
          = \Big(I + \frac{H}{\lambda}\Big)^{-1}\nabla L_Q(\theta^{\prime\star}),
          \quad H = \nabla^2 L_S(\theta^{\prime\star})

(eq. 5–6), valid where :math:`I + H/\lambda` is invertible. It depends only on θ′⋆, not on the path that
found it: the inner loop keeps no graph, and the linear system is solved by conjugate gradient with
Hessian-vector products (CG needs :math:`I + H/\lambda` positive definite, i.e. λ > −(smallest eigenvalue of H)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu.functional import LossFn, Params, default_loss, task_loss

__all__ = ["conjugate_gradient", "implicit_meta_gradient", "proximal_adapt"]


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k] * b[k]).sum() for k in a)


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, *, iterations: int = 10) -> Params:
    r"""Solve :math:`A u = b` for a symmetric positive-definite A given only as ``matvec(u) = A u``.

    Conjugate gradient (Hestenes & Stiefel 1952) from :math:`u_0 = 0`: residual r = b − Au, search
    direction p; each iteration :math:`a = r^\top r / p^\top A p`, :math:`u \leftarrow u + a p`,
    :math:`r \leftarrow r - a A p`, :math:`p \leftarrow r + (r_{new}^\top r_{new} / r^\top r)\,p`. Exact after
    at most dim(b) iterations in exact arithmetic; stops early when the residual vanishes.
    """
    iterations = v.integer("iterations", iterations)
    if not isinstance(b, dict) or not b:
        raise TypeError("b must be a non-empty dict of tensors (a vector split like the parameters)")
    u = {k: torch.zeros_like(t) for k, t in b.items()}
    r = {k: t.clone() for k, t in b.items()}
    p = {k: t.clone() for k, t in b.items()}
    rr = _dot(r, r)
    for _ in range(iterations):
        if rr <= torch.finfo(rr.dtype).tiny:
            break
        ap = matvec(p)
        pap = _dot(p, ap)
        if pap <= 0:
            raise ValueError("the matrix is not positive definite along a search direction; raise lam")
        a = rr / pap
        u = {k: u[k] + a * p[k] for k in u}
        r = {k: r[k] - a * ap[k] for k in r}
        rr_new = _dot(r, r)
        p = {k: r[k] + (rr_new / rr) * p[k] for k in p}
        rr = rr_new
    return u


def proximal_adapt(
    model: nn.Module,
    params: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lam: float,
    inner_lr: float,
    steps: int,
    differentiable: bool = False,
    loss_fn: LossFn | None = None,
) -> Params:
    r"""``steps`` gradient steps from θ′ = θ on iMAML's inner problem
    :math:`G(\theta') = L_S(\theta') + \frac{\lambda}{2}\|\theta' - \theta\|^2`:

    .. math:: \theta' \leftarrow \theta' - \alpha\big(\nabla L_S(\theta') + \lambda(\theta' - \theta)\big).

    With ``differentiable=False`` (iMAML) nothing is kept for backward: the result is detached. With
    ``differentiable=True`` the graph of every step is kept, and back-propagating through the result
    gives the *unrolled* meta-gradient that the implicit one approximates.
    """
    lam, inner_lr = v.positive("lam", lam), v.positive("inner_lr", inner_lr)
    steps = v.integer("steps", steps, low=0)
    loss_fn = loss_fn or default_loss(y)
    theta = params if differentiable else {k: p.detach() for k, p in params.items()}
    adapted = dict(theta)
    for _ in range(steps):
        with torch.enable_grad():
            current = adapted if differentiable else {k: p.detach().requires_grad_(True) for k, p in adapted.items()}
            grads = torch.autograd.grad(
                task_loss(current, model, x, y, loss_fn), list(current.values()), create_graph=differentiable
            )
        adapted = {k: current[k] - inner_lr * (g + lam * (current[k] - theta[k])) for k, g in zip(current, grads)}
        if not differentiable:
            adapted = {k: p.detach() for k, p in adapted.items()}
    return adapted


def implicit_meta_gradient(
    model: nn.Module,
    params: Params,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xq: torch.Tensor,
    yq: torch.Tensor,
    *,
    lam: float,
    inner_lr: float,
    steps: int,
    cg_steps: int = 10,
    loss_fn: LossFn | None = None,
) -> Params:
    r"""iMAML's meta-gradient of one task by conjugate gradient.

    .. math:: \nabla_\theta L_Q(\theta^{\prime\star}) = (I + H/\lambda)^{-1}\nabla L_Q(\theta^{\prime\star})

    θ′⋆ is approximated by ``steps`` steps of :func:`proximal_adapt` (no graph kept); H is the Hessian of
    the support loss at θ′⋆, used only through Hessian-vector products. The graph of one support gradient
    is the only graph alive during the ``cg_steps`` products, whatever ``steps`` is.

    Parameters
    ----------
    params : dict
        θ, the meta-parameters (the model's own or a copy).
    lam : float > 0
        λ, the strength of the pull towards θ.
    inner_lr, steps :
        α and k of the inner gradient descent on G.
    cg_steps : int ≥ 1
        Conjugate-gradient iterations.
    """
    loss_fn = loss_fn or default_loss(ys)
    adapted = proximal_adapt(model, params, xs, ys, lam=lam, inner_lr=inner_lr, steps=steps, loss_fn=loss_fn)
    adapted = {k: p.requires_grad_(True) for k, p in adapted.items()}
    with torch.enable_grad():
        g_query = torch.autograd.grad(task_loss(adapted, model, xq, yq, loss_fn), list(adapted.values()))
        g_support = torch.autograd.grad(
            task_loss(adapted, model, xs, ys, loss_fn), list(adapted.values()), create_graph=True
        )

    def matvec(vec: Params) -> Params:  # (I + H/λ) v, with H v from one backward pass of g_support · v
        with torch.enable_grad():
            dot = sum((g * vec[k]).sum() for g, k in zip(g_support, adapted))
            hv = torch.autograd.grad(dot, list(adapted.values()), retain_graph=True)
        return {k: vec[k] + h / lam for k, h in zip(adapted, hv)}

    return conjugate_gradient(matvec, dict(zip(adapted, g_query)), iterations=cg_steps)
