"""The notebooks' explorers: what each figure shows for given slider values.

Each builder takes models that are already trained and returns a
:class:`metaadv_edu.widgets.Explorer`; a slider move only attacks, evaluates or adapts those models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.ticker import NullLocator

from metaadv_edu import attacks
from metaadv_edu.plotting import perturbation_image, show_image
from metaadv_edu.widgets import Explorer, epsilon_slider, float_slider, int_slider

__all__ = [
    "attack_explorer", "first_look_explorer", "gan_dynamics_explorer", "generator_explorer",
    "maml_explorer", "metasgd_explorer", "reptile_explorer", "robust_few_shot_explorer", "robustness_explorer",
]


def _run_attack(model, x, y, epsilon, steps, step_size):
    """FGSM for one step (its step is ε), PGD from the clean point otherwise (deterministic)."""
    if steps == 1:
        return attacks.fgsm(model, x, y, epsilon)
    return attacks.pgd(model, x, y, epsilon, step_size=step_size, steps=steps, random_start=False)


def _probs(model, x):
    with torch.no_grad():
        return torch.softmax(model(x), dim=-1)


class _AttackPanels:
    """Rows of: clean image, perturbation, attacked image, class probabilities (clean vs attacked).

    Built once on a figure; :meth:`show` only updates the artists.
    """

    def __init__(self, fig, x, labels):
        self.labels = labels
        n, k = len(x), len(labels)
        self.axes = fig.subplots(n, 4, width_ratios=[1, 1, 1, 2.2], squeeze=False)
        self.images, self.deltas, self.advs, self.bars = [], [], [], []
        classes = np.arange(k)
        for i in range(n):
            a0, a1, a2, a3 = self.axes[i]
            self.images.append(show_image(x[i], a0).images[0])
            self.deltas.append(perturbation_image(torch.zeros_like(x[i]), 1.0, a1,
                                                  title="δ (red +, blue −)").images[0])
            self.advs.append(show_image(x[i], a2).images[0])
            clean = a3.bar(classes - 0.2, np.zeros(k), width=0.4, label="clean", color="tab:blue")
            adv = a3.bar(classes + 0.2, np.zeros(k), width=0.4, label="attacked", color="tab:red")
            self.bars.append((clean, adv))
            a3.set_ylim(0, 1)
            a3.set_yticks([0, 1], ["0", "1"], fontsize=7)
            names = [str(label)[:4] for label in labels] if i == n - 1 else []
            a3.set_xticks(classes.tolist() if i == n - 1 else [], names, fontsize=7)
            if i == 0:
                a3.legend(fontsize=7, loc="upper right")

    def show(self, x, x_adv, y, p_clean, p_adv, epsilon):
        labels = self.labels
        for i in range(len(x)):
            c, a = int(p_clean[i].argmax()), int(p_adv[i].argmax())
            a0, _, a2, a3 = self.axes[i]
            self.images[i].set_data(_hwc(x[i]))
            a0.set_title(f"clean → {labels[c]} ({p_clean[i, c]:.0%})", fontsize=9)
            self.deltas[i].set_data(_hw_delta(x_adv[i] - x[i]))
            self.deltas[i].set_clim(-max(epsilon, 1e-3), max(epsilon, 1e-3))
            self.advs[i].set_data(_hwc(x_adv[i]))
            a2.set_title(f"attacked → {labels[a]} ({p_adv[i, a]:.0%})", fontsize=9,
                         color="tab:red" if a != int(y[i]) else "black")
            for bars, probs in zip(self.bars[i], (p_clean[i], p_adv[i])):
                for rect, p in zip(bars, probs.tolist()):
                    rect.set_height(p)
            if i == 0:
                a3.set_title(f"class probabilities (true: {labels[int(y[i])]})", fontsize=9)


def _hwc(image):
    img = image.detach().float().cpu()
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).clamp(0, 1).numpy()


def _hw_delta(delta):
    d = delta.detach().float().cpu()
    return d.mean(0).numpy()


def attack_explorer(model, x_show: torch.Tensor, y_show: torch.Tensor, x_eval: torch.Tensor,
                    y_eval: torch.Tensor, *, labels: Sequence[str] | None = None,
                    epsilon: float = 0.1, max_epsilon: float = 0.3) -> Explorer:
    """ε, attack steps and step size → clean image, perturbation, attacked image and class
    probabilities for a few inputs, and the accuracy under the same attack on ``(x_eval, y_eval)``."""
    labels = list(labels) if labels is not None else [str(i) for i in range(10)]
    panels: list[_AttackPanels] = []
    p_clean = _probs(model, x_show)

    def setup(fig):
        panels.append(_AttackPanels(fig, x_show, labels))

    def draw(fig, *, epsilon, steps, step_size):
        x_adv = _run_attack(model, x_show, y_show, epsilon, steps, step_size)
        panels[0].show(x_show, x_adv, y_show, p_clean, _probs(model, x_adv), epsilon)
        adv_eval = _run_attack(model, x_eval, y_eval, epsilon, steps, step_size)
        acc = float((_probs(model, adv_eval).argmax(-1) == y_eval).float().mean())
        name = "FGSM (one step of size ε)" if steps == 1 else f"PGD, {steps} steps of a = {step_size:.3f}"
        return (f"{name} at ε = {epsilon:.3f}: accuracy on {len(x_eval)} test inputs "
                f"<b>{acc:.1%}</b>")

    sliders = {
        "epsilon": epsilon_slider(epsilon, max=max_epsilon, step=0.005),
        "steps": int_slider("k — attack steps (1 = FGSM)", 1, 1, 20),
        "step_size": float_slider("a — PGD step size", 0.02, 0.005, 0.1, 0.005, readout_format=".3f"),
    }
    return Explorer(draw, sliders, setup=setup, title="FGSM and PGD on test inputs",
                    figsize=(9, 1.9 * len(x_show) + 0.3), dpi=72)


def robustness_explorer(models: dict[float, torch.nn.Module], x_show, y_show, x_eval, y_eval, *,
                        curves: dict[float, Sequence[float]], curve_epsilons: Sequence[float],
                        labels: Sequence[str] | None = None, max_epsilon: float = 0.3,
                        steps: int = 10) -> Explorer:
    """Training ε (a cached model per grid value) × evaluation ε × attack step size.

    ``curves[train_eps]`` holds precomputed PGD accuracies at ``curve_epsilons``; a slider move
    attacks only the selected model at the selected evaluation ε.
    """
    import ipywidgets as w

    from metaadv_edu.widgets import LABEL_STYLE, SLIDER_LAYOUT

    labels = list(labels) if labels is not None else [str(i) for i in range(10)]
    grid = sorted(models)
    art: dict = {}

    def setup(fig):
        left, right = fig.subfigures(1, 2, width_ratios=[1, 1.25])
        ax = right.subplots()
        art["lines"] = {e: ax.plot(curve_epsilons, curves[e], marker="o", ms=3,
                                   label=f"trained at ε = {e:g}")[0] for e in grid}
        (art["star"],) = ax.plot([], [], "k*", ms=12, label="attack below")
        ax.set_xlabel(f"evaluation ε (PGD-{steps})")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        axes = left.subplots(len(x_show), 2, squeeze=False)
        art["axes"] = axes
        art["clean"] = [show_image(x_show[i], axes[i, 0], title=f"clean ({labels[int(y_show[i])]})")
                        for i in range(len(x_show))]
        art["adv"] = [show_image(x_show[i], axes[i, 1]).images[0] for i in range(len(x_show))]

    def draw(fig, *, train_epsilon, epsilon, step_size):
        model = models[train_epsilon]
        x_adv = _run_attack(model, x_show, y_show, epsilon, steps, step_size)
        adv_eval = _run_attack(model, x_eval, y_eval, epsilon, steps, step_size)
        acc = float((_probs(model, adv_eval).argmax(-1) == y_eval).float().mean())
        for e, line in art["lines"].items():
            line.set_linewidth(2.5 if e == train_epsilon else 1.0)
            line.set_alpha(1.0 if e == train_epsilon else 0.45)
        art["star"].set_data([epsilon], [acc])
        p_adv = _probs(model, x_adv)
        for i, image in enumerate(art["adv"]):
            a = int(p_adv[i].argmax())
            image.set_data(_hwc(x_adv[i]))
            art["axes"][i, 1].set_title(f"attacked → {labels[a]} ({p_adv[i, a]:.0%})", fontsize=9,
                                        color="tab:red" if a != int(y_show[i]) else "black")
        return (f"model trained at ε = {train_epsilon:g}, attacked by PGD-{steps} (a = {step_size:.3f}) "
                f"at ε = {epsilon:.3f}: accuracy on {len(x_eval)} test inputs <b>{acc:.1%}</b>")

    sliders = {
        "train_epsilon": w.SelectionSlider(options=grid, value=grid[len(grid) // 2],
                                           description="training ε (cached models)",
                                           continuous_update=False, style=LABEL_STYLE,
                                           layout=w.Layout(**SLIDER_LAYOUT)),
        "epsilon": epsilon_slider(0.1, max=max_epsilon, step=0.01,
                                  description="ε — evaluation budget"),
        "step_size": float_slider("a — attack step size", 0.025, 0.005, 0.1, 0.005,
                                  readout_format=".3f"),
    }
    return Explorer(draw, sliders, setup=setup, title="Train ε × test ε", figsize=(9.5, 4.2), dpi=72)


def _adaptation_path(model, theta, xs, ys, grid, truth, inner_lr, keep_step, max_steps=10):
    """Plain gradient descent on (xs, ys) from θ: the MSE on the whole curve after 0..max_steps
    steps, and the prediction on ``grid`` after ``keep_step`` steps. One pass, no graph kept."""
    import torch.nn.functional as F

    from metaadv_edu.functional import forward

    params = {k: p.detach().requires_grad_(True) for k, p in theta.items()}
    losses, kept = [], None
    for step in range(max_steps + 1):
        with torch.no_grad():
            pred = forward(model, params, grid)
        losses.append(F.mse_loss(pred, truth))
        if step == keep_step:
            kept = pred
        if step == max_steps:
            break
        grads = torch.autograd.grad(F.mse_loss(forward(model, params, xs), ys), list(params.values()))
        params = {k: (p - inner_lr * g).detach().requires_grad_(True) for (k, p), g in zip(params.items(), grads)}
    return torch.stack(losses), kept


def maml_explorer(meta_model: torch.nn.Module, baseline: torch.nn.Module, *, n_tasks: int = 10,
                  pool: int = 20, seed: int = 2024, inner_lr: float = 0.01) -> Explorer:
    """Adapt a meta-learned sinusoid regressor (and a baseline) to a new task, live.

    Sliders: α (log), inner steps, K support points, ε (an FGSM-style shift of the K support
    inputs, x + ε·sign(∇ₓL_S), computed at the meta-learned initialisation) and which test task.
    Adapting 1-40-40-1 on ≤ 20 points for ≤ 10 steps takes milliseconds; nothing is meta-trained.
    """
    import ipywidgets as w
    import torch.nn.functional as F

    from metaadv_edu import data
    from metaadv_edu.functional import forward, params_of
    from metaadv_edu.widgets import LABEL_STYLE, SLIDER_LAYOUT, inner_lr_slider

    device = next(meta_model.parameters()).device
    tasks, amp, phase = data.sine_tasks(n_tasks, pool, generator=torch.Generator().manual_seed(seed),
                                        device=device, return_params=True)
    grid = torch.linspace(-5, 5, 200, device=device).view(-1, 1)
    nets = {"MAML": meta_model, "pretrained": baseline}
    thetas = {name: params_of(net, detach=True) for name, net in nets.items()}
    art: dict = {}

    def setup(fig):
        ax, ax_loss = fig.subplots(1, 2, width_ratios=[1.6, 1])
        (art["truth"],) = ax.plot([], [], color="0.5", lw=2, label="true task")
        (art["init"],) = ax.plot([], [], "--", color="tab:blue", lw=1, label="MAML init θ")
        (art["maml"],) = ax.plot([], [], color="tab:blue", lw=2, label="MAML adapted")
        (art["pre"],) = ax.plot([], [], color="tab:orange", lw=1.5, label="pretrained, fine-tuned")
        art["clean_pts"] = ax.scatter([], [], s=18, facecolors="none", edgecolors="0.3", label="clean support x")
        art["pts"] = ax.scatter([], [], s=22, color="tab:red", zorder=3, label="support points used")
        ax.set_xlim(-5, 5)
        ax.set_ylim(-6, 6)
        ax.legend(fontsize=7, loc="lower left", ncol=2)
        ax.set_xlabel("x")
        steps_axis = list(range(11))
        (art["loss_maml"],) = ax_loss.plot(steps_axis, [1.0] * 11, "o-", ms=3, color="tab:blue", label="MAML")
        (art["loss_pre"],) = ax_loss.plot(steps_axis, [1.0] * 11, "s-", ms=3, color="tab:orange", label="pretrained")
        art["marker"] = ax_loss.axvline(1, color="0.6", ls="--")
        ax_loss.set_yscale("log")
        ax_loss.set_ylim(1e-3, 30)
        # plain-text labels at fixed ticks: minor ticks and mathtext labels triple the drawing time
        ax_loss.yaxis.set_minor_locator(NullLocator())
        ax_loss.set_yticks([1e-3, 1e-2, 1e-1, 1, 10], ["0.001", "0.01", "0.1", "1", "10"])
        ax_loss.set_xlabel("inner steps")
        ax_loss.set_ylabel("MSE on the whole curve")
        ax_loss.legend(fontsize=7)
        ax_loss.grid(alpha=0.3)
        art["ax"] = ax

    def draw(fig, *, inner_lr, steps, k_support, epsilon, task):
        xs, ys = tasks.x_support[task, :k_support], tasks.y_support[task, :k_support]
        truth = amp[task] * torch.sin(grid - phase[task])
        if epsilon > 0:
            x_var = xs.clone().requires_grad_(True)
            loss = F.mse_loss(forward(meta_model, thetas["MAML"], x_var), ys)
            (gx,) = torch.autograd.grad(loss, x_var)
            xs_used = (xs + epsilon * gx.sign()).clamp(-5, 5)
        else:
            xs_used = xs
        losses, preds = {}, {}
        for name, net in nets.items():
            losses[name], preds[name] = _adaptation_path(net, thetas[name], xs_used, ys, grid, truth,
                                                         inner_lr, steps)
        with torch.no_grad():
            init = forward(meta_model, thetas["MAML"], grid)
        g = grid[:, 0].cpu()
        art["truth"].set_data(g, truth[:, 0].cpu())
        art["init"].set_data(g, init[:, 0].cpu())
        art["maml"].set_data(g, preds["MAML"][:, 0].cpu())
        art["pre"].set_data(g, preds["pretrained"][:, 0].cpu())
        art["clean_pts"].set_offsets(torch.cat([xs, ys], 1).cpu().numpy() if epsilon > 0 else torch.empty(0, 2).numpy())
        art["pts"].set_offsets(torch.cat([xs_used, ys], 1).detach().cpu().numpy())
        art["loss_maml"].set_ydata(losses["MAML"].clamp(1e-3, 30).cpu())
        art["loss_pre"].set_ydata(losses["pretrained"].clamp(1e-3, 30).cpu())
        art["marker"].set_xdata([steps, steps])
        art["ax"].set_title(f"task {task}: y = {amp[task]:.2f}·sin(x − {phase[task]:.2f}), K = {k_support}",
                            fontsize=9)
        m, p = losses["MAML"][steps].item(), losses["pretrained"][steps].item()
        return (f"after {steps} step(s) of α = {inner_lr:.2g} on K = {k_support} points (ε = {epsilon:.2f}): "
                f"MSE <b>{m:.3f}</b> (MAML) vs <b>{p:.3f}</b> (pretrained)")

    sliders = {
        "inner_lr": inner_lr_slider(inner_lr, -3, 0),
        "steps": int_slider("k — inner steps", 1, 0, 10),
        "k_support": int_slider("K — support points", 10, 2, pool),
        "epsilon": float_slider("ε — shift of support inputs", 0.0, 0.0, 1.0, 0.05),
        "task": w.IntSlider(value=0, min=0, max=n_tasks - 1, description="test task",
                            continuous_update=False, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)),
    }
    return Explorer(draw, sliders, setup=setup, title="MAML: adapt to a new sine wave",
                    figsize=(10, 3.6), dpi=72)


def _quadratic_tasks(n: int = 4, seed: int = 0):
    """n quadratic task losses ½(θ − cᵢ)ᵀAᵢ(θ − cᵢ) in a 2-D parameter space, with different
    minima and curvatures (eigenvalues 0.5–4, random orientations)."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-2, 2, size=(n, 2))
    mats = []
    for _ in range(n):
        a = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        mats.append(rot @ np.diag(rng.uniform([2.0, 0.3], [4.0, 0.8])) @ rot.T)
    return centers, np.stack(mats)


