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


@pytest.mark.parametrize(
    "inner_lr, verdict, factor",
    [
        (0.05, "gradient descent converges", "0.500"),
        (0.15, "gradient descent converges", "0.500"),
        (0.19, "gradient descent converges", "0.900"),
        (0.2, "neither converges nor diverges", "1.000"),
        (0.21, "gradient descent diverges", "1.100"),
        (0.25, "gradient descent diverges", "1.500"),
    ],
)
def test_first_look_caption_names_what_gradient_descent_does(inner_lr, verdict, factor):
    digit = data.load_digits("test")[0][3]
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    explorer = chapter.first_look_explorer(model, digit, 0)
    slider = explorer.sliders["inner_lr"]
    assert slider.min <= 0.05 and slider.max >= 0.25
    assert explorer.blit_error() == 0, "the first image (the one a stored notebook shows) matches a full render"
    slider.value = inner_lr
    assert explorer.blit_error() == 0, "the blitted image is what a full render draws"
    explorer.update()
    assert verdict in explorer.caption.value and f"|1 − αλ| = {factor})" in explorer.caption.value


def test_descent_verdict_at_the_boundaries():
    assert chapter.descent_verdict(-1 + 1e-6) == "converges"
    assert chapter.descent_verdict(1 - 0.2 * 10) == "oscillates for ever (neither converges nor diverges)"
    assert chapter.descent_verdict(-1 - 1e-6) == "diverges"
    assert chapter.descent_verdict(1.0) == "stays where it starts (α = 0)"


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3, 0.5])
def test_first_look_caption_gives_the_test_accuracies_of_random_vs_fgsm(epsilon):
    x, y = data.load_digits("test")
    model, _ = chapter.digits_cnn("cpu")
    explorer = chapter.first_look_explorer(model, x[3], int(y[3]), x_eval=x, y_eval=y)
    explorer.sliders["epsilon"].value = epsilon
    assert explorer.blit_error() == 0, "the blitted image is what a full render draws"
    explorer.update()
    random_acc, fgsm_acc = chapter.random_vs_fgsm(model, x, y, epsilon)
    expected = f"{len(x)} test digits correct: random ±ε {random_acc:.1%}, FGSM {fgsm_acc:.1%}"
    assert expected in explorer.caption.value
    assert all(p.grad is None for p in model.parameters())


def test_first_look_explorer_needs_both_evaluation_tensors():
    x, _ = data.load_digits("test")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ValueError, match="x_eval and y_eval"):
        chapter.first_look_explorer(model, x[3], 0, x_eval=x)


def test_random_signs_are_plus_or_minus_one_and_seeded():
    a, b = chapter.random_signs((2, 1, 8, 8), 0), chapter.random_signs((2, 1, 8, 8), 0)
    assert torch.equal(a, b) and set(a.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(a, chapter.random_signs((2, 1, 8, 8), 1))
