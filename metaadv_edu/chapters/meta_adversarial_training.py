"""Notebook 08 · Meta-adversarial training (library: :mod:`metaadv_edu.robust_meta`): models, explorer, exercise.

The exercise graders live in :mod:`metaadv_edu.chapters.graders.meta_adversarial_training` and are re-exported
here, so that ``chapter.check_*`` and :data:`POINTS` sit side by side as in every chapter."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from metaadv_edu import _validate as v
from metaadv_edu import (
    cache,
    covers,
    defenses,
    gan,
    maml,
    models,
    panels,
    robust_meta,
    stats,
    task_generator,
    transfer,
)
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.graders.meta_adversarial_training import (
    check_adversarial_query_loss,
    check_linf_robust_loss,
    check_pgd_query_loss,
)
from metaadv_edu.device import side_by_side
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.robust_eval import Attack
from metaadv_edu.widgets import (
    Explorer,
    epsilon_255_slider,
    inner_lr_slider,
    int_slider,
    selection_slider,
)

__all__ = [
    "BUDGET",
    "COVER_FEW_SHOT",
    "POINTS",
    "TrainedLearner",
    "accuracy_rows",
    "check_adversarial_query_loss",
    "check_linf_robust_loss",
    "check_pgd_query_loss",
    "cover_learners",
    "cover_maml",
    "cover_pretrained",
    "cover_task_generator",
    "eval_attacks",
    "paired_rows",
    "paired_verdict",
    "robust_few_shot_explorer",
    "training_cost",
]


#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"adversarial-query loss": 1, "PGD query loss": 1, "L∞ robust loss": 2}

COVER_FEW_SHOT = {
    "n_way": 5,
    "k_shot": 5,
    "k_query": 5,
    "size": 16,
    "width": 8,
    "meta_batch": 4,
    "inner_lr": 0.2,
    "steps": 2,
    "outer_lr": 3e-3,
}
"""5-way 5-shot tasks of 16×16 covers and the meta-training settings shared by notebook 08's learners."""

BUDGET = {
    "image_gradients": 80_000,
    "adapt_steps": 2,
    "pretrain_genres": 64,
    "per_genre": 60,
    "pgd_steps": 3,
    "aq_attack_steps": 2,
    "inner_lrs": (0.003, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0),
}
"""Notebook 08, part A: every learner gets the same training compute, counted in image-gradients (one
forward and backward pass of one cover), and adapts with the same number of steps at test time, with its
inner learning rate chosen from ``inner_lrs`` on meta-validation tasks."""


def training_cost(kind: str, epsilon: float = 0.0) -> int:
    """Image-gradients per meta-iteration (``kind="meta"``) or per epoch (``"pretrained"``).

    Meta-learning, per task: ``steps`` support gradients, their second-order backward (counted as
    many again), the query gradient, and ``aq_attack_steps`` query gradients for the attack when
    ``epsilon > 0``. Pretraining, per cover: one gradient, plus ``pgd_steps`` for PGD when ``epsilon > 0``.
    """
    v.choice("kind", kind, ("meta", "pretrained"))
    c, b = COVER_FEW_SHOT, BUDGET
    if kind == "meta":
        support, query = c["n_way"] * c["k_shot"], c["n_way"] * c["k_query"]
        attack = b["aq_attack_steps"] * query if epsilon > 0 else 0
        return c["meta_batch"] * (2 * c["steps"] * support + query + attack)
    return b["pretrain_genres"] * b["per_genre"] * (1 + (b["pgd_steps"] if epsilon > 0 else 0))


def _cover_sampler(device):
    c = COVER_FEW_SHOT
    return lambda g: covers.cover_tasks(
        c["meta_batch"],
        n_way=c["n_way"],
        k_shot=c["k_shot"],
        k_query=c["k_query"],
        size=c["size"],
        generator=g,
        device=device,
    )