def _quadratic_updates(theta, centers, mats, alpha, k):
    """Closed forms for quadratic tasks: φ_k − c = (I − αA)^k (θ − c). Returns the adapted points
    (n, 2) and the mean Reptile, FOMAML and MAML update directions (each −gradient-like)."""
    eye = np.eye(2)
    powers = np.stack([np.linalg.matrix_power(eye - alpha * a, k) for a in mats])
    phis = centers + np.einsum("nij,nj->ni", powers, theta - centers)
    grads_at_phi = np.einsum("nij,nj->ni", mats, phis - centers)
    reptile = (phis - theta).mean(0)
    fomaml = -grads_at_phi.mean(0)
    maml = -np.einsum("nij,nj->ni", powers, grads_at_phi).mean(0)
    return phis, reptile, fomaml, maml


def reptile_explorer(*, n_tasks: int = 4, seed: int = 3, outer_iterations: int = 60) -> Explorer:
    """Reptile, FOMAML and MAML on quadratic tasks in a 2-D parameter plane, exactly.

    Sliders: α, inner steps k and the outer step β. Shown: the MAML objective (mean loss after k
    steps) as an image, each task's minimum and its k inner steps from the start θ₀, and the paths of
    ``outer_iterations`` outer updates of each algorithm. Reptile moves by β·mean(φ̃ − θ); to put
    the three on the same scale, FOMAML and MAML move by β·α·k times their negative gradients.
    """
    from metaadv_edu.widgets import inner_lr_slider

    centers, mats = _quadratic_tasks(n_tasks, seed)
    theta0 = np.array([2.6, -2.6])
    side = np.linspace(-3.5, 3.5, 90)
    gx, gy = np.meshgrid(side, side)
    points = np.stack([gx.ravel(), gy.ravel()], 1)
    colors = {"Reptile": "tab:red", "FOMAML": "tab:green", "MAML": "tab:blue"}
    art: dict = {}

    def objective(alpha, k):
        eye = np.eye(2)
        total = np.zeros(len(points))
        for c, a in zip(centers, mats):
            p = np.linalg.matrix_power(eye - alpha * a, k)
            d = (points - c) @ p.T
            total += 0.5 * np.einsum("ni,ij,nj->n", d, a, d)
        return np.log10(total / len(centers) + 1e-3).reshape(gx.shape)

    def setup(fig):
        ax = fig.subplots()
        art["image"] = ax.imshow(np.zeros_like(gx), origin="lower", extent=(-3.5, 3.5, -3.5, 3.5),
                                 cmap="Greys", vmin=-2, vmax=1.5, alpha=0.6)
        ax.scatter(*centers.T, marker="x", color="k", s=40, label="task minima cᵢ")
        art["inner"] = [ax.plot([], [], ":", color="0.3", lw=1)[0] for _ in centers]
        art["paths"] = {name: ax.plot([], [], "o-", ms=2, lw=1.5, color=c, label=name)[0]
                        for name, c in colors.items()}
        ax.plot(*theta0, "ks", ms=6, label="start θ₀")
        ax.set_xlim(-3.5, 3.5)
        ax.set_ylim(-3.5, 3.5)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title("background: log₁₀ of the MAML objective (mean task loss after k steps)", fontsize=9)
        art["ax"] = ax

    def draw(fig, *, inner_lr, inner_steps, outer_lr):
        art["image"].set_data(objective(inner_lr, inner_steps))
        for line, c, a in zip(art["inner"], centers, mats):
            path = [theta0]
            for _ in range(inner_steps):
                path.append(path[-1] - inner_lr * a @ (path[-1] - c))
            line.set_data(*np.array(path).T)
        scale = {"Reptile": outer_lr, "FOMAML": outer_lr * inner_lr * inner_steps,
                 "MAML": outer_lr * inner_lr * inner_steps}
        ends = {}
        for i, name in enumerate(colors):
            theta, path = theta0.copy(), [theta0.copy()]
            for _ in range(outer_iterations):
                step = _quadratic_updates(theta, centers, mats, inner_lr, inner_steps)[1 + i]
                theta = np.clip(theta + scale[name] * step, -50, 50)
                path.append(theta.copy())
            art["paths"][name].set_data(*np.array(path).T)
            ends[name] = theta
        spread = max(np.abs(np.linalg.eigvals(np.eye(2) - inner_lr * a)).max() for a in mats)
        warn = " — inner steps diverge (|1 − αλ| > 1)" if spread > 1 else ""
        return ("after " + f"{outer_iterations} outer steps: " + ", ".join(
            f"{n} at ({e[0]:.2f}, {e[1]:.2f})" for n, e in ends.items()) + warn)

    sliders = {
        "inner_lr": inner_lr_slider(0.1, -2, 0),
        "inner_steps": int_slider("k — inner steps", 3, 1, 10),
        "outer_lr": float_slider("β — outer step size", 0.3, 0.05, 1.0, 0.05),
    }
    return Explorer(draw, sliders, setup=setup, title="Reptile, FOMAML and MAML on quadratic tasks",
                    figsize=(6.2, 5.2), dpi=72)


