"""Notebook 00 · Start here: the models every later chapter reuses, and the first explorer."""

from __future__ import annotations

import torch

from metaadv_edu import attacks, cache, covers, data, models, panels
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.plotting import PALETTE, image_hwc, probability_bars, series, show_image
from metaadv_edu.widgets import Explorer, epsilon_slider, float_slider

__all__ = [
    "descent_verdict",
    "digits_cnn",
    "first_look_explorer",
    "library_cnn",
    "random_signs",
    "random_vs_fgsm",
    "same_seed_same_draw",
]


def digits_cnn(device=None):
    """The small CNN on the 8×8 digits (notebooks 00–04). Returns (model, record)."""
    device = as_device(device)
    config = {"width": 16, "epochs": 30, "lr": 3e-3, "batch_size": 64, "seed": 0}

    build = cache.seeded(lambda: models.TinyCNN(1, 10, width=config["width"], image_size=8), config["seed"])

    def train(model):
        return cache.fit_classifier(
            model,
            *data.load_digits("train", device=device),
            data.load_digits("test", device=device),
            epochs=config["epochs"],
            lr=config["lr"],
            desc="digits CNN",
        )

    return load_or_train("digits-cnn", config, build, train, device=device)


def library_cnn(device=None):
    """The library's cover classifier: the small CNN on the ten named genres (32×32 covers)."""
    device = as_device(device)
    config = {"width": 16, "epochs": 6, "lr": 3e-3, "batch_size": 64, "seed": 0, "size": 32}

    build = cache.seeded(
        lambda: models.TinyCNN(3, len(covers.GENRE_NAMES), width=config["width"], image_size=32), config["seed"]
    )

    def train(model):
        return cache.fit_classifier(
            model,
            *covers.library_dataset("train", device=device),
            covers.library_dataset("test", device=device),
            epochs=config["epochs"],
            lr=config["lr"],
            desc="cover classifier",
        )

    return load_or_train("library-cnn", config, build, train, device=device)


def first_look_explorer(
    model: torch.nn.Module,
    digit: torch.Tensor,
    label: int,
    *,
    x_eval: torch.Tensor | None = None,
    y_eval: torch.Tensor | None = None,
    curvature: float = 10.0,
    seed: int = 0,
) -> Explorer:
    """Notebook 00's demo: ε moves every pixel of one digit by ±ε in a fixed *random* direction, and α
    drives 12 steps of gradient descent on the parabola f(w) = ½λw², which converge only while |1 − αλ| < 1.

    With ``x_eval, y_eval`` the caption also gives the accuracy on them under random ±ε and under FGSM at
    the slider's ε, the same numbers as :func:`random_vs_fgsm`. FGSM's direction sign(∇ₓL) is taken at the
    clean inputs and does not depend on ε, so it is computed once: a slider move costs two forward passes.
    """
    if (x_eval is None) != (y_eval is None):
        raise ValueError("x_eval and y_eval must be given together (or neither)")
    random_sign = random_signs(digit.shape, seed).to(digit.device)
    if x_eval is not None:
        eval_sign = random_signs(x_eval.shape, seed).to(x_eval.device)
        fgsm_sign = attacks.input_gradient(model, x_eval, y_eval)[0].sign()
    grid = torch.linspace(-3, 3, 200)
    artists: dict = {}

    def setup(fig):
        ax_img, ax_prob, ax_gd = fig.subplots(1, 3, width_ratios=[1, 1.4, 1.6])
        show_image(digit, ax_img, title=" ")
        probability_bars(torch.zeros(10), ax_prob, highlight=label, title="CNN's class probabilities")
        ax_gd.plot(grid, curvature / 2 * grid**2, color=PALETTE["grey"], lw=2, label="f(w) = ½λw²")
        (path,) = ax_gd.plot([], [], **series(1).line(markersize=4), label="gradient descent")
        ax_gd.set_xlim(-3.3, 3.3)
        ax_gd.set_ylim(-2, 50)
        ax_gd.set(xlabel="weight w", ylabel="loss f(w)")
        ax_gd.set_title(" ")
        artists.update(image=ax_img.images[0], bars=ax_prob.patches, path=path, ax_img=ax_img, ax_gd=ax_gd)
        # What draw changes is animated: the kept picture (axes, ticks, labels) is pasted back on a move. The
        # frames the image and a bar at p = 1 touch are animated too, so that they stay drawn on top.
        spines = [*ax_img.spines.values(), *ax_prob.spines.values()]
        for artist in (ax_img.images[0], *ax_prob.patches, path, ax_img.title, ax_gd.title, *spines):
            artist.set_animated(True)

    def draw(fig, *, epsilon, inner_lr):
        noisy = (digit + epsilon * random_sign).clamp(0, 1)
        probs = panels.probabilities(model, noisy[None])[0]
        artists["image"].set_data(image_hwc(noisy))
        artists["ax_img"].set_title(f"digit {label} + random ±{epsilon:.2f}")
        for bar, p in zip(artists["bars"], probs.tolist()):
            bar.set_height(p)
        factor = 1 - inner_lr * curvature
        ws = (2.0 * factor ** torch.arange(13, dtype=torch.float64)).clamp(-3, 3)
        artists["path"].set_data(ws, curvature / 2 * ws**2)
        artists["ax_gd"].set_title(f"12 steps of gradient descent, α = {inner_lr:.3g}")
        caption = f"prediction: <b>{int(probs.argmax())}</b> ({probs.max():.0%})"
        if x_eval is not None:
            moved = torch.cat([x_eval + epsilon * eval_sign, x_eval + epsilon * fgsm_sign]).clamp(0, 1)
            with torch.no_grad():  # one forward pass for both attacks
                correct = (model(moved).argmax(1) == y_eval.repeat(2)).float().view(2, -1)
            random_acc, fgsm_acc = correct.mean(1)
            caption += f" · {len(x_eval)} test digits correct: random ±ε {random_acc:.1%}, FGSM {fgsm_acc:.1%}"
        return f"{caption} · gradient descent {descent_verdict(factor)} (|1 − αλ| = {abs(factor):.3f})"

    sliders = {
        "epsilon": epsilon_slider(0.1, max=0.5),
        "inner_lr": float_slider("α — inner learning rate", 0.05, 0.01, 0.3, 0.01),
    }
    return Explorer(draw, sliders, setup=setup, title="ε and α: a first look", figsize=(10, 3), blit=True)


