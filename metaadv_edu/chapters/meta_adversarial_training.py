"""Notebook 08 · Meta-adversarial training (library: :mod:`metaadv_edu.robust_meta`): models, explorer, exercise."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from metaadv_edu import _validate as v
from metaadv_edu import (
    cache,
    covers,
    defenses,
    gan,
    grading,
    maml,
    models,
    panels,
    robust_checks,
    robust_meta,
    stats,
    task_generator,
    transfer,
)
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.functional import forward, params_of
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.robust_eval import Attack
from metaadv_edu.robust_meta import functional_attack
from metaadv_edu.widgets import Explorer, epsilon_255_slider, inner_lr_slider, int_slider, selection_slider

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
POINTS = {"adversarial-query loss": 1, "PGD query loss": 2, "L∞ robust loss": 2}

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
        artists["columns"] = panels.AttackColumns(fig, grid, n_way, (3, *tasks.x_query.shape[-2:]))
        bar_ax = fig.add_subplot(grid[:, -1])
        xs = np.arange(len(names))
        clean = bar_ax.bar(xs - 0.2, np.zeros(len(names)), width=0.4, **series(0).bar(), label="clean")
        adv = bar_ax.bar(xs + 0.2, np.zeros(len(names)), width=0.4, **series(1).bar(), label="PGD (upper bound)")
        bar_ax.set_xticks(xs.tolist(), [n.replace(" ", "\n") for n in names])
        bar_ax.set(ylim=(0, 1.45), yticks=[0, 0.5, 1], ylabel="query accuracy")  # legend above 1: hides no bar
        bar_ax.axhline(1 / n_way, color=PALETTE["grey"], linestyle=":", linewidth=1, label="chance")
        bar_ax.legend(loc="upper center", ncol=2)
        artists.update(clean=clean, adv=adv, bar_ax=bar_ax)

    memo: dict = {"results_for": None}  # the last results and adaptation: a learner move recomputes nothing

    def results_for(epsilon, inner_lr, task):
        one = tasks.task(task)
        if memo.get("adapted_for") != (inner_lr, task):
            memo.update(
                adapted_for=(inner_lr, task),
                results_for=None,
                adapted={
                    name: {k: p[0] for k, p in robust_meta.adapt_tasks(m, one, inner_lr=inner_lr, steps=steps).items()}
                    for name, m in learners.items()
                },
            )
        if memo["results_for"] != (epsilon, inner_lr, task):
            memo.update(
                results_for=(epsilon, inner_lr, task),
                results={
                    name: robust_meta.attack_one_task(
                        m,
                        memo["adapted"][name],
                        one.x_query[0],
                        one.y_query[0],
                        epsilon=epsilon,
                        attack_steps=attack_steps,
                    )
                    for name, m in learners.items()
                },
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
    )


def _query_loss(model: torch.nn.Module, y: torch.Tensor) -> Callable:
    """``ce(params, z)``: the cross-entropy of ``model`` run with ``params`` on inputs ``z`` against labels ``y``."""

    def ce(params, z):
        return F.cross_entropy(forward(model, params, z), y)

    return ce


def _pgd_variants_against(ce: Callable, x: torch.Tensor, epsilon: float) -> Callable:
    """``attack(params, step_size, steps)``: :func:`metaadv_edu.grading.pgd_variants` from ``x`` on the loss
    ``ce(params, ·)`` of :func:`_query_loss`, the right PGD under key ``"ok"`` and its typical wrong versions."""

    def attack(params, step_size, steps):
        def loss_of_x(z):
            return ce(params, z)

        return grading.pgd_variants(loss_of_x, x, epsilon, step_size, steps)

    return attack


def check_adversarial_query_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, adapted, x, y, epsilon) -> loss``: adversarial querying's outer loss for
    one task. ``adapted`` holds θ′ (a dict, still attached to θ); attack the query inputs ``x`` with one
    L2 step x + ε·g/‖g‖₂ per cover against θ′ (clamped to [0, 1], held fixed), then
    return the cross-entropy of θ′ on them. The step moves smoothly with θ′, so an attack left attached
    to the graph changes the meta-gradient, and the grader sees it."""

    def attacked(model, params, x, y, eps, clamp=True, sign=1.0, norm="l2"):
        return functional_attack(
            model, params, x, y, torch.zeros_like(x), epsilon=eps, steps=1, step_size=sign * eps, clamp=clamp, norm=norm
        )

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.8), (1, 0.3), (2, 0.0), (3, 0.5)):
                model = grading.toy_classifier(device, seed)
                xs, ys = grading.toy_batch(device, seed + 20, n=8)
                x, y = grading.toy_batch(device, seed + 40, n=6)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=0.5)
                ce = _query_loss(model, y)
                ref = ce(adapted, attacked(model, adapted, x, y, eps))
                out = grading.call(my_loss, model, adapted, x, y, eps)
                value = grading.scalar_loss(out).to(ref.dtype)
                if not grading.close(value, ref.detach(), 1e-4):
                    theta0 = {k: p.detach() for k, p in theta.items()}
                    mistakes = [
                        (ce(adapted, x), "that is the clean query loss: perturb the query inputs first"),
                        (
                            ce(adapted, attacked(model, theta0, x, y, eps)),
                            "the attack targets θ, but the query is answered by θ′: compute the input gradient "
                            "with forward(model, adapted, ·)",
                        ),
                        (
                            ce(theta0, attacked(model, adapted, x, y, eps)),
                            "the attacked query must be scored by the adapted weights θ′, not by the model's own θ",
                        ),
                        (
                            ce(adapted, attacked(model, adapted, x, y, eps, clamp=False)),
                            "forgot to clamp: the attacked covers must stay in [0, 1]",
                        ),
                        (
                            ce(adapted, attacked(model, adapted, x, y, eps, sign=-1.0)),
                            "wrong sign: the attack *raises* the loss, x + ε·g/‖g‖₂",
                        ),
                        (
                            ce(adapted, attacked(model, adapted, x, y, eps, norm="linf")),
                            "that is FGSM's L∞ step ε·sign(g); this exercise uses the L2 step ε·g/‖g‖₂",
                        ),
                    ]
                    for wrong, hint in mistakes:
                        if eps and grading.close(value, wrong.detach(), 1e-4):
                            raise grading.Stop(hint)
                    raise grading.Stop(
                        "not the cross-entropy of θ′ at the L2-attacked query inputs "
                        "(normalise g per cover, over its pixels)"
                    )
                if not out.requires_grad:
                    raise grading.Stop(
                        "the value is right but has no gradient: keep θ′ attached (do not detach adapted)"
                    )
                grading.same_gradient(
                    out,
                    ref,
                    list(theta.values()),
                    "the value is right but the meta-gradient "
                    "is not: the loss must depend on θ only through θ′, with the perturbation "
                    "held fixed (detach it)",
                )
        return "L2 step against θ′, clamped, scored by θ′; the meta-gradient flows through the adaptation only"

    return grading.run("adversarial-query loss", body)


