"""Notebook 10 · What meta-learning learns (library: :mod:`metaadv_edu.anil`, :mod:`metaadv_edu.protonets`,
:mod:`metaadv_edu.imaml`, :mod:`metaadv_edu.similarity`): models, checks, measurements, explorer, exercises."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import (
    anil,
    cache,
    covers,
    data,
    imaml,
    maml,
    models,
    protonets,
    robust_meta,
    similarity,
    stats,
)
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters import maml as maml_chapter
from metaadv_edu.chapters import meta_adversarial_training as mat
from metaadv_edu.chapters.graders.feature_reuse import (
    check_anil_inner_step,
    check_conjugate_gradient,
    check_prototype_logits,
)
from metaadv_edu.functional import Params, forward, params_of, task_loss
from metaadv_edu.plotting import PALETTE, series
from metaadv_edu.widgets import Explorer, inner_lr_slider, int_slider, log_slider

__all__ = [
    "DIVERGED_MSE",
    "POINTS",
    "SINE_ITERATIONS",
    "adaptation_by_part",
    "anil_gradient_check",
    "before_after_cka",
    "body_inner_lrs",
    "check_anil_inner_step",
    "check_conjugate_gradient",
    "check_prototype_logits",
    "cka_invariance_check",
    "cka_paired_rows",
    "cover_anil",
    "cover_protonet",
    "embedding",
    "feature_reuse_explorer",
    "implicit_gradient_check",
    "layer_cka",
    "logistic_regression_accuracy",
    "meta_gradient_costs",
    "paired_outcome",
    "protonet_cost",
    "protonet_linear_check",
    "reference_cka",
    "saved_graph_bytes",
    "sine_anil",
    "training_compute",
    "tuned_accuracy",
    "untrained_cover_net",
    "untrained_sine_net",
    "where_adaptation_happens",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"prototype logits": 1, "ANIL inner step": 1, "conjugate gradient": 2}

#: Meta-training iterations of the sinusoid learners compared here (notebook 07's MAML uses the same).
SINE_ITERATIONS = 1200
#: The explorer calls an adapted fit whose MSE on the grid exceeds this (or is not finite) diverged.
DIVERGED_MSE = 1e3


# ------------------------------------------------------------------------------------------- models
def sine_anil(device=None, *, iterations: int = SINE_ITERATIONS):
    """The 1-40-40-1 regressor meta-trained by ANIL on sinusoids: MAML's settings (one inner step, K = 10,
    α = 0.01, Adam β = 1e-3, meta-batch 25), but the inner step moves only the last layer. Returns (model, record)."""
    device = as_device(device)
    config = {**maml_chapter.SINE_META, "iterations": v.integer("iterations", iterations), "seed": 0}
    build = cache.seeded(models.SineRegressor, config["seed"])

    def train(model):
        history = maml.meta_train(
            model,
            maml_chapter.sine_sampler(config, device),
            iterations=config["iterations"],
            inner_lr=anil.inner_lrs(model, config["inner_lr"]),
            outer_lr=config["outer_lr"],
            generator=torch.Generator().manual_seed(config["seed"]),
            desc="ANIL meta-training",
        )
        return {"meta_loss": history["meta_loss"][::10]}

    return load_or_train("sine-anil", config, build, cache.timed(train), device=device)


def _cover_net() -> nn.Sequential:
    c = mat.COVER_FEW_SHOT
    return models.TinyCNN(3, c["n_way"], width=c["width"], image_size=c["size"])


def embedding(model: nn.Sequential) -> nn.Sequential:
    """The body of a cover network: every layer but the last linear one (its output is the embedding)."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise TypeError("model must be an nn.Sequential that ends with an nn.Linear head")
    return nn.Sequential(*list(model)[:-1])


def _cover_sampler(device):
    c = mat.COVER_FEW_SHOT
    return lambda g: covers.cover_tasks(
        c["meta_batch"],
        n_way=c["n_way"],
        k_shot=c["k_shot"],
        k_query=c["k_query"],
        size=c["size"],
        generator=g,
        device=device,
    )


