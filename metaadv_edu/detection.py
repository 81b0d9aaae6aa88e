r"""Detecting perturbations from a few examples: binary "clean or perturbed?" few-shot tasks.

Derived in ``notebooks/09_detecting_unseen_attacks.ipynb``. A pool of perturbed covers is made by an
attack against each task's adapted classifier, by a trained generator (:mod:`metaadv_edu.task_generator`)
or by random signs (the control). A detection task T gives K clean and K perturbed support covers of
one perturbation, labelled 0 and 1, and a query set of each; a detector :math:`f_\theta` with two
outputs adapts all its weights on the support set and is scored on the query set:

.. math:: \theta'_T = \theta - \alpha\nabla_\theta L_{S_T}(\theta) \;(k \text{ times}), \qquad
          L_{Q_T}(\theta'_T) = \frac{1}{|Q_T|}\sum_{(x, y)\in Q_T} \log\big(1 + e^{-(2y - 1)\Delta_{\theta'_T}(x)}\big),

with :math:`\Delta = z_1 - z_0` the difference of its two logits (the two-class cross-entropy is the
logistic loss of Δ). Meta-learning θ minimises :math:`\mathbb{E}_T L_{Q_T}(\theta'_T)` over tasks of the
training perturbations (MAML, :mod:`metaadv_edu.maml`); the question is how well θ′ detects a
perturbation that never appeared in those tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import robust_meta, task_generator
from metaadv_edu.data import Tasks

__all__ = [
    "Detector",
    "PerturbationPools",
    "detection_accuracy",
    "detection_tasks",
    "leaked_tasks",
    "logistic_loss",
    "logistic_loss_check",
    "logistic_loss_grad",
    "paired_scores",
    "perturbation_pool",
    "perturbation_pools",
    "perturbed_accuracy",
]


class Detector(NamedTuple):
    """A few-shot detector: its initial weights, and how it adapts to a task (``steps`` SGD steps of
    ``inner_lr`` on the support set; ``steps = 0`` uses it as it is)."""

    model: nn.Module
    inner_lr: float
    steps: int


class PerturbationPools(NamedTuple):
    """Covers of :func:`perturbation_pools`: ``covers[name]`` (n_covers, …), with ``"clean"`` last, and the
    adapted classifier's per-task query accuracy on each, ``accuracy[name]`` (n_tasks,)."""

    covers: dict[str, torch.Tensor]
    accuracy: dict[str, torch.Tensor]


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
    one forward pass; its budget ``perturber.epsilon`` must equal ``epsilon``) or ``"noise"`` (uniform random
    signs ±ε: a perturbation that is not an attack, the control).
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
        budget = getattr(perturber, "epsilon", None)
        if budget is None or abs(float(budget) - epsilon) > 1e-9:
            raise ValueError(
                f"epsilon must equal the perturber's own budget for kind='generator': got epsilon={epsilon:.6g}, "
                f"perturber.epsilon={budget}"
            )
        x_adv = task_generator.generate(perturber, xq, generator=generator)
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
) -> PerturbationPools:
    """Every perturbation of ``specs`` (``{name: (kind, ε)}``, kinds as in :func:`perturbation_pool`) of the
    query covers of ``tasks``, plus ``"clean"``, and the adapted ``model``'s per-task query accuracy on each.
    Each pool uses a generator seeded with ``seed``."""
    if not specs:
        raise ValueError("specs must name at least one perturbation")
    covers: dict[str, torch.Tensor] = {}
    for name, (kind, eps) in specs.items():
        clean, covers[name] = perturbation_pool(
            model,
            tasks,
            kind=kind,
            epsilon=eps,
            inner_lr=inner_lr,
            steps=steps,
            perturber=perturber,
            generator=torch.Generator().manual_seed(seed),
        )
    covers["clean"] = clean  # last, as in the tables
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
    accuracy = {
        name: robust_meta.task_accuracy(model, adapted, x.view_as(tasks.x_query), tasks.y_query)
        for name, x in covers.items()
    }
    return PerturbationPools(covers, accuracy)


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
    its query set; the clean and perturbed covers of a task come from different originals
    (:func:`leaked_tasks` checks it). A support pair (x, x + δ) would differ only by δ: adaptation would see
    the perturbation with the cover's content cancelled, a matched signal a defender who collects attacked
    covers does not get, and the scores would overstate detection.
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
        xs.append(torch.cat([c[:k_shot], p[:k_shot]]))
        xq.append(torch.cat([c[k_shot:], p[k_shot:]]))
        ys.append(torch.tensor([0] * k_shot + [1] * k_shot, device=clean.device))
        yq.append(torch.tensor([0] * k_query + [1] * k_query, device=clean.device))
    return Tasks(torch.stack(xs), torch.stack(ys), torch.stack(xq), torch.stack(yq))


