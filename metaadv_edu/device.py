"""Choosing the compute device, the device for float64 checks, seeding every random number generator, and
running independent pieces of work on all the CPU cores.

Notebook ``00_start_here`` shows :func:`pick_device` and :func:`seed_everything` in use; :func:`side_by_side`
runs notebook 08's evaluation of four learners and its explorer's two learners' adaptation and attacks.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

__all__ = ["available_devices", "float64_device", "pick_device", "seed_everything", "side_by_side", "supports_float64"]

ENV_VAR = "METAADV_DEVICE"
_NAME = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Names of the devices this machine can use right now, best first."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def _parse(name: str, source: str) -> torch.device:
    text = name.strip().lower()
    match = _NAME.match(text)
    if match is None:
        raise ValueError(
            f"{source}={name!r} is not a device name; use one of 'cpu', 'cuda', 'cuda:N' or 'mps' "
            f"(available here: {', '.join(available_devices())})"
        )
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise ValueError(f"{source}={name!r}: the CPU has no index; use 'cpu'")
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise ValueError(
                f"{source}={name!r}: Apple's MPS backend is not available on this machine "
                f"(available here: {', '.join(available_devices())})"
            )
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    i = int(index) if index is not None else 0
    if i >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise ValueError(
            f"{source}={name!r}: this machine has {have} (available here: {', '.join(available_devices())})"
        )
    return torch.device("cuda", i)


def pick_device(prefer: str | None = None) -> torch.device:
    """Return the device the course computes on.

    Order of precedence: ``prefer``, then the environment variable ``METAADV_DEVICE``, then the
    first available of CUDA, MPS and the CPU.

    Parameters
    ----------
    prefer : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises
    ------
    ValueError
        If the name is not a device name, or names a device this machine does not have.
    """
    if prefer is not None:
        if not isinstance(prefer, str):
            raise TypeError(f"prefer must be a str such as 'cpu' or 'cuda', got {type(prefer).__name__}")
        return _parse(prefer, "prefer")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _parse(env, ENV_VAR)
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def supports_float64(device: torch.device | str) -> bool:
    """Whether ``device`` computes in float64. The CPU and CUDA do; Apple's MPS does not."""
    return torch.device(device).type != "mps"


def float64_device(device: torch.device | str, *, verbose: bool = True) -> torch.device:
    """The device on which a float64 derivation check runs: ``device`` itself when it computes in
    float64, the CPU otherwise (Apple's MPS has no float64).

    The course checks its derivations in float64 so that rounding does not hide an error of the
    order of 1e-8. When the CPU stands in, a line saying so is printed (``verbose=False`` keeps
    quiet), so the switch is never silent.
    """
    device = torch.device(device)
    if supports_float64(device):
        return device
    if verbose:
        print(f"float64 checks run on the CPU: {device.type} has no float64")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators; return a fresh seeded CPU generator.

    Pass the returned generator explicitly to the functions that draw random numbers: the same
    seed then gives the same numbers, whatever else ran before.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding must reach NumPy's global generator
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


_POOL: ThreadPoolExecutor | None = None
_PREFIX = "side-by-side"


def side_by_side(fn: Callable, items: Iterable, *, modules: Iterable[torch.nn.Module] | None = None) -> list:
    """``[fn(item) for item in items]``, the calls run in up to four threads (one per core and item).

    For independent pieces of work on the CPU, such as each learner's attack in an explorer or an
    evaluation. On the course's small models PyTorch's own threads speed up one call little, while
    independent calls side by side keep every core busy (PyTorch releases the interpreter lock while it
    computes). The results are the same as one by one at the course's sizes (a large reduction can differ in
    its last bits with PyTorch's thread count, which is lower in the pool's threads). ``modules`` names the
    module each call runs, and the calls run one by one when:

    - two of them share a submodule: calls that run the *same* module with other parameters must not
      overlap (``torch.func.functional_call`` swaps a module's parameters while it runs);
    - a module has a tensor off the CPU: threads gain nothing on a GPU, and PyTorch's Apple-GPU (MPS)
      backend is not safe to call from several threads at once;
    - the call is made from inside another ``side_by_side`` call (waiting on the pool could deadlock).

    No call outlives this one, even when one raises or the caller is interrupted, so a later call never
    meets an earlier one on the same module. The pool is made by the first call that needs it, for that call's
    cores, and its threads compute with PyTorch on ``cores // workers`` threads each (PyTorch keeps that count
    for threads started later in the process). Grad mode is per thread: a ``fn`` that must not build a graph
    says so itself (``torch.no_grad()`` around the caller does not reach the pool's threads).
    """
    global _POOL
    items = list(items)
    # the cores this process may use: PyTorch's thread count (on Binder, binder/start sets it to the container's
    # CPU quota, which os.cpu_count() does not see)
    cores = min(os.cpu_count() or 1, torch.get_num_threads())
    one_by_one = len(items) < 2 or cores < 2 or threading.current_thread().name.startswith(_PREFIX)
    if modules is not None and not one_by_one:
        modules = list(modules)
        ids = [id(sub) for module in modules for sub in module.modules()]
        off_cpu = any(t.device.type != "cpu" for m in modules for t in (*m.parameters(), *m.buffers()))
        one_by_one = len(set(ids)) < len(ids) or off_cpu
    if one_by_one:
        return [fn(item) for item in items]
    if _POOL is None:
        workers = min(4, cores)
        # each worker gets its share of the cores for PyTorch's threads, so the workers' own threads do not fight
        # over them (on 2 cores two workers of 2 threads each are slower than 1 each)
        _POOL = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix=_PREFIX,
            initializer=torch.set_num_threads,
            initargs=(max(1, cores // workers),),
        )
    futures = [_POOL.submit(fn, item) for item in items]
    try:
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()
        wait(futures)
