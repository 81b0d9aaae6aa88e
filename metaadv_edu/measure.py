"""Measuring the cost of a computation: wall time per call and memory kept in an autograd graph."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["graph_bytes", "median_time"]


def graph_bytes(output: torch.Tensor) -> int:
    """Bytes of the tensors that ``output``'s autograd graph saved for the backward pass."""
    seen, total, stack = set(), 0, [output.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        for name in dir(fn):
            if name.startswith("_saved_"):
                value = getattr(fn, name, None)
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
        stack.extend(f for f, _ in fn.next_functions)
    return total


def median_time(
    fn: Callable[[], object], *, repeats: int = 20, warmup: int = 3, device: torch.device | None = None
) -> float:
    """Median wall time of ``fn()`` in seconds (synchronising CUDA when ``device`` is a GPU)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