def cover_anil(device=None):
    """The cover network meta-trained by ANIL with notebook 08's MAML settings and iteration count
    (:data:`~metaadv_edu.chapters.meta_adversarial_training.COVER_FEW_SHOT`, the same image-gradient
    budget counted the same way). Returns (model, record)."""
    device = as_device(device)
    c = mat.COVER_FEW_SHOT
    config = {**c, "seed": 0, "iterations": mat.BUDGET["image_gradients"] // mat.training_cost("meta")}
    build = cache.seeded(_cover_net, config["seed"])

    def train(model):
        h = maml.meta_train(
            model,
            _cover_sampler(device),
            iterations=config["iterations"],
            inner_lr=anil.inner_lrs(model, c["inner_lr"]),
            steps=c["steps"],
            outer_lr=c["outer_lr"],
            generator=torch.Generator().manual_seed(config["seed"]),
            desc="ANIL on covers",
        )
        return {"meta_loss": h["meta_loss"]}

    return load_or_train("covers-anil", config, build, cache.timed(train), device=device)


def protonet_cost() -> int:
    """Image-gradients per ProtoNet meta-iteration: one forward and backward pass of every support and
    query cover of every task of the meta-batch (no inner loop)."""
    c = mat.COVER_FEW_SHOT
    return c["meta_batch"] * c["n_way"] * (c["k_shot"] + c["k_query"])


def cover_protonet(device=None):
    """A prototypical network on covers: the body of notebook 08's CNN trained on 5-way 5-shot episodes
    with Adam, for as many iterations as notebook 08's image-gradient budget buys. Returns (embed, record)."""
    device = as_device(device)
    c = mat.COVER_FEW_SHOT
    config = {**c, "seed": 0, "lr": c["outer_lr"], "iterations": mat.BUDGET["image_gradients"] // protonet_cost()}
    build = cache.seeded(lambda: embedding(_cover_net()), config["seed"])

    def train(embed):
        g = torch.Generator().manual_seed(config["seed"])
        sample = _cover_sampler(device)
        opt = torch.optim.Adam(embed.parameters(), lr=config["lr"])
        losses = []
        for _ in range(config["iterations"]):
            loss = protonets.episode_loss(embed, sample(g))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"loss": losses}

    return load_or_train("covers-protonet", config, build, cache.timed(train), device=device)


def logistic_regression_accuracy(embed: nn.Module, tasks: data.Tasks, *, c: float = 1.0) -> torch.Tensor:
    """Tian et al. (2020)'s baseline: per task, L2-normalised embeddings of the support covers, a multinomial
    logistic regression (scikit-learn, inverse regularisation ``c``) fitted on them, accuracy on the query."""
    from sklearn.linear_model import LogisticRegression

    c = v.positive("c", c)
    with torch.no_grad():
        zs = F.normalize(embed(tasks.x_support.flatten(0, 1)).flatten(1), dim=1).view(tasks.x_support.shape[0], -1)
        zq = F.normalize(embed(tasks.x_query.flatten(0, 1)).flatten(1), dim=1).view(tasks.x_query.shape[0], -1)
    n = tasks.x_support.shape[0]
    zs, zq = (
        zs.view(n, tasks.x_support.shape[1], -1).cpu().numpy(),
        zq.view(n, tasks.x_query.shape[1], -1).cpu().numpy(),
    )
    ys, yq = tasks.y_support.cpu().numpy(), tasks.y_query.cpu().numpy()
    acc = [
        float((LogisticRegression(C=c, max_iter=1000).fit(zs[i], ys[i]).predict(zq[i]) == yq[i]).mean())
        for i in range(n)
    ]
    return torch.tensor(acc)


def untrained_cover_net(seed: int = 0) -> nn.Sequential:
    """Notebook 08's cover network with the weights its recipe starts from, before any training.

    Parameters
    ----------
    seed : int
        Non-negative. Seed 0 gives the initialisation of MAML's and ANIL's cover networks (the reference
        "untrained" body of notebook 10); any other seed gives an unrelated untrained network.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return cache.seeded(_cover_net, seed)()


def untrained_sine_net(seed: int = 0) -> nn.Module:
    """The 1-40-40-1 sinusoid regressor at initialisation, before any training.

    Parameters
    ----------
    seed : int
        Non-negative. Seed 0 gives the weights notebook 05's MAML regressor starts from; any other seed
        gives an unrelated untrained regressor.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return cache.seeded(models.SineRegressor, seed)()


def body_inner_lrs(model: nn.Module, inner_lr: float) -> dict[str, float]:
    """Per-tensor inner learning rates that move the body only: ``inner_lr`` on every tensor but the head's
    (:func:`~metaadv_edu.anil.head_names`), 0 on the head's — the complement of :func:`~metaadv_edu.anil.inner_lrs`."""
    head = anil.inner_lrs(model, inner_lr)
    return {k: (0.0 if r > 0 else inner_lr) for k, r in head.items()}


def adaptation_by_part(
    model: nn.Module, tasks: data.Tasks, *, inner_lr: float, steps: int, classification: bool
) -> dict[str, torch.Tensor]:
    """Raghu et al. (2020)'s functional test of feature reuse on one trained network (notebook 10, §2).

    The same network adapts to every task with ``steps`` SGD steps of ``inner_lr`` on (a) all weights,
    θ′ = θ − α∇L_S(θ); (b) the head only, eq. (2) with D selecting the head (ANIL's step); (c) the body only,
    D selecting every other tensor. Returns ``{"all weights", "head only", "body only"}`` → per-task query
    score: accuracy when ``classification``, else mean-squared error.
    """
    inner_lr = v.positive("inner_lr", inner_lr)
    steps = v.integer("steps", steps, low=1)
    rates = {
        "all weights": inner_lr,
        "head only": anil.inner_lrs(model, inner_lr),
        "body only": body_inner_lrs(model, inner_lr),
    }
    out = {}
    for name, lr in rates.items():
        if classification:
            adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=lr, steps=steps)
            out[name] = robust_meta.task_accuracy(model, adapted, tasks.x_query, tasks.y_query).cpu()
        else:
            out[name] = maml.adaptation_losses(model, tasks, inner_lr=lr, max_steps=steps)[steps].cpu()
    return out


