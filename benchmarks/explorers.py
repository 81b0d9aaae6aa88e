"""Slider → redrawn figure latency of each explorer (budget: median ≤ 100 ms; ≤ 150 ms for notebook 08).

Models come from the cache (trained on first use); each slider is moved through several values and
the median time of :meth:`Explorer.update` is printed.

    python benchmarks/explorers.py
"""

import statistics

import torch

from metaadv_edu import attacks, covers, data, pick_device
from metaadv_edu.chapters import adversarial_training, fgsm, maml, meta_adversarial_training, start_here


def sweep(explorer, moves) -> tuple[float, float]:
    times = []
    for name, values in moves.items():
        for value in values:
            explorer.sliders[name].value = value
            times.append(explorer.last_update_s)
    return statistics.median(times) * 1e3, max(times) * 1e3


def main() -> None:
    device = pick_device()
    x, y = data.load_digits("test", device=device)
    cnn, _ = start_here.digits_cnn(device)
    rows = []
    ex = fgsm.attack_explorer(cnn, x[:3], y[:3], x[:200], y[:200])
    rows.append(("01 attack explorer", *sweep(ex, {
        "epsilon": [0.05, 0.1, 0.15, 0.2, 0.25], "steps": [1, 5, 10, 20, 1],
        "step_size": [0.01, 0.03, 0.05, 0.08]})))
    grid = [0.0, 0.05, 0.1, 0.15, 0.2]
    models = {e: cnn if e == 0 else adversarial_training.digits_cnn_adversarial("pgd", e, device)[0] for e in grid}
    curve_eps = [0.0, 0.1, 0.2, 0.3]
    curves = {e: attacks.robust_accuracy(m, x[:200], y[:200], curve_eps) for e, m in models.items()}
    ex = adversarial_training.robustness_explorer(models, x[:3], y[:3], x[:200], y[:200], curves=curves,
                                       curve_epsilons=curve_eps)
    rows.append(("02 train ε × test ε explorer", *sweep(ex, {
        "train_epsilon": grid, "epsilon": [0.05, 0.1, 0.2, 0.3], "step_size": [0.01, 0.05, 0.08]})))
    meta, _ = maml.sine_maml(device)
    pre, _ = maml.sine_pretrained(device)
    ex = maml.maml_explorer(meta, pre)
    rows.append(("05 MAML explorer", *sweep(ex, {
        "inner_lr": [0.003, 0.01, 0.03, 0.1], "steps": [0, 1, 5, 10], "k_support": [5, 10, 20],
        "epsilon": [0.0, 0.25, 0.5], "task": [1, 2, 3]})))
    tasks = covers.cover_tasks(10, n_way=5, k_shot=5, k_query=5, size=16, pool="meta-test",
                               generator=torch.Generator().manual_seed(11), device=device)
    learners = {"MAML": meta_adversarial_training.cover_maml(0.0, device)[0],
                "adversarial querying": meta_adversarial_training.cover_maml(8 / 255, device)[0]}
    ex = meta_adversarial_training.robust_few_shot_explorer(learners, tasks)
    rows.append(("08 robust few-shot explorer", *sweep(ex, {
        "epsilon": [0.0, 4 / 255, 8 / 255, 16 / 255], "inner_lr": [0.01, 0.1, 0.2, 0.5], "task": [1, 5, 9],
        "learner": ["MAML", "adversarial querying"]})))
    print(f"device: {device}, threads: {torch.get_num_threads()}")
    for name, median, worst in rows:
        print(f"{name:<32} median {median:6.1f} ms   max {worst:6.1f} ms")


if __name__ == "__main__":
    main()