def metasgd_explorer(variants: dict[str, tuple], *, n_tasks: int = 10, seed: int = 77,
                     maml_lr: float = 0.01) -> Explorer:
    """Switch between cached Meta-SGD models (by shot count and α initialisation) and adapt each to a
    new task with one step of its learned α, next to MAML with one step of ``maml_lr``.

    ``variants[label] = (meta_sgd_model, inner_lrs, maml_model, k_support)``. Sliders: the model, a
    scale applied to the learned α (1 = as learned), and the test task. Nothing is trained.
    """
    import ipywidgets as w

    from metaadv_edu import data, maml
    from metaadv_edu.functional import forward, params_of
    from metaadv_edu.widgets import LABEL_STYLE, SLIDER_LAYOUT

    labels = list(variants)
    first = variants[labels[0]][0]
    device = next(first.parameters()).device
    pool = max(v[3] for v in variants.values())
    tasks, amp, phase = data.sine_tasks(n_tasks, pool, generator=torch.Generator().manual_seed(seed),
                                        device=device, return_params=True)
    grid = torch.linspace(-5, 5, 200, device=device).view(-1, 1)
    bins = np.logspace(-4, 0, 25)
    hists = {label: np.histogram(np.abs(torch.cat([a.detach().reshape(-1) for a in v[1].values()]).cpu().numpy()),
                                 bins=bins)[0] for label, v in variants.items()}
    art: dict = {}

    def setup(fig):
        ax, ax_h = fig.subplots(1, 2, width_ratios=[1.6, 1])
        (art["truth"],) = ax.plot([], [], color="0.5", lw=2, label="true task")
        (art["msgd"],) = ax.plot([], [], color="tab:purple", lw=2, label="Meta-SGD, 1 step of learned α")
        (art["maml"],) = ax.plot([], [], color="tab:blue", lw=1.5, label=f"MAML, 1 step of α = {maml_lr}")
        art["pts"] = ax.scatter([], [], color="k", s=16, zorder=3, label="support points")
        ax.set_xlim(-5, 5)
        ax.set_ylim(-6, 6)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_xlabel("x")
        centers = np.sqrt(bins[:-1] * bins[1:])
        art["bars"] = ax_h.bar(centers, np.ones(len(centers)), width=np.diff(bins), color="tab:purple")
        ax_h.set_xscale("log")
        ax_h.set_xlabel("|learned α| (all 1,761 parameters)")
        ax_h.set_ylabel("count")
        art["ax"], art["ax_h"] = ax, ax_h

    def draw(fig, *, model, alpha_scale, task):
        net, lrs, maml_net, k = variants[model]
        xs, ys = tasks.x_support[task, :k], tasks.y_support[task, :k]
        truth = amp[task] * torch.sin(grid - phase[task])
        scaled = {name: alpha_scale * a.detach() for name, a in lrs.items()}
        adapted = maml.adapt(net, params_of(net, detach=True), xs, ys, inner_lr=scaled)
        adapted_maml = maml.adapt(maml_net, params_of(maml_net, detach=True), xs, ys, inner_lr=maml_lr)
        pred, pred_maml = forward(net, adapted, grid).detach(), forward(maml_net, adapted_maml, grid).detach()
        g = grid[:, 0].cpu()
        art["truth"].set_data(g, truth[:, 0].cpu())
        art["msgd"].set_data(g, pred[:, 0].cpu())
        art["maml"].set_data(g, pred_maml[:, 0].cpu())
        art["pts"].set_offsets(torch.cat([xs, ys], 1).cpu().numpy())
        counts = hists[model]
        for rect, c in zip(art["bars"], counts):
            rect.set_height(c)
        art["ax_h"].set_ylim(0, counts.max() * 1.1)
        art["ax"].set_title(f"task {task}: y = {amp[task]:.2f}·sin(x − {phase[task]:.2f}), K = {k}", fontsize=9)
        mse = float(((pred - truth) ** 2).mean())
        mse_maml = float(((pred_maml - truth) ** 2).mean())
        return (f"one step on K = {k} points: MSE <b>{mse:.3f}</b> (Meta-SGD, α × {alpha_scale:.2f}) vs "
                f"<b>{mse_maml:.3f}</b> (MAML)")

    sliders = {
        "model": w.SelectionSlider(options=labels, value=labels[0], description="cached Meta-SGD model",
                                   continuous_update=False, style=LABEL_STYLE,
                                   layout=w.Layout(width="44em")),
        "alpha_scale": float_slider("scale of learned α", 1.0, 0.0, 3.0, 0.1),
        "task": w.IntSlider(value=0, min=0, max=n_tasks - 1, description="test task",
                            continuous_update=False, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)),
    }
    return Explorer(draw, sliders, setup=setup, title="Meta-SGD: the learned α at work",
                    figsize=(10, 3.6), dpi=72)


