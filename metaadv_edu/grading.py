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
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Stop", "call", "cases", "close", "devices", "report", "run", "tensor_like", "toy_batch", "toy_classifier"]


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
        raise Stop(f"your function raised {type(exc).__name__}: {exc} (line {frame.lineno}: "
                    f"`{(frame.line or '').strip()}`)") from None


def tensor_like(out, ref: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise Stop(f"{what} should be a tensor, got {type(out).__name__}")
    if out.shape != ref.shape:
        raise Stop(f"{what} should have shape {tuple(ref.shape)}, got {tuple(out.shape)}")
    if out.device != ref.device:
        raise Stop(f"{what} is on {out.device} but the inputs were on {ref.device}: create "
                    "tensors on the device of the inputs")
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
    return (torch.rand(n, 1, 4, 4, generator=g).to(device),
            torch.randint(n_classes, (n,), generator=g).to(device))


def cases():
    for device in devices():
        for seed, eps in ((0, 0.1), (1, 0.3), (2, 0.0), (3, 0.05)):
            model = toy_classifier(device, seed)
            x, y = toy_batch(device, seed + 10, n=3 + seed)
            yield model, x, y, eps
