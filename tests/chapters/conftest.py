"""Fixtures shared by the chapter tests."""

import pytest
import torch

from metaadv_edu import models


@pytest.fixture
def small_cnn(device):
    torch.manual_seed(0)
    return models.TinyCNN(1, 10, width=4).to(device).eval()
