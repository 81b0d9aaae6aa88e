"""The trained models the notebooks share, each trained once and then loaded from the cache.

Every function here is a recipe: a fixed architecture, data and training configuration, passed
to :func:`metaadv_edu.cache.load_or_train`. The configuration is part of the cache key, so editing
a recipe trains a new model instead of loading an old one.
"""

from __future__ import annotations

import torch

from metaadv_edu import _validate as v
from metaadv_edu import covers, data, models, training
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train

__all__ = [
    "COVER_FEW_SHOT",
    "DETECTION",
    "adversarial_generator",
    "cover_attack_pools",
    "cover_detector",
    "cover_maml",
    "cover_pretrained",
    "cover_task_generator",
    "digits_cnn",
    "digits_cnn_adversarial",
    "digits_cnn_generator_hardened",
    "digits_gan",
    "digits_logreg",
    "learned_inner_lrs",
    "library_cnn",
    "library_cnn_adversarial",
    "ring_gan",
    "sine_maml",
    "sine_metasgd",
    "sine_pretrained",
    "sine_reptile",
]


def _seeded(factory, seed: int):
    """A ``build`` function for the cache: the same initial weights every call."""
    def build():
        torch.manual_seed(seed)
        return factory()

    return build


def _sine_sampler(config: dict, device):
    """Meta-batches of ``config["n_tasks"]`` sinusoid tasks with ``config["k_support"]`` points each."""
    return lambda g: data.sine_tasks(config["n_tasks"], config["k_support"], generator=g, device=device)


def _fit(model, x, y, eval_data, *, epochs, lr, batch_size=64, seed=0, desc="training", **kwargs):
    torch.manual_seed(seed)
    history = training.train_classifier(
        model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, eval_data=eval_data,
        generator=torch.Generator().manual_seed(seed), desc=desc, **kwargs)
    return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}


def digits_logreg(device=None):
    """Multinomial logistic regression on the 8×8 digits (notebook 01). Returns (model, record)."""
    device = as_device(device)
    config = {"epochs": 60, "lr": 0.05, "batch_size": 64, "seed": 0}

    build = _seeded(lambda: models.LogisticRegression(64, 10), config["seed"])

    def train(model):
        return _fit(model, *data.load_digits("train", device=device),
                    data.load_digits("test", device=device), epochs=config["epochs"],
                    lr=config["lr"], desc="logistic regression")

    return load_or_train("digits-logreg", config, build, train, device=device)


def digits_cnn(device=None):
    """The small CNN on the 8×8 digits (notebooks 00–04). Returns (model, record)."""
    device = as_device(device)
    config = {"width": 16, "epochs": 30, "lr": 3e-3, "batch_size": 64, "seed": 0}

    build = _seeded(lambda: models.TinyCNN(1, 10, width=config["width"], image_size=8), config["seed"])

    def train(model):
        return _fit(model, *data.load_digits("train", device=device),
                    data.load_digits("test", device=device), epochs=config["epochs"],
                    lr=config["lr"], desc="digits CNN")

    return load_or_train("digits-cnn", config, build, train, device=device)


def library_cnn(device=None):
    """The library's cover classifier: the small CNN on the ten named genres (32×32 covers)."""
    device = as_device(device)
    config = {"width": 16, "epochs": 6, "lr": 3e-3, "batch_size": 64, "seed": 0, "size": 32}

    build = _seeded(lambda: models.TinyCNN(3, len(covers.GENRE_NAMES), width=config["width"], image_size=32),
                    config["seed"])

    def train(model):
        return _fit(model, *covers.library_dataset("train", device=device),
                    covers.library_dataset("test", device=device), epochs=config["epochs"],
                    lr=config["lr"], desc="cover classifier")

    return load_or_train("library-cnn", config, build, train, device=device)