def where_adaptation_happens(scores: dict[str, torch.Tensor], *, lower_is_better: bool) -> str:
    """The conclusion the paired differences of :func:`adaptation_by_part` support, in words.

    Feature reuse predicts that adapting the head alone loses nothing against adapting all weights. If it
    loses, the comparison of head only with body only says which part carries more of the adaptation.
    """
    sign = 1.0 if lower_is_better else -1.0

    def worse(a: str, b: str) -> bool:  # a resolved worse than b
        d = stats.paired_difference(scores[a], scores[b])
        return d.resolved and sign * d.mean > 0

    if not worse("head only", "all weights"):
        return "the head alone loses nothing these tasks resolve: consistent with feature reuse"
    if worse("head only", "body only"):
        return "the head alone is worse than the body alone: the network adapts mainly through its body"
    if worse("body only", "head only"):
        return "the head alone is worse than all weights, the body alone worse still: both parts adapt, the head more"
    return "each part alone is worse than all weights, and neither is resolved from the other: both parts adapt"


def tuned_accuracy(
    model: nn.Module, val_tasks: data.Tasks, test_tasks: data.Tasks, *, grid, steps: int, rates=None
) -> tuple[float, torch.Tensor]:
    """Notebook 08's protocol for a learner that adapts by SGD: the α of ``grid`` with the best mean query accuracy
    on ``val_tasks`` after ``steps`` inner steps (a tie goes to the smaller α), then the per-task query accuracy
    on ``test_tasks`` with that α. ``rates(α)`` gives the inner rates (default: α on every tensor; ANIL:
    ``lambda a: anil.inner_lrs(model, a)``). Returns (α, accuracies on the CPU)."""
    grid = [v.positive("grid", a) for a in grid]
    if not grid:
        raise ValueError("grid must hold at least one learning rate")
    rates = rates or (lambda a: a)

    def accuracy(tasks: data.Tasks, a: float) -> torch.Tensor:
        adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=rates(a), steps=steps)
        return robust_meta.task_accuracy(model, adapted, tasks.x_query, tasks.y_query).cpu()

    val = [float(accuracy(val_tasks, a).mean()) for a in grid]
    best = grid[max(range(len(grid)), key=lambda i: (val[i], -grid[i]))]
    return best, accuracy(test_tasks, best)


