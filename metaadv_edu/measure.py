"""Measuring the cost of a computation: wall time per call and memory kept in an autograd graph."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["graph_bytes", "median_time"]


def _outputs(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    values = list(output.values()) if isinstance(output, dict) else list(output)
    if not all(isinstance(t, torch.Tensor) for t in values):
        raise TypeError("output must be a tensor, or a dict or sequence of tensors")
    return values


def graph_bytes(output) -> int:
    """Bytes of memory that ``output``'s autograd graph keeps alive for the backward pass.

    Walks the graph from ``output`` (a tensor, or a dict or sequence of tensors) and collects every
    tensor a backward node saved (its ``_saved_*`` attributes). Many nodes save the same tensor, or views
    of one (an activation is saved by the layer that produced it and by the one that reads it; the
    expanded per-task copies of θ share θ's memory), so each underlying storage is counted once, at its
    full size. Saved parameters count too: the graph holds them. A tensor without a graph — Reptile's
    adapted weights, computed from a detached θ — keeps 0 bytes. Used in notebooks 06 and 07.
    """
    storages: dict[int, int] = {}
    seen, stack = set(), [t.grad_fn for t in _outputs(output)]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        for name in dir(fn):
            if not name.startswith("_saved_"):
                continue
            value = getattr(fn, name, None)
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes()
        stack.extend(f for f, _ in fn.next_functions)
    return sum(storages.values())


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