def digits_cnn_adversarial(method: str = "pgd", epsilon: float = 0.1, device=None):
    """The digits CNN trained by :func:`metaadv_edu.defenses.adversarial_training` (notebook 02).

    Same architecture as :func:`digits_cnn`, 25 epochs; PGD training uses 5 steps of 2.5·ε/5.
    """
    from metaadv_edu import defenses

    device = as_device(device)
    v.choice("method", method, defenses.METHODS)
    config = {"method": method, "epsilon": round(v.nonnegative("epsilon", epsilon), 6), "width": 16,
              "epochs": 25, "lr": 3e-3, "batch_size": 64, "pgd_steps": 5, "alpha": 0.5, "seed": 0}

    build = _seeded(lambda: models.TinyCNN(1, 10, width=config["width"], image_size=8), config["seed"])

    def train(model):
        history = defenses.adversarial_training(
            model, *data.load_digits("train", device=device), method=method, epsilon=epsilon,
            alpha=config["alpha"], pgd_steps=config["pgd_steps"], epochs=config["epochs"],
            lr=config["lr"], batch_size=config["batch_size"],
            generator=torch.Generator().manual_seed(config["seed"]),
            eval_data=data.load_digits("test", device=device))
        return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}

    return load_or_train(f"digits-cnn-{method}", config, build, train, device=device)


def library_cnn_adversarial(epsilon: float = 16 / 255, device=None):
    """The library's cover classifier hardened by PGD adversarial training (2 steps, notebook 02)."""
    from metaadv_edu import defenses

    device = as_device(device)
    config = {"epsilon": round(v.nonnegative("epsilon", epsilon), 6), "width": 16, "epochs": 6,
              "lr": 3e-3, "batch_size": 64, "pgd_steps": 2, "seed": 0, "size": 32}

    build = _seeded(lambda: models.TinyCNN(3, len(covers.GENRE_NAMES), width=config["width"], image_size=32),
                    config["seed"])

    def train(model):
        history = defenses.adversarial_training(
            model, *covers.library_dataset("train", device=device), method="pgd", epsilon=epsilon,
            pgd_steps=config["pgd_steps"], epochs=config["epochs"], lr=config["lr"],
            batch_size=config["batch_size"], generator=torch.Generator().manual_seed(config["seed"]),
            eval_data=covers.library_dataset("test", device=device))
        return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}

    return load_or_train("library-cnn-pgd", config, build, train, device=device)


SINE_META = {"n_tasks": 25, "k_support": 10, "inner_lr": 0.01, "outer_lr": 1e-3}


def sine_maml(device=None, *, iterations: int = 6000, first_order: bool = False,
              k_support: int = 10):
    """The 1-40-40-1 regressor meta-trained by MAML on sinusoids (notebook 05): one inner step,
    K = 10, α = 0.01, Adam with β = 1e-3, meta-batch 25, as in Finn et al. (2017, §5.1) but with
    fewer iterations (the paper ran 70,000)."""
    from metaadv_edu import maml

    device = as_device(device)
    config = {**SINE_META, "iterations": v.integer("iterations", iterations),
              "first_order": bool(first_order), "seed": 0,
              "k_support": v.integer("k_support", k_support)}

    build = _seeded(models.SineRegressor, config["seed"])

    def train(model):
        history = maml.meta_train(
            model, _sine_sampler(config, device),
            iterations=config["iterations"], inner_lr=config["inner_lr"],
            outer_lr=config["outer_lr"], first_order=config["first_order"],
            generator=torch.Generator().manual_seed(config["seed"]),
            desc="FOMAML meta-training" if first_order else "MAML meta-training")
        return {"meta_loss": history["meta_loss"][::10]}

    name = "sine-fomaml" if first_order else "sine-maml"
    return load_or_train(name, config, build, train, device=device)


