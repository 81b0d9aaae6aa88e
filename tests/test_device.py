import random
import subprocess
import sys
import threading
import time

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


@pytest.fixture
def two_cores(monkeypatch):
    """Two cores for side_by_side, as on the course's smallest machine, even in a one-thread test worker."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr("os.cpu_count", lambda: 2)


def _in_main_thread(_) -> bool:
    return threading.current_thread() is threading.main_thread()


def test_side_by_side_keeps_the_order_and_raises_what_a_call_raises(two_cores):
    def square(i):
        return i * i

    assert side_by_side(square, range(7)) == [i * i for i in range(7)]
    assert side_by_side(square, []) == []
    assert side_by_side(_in_main_thread, range(2)) == [False, False]  # the pool ran them

    def fail(i):
        if i == 2:
            raise ValueError("epsilon must be ≥ 0")
        return i

    with pytest.raises(ValueError, match="epsilon"):
        side_by_side(fail, range(4))


def test_no_call_outlives_a_side_by_side_call_that_raised(two_cores):
    started, finished = threading.Event(), []

    def work(i):
        if i == 0:
            started.wait(5)  # the other call is running before this one fails
            raise ValueError("the first call fails at once")
        started.set()
        time.sleep(0.3)  # still running when the first call's error arrives
        finished.append(i)

    with pytest.raises(ValueError, match="fails at once"):
        side_by_side(work, range(2))
    assert finished == [1]


def test_a_pgd_split_side_by_side_equals_one_batch(two_cores):
    from metaadv_edu import models, panels

    torch.manual_seed(0)
    model = models.TinyCNN().eval()
    x, y = torch.rand(9, 1, 8, 8), torch.randint(10, (9,))
    whole = panels.run_attack(model, x, y, 0.1, 5, 0.03)
    halves = side_by_side(lambda s: panels.run_attack(model, x[s], y[s], 0.1, 5, 0.03), (slice(0, 4), slice(4, None)))
    assert torch.allclose(torch.cat(halves), whole)


def test_side_by_side_runs_calls_on_a_shared_or_non_cpu_module_one_by_one(two_cores):
    shared = torch.nn.Linear(2, 2)
    first, second = torch.nn.Sequential(shared, torch.nn.ReLU()), torch.nn.Sequential(shared)
    assert side_by_side(_in_main_thread, range(2), modules=[first, second]) == [True, True]
    assert side_by_side(_in_main_thread, range(2), modules=[first, first]) == [True, True]
    elsewhere = [torch.nn.Linear(2, 2, device="meta"), torch.nn.Linear(2, 2, device="meta")]  # as on a GPU
    assert side_by_side(_in_main_thread, range(2), modules=elsewhere) == [True, True]
    distinct = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    assert side_by_side(_in_main_thread, range(2), modules=distinct) == [False, False]


NESTED = """
import os, threading, torch
from metaadv_edu.device import side_by_side
torch.get_num_threads = lambda: 8
os.cpu_count = lambda: 8
def outer(i):
    return side_by_side(lambda j: (i, j, threading.current_thread().name), range(2))
result = side_by_side(outer, range(8))
assert [[(i, j) for i, j, _ in inner] for inner in result] == [[(i, 0), (i, 1)] for i in range(8)]
assert all(len({name for _, _, name in inner}) == 1 for inner in result)  # each inner call in one thread
print("ok")
"""


def test_side_by_side_inside_side_by_side_runs_in_its_thread():
    # in a process of its own: a deadlocked pool would otherwise keep this test worker from exiting
    try:
        out = subprocess.run([sys.executable, "-c", NESTED], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("nested side_by_side calls deadlocked")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
