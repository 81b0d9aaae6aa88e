"""One MAML meta-step (25 sinusoid tasks, K = 10, one inner step, second order, 1-40-40-1): the
per-task loop against the vectorised paths — ``vmap`` (any model) and batched matrix products
(plain MLPs, the path ``maml.meta_loss`` takes for this model) — on one and on two threads, and the
memory of a meta-step against the number of inner steps.

    python benchmarks/maml_speed.py            # on the device pick_device() chooses
    METAADV_DEVICE=cuda python benchmarks/maml_speed.py
"""

import torch

from metaadv_edu import data, maml, models, pick_device
from metaadv_edu.measure import graph_bytes, median_time


def time_step(fn, model, tasks, device, **kwargs) -> float:
    return median_time(
        lambda: fn(model, tasks, inner_lr=0.01, **kwargs).backward(), repeats=50, warmup=5, device=device
    )


def peak_memory(model, tasks, device, steps, first_order) -> float:
    """Bytes one meta-step needs beyond the model: the CUDA allocator's peak on a GPU; on the CPU the
    memory the autograd graph keeps for backward (``graph_bytes``: each saved storage counted once)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        maml.meta_loss(model, tasks, inner_lr=0.01, steps=steps, first_order=first_order).backward()
        return torch.cuda.max_memory_allocated(device) - base
    loss = maml.meta_loss(model, tasks, inner_lr=0.01, steps=steps, first_order=first_order)
    return graph_bytes(loss)


def speed(device, threads: int) -> dict[str, float]:
    """Median seconds of one meta-step (forward and backward) for each implementation."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = models.SineRegressor().to(device)
        tasks = data.sine_tasks(25, 10, generator=torch.Generator().manual_seed(0), device=device)
        return {
            "loop": time_step(maml.meta_loss_loop, model, tasks, device),
            "vmap": time_step(maml.meta_loss, model, tasks, device, fast_path=False),
            "batched": time_step(maml.meta_loss, model, tasks, device),
        }
    finally:
        torch.set_num_threads(before)


def rows(device=None) -> list[tuple[str, str]]:
    """(what, measured) rows for the README's performance table."""
    device = device or pick_device()
    out = []
    for threads in (1, 2) if device.type == "cpu" else (torch.get_num_threads(),):
        t = speed(device, threads)
        label = f"{threads} thread{'s' if threads > 1 else ''}" if device.type == "cpu" else device.type
        out.append(
            (
                f"MAML meta-step, 25 tasks, K = 10, 2nd order ({label})",
                f"loop {t['loop'] * 1e3:.1f} ms · vmap {t['vmap'] * 1e3:.1f} ms "
                f"({t['loop'] / t['vmap']:.1f}×) · batched MLP {t['batched'] * 1e3:.1f} ms "
                f"(**{t['loop'] / t['batched']:.1f}×**)",
            )
        )
    torch.manual_seed(0)
    model = models.SineRegressor().to(device)
    tasks = data.sine_tasks(25, 10, generator=torch.Generator().manual_seed(0), device=device)
    mem = [peak_memory(model, tasks, device, s, False) / 2**20 for s in (1, 2, 5, 10)]
    fo = peak_memory(model, tasks, device, 10, True) / 2**20
    out.append(
        (
            "autograd graph kept by a MAML meta-step (CPU; peak allocation on CUDA), 1 / 2 / 5 / 10 inner steps",
            " / ".join(f"{m:.2f}" for m in mem) + f" MiB; first-order, 10 steps: {fo:.2f} MiB",
        )
    )
    return out


def main() -> None:
    device = pick_device()
    print(f"device: {device}, torch {torch.__version__}")
    for what, measured in rows(device):
        print(f"{what}: {measured}")


if __name__ == "__main__":
    main()
