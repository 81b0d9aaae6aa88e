"""Few-shot detection of perturbations and the task generator: notebook 09's library, and its checks' teeth."""

from __future__ import annotations

import pytest
import torch

from metaadv_edu import covers, detection, gan, models, robust_meta, task_generator
from metaadv_edu.data import Tasks
from tests.wrong import rejects


def _tasks(device, n_tasks=3, n_way=3, k_shot=2, k_query=3, seed=0, pool="meta-train"):
    return covers.cover_tasks(
        n_tasks,
        n_way=n_way,
        k_shot=k_shot,
        k_query=k_query,
        size=8,
        pool=pool,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )


def _model(device, n_out=3, seed=0):
    torch.manual_seed(seed)
    return models.TinyCNN(3, n_out, width=4, image_size=8).to(device)


def _pools(device, n_covers=60, epsilon=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n_covers, 3, 8, 8, generator=g).to(device)
    signs = torch.randint(0, 2, clean.shape, generator=g).to(clean) * 2 - 1
    return clean, (clean + epsilon * signs).clamp(0, 1)


def _detectors(device):
    return {
        "a": detection.Detector(_model(device, 2, seed=1), 0.3, 1),
        "b": detection.Detector(_model(device, 2, seed=2), 0.1, 0),
        "c": detection.Detector(_model(device, 2, seed=3), 0.5, 2),
    }


def test_task_generator_learns_to_fool_adapted_models():
    model = _model("cpu")
    sample = lambda g: _tasks("cpu", n_tasks=2, seed=int(torch.randint(100, (1,), generator=g)))  # noqa: E731
    perturber = gan.PerturbationGenerator((3, 8, 8), 0.1, hidden=32)
    h = task_generator.train_task_generator(
        perturber,
        model,
        sample,
        inner_lr=0.3,
        iterations=60,
        lr=3e-3,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert sum(h["margin"][-10:]) < sum(h["margin"][:10])
    assert all(p.grad is None for p in model.parameters())


def test_margin_loss_is_the_true_logit_minus_the_best_other_floored_at_minus_kappa():
    logits = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, -1.0]])
    y = torch.tensor([0, 0])
    # margins: 2 − 1 = 1 and 0 − 3 = −3; with κ = 1 the second is floored at −1
    assert float(gan.margin_loss(logits, y)) == pytest.approx((1 + 0) / 2)
    assert float(gan.margin_loss(logits, y, kappa=1.0)) == pytest.approx((1 - 1) / 2)
    assert float(gan.margin_loss(logits, y, kappa=10.0)) == pytest.approx((1 - 3) / 2)


