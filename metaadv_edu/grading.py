"""What every chapter's self-grading exercises share.

A ``check_*`` function (in :mod:`metaadv_edu.chapters`) runs a learner's implementation on hidden
cases (several shapes, ε = 0, the CPU and, where present, the GPU), compares it with the package's
reference, prints a short verdict — ✓, or what looks wrong with a hint — and returns True or False.
It never shows the solution and never lets an exception from the learner's code escape as a traceback.
A grader's ``body`` raises :class:`Stop` with the hint as soon as it knows what is wrong; :func:`run`
turns that into the printed verdict.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = [
    "PGD_HINTS",
    "Stop",
    "call",
    "cases",
    "close",
    "devices",
    "first_mistake",
    "leaves_model_as_found",
    "pgd_variants",
    "report",
    "run",
    "same_gradient",
    "scalar_loss",
    "tensor_like",
    "toy_batch",
    "toy_classifier",
    "toy_regression",
    "watch_parameter_gradients",
]


class Stop(Exception):
    """A verdict reached while running the cases."""


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def report(name: str, ok: bool, message: str) -> bool:
    print(f"{'✓' if ok else '✗'} {name}: {message}")
    return ok


def call(fn: Callable, *args):
    try:
        return fn(*args)
    except NotImplementedError:
        raise Stop("not written yet — replace the `raise NotImplementedError` with your code") from None
    except Exception as exc:  # the learner's code may fail in any way; report it kindly
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise Stop(
            f"your function raised {type(exc).__name__}: {exc} (line {frame.lineno}: `{(frame.line or '').strip()}`)"
        ) from None


def tensor_like(out, ref: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise Stop(f"{what} should be a tensor, got {type(out).__name__}")
    if out.shape != ref.shape:
        raise Stop(f"{what} should have shape {tuple(ref.shape)}, got {tuple(out.shape)}")
    if out.device != ref.device:
        raise Stop(
            f"{what} is on {out.device} but the inputs were on {ref.device}: create tensors on the device of the inputs"
        )
    return out.detach().to(ref.dtype)


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=tol))


def run(name: str, body: Callable[[], str]) -> bool:
    try:
        return report(name, True, body())
    except Stop as stop:
        return report(name, False, str(stop))


def toy_classifier(device, seed: int, n_in: int = 16, n_classes: int = 4) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.to(device)


def toy_batch(device, seed: int, n: int = 6, n_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 4, 4, generator=g).to(device), torch.randint(n_classes, (n,), generator=g).to(device))


def cases():
    for device in devices():
        for seed, eps in ((0, 0.1), (1, 0.3), (2, 0.0), (3, 0.05)):
            model = toy_classifier(device, seed)
            x, y = toy_batch(device, seed + 10, n=3 + seed)
            yield model, x, y, eps


def first_mistake(value: torch.Tensor, mistakes, tol: float = 1e-5) -> None:
    """Raise :class:`Stop` with the hint of the first ``(wrong result, hint)`` that ``value`` equals."""
    for wrong, hint in mistakes:
        if close(value, wrong.detach().to(value.dtype), tol):
            raise Stop(hint)


def scalar_loss(out) -> torch.Tensor:
    """The learner's loss as a detached 0-d tensor, or :class:`Stop` when it is not one number."""
    if not isinstance(out, torch.Tensor) or out.numel() != 1:
        raise Stop("return the loss as a single-number tensor (the mean over the query set)")
    return out.detach().reshape(())


def same_gradient(out: torch.Tensor, ref: torch.Tensor, params: list, hint: str, tol: float = 1e-4) -> None:
    """:class:`Stop` with ``hint`` unless ``out`` and ``ref`` have the same gradient with respect to ``params``."""
    g_out = torch.autograd.grad(out, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params)
    if any(g is None for g in g_out) or not all(close(a, b, tol) for a, b in zip(g_out, g_ref)):
        raise Stop(hint)