def check_pgd_query_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, adapted, x, y, epsilon, step_size, steps) -> loss``: the query loss of the
    adapted weights θ′ at the query inputs attacked by L∞ PGD against θ′ (start at x, projected, clamped,
    held fixed). The grader checks the value and that the meta-gradient reaches θ through θ′ only."""

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.3), (1, 0.1), (3, 0.2)):
                model = grading.toy_classifier(device, seed)
                (xs, ys), (x, y) = grading.toy_batch(device, seed + 20, n=8), grading.toy_batch(device, seed + 40)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=0.5)
                frozen = {k: p.detach() for k, p in adapted.items()}
                ce = _query_loss(model, y)
                attack = _pgd_variants_against(ce, x, eps)
                variants = attack(frozen, eps / 4, 6)
                ref = ce(adapted, variants.pop("ok"))
                out = grading.call(my_loss, model, adapted, x, y, eps, eps / 4, 6)
                value = grading.scalar_loss(out)
                again = grading.scalar_loss(grading.call(my_loss, model, adapted, x, y, eps, eps / 4, 6))
                if not grading.close(value, again, 1e-9):
                    raise grading.Stop(
                        "two calls with the same inputs gave different losses: a random start? This exercise "
                        "starts PGD at x itself, so that its result is reproducible"
                    )
                if not grading.close(value, ref.detach(), 1e-4):
                    theta0 = {k: p.detach() for k, p in theta.items()}
                    grading.first_mistake(
                        value,
                        [
                            (
                                ce(adapted, attack(theta0, eps / 4, 6)["ok"]),
                                "PGD must attack the adapted weights θ′ (forward(model, adapted, ·)), not θ",
                            ),
                            (
                                ce(adapted, attack(frozen, eps, 1)["ok"]),
                                "that is FGSM: take `steps` PGD steps of `step_size`, each projected and clamped",
                            ),
                            (ce(adapted, x), "that is the clean query loss: attack the query inputs first"),
                            *[(ce(adapted, wrong), grading.PGD_HINTS[k]) for k, wrong in variants.items()],
                        ],
                        1e-4,
                    )
                    raise grading.Stop("not the cross-entropy of θ′ at the PGD-attacked query inputs")
                if not out.requires_grad:
                    raise grading.Stop("the value is right but has no gradient: score with adapted, not detached")
                grading.same_gradient(
                    out,
                    ref,
                    list(theta.values()),
                    "the value is right but the meta-gradient "
                    "is not: the loss must reach θ only through θ′, scored by `adapted`",
                )
        return "PGD against θ′ (projected, clamped), scored by θ′; the meta-gradient flows through the adaptation"

    return grading.run("PGD query loss", body)


def _linear_two_class_task(device, seed: int, n_in: int = 6):
    """A two-class linear model in float64 with random weights, a support and a query set of ``n_in`` features."""
    g = torch.Generator().manual_seed(seed)
    model = models.LogisticRegression(n_in, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=torch.float64))
    xs, ys = torch.rand(8, n_in, generator=g, dtype=torch.float64), torch.randint(2, (8,), generator=g)
    x, y = torch.rand(6, n_in, generator=g, dtype=torch.float64), torch.randint(2, (6,), generator=g)
    return model.to(device), xs.to(device), ys.to(device), x.to(device), y.to(device)


def _margin_shift_loss(params, x: torch.Tensor, y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """log(1 + e^(−m + shift)) averaged over the examples, with m = s(wᵀx + b) the two-class margin."""
    w, b = params["1.weight"][1] - params["1.weight"][0], params["1.bias"][1] - params["1.bias"][0]
    margin = (2 * y.to(w.dtype) - 1) * (x.flatten(1) @ w + b)
    return F.softplus(-margin + shift).mean()


def check_linf_robust_loss(my_loss: Callable) -> bool:
    r"""Grade ``my_loss(theta, adapted, x, y, epsilon) -> loss``: the exact L∞ robust query loss of a two-class
    linear model after one adaptation step, eq. (5) with q = 1,
    :math:`\log(1 + e^{-s(w'^\top x + b') + \epsilon\|w'\|_1})` with :math:`w' = w'_1 - w'_0` of θ′. ``theta``
    holds θ (before adaptation), ``adapted`` θ′ (still attached to θ). The grader checks the value against
    :func:`metaadv_edu.robust_checks.linear_robust_loss` and the meta-gradient with respect to θ."""

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.3), (1, 0.1), (2, 0.5)):
                model, xs, ys, x, y = _linear_two_class_task(device, seed)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=2.0)
                ref = robust_checks.linear_robust_loss(adapted, x, y, eps, norm="linf")
                out = grading.call(my_loss, theta, adapted, x, y, eps)
                value = grading.scalar_loss(out).to(ref.dtype)
                if not grading.close(value, ref.detach(), 1e-8):
                    w0 = theta["1.weight"][1] - theta["1.weight"][0]
                    w1 = adapted["1.weight"][1] - adapted["1.weight"][0]
                    grading.first_mistake(
                        value,
                        [
                            (
                                robust_checks.linear_robust_loss(adapted, x, y, eps, norm="l2"),
                                "that is the L2 ball's ε‖w‖₂: over the L∞ ball the margin falls by ε‖w‖₁ "
                                "(the dual norm of L∞ is L1)",
                            ),
                            (
                                _margin_shift_loss(adapted, x, y, eps * w1.abs().max()),
                                "ε‖w‖∞ is the L1 ball's answer: over the L∞ ball every coordinate moves by ε, so "
                                "the margin falls by ε‖w‖₁",
                            ),
                            (
                                robust_checks.linear_robust_loss(adapted, x, y, -eps, norm="linf"),
                                "wrong sign: the worst perturbation *lowers* the margin, −m + ε‖w‖₁",
                            ),
                            (
                                _margin_shift_loss(adapted, x, y, eps * (w1 * w0.sign()).sum()),
                                "the perturbation −ε·s·sign(w) must use θ′'s w, not θ's: the attacker sees the "
                                "adapted model",
                            ),
                            (
                                robust_checks.linear_robust_loss(theta, x, y, eps, norm="linf"),
                                "that is the robust loss of θ: the library deploys θ′, use `adapted`",
                            ),
                            (
                                robust_checks.linear_robust_loss(adapted, x, y, 0.0, norm="linf"),
                                "that is the clean query loss: the margin must fall by ε‖w‖₁",
                            ),
                        ],
                        1e-8,
                    )
                    raise grading.Stop("not log(1 + exp(−s(w′ᵀx + b′) + ε‖w′‖₁)), averaged over the query set")
                if not out.requires_grad:
                    raise grading.Stop("the value is right but has no gradient: compute it from `adapted`, attached")
                grading.same_gradient(
                    out,
                    ref,
                    list(theta.values()),
                    "the value is right but the meta-gradient is not: compute the loss from θ′ (`adapted`), "
                    "which still depends on θ",
                    tol=1e-8,
                )
        return "the margin falls by ε‖w′‖₁ at θ′; the meta-gradient reaches θ through the adaptation"

    return grading.run("L∞ robust loss", body)
