"""Explorers respond to every slider without training anything, and never leak figures."""

import matplotlib.pyplot as plt
import pytest
import torch

from metaadv_edu import data, explorers, models


@pytest.fixture
def small_cnn(device):
    torch.manual_seed(0)
    return models.TinyCNN(1, 10, width=4).to(device).eval()


def no_grads(model):
    return all(p.grad is None for p in model.parameters())


def test_attack_explorer_every_slider_changes_the_figure(small_cnn, device):
    x, y = data.load_digits("test", device=device)
    ex = explorers.attack_explorer(small_cnn, x[:2], y[:2], x[:50], y[:50])
    before_params = [p.detach().clone() for p in small_cnn.parameters()]
    open_figures = plt.get_fignums()
    images = {ex.image.value}
    ex.sliders["epsilon"].value = 0.25
    images.add(ex.image.value)
    ex.sliders["steps"].value = 5
    images.add(ex.image.value)
    ex.sliders["step_size"].value = 0.08
    images.add(ex.image.value)
    assert len(images) == 4, "each slider move must change the picture"
    assert "PGD, 5 steps" in ex.caption.value and "accuracy on 50 test inputs" in ex.caption.value
    assert all(torch.equal(a, b) for a, b in zip(before_params, small_cnn.parameters()))
    assert no_grads(small_cnn)
    assert plt.get_fignums() == open_figures


def test_robustness_explorer_switches_cached_models(device):
    x, y = data.load_digits("test", device=device)
    grid = {}
    for i, e in enumerate((0.0, 0.1)):
        torch.manual_seed(i)
        grid[e] = models.TinyCNN(1, 10, width=4).to(device).eval()
    curves = {e: [0.9, 0.5] for e in grid}
    ex = explorers.robustness_explorer(grid, x[:2], y[:2], x[:40], y[:40], curves=curves,
                                       curve_epsilons=[0.0, 0.1])
    first = ex.image.value
    ex.sliders["train_epsilon"].value = 0.0 if ex.sliders["train_epsilon"].value else 0.1
    second = ex.image.value
    ex.sliders["epsilon"].value = 0.2
    third = ex.image.value
    ex.sliders["step_size"].value = 0.05
    assert len({first, second, third, ex.image.value}) == 4
    assert "accuracy on 40 test inputs" in ex.caption.value
    assert ex.values["train_epsilon"] in grid


def test_maml_explorer_every_slider_changes_the_figure(device):
    torch.manual_seed(0)
    meta, base = models.SineRegressor().to(device), models.SineRegressor().to(device)
    ex = explorers.maml_explorer(meta, base, n_tasks=3, pool=12)
    before = [p.detach().clone() for p in meta.parameters()]
    images = {ex.image.value}
    for name, value in (("inner_lr", 0.1), ("steps", 5), ("k_support", 4), ("epsilon", 0.5),
                        ("task", 2), ("steps", 0)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 7
    assert "after 0 step(s)" in ex.caption.value
    assert all(torch.equal(a, b) for a, b in zip(before, meta.parameters()))
    assert all(p.grad is None for p in meta.parameters())


def test_reptile_explorer_every_slider_changes_the_figure():
    ex = explorers.reptile_explorer()
    images = {ex.image.value}
    for name, value in (("inner_lr", 0.3), ("inner_steps", 1), ("outer_lr", 0.8)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "Reptile at" in ex.caption.value


def test_metasgd_explorer_switches_models_and_scales_alpha(device):
    from metaadv_edu import metasgd

    variants = {}
    for i, k in enumerate((5, 10)):
        torch.manual_seed(i)
        net, maml_net = models.SineRegressor().to(device), models.SineRegressor().to(device)
        variants[f"K={k}"] = (net, metasgd.init_inner_lrs(net, 0.01 * (i + 1)), maml_net, k)
    ex = explorers.metasgd_explorer(variants, n_tasks=3)
    images = {ex.image.value}
    for name, value in (("model", "K=10"), ("alpha_scale", 2.0), ("task", 2)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "K = 10" in ex.caption.value


def test_gan_dynamics_explorer_scrubs_cached_runs():
    from metaadv_edu import data

    ring = data.ring_mixture(8, 2.0, 0.05)
    g = torch.Generator().manual_seed(0)
    runs = {(lr, k): {"d_loss": [1.0] * 10, "g_loss": [2.0] * 10, "snapshot_steps": [1, 25, 50],
                      "snapshots": [ring.sample(64, generator=g).tolist() for _ in range(3)]}
            for lr in (1e-4, 1e-3) for k in (1, 5)}
    ex = explorers.gan_dynamics_explorer(runs, ring)
    images = {ex.image.value}
    for name, value in (("lr_d", 1e-4), ("k_disc", 5), ("snapshot", 0)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "modes covered" in ex.caption.value


def test_generator_explorer_runs_forward_passes_only(device):
    from torch import nn

    from metaadv_edu import data, gan

    x, y = data.load_digits("test", device=device)
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=4).to(device)
    pairs = {(e, lr): nn.ModuleDict({"G": gan.PerturbationGenerator((1, 8, 8), e),
                                     "D": nn.Sequential(nn.Flatten(), nn.Linear(64, 1))}).to(device)
             for e in (0.1, 0.2) for lr in (1e-4, 1e-3)}
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in pairs.items()}
    ex = explorers.generator_explorer(pairs, f, x[:2], y[:2], x[:30], y[:30])
    images = {ex.image.value}
    for name, value in (("epsilon", 0.1), ("lr_g", 1e-4), ("noise", 3)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "30 generated examples" in ex.caption.value
    for k, m in pairs.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters()))


def test_robust_few_shot_explorer_adapts_and_attacks_without_training(device):
    from metaadv_edu import covers

    torch.manual_seed(0)
    nets = {"a": models.TinyCNN(3, 3, width=4, image_size=8).to(device),
            "b": models.TinyCNN(3, 3, width=4, image_size=8).to(device)}
    tasks = covers.cover_tasks(3, n_way=3, k_shot=2, k_query=2, size=8, pool="meta-test",
                               generator=torch.Generator().manual_seed(0), device=device)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.items()}
    open_figures = plt.get_fignums()
    ex = explorers.robust_few_shot_explorer(nets, tasks, epsilon=0.0, inner_lr=0.2)
    images = {ex.image.value}
    assert "PGD <b>" in ex.caption.value and "2 clean covers per class" in ex.caption.value
    for name, value in (("epsilon", 0.1), ("inner_lr", 0.01), ("learner", "a"), ("task", 2)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 5, "each slider move must change the picture"
    for k, m in nets.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters()))
        assert no_grads(m)
    assert plt.get_fignums() == open_figures
