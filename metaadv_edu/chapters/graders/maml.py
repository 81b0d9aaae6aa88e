"""Exercise graders of notebook 05 · MAML (re-exported by :mod:`metaadv_edu.chapters.maml`, whose ``POINTS``
weighs them): the inner step, the meta-loss, the meta-gradient by a Hessian-vector product, and the
two-step learning-rate gradient written by hand."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import data, grading, maml
from metaadv_edu.functional import forward

__all__ = [
    "check_inner_step",
    "check_maml_hvp",
    "check_maml_meta_loss",
    "check_two_step_lr_gradient",
    "data_swap",
    "two_step_lr_gradient",
]


def _sine_case(device, seed: int, n_tasks: int = 3, k: int = 5):
    """A small tanh MLP, ``n_tasks`` sinusoid tasks, and parameters θ that differ from the module's own
    weights: a step that ignores ``params`` and differentiates ``model(x)`` cannot pass."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    tasks = data.sine_tasks(n_tasks, k, generator=torch.Generator().manual_seed(seed), device=device)
    g = torch.Generator().manual_seed(100 + seed)
    params = {
        name: (p.detach() + 0.5 * torch.randn(p.shape, generator=g).to(device)).requires_grad_(True)
        for name, p in model.named_parameters()
    }
    return model, tasks, params


def _summed_mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, target, reduction="sum")


def _inner_step_mistakes(model, params, x, y, alpha) -> list[tuple[dict, str]]:
    """Values (detached) that typical wrong inner steps return, each with its hint."""
    own = {k: p.detach().requires_grad_(True) for k, p in model.named_parameters()}
    own_step = maml.adapt(model, own, x, y, inner_lr=alpha)
    grad_at_own = {k: (own[k] - own_step[k]) / alpha for k in own}
    grad = {k: (params[k] - t) / alpha for k, t in maml.adapt(model, params, x, y, inner_lr=alpha).items()}
    summed = maml.adapt(model, params, x, y, inner_lr=alpha, loss_fn=_summed_mse)
    ignoring = (
        "that is a step from the module's own weights: the loss must be computed with params — "
        "forward(model, params, x) — and differentiated with respect to params, which here differ "
        "from the module's weights (in MAML's outer loop they are the meta-parameters, in Exercise 2 "
        "any θ)"
    )
    return [
        ({k: own_step[k].detach() for k in own}, ignoring),
        (
            {k: (params[k] - alpha * grad_at_own[k]).detach() for k in own},
            "you start from params but take the gradient at the module's own weights (model(x)): the "
            "gradient must be the loss's at params, through forward(model, params, x)",
        ),
        ({k: (params[k] + alpha * grad[k]).detach() for k in own}, "wrong sign: gradient *descent* subtracts α·∇L"),
        (
            {k: t.detach() for k, t in summed.items()},
            "the loss is the *mean* squared error over the support points (F.mse_loss), not their sum",
        ),
        ({k: (params[k] - grad[k]).detach() for k in own}, "scale the gradient by the inner learning rate α"),
    ]


