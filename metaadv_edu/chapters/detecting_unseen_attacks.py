"""Notebook 09 · Detecting unseen attacks (library: :mod:`metaadv_edu.detection`): the perturbation pools and
detectors it caches, its explorer and its exercise graders."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from metaadv_edu import _validate as v
from metaadv_edu import cache, covers, detection, grading, maml, models, robust_meta, stats, training
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.meta_adversarial_training import COVER_FEW_SHOT, cover_maml, cover_task_generator
from metaadv_edu.data import Tasks
from metaadv_edu.functional import forward
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.widgets import Explorer, dropdown, epsilon_255_slider, inner_lr_slider

__all__ = [
    "ADAPTATION",
    "DETECTION",
    "POINTS",
    "SEEN",
    "at_epsilon",
    "check_bias_step",
    "check_paired_difference",
    "cover_attack_pools",
    "cover_detector",
    "cover_detectors",
    "detection_experiment",
    "detection_explorer",
    "explorer_tasks",
    "generator_at_training_budget",
    "perturbation_directions",
    "pool_accuracy",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"paired difference": 1, "detector's bias step": 2}

DETECTION = {
    "epsilon": 32 / 255,
    "train": ("FGSM 16/255", "FGSM 32/255", "PGD 32/255"),
    "held_out": ("generator 32/255", "noise 32/255"),
    "k_shot": 5,
    "k_query": 10,
    "meta_batch": 8,
    "inner_lr": 0.1,
    "steps": 2,
    "iterations": 150,
    "outer_lr": 3e-3,
}
"""Notebook 09: the perturbations used as tasks, and the meta-learned detector's training settings."""

SEEN = "PGD 32/255"
"""The training perturbation that notebook 09 evaluates beside the held-out ones, as a reference (kept out of
:data:`DETECTION`, whose settings key the trained detectors' cache)."""

ADAPTATION = {
    "meta-learned": (DETECTION["inner_lr"], DETECTION["steps"]),
    "joint, no adaptation": (0.01, 0),
    "joint + fine-tune": (0.01, 20),
    "from scratch": (0.1, 20),
}
"""How each detector of notebook 09 adapts to a task: (inner learning rate α, steps k) on its support set."""

_POOL_SPECS = {
    "FGSM 16/255": ("fgsm", 16 / 255),
    "FGSM 32/255": ("fgsm", 32 / 255),
    "PGD 32/255": ("pgd", 32 / 255),
    "generator 32/255": ("generator", 32 / 255),
    "noise 32/255": ("noise", 32 / 255),
}

_pool_memo: dict = {}


def _pool_tasks(pool: str, seed: int, device) -> Tasks:
    c = COVER_FEW_SHOT
    return covers.cover_tasks(
        32,
        n_way=c["n_way"],
        k_shot=c["k_shot"],
        k_query=c["k_query"],
        pool=pool,
        size=c["size"],
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )


def _held_out_generator(device):
    """:func:`~metaadv_edu.chapters.meta_adversarial_training.cover_task_generator` (trained against MAML at
    8/255) with its budget raised to ``DETECTION["epsilon"]``: ε multiplies its tanh output."""
    perturber, _ = cover_task_generator(0.0, 8 / 255, device)
    perturber = copy.deepcopy(perturber)
    perturber.epsilon = DETECTION["epsilon"]
    return perturber


def generator_at_training_budget(device=None) -> tuple[dict[str, dict[str, torch.Tensor]], list[float]]:
    """The held-out generator as it was trained (against MAML at 8/255, 150 iterations): MAML's per-task query
    accuracy on the tasks of both pools of :func:`cover_attack_pools`, clean and perturbed by the generator at
    8/255 (``{"meta-train"|"meta-test": {"clean"|"generator 8/255": (32,)}}``, paired over tasks), and the
    fraction of query covers it fooled at each training iteration (its training record)."""
    device = as_device(device)
    c = COVER_FEW_SHOT
    victim, _ = cover_maml(0.0, device)
    perturber, record = cover_task_generator(0.0, 8 / 255, device)
    accuracy = {
        pool: detection.perturbed_accuracy(
            victim,
            _pool_tasks(pool, seed, device),
            {"generator 8/255": ("generator", 8 / 255)},
            inner_lr=c["inner_lr"],
            steps=c["steps"],
            perturber=perturber,
            seed=7,
        )
        for seed, pool in ((5, "meta-train"), (6, "meta-test"))
    }
    return accuracy, list(record["fooled"])


