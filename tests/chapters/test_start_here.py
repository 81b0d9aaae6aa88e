"""Notebook 00 · Start here: the seeding check rejects a draw that ignores its generator, or a constant one."""

import pytest
import torch

from metaadv_edu import data
from metaadv_edu.chapters import start_here as chapter
from tests.wrong import rejects


def test_same_seed_same_draw_accepts_the_package():
    assert chapter.same_seed_same_draw(lambda g: data.sine_tasks(1, 5, generator=g, return_params=True))


@rejects("seeded_draw", "a draw that ignores its generator and uses PyTorch's global random state")
def test_same_seed_same_draw_rejects_global_random_state():
    assert not chapter.same_seed_same_draw(lambda g: torch.rand(5))


@rejects("seeded_draw", "a draw that ignores its generator and returns the same tensor for every seed")
def test_same_seed_same_draw_rejects_a_constant():
    assert not chapter.same_seed_same_draw(lambda g: torch.zeros(5))


def test_random_vs_fgsm_orders_the_two():
    x, y = data.load_digits("test")
    model, record = chapter.digits_cnn("cpu")
    assert chapter.random_vs_fgsm(model, x, y, 0.0) == pytest.approx((record["test_accuracy"],) * 2)
    random_acc, fgsm_acc = chapter.random_vs_fgsm(model, x, y, 0.1)
    assert fgsm_acc < random_acc - 0.2
