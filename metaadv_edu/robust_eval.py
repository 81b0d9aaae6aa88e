r"""Robust accuracy of few-shot learners: an upper bound from attacks, made tighter by strong attacks and
the per-example worst case.

Derived and used in ``notebooks/08_meta_adversarial_training.ipynb`` (part A). The robust accuracy of an
adapted model θ′ on a query set at budget ε is

.. math:: A_\epsilon = \frac1n\sum_{j=1}^n \mathbb{1}\Big[\forall\,\delta,\ \|\delta\|_\infty\le\epsilon:\;
          \arg\max_c f_{\theta'}(x_j + \delta)_c = y_j\Big].

An attack tries *some* perturbations, so the accuracy it leaves is an **upper bound** on :math:`A_\epsilon`:
an example it fails to break may still have an adversarial perturbation. Two things tighten the bound,
and both are here: a stronger attack (more PGD steps, several random starts; an example counts as robust
only if it survives every start), and the **per-example worst case** over all the attacks run (and the
unperturbed input, δ = 0, which lies in the ball): an example counts as robust only if every one of them
leaves it correctly classified. Neither gives a lower bound; that takes a certificate.

Two sanity checks guard against a bound that is loose because the attack fails (Carlini et al. 2019): at a
large ε every learner must fall to about 0 % (:func:`evaluate_learners` at large ``epsilons``), and attacks
*transferred* from another learner's adapted weights, which see no gradient of the target, must not beat the
white-box attack on it (:func:`transfer_correct`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.func import vmap

from metaadv_edu import _validate as v
from metaadv_edu import robust_meta
from metaadv_edu.data import Tasks
from metaadv_edu.device import side_by_side
from metaadv_edu.functional import Params, forward

__all__ = ["WORST_CASE", "Attack", "correct_under_attack", "evaluate_learners", "transfer_correct", "worst_case"]

WORST_CASE = "worst case"
"""The key of the per-example worst case over all attacks in :func:`evaluate_learners`' result."""


class Attack(NamedTuple):
    """An L∞ attack of the evaluation: ``"fgsm"`` (one step of ε), or ``"pgd"`` with ``steps`` steps of
    2.5ε/steps from a uniform random start, repeated from ``restarts`` independent starts."""

    kind: str
    steps: int = 1
    restarts: int = 1


def _check_attack(attack: Attack) -> Attack:
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be a robust_eval.Attack, got {type(attack).__name__}")
    v.choice("attack.kind", attack.kind, robust_meta.ATTACKS)
    steps, restarts = v.integer("attack.steps", attack.steps), v.integer("attack.restarts", attack.restarts)
    if attack.kind == "fgsm" and (steps, restarts) != (1, 1):
        raise ValueError("an FGSM attack has one step and no random start: attack.steps and attack.restarts must be 1")
    return attack


