"""The derivation checks of notebooks 05 (MAML), 06 (Reptile) and 07 (Meta-SGD).

Each check takes the implementation it checks as an argument (the package's by default) and returns
its numbers and a verdict, so that the tests can feed it a plausible wrong implementation and see it
rejected. All run in float64 on small sinusoid problems; a check's tolerance is stated where it is used.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from metaadv_edu import data, maml, metasgd, models, reptile
from metaadv_edu._validate import as_device
from metaadv_edu.device import float64_device
from metaadv_edu.functional import forward, params_of

__all__ = [
    "FOMAML_MISTAKES",
    "TOL",
    "alpha_gradient_errors",
    "equal_alpha_gaps",
    "fomaml_term_errors",
    "meta_gradient_errors",
    "reptile_one_step_gap",
    "sine_net64",
    "sine_task64",
    "taylor_residuals",
    "taylor_slopes_ok",
    "vmap_loop_gap",
]

TOL = 1e-10  # float64 agreement of two computations of the same exact quantity


def _device64(device) -> torch.device:
    """``device`` if it computes in float64, else the CPU (the notebook says so where it picks the device)."""
    return float64_device(as_device(device), verbose=False)


def sine_net64(device=None, seed: int = 0, activation: str = "relu") -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.SineRegressor(activation=activation).to(_device64(device)).double()


def sine_task64(device=None, seed: int = 1, n_tasks: int = 1, k: int = 10) -> data.Tasks:
    tasks = data.sine_tasks(n_tasks, k, generator=torch.Generator().manual_seed(seed), device=_device64(device))
    return data.Tasks(*(t.double() for t in tasks))


def _grads(loss: torch.Tensor, params) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(params)))


def _norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum((t**2).sum() for t in tensors))


# -------------------------------------------------------------------------------- notebook 05
def meta_gradient_errors(
    meta_loss_fn: Callable | None = None, *, device=None, steps=(1, 3), inner_lr: float = 0.01
) -> dict[int, float]:
    """Eq. (4)/(5) of notebook 05: max |autograd through ``meta_loss_fn`` − the chain-rule product
    (I − αH₀)…(I − αH_{k−1})∇L_Q(θ_k)| for each number of inner steps k. Passes below :data:`TOL`."""
    meta_loss_fn = meta_loss_fn or maml.meta_loss
    net, task = sine_net64(device), sine_task64(device)
    out = {}
    for k in steps:
        auto = _grads(meta_loss_fn(net, task, inner_lr=inner_lr, steps=k), net.parameters())
        formula = maml.meta_gradient_by_formula(net, *(t[0] for t in task), inner_lr=inner_lr, steps=k)
        out[k] = max((a - f).abs().max().item() for a, f in zip(auto, formula.values()))
    return out


def vmap_loop_gap(
    meta_loss_fn: Callable | None = None, *, device=None, n_tasks: int = 25, inner_lr: float = 0.01
) -> tuple[float, float, bool]:
    """``meta_loss_fn`` (vectorised) against :func:`maml.meta_loss_loop` on ``n_tasks`` tasks in float32:
    (|Δ loss|, max |Δ meta-gradient|, both below 1e-4)."""
    meta_loss_fn = meta_loss_fn or maml.meta_loss
    device = as_device(device)
    batch = data.sine_tasks(n_tasks, 10, generator=torch.Generator().manual_seed(2), device=device)
    torch.manual_seed(0)
    net = models.SineRegressor().to(device)
    fast, slow = meta_loss_fn(net, batch, inner_lr=inner_lr), maml.meta_loss_loop(net, batch, inner_lr=inner_lr)
    g_fast, g_slow = _grads(fast, net.parameters()), _grads(slow, net.parameters())
    gap = max((a - b).abs().max().item() for a, b in zip(g_fast, g_slow))
    loss_gap = abs(fast - slow).item()
    return loss_gap, gap, loss_gap < 1e-4 and gap < 1e-4


def _fomaml(net, task, inner_lr):
    return _grads(maml.meta_loss(net, task, inner_lr=inner_lr, first_order=True), net.parameters())


def _skip_adaptation(net, task, inner_lr):  # ∇L_Q(θ): the query gradient at θ instead of θ′
    return _grads(F.mse_loss(net(task.x_query[0]), task.y_query[0]), net.parameters())


def _ascent_step(net, task, inner_lr):  # θ′ = θ + α∇L_S: the inner step with the wrong sign
    theta = params_of(net, detach=True)
    g_s = torch.autograd.grad(
        F.mse_loss(forward(net, theta, task.x_support[0]), task.y_support[0]), list(theta.values())
    )
    prime = {k: (p + inner_lr * g).detach().requires_grad_(True) for (k, p), g in zip(theta.items(), g_s)}
    return _grads(F.mse_loss(forward(net, prime, task.x_query[0]), task.y_query[0]), prime.values())


FOMAML_MISTAKES = {
    "no adaptation, ∇L_Q(θ) (FOMAML evaluated at θ instead of θ′)": _skip_adaptation,
    "inner step of the wrong sign, ∇L_Q(θ + α∇L_S)": _ascent_step,
}


def hessian_term(net, task, inner_lr: float) -> list[torch.Tensor]:
    """The exact one-step difference of eq. (6), −α·H·∇L_Q(θ′) with H = ∇²L_S(θ), by one
    Hessian-vector product (the gradient of ∇L_S(θ)·v for the fixed vector v = ∇L_Q(θ′))."""
    xs, ys, xq, yq = (t[0] for t in task)
    theta = params_of(net, detach=True)
    g_s = torch.autograd.grad(F.mse_loss(forward(net, theta, xs), ys), list(theta.values()), create_graph=True)
    prime = {k: (p - inner_lr * g).detach().requires_grad_(True) for (k, p), g in zip(theta.items(), g_s)}
    v = _grads(F.mse_loss(forward(net, prime, xq), yq), prime.values())
    hv = _grads(sum((g * vi).sum() for g, vi in zip(g_s, v)), theta.values())
    return [-inner_lr * h for h in hv]


def fomaml_term_errors(
    first_order_grad: Callable | None = None, *, device=None, alphas=(1e-4, 1e-3, 1e-2, 1e-1)
) -> list[tuple[float, float, float, bool]]:
    """Eq. (6) of notebook 05: for each α, g_MAML (autograd, second order) minus the candidate
    first-order gradient ``first_order_grad(net, task, inner_lr)`` against the exact −αH∇L_Q(θ′).

    Returns rows (α, ‖αH∇L_Q(θ′)‖ / ‖g_MAML‖, relative error of the difference, passed) where the
    check passes when the relative error is below 1e-8 (float64)."""
    first_order_grad = first_order_grad or _fomaml
    net, task = sine_net64(device), sine_task64(device)
    rows = []
    for alpha in alphas:
        g_maml = _grads(maml.meta_loss(net, task, inner_lr=alpha), net.parameters())
        g_fo = first_order_grad(net, task, alpha)
        term = hessian_term(net, task, alpha)
        error = (_norm([m - f - t for m, f, t in zip(g_maml, g_fo, term)]) / _norm(term)).item()
        rows.append((alpha, (_norm(term) / _norm(g_maml)).item(), error, error < 1e-8))
    return rows


# -------------------------------------------------------------------------------- notebook 06
def reptile_one_step_gap(
    outer_step: Callable | None = None, *, device=None, inner_lr: float = 0.01, outer_lr: float = 0.5
) -> float:
    """Eq. (2) of notebook 06: one Reptile update with k = 1 inner step against SGD on the mean of
    the tasks' losses with step αβ; the max parameter difference (passes below :data:`TOL`)."""
    outer_step = outer_step or reptile.outer_step
    net, tasks = sine_net64(device), sine_task64(device, n_tasks=8)
    start = [p.detach().clone() for p in net.parameters()]
    joint = torch.stack([F.mse_loss(net(x), y) for x, y in zip(tasks.x_support, tasks.y_support)]).mean()
    grads = _grads(joint, net.parameters())
    outer_step(net, tasks, inner_lr=inner_lr, inner_steps=1, outer_lr=outer_lr)
    return max(
        (p - (p0 - inner_lr * outer_lr * g)).abs().max().item() for p, p0, g in zip(net.parameters(), start, grads)
    )