def gan_dynamics_explorer(runs: dict[tuple[float, int], dict], ring) -> Explorer:
    """Cached 2-D GAN runs on a grid of discriminator learning rates × discriminator steps per
    generator step; a slider scrubs through the training snapshots. Nothing is trained."""
    import ipywidgets as w

    from metaadv_edu.widgets import LABEL_STYLE, SLIDER_LAYOUT

    lrs = sorted({lr for lr, _ in runs})
    ks = sorted({k for _, k in runs})
    n_snap = min(len(r["snapshots"]) for r in runs.values())
    means = ring.means.numpy()
    art: dict = {}

    def setup(fig):
        ax, ax_loss = fig.subplots(1, 2, width_ratios=[1, 1.3])
        ax.scatter(*means.T, s=300, facecolors="none", edgecolors="0.6", label="data modes")
        art["pts"] = ax.scatter([], [], s=4, color="tab:red", alpha=0.5, label="generated")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        ax.legend(fontsize=7, loc="upper right")
        (art["d"],) = ax_loss.plot([], [], lw=0.8, label="discriminator loss")
        (art["g"],) = ax_loss.plot([], [], lw=0.8, label="generator loss")
        art["mark"] = ax_loss.axvline(0, color="0.5", ls="--")
        ax_loss.axhline(np.log(4), color="k", lw=0.6, ls=":", label="log 4 (D = ½ everywhere)")
        ax_loss.set_xlabel("generator step")
        ax_loss.set_ylim(0, 5)
        ax_loss.legend(fontsize=7)
        art["ax"], art["ax_loss"] = ax, ax_loss

    def draw(fig, *, lr_d, k_disc, snapshot):
        run = runs[(lr_d, k_disc)]
        pts = np.asarray(run["snapshots"][snapshot])
        art["pts"].set_offsets(pts)
        steps = np.arange(len(run["d_loss"])) * 5
        art["d"].set_data(steps, run["d_loss"])
        art["g"].set_data(steps, run["g_loss"])
        art["ax_loss"].set_xlim(0, steps[-1] + 5)
        step = run["snapshot_steps"][snapshot]
        art["mark"].set_xdata([step, step])
        dist = np.linalg.norm(pts[:, None, :] - means[None], axis=2)
        near = dist.min(1) < 0.3
        covered = len(set(dist.argmin(1)[near].tolist()))
        art["ax"].set_title(f"step {step}: {covered}/8 modes, {near.mean():.0%} of samples on a mode", fontsize=9)
        return (f"lr_D = {lr_d:g}, k = {k_disc} discriminator steps per generator step, after {step} steps: "
                f"<b>{covered} of 8</b> modes covered")

    def selection(options, value, description):
        return w.SelectionSlider(options=options, value=value, description=description,
                                 continuous_update=False, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT))

    sliders = {
        "lr_d": selection(lrs, lrs[len(lrs) // 2], "discriminator (inner) lr"),
        "k_disc": selection(ks, ks[0], "k — D steps per G step"),
        "snapshot": w.IntSlider(value=n_snap - 1, min=0, max=n_snap - 1, description="training snapshot",
                                continuous_update=False, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)),
    }
    return Explorer(draw, sliders, setup=setup, title="GAN training dynamics (cached runs)",
                    figsize=(10, 4), dpi=72)


def generator_explorer(pairs: dict[tuple[float, float], torch.nn.Module], classifier, x_show, y_show,
                       x_eval, y_eval) -> Explorer:
    """Cached adversarial generators on a grid of ε × generator learning rate: a slider move runs one
    forward pass of the chosen generator (and a new noise draw), never a training step."""
    import ipywidgets as w

    from metaadv_edu.widgets import LABEL_STYLE, SLIDER_LAYOUT

    epsilons = sorted({e for e, _ in pairs})
    lrs = sorted({lr for _, lr in pairs})
    labels = [str(i) for i in range(10)]
    panels: list = []
    p_clean = _probs(classifier, x_show)

    def setup(fig):
        panels.append(_AttackPanels(fig, x_show, labels))

    def draw(fig, *, epsilon, lr_g, noise):
        pair = pairs[(epsilon, lr_g)]
        g = torch.Generator().manual_seed(noise)
        with torch.no_grad():
            z = torch.randn(len(x_show), pair["G"].noise_dim, generator=g).to(x_show.device)
            x_adv = pair["G"](x_show, z)
            score = torch.sigmoid(pair["D"](x_adv)).view(-1)
            z_eval = torch.randn(len(x_eval), pair["G"].noise_dim, generator=g).to(x_eval.device)
            adv_eval = pair["G"](x_eval, z_eval)
            acc = float((classifier(adv_eval).argmax(1) == y_eval).float().mean())
            d_real = float(torch.sigmoid(pair["D"](x_eval)).mean())
            d_fake = float(torch.sigmoid(pair["D"](adv_eval)).mean())
        panels[0].show(x_show, x_adv, y_show, p_clean, _probs(classifier, x_adv), epsilon)
        for i, ax in enumerate(panels[0].axes[:, 1]):
            ax.set_title(f"δ = G(x, z) − x · D(x_adv) = {score[i]:.2f}", fontsize=8)
        return (f"generator ε = {epsilon:g}, lr_G = {lr_g:g}: classifier accuracy on {len(x_eval)} generated "
                f"examples <b>{acc:.1%}</b>; discriminator's mean score: real {d_real:.2f}, generated {d_fake:.2f}")

    sliders = {
        "epsilon": w.SelectionSlider(options=epsilons, value=epsilons[len(epsilons) // 2],
                                     description="ε — perturbation budget", continuous_update=False,
                                     style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)),
        "lr_g": w.SelectionSlider(options=lrs, value=lrs[-1], description="generator learning rate",
                                  continuous_update=False, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)),
        "noise": int_slider("z — noise seed", 0, 0, 20),
    }
    return Explorer(draw, sliders, setup=setup, title="The adversarial generator (cached models)",
                    figsize=(9, 1.9 * len(x_show) + 0.3), dpi=72)


