"""The trained models the notebooks share, each trained once and then loaded from the cache.

Every function here is a recipe: a fixed architecture, data and training configuration, passed
to :func:`metaadv_edu.cache.load_or_train`. The configuration is part of the cache key, so editing
a recipe trains a new model instead of loading an old one.
"""

from __future__ import annotations

import torch

from metaadv_edu import covers, data, models, training
from metaadv_edu import _validate as v
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train

__all__ = [
    "digits_cnn", "digits_cnn_adversarial", "digits_logreg", "library_cnn", "library_cnn_adversarial",
    "learned_inner_lrs", "sine_maml", "sine_metasgd", "sine_pretrained", "sine_reptile",
]


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

    def build():
        torch.manual_seed(config["seed"])
        return models.LogisticRegression(64, 10)

    def train(model):
        return _fit(model, *data.load_digits("train", device=device),
                    data.load_digits("test", device=device), epochs=config["epochs"],
                    lr=config["lr"], desc="logistic regression")

    return load_or_train("digits-logreg", config, build, train, device=device)


def digits_cnn(device=None):
    """The small CNN on the 8×8 digits (notebooks 00–04). Returns (model, record)."""
    device = as_device(device)
    config = {"width": 16, "epochs": 30, "lr": 3e-3, "batch_size": 64, "seed": 0}

    def build():
        torch.manual_seed(config["seed"])
        return models.TinyCNN(1, 10, width=config["width"], image_size=8)

    def train(model):
        return _fit(model, *data.load_digits("train", device=device),
                    data.load_digits("test", device=device), epochs=config["epochs"],
                    lr=config["lr"], desc="digits CNN")

    return load_or_train("digits-cnn", config, build, train, device=device)


def library_cnn(device=None):
    """The library's cover classifier: the small CNN on the ten named genres (32×32 covers)."""
    device = as_device(device)
    config = {"width": 16, "epochs": 6, "lr": 3e-3, "batch_size": 64, "seed": 0, "size": 32}

    def build():
        torch.manual_seed(config["seed"])
        return models.TinyCNN(3, len(covers.GENRE_NAMES), width=config["width"], image_size=32)

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

    def build():
        torch.manual_seed(config["seed"])
        return models.TinyCNN(1, 10, width=config["width"], image_size=8)

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

    def build():
        torch.manual_seed(config["seed"])
        return models.TinyCNN(3, len(covers.GENRE_NAMES), width=config["width"], image_size=32)

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

    def build():
        torch.manual_seed(config["seed"])
        return models.SineRegressor()

    def train(model):
        history = maml.meta_train(
            model, lambda g: data.sine_tasks(config["n_tasks"], config["k_support"], generator=g,
                                             device=device),
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

    def build():
        torch.manual_seed(config["seed"])
        return models.SineRegressor()

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        opt = torch.optim.Adam(model.parameters(), lr=config["outer_lr"])
        losses = []
        for _ in range(config["iterations"]):
            t = data.sine_tasks(config["n_tasks"], config["k_support"], generator=g, device=device)
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

    def build():
        torch.manual_seed(config["seed"])
        return models.SineRegressor()

    def train(model):
        history = reptile.train(
            model, lambda g: data.sine_tasks(config["n_tasks"], config["k_support"], generator=g,
                                             device=device),
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

    def build():
        torch.manual_seed(config["seed"])
        return models.SineRegressor()

    def train(model):
        g = torch.Generator().manual_seed(config["seed"])
        lrs = metasgd.init_inner_lrs(model, tuple(init) if isinstance(init, list) else init, generator=g)
        history = metasgd.meta_train(
            model, lrs, lambda gen: data.sine_tasks(config["n_tasks"], config["k_support"],
                                                    generator=gen, device=device),
            iterations=config["iterations"], outer_lr=config["outer_lr"], generator=g,
            desc=f"Meta-SGD (K = {config['k_support']})")
        return {"meta_loss": history["meta_loss"][::10],
                "inner_lrs": {k: t.detach().cpu().tolist() for k, t in lrs.items()}}

    return load_or_train("sine-metasgd", config, build, train, device=device)


def learned_inner_lrs(record: dict, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The learned α of a :func:`sine_metasgd` record as tensors on the model's device."""
    return {name: torch.tensor(record["inner_lrs"][name], dtype=p.dtype, device=p.device)
            for name, p in model.named_parameters()}