def taylor_residuals(
    predict: Callable | None = None, *, device=None, ks=(2, 3), alphas=(1e-1, 1e-2, 1e-3, 1e-4)
) -> dict[tuple[str, int], list[float]]:
    """Eq. (5) of notebook 06 on one sinusoid task split into 4 minibatches (tanh network, float64):
    |measured − predicted| / |measured| for each learner, number of inner steps k and α, where
    ``predict(terms, inner_lr=, k=)`` gives the predicted expected updates (default
    :func:`reptile.predicted_updates`) and the measured ones come from running the algorithms."""
    predict = predict or reptile.predicted_updates
    device = _device64(device)
    net = sine_net64(device, seed=2, activation="tanh")
    xs = torch.rand(16, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(device) * 10 - 5
    batches = [(xs[i : i + 4], 2.5 * torch.sin(xs[i : i + 4] - 0.7)) for i in range(0, 16, 4)]
    terms = reptile.taylor_terms(net, batches)
    out: dict[tuple[str, int], list[float]] = {}
    for k in ks:
        for alpha in alphas:
            measured = reptile.expected_updates(net, batches, inner_lr=alpha, k=k)
            predicted = predict(terms, inner_lr=alpha, k=k)
            for name in measured:
                r = (measured[name] - predicted[name]).norm() / measured[name].norm()
                out.setdefault((name, k), []).append(r.item())
    return out


def taylor_slopes_ok(residuals: list[float]) -> bool:
    """An O(α²) residual: each tenfold smaller α (after the first, where higher orders still matter)
    shrinks it 60–160-fold; an O(α) error would shrink only about tenfold."""
    slopes = [a / b for a, b in zip(residuals, residuals[1:])]
    return all(60 < s < 160 for s in slopes[1:])


# -------------------------------------------------------------------------------- notebook 07
def _alpha_formula(g_q, g_s):
    return -g_q * g_s


def alpha_gradient_errors(
    meta_loss_fn: Callable | None = None, *, formula: Callable | None = None, device=None
) -> tuple[float, float]:
    """Eqs. (2) and (3) of notebook 07 for one task and α ~ U[0.005, 0.1]: max |autograd ∂L/∂α −
    formula(∇L_Q(θ′), ∇L_S(θ))| (default −∇L_Q(θ′)∘∇L_S(θ)) and max |autograd ∂L/∂θ − (g_Q − H(α∘g_Q))|.
    ``meta_loss_fn(model, inner_lrs, tasks)`` defaults to :func:`metasgd.meta_loss`; both pass below :data:`TOL`."""
    meta_loss_fn, formula = meta_loss_fn or metasgd.meta_loss, formula or _alpha_formula
    net, task = sine_net64(device), sine_task64(device, seed=4)
    lrs = {
        k: a.double().detach().requires_grad_(True)
        for k, a in metasgd.init_inner_lrs(net, (0.005, 0.1), generator=torch.Generator().manual_seed(5)).items()
    }
    auto_alpha = _grads(meta_loss_fn(net, lrs, task), lrs.values())
    auto_theta = _grads(meta_loss_fn(net, lrs, task), net.parameters())
    xs, ys, xq, yq = (t[0] for t in task)
    theta = params_of(net, detach=True)
    g_s = dict(
        zip(
            theta, torch.autograd.grad(F.mse_loss(forward(net, theta, xs), ys), list(theta.values()), create_graph=True)
        )
    )
    prime = {k: (theta[k] - lrs[k] * g_s[k]).detach().requires_grad_(True) for k in theta}
    g_q = dict(zip(theta, _grads(F.mse_loss(forward(net, prime, xq), yq), prime.values())))
    error_alpha = max((a - formula(g_q[k], g_s[k].detach())).abs().max().item() for a, k in zip(auto_alpha, theta))
    h_ag = dict(zip(theta, _grads(sum((g_s[k] * (lrs[k] * g_q[k]).detach()).sum() for k in theta), theta.values())))
    error_theta = max((a - (g_q[k] - h_ag[k])).abs().max().item() for a, k in zip(auto_theta, theta))
    return error_alpha, error_theta


def equal_alpha_gaps(
    meta_loss_fn: Callable | None = None, *, device=None, a: float = 0.03
) -> tuple[float, float, float]:
    """Meta-SGD with α = a·𝟙 against MAML written independently as a per-task loop
    (:func:`maml.meta_loss_loop`, ``torch.autograd.grad`` per task, no vmap) on 4 tasks, float64:
    |Δ loss|, max |Δ ∂L/∂θ|, and |Σⱼ ∂L/∂αⱼ − dL/da| (the α-gradient summed over its entries is the
    derivative with respect to the shared rate a). All pass below :data:`TOL`."""
    meta_loss_fn = meta_loss_fn or metasgd.meta_loss
    net, tasks = sine_net64(device), sine_task64(device, seed=6, n_tasks=4)
    lrs = {k: torch.full_like(p, a).requires_grad_(True) for k, p in net.named_parameters()}
    rate = torch.tensor(a, dtype=torch.float64, device=tasks.x_support.device, requires_grad=True)
    ours, loop = meta_loss_fn(net, lrs, tasks), maml.meta_loss_loop(net, tasks, inner_lr=rate)
    g_ours = _grads(ours, [*net.parameters(), *lrs.values()])
    g_loop = _grads(loop, [*net.parameters(), rate])
    n = len(list(net.parameters()))
    theta_gap = max((x - y).abs().max().item() for x, y in zip(g_ours[:n], g_loop[:n]))
    rate_gap = abs(sum(g.sum() for g in g_ours[n:]) - g_loop[n]).item()
    return abs(ours - loop).item(), theta_gap, rate_gap