def first_look_explorer(model: torch.nn.Module, digit: torch.Tensor, label: int, *, curvature: float = 10.0,
                        seed: int = 0) -> Explorer:
    """Notebook 00's demo: ε moves every pixel of one digit by ±ε in a fixed *random* direction (the
    model's prediction barely changes), and α drives 12 steps of gradient descent on the parabola
    f(w) = ½λw², which converge only while |1 − αλ| < 1."""
    from metaadv_edu.plotting import probability_bars
    from metaadv_edu.widgets import inner_lr_slider

    coin = torch.randint(0, 2, digit.shape, generator=torch.Generator().manual_seed(seed))
    random_sign = (coin * 2 - 1).to(digit.device)
    grid = torch.linspace(-3, 3, 200)

    def draw(fig, *, epsilon, inner_lr):
        ax_img, ax_prob, ax_gd = fig.subplots(1, 3, width_ratios=[1, 1.4, 1.6])
        noisy = (digit + epsilon * random_sign).clamp(0, 1)
        probs = _probs(model, noisy[None])[0]
        show_image(noisy, ax_img, title=f"digit {label} + random ±{epsilon:.2f}")
        probability_bars(probs, ax_prob, highlight=label, title="CNN's class probabilities")
        factor = 1 - inner_lr * curvature
        ws = (2.0 * factor ** torch.arange(13, dtype=torch.float64)).clamp(-3, 3)
        ax_gd.plot(grid, curvature / 2 * grid**2, color="0.6")
        ax_gd.plot(ws, curvature / 2 * ws**2, "o-", markersize=3, color="tab:red")
        ax_gd.set_ylim(-2, 50)
        ax_gd.set_title(f"12 steps of gradient descent, α = {inner_lr:.3g}", fontsize=9)
        verdict = "converges" if abs(factor) < 1 else "diverges"
        return (f"prediction: <b>{int(probs.argmax())}</b> ({probs.max():.0%}) · gradient descent {verdict} "
                f"(|1 − αλ| = {abs(factor):.2f})")

    sliders = {"epsilon": epsilon_slider(0.1, max=0.5), "inner_lr": inner_lr_slider(0.05, -3, 0)}
    return Explorer(draw, sliders, title="ε and α: a first look", figsize=(10, 3))


