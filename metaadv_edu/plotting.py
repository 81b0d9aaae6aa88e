"""Plot helpers and the course's one figure style. Every function draws into ``ax`` (a new figure's axes when
``ax`` is None) and returns the Axes, so notebooks, explorers and tests use the same code.

Colours come from one colour-blind-safe palette, Okabe & Ito's eight colours ("Color Universal Design", 2008),
by name: ``PALETTE["blue"]``. Each series of a figure also gets its own marker and line style (:data:`SERIES`,
:func:`series`), so curves are told apart without colour; a wrong prediction is marked by :data:`WRONG` (✗) as
well as by its colour. :func:`apply_style` sets the sizes (text at least :data:`MIN_FONT_SIZE` points) and the
default cycle; importing this module applies it, and :mod:`metaadv_edu.widgets` imports this module, so every
explorer draws with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from cycler import cycler
from matplotlib.axes import Axes

__all__ = [
    "MIN_FONT_SIZE",
    "PALETTE",
    "RIGHT",
    "SERIES",
    "WRONG",
    "Series",
    "apply_style",
    "image_hwc",
    "mark_prediction",
    "parameter_label",
    "perturbation_image",
    "plot_curves",
    "probability_bars",
    "series",
    "show_image",
]

#: Okabe & Ito's colour-blind-safe palette, plus two greys for references (true curves, chance levels, data).
PALETTE: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
    "dark grey": "#555555",
}

#: Smallest text size, in points, of any figure or explorer.
MIN_FONT_SIZE = 10

#: Prefixes of a prediction's label: wrong ones are marked by a symbol, not by colour alone.
WRONG, RIGHT = "✗", "✓"


@dataclass(frozen=True)
class Series:
    """How one series is drawn: a palette colour, a marker, a line style and a bar hatch, so that two series
    differ in shape as well as colour."""

    color: str
    marker: str
    linestyle: str
    hatch: str

    def line(self, **overrides) -> dict:
        """Keyword arguments for ``ax.plot``."""
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle, **overrides}

    def bar(self, **overrides) -> dict:
        """Keyword arguments for ``ax.bar``: the fill colour and a hatch (white lines) in it."""
        return {"color": self.color, "hatch": self.hatch, "edgecolor": PALETTE["black"], "linewidth": 0.5, **overrides}

    def points(self, **overrides) -> dict:
        """Keyword arguments for ``ax.scatter``."""
        return {"color": self.color, "marker": self.marker, **overrides}


#: The series of a figure in order: blue circles solid, vermillion squares dashed, green triangles dash-dotted, …
#: The first two (blue / vermillion) are the pair for clean / attacked, MAML / other: no red–green pair.
SERIES: tuple[Series, ...] = (
    Series(PALETTE["blue"], "o", "-", ""),
    Series(PALETTE["vermillion"], "s", "--", "///"),
    Series(PALETTE["green"], "^", "-.", "..."),
    Series(PALETTE["orange"], "D", ":", "xxx"),
    Series(PALETTE["purple"], "v", (0, (5, 1, 1, 1, 1, 1)), "\\\\\\"),
    Series(PALETTE["sky blue"], "P", (0, (1, 1)), "+++"),
    Series(PALETTE["black"], "X", (0, (8, 2)), "ooo"),
)


def series(i: int) -> Series:
    """The ``i``-th series of a figure (0-based; cycles after :data:`SERIES` runs out)."""
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"i must be an integer ≥ 0, got {i!r}")
    return SERIES[i % len(SERIES)]


def apply_style() -> None:
    """Set matplotlib's defaults for the course: text ≥ :data:`MIN_FONT_SIZE` pt, and a property cycle of the
    palette's colours *with* line styles, so that even a plain ``ax.plot`` series differs in shape."""
    size = MIN_FONT_SIZE
    mpl.rcParams.update(
        {
            "font.size": size,
            "axes.titlesize": size,
            "axes.labelsize": size,
            "xtick.labelsize": size,
            "ytick.labelsize": size,
            "legend.fontsize": size,
            "legend.title_fontsize": size,
            "figure.titlesize": size + 1,
            "axes.prop_cycle": cycler(color=[s.color for s in SERIES], linestyle=[s.linestyle for s in SERIES]),
            "hatch.color": PALETTE["black"],
        }
    )


