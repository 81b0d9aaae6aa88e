"""Detecting perturbations from a few examples: binary "clean or perturbed?" few-shot tasks.

Derived and used in ``notebooks/08_meta_adversarial_training.ipynb``, part B. A pool of perturbed
covers is made by an attack against each task's adapted model, by a trained generator, or by random
signs (the control); a detector adapts to K clean and K perturbed support covers of a perturbation it
never saw in training, and is scored on the query covers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import robust_meta
from metaadv_edu.data import Tasks

__all__ = ["detection_accuracy", "detection_tasks", "perturbation_pool", "perturbation_pools", "perturbed_accuracy"]


def perturbation_pool(
    model: nn.Module,
    tasks: Tasks,
    *,
    kind: str,
    epsilon: float,
    inner_lr,
    steps: int = 1,
    perturber: nn.Module | None = None,
    attack_steps: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean query covers and their perturbed versions, flattened over tasks: ``(clean, perturbed)``.

    ``kind`` is ``"fgsm"`` or ``"pgd"`` (against each task's adapted model), ``"generator"`` (``perturber``,
    one forward pass) or ``"noise"`` (uniform random signs ±ε: a perturbation that is not an attack, the
    control).
    """
    v.choice("kind", kind, ("fgsm", "pgd", "generator", "noise"))
    epsilon = v.nonnegative("epsilon", epsilon)
    xq, yq = tasks.x_query, tasks.y_query
    if kind in robust_meta.ATTACKS:
        adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
        x_adv = robust_meta.attack_tasks(
            model, adapted, xq, yq, epsilon=epsilon, attack=kind, attack_steps=attack_steps, generator=generator
        )
    elif kind == "generator":
        if perturber is None:
            raise ValueError("kind='generator' needs a perturber (a trained PerturbationGenerator)")
        z = torch.randn(xq.shape[0] * xq.shape[1], perturber.noise_dim, generator=generator).to(xq.device)
        with torch.no_grad():
            x_adv = perturber(xq.flatten(0, 1), z).view_as(xq)
    else:
        signs = torch.randint(0, 2, xq.shape, generator=generator).to(xq) * 2 - 1
        x_adv = (xq + epsilon * signs).clamp(0, 1)

    return xq.flatten(0, 1), x_adv.flatten(0, 1).detach()


def perturbation_pools(
    model: nn.Module,
    tasks: Tasks,
    specs: dict[str, tuple[str, float]],
    *,
    inner_lr,
    steps: int = 1,
    perturber: nn.Module | None = None,
    seed: int = 0,
):
    """Every perturbation of ``specs`` (``{name: (kind, ε)}``, kinds as in :func:`perturbation_pool`) of the
    query covers of ``tasks``, plus ``"clean"``, and the adapted ``model``'s per-task query accuracy on each:
    ``({name: covers}, {name: (n_tasks,)})``. Each pool uses a generator seeded with ``seed``."""
    out = {}
    for name, (kind, eps) in specs.items():
        out["clean"], out[name] = perturbation_pool(
            model,
            tasks,
            kind=kind,
            epsilon=eps,
            inner_lr=inner_lr,
            steps=steps,
            perturber=perturber,
            generator=torch.Generator().manual_seed(seed),
        )
    out["clean"] = out.pop("clean")  # last, as in the tables
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
    accuracy = {
        name: robust_meta.task_accuracy(model, adapted, x.view_as(tasks.x_query), tasks.y_query)
        for name, x in out.items()
    }
    return out, accuracy


def perturbed_accuracy(
    model: nn.Module,
    tasks: Tasks,
    perturbations: dict[str, tuple[str, float]],
    *,
    inner_lr,
    steps: int = 1,
    perturber: nn.Module | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Per-task query accuracy of ``model`` after adapting to each clean support set: ``"clean"``, and under
    every perturbation ``{name: (kind, ε)}`` of :func:`perturbation_pool` (FGSM and PGD against the adapted
    weights, the generator, random signs). A perturbation's fooling rate is its drop from clean."""
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
    out = {"clean": robust_meta.task_accuracy(model, adapted, tasks.x_query, tasks.y_query)}
    for name, (kind, eps) in perturbations.items():
        _, x = perturbation_pool(
            model,
            tasks,
            kind=kind,
            epsilon=eps,
            inner_lr=inner_lr,
            steps=steps,
            perturber=perturber,
            generator=torch.Generator().manual_seed(seed),
        )
        out[name] = robust_meta.task_accuracy(model, adapted, x.view_as(tasks.x_query), tasks.y_query)
    return out


def detection_accuracy(
    learners: dict[str, robust_meta.Learner],
    clean: torch.Tensor,
    perturbed: torch.Tensor,
    shots: Sequence[int],
    *,
    n_tasks: int = 50,
    k_query: int = 10,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Accuracy of each detector after adapting to K clean and K perturbed covers, for every K in
    ``shots``: ``{learner: tensor (len(shots), n_tasks)}``. All learners see the same tasks."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in learners}
    for k in shots:
        tasks = detection_tasks(
            clean, [perturbed], n_tasks, k_shot=k, k_query=k_query, generator=torch.Generator().manual_seed(seed + k)
        )
        for name, (model, inner_lr, steps) in learners.items():
            adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
            out[name].append(robust_meta.task_accuracy(model, adapted, tasks.x_query, tasks.y_query))

    return {name: torch.stack(rows) for name, rows in out.items()}


def detection_tasks(
    clean: torch.Tensor,
    perturbed: Sequence[torch.Tensor],
    n_tasks: int,
    *,
    k_shot: int,
    k_query: int,
    generator: torch.Generator | None = None,
) -> Tasks:
    """Binary tasks "clean (0) or perturbed (1)?", each drawn from one pool of ``perturbed`` chosen at random.

    Every task has ``k_shot`` clean and ``k_shot`` perturbed support covers and ``k_query`` of each in
    its query set; the clean and perturbed covers of a task come from different originals, so a
    detector cannot compare a cover with its own clean version.
    """
    n_tasks = v.integer("n_tasks", n_tasks)
    k_shot, k_query = v.integer("k_shot", k_shot), v.integer("k_query", k_query)
    if not perturbed or any(p.shape != clean.shape for p in perturbed):
        raise ValueError(f"perturbed must be a non-empty list of tensors shaped like clean {tuple(clean.shape)}")
    per = k_shot + k_query
    if 2 * per > len(clean):
        raise ValueError(f"k_shot + k_query must be at most {len(clean) // 2} for a pool of {len(clean)} covers")
    xs, ys, xq, yq = [], [], [], []
    for _ in range(n_tasks):
        pool = perturbed[int(torch.randint(len(perturbed), (1,), generator=generator))]
        idx = torch.randperm(len(clean), generator=generator)[: 2 * per].to(clean.device)
        c, p = clean[idx[:per]], pool[idx[per:]]
        label = torch.tensor([0] * k_shot + [1] * k_shot, device=clean.device)
        xs.append(torch.cat([c[:k_shot], p[:k_shot]]))
        xq.append(torch.cat([c[k_shot:], p[k_shot:]]))
        ys.append(label)
        yq.append(torch.tensor([0] * k_query + [1] * k_query, device=clean.device))
    return Tasks(torch.stack(xs), torch.stack(ys), torch.stack(xq), torch.stack(yq))