def test_generate_stays_in_the_generators_budget(device):
    perturber = gan.PerturbationGenerator((3, 8, 8), 0.05, hidden=16).to(device)
    x = torch.rand(2, 4, 3, 8, 8).to(device)
    out = task_generator.generate(perturber, x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not out.requires_grad
    assert (out - x).abs().max() <= 0.05 + 1e-6 and (out != x).any()
    with pytest.raises(ValueError, match="n_tasks"):
        task_generator.generate(perturber, x[0, 0])


@pytest.mark.parametrize("kind", ["fgsm", "pgd", "generator", "noise"])
def test_perturbation_pools_stay_in_the_budget(device, kind):
    model, tasks = _model(device), _tasks(device)
    perturber = gan.PerturbationGenerator((3, 8, 8), 0.05, hidden=16).to(device)
    clean, pert = detection.perturbation_pool(
        model,
        tasks,
        kind=kind,
        epsilon=0.05,
        inner_lr=0.3,
        perturber=perturber,
        generator=torch.Generator().manual_seed(0),
    )
    assert clean.shape == pert.shape == (3 * 9, 3, 8, 8)
    assert (pert - clean).abs().max() <= 0.05 + 1e-6
    assert pert.min() >= 0 and pert.max() <= 1
    assert (pert != clean).any()


def test_perturbation_pools_put_clean_last_and_score_every_pool(device):
    model, tasks = _model(device), _tasks(device, n_tasks=4)
    pools = detection.perturbation_pools(
        model, tasks, {"PGD": ("pgd", 0.2), "none": ("noise", 0.0)}, inner_lr=0.3, steps=1
    )
    assert list(pools.covers) == ["PGD", "none", "clean"]
    assert all(a.shape == (4,) for a in pools.accuracy.values())
    torch.testing.assert_close(pools.accuracy["none"], pools.accuracy["clean"])
    with pytest.raises(ValueError, match="specs"):
        detection.perturbation_pools(model, tasks, {}, inner_lr=0.3)


def test_detection_tasks_are_balanced_and_use_different_originals(device):
    clean = torch.arange(40, device=device, dtype=torch.float32).view(40, 1).expand(40, 4).reshape(40, 1, 2, 2)
    perturbed = clean + 0.5
    tasks = detection.detection_tasks(
        clean, [perturbed], 5, k_shot=3, k_query=4, generator=torch.Generator().manual_seed(0)
    )
    assert tasks.x_support.shape == (5, 6, 1, 2, 2) and tasks.x_query.shape == (5, 8, 1, 2, 2)
    assert (tasks.y_support.sum(1) == 3).all() and (tasks.y_query.sum(1) == 4).all()
    for t in range(5):
        xs = torch.cat([tasks.x_support[t], tasks.x_query[t]])[:, 0, 0, 0]
        ys = torch.cat([tasks.y_support[t], tasks.y_query[t]])
        # a perturbed cover is 0.5 above its original; labels say which is which
        assert ((xs % 1 == 0.5) == (ys == 1)).all()
        assert len(set(xs.floor().tolist())) == len(xs)  # no original appears twice


def _same_originals(clean, perturbed, n_tasks, *, k_shot, k_query, generator=None):
    """A plausible wrong task builder: the perturbed covers of a task are the perturbed versions of its own
    clean covers (one random draw of originals used for both halves)."""
    per = k_shot + k_query
    xs, ys, xq, yq = [], [], [], []
    for _ in range(n_tasks):
        idx = torch.randperm(len(clean), generator=generator)[:per].to(clean.device)
        c, p = clean[idx], perturbed[idx]
        xs.append(torch.cat([c[:k_shot], p[:k_shot]]))
        xq.append(torch.cat([c[k_shot:], p[k_shot:]]))
        ys.append(torch.tensor([0] * k_shot + [1] * k_shot, device=clean.device))
        yq.append(torch.tensor([0] * k_query + [1] * k_query, device=clean.device))
    return Tasks(torch.stack(xs), torch.stack(ys), torch.stack(xq), torch.stack(yq))


@rejects("detection_no_shared_originals", "perturbed covers made from the task's own clean covers")
def test_leak_check_passes_detection_tasks_and_rejects_shared_originals(device):
    clean, perturbed = _pools(device, epsilon=0.1)
    good = detection.detection_tasks(clean, [perturbed], 20, k_shot=5, k_query=5, generator=torch.Generator())
    assert detection.leaked_tasks(good, 0.1) == 0
    wrong = _same_originals(clean, perturbed, 20, k_shot=5, k_query=5, generator=torch.Generator().manual_seed(0))
    assert detection.leaked_tasks(wrong, 0.1) == 20


def _drawn_per_detector(detectors, clean, perturbed, shots, *, n_tasks=50, k_query=10, seed=0):
    """A plausible wrong evaluation: one running generator, tasks drawn afresh for every detector, so each
    detector is scored on different tasks and the per-task differences are not paired."""
    g = torch.Generator().manual_seed(seed)
    out = {name: [] for name in detectors}
    for k in shots:
        for name, d in detectors.items():
            tasks = detection.detection_tasks(clean, [perturbed], n_tasks, k_shot=k, k_query=k_query, generator=g)
            adapted = robust_meta.adapt_tasks(d.model, tasks, inner_lr=d.inner_lr, steps=d.steps)
            out[name].append(robust_meta.task_accuracy(d.model, adapted, tasks.x_query, tasks.y_query))
    return {name: torch.stack(rows) for name, rows in out.items()}


def _seeded_per_detector(detectors, clean, perturbed, shots, *, n_tasks=50, k_query=10, seed=0):
    """Another wrong evaluation: each detector gets its own seed (its position in the dict)."""
    out = {}
    for i, (name, d) in enumerate(detectors.items()):
        out[name] = detection.detection_accuracy({name: d}, clean, perturbed, shots, n_tasks=n_tasks, seed=seed + i)
    return {name: rows[name] for name, rows in out.items()}


def _seeded_by_name(detectors, clean, perturbed, shots, *, n_tasks=50, k_query=10, seed=0):
    """A subtler wrong evaluation: each detector's tasks are seeded from its name, so a detector scores the
    same alone as among others, yet two detectors never share their tasks."""
    out = {}
    for name, d in detectors.items():
        own = seed + sum(name.encode())
        out[name] = detection.detection_accuracy({name: d}, clean, perturbed, shots, n_tasks=n_tasks, seed=own)[name]
    return out


@rejects("detection_paired_tasks", "tasks drawn afresh for every detector from one running generator")
@rejects("detection_paired_tasks", "a different seed for every detector")
@rejects("detection_paired_tasks", "every detector's tasks seeded from its name")
def test_pairing_check_passes_detection_accuracy_and_rejects_unpaired_evaluations(device):
    clean, perturbed = _pools(device)
    detectors = _detectors(device)
    common = {"n_tasks": 4, "k_query": 3, "seed": 5}
    assert detection.paired_scores(detection.detection_accuracy, detectors, clean, perturbed, [1, 3], **common)
    assert not detection.paired_scores(_drawn_per_detector, detectors, clean, perturbed, [1, 3], **common)
    assert not detection.paired_scores(_seeded_per_detector, detectors, clean, perturbed, [1, 3], **common)
    # the name-seeded evaluation scores each detector the same alone as together: only the copy test catches it
    together = _seeded_by_name(detectors, clean, perturbed, [1, 3], **common)
    for name, d in detectors.items():
        assert torch.equal(_seeded_by_name({name: d}, clean, perturbed, [1, 3], **common)[name], together[name])
    assert not detection.paired_scores(_seeded_by_name, detectors, clean, perturbed, [1, 3], **common)
    assert not detection.paired_scores(_seeded_by_name, {"a": detectors["a"]}, clean, perturbed, [1, 3], **common)


def test_detection_accuracy_shapes_and_an_unadapted_detector(device):
    clean, perturbed = _pools(device)
    detectors = _detectors(device)
    out = detection.detection_accuracy(detectors, clean, perturbed, [1, 2, 4], n_tasks=5, k_query=3)
    assert set(out) == set(detectors) and all(a.shape == (3, 5) for a in out.values())
    assert all(((a >= 0) & (a <= 1)).all() for a in out.values())
    with pytest.raises(ValueError, match="detectors"):
        detection.detection_accuracy({}, clean, perturbed, [1])


def test_bad_pools_and_budgets_name_the_parameter():
    model, tasks = _model("cpu"), _tasks("cpu")
    with pytest.raises(ValueError, match="perturbed"):
        detection.detection_tasks(torch.rand(10, 3), [torch.rand(9, 3)], 2, k_shot=1, k_query=1)
    with pytest.raises(ValueError, match="k_shot"):
        detection.detection_tasks(torch.rand(10, 3), [torch.rand(10, 3)], 2, k_shot=3, k_query=3)
    with pytest.raises(ValueError, match="perturber"):
        detection.perturbation_pool(model, tasks, kind="generator", epsilon=0.1, inner_lr=0.3)
    perturber = gan.PerturbationGenerator((3, 8, 8), 0.05, hidden=16)
    with pytest.raises(ValueError, match="epsilon"):
        detection.perturbation_pool(model, tasks, kind="generator", epsilon=0.1, inner_lr=0.3, perturber=perturber)
    with pytest.raises(ValueError, match="kind"):
        detection.perturbation_pool(model, tasks, kind="blur", epsilon=0.1, inner_lr=0.3)
    with pytest.raises(ValueError, match="epsilon"):
        detection.leaked_tasks(tasks, -0.1)


def test_perturbed_accuracy_reports_clean_and_every_perturbation(device):
    model, tasks = _model(device), _tasks(device, n_tasks=4)
    out = detection.perturbed_accuracy(
        model, tasks, {"PGD": ("pgd", 0.2), "noise": ("noise", 0.0)}, inner_lr=0.3, steps=1
    )
    assert set(out) == {"clean", "PGD", "noise"} and all(a.shape == (4,) for a in out.values())
    torch.testing.assert_close(out["noise"], out["clean"])  # ε = 0 changes nothing
    assert out["PGD"].mean() <= out["clean"].mean()


def test_logistic_loss_check_passes_eqs_2_and_3():
    loss_error, grad_error = detection.logistic_loss_check()
    assert loss_error < 1e-12 and grad_error < 1e-12


@rejects("detection_logistic_loss", "label sign flipped in the loss: log(1 + exp((2y − 1)Δ))")
@rejects("detection_logistic_loss", "label dropped from the loss: log(1 + exp(−Δ)) for every cover")
def test_logistic_loss_check_rejects_a_wrong_loss():
    for wrong in (
        lambda delta, y: torch.log1p(torch.exp((2 * y.to(delta.dtype) - 1) * delta)),
        lambda delta, y: torch.nn.functional.softplus(-delta),
    ):
        loss_error, grad_error = detection.logistic_loss_check(loss=wrong)
        assert loss_error > 0.1 and grad_error < 1e-12


@rejects("detection_logistic_loss", "gradient sign flipped: y − σ(Δ)")
@rejects("detection_logistic_loss", "σ of the wrong difference: σ(−Δ) − y")
def test_logistic_loss_check_rejects_a_wrong_gradient():
    for wrong in (
        lambda delta, y: y.to(delta.dtype) - torch.sigmoid(delta),
        lambda delta, y: torch.sigmoid(-delta) - y.to(delta.dtype),
    ):
        loss_error, grad_error = detection.logistic_loss_check(grad=wrong)
        assert grad_error > 0.1 and loss_error < 1e-12
