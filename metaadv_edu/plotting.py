"""Plot helpers. Every function draws into ``ax`` (a new figure's axes when ``ax`` is None) and
returns the Axes, so notebooks, explorers and tests use the same code."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

__all__ = ["image_hwc", "perturbation_image", "plot_curves", "probability_bars", "show_image"]


def _axes(ax: Axes | None, figsize=(4, 3)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def image_hwc(image: torch.Tensor) -> np.ndarray:
    """An image tensor (H, W), (1, H, W) or (3, H, W) as the array ``imshow`` expects: (H, W) for one
    channel, (H, W, 3) for RGB (values unchanged)."""
    img = image.detach().float().cpu()
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.permute(1, 2, 0)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W), (1, H, W) or (3, H, W), got {tuple(image.shape)}")
    return img.numpy()


def show_image(
    image: torch.Tensor,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "gray",
) -> Axes:
    """An image tensor (H, W), (1, H, W) or (3, H, W) with values in [vmin, vmax]."""
    ax = _axes(ax, (2, 2))
    img = image_hwc(image)
    if img.ndim == 3:
        ax.imshow(np.clip((img - vmin) / (vmax - vmin), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def perturbation_image(
    delta: torch.Tensor, epsilon: float, ax: Axes | None = None, *, title: str | None = None
) -> Axes:
    """A perturbation δ with ‖δ‖∞ ≤ ε on a diverging scale (red +, blue −); channels averaged."""
    ax = _axes(ax, (2, 2))
    d = delta.detach().float().cpu()
    if d.ndim == 3:
        d = d.mean(0)
    scale = max(float(epsilon), 1e-12)
    ax.imshow(d.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def probability_bars(
    probs: torch.Tensor,
    ax: Axes | None = None,
    *,
    labels=None,
    highlight: int | None = None,
    title: str | None = None,
    color="tab:blue",
) -> Axes:
    """Bar chart of class probabilities; ``highlight`` marks the true class."""
    ax = _axes(ax)
    p = probs.detach().float().cpu().numpy()
    colors = [color] * len(p)
    if highlight is not None:
        colors[int(highlight)] = "tab:green"
    ax.bar(np.arange(len(p)), p, color=colors)
    ax.set_ylim(0, 1)
    ax.set_xticks(np.arange(len(p)))
    if labels is not None:
        ax.set_xticklabels(labels, fontsize=7, rotation=60)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_curves(
    x,
    curves: dict[str, Sequence[float]],
    ax: Axes | None = None,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    marker: str = "o",
    ylim=None,
) -> Axes:
    """Several named curves over the same x values."""
    ax = _axes(ax)
    for label, ys in curves.items():
        ax.plot(list(x), [float(y) for y in ys], marker=marker, markersize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return ax