def check_inner_step(my_step: Callable) -> bool:
    """Grade ``my_step(model, params, x, y, inner_lr) -> new_params``: one differentiable MAML inner
    step θ′ = θ − α∇_θ L(θ; x, y) on the MSE loss, for ``params`` a dict of tensors θ that differ from
    the module's own weights."""

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((0, 0.1), (1, 0.01)):
                model, tasks, params = _sine_case(device, seed)
                x, y = tasks.x_support[0], tasks.y_support[0]
                before = [p.detach().clone() for p in model.parameters()]
                out = grading.call(my_step, model, dict(params), x, y, alpha)
                if any(not torch.equal(b, p) for b, p in zip(before, model.parameters())):
                    raise grading.Stop(
                        "your step changed the model's own parameters: return a new dict "
                        "θ′ and leave the module untouched"
                    )
                if not isinstance(out, dict) or set(out) != set(params):
                    raise grading.Stop("return a dict with the same keys as params (name → tensor)")
                ref = maml.adapt(model, params, x, y, inner_lr=alpha)
                values = {k: grading.tensor_like(out[k], ref[k], f"new_params[{k!r}]") for k in ref}
                if all(grading.close(values[k], ref[k].detach()) for k in ref):
                    if not all(out[k].requires_grad for k in out):
                        raise grading.Stop(
                            "the values are right, but θ′ is detached from θ: MAML needs to "
                            "differentiate through the step (torch.autograd.grad(..., "
                            "create_graph=True) or torch.func.grad)"
                        )
                    g_out = torch.autograd.grad(
                        sum(t.sum() ** 2 for t in out.values()), list(params.values()), allow_unused=True
                    )
                    g_ref = torch.autograd.grad(sum(t.sum() ** 2 for t in ref.values()), list(params.values()))
                    if any(a is None for a in g_out) or not all(
                        grading.close(a, b, 1e-4) for a, b in zip(g_out, g_ref)
                    ):
                        raise grading.Stop(
                            "θ′ has the right values but the wrong derivative with respect to θ: "
                            "the gradient term must stay in the graph (create_graph=True) — "
                            "without it the Hessian term of the meta-gradient is lost"
                        )
                    continue
                for wrong, hint in _inner_step_mistakes(model, params, x, y, alpha):
                    if all(grading.close(values[k], wrong[k]) for k in ref):
                        raise grading.Stop(hint)
                raise grading.Stop(
                    "θ′ differs from θ − α∇L(θ); differentiate the loss of "
                    "forward(model, params, x) with respect to params"
                )
        return "θ′ = θ − α∇L(θ) at the given params, differentiable, model untouched"

    return grading.run("MAML inner step", body)


def check_maml_meta_loss(my_meta_loss: Callable) -> bool:
    """Grade ``my_meta_loss(model, params, tasks, inner_lr) -> loss``: the mean over tasks of the query MSE
    after one second-order inner step from ``params`` (θ, which differ from the module's own weights) on
    each support set; ``.backward()`` gives the meta-gradient with respect to ``params``."""

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((3, 0.1), (2, 0.05)):
                model, tasks, params = _sine_case(device, seed)
                ref = maml.meta_loss(model, tasks, inner_lr=alpha, params=params)
                out = grading.call(my_meta_loss, model, dict(params), tasks, alpha)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise grading.Stop("return the meta-loss as a single-number tensor")
                value = out.detach().reshape(())
                if not grading.close(value, ref.detach(), 1e-4):
                    _meta_loss_mistake(value, ref.detach(), model, params, tasks, alpha)
                if not out.requires_grad:
                    raise grading.Stop("the meta-loss has no gradient: keep the graph through adaptation")
                theta = list(params.values())
                g_out = torch.autograd.grad(out, theta, allow_unused=True)
                if any(g is None for g in g_out):
                    raise grading.Stop(
                        "the meta-gradient does not reach every entry of params: adapt from params "
                        "(not from the module's own weights) and keep the graph"
                    )
                g_ref = torch.autograd.grad(ref, theta)
                fo = maml.meta_loss(model, tasks, inner_lr=alpha, first_order=True, params=params)
                g_fo = torch.autograd.grad(fo, theta)
                if not all(grading.close(a, b, 1e-4) for a, b in zip(g_out, g_ref)):
                    if all(grading.close(a, b, 1e-4) for a, b in zip(g_out, g_fo)):
                        raise grading.Stop(
                            "Hessian term missing: the value is right but the gradient is "
                            "first-order MAML's; keep create_graph=True in the inner step"
                        )
                    raise grading.Stop("the value is right but the meta-gradient is not")
        return "value and second-order meta-gradient with respect to params both match"

    return grading.run("MAML meta-loss", body)