apply_style()


def _axes(ax: Axes | None, figsize=(4, 3)) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def mark_prediction(predicted: str, correct: bool) -> tuple[str, str]:
    """A predicted label marked for the eye: ``("✗ cat", vermillion)`` when wrong, ``("✓ dog", black)`` when
    right, so a wrong prediction is seen without colour vision too."""
    return (
        (f"{WRONG} {predicted}", PALETTE["vermillion"]) if not correct else (f"{RIGHT} {predicted}", PALETTE["black"])
    )


_PARAMETER_KIND = {"weight": "weights", "bias": "biases", "alpha": "inner rates"}


def parameter_label(name: str, model: torch.nn.Module | None = None) -> str:
    """A parameter tensor's name as words: ``"0.weight"`` → ``"layer 1 weights (40 × 1)"``.

    The layer number counts only the layers that hold parameters (an ``nn.Sequential``'s ``0``, ``2``, ``4``
    are layers 1, 2, 3; the last is called the output layer); with ``model`` the shape is added. A name that
    does not end in ``<index>.<weight|bias>`` is returned unchanged.
    """
    match = re.fullmatch(r"(?:(.*)\.)?(\d+)\.(weight|bias)", name)
    if match is None:
        return name
    prefix, index, kind = match.group(1), int(match.group(2)), match.group(3)
    shape = ""
    if model is not None:
        named = dict(model.named_parameters())
        if name not in named:
            raise ValueError(f"name must be a parameter of model, one of {sorted(named)}; got {name!r}")
        shape = " (" + " × ".join(str(s) for s in named[name].shape) + ")"
        base = f"{prefix}." if prefix else ""
        indices = sorted(
            {int(m.group(1)) for n in named if (m := re.fullmatch(re.escape(base) + r"(\d+)\.(?:weight|bias)", n))}
        )
        layer = indices.index(index) + 1
        where = "output layer" if index == indices[-1] else f"layer {layer}"
    else:
        where = f"module {index}"
    return f"{where} {_PARAMETER_KIND[kind]}{shape}"


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
        ax.set_title(title)
    return ax


def perturbation_image(
    delta: torch.Tensor, epsilon: float, ax: Axes | None = None, *, title: str | None = None
) -> Axes:
    """A perturbation δ with ‖δ‖∞ ≤ ε on a diverging scale (red +, blue −; readable with red–green colour
    blindness); channels averaged."""
    ax = _axes(ax, (2, 2))
    d = delta.detach().float().cpu()
    if d.ndim == 3:
        d = d.mean(0)
    scale = max(float(epsilon), 1e-12)
    ax.imshow(d.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def probability_bars(
    probs: torch.Tensor,
    ax: Axes | None = None,
    *,
    labels=None,
    highlight: int | None = None,
    title: str | None = None,
) -> Axes:
    """Bar chart of class probabilities; ``highlight`` marks the true class (another colour and a hatch)."""
    ax = _axes(ax)
    p = probs.detach().float().cpu().numpy()
    bars = ax.bar(np.arange(len(p)), p, **series(0).bar())
    if highlight is not None:
        bars[int(highlight)].set_facecolor(series(2).color)
        bars[int(highlight)].set_hatch(series(2).hatch)
    ax.set_ylim(0, 1)
    ax.set_xticks(np.arange(len(p)))
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    if labels is not None:
        ax.set_xticklabels(labels, rotation=60)
    if title:
        ax.set_title(title)
    return ax


def plot_curves(
    x,
    curves: Mapping[str, Sequence[float]],
    ax: Axes | None = None,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str | None = None,
    ylim=None,
) -> Axes:
    """Several named curves over the same x values, each with its own colour, marker and line style
    (:func:`series`)."""
    ax = _axes(ax)
    for i, (label, ys) in enumerate(curves.items()):
        ax.plot(list(x), [float(y) for y in ys], **series(i).line(markersize=4), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    return ax