def logistic_loss(delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Eq. (2) of notebook 09, per cover: the two-class cross-entropy as the logistic loss of the logit
    difference Δ = z₁ − z₀, :math:`\ell = \log(1 + e^{-(2y - 1)\Delta})`, for labels y ∈ {0, 1}."""
    return F.softplus(-(2 * y.to(delta.dtype) - 1) * delta)


def logistic_loss_grad(delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Eq. (3) of notebook 09, per cover: :math:`\partial\ell/\partial\Delta = \sigma(\Delta) - y`."""
    return torch.sigmoid(delta) - y.to(delta.dtype)


def logistic_loss_check(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = logistic_loss,
    grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = logistic_loss_grad,
    *,
    n: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    r"""Eqs. (2)–(3) of notebook 09 against PyTorch: ``loss(Δ, y)`` must equal the two-class cross-entropy
    ``F.cross_entropy(z, y)`` of logits z, per cover, and ``grad(Δ, y)`` its autograd derivative ∂ℓ/∂z₁ (which
    is ∂ℓ/∂Δ, since ∂Δ/∂z₁ = 1) and −∂ℓ/∂z₀. ``n`` random logits (standard deviation 3) and labels from
    ``seed``, in float64 on the CPU. Returns the largest absolute errors (loss, gradient); both are ~1e-16 for
    eqs. (2)–(3), and of order 1 for a sign error in either.
    """
    n = v.integer("n", n)
    g = torch.Generator().manual_seed(seed)
    z = (3 * torch.randn(n, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(2, (n,), generator=g)
    reference = F.cross_entropy(z, y, reduction="none")
    (dz,) = torch.autograd.grad(reference.sum(), z)
    delta = (z[:, 1] - z[:, 0]).detach()
    loss_error = float((loss(delta, y) - reference.detach()).abs().max())
    claimed = grad(delta, y)
    grad_error = float(torch.maximum((claimed - dz[:, 1]).abs(), (claimed + dz[:, 0]).abs()).max())
    return loss_error, grad_error


def leaked_tasks(tasks: Tasks, epsilon: float) -> int:
    r"""How many detection tasks hold a perturbed cover within ε (L∞) of one of their clean covers.

    A perturbed cover is its original moved by at most ε per pixel (then clamped, which only moves a pixel
    back towards the original), so a perturbed cover of the same original as a clean cover of the task
    lies within ε of it. Two different covers differ by far more than ε in some pixel (notebook 09 prints the
    smallest distance between two of its clean covers), so a correct :func:`detection_tasks` gives 0.
    """
    epsilon = v.nonnegative("epsilon", epsilon)
    x = torch.cat([tasks.x_support, tasks.x_query], dim=1).flatten(2)
    y = torch.cat([tasks.y_support, tasks.y_query], dim=1)
    leaked = 0
    for xt, yt in zip(x, y):
        clean, perturbed = xt[yt == 0], xt[yt == 1]
        distance = (perturbed[:, None] - clean[None]).abs().amax(-1)
        leaked += int((distance <= epsilon + 1e-6).any())
    return leaked


def detection_accuracy(
    detectors: dict[str, Detector],
    clean: torch.Tensor,
    perturbed: torch.Tensor,
    shots: Sequence[int],
    *,
    n_tasks: int = 50,
    k_query: int = 10,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Accuracy of each detector after adapting to K clean and K perturbed covers, for every K in
    ``shots``: ``{detector: tensor (len(shots), n_tasks)}``. For each K the tasks are drawn once, from a
    generator seeded with ``seed + K``, and every detector is scored on the same tasks: the scores are
    paired, and detectors are compared through their per-task differences (:mod:`metaadv_edu.stats`)."""
    if not detectors:
        raise ValueError("detectors must hold at least one Detector")
    out: dict[str, list[torch.Tensor]] = {name: [] for name in detectors}
    for k in shots:
        tasks = detection_tasks(
            clean, [perturbed], n_tasks, k_shot=k, k_query=k_query, generator=torch.Generator().manual_seed(seed + k)
        )
        for name, detector in detectors.items():
            adapted = robust_meta.adapt_tasks(detector.model, tasks, inner_lr=detector.inner_lr, steps=detector.steps)
            out[name].append(robust_meta.task_accuracy(detector.model, adapted, tasks.x_query, tasks.y_query))
    return {name: torch.stack(rows) for name, rows in out.items()}


def paired_scores(
    accuracy_fn: Callable[..., dict[str, torch.Tensor]],
    detectors: dict[str, Detector],
    clean: torch.Tensor,
    perturbed: torch.Tensor,
    shots: Sequence[int],
    **kwargs,
) -> bool:
    """Whether ``accuracy_fn`` (e.g. :func:`detection_accuracy`) scores every detector on the same tasks.

    Two necessary conditions are checked. (1) A detector's per-task scores cannot depend on which other
    detectors are evaluated with it: each detector scored alone must get exactly the scores it gets among all
    of them. An evaluation that draws tasks per detector (from one running generator, or inside the loop over
    detectors) fails. (2) The tasks cannot depend on a detector's name: two copies of the same detector under
    different names must get identical per-task scores. An evaluation that seeds each detector's tasks from
    its name passes (1) but fails (2). Either way its per-task differences would not be paired differences.
    """
    if not detectors:
        raise ValueError("detectors must hold at least one Detector")
    together = accuracy_fn(detectors, clean, perturbed, shots, **kwargs)
    for name, detector in reversed(list(detectors.items())):
        alone = accuracy_fn({name: detector}, clean, perturbed, shots, **kwargs)
        if not torch.equal(alone[name], together[name]):
            return False
    name, detector = next(iter(detectors.items()))
    copy_name = f"{name} (a copy)"
    twins = accuracy_fn({name: detector, copy_name: detector}, clean, perturbed, shots, **kwargs)
    return torch.equal(twins[name], twins[copy_name])
