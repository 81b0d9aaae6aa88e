"""Reproduce the sinusoid table of the Meta-SGD paper (Li et al. 2017, Table 1) with this package.

MAML (α = 0.01) and Meta-SGD (α ~ U[0.005, 0.1], learned) are meta-trained on MAML's sinusoid
distribution for each shot count K ∈ {5, 10, 20} (meta-batch 25, Adam β = 1e-3, one inner step), then
adapted with one step to 600 new tasks and evaluated by the MSE on 100 query points, with a 95 % t
confidence interval (``metaadv_edu.stats``). Both learners are scored on the same 600 tasks, so each shot
count also prints the paired difference MAML − Meta-SGD and its verdict. Each model is one training run
(seed 0). At 10,000 iterations each model took 7 to 17 minutes on one shared CPU core (it prints its time).

    python benchmarks/metasgd_sinusoid.py [--iterations 10000]
"""

import argparse
import time

import torch

from metaadv_edu import data, maml, metasgd, models, pick_device, stats

PAPER = {  # Li et al. (2017), Table 1: mean squared error, 95 % confidence interval
    ("MAML", 5): "1.13 ± 0.18",
    ("MAML", 10): "0.77 ± 0.11",
    ("MAML", 20): "0.48 ± 0.08",
    ("Meta-SGD", 5): "0.90 ± 0.16",
    ("Meta-SGD", 10): "0.53 ± 0.09",
    ("Meta-SGD", 20): "0.31 ± 0.05",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=10_000)
    args = parser.parse_args()
    device = pick_device()
    print(f"device: {device}; {args.iterations} meta-iterations per model")
    print(f"{'K':>3}  {'method':<9} {'this package':>15}  {'paper':>12}  {'train time':>10}")
    for k in (5, 10, 20):
        test = data.sine_tasks(600, k, 100, generator=torch.Generator().manual_seed(1000 + k), device=device)
        sample = lambda g, k=k: data.sine_tasks(25, k, generator=g, device=device)  # noqa: E731
        scores = {}
        for name in ("MAML", "Meta-SGD"):
            torch.manual_seed(0)
            model = models.SineRegressor().to(device)
            g = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            if name == "MAML":
                maml.meta_train(model, sample, iterations=args.iterations, inner_lr=0.01, generator=g, progress=False)
                lr = 0.01
            else:
                lr = metasgd.init_inner_lrs(model, (0.005, 0.1), generator=g)
                metasgd.meta_train(model, lr, sample, iterations=args.iterations, generator=g, progress=False)
            seconds = time.perf_counter() - start
            losses = torch.stack([maml.meta_loss(model, test.task(i), inner_lr=lr).detach() for i in range(600)])
            scores[name] = losses
            ci = stats.mean_ci(losses)
            print(f"{k:>3}  {name:<9} {ci.format(3):>15}  {PAPER[(name, k)]:>12}  {seconds:>8.0f} s", flush=True)
        diff = stats.paired_difference(scores["MAML"], scores["Meta-SGD"])
        verdict = diff.verdict("MAML", "Meta-SGD", lower_is_better=True)
        print(f"{k:>3}  MAML − Meta-SGD (paired over the 600 tasks): {diff.format(3)}; {verdict}", flush=True)


if __name__ == "__main__":
    main()