def descent_verdict(factor: float, tol: float = 1e-9) -> str:
    """What gradient descent on f(w) = ½λw² does when each step multiplies w by ``factor`` = 1 − αλ
    (notebook 00): it converges for |factor| < 1, keeps its size for ever at |factor| = 1 (within ``tol``,
    so that a slider's α = 0.2 with λ = 10 counts as exactly −1) and diverges for |factor| > 1."""
    if abs(factor) < 1 - tol:
        return "converges"
    if abs(factor - 1) <= tol:
        return "stays where it starts (α = 0)"
    if abs(factor) <= 1 + tol:
        return "oscillates for ever (neither converges nor diverges)"
    return "diverges"


def random_vs_fgsm(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, seed: int = 0
) -> tuple[float, float]:
    """Accuracy of ``model`` when every pixel moves by ±ε in a random direction (seeded), and under FGSM
    (notebook 01) — the direction that is worst for the loss's *linear approximation*, not the worst
    point of the ball (iterated attacks find worse ones) — both clamped to [0, 1]."""
    noisy = (x + epsilon * random_signs(x.shape, seed).to(x.device)).clamp(0, 1)
    with torch.no_grad():
        random_acc = float((model(noisy).argmax(1) == y).float().mean())
    return random_acc, attacks.robust_accuracy(model, x, y, [epsilon])[0]


def random_signs(shape: torch.Size | tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A tensor of ``shape`` whose entries are −1 or +1 with probability ½ each, from a generator seeded with
    ``seed`` (on the CPU): the random direction of notebook 00's explorer and of :func:`random_vs_fgsm`."""
    coin = torch.randint(0, 2, tuple(shape), generator=torch.Generator().manual_seed(seed))
    return (2 * coin - 1).float()


def same_seed_same_draw(draw, seeds=(0, 1)) -> bool:
    """The seeding check of notebook 00: ``draw(generator)`` returns a tensor or tuple of tensors; the same
    seed must give the same draw, and a different seed a different one (a draw that ignores its generator
    and uses the global random state fails the first, a constant one the second)."""

    def flat(out):
        items = out if isinstance(out, (tuple, list)) else (out,)
        return [t for item in items for t in (item if isinstance(item, (tuple, list)) else (item,))]

    first, again, other = (flat(draw(torch.Generator().manual_seed(s))) for s in (seeds[0], seeds[0], seeds[1]))
    same = all(torch.equal(a, b) for a, b in zip(first, again))
    differs = any(not torch.equal(a, b) for a, b in zip(first, other))
    return same and differs