PGD_HINTS = {
    "no projection": "every step must be projected back onto the ε-ball around the clean x: clip x_adv − x to "
    "[−ε, ε] after each step (several steps of size a can walk further than ε)",
    "no clamp": "almost: after projecting, clamp to [0, 1] so that each iterate stays a valid image",
    "one step": "that is a single step: PGD repeats the step `steps` times, each from the previous iterate",
    "stale gradient": "the gradient must be recomputed at the current iterate x_adv in every step, not reused from x",
    "descent": "wrong sign: each step *ascends* the loss, x_adv + a·sign(∇ₓL)",
}


def pgd_variants(
    loss_of_x: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, epsilon: float, step_size: float, steps: int
) -> dict[str, torch.Tensor]:
    """L∞ PGD from ``x`` (no random start) on ``loss_of_x``, and the typical wrong versions of it named
    in :data:`PGD_HINTS`; key ``"ok"`` is the right one."""

    def grad_at(z):
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(loss_of_x(z), z)[0]

    def attack(n=steps, project=True, clamp=True, sign=1.0, stale=False):
        x_adv, g0 = x.detach().clone(), grad_at(x)
        for _ in range(n):
            x_adv = x_adv + sign * step_size * (g0 if stale else grad_at(x_adv)).sign()
            if project:
                x_adv = x + (x_adv - x).clamp(-epsilon, epsilon)
            if clamp:
                x_adv = x_adv.clamp(0, 1)
        return x_adv.detach()

    return {
        "ok": attack(),
        "no projection": attack(project=False),
        "no clamp": attack(clamp=False),
        "one step": attack(n=1),
        "stale gradient": attack(stale=True),
        "descent": attack(sign=-1.0),
    }


def toy_regression(device, seed: int, hidden: int = 8):
    """A flat parameter vector θ of a 1-``hidden``-1 tanh network and the support and query MSE losses
    of one sinusoid task as functions of θ (curved: their Hessians depend on θ)."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(3 * hidden + 1, generator=g, dtype=torch.float64).to(device)
    amp, phase = 1 + 4 * float(torch.rand(1, generator=g)), 3 * float(torch.rand(1, generator=g))
    xs, xq = (10 * torch.rand(2, 10, 1, generator=g, dtype=torch.float64) - 5).to(device)

    def loss(data):
        def of(t):
            w1, b1, w2, b2 = t[:hidden], t[hidden : 2 * hidden], t[2 * hidden : 3 * hidden], t[3 * hidden]
            pred = torch.tanh(data * w1 + b1) @ w2 + b2
            return ((pred - amp * torch.sin(data[:, 0] + phase)) ** 2).mean()

        return of

    return theta, loss(xs), loss(xq)


@contextmanager
def watch_parameter_gradients(model: nn.Module) -> Iterator[list[str]]:
    """Record the name of every parameter into which a backward pass accumulates a gradient.

    A hook fires on accumulation itself, so ``loss.backward()`` is seen even when the learner's code then
    clears ``.grad`` (``zero_grad(set_to_none=True)``, ``p.grad = None``, ``p.grad.zero_()``)."""
    touched: list[str] = []
    handles = [  # a parameter that does not require grad cannot accumulate one, and takes no hook
        p.register_post_accumulate_grad_hook(lambda _p, name=name: touched.append(name))
        for name, p in model.named_parameters()
        if p.requires_grad
    ]
    try:
        yield touched
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def leaves_model_as_found(model: nn.Module) -> Iterator[None]:
    """Raise :class:`Stop` if the code run inside changed which parameters require grad, or the model's
    train/eval mode, and put both back as they were.

    Freezing the model (``model.requires_grad_(False)``) inside an attack, a pattern many tutorials show,
    silently stops later training of the same model; switching it to eval mode changes what dropout and
    batch norm do in the caller's next training step."""
    requires_grad = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    try:
        yield
    finally:
        changed = [p.requires_grad for p in model.parameters()] != requires_grad
        changed = changed or [m.training for m in model.modules()] != modes
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        for m, mode in zip(model.modules(), modes):
            m.training = mode
    if changed:
        raise Stop(
            "your function changed the model (requires_grad or train/eval mode); an attack must leave it as "
            "it found it — take the input gradient with torch.autograd.grad(loss, x) instead of freezing the model"
        )
