"""Argument checks shared by the package: raise early, name the parameter and the allowed range."""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch


def finite_number(
    name: str, value, *, low: float | None = None, low_inclusive: bool = True, high: float | None = None
) -> float:
    """Return ``float(value)`` after checking that it is a finite real number within bounds."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    bounds = _describe(low, low_inclusive, high)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {bounds}, got {value}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        raise ValueError(f"{name} must be {bounds}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _describe(low, low_inclusive, high) -> str:
    if low is None and high is None:
        return "(any finite value)"
    left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
    right = "inf)" if high is None else f"{high:g}]"
    return f"in {left}, {right}"


def nonnegative(name: str, value) -> float:
    return finite_number(name, value, low=0.0)


def positive(name: str, value) -> float:
    return finite_number(name, value, low=0.0, low_inclusive=False)


def integer(name: str, value, *, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and <= {high}"
        raise ValueError(f"{name} must be an int >= {low}{upper}, got {value}")
    return value


def choice(name: str, value, options) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def same_batch(x: torch.Tensor, y: torch.Tensor, x_name: str = "x", y_name: str = "y") -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{x_name} and {y_name} must be tensors")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same batch size (first dimension); "
            f"got {x_name} of shape {tuple(x.shape)} and {y_name} of shape {tuple(y.shape)}"
        )


def as_device(device) -> torch.device:
    """``None`` means the CPU; a string is checked by :func:`metaadv_edu.pick_device`."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        return device
    from metaadv_edu.device import pick_device

    return pick_device(device)
