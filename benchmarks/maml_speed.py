"""One MAML meta-step (25 sinusoid tasks, K = 10, one inner step, second order, 1-40-40-1):
the vectorised implementation against the per-task loop, and memory against inner steps.

    python benchmarks/maml_speed.py            # on the device pick_device() chooses
    METAADV_DEVICE=cuda python benchmarks/maml_speed.py
"""

import torch

from metaadv_edu import data, maml, models, pick_device
from metaadv_edu.measure import graph_bytes, median_time


def time_step(fn, model, tasks, device, **kwargs) -> float:
    return median_time(lambda: fn(model, tasks, inner_lr=0.01, **kwargs).backward(), repeats=50,
                       warmup=5, device=device)


def peak_memory(model, tasks, device, steps, first_order) -> float:
    """Bytes one meta-step needs beyond the model: the CUDA allocator's peak on a GPU, the tensors
    saved for backward in the autograd graph on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        maml.meta_loss(model, tasks, inner_lr=0.01, steps=steps, first_order=first_order).backward()
        return torch.cuda.max_memory_allocated(device) - base
    loss = maml.meta_loss(model, tasks, inner_lr=0.01, steps=steps, first_order=first_order)
    return graph_bytes(loss)


def main() -> None:
    device = pick_device()
    torch.manual_seed(0)
    model = models.SineRegressor().to(device)
    tasks = data.sine_tasks(25, 10, generator=torch.Generator().manual_seed(0), device=device)
    t_vmap = time_step(maml.meta_loss, model, tasks, device)
    t_loop = time_step(maml.meta_loss_loop, model, tasks, device)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"MAML meta-step, 25 tasks, K=10, 1 step, 2nd order: vmap {t_vmap * 1e3:.2f} ms, "
          f"loop {t_loop * 1e3:.2f} ms, speed-up {t_loop / t_vmap:.1f}x")
    print("memory of one meta-step vs inner steps (CPU: tensors saved for backward; CUDA: peak allocated):")
    for steps in (1, 2, 5, 10):
        so = peak_memory(model, tasks, device, steps, False)
        fo = peak_memory(model, tasks, device, steps, True)
        print(f"  steps={steps:>2}: MAML {so / 1024:8.1f} KiB   FOMAML {fo / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
