"""Shared fixtures: every computing test runs on each available device (CPU always, CUDA where
present), and unit tests write models into a private cache folder."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


def pytest_configure(config):
    # With several pytest-xdist workers on a small machine, each worker computes on one thread, so the
    # workers share the cores instead of oversubscribing them. The notebook kernels that nbval starts
    # keep torch's default thread count: the stored outputs were computed with it, and a different
    # count can change the last digits of a trained model.
    #
    # The kernels' OpenMP threads must not spin while they wait: libgomp's default busy-waiting makes
    # a two-thread kernel that shares a core with a busy process some fifty times slower (notebook 03
    # takes 8 minutes instead of 9 s next to one busy core). Sleeping threads cost nothing measurable
    # on a quiet machine and give the same numbers. Kernels and JupyterLab inherit this variable.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and int(workers) > 1:
        torch.set_num_threads(1)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAADV_CACHE", str(tmp_path / "model-cache"))


@pytest.fixture(autouse=True)
def _no_device_override(monkeypatch, request):
    # A developer's METAADV_DEVICE must not change which device a test asked for; tests that
    # exercise the variable set it themselves.
    if "keep_device_env" not in request.keywords:
        monkeypatch.delenv("METAADV_DEVICE", raising=False)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def pytest_report_header(config):
    return (
        f"metaadv-edu devices under test: {', '.join(DEVICES)}; torch {torch.__version__}; "
        f"METAADV_DEVICE={os.environ.get('METAADV_DEVICE', '(unset)')}"
    )