def cover_attack_pools(device=None) -> dict[str, dict[str, torch.Tensor]]:
    """Perturbed query covers for notebook 09, ``{"meta-train"|"meta-test": {name: covers}}``.

    Each pool holds the query covers of 32 five-way tasks (800 covers) and every perturbation of
    them, made against :func:`~metaadv_edu.chapters.meta_adversarial_training.cover_maml` adapted to each
    task; ``"clean"`` holds the originals. Deterministic; computed once per device and process, together
    with :func:`pool_accuracy`.
    """
    device = as_device(device)
    if device not in _pool_memo:
        c = COVER_FEW_SHOT
        victim, _ = cover_maml(0.0, device)
        perturber = _held_out_generator(device)
        _pool_memo[device] = {
            pool: detection.perturbation_pools(
                victim,
                _pool_tasks(pool, seed, device),
                _POOL_SPECS,
                inner_lr=c["inner_lr"],
                steps=c["steps"],
                perturber=perturber,
                seed=7,
            )
            for seed, pool in ((5, "meta-train"), (6, "meta-test"))
        }
    return {pool: pools.covers for pool, pools in _pool_memo[device].items()}


def pool_accuracy(device=None) -> dict[str, dict[str, torch.Tensor]]:
    """MAML's per-task query accuracy (after adaptation) on every pool of :func:`cover_attack_pools`:
    ``{"meta-train"|"meta-test": {name: (32,)}}``, paired over the 32 tasks of a pool."""
    cover_attack_pools(device)
    return {pool: pools.accuracy for pool, pools in _pool_memo[as_device(device)].items()}


def cover_detector(kind: str = "meta", device=None):
    """A perturbation detector trained on the ``DETECTION["train"]`` pools of the meta-train genres:
    ``"meta"`` meta-learns an initialisation with MAML over detection tasks, ``"joint"`` trains one
    detector on all of them together (8 epochs). One training run each. Returns (model, record)."""
    device = as_device(device)
    v.choice("kind", kind, ("meta", "joint"))
    c = COVER_FEW_SHOT
    config = {**DETECTION, "kind": kind, "width": c["width"], "size": c["size"], "joint_epochs": 8, "seed": 0}
    build = cache.seeded(lambda: models.TinyCNN(3, 2, width=c["width"], image_size=c["size"]), config["seed"])

    def train(model):
        pools = cover_attack_pools(device)["meta-train"]
        perturbed = [pools[n] for n in DETECTION["train"]]
        g = torch.Generator().manual_seed(config["seed"])
        if kind == "meta":

            def sample(gen):
                return detection.detection_tasks(
                    pools["clean"],
                    perturbed,
                    DETECTION["meta_batch"],
                    k_shot=DETECTION["k_shot"],
                    k_query=DETECTION["k_query"],
                    generator=gen,
                )

            h = maml.meta_train(
                model,
                sample,
                iterations=DETECTION["iterations"],
                inner_lr=DETECTION["inner_lr"],
                steps=DETECTION["steps"],
                outer_lr=DETECTION["outer_lr"],
                generator=g,
                desc="meta-learning a detector",
            )
            return {"meta_loss": h["meta_loss"]}
        clean = pools["clean"]
        x = torch.cat([clean] * len(perturbed) + perturbed)
        y = torch.cat([torch.zeros(len(clean) * len(perturbed)), torch.ones(len(clean) * len(perturbed))]).long()
        h = training.train_classifier(
            model, x, y.to(x.device), epochs=config["joint_epochs"], lr=3e-3, generator=g, desc="joint detector"
        )
        return {"loss": h["loss"]}

    return load_or_train(f"cover-detector-{kind}", config, build, cache.timed(train), device=device)