def _meta_loss_mistake(value, ref, model, params, tasks, alpha) -> None:
    """Name the typical mistake whose value the meta-loss matches, or raise the generic hint."""
    own = {k: p.detach() for k, p in model.named_parameters()}
    with torch.no_grad():
        no_adapt = F.mse_loss(forward(model, params, tasks.x_query), tasks.y_query)

    def summed_inner_step(xs, ys, xq, yq):
        adapted = maml.adapt(model, params, xs, ys, inner_lr=alpha, loss_fn=_summed_mse)
        return F.mse_loss(forward(model, adapted, xq), yq)

    candidates = [
        (tasks.n_tasks * ref, "you summed over tasks; take the mean"),
        (no_adapt, "that is the query loss at θ: adapt to each task's support set first"),
        (
            maml.meta_loss(model, data_swap(tasks), inner_lr=alpha, params=params).detach(),
            "the outer loss must be measured on the *query* set, not the support set",
        ),
        (
            maml.meta_loss(model, tasks, inner_lr=alpha, params=own).detach(),
            "that is the meta-loss at the module's own weights: adapt from params, with "
            "forward(model, params, x), not model(x)",
        ),
        (
            torch.stack([summed_inner_step(*task) for task in zip(*tasks)]).mean().detach(),
            "use the mean squared error (F.mse_loss) in the inner step too, not the sum over support points",
        ),
    ]
    for wrong, hint in candidates:
        if grading.close(value, wrong, 1e-4):
            raise grading.Stop(hint)
    raise grading.Stop("not the mean query loss after one inner step on the support set")


def data_swap(tasks):
    """The same tasks with the query set replaced by the support set (a typical mistake's value)."""

    return data.Tasks(tasks.x_support, tasks.y_support, tasks.x_support, tasks.y_support)


def check_maml_hvp(my_meta_grad: Callable) -> bool:
    """Grade ``my_meta_grad(support_loss, query_grad, theta, inner_lr) -> g``: MAML's one-step meta-gradient
    (I − α∇²L_S(θ))∇L_Q(θ′) with θ′ = θ − α∇L_S(θ), for a flat θ; ``query_grad(θ′)`` returns ∇L_Q(θ′)
    without a graph, so the Hessian term must come from a Hessian-vector product."""

    def grad(fn, t, vector=None):
        t = t.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(t), t, create_graph=vector is not None)
        return g.detach() if vector is None else torch.autograd.grad(g, t, vector)[0].detach()

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((0, 0.05), (1, 0.2), (2, 0.0)):
                theta, support, query = grading.toy_regression(device, seed)
                q_grad = partial(grad, query)
                adapted = theta - alpha * grad(support, theta)
                g = q_grad(adapted)
                ref = g - alpha * grad(support, theta, g)
                try:
                    out = grading.call(my_meta_grad, support, q_grad, theta.clone(), alpha)
                except grading.Stop as stop:
                    if "does not require grad" in str(stop):
                        raise grading.Stop(
                            "to differentiate ∇L_S a second time (the Hessian-vector product), "
                            "compute it with create_graph=True"
                        ) from None
                    raise
                out = grading.tensor_like(out, ref, "the meta-gradient")
                if grading.close(out, ref, 1e-6):
                    continue
                grading.first_mistake(
                    out,
                    [
                        (
                            g,
                            "that is ∇L_Q(θ′) alone — first-order MAML: the Hessian term −α∇²L_S(θ)∇L_Q(θ′) is missing",
                        ),
                        (
                            g + alpha * grad(support, theta, g),
                            "the Hessian term has the wrong sign: dθ′/dθ = I − α∇²L_S(θ)",
                        ),
                        (
                            g - alpha * grad(support, adapted, g),
                            "the Hessian belongs to the inner step: take it at θ, "
                            "where the inner step starts, not at θ′",
                        ),
                        (
                            g - alpha * grad(query, adapted, g),
                            "the Hessian is the *support* loss's (the inner step "
                            "differentiates L_S), not the query loss's",
                        ),
                        (-alpha * grad(support, theta, g), "(I − αH)v keeps v itself: add the query gradient"),
                        (
                            q_grad(theta) - alpha * grad(support, theta, q_grad(theta)),
                            "the query gradient is taken at the adapted θ′ = θ − α∇L_S(θ), not at θ",
                        ),
                    ],
                    1e-6,
                )
                raise grading.Stop("not (I − α∇²L_S(θ))∇L_Q(θ′)")
        return "(I − α∇²L_S(θ))∇L_Q(θ′) through a Hessian-vector product, α = 0 included"

    return grading.run("MAML meta-gradient by HVP", body)


