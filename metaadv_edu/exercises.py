"""Exercises that check themselves.

Each ``check_*`` function runs a learner's implementation on hidden cases (several shapes, ε = 0,
the CPU and, where present, the GPU), compares it with the package's reference, prints a short
verdict — ✓, or what looks wrong with a hint — and returns True or False. It never shows the
solution and never lets an exception from the learner's code escape as a traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import attacks

__all__ = ["check_first_order_gain", "check_fgsm", "check_mixed_loss", "check_pgd_step"]


class _Stop(Exception):
    """A verdict reached while running the cases."""


def _devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _report(name: str, ok: bool, message: str) -> bool:
    print(f"{'✓' if ok else '✗'} {name}: {message}")
    return ok


def _call(fn: Callable, *args):
    try:
        return fn(*args)
    except NotImplementedError:
        raise _Stop("not written yet — replace the `raise NotImplementedError` with your code") from None
    except Exception as exc:  # the learner's code may fail in any way; report it kindly
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise _Stop(f"your function raised {type(exc).__name__}: {exc} (line {frame.lineno}: "
                    f"`{(frame.line or '').strip()}`)") from None


def _tensor_like(out, ref: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise _Stop(f"{what} should be a tensor, got {type(out).__name__}")
    if out.shape != ref.shape:
        raise _Stop(f"{what} should have shape {tuple(ref.shape)}, got {tuple(out.shape)}")
    if out.device != ref.device:
        raise _Stop(f"{what} is on {out.device} but the inputs were on {ref.device}: create "
                    "tensors on the device of the inputs")
    return out.detach().to(ref.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=tol))


def _run(name: str, body: Callable[[], str]) -> bool:
    try:
        return _report(name, True, body())
    except _Stop as stop:
        return _report(name, False, str(stop))


def _toy_classifier(device, seed: int, n_in: int = 16, n_classes: int = 4) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.to(device)


def _toy_batch(device, seed: int, n: int = 6, n_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 4, 4, generator=g).to(device),
            torch.randint(n_classes, (n,), generator=g).to(device))


def _cases():
    for device in _devices():
        for seed, eps in ((0, 0.1), (1, 0.3), (2, 0.0), (3, 0.05)):
            model = _toy_classifier(device, seed)
            x, y = _toy_batch(device, seed + 10, n=3 + seed)
            yield model, x, y, eps


# ------------------------------------------------------------------------------ chapter 1: FGSM
def check_fgsm(my_fgsm: Callable) -> bool:
    """Grade ``my_fgsm(model, x, y, epsilon) -> x_adv``: untargeted FGSM, clamped to [0, 1]."""

    def body() -> str:
        for model, x, y, eps in _cases():
            model.zero_grad(set_to_none=True)
            out = _tensor_like(_call(my_fgsm, model, x, y, eps), x, "x_adv")
            if any(p.grad is not None for p in model.parameters()):
                raise _Stop("your function left gradients in the model's parameters (that is what "
                            "loss.backward() does): use torch.autograd.grad(loss, x) to get the "
                            "gradient with respect to the input only")
            ref = attacks.fgsm(model, x, y, eps)
            if _close(out, ref):
                continue
            grad, _ = attacks.input_gradient(model, x, y)
            if _close(out, (x - eps * grad.sign()).clamp(0, 1)):
                raise _Stop("wrong sign: you stepped *down* the loss. FGSM adds ε·sign(∇ₓL) to "
                            "increase the loss of the true class")
            if _close(out, x + eps * grad.sign()):
                raise _Stop("almost: the result must stay a valid image — clamp it to [0, 1]")
            if _close(out, (x + eps * grad).clamp(0, 1)) or _close(out, x + eps * grad):
                raise _Stop("you moved along the gradient itself; the L∞ maximiser uses only its "
                            "sign, so that every pixel moves by exactly ε")
            if eps == 0 and not _close(out, x):
                raise _Stop("with ε = 0 the attack must return x unchanged")
            raise _Stop(f"differs from the reference by up to {float((out - ref).abs().max()):.3g}; "
                        "check that you differentiate the cross-entropy of (model(x), y) with "
                        "respect to x")
        return "matches the reference on every case, ε = 0 included, and leaves the model untouched"

    return _run("FGSM", body)


def check_first_order_gain(my_gain: Callable) -> bool:
    """Grade ``my_gain(grad, epsilon) -> gain``: the first-order loss increase of FGSM per example,
    ε‖g‖₁, for a batch of gradients of shape (B, ...); returns shape (B,)."""

    def body() -> str:
        for device in _devices():
            for seed, shape in ((0, (4, 1, 8, 8)), (1, (3, 5)), (2, (2, 3, 4, 4))):
                g = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
                for eps in (0.1, 0.25, 0.0):
                    ref = eps * g.flatten(1).abs().sum(1)
                    out = _call(my_gain, g, eps)
                    if isinstance(out, torch.Tensor) and out.ndim == 0:
                        raise _Stop("return one gain per example (shape (B,)), not a single number "
                                    "for the whole batch")
                    out = _tensor_like(out, ref, "gain")
                    if _close(out, ref):
                        continue
                    if eps and _close(out, eps * g.flatten(1).norm(dim=1)):
                        raise _Stop("you used the L2 norm: the dual norm of L∞ is L1, so the gain "
                                    "is ε times the sum of |gᵢ|")
                    if eps and _close(out, g.flatten(1).abs().sum(1)):
                        raise _Stop("the gain scales with the budget: multiply by ε")
                    if eps and _close(out, eps * g.flatten(1).sum(1)):
                        raise _Stop("δ = ε·sign(g) gives δᵢgᵢ = ε|gᵢ| for every i: sum absolute values")
                    raise _Stop("not equal to ε‖g‖₁ per example")
        return "ε‖g‖₁ per example, for every shape and ε"

    return _run("first-order gain", body)


# --------------------------------------------------------------- chapter 2: adversarial training
def check_pgd_step(my_step: Callable) -> bool:
    """Grade ``my_step(x_adv, x, grad, epsilon, step_size) -> x_next``: one PGD ascent step,
    projected onto the ε-ball around x and clamped to [0, 1]."""

    def body() -> str:
        for device in _devices():
            for seed, eps, a in ((0, 0.1, 0.05), (1, 0.2, 0.3), (2, 0.0, 0.1)):
                gen = torch.Generator().manual_seed(seed)
                x = torch.rand(5, 1, 4, 4, generator=gen).to(device)
                x_adv = (x + eps * (2 * torch.rand(x.shape, generator=gen).to(device) - 1)).clamp(0, 1)
                grad = torch.randn(x.shape, generator=gen).to(device)
                ref = (x + (x_adv + a * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
                out = _tensor_like(_call(my_step, x_adv, x, grad, eps, a), x, "x_next")
                if _close(out, ref):
                    continue
                if _close(out, (x_adv + a * grad.sign()).clamp(0, 1)):
                    raise _Stop("you forgot the projection: clamp δ = x_next − x to [−ε, ε] so the "
                                "iterate stays in the ball")
                if _close(out, x + (x_adv + a * grad.sign() - x).clamp(-eps, eps)):
                    raise _Stop("project onto the ball, then clamp the image to [0, 1]")
                if _close(out, (x + (x_adv - a * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)):
                    raise _Stop("wrong sign: PGD ascends the loss (add a·sign(∇))")
                if _close(out, (x + (x_adv + a * grad - x).clamp(-eps, eps)).clamp(0, 1)):
                    raise _Stop("step along the sign of the gradient (steepest ascent for L∞)")
                raise _Stop("not equal to Π(x_adv + a·sign(g)) clamped to [0, 1]")
        return "ascent, projection onto the ε-ball and clamp all correct"

    return _run("PGD step", body)


def check_mixed_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, x, y, epsilon, alpha) -> loss``: Goodfellow's mixed objective
    α·J(x) + (1 − α)·J(x + ε·sign(∇ₓJ)), a scalar whose gradient flows into the model."""

    def body() -> str:
        for model, x, y, eps in _cases():
            for alpha in (0.5, 0.2):
                x_adv = attacks.fgsm(model, x, y, eps)
                clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
                ref = alpha * clean + (1 - alpha) * adv
                out = _call(my_loss, model, x, y, eps, alpha)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise _Stop("return the loss as a single-number tensor")
                if not out.requires_grad:
                    raise _Stop("the loss has no gradient: do not detach it or compute it under "
                                "torch.no_grad(), the model must learn from it")
                value = out.detach().reshape(())
                if _close(value, ref.detach()):
                    continue
                if _close(value, ((1 - alpha) * clean + alpha * adv).detach()):
                    raise _Stop("α and 1 − α are swapped: α weighs the clean loss")
                if _close(value, adv.detach()):
                    raise _Stop("that is the adversarial loss alone; mix in the clean loss with weight α")
                raise _Stop("not equal to α·J(x) + (1 − α)·J(x_FGSM) (with x_FGSM clamped to [0, 1])")
        return "α·J(x) + (1 − α)·J(x_FGSM), with a gradient for the model"

    return _run("mixed loss", body)