def cover_detectors(device=None) -> dict[str, detection.Detector]:
    """The four detectors of notebook 09, each with its adaptation of :data:`ADAPTATION`: the meta-learned
    one, the joint one used as it is and fine-tuned, and a fresh network (seed 1) trained on the K examples."""
    device = as_device(device)
    meta, _ = cover_detector("meta", device)
    joint, _ = cover_detector("joint", device)
    c = COVER_FEW_SHOT
    scratch = cache.seeded(lambda: models.TinyCNN(3, 2, width=c["width"], image_size=c["size"]), 1)().to(device)
    nets = {"meta-learned": meta, "joint, no adaptation": joint, "joint + fine-tune": joint, "from scratch": scratch}
    return {name: detection.Detector(nets[name], *ADAPTATION[name]) for name in ADAPTATION}


def detection_experiment(
    detectors: dict[str, detection.Detector],
    pools: dict[str, torch.Tensor],
    shots: list[int],
    *,
    n_tasks: int = 40,
    seed: int = 100,
) -> dict[str, dict[str, torch.Tensor]]:
    """Notebook 09's experiment: :func:`metaadv_edu.detection.detection_accuracy` of every detector on each
    held-out perturbation and on the seen reference :data:`SEEN` of ``pools`` (one genre split of
    :func:`cover_attack_pools`), ``{pool: {detector: (len(shots), n_tasks)}}``.

    Every pool uses the same ``seed``, and all pools perturb the same originals, so task i at a given K draws
    the same original covers in every pool: the scores are paired across detectors *and* across pools.
    """
    names = [*DETECTION["held_out"], SEEN]
    missing = [name for name in ["clean", *names] if name not in pools]
    if missing:
        raise ValueError(f"pools must hold {missing}: pass one genre split of cover_attack_pools")
    return {
        name: detection.detection_accuracy(detectors, pools["clean"], pools[name], shots, n_tasks=n_tasks, seed=seed)
        for name in names
    }


