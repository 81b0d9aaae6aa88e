import math

import pytest
import torch
from torch import nn

from metaadv_edu import data, gan, models


def test_optimal_discriminator_closed_form_and_zero_over_zero():
    p = torch.tensor([0.0, 1.0, 0.2, 0.0])
    q = torch.tensor([0.0, 0.0, 0.6, 2.0])
    torch.testing.assert_close(gan.optimal_discriminator(p, q), torch.tensor([0.5, 1.0, 0.25, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        gan.optimal_discriminator(p, q[:2])
    with pytest.raises(ValueError, match=">= 0"):
        gan.optimal_discriminator(-p - 1, q)


def test_js_divergence_of_gaussians_matches_properties():
    x = torch.linspace(-12, 12, 40001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    p = data.GaussianMixture.one_d([0.0], [1.0]).density(x.float()).double()
    assert gan.js_divergence(p, p, dx).item() == pytest.approx(0.0, abs=1e-9)
    far = data.GaussianMixture.one_d([40.0], [1.0]).density(x.float() + 0).double()
    disjoint = torch.cat([p[: len(p) // 2], torch.zeros(len(p) - len(p) // 2, dtype=torch.float64)])
    other = torch.cat([torch.zeros(len(p) // 2, dtype=torch.float64), p[: len(p) - len(p) // 2]])
    js = gan.js_divergence(disjoint / (disjoint.sum() * dx), other / (other.sum() * dx), dx).item()
    assert js == pytest.approx(math.log(2), rel=1e-6)  # disjoint supports: the maximum, log 2
    q = data.GaussianMixture.one_d([1.0], [1.0]).density(x.float()).double()
    js = gan.js_divergence(p, q, dx).item()
    assert 0 < js < math.log(2) and js == pytest.approx(gan.js_divergence(q, p, dx).item())
    del far


def test_value_at_optimal_discriminator_is_minus_log4_plus_2jsd():
    x = torch.linspace(-10, 12, 60001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    p = data.GaussianMixture.one_d([0.0], [1.0]).density(x.float()).double()
    q = data.GaussianMixture.one_d([1.5, -1.0], [0.7, 0.5], [0.7, 0.3]).density(x.float()).double()
    d = gan.optimal_discriminator(p, q)
    value = (p * torch.log(d.clamp_min(1e-300)) + q * torch.log((1 - d).clamp_min(1e-300))).sum() * dx
    assert value.item() == pytest.approx(-math.log(4) + 2 * gan.js_divergence(p, q, dx).item(), abs=1e-6)


def test_losses_are_the_value_function():
    r, f = torch.randn(50, 1), torch.randn(50, 1)
    v = gan.value_function(r, f)
    torch.testing.assert_close(gan.discriminator_loss(r, f), -v)
    torch.testing.assert_close(gan.generator_loss(f, "minimax"), torch.log(1 - torch.sigmoid(f)).mean())
    torch.testing.assert_close(gan.generator_loss(f), -torch.log(torch.sigmoid(f)).mean())
    with pytest.raises(ValueError, match="kind"):
        gan.generator_loss(f, "wasserstein")


def test_saturation_gradients():
    s = torch.tensor([-8.0], requires_grad=True)  # D(G(z)) = σ(−8) ≈ 3e-4: the discriminator wins
    (g_mm,) = torch.autograd.grad(gan.generator_loss(s, "minimax"), s)
    (g_ns,) = torch.autograd.grad(gan.generator_loss(s), s)
    assert abs(g_mm.item()) < 1e-3 and abs(g_ns.item()) > 0.99


def test_a_tiny_gan_moves_its_mean_towards_the_data(device):
    torch.manual_seed(0)
    g_net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
    d_net = nn.Sequential(nn.Linear(1, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1)).to(device)
    target = data.GaussianMixture.one_d([3.0], [0.5])
    with torch.no_grad():
        before = g_net(torch.randn(2000, 4, device=device)).mean().item()
    hist = gan.train_gan(
        g_net,
        d_net,
        lambda n, g: target.sample(n, generator=g),
        noise_dim=4,
        steps=600,
        generator_rng=torch.Generator().manual_seed(0),
        snapshot_every=200,
        progress=False,
    )
    with torch.no_grad():
        after = g_net(torch.randn(2000, 4, device=device)).mean().item()
    assert abs(after - 3.0) < 0.5 < abs(before - 3.0)
    assert hist["snapshot_steps"] == [1, 201, 401, 600] and len(hist["snapshots"][0]) == 512


@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.3])
def test_perturbation_bound_holds_for_any_input(epsilon, device):
    torch.manual_seed(0)
    gen = gan.PerturbationGenerator((1, 8, 8), epsilon).to(device)
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(50)  # saturate tanh: the bound must still hold
    x = torch.rand(64, 1, 8, 8, device=device)
    x_adv = gen(x, torch.randn(64, 8, device=device)).detach()
    assert float((x_adv - x).abs().max()) <= epsilon + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with pytest.raises(ValueError, match="shape"):
        gen(torch.rand(2, 3, 8, 8, device=device))


def test_generator_attack_beats_chance_on_a_fixed_model(device):
    x, y = data.load_digits("train", device=device)
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=8).to(device)
    opt = torch.optim.Adam(f.parameters(), 3e-3)
    for _ in range(150):
        idx = torch.randint(len(x), (64,), device=device)
        loss = torch.nn.functional.cross_entropy(f(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = [p.detach().clone() for p in f.parameters()]
    gen = gan.PerturbationGenerator((1, 8, 8), 0.2).to(device)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1)).to(device)
    hist = gan.train_adversarial_generator(
        gen, disc, f, x, y, steps=500, rng=torch.Generator().manual_seed(0), progress=False
    )
    with torch.no_grad():
        clean = (f(x).argmax(1) == y).float().mean().item()
        attacked = (f(gen(x, torch.randn(len(x), 8, device=device))).argmax(1) == y).float().mean().item()
    # a fooled example is one the model got right before: the generator must flip a large share
    assert clean > 0.85 and attacked < clean - 0.15
    assert all(torch.equal(a, b) for a, b in zip(before, f.parameters())), "the target model must not change"
    assert all(p.grad is None for p in f.parameters())
    assert len(hist["fooled"]) == 500


def test_training_a_generator_leaves_the_classifier_requires_grad_flags_as_they_were():
    x, y = torch.rand(32, 1, 8, 8), torch.randint(10, (32,))
    torch.manual_seed(0)
    f = models.TinyCNN(1, 10, width=4).requires_grad_(False)  # frozen, except its first weight
    next(f.parameters()).requires_grad_(True)
    flags = [p.requires_grad for p in f.parameters()]
    gen = gan.PerturbationGenerator((1, 8, 8), 0.2)
    disc = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    gan.train_adversarial_generator(
        gen, disc, f, x, y, steps=2, batch_size=8, rng=torch.Generator().manual_seed(0), progress=False
    )
    assert [p.requires_grad for p in f.parameters()] == flags and not all(flags) and any(flags)


def test_covered_modes_names_the_modes_with_enough_samples():
    from metaadv_edu import gan

    means = [[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]]
    points = [[0.0, 0.1]] * 60 + [[3.0, 0.1]] * 39 + [[0.0, 3.1]]
    assert gan.covered_modes(points, means) == frozenset({0, 1})
    assert gan.covered_modes(points, means, min_share=0.005) == frozenset({0, 1, 2})
    with pytest.raises(ValueError, match="points and means"):
        gan.covered_modes([0.0, 1.0], means)