def robust_few_shot_explorer(learners: dict[str, torch.nn.Module], tasks, *, steps: int = 2,
                             inner_lr: float = 0.2, epsilon: float = 8 / 255, attack_steps: int = 10) -> Explorer:
    """Notebook 08: ε and α together. Each cached meta-learned model adapts to one new-genre task
    (``steps`` steps of α on its clean support set), then PGD attacks the query covers against the
    adapted weights. Shows one query cover per class (clean, δ, attacked, with the selected learner's
    predictions) and the clean and attacked query accuracy of every learner. Nothing is trained."""
    import ipywidgets as w

    from metaadv_edu import robust_meta
    from metaadv_edu.functional import forward
    from metaadv_edu.widgets import LABEL_STYLE, SLIDER_LAYOUT, inner_lr_slider

    names = list(learners)
    n_way = int(tasks.y_query.max()) + 1
    k_shot = tasks.x_support.shape[1] // n_way
    first = [[int(torch.nonzero(tasks.y_query[t] == c)[0]) for c in range(n_way)] for t in range(len(tasks.y_query))]
    artists: dict = {}

    def setup(fig):
        grid = fig.add_gridspec(3, n_way + 2, width_ratios=[1] * n_way + [0.15, 2.4])
        blank = torch.zeros(3, *tasks.x_query.shape[-2:])
        rows = []
        for r in range(3):
            row = []
            for c in range(n_way):
                ax = fig.add_subplot(grid[r, c])
                im = (perturbation_image(blank[0], 1.0, ax) if r == 1 else show_image(blank, ax)).images[0]
                row.append((ax, im))
            rows.append(row)
        rows[0][0][0].set_ylabel("clean", fontsize=9)
        rows[1][0][0].set_ylabel("δ", fontsize=9)
        rows[2][0][0].set_ylabel("attacked", fontsize=9)
        bar_ax = fig.add_subplot(grid[:, -1])
        xs = np.arange(len(names))
        clean = bar_ax.bar(xs - 0.2, np.zeros(len(names)), width=0.4, color="tab:blue", label="clean")
        adv = bar_ax.bar(xs + 0.2, np.zeros(len(names)), width=0.4, color="tab:red", label="PGD")
        bar_ax.set_xticks(xs.tolist(), [n.replace(" ", "\n") for n in names], fontsize=8)
        bar_ax.set_ylim(0, 1)
        bar_ax.axhline(1 / n_way, color="0.5", linestyle=":", linewidth=1)
        bar_ax.legend(fontsize=8, loc="upper right")
        bar_ax.set_title("query accuracy (this task)", fontsize=9)
        artists.update(rows=rows, clean=clean, adv=adv, bar_ax=bar_ax)

    def draw(fig, *, epsilon, inner_lr, learner, task):
        one = tasks.task(task)
        results = {}
        for name, model in learners.items():
            adapted = robust_meta.adapt_tasks(model, one, inner_lr=inner_lr, steps=steps)
            x_adv = robust_meta.attack_tasks(model, adapted, one.x_query, one.y_query, epsilon=epsilon,
                                             attack_steps=attack_steps, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                pred_clean = forward(model, {k: p[0] for k, p in adapted.items()}, one.x_query[0])
                pred_adv = forward(model, {k: p[0] for k, p in adapted.items()}, x_adv[0])
            results[name] = (x_adv[0], pred_clean.argmax(-1), pred_adv.argmax(-1))
        x_adv, pred_clean, pred_adv = results[learner]
        y = one.y_query[0]
        for c, i in enumerate(first[task]):
            (ax0, im0), (_, im1), (ax2, im2) = (artists["rows"][r][c] for r in range(3))
            im0.set_data(_hwc(one.x_query[0, i]))
            ax0.set_title(f"class {c} → {int(pred_clean[i])}", fontsize=8,
                          color="black" if int(pred_clean[i]) == c else "tab:red")
            im1.set_data(_hw_delta(x_adv[i] - one.x_query[0, i]))
            im1.set_clim(-max(epsilon, 1e-3), max(epsilon, 1e-3))
            im2.set_data(_hwc(x_adv[i]))
            ax2.set_title(f"→ {int(pred_adv[i])}", fontsize=8,
                          color="black" if int(pred_adv[i]) == c else "tab:red")
        summary = []
        for j, name in enumerate(names):
            _, pc, pa = results[name]
            acc_c, acc_a = float((pc == y).float().mean()), float((pa == y).float().mean())
            artists["clean"][j].set_height(acc_c)
            artists["adv"][j].set_height(acc_a)
            summary.append(f"{name}: clean <b>{acc_c:.0%}</b>, PGD <b>{acc_a:.0%}</b>")
        artists["bar_ax"].set_title(f"query accuracy, task {task} (ε = {epsilon * 255:.0f}/255)", fontsize=9)
        return (f"α = {inner_lr:.2g}, {steps} steps on {k_shot} clean covers per class; PGD-{attack_steps} on "
                f"{len(y)} query covers · " + " · ".join(summary))

    sliders = {
        "epsilon": epsilon_slider(epsilon, max=32 / 255, step=1 / 255),
        "inner_lr": inner_lr_slider(inner_lr, -3, 0),
        "learner": w.SelectionSlider(options=names, value=names[-1], description="covers shown for",
                                     continuous_update=False, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)),
        "task": int_slider("new-genre task", 0, 0, len(tasks.y_query) - 1),
    }
    sliders["epsilon"].readout_format = ".3f"
    return Explorer(draw, sliders, setup=setup, title="Robust few-shot learning on new genres (cached models)",
                    figsize=(10, 4), dpi=72)