def _linear_task(device, seed: int, dim: int = 3):
    """A tiny linear regression task: support and query inputs (n, dim), targets (n,) and weights w (dim,), float64."""
    g = torch.Generator().manual_seed(seed)
    x_support, x_query = (
        torch.randn(5, dim, generator=g, dtype=torch.float64),
        torch.randn(7, dim, generator=g, dtype=torch.float64),
    )
    w_true, w = torch.randn(dim, generator=g, dtype=torch.float64), torch.randn(dim, generator=g, dtype=torch.float64)
    y_support = x_support @ w_true + 0.1 * torch.randn(5, generator=g, dtype=torch.float64)
    y_query = x_query @ w_true + 0.1 * torch.randn(7, generator=g, dtype=torch.float64)
    return tuple(t.to(device) for t in (x_support, y_support, x_query, y_query, w))


def _mse_grad(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """∇_w of the mean squared error (1/n)‖xw − y‖² of a linear model: (2/n)xᵀ(xw − y)."""
    return scale / len(y) * x.T @ (x @ w - y)


def two_step_lr_gradient(
    x_support,
    y_support,
    x_query,
    y_query,
    w,
    inner_lr: float,
    *,
    hessian_sign: float = -1.0,
    through_step_two: bool = True,
    scale: float = 2.0,
) -> torch.Tensor:
    r"""dL_Q(w₂)/dα for w₁ = w − α∇L_S(w), w₂ = w₁ − α∇L_S(w₁): a linear model, MSE losses (notebook 05,
    Exercise 4). With :math:`H_S = \tfrac{2}{n}X_S^\top X_S`,

    .. math::

        \frac{dL_Q(w_2)}{d\alpha} = -\nabla L_Q(w_2)^\top\big[(I - \alpha H_S)\nabla L_S(w) + \nabla L_S(w_1)\big].

    ``hessian_sign=+1``, ``through_step_two=False`` (the second step's gradient treated as constant in α) and
    ``scale=1`` (the MSE's gradient without its factor 2) give typical mistakes, for the grader's hints.
    """
    g0 = _mse_grad(x_support, y_support, w, scale)
    w1 = w - inner_lr * g0
    g1 = _mse_grad(x_support, y_support, w1, scale)
    g_query = _mse_grad(x_query, y_query, w1 - inner_lr * g1, scale)
    hessian_g0 = scale / len(y_support) * x_support.T @ (x_support @ g0)
    direction = g0 + g1 + (hessian_sign * inner_lr * hessian_g0 if through_step_two else 0.0)
    return -(g_query @ direction)


def _two_step_lr_gradient_by_autograd(x_support, y_support, x_query, y_query, w, inner_lr: float) -> torch.Tensor:
    """The reference: α as a leaf tensor, two differentiable steps, torch.autograd.grad of L_Q(w₂)."""
    alpha = torch.tensor(inner_lr, dtype=w.dtype, device=w.device, requires_grad=True)
    w2 = w
    for _ in range(2):
        w2 = w2 - alpha * _mse_grad(x_support, y_support, w2)
    (d_alpha,) = torch.autograd.grad(((x_query @ w2 - y_query) ** 2).mean(), alpha)
    return d_alpha.detach()


_BY_HAND = (
    "this exercise asks for the derivative by hand: write ∇L(w) = (2/n)Xᵀ(Xw − y) and the chain rule with "
    "tensor operations; the grader blocks autograd (torch.autograd, torch.func) while your function runs"
)

# Every entry point through which a learner's function could let PyTorch differentiate for it.
_AUTOGRAD_ENTRY_POINTS = (
    (torch.autograd, ("grad", "backward")),
    (torch.Tensor, ("backward",)),
    (torch, ("enable_grad",)),
    (torch.func, ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian")),
    (torch.autograd.functional, ("jacobian", "hessian", "vjp", "jvp", "hvp", "vhp")),
)


@contextlib.contextmanager
def _autograd_blocked() -> Iterator[None]:
    """Replace autograd's entry points by functions raising :class:`grading.Stop`; restore them on exit."""

    def refuse(*args, **kwargs):
        raise grading.Stop(_BY_HAND)

    set_grad_enabled = torch.set_grad_enabled

    def only_disable(mode: bool):  # torch.no_grad itself calls torch.set_grad_enabled(False)
        if mode:
            raise grading.Stop(_BY_HAND)
        return set_grad_enabled(mode)

    saved = [(owner, name, getattr(owner, name)) for owner, names in _AUTOGRAD_ENTRY_POINTS for name in names]
    saved.append((torch, "set_grad_enabled", set_grad_enabled))
    with torch.no_grad():
        try:
            for owner, name, _ in saved:
                setattr(owner, name, refuse)
            torch.set_grad_enabled = only_disable
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)


def _call_by_hand(fn: Callable, *args):
    """Call ``fn`` with autograd blocked; a refusal is the verdict, any other failure is phrased by
    :func:`grading.call` (which runs the deterministic ``fn`` again, still blocked)."""
    try:
        with _autograd_blocked():
            return fn(*args)
    except grading.Stop:
        raise
    except Exception:  # the learner's code may fail in any way; report it kindly
        with _autograd_blocked():
            return grading.call(fn, *args)


def check_two_step_lr_gradient(my_lr_gradient: Callable) -> bool:
    """Grade ``my_lr_gradient(x_support, y_support, x_query, y_query, w, inner_lr) -> dL/dα``, written by hand:
    the derivative of the query MSE of a linear model after two SGD steps of size α on the support MSE,
    compared with torch.autograd. The learner's function runs under ``torch.no_grad()`` with autograd's entry points
    (``torch.autograd``, ``Tensor.backward``, ``torch.enable_grad``, ``torch.func``) replaced by a refusal."""

    def body() -> str:
        for device in grading.devices():
            for seed, alpha in ((0, 0.1), (1, 0.3), (2, 0.05)):
                task = _linear_task(device, seed)
                ref = _two_step_lr_gradient_by_autograd(*task, alpha)
                out = _call_by_hand(my_lr_gradient, *task, alpha)
                out = torch.as_tensor(out, dtype=ref.dtype, device=ref.device) if isinstance(out, float) else out
                out = grading.tensor_like(
                    out.reshape(()) if isinstance(out, torch.Tensor) and out.numel() == 1 else out, ref, "dL/dα"
                )
                if grading.close(out, ref, 1e-8):
                    continue
                x_support, y_support, x_query, y_query, w = task
                w1 = w - alpha * _mse_grad(x_support, y_support, w)
                w2 = w1 - alpha * _mse_grad(x_support, y_support, w1)
                grading.first_mistake(
                    out,
                    [
                        (
                            two_step_lr_gradient(*task, alpha, through_step_two=False),
                            "the second step's gradient ∇L_S(w₁) depends on α too, through w₁ = w − α∇L_S(w): "
                            "its derivative adds −α·H_S·(dw₁/dα), with H_S = (2/n)X_Sᵀ X_S",
                        ),
                        (-ref, "wrong sign: each step subtracts α times a gradient, so dw₁/dα = −∇L_S(w)"),
                        (
                            two_step_lr_gradient(*task, alpha, hessian_sign=1.0),
                            "the Hessian term has the wrong sign: d∇L_S(w₁)/dα = H_S·dw₁/dα = −H_S∇L_S(w) "
                            "(or you took dw₂/dα = −2∇L_S(w): ∇L_S(w₁) ≠ ∇L_S(w))",
                        ),
                        (
                            -(_mse_grad(x_query, y_query, w1) @ _mse_grad(x_support, y_support, w)),
                            "that is the one-step formula −∇L_Q(w₁)·∇L_S(w): take two steps, to w₂",
                        ),
                        (
                            -(_mse_grad(x_query, y_query, w2) @ _mse_grad(x_support, y_support, w)),
                            "only the first step's gradient appears: w₂ = w − α∇L_S(w) − α∇L_S(w₁), "
                            "and both terms depend on α",
                        ),
                        (
                            two_step_lr_gradient(*task, alpha, scale=1.0),
                            "a factor 2 is missing: the gradient of (1/n)‖Xw − y‖² is (2/n)Xᵀ(Xw − y)",
                        ),
                    ],
                    1e-8,
                )
                raise grading.Stop("not dL_Q(w₂)/dα; apply the chain rule step by step: dw₁/dα, then dw₂/dα")
        return "dL_Q(w₂)/dα by hand agrees with autograd, the second step's dependence on α included"

    return grading.run("MAML learning-rate gradient, two steps", body)