def cover_maml(epsilon: float = 0.0, device=None):
    """A few-shot cover classifier meta-trained on the meta-train genres (notebook 08).

    ``epsilon = 0``: MAML on clean tasks. ``epsilon > 0``: adversarial querying, with the query sets
    attacked by PGD (``BUDGET["aq_attack_steps"]`` steps) against the adapted weights. Both run for
    ``BUDGET["image_gradients"]`` (:func:`training_cost`). Returns (model, record).
    """

    device = as_device(device)
    c = COVER_FEW_SHOT
    epsilon = v.nonnegative("epsilon", epsilon)
    attack_steps = BUDGET["aq_attack_steps"]
    config = {
        **c,
        "epsilon": round(epsilon, 6),
        "attack_steps": attack_steps,
        "seed": 0,
        "iterations": BUDGET["image_gradients"] // training_cost("meta", epsilon),
    }
    build = cache.seeded(lambda: models.TinyCNN(3, c["n_way"], width=c["width"], image_size=c["size"]), config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        common = {
            "iterations": config["iterations"],
            "inner_lr": c["inner_lr"],
            "steps": c["steps"],
            "outer_lr": c["outer_lr"],
            "generator": g,
        }
        if epsilon == 0:
            h = maml.meta_train(model, _cover_sampler(device), desc="MAML on covers", **common)
        else:
            h = robust_meta.meta_train_adversarial(
                model, _cover_sampler(device), epsilon=epsilon, attack_steps=attack_steps, **common
            )
        return {"meta_loss": h["meta_loss"]}

    name = "covers-maml" if epsilon == 0 else "covers-aq"
    return load_or_train(name, config, build, cache.timed(train), device=device)


def cover_pretrained(epsilon: float = 0.0, device=None):
    """A 64-way cover classifier on meta-train genres (standard, or PGD-trained when ``epsilon > 0``):
    the body that the fine-tuning baseline of notebook 08 starts from, trained for as many epochs as
    ``BUDGET["image_gradients"]`` allows (:func:`training_cost`). Returns (model, record)."""

    device = as_device(device)
    c, b = COVER_FEW_SHOT, BUDGET
    epsilon = v.nonnegative("epsilon", epsilon)
    n_genres = b["pretrain_genres"]
    config = {
        "epsilon": round(epsilon, 6),
        "n_genres": n_genres,
        "per_genre": b["per_genre"],
        "size": c["size"],
        "width": c["width"],
        "epochs": b["image_gradients"] // training_cost("pretrained", epsilon),
        "lr": 3e-3,
        "pgd_steps": b["pgd_steps"],
        "seed": 0,
    }
    build = cache.seeded(lambda: models.TinyCNN(3, n_genres, width=c["width"], image_size=c["size"]), config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        genres = covers.sample_genres(n_genres, "meta-train", generator=g)
        x, y = covers.sample_covers(genres, config["per_genre"], generator=g, size=c["size"], device=device)
        h = defenses.adversarial_training(
            model,
            x,
            y,
            method="pgd" if epsilon > 0 else "standard",
            epsilon=epsilon,
            pgd_steps=config["pgd_steps"],
            epochs=config["epochs"],
            lr=config["lr"],
            generator=torch.Generator().manual_seed(config["seed"]),
        )
        return {"loss": h["loss"]}

    return load_or_train(
        "covers-pretrained" if epsilon == 0 else "covers-pretrained-pgd",
        config,
        build,
        cache.timed(train),
        device=device,
    )


class TrainedLearner(NamedTuple):
    """One of part A's four learners as trained: the network every task starts from (a pretrained body gets
    a new zero 5-way head), its training record, the ε it was trained at and its ``kind`` ("meta" for
    meta-iterations, "pretrained" for epochs of pretraining)."""

    model: torch.nn.Module
    record: dict
    epsilon: float
    kind: str

    @property
    def units(self) -> int:
        """Meta-iterations (``kind="meta"``) or epochs (``"pretrained"``) it was trained for."""
        return len(self.record["meta_loss" if self.kind == "meta" else "loss"])

    @property
    def image_gradients(self) -> int:
        """Its training compute in image-gradients (:func:`training_cost`)."""
        return self.units * training_cost(self.kind, self.epsilon)


def cover_learners(device=None) -> dict[str, TrainedLearner]:
    """Part A's four learners, loaded or trained with the same budget: MAML, adversarial querying (ε = 8/255),
    and a pretrained and a PGD-trained (8/255) 64-way classifier with a new zero 5-way head."""

    device = as_device(device)
    out = {}
    for name, kind, eps in (
        ("MAML", "meta", 0.0),
        ("adversarial querying", "meta", 8 / 255),
        ("pretrained + fine-tune", "pretrained", 0.0),
        ("robust pretrained + fine-tune", "pretrained", 8 / 255),
    ):
        if kind == "meta":
            model, record = cover_maml(eps, device)
        else:
            body, record = cover_pretrained(eps, device)
            model = transfer.with_new_head(body, COVER_FEW_SHOT["n_way"])
        out[name] = TrainedLearner(model, record, eps, kind)
    return out


def eval_attacks():
    """The attacks of part A's evaluation, weakest to strongest: FGSM, PGD-10 and PGD-20 with 2 random starts
    (an example counts as robust only if it survives both)."""

    return {"FGSM": Attack("fgsm"), "PGD-10": Attack("pgd", 10), "PGD-20 ×2": Attack("pgd", 20, 2)}


def accuracy_rows(results: dict, learners, epsilons, columns) -> list[list[str]]:
    """One row per learner and ε > 0 of :func:`metaadv_edu.robust_eval.evaluate_learners`' ``results``: the
    mean per-task accuracy ± the half-width of its 95 % t interval for every name in ``columns``."""

    rows = []
    for name in learners:
        for e, eps in enumerate(epsilons):
            if eps > 0:
                cells = [stats.mean_ci(results[name, c][e].float().mean(-1)).format(1, percent=True) for c in columns]
                rows.append([name, f"{eps * 255:.0f}/255", *cells])
    return rows


def paired_rows(results: dict, pairs, rows) -> list[list[str]]:
    """One table row per (label, attack name, ε index) in ``rows``, one cell per pair (a, b) of learners: the
    paired difference a − b of their per-task accuracies (:func:`metaadv_edu.stats.paired_difference`),
    marked "*" when its 95 % interval excludes 0."""

    out = []
    for label, attack, e in rows:
        cells = []
        for a, b in pairs:
            d = stats.paired_difference(results[a, attack][e].float().mean(-1), results[b, attack][e].float().mean(-1))
            cells.append(d.format(1, percent=True) + (" *" if d.resolved else ""))
        out.append([label, *cells])
    return out


def paired_verdict(results: dict, a: str, b: str, attack: str, e: int) -> str:
    """The verdict of the paired difference a − b of per-task accuracies under ``attack`` at ε index ``e``:
    which learner is better, or "not resolved" when the 95 % interval contains 0. Under an attack the sentence
    says that it compares upper bounds, from the attacks run."""

    d = stats.paired_difference(results[a, attack][e].float().mean(-1), results[b, attack][e].float().mean(-1))
    verdict = d.verdict(a, b, lower_is_better=False)
    return verdict if attack == "clean" else f"{verdict}, under the attacks run (upper bounds)"


def cover_task_generator(target_epsilon: float = 0.0, epsilon: float = 8 / 255, device=None, *, iterations: int = 150):
    """An adversarial generator trained against :func:`cover_maml` (``target_epsilon``) *after* it
    adapts to each task: one forward pass attacks any new task's classifier. Returns (G, record)."""

    device = as_device(device)
    c = COVER_FEW_SHOT
    config = {
        "target_epsilon": round(v.nonnegative("target_epsilon", target_epsilon), 6),
        "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
        "hidden": 128,
        "lr": 1e-3,
        "iterations": v.integer("iterations", iterations),
        "seed": 0,
    }
    target, _ = cover_maml(target_epsilon, device)
    build = cache.seeded(
        lambda: gan.PerturbationGenerator((3, c["size"], c["size"]), epsilon, hidden=config["hidden"]), config["seed"]
    )

    def train(perturber):
        h = task_generator.train_task_generator(
            perturber,
            target,
            _cover_sampler(device),
            inner_lr=c["inner_lr"],
            steps=c["steps"],
            iterations=config["iterations"],
            lr=config["lr"],
            generator=torch.Generator().manual_seed(config["seed"]),
        )
        return {"fooled": h["fooled"]}

    return load_or_train("covers-task-generator", config, build, cache.timed(train), device=device)


def robust_few_shot_explorer(
    learners: dict[str, torch.nn.Module],
    tasks,
    *,
    steps: int = 2,
    inner_lr: float = 0.2,
    epsilon: float = 8 / 255,
    attack_steps: int = 10,
    task: int = 0,
) -> Explorer:
    """Notebook 08: ε and α together. Each cached model adapts to one new-genre task (``steps`` steps of α on its
    clean support set); PGD attacks the query covers against the adapted weights. Shows one query cover per class
    (clean, δ, attacked; the chosen learner's predictions) and each learner's query accuracy. Nothing is trained."""

    names = list(learners)
    n_way = int(tasks.y_query.max()) + 1
    k_shot = tasks.x_support.shape[1] // n_way
    first = [[int(torch.nonzero(tasks.y_query[t] == c)[0]) for c in range(n_way)] for t in range(len(tasks.y_query))]
    artists: dict = {}

    def setup(fig):
        grid = fig.add_gridspec(3, n_way + 2, width_ratios=[1] * n_way + [0.15, 2.4])
        # Everything draw changes is animated: a move redraws only these over a picture of the rest, rendered
        # once (the tick labels and the legend are most of a full redraw's cost).
        columns = panels.AttackColumns(fig, grid, n_way, (3, *tasks.x_query.shape[-2:]))
        for _, image in columns.rows:
            image.set_animated(True)
        for text in (t for row in columns.labels for t in row):
            text.set_animated(True)
        bar_ax = fig.add_subplot(grid[:, -1])
        xs = np.arange(len(names))
        bar = {"width": 0.4, "animated": True}
        clean = bar_ax.bar(xs - 0.2, np.zeros(len(names)), **bar, **series(0).bar(), label="clean")
        adv = bar_ax.bar(xs + 0.2, np.zeros(len(names)), **bar, **series(1).bar(), label="PGD (upper bound)")
        bar_ax.set_xticks(xs.tolist(), [n.replace(" ", "\n") for n in names])
        bar_ax.set(ylim=(0, 1.45), yticks=[0, 0.5, 1], ylabel="query accuracy")  # legend above 1: hides no bar
        # the chance line is drawn over the bars, as in a full render: animated too
        bar_ax.axhline(1 / n_way, color=PALETTE["grey"], linestyle=":", linewidth=1, label="chance", animated=True)
        bar_ax.legend(loc="upper center", ncol=2)
        bar_ax.title.set_animated(True)
        artists.update(columns=columns, clean=clean, adv=adv, bar_ax=bar_ax)

    modules = [learners[name] for name in names]  # adapted and attacked side by side if they share no submodule
    memo: dict = {"results_for": None}  # the last results and adaptation: a learner move recomputes nothing

    def results_for(epsilon, inner_lr, task):
        one = tasks.task(task)
        if memo.get("adapted_for") != (inner_lr, task):

            def adapt(name):
                adapted = robust_meta.adapt_tasks(learners[name], one, inner_lr=inner_lr, steps=steps)
                return {k: p[0] for k, p in adapted.items()}

            memo.update(
                adapted_for=(inner_lr, task),
                results_for=None,
                adapted=dict(zip(names, side_by_side(adapt, names, modules=modules))),
            )
        if memo["results_for"] != (epsilon, inner_lr, task):

            def attack(name):
                return robust_meta.attack_one_task(
                    learners[name],
                    memo["adapted"][name],
                    one.x_query[0],
                    one.y_query[0],
                    epsilon=epsilon,
                    attack_steps=attack_steps,
                )

            memo.update(
                results_for=(epsilon, inner_lr, task),
                results=dict(zip(names, side_by_side(attack, names, modules=modules))),
            )
        return memo["results"]

    def draw(fig, *, epsilon, inner_lr, learner, task):
        one, results = tasks.task(task), results_for(epsilon, inner_lr, task)
        x_adv, pred_clean, pred_adv = results[learner]
        y, shown = one.y_query[0], first[task]
        artists["columns"].show(
            one.x_query[0, shown], x_adv[shown], y[shown], pred_clean[shown], pred_adv[shown], epsilon
        )
        summary = []
        for j, name in enumerate(names):
            _, pc, pa = results[name]
            acc_c, acc_a = float((pc == y).float().mean()), float((pa == y).float().mean())
            artists["clean"][j].set_height(acc_c)
            artists["adv"][j].set_height(acc_a)
            summary.append(f"{name}: clean <b>{acc_c:.0%}</b>, PGD <b>{acc_a:.0%}</b>")
        artists["bar_ax"].set_title(f"task {task}, ε = {epsilon * 255:.0f}/255")
        return (
            f"α = {inner_lr:.2g}, {steps} steps on {k_shot} clean covers per class; PGD-{attack_steps} on "
            f"{len(y)} query covers · " + " · ".join(summary)
        )

    sliders = {
        "epsilon": epsilon_255_slider(epsilon, max_255=32),
        "inner_lr": inner_lr_slider(inner_lr, -3, 0),
        "learner": selection_slider("covers shown for", names, names[-1]),
        "task": int_slider(
            "new-genre task", v.integer("task", task, low=0, high=len(tasks.y_query) - 1), 0, len(tasks.y_query) - 1
        ),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="Robust few-shot learning on new genres (cached models)",
        figsize=(10, 4),
        dpi=72,
        blit=True,
    )
