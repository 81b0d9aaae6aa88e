"""Notebook 06 · Reptile: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch

from metaadv_edu.chapters import reptile as chapter


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).mean(0) for k in t}, True, "for one task and for many"),
    (lambda t, p, b: {k: t[k] - b * (p[k] - t[k]).mean(0) for k in t}, False, "wrong sign"),
    (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).sum(0) for k in t}, False, "mean"),
    (lambda t, p, b: {k: t[k] + (p[k] - t[k]).mean(0) for k in t}, False, "β"),
    (lambda t, p, b: [t[k] for k in t], False, "dict"),
])
def test_check_reptile_update(fn, ok, hint, capsys):
    assert chapter.check_reptile_update(fn) is ok
    assert hint in capsys.readouterr().out


def test_reptile_explorer_every_slider_changes_the_figure():
    ex = chapter.reptile_explorer()
    images = {ex.image.value}
    for name, value in (("inner_lr", 0.3), ("inner_steps", 1), ("outer_lr", 0.8)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "Reptile at" in ex.caption.value


def _grad(fn, t):
    t = t.detach().requires_grad_(True)
    return torch.autograd.grad(fn(t), t)[0]


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda J, t, a, b: t - a * b * _grad(J, t), True, "lands exactly where Reptile does"),
    (lambda J, t, a, b: (lambda phi: t + b * (phi - t))(t - a * _grad(J, t)), True, "Reptile"),  # Reptile on J
    (lambda J, t, a, b: t + a * b * _grad(J, t), False, "wrong sign"),
    (lambda J, t, a, b: t - b * _grad(J, t), False, "not β alone"),
    (lambda J, t, a, b: t - a * _grad(J, t), False, "not α alone"),
    (lambda J, t, a, b: t - 1.7 * a * b * _grad(J, t), False, "not the same point"),
])
def test_check_reptile_joint_step(fn, ok, hint, capsys):
    assert chapter.check_reptile_joint_step(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_check_reptile_joint_step_names_a_summed_joint_loss(capsys):
    # a learner who believes J sums the tasks: with 3, 1 and 5 tasks only the many-task cases differ
    def summed(J, t, a, b, calls=[]):  # noqa: B006 - counts the grader's cases
        calls.append(1)
        n = (3, 1, 5)[len(calls) - 1]
        return t - a * b * n * _grad(J, t)

    assert chapter.check_reptile_joint_step(summed) is False
    assert "*mean* of the task losses" in capsys.readouterr().out