def _correct(model: nn.Module, adapted: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = vmap(lambda p, xb: forward(model, p, xb))(adapted, x)
    return logits.argmax(-1) == y


def correct_under_attack(
    model: nn.Module,
    adapted: Params,
    tasks: Tasks,
    *,
    epsilon: float,
    attack: Attack,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Which query examples each task's adapted model still classifies correctly under ``attack``.

    Every task's query set is attacked against that task's own adapted parameters ``adapted`` (from
    :func:`metaadv_edu.robust_meta.adapt_tasks`). With ``attack.restarts > 1`` an example counts as correct
    only if it is correct after every restart. Returns a boolean tensor of shape (n_tasks, k_query).
    """
    attack = _check_attack(attack)
    epsilon = v.nonnegative("epsilon", epsilon)
    robust_meta.check_adapted(adapted, tasks.x_query)
    if epsilon == 0:  # the ball of radius 0 holds only the clean input: nothing to attack
        return _correct(model, adapted, tasks.x_query, tasks.y_query)
    correct = torch.ones_like(tasks.y_query, dtype=torch.bool)
    for _ in range(attack.restarts):
        x_adv = robust_meta.attack_tasks(
            model,
            adapted,
            tasks.x_query,
            tasks.y_query,
            epsilon=epsilon,
            attack=attack.kind,
            attack_steps=attack.steps,
            generator=generator,
        )
        correct &= _correct(model, adapted, x_adv, tasks.y_query)
    return correct


def worst_case(correct: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""The per-example worst case of several evaluations of the same examples: correct only where every one
    is correct (a logical AND). Its mean is an upper bound on robust accuracy no larger than any of theirs."""
    if not correct:
        raise ValueError("correct must hold at least one tensor of per-example results")
    shapes = {tuple(c.shape) for c in correct}
    if len(shapes) != 1:
        raise ValueError(f"correct must score the same examples: got shapes {sorted(shapes)}")
    out = correct[0].bool()
    for c in correct[1:]:
        out = out & c.bool()
    return out


def evaluate_learners(
    learners: Mapping[str, robust_meta.Learner],
    tasks: Tasks,
    epsilons: Sequence[float],
    attacks: Mapping[str, Attack],
    *,
    seed: int = 0,
) -> dict[tuple[str, str], torch.Tensor]:
    """Per-example correctness of every learner under every attack at every ε, on the same tasks.

    Each learner adapts once to every task's clean support set; every attack then starts from the same
    seeded random starts for every learner. Returns ``{(learner, attack name): correct}`` with ``correct``
    boolean of shape (len(epsilons), n_tasks, k_query), plus ``{(learner, "clean"): ...}`` (the unperturbed
    query covers, the same for every ε) and ``{(learner, WORST_CASE): ...}``, the per-example worst case
    over the clean covers and all the attacks. ``correct.float().mean(-1)`` gives per-task accuracies.
    When no two learners share a submodule they run side by side (:func:`metaadv_edu.device.side_by_side`;
    one by one otherwise, on one core, or when a model is off the CPU); the results are those of one by one
    at the course's sizes.
    """
    if not learners:
        raise ValueError("learners must hold at least one learner")
    if not attacks or {"clean", WORST_CASE} & set(attacks):
        raise ValueError(f"attacks must hold at least one attack and may not be named 'clean' or {WORST_CASE!r}")
    epsilons = [v.nonnegative("epsilons[i]", e) for e in epsilons]
    attacks = {name: _check_attack(a) for name, a in attacks.items()}
    if tasks.y_query.is_floating_point():
        raise TypeError("robust accuracy needs integer class labels in tasks.y_query")

    def one_learner(item) -> dict:
        name, (model, inner_lr, steps) = item
        adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)  # shared by the attacks
        clean = _correct(model, adapted, tasks.x_query, tasks.y_query)
        out = {(name, "clean"): clean.expand(len(epsilons), *clean.shape)}
        for attack_name, attack in attacks.items():
            g = torch.Generator().manual_seed(seed)
            out[name, attack_name] = torch.stack(
                [correct_under_attack(model, adapted, tasks, epsilon=e, attack=attack, generator=g) for e in epsilons]
            )
        out[name, WORST_CASE] = worst_case([out[name, a] for a in ("clean", *attacks)])
        return out

    # the learners are independent: side by side on the CPU's cores (the same results as one by one)
    parts = side_by_side(one_learner, learners.items(), modules=[model for model, _, _ in learners.values()])
    return {key: value for part in parts for key, value in part.items()}


def transfer_correct(
    learners: Mapping[str, robust_meta.Learner],
    tasks: Tasks,
    *,
    epsilon: float,
    attack: Attack,
    seed: int = 0,
) -> dict[tuple[str, str], torch.Tensor]:
    r"""Transfer attacks: query covers attacked against one learner's adapted weights, scored by another's.

    Every learner adapts to every task's clean support set; ``attack`` (one random start per restart, all
    from the same seed) perturbs the query covers against the *source* learner's adapted weights, and the
    *target* learner's adapted weights classify the result. Source = target is the white-box attack. A target
    whose white-box accuracy is higher than its transfer accuracy points to a failing gradient attack
    (notebook 08). Returns ``{(source, target): correct}``, boolean of shape (n_tasks, k_query); with
    ``attack.restarts > 1`` an example counts as correct only if it survives every restart.
    """
    if not learners:
        raise ValueError("learners must hold at least one learner")
    attack = _check_attack(attack)
    epsilon = v.nonnegative("epsilon", epsilon)
    names, modules = list(learners), [model for model, _, _ in learners.values()]

    def adapt(learner):
        model, inner_lr, steps = learner
        return robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)

    adapted = dict(zip(names, side_by_side(adapt, learners.values(), modules=modules)))

    def attacked_by(source: str) -> list[torch.Tensor]:
        """The query covers attacked against ``source``'s adapted weights, one tensor per restart."""
        g = torch.Generator().manual_seed(seed)
        return [
            robust_meta.attack_tasks(
                learners[source][0],
                adapted[source],
                tasks.x_query,
                tasks.y_query,
                epsilon=epsilon,
                attack=attack.kind,
                attack_steps=attack.steps,
                generator=g,
            )
            for _ in range(attack.restarts if epsilon > 0 else 1)
        ]

    # the attacks side by side, each on its own source's module; scoring runs every target, so one by one
    attacked = dict(zip(names, side_by_side(attacked_by, names, modules=modules)))
    out = {}
    for source in names:
        for target, (target_model, _, _) in learners.items():
            correct = torch.ones_like(tasks.y_query, dtype=torch.bool)
            for x_adv in attacked[source]:
                correct &= _correct(target_model, adapted[target], x_adv, tasks.y_query)
            out[source, target] = correct
    return out
