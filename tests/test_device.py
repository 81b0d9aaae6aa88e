import random

import numpy as np
import pytest
import torch

from metaadv_edu import pick_device, seed_everything
from metaadv_edu.device import available_devices, side_by_side


def test_prefer_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(" CPU ") == torch.device("cpu")


def test_default_is_best_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device().type in (expected, "mps")


@pytest.mark.keep_device_env
def test_environment_variable_is_used(monkeypatch):
    monkeypatch.setenv("METAADV_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


@pytest.mark.keep_device_env
def test_prefer_beats_environment_variable(monkeypatch):
    monkeypatch.setenv("METAADV_DEVICE", "not-a-device")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="METAADV_DEVICE"):
        pick_device()


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "tpu", "", "cpu:1", "cuda:-1"])
def test_unknown_names_raise_with_choices(name):
    with pytest.raises(ValueError, match="cpu"):
        pick_device(name)


def test_unavailable_device_raises():
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match="available here"):
        pick_device(missing)


def test_wrong_type_raises():
    with pytest.raises(TypeError, match="prefer"):
        pick_device(0)


def test_available_devices_lists_cpu_last():
    assert available_devices()[-1] == "cpu"


def test_seed_everything_is_reproducible():
    g1 = seed_everything(7)
    a = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g1))  # noqa: NPY002
    g2 = seed_everything(7)
    b = (random.random(), np.random.rand(), torch.rand(3), torch.rand(3, generator=g2))  # noqa: NPY002
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises((ValueError, TypeError), match="seed"):
        seed_everything(seed)


def test_side_by_side_keeps_the_order_and_raises_what_a_call_raises():
    def square(i):
        return i * i

    assert side_by_side(square, range(7)) == [i * i for i in range(7)]
    assert side_by_side(square, []) == []

    def fail(i):
        if i == 2:
            raise ValueError("epsilon must be ≥ 0")
        return i

    with pytest.raises(ValueError, match="epsilon"):
        side_by_side(fail, range(4))


def test_a_pgd_split_side_by_side_equals_one_batch():
    from metaadv_edu import models, panels

    torch.manual_seed(0)
    model = models.TinyCNN().eval()
    x, y = torch.rand(9, 1, 8, 8), torch.randint(10, (9,))
    whole = panels.run_attack(model, x, y, 0.1, 5, 0.03)
    halves = side_by_side(lambda s: panels.run_attack(model, x[s], y[s], 0.1, 5, 0.03), (slice(0, 4), slice(4, None)))
    assert torch.allclose(torch.cat(halves), whole)


def test_side_by_side_runs_calls_on_a_shared_module_one_by_one(monkeypatch):
    import threading

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    shared = torch.nn.Linear(2, 2)
    first, second = torch.nn.Sequential(shared, torch.nn.ReLU()), torch.nn.Sequential(shared)

    def where(_):
        return threading.current_thread() is threading.main_thread()

    assert side_by_side(where, range(2), modules=[first, second]) == [True, True]
    assert side_by_side(where, range(2), modules=[torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]) == [False, False]


def test_side_by_side_inside_side_by_side_runs_in_its_thread(monkeypatch):
    import threading

    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    result = []

    def outer(i):
        return side_by_side(lambda j: (i, j, threading.current_thread().name), range(2))

    runner = threading.Thread(target=lambda: result.extend(side_by_side(outer, range(8))), daemon=True)
    runner.start()
    runner.join(60)  # every pool thread waiting on the pool would be a deadlock
    assert not runner.is_alive(), "nested side_by_side calls deadlocked"
    assert [[(i, j) for i, j, _ in inner] for inner in result] == [[(i, 0), (i, 1)] for i in range(8)]
    assert all(len({name for _, _, name in inner}) == 1 for inner in result)  # each inner call in one thread
