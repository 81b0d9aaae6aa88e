"""Notebook 04 · The adversarial generator (library: :mod:`metaadv_edu.gan`): models, explorer, exercise."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import attacks, cache, data, gan, grading, models, panels, stats
from metaadv_edu._validate import as_device
from metaadv_edu.cache import load_or_train
from metaadv_edu.chapters.start_here import digits_cnn
from metaadv_edu.widgets import Explorer, selection_slider

__all__ = [
    "POINTS",
    "TARGETS",
    "adversarial_generator",
    "budget_holds",
    "check_bounded_perturbation",
    "check_generator_loss",
    "digits_cnn_generator_hardened",
    "fooled_by",
    "frozen_wrong_sign",
    "generator_explorer",
    "generator_report",
    "saturation_report",
]

#: Gradebook weight of each exercise (``metaadv-edu grade --csv``), in the order the notebook asks them.
POINTS = {"bounded perturbation": 1, "generator loss": 2}


TARGETS = ("standard", "hardened")


def adversarial_generator(
    epsilon: float = 0.2,
    lr_g: float = 1e-3,
    device=None,
    *,
    steps: int = 800,
    target: str = "standard",
    seed: int = 0,
):
    """The adversarial generator G(x, z) = clip(x + ε·tanh(·)) and its discriminator, trained against a
    fixed classifier (notebook 04): ``target="standard"`` is the digits CNN, ``"hardened"`` the one of
    :func:`digits_cnn_generator_hardened` at the same ε. ``seed`` sets the initial weights, the batches and
    the noise. Returns ``(ModuleDict(G, D), record)``."""

    device = as_device(device)
    v.choice("target", target, TARGETS)
    config = {
        "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
        "lr_g": v.positive("lr_g", lr_g),
        "lr_d": 1e-3,
        "gan_weight": 0.03,
        "steps": v.integer("steps", steps),
        "batch_size": 128,
        "seed": v.integer("seed", seed, low=0),
    }
    if target == "hardened":  # the key of the generators against the standard CNN stays as it was
        config["target"] = "digits-cnn-generator-hardened"
        target_model, _ = digits_cnn_generator_hardened(epsilon, device)
    else:
        target_model, _ = digits_cnn(device)
    x, y = data.load_digits("train", device=device)

    build = cache.seeded(
        lambda: nn.ModuleDict(
            {
                "G": gan.PerturbationGenerator((1, 8, 8), epsilon),
                "D": nn.Sequential(nn.Flatten(), models.mlp([64, 64, 1], lambda: nn.LeakyReLU(0.2))),
            }
        ),
        config["seed"],
    )

    def train(pair):
        h = gan.train_adversarial_generator(
            pair["G"],
            pair["D"],
            target_model,
            x,
            y,
            steps=config["steps"],
            lr_g=config["lr_g"],
            lr_d=config["lr_d"],
            batch_size=config["batch_size"],
            gan_weight=config["gan_weight"],
            rng=torch.Generator().manual_seed(config["seed"]),
        )
        return {k: h[k][::5] for k in ("d_loss", "g_loss", "fooled")}

    return load_or_train("adversarial-generator", config, build, train, device=device)


def digits_cnn_generator_hardened(epsilon: float = 0.2, device=None, *, steps: int = 1500):
    """The digits CNN, starting from :func:`digits_cnn`, fine-tuned on clean and generated examples
    while a fresh adversarial generator keeps attacking it (notebook 04's AI-vs-AI defence)."""
    device = as_device(device)
    config = {
        "epsilon": round(v.nonnegative("epsilon", epsilon), 6),
        "steps": v.integer("steps", steps),
        "seed": 0,
        "start": "digits-cnn",
    }
    x, y = data.load_digits("train", device=device)

    build = cache.seeded(lambda: models.TinyCNN(1, 10, width=16, image_size=8), config["seed"])

    def train(model):
        start, _ = digits_cnn(device)
        model.load_state_dict(start.state_dict())
        torch.manual_seed(config["seed"])
        h = gan.harden_with_generator(
            model, x, y, epsilon=epsilon, steps=config["steps"], rng=torch.Generator().manual_seed(config["seed"])
        )
        return {"fooled": h["fooled"][::5], "f_loss": h["f_loss"][::5]}

    return load_or_train("digits-cnn-generator-hardened", config, build, train, device=device)


def generator_explorer(
    pairs: dict[tuple[float, float], torch.nn.Module], classifier, x_show, y_show, x_eval, y_eval
) -> Explorer:
    """Cached adversarial generators on a grid of ε × generator learning rate: a slider move runs one
    forward pass of the chosen generator (with one fixed noise draw), never a training step."""
    epsilons = sorted({e for e, _ in pairs})
    lrs = sorted({lr for _, lr in pairs})
    labels = [str(i) for i in range(10)]
    rows: list = []
    p_clean = panels.probabilities(classifier, x_show)

    def setup(fig):
        rows.append(panels.AttackPanels(fig, x_show, labels))
        rows[0].animate()

    def draw(fig, *, epsilon, lr_g):
        pair = pairs[(epsilon, lr_g)]
        g = torch.Generator().manual_seed(0)  # one fixed noise draw: the trained generators ignore z
        with torch.no_grad():
            z = torch.randn(len(x_show), pair["G"].noise_dim, generator=g).to(x_show.device)
            x_adv = pair["G"](x_show, z)
            score = torch.sigmoid(pair["D"](x_adv)).view(-1)
            z_eval = torch.randn(len(x_eval), pair["G"].noise_dim, generator=g).to(x_eval.device)
            adv_eval = pair["G"](x_eval, z_eval)
            acc = float((classifier(adv_eval).argmax(1) == y_eval).float().mean())
            d_real = float(torch.sigmoid(pair["D"](x_eval)).mean())
            d_fake = float(torch.sigmoid(pair["D"](adv_eval)).mean())
        rows[0].show(x_show, x_adv, y_show, p_clean, panels.probabilities(classifier, x_adv), epsilon)
        for i, (ax_delta, ax_adv) in enumerate(rows[0].axes[:, 1:3]):
            ax_delta.set_title("δ = G(x, z) − x")
            ax_adv.set_title(f"{ax_adv.get_title()}\nD(x_adv) = {score[i]:.2f} (1 = real)")
        return (
            f"generator ε = {epsilon:g}, lr_G = {lr_g:g}: classifier accuracy on {len(x_eval)} generated "
            f"examples <b>{acc:.1%}</b>; discriminator's mean score: real {d_real:.2f}, generated {d_fake:.2f}"
        )

    sliders = {
        "epsilon": selection_slider("ε — perturbation budget", epsilons),
        "lr_g": selection_slider("generator learning rate", lrs, lrs[-1]),
    }
    return Explorer(
        draw,
        sliders,
        setup=setup,
        title="The adversarial generator (cached models)",
        figsize=(9, 1.9 * len(x_show) + 0.3),
        dpi=72,
        blit=True,
    )


def check_bounded_perturbation(my_output: Callable) -> bool:
    """Grade ``my_output(x, h, epsilon) -> x_adv``: the adversarial generator's output layer
    clip(x + ε·tanh(h), 0, 1), which keeps ‖x_adv − x‖∞ ≤ ε by construction, and its gradient to h,
    ε·(1 − tanh²h) where the clip is inactive and 0 where it is active."""

    def body() -> str:
        for device in grading.devices():
            for seed, eps in ((0, 0.1), (1, 0.3), (2, 0.0)):
                g = torch.Generator().manual_seed(seed)
                x = torch.rand(5, 1, 4, 4, generator=g).to(device)
                h = (3 * torch.randn(5, 1, 4, 4, generator=g)).to(device).requires_grad_(True)
                with torch.no_grad():
                    raw = x + eps * torch.tanh(h)
                    ref = raw.clamp(0, 1)
                    th = torch.tanh(h)
                out = grading.call(my_output, x, h, eps)
                value = grading.tensor_like(out, x, "x_adv")
                if grading.close(value, ref):
                    if eps > 0:
                        _check_gradient_to_h(out, h, eps * (1 - th**2) * ((raw > 0) & (raw < 1)))
                    continue
                if grading.close(value, raw):
                    raise grading.Stop("clip the result to [0, 1]: it must stay a valid image")
                if grading.close(value, (x + (x + th).clamp(x - eps, x + eps) - x).clamp(0, 1)) or grading.close(
                    value, (x + h.detach().clamp(-eps, eps)).clamp(0, 1)
                ):
                    raise grading.Stop(
                        "bounded, but clamping h kills the gradient wherever the bound is active; "
                        "ε·tanh(h) is smooth and still strictly inside the ball"
                    )
                if grading.close(value, (x + th).clamp(0, 1)):
                    raise grading.Stop("scale the tanh by ε: tanh alone lies in (−1, 1)")
                raise grading.Stop("not clip(x + ε·tanh(h), 0, 1)")
        return "clip(x + ε·tanh(h), 0, 1): bounded, with the gradient ε·tanh′(h) to h where the clip is inactive"

    return grading.run("bounded perturbation", body)


def _check_gradient_to_h(out: torch.Tensor, h: torch.Tensor, expected: torch.Tensor) -> None:
    """Stop unless ``out`` carries the gradient ``expected`` = ∂(Σ out)/∂h back to ``h``."""
    no_gradient = (
        "your result does not carry a gradient to h: build it from torch operations on h "
        "(no .detach(), no NumPy), so the generator can learn through this layer"
    )
    if not out.requires_grad:
        raise grading.Stop(no_gradient)
    (grad,) = torch.autograd.grad(out.sum(), h, allow_unused=True)
    if grad is None:
        raise grading.Stop(no_gradient)
    if not grading.close(grad, expected):
        raise grading.Stop(
            "the values are right but the gradient to h is not ε·(1 − tanh²h) where the clip is inactive "
            "and 0 where it is active"
        )


def check_generator_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(logits, y, d_logits, gan_weight) -> loss``: AdvGAN's generator loss with κ = 0,
    mean max(Z_y − max_{j≠y} Z_j, 0) + λ_GAN·(−mean log D(x_adv)), from the target classifier's logits
    Z = f(x_adv), the true labels and the discriminator's logits on x_adv."""

    def body() -> str:
        for device in grading.devices():
            for seed, scale, weight in ((0, 2.0, 0.5), (1, 30.0, 0.03), (2, 5.0, 1.0)):
                g = torch.Generator().manual_seed(seed)
                logits = (scale * torch.randn(12, 5, generator=g)).to(device)
                y = torch.randint(5, (12,), generator=g).to(device)
                d = (scale * torch.randn(12, 1, generator=g)).to(device)
                d[0] = -200.0  # a generated input the discriminator is sure about
                logits.requires_grad_(True)
                d.requires_grad_(True)
                true = logits.gather(1, y[:, None])[:, 0]
                one_hot = F.one_hot(y, 5).bool()
                other = logits.masked_fill(one_hot, float("-inf")).amax(1)
                fool, real = gan.margin_loss(logits, y), gan.generator_loss(d, "non-saturating")
                ref = fool + weight * real
                ref_grads = torch.autograd.grad(ref, (logits, d), retain_graph=True)
                out = grading.call(my_loss, logits, y, d, weight)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise grading.Stop("return the loss as a single-number tensor (means over the batch)")
                value = out.detach().reshape(()).to(ref.dtype)
                if grading.close(value, ref.detach(), 1e-4):
                    _check_loss_gradients(out, logits, d, ref_grads)
                    continue
                if not torch.isfinite(value):
                    raise grading.Stop(
                        "not finite for a confident discriminator: log(sigmoid(s)) underflows to "
                        "log 0; use F.logsigmoid"
                    )
                grading.first_mistake(
                    value,
                    [
                        (
                            fool - weight * torch.log(torch.sigmoid(d) + 1e-8).mean(),
                            "log(σ(s) + 1e-8) flattens at "
                            "log(1e-8) ≈ −18.4 where D is confident, so G gets no gradient there: use F.logsigmoid",
                        ),
                        (
                            fool + weight * F.logsigmoid(-d).mean(),
                            "that realism term is the saturating log(1 − D); "
                            "the generator minimises the non-saturating −log D(x_adv)",
                        ),
                        (
                            fool + weight * F.logsigmoid(d).mean(),
                            "the realism term has the wrong sign: G minimises −log D(x_adv), "
                            "which raises D on its outputs",
                        ),
                        (
                            (true - other).mean() + weight * real,
                            "without the floor max(·, −κ) with κ = 0 the loss keeps "
                            "pushing examples f already gets wrong; clamp the margin at 0",
                        ),
                        (
                            torch.clamp(true - logits.amax(1), min=0).mean() + weight * real,
                            "the max runs over the *other* classes j ≠ y (mask the true class out)",
                        ),
                        (
                            -F.cross_entropy(logits, y) + weight * real,
                            "AdvGAN fools f with the Carlini–Wagner margin "
                            "Z_y − max_{j≠y} Z_j, not by raising the cross-entropy",
                        ),
                        (
                            torch.clamp(other - true, min=0).mean() + weight * real,
                            "the margin has the wrong sign: minimising it must push Z_y *below* the best other logit",
                        ),
                        (fool + real, "scale the realism term by gan_weight (λ_GAN)"),
                        (
                            torch.clamp(true - logits.masked_fill(one_hot, 0.0).amax(1), min=0).mean() + weight * real,
                            "zeroing the true logit does not mask it out: where every other logit is negative, "
                            "the max picks your 0; fill the true class with −inf",
                        ),
                    ],
                    1e-4,
                )
                raise grading.Stop("not the margin term plus λ_GAN times the non-saturating realism term")
        return "fooling margin floored at 0, plus λ_GAN·(−log D), stable for confident logits, gradients alive"

    return grading.run("generator loss", body)


def _check_loss_gradients(out: torch.Tensor, logits: torch.Tensor, d: torch.Tensor, ref_grads) -> None:
    """Stop unless the learner's loss ``out`` carries the reference gradients back to ``logits`` and ``d``."""
    grads = (None, None)
    if out.requires_grad:
        grads = torch.autograd.grad(out.reshape(()), (logits, d), allow_unused=True)
    for name, grad, ref in zip(("logits", "d_logits"), grads, ref_grads):
        if grad is None:
            raise grading.Stop(
                f"your loss does not carry a gradient to {name}: the generator learns through it, "
                "so build it from torch operations (no .detach(), no .item())"
            )
        if not grading.close(grad.to(ref.dtype), ref, 1e-4):
            raise grading.Stop(
                f"the value is right but the gradient to {name} is not the reference's "
                "(a clamp or a constant that hides the gradient?)"
            )


# ------------------------------------------------------------------ measurements (notebook 04, §3–§4)
def budget_holds(generator_net, x: torch.Tensor, epsilon: float, *, seed: int = 1) -> tuple[float, bool]:
    """The check of §3: ``(max |G(x, z) − x|, whether every generated input satisfies ‖δ‖∞ ≤ ε)`` for fresh
    noise z; a generator that scales its tanh by more than ε, or clips nothing, fails it."""
    noise_dim = getattr(generator_net, "noise_dim", 0)
    z = torch.randn(len(x), noise_dim, generator=torch.Generator().manual_seed(seed)).to(x.device)
    with torch.no_grad():
        delta = generator_net(x, z) - x
    worst = float(delta.abs().amax())
    valid = bool(((x + delta) >= 0).all() and ((x + delta) <= 1).all())
    return worst, bool((delta.abs() <= epsilon + 1e-6).all()) and valid


def generator_report(
    pair, classifier, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, n_noise: int = 8, seed: int = 0
) -> dict:
    """What a cached generator does, measured on ``(x, y)``:

    * ``fooled_generator``, ``fooled_random``, ``fooled_fgsm``: share of inputs the classifier gets wrong
      after the generator, after random ±ε signs (clamped), and after FGSM, all at the same ε;
    * ``generator_minus_random`` and ``fgsm_minus_generator``: the paired differences (generator − random
      signs, FGSM − generator) of those per-input outcomes, each a :class:`~metaadv_edu.stats.PairedDifference`;
    * ``decision_changes_over_z``: share of inputs whose predicted class is not the same for all
      ``n_noise`` noise draws;
    * ``d_real``, ``d_fake``, ``d_fake_max``: the discriminator's mean D(x), mean and largest D(G(x, z)),
      and ``d_fooled`` the share of generated inputs it calls real (D > ½);
    * ``z_spread``: the per-pixel standard deviation of G(x, z) over ``n_noise`` noise draws, averaged
      over pixels and inputs (0 means the generator ignores z) and ``z_spread_max`` its largest value."""
    G, D = pair["G"], pair["D"]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        zs = torch.randn(n_noise, len(x), G.noise_dim, generator=gen).to(x.device)
        outs = torch.stack([G(x, z) for z in zs])
        coin = torch.randint(0, 2, x.shape, generator=gen).to(x.device)
        noisy = (x + epsilon * (2 * coin - 1)).clamp(0, 1)
        d_fake = torch.sigmoid(D(outs[0])).view(-1)
        spread = outs.std(0)
        predictions = torch.stack([classifier(out).argmax(1) for out in outs])
        wrong_generator = classifier(outs[0]).argmax(1) != y
        wrong_random = classifier(noisy).argmax(1) != y
        report = {
            "fooled_generator": float(wrong_generator.float().mean()),
            "fooled_random": float(wrong_random.float().mean()),
            "generator_minus_random": stats.paired_difference(wrong_generator.float(), wrong_random.float()),
            "decision_changes_over_z": float((predictions != predictions[0]).any(0).float().mean()),
            "d_real": float(torch.sigmoid(D(x)).mean()),
            "d_fake": float(d_fake.mean()),
            "d_fake_max": float(d_fake.max()),
            "d_fooled": float((d_fake > 0.5).float().mean()),
            "z_spread": float(spread.mean()),
            "z_spread_max": float(spread.max()),
        }
    x_fgsm = attacks.fgsm(classifier, x, y, epsilon)
    with torch.no_grad():
        wrong_fgsm = classifier(x_fgsm).argmax(1) != y
    report["fooled_fgsm"] = float(wrong_fgsm.float().mean())
    report["fgsm_minus_generator"] = stats.paired_difference(wrong_fgsm.float(), wrong_generator.float())
    return report


def saturation_report(
    generator, x: torch.Tensor, *, n_draws: int = 8, seed: int = 0, flat_slope: float = 0.01
) -> dict[str, float]:
    r"""How saturated the output layer G(x, z) = clip(x + ε·tanh h) of a trained generator is (notebook 04).

    Over ``n_draws`` noise draws on the inputs ``x``:

    * ``tanh_above_0.9``: share of pixels with |tanh h| > 0.9 (before the clip);
    * ``delta_above_0.9eps``: share with |G(x, z) − x| > 0.9ε (after the clip);
    * ``mean_tanh_slope``: mean of tanh′(h) = 1 − tanh²h, the factor every gradient reaching h is scaled by;
    * ``zero_gradient``: share of pixels where ∂G/∂h is exactly 0 — float32 tanh is ±1 (tanh′ = 0) or the
      [0, 1] clip is active;
    * the same pixels split by cause, three shares that sum to 1: ``clip_active`` (x + ε·tanh h lies outside
      [0, 1], so G does not depend on h there whatever tanh′ is), ``tanh_flat`` (the clip is inactive but
      tanh′(h) < ``flat_slope``: the gradient is scaled by less than that) and ``gradient_passes`` (neither);
    * ``h_spread_over_z`` and ``tanh_spread_over_z``: per-pixel standard deviation over the draws of h and of
      tanh h, averaged over pixels — how much the noise moves h, and how much of that survives the tanh."""
    n_draws = v.integer("n_draws", n_draws, low=2)
    flat_slope = v.finite_number("flat_slope", flat_slope, low=0.0, low_inclusive=False, high=1.0)
    g = torch.Generator().manual_seed(seed)
    hs = []
    with torch.no_grad():
        for _ in range(n_draws):
            z = torch.randn(len(x), generator.noise_dim, generator=g).to(x.device)
            hs.append(generator.pre_activation(x, z))
    h = torch.stack(hs)
    t = torch.tanh(h)
    slope = 1 - t**2
    raw = x[None] + generator.epsilon * t
    clipped = (raw < 0) | (raw > 1)
    delta = raw.clamp(0, 1) - x[None]
    return {
        "tanh_above_0.9": float((t.abs() > 0.9).float().mean()),
        "delta_above_0.9eps": float((delta.abs() > 0.9 * generator.epsilon).float().mean()),
        "mean_tanh_slope": float(slope.mean()),
        "zero_gradient": float(((slope == 0) | clipped).float().mean()),
        "clip_active": float(clipped.float().mean()),
        "tanh_flat": float((~clipped & (slope < flat_slope)).float().mean()),
        "gradient_passes": float((~clipped & (slope >= flat_slope)).float().mean()),
        "h_spread_over_z": float(h.std(0).mean()),
        "tanh_spread_over_z": float(t.std(0).mean()),
    }


def fooled_by(generator, classifier, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """Per example (bool, shape (batch,)): does ``classifier`` misclassify G(x, z), one noise draw from ``seed``?"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(len(x), generator.noise_dim, generator=g).to(x.device)
        return classifier(generator(x, z)).argmax(1) != y


def _share(event: torch.Tensor, among: torch.Tensor) -> float:
    """Share of the pixels in ``among`` (a bool mask) where ``event`` holds; NaN if ``among`` is empty."""
    n = int(among.sum())
    return float((event & among).sum()) / n if n else math.nan


def frozen_wrong_sign(
    generator, classifier, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, flat_slope: float = 0.01
) -> dict:
    r"""The pixels a trained generator gets wrong where its own gradient cannot reach them (notebook 04, §4).

    For one noise draw, with t = tanh h and x_adv = G(x, z) = clip(x + ε·t), a pixel is **frozen and
    wrong** when the clip is inactive, tanh′(h) = 1 − t² < ``flat_slope`` (almost no gradient reaches h),
    and the sign of t differs from that of ∂CE(f(x_adv), y)/∂x_adv (the direction that raises f's loss, as
    FGSM reads it). Setting only those pixels to clip(x + ε·sign(∂CE/∂x)) shows what the generator leaves
    on the table there; it uses f's gradient, which the generator does not have at attack time.

    The control is ``passing_agree``: the same sign agreement on the pixels the gradient still reaches (clip
    inactive, tanh′ ≥ ``flat_slope``). Only if frozen pixels agree *less* often than those are the
    generator's sign errors concentrated where saturation cuts its gradient off.

    Returns ``frozen`` (share of pixels with the clip inactive and tanh′ < ``flat_slope``),
    ``frozen_agree`` (share of those whose sign agrees with the gradient's), ``passing_agree`` (the same
    share on the pixels where the gradient passes; NaN if there are none), ``frozen_wrong`` (share of
    all pixels that are frozen and wrong), ``fooled_before`` and ``fooled_after`` (per-input bools: f wrong
    on x_adv, and after the flip)."""
    flat_slope = v.finite_number("flat_slope", flat_slope, low=0.0, low_inclusive=False, high=1.0)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(x), generator.noise_dim, generator=g).to(x.device)
    with torch.no_grad():
        t = torch.tanh(generator.pre_activation(x, z))
        raw = x + generator.epsilon * t
        x_adv = raw.clamp(0, 1)
    probe = x_adv.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(classifier(probe), y, reduction="sum"), probe)
    clip_inactive = ~((raw < 0) | (raw > 1))
    frozen = clip_inactive & (1 - t**2 < flat_slope)
    passing = clip_inactive & (1 - t**2 >= flat_slope)
    agree = torch.sign(t) == torch.sign(grad)
    wrong = frozen & ~agree & (grad != 0)
    flipped = torch.where(wrong, (x + generator.epsilon * torch.sign(grad)).clamp(0, 1), x_adv)
    with torch.no_grad():
        before = classifier(x_adv).argmax(1) != y
        after = classifier(flipped).argmax(1) != y
    return {
        "frozen": float(frozen.float().mean()),
        "frozen_agree": _share(agree, frozen),
        "passing_agree": _share(agree, passing),
        "frozen_wrong": float(wrong.float().mean()),
        "fooled_before": before,
        "fooled_after": after,
    }