def sine_pretrained(device=None, *, iterations: int = 6000):
    """The baseline of MAML's sinusoid experiment: the same network trained on all tasks jointly
    (plain regression on points pooled from a batch of tasks), to be fine-tuned afterwards."""
    import torch.nn.functional as F

    device = as_device(device)
    config = {**SINE_META, "iterations": v.integer("iterations", iterations), "seed": 0}

    build = _seeded(models.SineRegressor, config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        opt = torch.optim.Adam(model.parameters(), lr=config["outer_lr"])
        losses = []
        sample = _sine_sampler(config, device)
        for _ in range(config["iterations"]):
            t = sample(g)
            loss = F.mse_loss(model(t.x_support), t.y_support)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return {"loss": losses[::10]}

    return load_or_train("sine-pretrained", config, build, train, device=device)


def sine_reptile(device=None, *, iterations: int = 2000):
    """The 1-40-40-1 regressor trained by Reptile on sinusoids (notebook 06): 5 SGD steps of
    α = 0.02 per task on K = 10 points, meta-batch 25, outer step β annealed linearly from 1 to 0."""
    from metaadv_edu import reptile

    device = as_device(device)
    config = {"n_tasks": 25, "k_support": 10, "inner_lr": 0.02, "inner_steps": 5, "outer_lr": 1.0,
              "iterations": v.integer("iterations", iterations), "seed": 0}

    build = _seeded(models.SineRegressor, config["seed"])

    def train(model):
        history = reptile.train(
            model, _sine_sampler(config, device),
            iterations=config["iterations"], inner_lr=config["inner_lr"],
            inner_steps=config["inner_steps"], outer_lr=config["outer_lr"],
            generator=torch.Generator().manual_seed(config["seed"]))
        return {"support_loss": history["support_loss"][::10]}

    return load_or_train("sine-reptile", config, build, train, device=device)


def sine_metasgd(device=None, *, iterations: int = 1200, k_support: int = 10,
                 alpha_init: float | tuple[float, float] = (0.005, 0.1)):
    """Meta-SGD on sinusoids (notebook 07): the 1-40-40-1 regressor and an elementwise α learned
    together with Adam (β = 1e-3), one inner step, meta-batch 25. ``alpha_init`` is a constant or a
    range for the uniform initialisation of α (the paper draws it from a small range).

    Returns ``(model, record)``; ``record["inner_lrs"]`` holds the learned α by parameter name.
    """
    from metaadv_edu import metasgd

    device = as_device(device)
    init = list(alpha_init) if isinstance(alpha_init, tuple) else v.positive("alpha_init", alpha_init)
    config = {"n_tasks": SINE_META["n_tasks"], "k_support": v.integer("k_support", k_support),
              "outer_lr": SINE_META["outer_lr"], "iterations": v.integer("iterations", iterations),
              "alpha_init": init, "seed": 0}

    build = _seeded(models.SineRegressor, config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        lrs = metasgd.init_inner_lrs(model, tuple(init) if isinstance(init, list) else init, generator=g)
        history = metasgd.meta_train(
            model, lrs, _sine_sampler(config, device),
            iterations=config["iterations"], outer_lr=config["outer_lr"], generator=g,
            desc=f"Meta-SGD (K = {config['k_support']})")
        return {"meta_loss": history["meta_loss"][::10],
                "inner_lrs": {k: t.detach().cpu().tolist() for k, t in lrs.items()}}

    return load_or_train("sine-metasgd", config, build, train, device=device)


def learned_inner_lrs(record: dict, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The learned α of a :func:`sine_metasgd` record as tensors on the model's device."""
    return {name: torch.tensor(record["inner_lrs"][name], dtype=p.dtype, device=p.device)
            for name, p in model.named_parameters()}


# --------------------------------------------------------------------------------- GANs (03, 04)
def _mlp(sizes, act, last=None):
    from torch import nn

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


def ring_gan(lr_d: float = 1e-3, k_disc: int = 1, device=None, *, steps: int = 1200):
    """A GAN on the 2-D ring of 8 Gaussians (notebook 03): MLP generator 8-128-128-2 and
    discriminator 2-128-128-1, Adam (lr_g = 1e-3), non-saturating loss. Returns
    ``(ModuleDict(G, D), record)`` with the losses and 7 snapshots of 512 generated points."""
    from torch import nn

    from metaadv_edu import gan

    device = as_device(device)
    config = {"lr_d": v.positive("lr_d", lr_d), "k_disc": v.integer("k_disc", k_disc), "lr_g": 1e-3,
              "steps": v.integer("steps", steps), "batch_size": 128, "noise_dim": 8, "seed": 0,
              "ring": [8, 2.0, 0.05]}
    ring = data.ring_mixture(*config["ring"])

    build = _seeded(lambda: nn.ModuleDict({"G": _mlp([8, 128, 128, 2], nn.ReLU),
                              "D": _mlp([2, 128, 128, 1], lambda: nn.LeakyReLU(0.2))}), config["seed"])

    def train(pair):
        h = gan.train_gan(pair["G"], pair["D"], lambda n, g: ring.sample(n, generator=g),
                          noise_dim=config["noise_dim"], steps=config["steps"], k_disc=config["k_disc"],
                          lr_g=config["lr_g"], lr_d=config["lr_d"], batch_size=config["batch_size"],
                          generator_rng=torch.Generator().manual_seed(config["seed"]),
                          snapshot_every=config["steps"] // 6, desc=f"ring GAN (lr_D={lr_d:g}, k={k_disc})")
        return {"d_loss": h["d_loss"][::5], "g_loss": h["g_loss"][::5], "snapshot_steps": h["snapshot_steps"],
                "snapshots": h["snapshots"]}

    return load_or_train("ring-gan", config, build, train, device=device)


def digits_gan(device=None, *, steps: int = 3000):
    """A small fully connected GAN on the 8×8 digits (notebook 03): G 16-128-128-64 (sigmoid),
    D 64-128-1, non-saturating loss. Returns ``(ModuleDict(G, D), record)``."""
    from torch import nn

    from metaadv_edu import gan

    device = as_device(device)
    config = {"steps": v.integer("steps", steps), "lr": 1e-3, "batch_size": 64, "noise_dim": 16, "seed": 0}
    x, _ = data.load_digits("train", device=device)
    flat = x.flatten(1)

    build = _seeded(lambda: nn.ModuleDict({"G": _mlp([16, 128, 128, 64], nn.ReLU, nn.Sigmoid()),
                              "D": _mlp([64, 128, 1], lambda: nn.LeakyReLU(0.2))}), config["seed"])

    def train(pair):
        h = gan.train_gan(pair["G"], pair["D"],
                          lambda n, g: flat[torch.randint(len(flat), (n,), generator=g).to(device)],
                          noise_dim=config["noise_dim"], steps=config["steps"], lr_g=config["lr"],
                          lr_d=config["lr"], batch_size=config["batch_size"],
                          generator_rng=torch.Generator().manual_seed(config["seed"]), desc="digits GAN")
        return {"d_loss": h["d_loss"][::10], "g_loss": h["g_loss"][::10]}

    return load_or_train("digits-gan", config, build, train, device=device)


def adversarial_generator(epsilon: float = 0.2, lr_g: float = 1e-3, device=None, *, steps: int = 800):
    """The adversarial generator G(x, z) = clip(x + ε·tanh(·)) and its discriminator, trained against
    the fixed digits CNN (notebook 04). Returns ``(ModuleDict(G, D), record)``."""
    from torch import nn

    from metaadv_edu import gan

    device = as_device(device)
    config = {"epsilon": round(v.nonnegative("epsilon", epsilon), 6), "lr_g": v.positive("lr_g", lr_g),
              "lr_d": 1e-3, "gan_weight": 0.03, "steps": v.integer("steps", steps), "batch_size": 128,
              "seed": 0}
    target, _ = digits_cnn(device)
    x, y = data.load_digits("train", device=device)

    build = _seeded(lambda: nn.ModuleDict({"G": gan.PerturbationGenerator((1, 8, 8), epsilon),
                              "D": nn.Sequential(nn.Flatten(), _mlp([64, 64, 1], lambda: nn.LeakyReLU(0.2)))}),
                    config["seed"])

    def train(pair):
        h = gan.train_adversarial_generator(
            pair["G"], pair["D"], target, x, y, steps=config["steps"], lr_g=config["lr_g"],
            lr_d=config["lr_d"], batch_size=config["batch_size"], gan_weight=config["gan_weight"],
            rng=torch.Generator().manual_seed(config["seed"]))
        return {k: h[k][::5] for k in ("d_loss", "g_loss", "fooled")}

    return load_or_train("adversarial-generator", config, build, train, device=device)


def digits_cnn_generator_hardened(epsilon: float = 0.2, device=None, *, steps: int = 1500):
    """The digits CNN, starting from :func:`digits_cnn`, fine-tuned on clean and generated examples
    while a fresh adversarial generator keeps attacking it (notebook 04's AI-vs-AI defence)."""
    from metaadv_edu import gan

    device = as_device(device)
    config = {"epsilon": round(v.nonnegative("epsilon", epsilon), 6), "steps": v.integer("steps", steps),
              "seed": 0, "start": "digits-cnn"}
    x, y = data.load_digits("train", device=device)

    build = _seeded(lambda: models.TinyCNN(1, 10, width=16, image_size=8), config["seed"])

    def train(model):
        start, _ = digits_cnn(device)
        model.load_state_dict(start.state_dict())
        torch.manual_seed(config["seed"])
        h = gan.harden_with_generator(model, x, y, epsilon=epsilon, steps=config["steps"],
                                      rng=torch.Generator().manual_seed(config["seed"]))
        return {"fooled": h["fooled"][::5], "f_loss": h["f_loss"][::5]}

    return load_or_train("digits-cnn-generator-hardened", config, build, train, device=device)


# ------------------------------------------------------------------ notebook 08: robust few-shot covers
COVER_FEW_SHOT = {"n_way": 5, "k_shot": 5, "k_query": 5, "size": 16, "width": 8, "meta_batch": 4,
                  "inner_lr": 0.2, "steps": 2, "outer_lr": 3e-3, "iterations": 300}
"""5-way 5-shot tasks of 16×16 covers and the meta-training settings shared by notebook 08's learners."""


def _cover_sampler(device):
    c = COVER_FEW_SHOT
    return lambda g: covers.cover_tasks(c["meta_batch"], n_way=c["n_way"], k_shot=c["k_shot"],
                                        k_query=c["k_query"], size=c["size"], generator=g, device=device)


def _timed(train):
    """Wrap a ``train(model)`` so that its record also holds the wall-clock training time."""
    import time

    def timed(model):
        start = time.perf_counter()
        record = train(model) or {}
        return {**record, "train_seconds": time.perf_counter() - start}

    return timed


def cover_maml(epsilon: float = 0.0, device=None, *, attack_steps: int = 2):
    """A few-shot cover classifier meta-trained on the meta-train genres (notebook 08).

    ``epsilon = 0``: MAML on clean tasks. ``epsilon > 0``: adversarial querying, with the query sets
    attacked by PGD (``attack_steps`` steps) against the adapted weights. Returns (model, record).
    """
    from metaadv_edu import maml, robust_meta

    device = as_device(device)
    c = COVER_FEW_SHOT
    config = {**c, "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
              "attack_steps": v.integer("attack_steps", attack_steps), "seed": 0}
    build = _seeded(lambda: models.TinyCNN(3, c["n_way"], width=c["width"], image_size=c["size"]), config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        common = {"iterations": c["iterations"], "inner_lr": c["inner_lr"], "steps": c["steps"],
                  "outer_lr": c["outer_lr"], "generator": g}
        if epsilon == 0:
            h = maml.meta_train(model, _cover_sampler(device), desc="MAML on covers", **common)
        else:
            h = robust_meta.meta_train_adversarial(model, _cover_sampler(device), epsilon=epsilon,
                                                   attack_steps=attack_steps, **common)
        return {"meta_loss": h["meta_loss"]}

    name = "covers-maml" if epsilon == 0 else "covers-aq"
    return load_or_train(name, config, build, _timed(train), device=device)


def cover_pretrained(epsilon: float = 0.0, device=None, *, n_genres: int = 64):
    """A 64-way cover classifier on meta-train genres (standard, or PGD-trained when ``epsilon > 0``):
    the body that the fine-tuning baseline of notebook 08 starts from. Returns (model, record)."""
    from metaadv_edu import defenses

    device = as_device(device)
    c = COVER_FEW_SHOT
    config = {"epsilon": round(v.nonnegative("epsilon", epsilon), 6),
              "n_genres": v.integer("n_genres", n_genres, low=2), "per_genre": 60, "size": c["size"],
              "width": c["width"], "epochs": 8, "lr": 3e-3, "pgd_steps": 3,
              "seed": 0}
    build = _seeded(lambda: models.TinyCNN(3, n_genres, width=c["width"], image_size=c["size"]), config["seed"])

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        genres = covers.sample_genres(n_genres, "meta-train", generator=g)
        x, y = covers.sample_covers(genres, config["per_genre"], generator=g, size=c["size"], device=device)
        h = defenses.adversarial_training(
            model, x, y, method="pgd" if epsilon > 0 else "standard", epsilon=epsilon,
            pgd_steps=config["pgd_steps"], epochs=config["epochs"], lr=config["lr"],
            generator=torch.Generator().manual_seed(config["seed"]))
        return {"loss": h["loss"]}

    return load_or_train("covers-pretrained" if epsilon == 0 else "covers-pretrained-pgd", config, build,
                         _timed(train), device=device)


def cover_task_generator(target_epsilon: float = 0.0, epsilon: float = 8 / 255, device=None, *,
                         iterations: int = 150):
    """An adversarial generator trained against :func:`cover_maml` (``target_epsilon``) *after* it
    adapts to each task: one forward pass attacks any new task's classifier. Returns (G, record)."""
    from metaadv_edu import gan, robust_meta

    device = as_device(device)
    c = COVER_FEW_SHOT
    config = {"target_epsilon": round(v.nonnegative("target_epsilon", target_epsilon), 6),
              "epsilon": round(v.nonnegative("epsilon", epsilon), 6), "hidden": 128, "lr": 1e-3,
              "iterations": v.integer("iterations", iterations), "seed": 0}
    target, _ = cover_maml(target_epsilon, device)
    build = _seeded(lambda: gan.PerturbationGenerator((3, c["size"], c["size"]), epsilon, hidden=config["hidden"]),
                    config["seed"])

    def train(perturber):
        h = robust_meta.train_task_generator(
            perturber, target, _cover_sampler(device), inner_lr=c["inner_lr"], steps=c["steps"],
            iterations=config["iterations"], lr=config["lr"], generator=torch.Generator().manual_seed(config["seed"]))
        return {"fooled": h["fooled"]}

    return load_or_train("covers-task-generator", config, build, _timed(train), device=device)


DETECTION = {"epsilon": 32 / 255, "train": ("FGSM 16/255", "FGSM 32/255", "PGD 32/255"),
             "held_out": ("generator 32/255", "noise 32/255"), "k_shot": 5, "k_query": 10, "meta_batch": 8,
             "inner_lr": 0.1, "steps": 2, "iterations": 300, "outer_lr": 3e-3}
"""Notebook 08, part B: the perturbations used as tasks, and the detector's meta-training settings."""

_POOL_SPECS = {"FGSM 16/255": ("fgsm", 16 / 255), "FGSM 32/255": ("fgsm", 32 / 255), "PGD 32/255": ("pgd", 32 / 255),
               "generator 32/255": ("generator", 32 / 255), "noise 32/255": ("noise", 32 / 255)}
_pool_memo: dict = {}


def cover_attack_pools(device=None) -> dict[str, dict[str, torch.Tensor]]:
    """Perturbed query covers for part B of notebook 08, ``{"meta-train"|"meta-test": {name: covers}}``.

    Each pool holds the query covers of 40 tasks (1,000 covers) and every kind of perturbation of
    them, made against :func:`cover_maml` adapted to each task; ``"clean"`` holds the originals. The
    generator is :func:`cover_task_generator` with its budget raised to 32/255 (ε multiplies its tanh
    output). Deterministic; computed once per device and process.
    """
    import copy

    from metaadv_edu import robust_meta

    device = as_device(device)
    if device in _pool_memo:
        return _pool_memo[device]
    c = COVER_FEW_SHOT
    victim, _ = cover_maml(0.0, device)
    perturber, _ = cover_task_generator(0.0, 8 / 255, device)
    perturber = copy.deepcopy(perturber)
    perturber.epsilon = DETECTION["epsilon"]
    pools = {}
    for seed, pool in ((5, "meta-train"), (6, "meta-test")):
        tasks = covers.cover_tasks(40, n_way=c["n_way"], k_shot=c["k_shot"], k_query=c["k_query"], pool=pool,
                                   size=c["size"], generator=torch.Generator().manual_seed(seed), device=device)
        out = {}
        for name, (kind, eps) in _POOL_SPECS.items():
            clean, out[name] = robust_meta.perturbation_pool(
                victim, tasks, kind=kind, epsilon=eps, inner_lr=c["inner_lr"], steps=c["steps"], perturber=perturber,
                generator=torch.Generator().manual_seed(7))
        out["clean"] = clean
        pools[pool] = out
    _pool_memo[device] = pools
    return pools


def cover_detector(kind: str = "meta", device=None):
    """The perturbation detector of notebook 08, part B, trained on the ``DETECTION["train"]`` pools:
    ``"meta"`` meta-learns an initialisation with MAML over detection tasks, ``"joint"`` trains one
    detector on all of them together. Returns (model, record)."""
    from metaadv_edu import maml, robust_meta

    device = as_device(device)
    v.choice("kind", kind, ("meta", "joint"))
    c = COVER_FEW_SHOT
    config = {**DETECTION, "kind": kind, "width": c["width"], "size": c["size"], "joint_epochs": 8, "seed": 0}
    build = _seeded(lambda: models.TinyCNN(3, 2, width=c["width"], image_size=c["size"]), config["seed"])

    def train(model):
        pools = cover_attack_pools(device)["meta-train"]
        perturbed = [pools[n] for n in DETECTION["train"]]
        g = torch.Generator().manual_seed(config["seed"])
        if kind == "meta":
            def sample(gen):
                return robust_meta.detection_tasks(pools["clean"], perturbed, DETECTION["meta_batch"],
                                                   k_shot=DETECTION["k_shot"], k_query=DETECTION["k_query"],
                                                   generator=gen)
            h = maml.meta_train(model, sample, iterations=DETECTION["iterations"], inner_lr=DETECTION["inner_lr"],
                                steps=DETECTION["steps"], outer_lr=DETECTION["outer_lr"], generator=g,
                                desc="meta-learning a detector")
            return {"meta_loss": h["meta_loss"]}
        clean = pools["clean"]
        x = torch.cat([clean] * len(perturbed) + perturbed)
        y = torch.cat([torch.zeros(len(clean) * len(perturbed)), torch.ones(len(clean) * len(perturbed))]).long()
        h = training.train_classifier(model, x, y.to(x.device), epochs=config["joint_epochs"], lr=3e-3,
                                      generator=g, desc="joint detector")
        return {"loss": h["loss"]}

    return load_or_train(f"cover-detector-{kind}", config, build, _timed(train), device=device)
