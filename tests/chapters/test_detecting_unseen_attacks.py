"""Notebook 09 · Detecting unseen attacks: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import math

import matplotlib.pyplot as plt
import pytest
import torch
from scipy import stats as scipy_stats

from metaadv_edu import detection, models
from metaadv_edu.chapters import detecting_unseen_attacks as chapter


def _paired(quantile="t", dof=-1, ddof=1, unpaired=False, per_mean=True, swap=False):
    def paired(a, b):
        if swap:
            a, b = b, a
        d = a - b
        n = len(d)
        q = 1.96 if quantile == "normal" else scipy_stats.t.ppf(0.975, n + dof)
        spread = math.sqrt(a.var() / n + b.var() / n) if unpaired else float(d.std(correction=ddof))
        return float(d.mean()), q * spread / (math.sqrt(n) if per_mean and not unpaired else 1.0)

    return paired


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (_paired(), True, "Student's t interval"),
        (_paired(quantile="normal"), False, "normal quantile"),
        (_paired(dof=0), False, "n − 1 degrees of freedom, not n"),
        (_paired(ddof=0), False, "ddof=1"),
        (_paired(unpaired=True), False, "unpaired"),
        (_paired(per_mean=False), False, "divide the standard deviation by √n"),
        (_paired(swap=True), False, "wrong sign"),
        (lambda a, b: 0.5, False, "return two numbers"),
    ],
)
def test_check_paired_difference(fn, ok, hint, capsys):
    assert chapter.check_paired_difference(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def _bias_step(factor=-2.0, reduce="mean", flip=False):
    def step(logits, y, alpha):
        delta = logits[:, 1] - logits[:, 0]
        p = torch.sigmoid(-delta if flip else delta)
        g = p - y.to(p.dtype)
        return factor * alpha * (g.mean() if reduce == "mean" else g.sum())

    return step


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (_bias_step(), True, "−2α·mean"),
        (_bias_step(factor=-1.0), False, "only half the change"),
        (_bias_step(factor=2.0), False, "wrong sign"),
        (_bias_step(reduce="sum"), False, "not the sum"),
        (_bias_step(flip=True), False, "σ of the wrong difference"),
        (lambda logits, y, alpha: torch.zeros(2), False, "shape"),
    ],
)
def test_check_bias_step(fn, ok, hint, capsys):
    assert chapter.check_bias_step(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_every_detector_has_its_adaptation_and_the_joint_one_does_not_adapt():
    assert set(chapter.ADAPTATION) == {"meta-learned", "joint, no adaptation", "joint + fine-tune", "from scratch"}
    assert chapter.ADAPTATION["meta-learned"] == (chapter.DETECTION["inner_lr"], chapter.DETECTION["steps"])
    assert chapter.ADAPTATION["joint, no adaptation"][1] == 0


def test_the_seen_reference_is_a_training_perturbation_and_the_experiment_needs_its_pool():
    assert chapter.SEEN in chapter.DETECTION["train"]
    assert chapter.SEEN not in chapter.DETECTION["held_out"]
    detector = detection.Detector(models.TinyCNN(3, 2, width=4, image_size=8), 0.1, 0)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(40, 3, 8, 8, generator=g)
    pools = {"clean": clean, **{name: (clean + 0.1).clamp(0, 1) for name in chapter.DETECTION["held_out"]}}
    with pytest.raises(ValueError, match=chapter.SEEN):
        chapter.detection_experiment({"d": detector}, pools, [1])
    pools[chapter.SEEN] = (clean - 0.1).clamp(0, 1)
    out = chapter.detection_experiment({"d": detector}, pools, [1, 2], n_tasks=3, seed=4)
    assert list(out) == [*chapter.DETECTION["held_out"], chapter.SEEN]
    assert all(acc["d"].shape == (2, 3) for acc in out.values())


def test_explorer_tasks_remake_the_perturbation_at_any_epsilon():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(40, 3, 8, 8, generator=g)
    direction = torch.rand(40, 3, 8, 8, generator=g) * 2 - 1
    tasks = chapter.explorer_tasks(clean, direction, 3, k_shot=2, k_query=3)
    zero, some = chapter.at_epsilon(tasks, 0.0), chapter.at_epsilon(tasks, 0.1)
    assert some.x_support.shape == (3, 4, 3, 8, 8) and some.x_query.shape == (3, 6, 3, 8, 8)
    moved = (some.x_query - zero.x_query).flatten(2).abs().amax(-1)
    assert (moved[some.y_query == 0] == 0).all()  # clean covers do not move
    assert (moved[some.y_query == 1] > 0).all() and moved.max() <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="direction"):
        chapter.explorer_tasks(clean, direction[:10], 3, k_shot=2, k_query=3)


def test_detection_explorer_adapts_without_training():
    torch.manual_seed(0)
    meta, joint = models.TinyCNN(3, 2, width=4, image_size=8), models.TinyCNN(3, 2, width=4, image_size=8)
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(40, 3, 8, 8, generator=g)
    tasks = {
        "generator": chapter.explorer_tasks(
            clean, torch.rand(40, 3, 8, 8, generator=g) * 2 - 1, 3, k_shot=2, k_query=3
        ),
        "noise": chapter.explorer_tasks(
            clean, torch.randint(0, 2, (40, 3, 8, 8), generator=g) * 2.0 - 1, 3, k_shot=2, k_query=3
        ),
    }
    before = [p.detach().clone() for m in (meta, joint) for p in m.parameters()]
    open_figures = plt.get_fignums()
    ex = chapter.detection_explorer(meta, joint, tasks, epsilon=0.1, inner_lr=0.1)
    images = {ex.image.value}
    assert "joint, no adaptation" in ex.caption.value and "3 tasks" in ex.caption.value
    # blitted = a full render but on the static frames; a title left stale
    # differs in 0.04 % of the pixels or more
    assert ex.blit_error() == 0, "the first (stored) image is what a full render draws"
    for name, value in (("epsilon", 13 / 255), ("inner_lr", 0.5), ("perturbation", "noise")):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is what a full render draws"
    assert len(images) == 4, "each slider move must change the picture"
    after = [p for m in (meta, joint) for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in after)
    assert plt.get_fignums() == open_figures
    with pytest.raises(ValueError, match="tasks"):
        chapter.detection_explorer(meta, joint, {})
    with pytest.raises(ValueError, match="inner_lr"):
        chapter.detection_explorer(meta, joint, tasks, inner_lr=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        chapter.at_epsilon(tasks["noise"], -0.1)


def test_generator_at_training_budget_pairs_clean_and_perturbed_tasks_of_both_pools():
    accuracy, fooled = chapter.generator_at_training_budget("cpu")  # the shipped weights
    assert set(accuracy) == {"meta-train", "meta-test"}
    for acc in accuracy.values():
        assert set(acc) == {"clean", "generator 8/255"}
        assert acc["clean"].shape == acc["generator 8/255"].shape == (32,)
    assert len(fooled) == 150 and all(0 <= f <= 1 for f in fooled)
