import math
import socket

import pytest
import torch

from metaadv_edu import data


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the course must not open network connections")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_digits_shapes_ranges_and_split(no_network, device):
    xtr, ytr = data.load_digits("train", device=device)
    xte, _yte = data.load_digits("test", device=device)
    assert xtr.shape == (1348, 1, 8, 8) and xte.shape == (449, 1, 8, 8)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert xtr.device.type == device.type
    assert float(xtr.min()) >= 0 and float(xtr.max()) <= 1 and float(xtr.max()) == 1.0
    assert set(ytr.tolist()) == set(range(10))
    xall, _ = data.load_digits("all")
    assert len(xall) == len(xtr) + len(xte)
    # the split is a partition: no test image is also a training image
    flat_tr = {tuple(r) for r in xtr.cpu().view(len(xtr), -1).tolist()}
    overlap = sum(tuple(r) in flat_tr for r in xte.cpu().view(len(xte), -1).tolist())
    assert overlap <= 2  # the raw dataset holds a couple of exact duplicate images


def test_digits_split_is_fixed():
    a, _ = data.load_digits("test")
    b, _ = data.load_digits("test")
    assert torch.equal(a, b)


def test_digits_bad_split():
    with pytest.raises(ValueError, match="split"):
        data.load_digits("validation")


def test_sine_tasks_distribution(generator, device):
    tasks, amp, phase = data.sine_tasks(500, 10, 15, generator=generator, device=device, return_params=True)
    assert tasks.x_support.shape == (500, 10, 1) and tasks.x_query.shape == (500, 15, 1)
    assert all(t.device.type == device.type for t in tasks)
    assert 0.1 <= float(amp.min()) and float(amp.max()) <= 5.0
    assert 0.0 <= float(phase.min()) and float(phase.max()) <= math.pi
    assert -5 <= float(tasks.x_support.min()) and float(tasks.x_support.max()) <= 5
    expected = amp.view(-1, 1, 1) * torch.sin(tasks.x_query - phase.view(-1, 1, 1))
    torch.testing.assert_close(tasks.y_query, expected)
    assert abs(float(amp.mean()) - 2.55) < 0.2


def test_sine_tasks_reproducible_across_calls():
    a = data.sine_tasks(3, 5, generator=torch.Generator().manual_seed(0))
    b = data.sine_tasks(3, 5, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.x_query.shape == a.x_support.shape


@pytest.mark.parametrize(
    "kwargs",
    [{"n_tasks": 0, "k_support": 5}, {"n_tasks": 2, "k_support": -1}, {"n_tasks": 2, "k_support": 5, "k_query": 0}],
)
def test_sine_tasks_bad_sizes(kwargs):
    with pytest.raises(ValueError, match=r"n_tasks|k_support|k_query"):
        data.sine_tasks(**kwargs)


def test_gaussian_mixture_density_integrates_to_one():
    mix = data.GaussianMixture.one_d([-2.0, 1.0], [0.5, 1.0], [0.3, 0.7])
    grid = torch.linspace(-10, 10, 20001)
    total = float(torch.trapezoid(mix.density(grid), grid))
    assert abs(total - 1) < 1e-4


def test_gaussian_mixture_samples_match_density(generator):
    mix = data.GaussianMixture.one_d([-2.0, 1.0], [0.5, 1.0], [0.3, 0.7])
    x = mix.sample(50_000, generator=generator)
    assert x.shape == (50_000, 1)
    assert abs(float(x.mean()) - (0.3 * -2 + 0.7 * 1)) < 0.03
    assert abs(float((x < -0.5).float().mean()) - 0.3 - 0.7 * 0.0668) < 0.01


def test_ring_mixture_2d(generator):
    ring = data.ring_mixture(8, radius=2.0, std=0.05)
    x = ring.sample(1000, generator=generator)
    assert x.shape == (1000, 2)
    assert torch.allclose(x.norm(dim=1), torch.full((1000,), 2.0), atol=0.3)
    # density at a mode is that of one of 8 equal Gaussians
    peak = float(ring.density(ring.means[:1]))
    assert abs(peak - 1 / 8 / (2 * math.pi * 0.05**2)) / peak < 1e-4


def test_gaussian_mixture_rejects_bad_input():
    with pytest.raises(ValueError, match="stds"):
        data.GaussianMixture.one_d([0.0], [0.0])
    mix = data.GaussianMixture.one_d([0.0], [1.0])
    with pytest.raises(ValueError, match="shape"):
        mix.density(torch.zeros(3, 2))


def test_few_shot_tasks(generator, device):
    x, y = data.load_digits("train", device=device)
    tasks = data.few_shot_tasks(x, y, n_tasks=4, n_way=5, k_shot=2, k_query=3, generator=generator)
    assert tasks.x_support.shape == (4, 10, 1, 8, 8) and tasks.y_query.shape == (4, 15)
    assert tasks.x_support.device.type == device.type
    for t in range(4):
        assert sorted(tasks.y_support[t].tolist()) == sorted(list(range(5)) * 2)
        # each new label maps to one original class, the same in support and query
        for label in range(5):
            s = tasks.x_support[t][tasks.y_support[t] == label].view(2, -1)
            q = tasks.x_query[t][tasks.y_query[t] == label].view(3, -1)
            classes_s = {int(y[(x.view(len(x), -1) == row).all(1)][0]) for row in s}
            classes_q = {int(y[(x.view(len(x), -1) == row).all(1)][0]) for row in q}
            assert len(classes_s | classes_q) == 1


def test_few_shot_tasks_bad_input(generator):
    x, y = data.load_digits("train")
    with pytest.raises(ValueError, match="n_way"):
        data.few_shot_tasks(x, y, n_tasks=1, n_way=11, k_shot=1, k_query=1, generator=generator)
    with pytest.raises(ValueError, match="batch size"):
        data.few_shot_tasks(x, y[:5], n_tasks=1, n_way=2, k_shot=1, k_query=1)
    with pytest.raises(ValueError, match="k_shot"):
        data.few_shot_tasks(x, y, n_tasks=1, n_way=2, k_shot=0, k_query=1)