# ----------------------------------------------------------------------------------------- explorer
def perturbation_directions(device=None, *, seed: int = 7) -> dict[str, torch.Tensor]:
    """The held-out perturbations of the meta-test covers as directions u in [−1, 1], so that
    ``clip(x + ε·u, 0, 1)`` re-makes them at any budget ε without a model: ``"generator"`` (the held-out
    generator's tanh output, one noise vector per cover from ``seed``) and ``"noise"`` (random signs)."""
    device = as_device(device)
    clean = cover_attack_pools(device)["meta-test"]["clean"]
    perturber = _held_out_generator(device)
    z = torch.randn(len(clean), perturber.noise_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    with torch.no_grad():
        direction = perturber.perturbation(clean, z) / perturber.epsilon
    signs = torch.randint(0, 2, clean.shape, generator=torch.Generator().manual_seed(seed)).to(clean) * 2 - 1
    return {"generator": direction, "noise": signs}


def explorer_tasks(
    clean: torch.Tensor, direction: torch.Tensor, n_tasks: int, *, k_shot: int, k_query: int, seed: int = 0
) -> Tasks:
    """Detection tasks whose perturbed covers can be re-made at any ε without a model: every cover carries
    its original (channels ``:c``) and a perturbation direction in [−1, 1] (channels ``c:``; zero for clean
    covers). :func:`at_epsilon` turns them into covers ``clip(x + ε·u, 0, 1)``."""
    if direction.shape != clean.shape:
        raise ValueError(f"direction must be shaped like clean {tuple(clean.shape)}, got {tuple(direction.shape)}")
    return detection.detection_tasks(
        torch.cat([clean, torch.zeros_like(clean)], dim=1),
        [torch.cat([clean, direction], dim=1)],
        n_tasks,
        k_shot=k_shot,
        k_query=k_query,
        generator=torch.Generator().manual_seed(seed),
    )


def at_epsilon(tasks: Tasks, epsilon: float) -> Tasks:
    """The covers of :func:`explorer_tasks` at budget ε: ``clip(x + ε·u, 0, 1)``."""
    epsilon = v.nonnegative("epsilon", epsilon)
    c = tasks.x_support.shape[2] // 2

    def make(x):
        return (x[:, :, :c] + epsilon * x[:, :, c:]).clamp(0, 1)

    return Tasks(make(tasks.x_support), tasks.y_support, make(tasks.x_query), tasks.y_query)


def detection_explorer(
    meta: torch.nn.Module,
    joint: torch.nn.Module,
    tasks: dict[str, Tasks],
    *,
    epsilon: float = 32 / 255,
    inner_lr: float = 0.1,
    steps: int = 2,
) -> Explorer:
    """Notebook 09: ε and α. The meta-learned detector adapts (``steps`` steps of α) to each task of the chosen
    held-out perturbation, re-made at budget ε (:func:`at_epsilon`); the joint detector is used as it is. Shows
    two clean and two perturbed query covers of the first task with the meta-learned detector's P(perturbed),
    and both detectors' accuracy on every task. Nothing is trained."""
    if not tasks:
        raise ValueError("tasks must map at least one held-out perturbation's name to its explorer_tasks")
    epsilon, inner_lr = v.nonnegative("epsilon", epsilon), v.positive("inner_lr", inner_lr)
    steps = v.integer("steps", steps)
    names = list(tasks)
    k_query = tasks[names[0]].x_query.shape[1] // 2
    shown = [0, 1, k_query, k_query + 1]  # two clean and two perturbed query covers of task 0
    artists: dict = {}
    memo: dict = {}

    def setup(fig):
        # Everything draw changes is animated: a move redraws only these over a picture of the rest, rendered
        # once (the tick labels and the legend are most of a full redraw's cost).
        grid = fig.add_gridspec(1, len(shown) + 1, width_ratios=[1] * len(shown) + [2.6])
        artists["images"] = []
        for j in range(len(shown)):
            ax = fig.add_subplot(grid[0, j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.title.set_animated(True)
            for spine in ax.spines.values():  # the frame is drawn over the image, as in a full render
                spine.set_animated(True)
            size = tasks[names[0]].x_query.shape[-1]
            artists["images"].append((ax, ax.imshow(np.zeros((size, size, 3)), vmin=0, vmax=1, animated=True)))
        bar_ax = fig.add_subplot(grid[0, -1])
        n_tasks = len(tasks[names[0]].x_query)
        xs = np.arange(n_tasks)
        bar = {"width": 0.4, "animated": True}
        artists["meta"] = bar_ax.bar(xs - 0.2, np.zeros(n_tasks), **bar, **series(0).bar(), label="meta-learned")
        artists["joint"] = bar_ax.bar(xs + 0.2, np.zeros(n_tasks), **bar, **series(1).bar(), label="joint")
        # the chance line is drawn over the bars, as in a full render: animated too
        bar_ax.axhline(0.5, color=PALETTE["grey"], linestyle=":", linewidth=1, label="chance", animated=True)
        # a band above 1 holds the legend, so it hides no bar
        bar_ax.set(ylim=(0, 1.3), yticks=[0, 0.5, 1], xticks=[], xlabel=f"{n_tasks} detection tasks")
        bar_ax.set_ylabel("detection accuracy")
        bar_ax.legend(loc="upper center", ncol=3)
        bar_ax.title.set_animated(True)
        artists["bar_ax"] = bar_ax

    def draw(fig, *, epsilon, inner_lr, perturbation):
        one = at_epsilon(tasks[perturbation], epsilon)
        adapted = robust_meta.adapt_tasks(meta, one, inner_lr=inner_lr, steps=steps)
        acc_meta = robust_meta.task_accuracy(meta, adapted, one.x_query, one.y_query)
        if memo.get("joint_for") != (epsilon, perturbation):  # α does not change the joint detector
            frozen = robust_meta.adapt_tasks(joint, one, inner_lr=1.0, steps=0)  # θ for every task; α unused
            memo.update(
                joint_for=(epsilon, perturbation),
                joint=robust_meta.task_accuracy(joint, frozen, one.x_query, one.y_query),
            )
        acc_joint = memo["joint"]
        with torch.no_grad():
            first = {k: p[0] for k, p in adapted.items()}
            p_perturbed = forward(meta, first, one.x_query[0, shown]).softmax(-1)[:, 1]
        for j, (ax, image) in enumerate(artists["images"]):
            image.set_data(one.x_query[0, shown[j]].permute(1, 2, 0).cpu().numpy())
            kind = "clean" if one.y_query[0, shown[j]] == 0 else "perturbed"
            ax.set_title(f"{kind}\nP(pert.) {float(p_perturbed[j]):.2f}")
        for bar, value in zip(artists["meta"], acc_meta.tolist()):
            bar.set_height(value)
        for bar, value in zip(artists["joint"], acc_joint.tolist()):
            bar.set_height(value)
        artists["bar_ax"].set_title(f"{perturbation} re-made at ε = {epsilon * 255:.0f}/255")
        return (
            f"meta-learned: {steps} steps of α = {inner_lr:.2g} on each task's support set, mean accuracy "
            f"<b>{acc_meta.mean():.0%}</b> · joint, no adaptation: <b>{acc_joint.mean():.0%}</b> "
            f"({len(acc_meta)} tasks, {k_query} clean and {k_query} perturbed query covers each; the covers' "
            "titles give the adapted meta-learned detector's P(perturbed) for task 0)"
        )

    sliders = {
        "epsilon": epsilon_255_slider(epsilon, max_255=48),
        "inner_lr": inner_lr_slider(inner_lr, -3, 0.5),
        "perturbation": dropdown("held-out perturbation", names),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="Detecting a perturbation never seen in training (cached detectors)",
        figsize=(10, 3),
        dpi=72,
        blit=True,
    )


# ------------------------------------------------------------------------------------------ graders
def check_paired_difference(my_paired: Callable) -> bool:
    """Grade ``my_paired(a, b) -> (mean, half_width)``: the mean of the per-task differences a − b and the
    half-width t_{0.975, n−1}·s_d/√n of its 95 % interval, s_d the sample standard deviation (n − 1) of the
    differences. The reference is :func:`metaadv_edu.stats.paired_difference`."""

    def body() -> str:
        for seed, n in ((0, 8), (1, 40), (2, 3)):
            g = torch.Generator().manual_seed(seed)
            b = torch.rand(n, generator=g, dtype=torch.float64)
            a = (b + 0.05 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)).clamp(0, 1)
            ref = stats.paired_difference(a, b)
            out = grading.call(my_paired, a.clone(), b.clone())
            try:
                mean, half = (float(t) for t in out)
            except (TypeError, ValueError):
                raise grading.Stop("return two numbers: (mean of a − b, half-width of its interval)") from None
            d = (a - b).numpy()
            t_n = stats.t_quantile(n + 1)  # t_{0.975} with n degrees of freedom instead of n − 1
            s_d = float(np.std(d, ddof=1))
            unpaired = float(np.sqrt(np.var(a.numpy(), ddof=1) / n + np.var(b.numpy(), ddof=1) / n))
            if abs(mean - ref.mean) > 1e-9:
                if abs(mean + ref.mean) < 1e-9:
                    raise grading.Stop("wrong sign: the difference is a − b, not b − a")
                raise grading.Stop("the mean should be the mean of the per-task differences a − b")
            mistakes = [
                (1.96 * s_d / np.sqrt(n), "1.96 is the normal quantile: use Student's t with n − 1 degrees of freedom"),
                (t_n * s_d / np.sqrt(n), "the t quantile has n − 1 degrees of freedom, not n"),
                (
                    ref.half_width * np.sqrt((n - 1) / n),
                    "use the sample standard deviation of the differences, with n − 1 in its denominator (ddof=1)",
                ),
                (
                    stats.t_quantile(n) * unpaired,
                    "that is the unpaired interval, from the two samples' variances: "
                    "the scores are paired, so use the spread of the per-task differences",
                ),
                (ref.half_width * np.sqrt(n), "divide the standard deviation by √n: the interval is for the mean"),
            ]
            if abs(half - ref.half_width) > 1e-9:
                for wrong, hint in mistakes:
                    if abs(half - wrong) < 1e-9:
                        raise grading.Stop(hint)
                raise grading.Stop("not the half-width t_{0.975, n−1} · s_d / √n of the differences' interval")
        return "the mean of the per-task differences, with Student's t interval of the differences"

    return grading.run("paired difference", body)


def check_bias_step(my_step: Callable) -> bool:
    """Grade ``my_step(logits, y, alpha) -> change``: a two-output detector with logits (n, 2) on its support
    set and labels y ∈ {0, 1}; one SGD step of α on the mean cross-entropy, biases b₀, b₁ only. Return the
    change of c = b₁ − b₀, which is −2α·mean(σ(z₁ − z₀) − y) (derived in notebook 09)."""

    def body() -> str:
        for device in grading.devices():
            for seed, n, alpha in ((0, 6, 0.1), (1, 20, 0.5), (2, 1, 1.0)):
                g = torch.Generator().manual_seed(seed)
                logits = (2 * torch.randn(n, 2, generator=g)).to(device)
                y = torch.randint(2, (n,), generator=g).to(device)
                yf = y.to(logits.dtype)
                bias = torch.zeros(2, device=device, requires_grad=True)
                (grad,) = torch.autograd.grad(F.cross_entropy(logits + bias, y), bias)
                ref = -alpha * (grad[1] - grad[0])
                out = grading.call(my_step, logits.clone(), y.clone(), alpha)
                try:
                    value = torch.as_tensor(out, device=device).detach()
                except (TypeError, ValueError, RuntimeError):
                    raise grading.Stop("return the change of b₁ − b₀ as one number (a 0-d tensor)") from None
                if value.numel() != 1:
                    raise grading.Stop(f"return one number, the change of b₁ − b₀; got shape {tuple(value.shape)}")
                value = value.reshape(()).to(ref.dtype)
                s = torch.sigmoid(logits[:, 1] - logits[:, 0])
                if not grading.close(value, ref, 1e-5):
                    grading.first_mistake(
                        value,
                        [
                            (
                                -alpha * (s - yf).mean(),
                                "only half the change: b₁ and b₀ both move, in opposite "
                                "directions, so c = b₁ − b₀ moves by twice the step of one bias",
                            ),
                            (
                                2 * alpha * (s - yf).mean(),
                                "wrong sign: gradient descent moves c = b₁ − b₀ against ∂L/∂Δ = σ(Δ) − y",
                            ),
                            (-2 * alpha * (s - yf).sum(), "the loss is the mean over the support set, not the sum"),
                            (
                                -2 * alpha * (1 - s - yf).mean(),
                                "σ of the wrong difference: the detector's P(perturbed) is σ(z₁ − z₀)",
                            ),
                        ],
                    )
                    raise grading.Stop("not the change of b₁ − b₀ after one SGD step of α on the mean cross-entropy")
        return (
            "c = b₁ − b₀ changes by −2α·mean(σ(z₁ − z₀) − y): the step moves the threshold towards the support labels"
        )

    return grading.run("detector's bias step", body)
