"""Notebook 06 · Reptile: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch

from metaadv_edu.chapters import reptile as chapter


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).mean(0) for k in t}, True, "for one task and for many"),
        (lambda t, p, b: {k: t[k] - b * (p[k] - t[k]).mean(0) for k in t}, False, "wrong sign"),
        (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).sum(0) for k in t}, False, "mean"),
        (lambda t, p, b: {k: t[k] + (p[k] - t[k]).mean(0) for k in t}, False, "β"),
        (lambda t, p, b: [t[k] for k in t], False, "dict"),
    ],
)
def test_check_reptile_update(fn, ok, hint, capsys):
    assert chapter.check_reptile_update(fn) is ok
    assert hint in capsys.readouterr().out


def test_reptile_explorer_every_slider_changes_the_figure():
    ex = chapter.reptile_explorer()
    images = {ex.image.value}
    assert ex.blit_error() == 0  # the first image: the one a stored notebook shows
    for name, value in (("inner_lr", 0.3), ("inner_steps", 1), ("outer_lr", 0.8)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is not what a full render draws"
    assert len(images) == 4 and "Reptile at" in ex.caption.value


def _grad(fn, t):
    t = t.detach().requires_grad_(True)
    return torch.autograd.grad(fn(t), t)[0]


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lambda J, t, a, b: t - a * b * _grad(J, t), True, "lands exactly where Reptile does"),
        (lambda J, t, a, b: (lambda phi: t + b * (phi - t))(t - a * _grad(J, t)), True, "Reptile"),  # Reptile on J
        (lambda J, t, a, b: t + a * b * _grad(J, t), False, "wrong sign"),
        (lambda J, t, a, b: t - b * _grad(J, t), False, "not β alone"),
        (lambda J, t, a, b: t - a * _grad(J, t), False, "not α alone"),
        (lambda J, t, a, b: t - 1.7 * a * b * _grad(J, t), False, "not the same point"),
    ],
)
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


def test_quadratic_fixed_points_are_where_the_updates_stop():
    import numpy as np

    centers, mats = chapter._quadratic_tasks(4, 3)
    for alpha, k in ((0.1, 1), (0.1, 3), (0.3, 2)):
        fixed = chapter.quadratic_fixed_points(centers, mats, alpha, k)
        updates = chapter._quadratic_updates(fixed["Reptile"], centers, mats, alpha, k)
        assert np.abs(updates[1]).max() < 1e-10
        assert np.abs(chapter._quadratic_updates(fixed["FOMAML"], centers, mats, alpha, k)[2]).max() < 1e-10
        assert np.abs(chapter._quadratic_updates(fixed["MAML"], centers, mats, alpha, k)[3]).max() < 1e-10


def test_explorer_paths_are_the_outer_updates_iterated():
    import numpy as np

    ex = chapter.reptile_explorer(n_tasks=4, seed=3, outer_iterations=60)
    ex.set(inner_lr=0.3, inner_steps=4, outer_lr=0.5)
    centers, mats = chapter._quadratic_tasks(4, 3)
    lines = {line.get_label(): line for line in ex.figure.axes[0].get_lines()}
    for i, name in enumerate(("Reptile", "FOMAML", "MAML")):
        scale = 0.5 if name == "Reptile" else 0.5 * 0.3 * 4
        theta = np.array([2.6, -2.6])
        path = [theta]
        for _ in range(60):
            theta = np.clip(theta + scale * chapter._quadratic_updates(theta, centers, mats, 0.3, 4)[1 + i], -50, 50)
            path.append(theta)
        assert np.allclose(np.stack(lines[name].get_data(), 1), np.array(path), atol=1e-9), name


def test_with_one_inner_step_only_reptile_stops_at_the_average_loss_minimum():
    import numpy as np

    centers, mats = chapter._quadratic_tasks(4, 3)
    fixed = chapter.quadratic_fixed_points(centers, mats, 0.3, 1)
    assert np.allclose(fixed["Reptile"], fixed["average loss"], atol=1e-12)
    assert np.linalg.norm(fixed["FOMAML"] - fixed["average loss"]) > 0.5
    assert np.linalg.norm(fixed["MAML"] - fixed["average loss"]) > 0.5
    later = chapter.quadratic_fixed_points(centers, mats, 0.3, 3)
    assert np.linalg.norm(later["Reptile"] - later["average loss"]) > 0.05


def test_evaluate_own_rules_scores_each_task_with_each_learners_rule(device):
    from metaadv_edu import data, maml, models

    torch.manual_seed(0)
    net = models.SineRegressor().to(device)
    tasks = data.sine_tasks(20, 10, 30, generator=torch.Generator().manual_seed(0), device=device)
    res = chapter.evaluate_own_rules({"a": chapter.Learner(net, 0.01, 1), "b": (net, 0.02, 5)}, tasks)
    five = maml.adaptation_losses(net, tasks, inner_lr=0.02, max_steps=5)[5]
    torch.testing.assert_close(res["b"]["own"], five)
    assert res["a"]["own"].shape == (20,) and not torch.equal(res["a"]["own"], res["b"]["own"])


def test_paired_comparisons_resolve_what_overlapping_intervals_cannot():
    from metaadv_edu import stats

    g = torch.Generator().manual_seed(0)
    task_difficulty = 5 * torch.rand(300, generator=g)  # shared by both learners: it cancels in a − b
    a = task_difficulty + 0.1 * torch.randn(300, generator=g)
    b = task_difficulty + 0.2 + 0.1 * torch.randn(300, generator=g)
    ci_a, ci_b = stats.mean_ci(a), stats.mean_ci(b)
    assert ci_a.mean + ci_a.half_width > ci_b.mean - ci_b.half_width  # the unpaired intervals overlap
    lines = chapter.paired_comparisons({"b": b, "a": a})
    assert len(lines) == 1 and lines[0].startswith("a − b: -0.") and "a is better" in lines[0]
    same = chapter.paired_comparisons({"a": a, "a again": a + 0.01 * torch.randn(300, generator=g)})
    assert "not resolved" in same[0]
    assert len(chapter.paired_comparisons({"x": a, "y": b, "z": a + 1})) == 3
    with pytest.raises(ValueError, match="at least two"):
        chapter.paired_comparisons({"a": a})


def test_sine_reptile_rejects_a_bad_number_of_inner_steps():
    with pytest.raises(ValueError, match="inner_steps"):
        chapter.sine_reptile("cpu", inner_steps=0)