def training_compute(meta_updates: int, protonet_updates: int) -> dict[str, dict[str, int]]:
    """What each cover learner of notebook 10, §3 did with its training budget: parameter ``updates``,
    ``image-gradients`` per update and in all (notebook 08's unit,
    :func:`~metaadv_edu.chapters.meta_adversarial_training.training_cost`), and ``cover passes`` (covers run
    forward and backward). MAML and ANIL make ``meta_updates`` meta-iterations, the ProtoNet ``protonet_updates``;
    the pretrained classifier trains whole epochs over its fixed genres in batches of 64, the last one partial."""
    meta_updates = v.integer("meta_updates", meta_updates, low=1)
    protonet_updates = v.integer("protonet_updates", protonet_updates, low=1)
    b = mat.BUDGET
    episode_covers = protonet_cost()  # the support and query covers of one meta-batch
    pretrain_covers = b["pretrain_genres"] * b["per_genre"]
    epochs = b["image_gradients"] // mat.training_cost("pretrained")
    learners = {
        "MAML and ANIL": (meta_updates, mat.training_cost("meta"), meta_updates * episode_covers),
        "ProtoNet": (protonet_updates, protonet_cost(), protonet_updates * episode_covers),
        "pretrained": (epochs * -(-pretrain_covers // 64), 64, epochs * pretrain_covers),
    }
    out = {}
    for name, (updates, per_update, passes) in learners.items():
        total = epochs * pretrain_covers if name == "pretrained" else updates * per_update
        out[name] = {"updates": updates, "per update": per_update, "image-gradients": total, "cover passes": passes}
    return out


def paired_outcome(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> str:
    """Which of two learners scored on the same tasks is more accurate, by the paired difference of their
    accuracies a − b (:func:`metaadv_edu.stats.paired_difference`): ``"<name_a> more accurate"``,
    ``"<name_b> more accurate"`` or ``"not resolved"`` when its 95 % interval contains 0."""
    d = stats.paired_difference(a, b)
    if not d.resolved:
        return "not resolved"
    return f"{name_a if d.mean > 0 else name_b} more accurate"


# ----------------------------------------------------------------------------------- checks (✓ cells)
def _flat(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _smooth_sine(seed: int = 0) -> tuple[nn.Module, data.Tasks]:
    torch.manual_seed(seed)
    model = models.SineRegressor(activation="tanh").double()
    tasks = data.sine_tasks(3, 10, generator=torch.Generator().manual_seed(seed + 1))
    return model, data.Tasks(*(t.double() for t in tasks))


def anil_gradient_check(formula: Callable = anil.meta_gradient_by_formula, *, steps: int = 2, inner_lr: float = 0.05):
    """ANIL's meta-gradient by ``formula`` against autograd through MAML's meta-loss with the body's
    inner step set to 0 (:func:`metaadv_edu.anil.inner_lrs`), on three sinusoid tasks, float64, tanh
    regressor. Returns ``{"error": relative error, "vs_maml": relative distance to MAML's meta-gradient}``."""
    model, tasks = _smooth_sine()
    errors, distances = [], []
    for i in range(tasks.n_tasks):
        one = tasks.task(i)
        model.zero_grad()
        maml.meta_loss(model, one, inner_lr=anil.inner_lrs(model, inner_lr), steps=steps).backward()
        autograd = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        model.zero_grad()
        maml.meta_loss(model, one, inner_lr=inner_lr, steps=steps).backward()
        full = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        mine = _flat(formula(model, *(t[0] for t in one), inner_lr=inner_lr, steps=steps))
        errors.append(_rel(mine, autograd))
        distances.append(_rel(full, autograd))
    model.zero_grad()
    return {"error": max(errors), "vs_maml": min(distances)}


def protonet_linear_check(head: Callable = protonets.linear_head, *, seed: int = 0):
    """Softmax of :func:`~metaadv_edu.protonets.prototype_logits` against that of the linear classifier
    ``head(prototypes)`` on random 5-way episodes (float64, unequal class sizes). Returns
    ``{"softmax_error": max |difference|, "offset_error": max over queries and classes of
    |(prototype logit − linear logit) − (−‖f(q)‖²)|}`` — the offset must be −‖f(q)‖², the same for every class."""
    g = torch.Generator().manual_seed(seed)
    errors, spreads = [], []
    for n_way, dim in ((5, 16), (3, 2), (4, 64)):
        labels = torch.cat([torch.arange(n_way), torch.randint(n_way, (7,), generator=g)])
        zs = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
        zq = torch.randn(9, dim, generator=g, dtype=torch.float64)
        logits = protonets.prototype_logits(zs, labels, zq, n_way)
        w, b = head(protonets.prototypes(zs, labels, n_way))
        linear = zq @ w.T + b
        errors.append(float((logits.softmax(-1) - linear.softmax(-1)).abs().max()))
        offset = logits - linear
        spreads.append(float((offset - (-(zq**2).sum(-1, keepdim=True))).abs().max()))
    return {"softmax_error": max(errors), "offset_error": max(spreads)}


def implicit_gradient_check(
    meta_gradient: Callable = imaml.implicit_meta_gradient,
    *,
    steps: tuple[int, ...] = (5, 20, 50, 100, 200),
    lam: float = 20.0,
    inner_lr: float = 0.02,
):
    """The implicit meta-gradient against the unrolled one (autograd through ``k`` steps of the regularised
    inner loop) as k grows, on a sinusoid task (tanh regressor, float64). Returns the relative errors, one per k.

    A ``meta_gradient`` that raises ``ValueError`` for some k (conjugate gradient refuses a linear system that
    is not positive definite, as a wrong one may be) scores an error of ``inf`` there: a ✗, not a traceback."""
    steps = tuple(v.integer("steps", k, low=1) for k in steps)
    lam, inner_lr = v.positive("lam", lam), v.positive("inner_lr", inner_lr)
    model, tasks = _smooth_sine()
    xs, ys, xq, yq = (t[0] for t in tasks)
    theta = params_of(model)
    errors = []
    for k in steps:
        phi = imaml.proximal_adapt(model, theta, xs, ys, lam=lam, inner_lr=inner_lr, steps=k, differentiable=True)
        unrolled = torch.autograd.grad(task_loss(phi, model, xq, yq, F.mse_loss), list(theta.values()))
        try:
            implicit = meta_gradient(model, theta, xs, ys, xq, yq, lam=lam, inner_lr=inner_lr, steps=k, cg_steps=60)
        except ValueError:
            errors.append(float("inf"))
            continue
        errors.append(_rel(_flat(implicit), torch.cat([u.reshape(-1) for u in unrolled])))
    return errors


def cka_invariance_check(cka: Callable = similarity.linear_cka, *, seed: int = 0) -> dict[str, float]:
    """CKA between a random representation X (200 × 30) and transforms of it: an orthogonal rotation and a
    scaling by 3.7 plus a shift (must give 1), and an invertible but anisotropic linear map (must not)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 30, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    stretch = torch.diag(torch.logspace(-2, 1, 30, dtype=torch.float64)) @ q
    return {
        "orthogonal": cka(x, x @ q),
        "scaled and shifted": cka(x, 3.7 * x + 5.0),
        "anisotropic": cka(x, x @ stretch),
    }


# ------------------------------------------------------------------------------------- measurements
def layer_cka(model: nn.Sequential, before: Params, after: Params, x: torch.Tensor) -> dict[str, float]:
    """Linear CKA of every layer's representation of ``x`` under ``before`` and ``after`` parameters."""
    with torch.no_grad():
        a = similarity.layer_representations(model, before, x)
        b = similarity.layer_representations(model, after, x)
    return {name: similarity.linear_cka(a[name], b[name]) for name in a}


def _per_layer(per_input: list[dict[str, float]]) -> dict[str, torch.Tensor]:
    return {layer: torch.tensor([t[layer] for t in per_input]) for layer in per_input[0]}


def before_after_cka(
    model: nn.Sequential, tasks: data.Tasks, *, inner_lr, steps: int, inputs: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """How much each layer's representation moves in the inner loop (notebook 10, §2): for every task, θ′ from
    ``steps`` SGD steps of ``inner_lr`` (a number or per-tensor rates) on its support set, then the linear CKA,
    eq. (5), of every layer's representation under θ and under θ′.

    The representations are of the task's own query inputs, or of ``inputs`` (one batch, the same for every
    task) when given. Returns layer name → per-task CKA (a tensor of ``tasks.n_tasks`` values)."""
    steps = v.integer("steps", steps, low=1)
    if tasks.n_tasks < 1:
        raise ValueError("tasks must hold at least one task")
    theta = params_of(model, detach=True)
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)  # θ′ of every task, batched
    batches = tasks.x_query if inputs is None else [inputs] * tasks.n_tasks
    return _per_layer(
        [layer_cka(model, theta, {n: p[i] for n, p in adapted.items()}, x) for i, x in enumerate(batches)]
    )


def reference_cka(model: nn.Sequential, other: nn.Module, inputs) -> dict[str, torch.Tensor]:
    """The reference rows of notebook 10's CKA table: every layer's CKA between ``model`` and ``other`` (the same
    architecture, e.g. an untrained network) on each batch of ``inputs``. Returns layer name → one value per
    batch."""
    if type(other) is not type(model):
        raise TypeError(f"other must have model's architecture ({type(model).__name__}), got {type(other).__name__}")
    theta, weights = params_of(model, detach=True), params_of(other, detach=True)
    return _per_layer([layer_cka(model, theta, weights, x) for x in inputs])


def cka_paired_rows(before_after: dict[str, torch.Tensor], references: dict[str, dict[str, torch.Tensor]], layers):
    """Rows of a table: for each reference and each of ``layers``, the paired difference (over the same
    tasks, :func:`metaadv_edu.stats.paired_difference`) of the before/after CKA minus the reference CKA, and its
    verdict ("before/after > reference": the inner loop moves that layer less than the reference differs)."""
    rows = []
    for label, reference in references.items():
        for layer in layers:
            d = stats.paired_difference(before_after[layer], reference[layer])
            rows.append([label, layer, d.format(3), d.verdict("before/after", "reference")])
    return rows


def saved_graph_bytes(output: torch.Tensor, *, exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the storages an autograd graph keeps for backward, each storage counted once (a tensor
    saved by several operations, or views of one buffer, share a storage).

    A saved view counts its whole storage: a graph built on ``big[:1]`` is charged all of ``big``. Pass
    contiguous copies to measure what the graph itself needs. Storages of the tensors in ``exclude`` (e.g. the
    model's own parameters, held in memory whether or not a graph exists) are not counted."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen_fn, storages, stack = set(), {}, [output.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen_fn:
            continue
        seen_fn.add(fn)
        for name in dir(fn):
            if name.startswith("_saved_"):
                try:
                    value = getattr(fn, name)
                except RuntimeError:
                    continue
                for t in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(t, torch.Tensor):
                        s = t.untyped_storage()
                        storages[s.data_ptr()] = s.nbytes()
        stack.extend(f for f, _ in fn.next_functions)
    return sum(n for ptr, n in storages.items() if ptr not in excluded)


def meta_gradient_costs(
    model: nn.Module, tasks: data.Tasks, ks, *, inner_lr: float, lam: float, cg_steps: int = 5, repeats: int = 5
):
    """Wall time of one meta-gradient over ``tasks`` (the minimum of ``repeats`` calls, after one warm-up
    call) and the bytes of autograd graph one task's meta-gradient keeps for backward, for second-order MAML,
    first-order MAML and iMAML, with ``k`` inner steps for each k in ``ks``.

    All three loop over the tasks in Python (``maml.meta_loss_loop``; iMAML task by task), so the timings
    compare the algorithms, not batching. The bytes are :func:`saved_graph_bytes` of a graph built on a
    contiguous copy of the first task, without the model's own parameters (every adapted copy of them is
    counted). iMAML's graph is that of one support gradient at θ′⋆, kept during the ``cg_steps``
    Hessian-vector products. Returns ``{method: {"seconds": [...], "bytes": [...]}}``."""
    import time

    repeats = v.integer("repeats", repeats, low=1)
    # contiguous copies: a saved view would charge every graph for the whole tensor it was sliced from
    tasks = data.Tasks(*(t.clone() for t in tasks))
    one = data.Tasks(*(t[:1].clone() for t in tasks))
    weights = list(model.parameters())

    def min_time(fn) -> float:  # the minimum is the least load-sensitive estimate of a call's own cost
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    theta = params_of(model)
    out = {name: {"seconds": [], "bytes": []} for name in ("MAML", "first-order MAML", "iMAML")}

    def imaml_all(k):
        return [
            imaml.implicit_meta_gradient(
                model, theta, *(t[i] for t in tasks), lam=lam, inner_lr=inner_lr, steps=k, cg_steps=cg_steps
            )
            for i in range(tasks.n_tasks)
        ]

    for k in ks:
        for name, first in (("MAML", False), ("first-order MAML", True)):

            def run(first=first, k=k):
                model.zero_grad()
                loss = maml.meta_loss_loop(model, tasks, inner_lr=inner_lr, steps=k, first_order=first)
                loss.backward()
                return loss

            out[name]["seconds"].append(min_time(run))
            # the graph of one task; meta_loss_loop keeps every task's graph until backward, so the timed
            # call's peak is about n_tasks × this for MAML and first-order MAML, while iMAML frees each
            # task's graph after its conjugate-gradient solve
            loss = maml.meta_loss_loop(model, one, inner_lr=inner_lr, steps=k, first_order=first)
            out[name]["bytes"].append(saved_graph_bytes(loss, exclude=weights))
        out["iMAML"]["seconds"].append(min_time(lambda k=k: imaml_all(k)))
        xs, ys = one.x_support[0], one.y_support[0]
        phi = imaml.proximal_adapt(model, theta, xs, ys, lam=lam, inner_lr=inner_lr, steps=k)
        phi = {n: p.requires_grad_(True) for n, p in phi.items()}
        g = torch.autograd.grad(task_loss(phi, model, xs, ys, F.mse_loss), list(phi.values()), create_graph=True)
        out["iMAML"]["bytes"].append(saved_graph_bytes(sum(gi.sum() for gi in g), exclude=weights))
    model.zero_grad()
    return out


# ------------------------------------------------------------------------------------------ explorer
def lam_slider(value: float = 1.0):
    """iMAML's λ on a log scale, 10⁻² … 10²."""
    return log_slider("λ — iMAML's pull to θ", v.positive("lam", value), -2, 2, readout_format=".2g")


def _extend_path(path: list, steps: int, net, theta, xs, ys, rate, pull: float | None) -> None:
    """Append first-order inner steps of ``rate`` to ``path`` (θ⁰, θ¹, …) until it holds θ^steps; with ``pull``
    = αλ each step also moves −αλ(θ′ − θ): the step on L_S + λ/2‖θ′ − θ‖² (iMAML's regularised inner loop)."""
    while len(path) <= steps:
        step = maml.adapt(net, path[-1], xs, ys, inner_lr=rate, steps=1, first_order=True)
        if pull is not None:
            step = {k: p - pull * (path[-1][k] - theta[k]) for k, p in step.items()}
        path.append({k: p.detach() for k, p in step.items()})


def feature_reuse_explorer(
    meta_model: nn.Module,
    anil_model: nn.Module,
    tasks: data.Tasks,
    amplitude: torch.Tensor,
    phase: torch.Tensor,
    *,
    inner_lr: float = 0.01,
    steps: int = 1,
    lam: float = 1.0,
    task: int = 0,
) -> Explorer:
    """Notebook 10: α, k and λ. MAML's initialisation adapts to one sinusoid task with ``k`` steps of α on its
    support points (all weights), iMAML-style (the same steps on L_S + λ/2‖θ′ − θ‖²) and ANIL's initialisation
    with head-only steps; left, the three fits; right, each layer's linear CKA between the representations of
    200 inputs before and after adaptation. Nothing is trained."""
    grid = torch.linspace(-5, 5, 200, device=tasks.x_support.device).unsqueeze(-1)
    thetas = {"MAML": params_of(meta_model, detach=True), "ANIL": params_of(anil_model, detach=True)}
    names = ("MAML", "iMAML (λ)", "ANIL")
    styles = {"MAML": series(0), "iMAML (λ)": series(2), "ANIL": series(3)}  # colour, line style and hatch
    art: dict = {}

    def setup(fig):
        # Everything draw changes is animated: a move redraws only these over a picture of the rest, rendered
        # once (the tick labels and the legend are most of a full redraw's cost).
        ax, bars = fig.subplots(1, 2, width_ratios=[1.6, 1])
        line = {"animated": True}
        art["truth"] = ax.plot([], [], color=PALETTE["grey"], lw=4, alpha=0.7, label="task", **line)[0]
        art["support"] = ax.plot([], [], "D", color=PALETTE["black"], ms=5, label="support points", **line)[0]
        art["lines"] = {
            n: ax.plot([], [], color=styles[n].color, ls=styles[n].linestyle, lw=1.8, label=f"{n} adapted", **line)[0]
            for n in names
        }
        ax.title.set_animated(True)
        ax.set(xlim=(-5, 5), ylim=(-5.5, 5.5), xlabel="input x", ylabel="output y")
        for spine in ax.spines.values():  # the frame is drawn over the curves, as in a full render
            spine.set_animated(True)
        # opaque: a move pastes the legend, rendered once, over the curves, so none may show through it
        ax.legend(loc="lower left", ncol=2, framealpha=1)
        layers = list(similarity.layer_representations(meta_model, thetas["MAML"], grid[:2]))
        xs = np.arange(len(layers))
        art["bars"] = {
            n: bars.bar(
                xs + (j - 1) * 0.27, np.ones(len(layers)), width=0.27, **styles[n].bar(), label=n, animated=True
            )
            for j, n in enumerate(names)
        }
        bars.set_xticks(xs.tolist(), layers)
        bars.set(ylim=(0, 1.05), xlabel="layer", ylabel="CKA before vs after")
        bars.set_title("how much each layer's\nrepresentation moves (1 = not at all)")
        art.update(ax=ax, layers=layers)

    max_steps = 20
    # adaptation paths θ⁰, θ¹, …, extended only as far as k asks: moving α, λ or the task computes k steps of
    # each method, moving k up extends the paths, moving it down only indexes them
    memo: dict = {}

    def trajectory(name, inner_lr, lam, task, steps):
        key = (name, inner_lr, lam if name == "iMAML (λ)" else None, task)
        net, theta = (anil_model, thetas["ANIL"]) if name == "ANIL" else (meta_model, thetas["MAML"])
        if key not in memo:
            if len(memo) > 30:
                memo.clear()
            memo[key] = [theta]
        path = memo[key]
        if len(path) <= steps:
            rate = anil.inner_lrs(anil_model, inner_lr) if name == "ANIL" else inner_lr
            pull = inner_lr * lam if name == "iMAML (λ)" else None
            _extend_path(path, steps, net, theta, tasks.x_support[task], tasks.y_support[task], rate, pull)
        return path[steps]

    def draw(fig, *, inner_lr, steps, lam, task):
        xs, ys = tasks.x_support[task], tasks.y_support[task]
        adapted = {name: trajectory(name, inner_lr, lam, task, steps) for name in names}
        truth = truths[task]
        art["truth"].set_data(grid[:, 0].cpu(), truth.cpu())
        art["support"].set_data(xs[:, 0].cpu(), ys[:, 0].cpu())
        text = []
        for n in names:
            net, start = (anil_model, thetas["ANIL"]) if n == "ANIL" else (meta_model, thetas["MAML"])
            with torch.no_grad():
                pred = forward(net, adapted[n], grid)[:, 0]
            art["lines"][n].set_data(grid[:, 0].cpu(), pred.cpu())
            mse = float(((pred - truth) ** 2).mean())
            try:  # a large α·k diverges (or kills every unit of a layer): say so instead of drawing nonsense
                if not mse <= DIVERGED_MSE:  # also catches nan and inf
                    raise ValueError("diverged")
                sims = layer_cka(net, start, adapted[n], grid)
            except ValueError:
                for bar in art["bars"][n]:
                    bar.set_height(0.0)
                text.append(f"{n}: <b>diverged</b> (MSE above {DIVERGED_MSE:.0f} or not finite)")
                continue
            for bar, name in zip(art["bars"][n], art["layers"]):
                bar.set_height(sims[name])
            text.append(f"{n}: MSE <b>{mse:.2f}</b>, CKA " + ", ".join(f"{s:.3f}" for s in sims.values()))
        art["ax"].set_title(f"task {task}: {steps} step(s) of α = {inner_lr:.2g}, λ = {lam:.2g}")
        return " · ".join(text)

    truths = amplitude.view(-1, 1) * torch.sin(grid[:, 0].view(1, -1) - phase.view(-1, 1))
    if truths.shape[0] != tasks.x_support.shape[0]:
        raise ValueError("amplitude and phase must hold one value per task of tasks")
    sliders = {
        "inner_lr": inner_lr_slider(inner_lr, -3, -0.5),
        "steps": int_slider("k — inner steps", v.integer("steps", steps, low=0, high=max_steps), 0, max_steps),
        "lam": lam_slider(lam),
        "task": int_slider("task", v.integer("task", task, low=0, high=truths.shape[0] - 1), 0, truths.shape[0] - 1),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="Feature reuse: MAML, iMAML and ANIL adapting",
        figsize=(10, 3.4),
        dpi=72,
        blit=True,
    )
