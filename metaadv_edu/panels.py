"""What the attack explorers of notebooks 00, 01, 02, 04 and 08 share: clean image, perturbation,
attacked image (and class probabilities), updated in place on every slider move."""

from __future__ import annotations

import numpy as np
import torch

from metaadv_edu import attacks
from metaadv_edu.plotting import image_hwc, mark_prediction, perturbation_image, series, show_image

__all__ = ["AttackColumns", "AttackPanels", "delta_hw", "probabilities", "run_attack"]


def run_attack(model, x, y, epsilon, steps, step_size):
    """FGSM for one step (its step is ε), PGD from the clean point otherwise (deterministic)."""
    if steps == 1:
        return attacks.fgsm(model, x, y, epsilon)
    return attacks.pgd(model, x, y, epsilon, step_size=step_size, steps=steps, random_start=False)


def probabilities(model, x):
    """Softmax class probabilities of ``model`` at ``x``, without a graph."""
    with torch.no_grad():
        return torch.softmax(model(x), dim=-1)


class AttackPanels:
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
            self.deltas.append(perturbation_image(torch.zeros_like(x[i]), 1.0, a1, title="δ (red +, blue −)").images[0])
            self.advs.append(show_image(x[i], a2).images[0])
            clean = a3.bar(classes - 0.2, np.zeros(k), width=0.4, label="clean", **series(0).bar())
            adv = a3.bar(classes + 0.2, np.zeros(k), width=0.4, label="attacked", **series(1).bar())
            self.bars.append((clean, adv))
            a3.set_ylim(0, 1)
            a3.set_yticks([0, 1], ["0", "1"])
            a3.set_ylabel("probability")
            names = [str(label)[:4] for label in labels] if i == n - 1 else []
            a3.set_xticks(classes.tolist() if i == n - 1 else [], names)
            if i == 0:
                a3.legend(loc="upper right")

    def animate(self) -> None:
        """Mark what :meth:`show` changes as animated, for an explorer that blits: the perturbation and attacked
        images, the attacked image's title and the attacked bars, and the frames of those axes (a full render
        draws them over the images and bars). The legend turns opaque, since the kept picture pastes it on top."""
        for (_, ax_delta, ax_adv, ax_bars), delta, adv, (_, adv_bars) in zip(
            self.axes, self.deltas, self.advs, self.bars
        ):
            frames = [spine for ax in (ax_delta, ax_adv, ax_bars) for spine in ax.spines.values()]
            for artist in (delta, adv, ax_adv.title, *adv_bars, *frames):
                artist.set_animated(True)
            if ax_bars.get_legend() is not None:
                ax_bars.get_legend().get_frame().set_alpha(1.0)

    def show(self, x, x_adv, y, p_clean, p_adv, epsilon):
        labels = self.labels
        for i in range(len(x)):
            c, a = int(p_clean[i].argmax()), int(p_adv[i].argmax())
            a0, _, a2, a3 = self.axes[i]
            self.images[i].set_data(image_hwc(x[i]))
            text, colour = mark_prediction(f"{labels[c]} ({p_clean[i, c]:.0%})", c == int(y[i]))
            a0.set_title(f"clean: {text}", color=colour)
            self.deltas[i].set_data(delta_hw(x_adv[i] - x[i]))
            self.deltas[i].set_clim(-max(epsilon, 1e-3), max(epsilon, 1e-3))
            self.advs[i].set_data(image_hwc(x_adv[i]))
            text, colour = mark_prediction(f"{labels[a]} ({p_adv[i, a]:.0%})", a == int(y[i]))
            a2.set_title(f"attacked: {text}", color=colour)
            for bars, probs in zip(self.bars[i], (p_clean[i], p_adv[i])):
                for rect, p in zip(bars, probs.tolist()):
                    rect.set_height(p)
            if i == 0:
                a3.set_title(f"class probabilities (true: {labels[int(y[i])]})")


class AttackColumns:
    """One column per example, rows clean image, perturbation and attacked image, each titled with the
    predicted class (marked ✗ and vermillion when wrong, ✓ when right); placed in ``grid[0:3, 0:n]`` of a
    gridspec, updated by :meth:`show`.

    Each row is one axes showing its ``n`` images side by side, white between them: three axes instead of
    ``3n``, which redraws several times faster in an explorer.
    """

    GAP = 2  # pixels of white between two images of a row

    def __init__(self, fig, grid, n: int, shape):
        channels, height, width = shape
        self.rows, self.labels = [], []
        for r in range(3):
            ax = fig.add_subplot(grid[r, 0:n])
            strip = self._strip(torch.zeros(n, 1 if r == 1 else channels, height, width), r == 1)
            image = ax.imshow(
                strip, cmap="RdBu_r" if r == 1 else "gray", vmin=-1 if r == 1 else 0, vmax=1, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            ax.set_ylabel(("clean", "δ", "attacked")[r])
            self.rows.append((ax, image))
            if r != 1:
                self.labels.append(
                    [
                        ax.text(c * (width + self.GAP) + (width - 1) / 2, -0.8, "", ha="center", va="bottom")
                        for c in range(n)
                    ]
                )

    def _strip(self, images, delta: bool):
        """``n`` images (n, C, H, W) as one (H, n·W + gaps[, 3]) array; gaps white (NaN: the δ colour map's blank)."""
        tiles = [delta_hw(img) if delta else image_hwc(img) for img in images]
        gap = np.full((tiles[0].shape[0], self.GAP, *tiles[0].shape[2:]), np.nan if delta else 1.0, dtype=np.float32)
        parts = [part for tile in tiles for part in (tile, gap)][:-1]
        return np.concatenate(parts, axis=1)

    def show(self, x, x_adv, y, pred_clean, pred_adv, epsilon):
        self.rows[0][1].set_data(self._strip(x, False))
        self.rows[1][1].set_data(self._strip(x_adv - x, True))
        self.rows[1][1].set_clim(-max(epsilon, 1e-3), max(epsilon, 1e-3))
        self.rows[2][1].set_data(self._strip(x_adv, False))
        for texts, pred, prefix in ((self.labels[0], pred_clean, "class {} → "), (self.labels[1], pred_adv, "→ ")):
            for c, text in enumerate(texts):
                label, colour = mark_prediction(str(int(pred[c])), bool(pred[c] == y[c]))
                text.set_text(prefix.format(int(y[c])) + label)
                text.set_color(colour)


def delta_hw(delta):
    """A perturbation averaged over channels, for a diverging colour map."""
    d = delta.detach().float().cpu()
    return d.mean(0).numpy()
