import random

import numpy as np
import pytest
import torch

from metaadv_edu import pick_device, seed_everything
from metaadv_edu.device import available_devices


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
