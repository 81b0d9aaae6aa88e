"""Live controls for the notebooks: the :class:`Explorer` and the sliders it is built from.

Wiring only. An explorer calls a ``draw(fig, **values)`` function, written next to the computation
it shows, whenever a slider is released; that function must only do cheap work (evaluate or adapt
cached models, never train them). The explorer owns exactly one matplotlib ``Figure`` (made without
pyplot, so nothing is left open) and shows it as a PNG. Without a live kernel — on GitHub, in a
stored notebook, under nbval — the same PNG is part of the cell's output, so the first figure is
still there to read.
"""

from __future__ import annotations

import base64
import html
import io
import re
import time
from collections.abc import Callable

import ipywidgets as w
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.spines import Spine
from PIL import Image

from metaadv_edu import plotting  # noqa: F401  (applies the course's figure style: palette, text ≥ 10 pt)

__all__ = [
    "Explorer",
    "dropdown",
    "epsilon_255_slider",
    "epsilon_slider",
    "float_slider",
    "inner_lr_slider",
    "int_slider",
    "log_slider",
    "selection_slider",
]

LABEL_STYLE = {"description_width": "15em"}
_WIDGETS_MAJOR = int(w.__version__.split(".")[0])
SLIDER_LAYOUT = {"width": "34em"}


def float_slider(
    description: str, value: float, min: float, max: float, step: float, *, readout_format: str = ".2f"
) -> w.FloatSlider:
    return w.FloatSlider(
        value=value,
        min=min,
        max=max,
        step=step,
        description=description,
        readout_format=readout_format,
        continuous_update=False,
        style=LABEL_STYLE,
        layout=w.Layout(**SLIDER_LAYOUT),
    )


def int_slider(description: str, value: int, min: int, max: int, step: int = 1) -> w.IntSlider:
    return w.IntSlider(
        value=value,
        min=min,
        max=max,
        step=step,
        description=description,
        continuous_update=False,
        style=LABEL_STYLE,
        layout=w.Layout(**SLIDER_LAYOUT),
    )


def selection_slider(description: str, options, value=None) -> w.SelectionSlider:
    """A slider over a fixed list of ``options`` (cached models or runs); ``value`` defaults to the middle one."""
    options = list(options)
    if not options:
        raise ValueError(f"options of the slider {description!r} must not be empty")
    if value is None:
        value = options[len(options) // 2]
    elif value not in options:
        raise ValueError(f"value must be one of the options {options}, got {value!r}")
    return w.SelectionSlider(
        options=options,
        value=value,
        description=description,
        continuous_update=False,
        style=LABEL_STYLE,
        layout=w.Layout(**SLIDER_LAYOUT),
    )


def epsilon_slider(
    value: float = 0.1, max: float = 0.5, step: float = 0.01, description: str = "ε — perturbation budget"
) -> w.FloatSlider:
    """The perturbation budget ε (L∞ radius, in pixel units of [0, 1])."""
    return float_slider(description, value, 0.0, max, step)


def epsilon_255_slider(
    value: float = 8 / 255, max_255: int = 32, step_255: int = 1, description: str = "ε — perturbation budget"
) -> w.SelectionSlider:
    """The perturbation budget ε of an 8-bit image, in steps of 1/255: the readout says ``8/255``, the value
    is the float ε = 8/255, so an explorer's ``draw(epsilon=...)`` gets ε in pixel units of [0, 1] as with
    :func:`epsilon_slider`. ``value`` is moved to the nearest stop of the slider."""
    if isinstance(max_255, bool) or not isinstance(max_255, int) or max_255 < 1:
        raise ValueError(f"max_255 must be an int ≥ 1 (ε up to max_255/255), got {max_255!r}")
    if isinstance(step_255, bool) or not isinstance(step_255, int) or not 1 <= step_255 <= max_255:
        raise ValueError(f"step_255 must be an int in [1, max_255 = {max_255}], got {step_255!r}")
    if not 0 <= float(value) <= max_255 / 255:
        raise ValueError(f"value must be in [0, {max_255}/255], got {value!r}")
    stops = list(range(0, max_255 + 1, step_255))
    nearest = min(stops, key=lambda k: abs(k / 255 - float(value)))
    options = [(f"{k}/255", k / 255) for k in stops]
    return w.SelectionSlider(
        options=options,
        value=nearest / 255,
        description=description,
        continuous_update=False,
        style=LABEL_STYLE,
        layout=w.Layout(**SLIDER_LAYOUT),
    )


def log_slider(
    description: str, value: float, min_exp: float, max_exp: float, readout_format: str = ".1e"
) -> w.FloatLogSlider:
    """A positive value on a log scale, 10^min_exp … 10^max_exp in steps of 10^0.1."""
    return w.FloatLogSlider(
        value=value,
        base=10,
        min=min_exp,
        max=max_exp,
        step=0.1,
        description=description,
        readout_format=readout_format,
        continuous_update=False,
        style=LABEL_STYLE,
        layout=w.Layout(**SLIDER_LAYOUT),
    )


def inner_lr_slider(
    value: float = 0.01, min_exp: float = -4, max_exp: float = 0, description: str = "α — inner learning rate"
) -> w.FloatLogSlider:
    """The inner learning rate α on a log scale: 10^min_exp … 10^max_exp."""
    return log_slider(description, value, min_exp, max_exp)


def dropdown(description: str, options, value=None) -> w.Dropdown:
    """A choice among named cases (attacks, perturbations) with no order; ``value`` defaults to the first."""
    options = list(options)
    if not options:
        raise ValueError(f"options of the menu {description!r} must not be empty")
    if value is None:
        value = options[0]
    elif value not in options:
        raise ValueError(f"value must be one of the options {options}, got {value!r}")
    return w.Dropdown(
        options=options, value=value, description=description, style=LABEL_STYLE, layout=w.Layout(**SLIDER_LAYOUT)
    )


def _png(figure: Figure) -> bytes:
    # One canvas per figure, kept: its renderer (and pixel buffer) is reused on every redraw. A new canvas
    # per redraw allocates a new buffer each time, and the C allocator's free-list grows with them for the
    # first hundred or so moves (tens of MiB) before it settles.
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    buf = io.BytesIO()
    canvas.print_png(buf, pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def _background(figure: Figure) -> tuple:
    """The figure rendered without its animated artists, those artists, and the kept legends' pixels."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    animated = sorted(figure.findobj(lambda a: a.get_animated()), key=lambda a: a.get_zorder())
    # a plain draw leaves animated artists out, except images on matplotlib < 3.11: hide those
    shown = [a for a in animated if isinstance(a, AxesImage) and a.get_visible()]
    for artist in shown:
        artist.set_visible(False)
    try:
        canvas.draw()
    finally:
        for artist in shown:
            artist.set_visible(True)
    legends = [
        canvas.copy_from_bbox(legend.get_window_extent())
        for legend in figure.findobj(Legend)
        if not legend.get_animated()
    ]
    return canvas.copy_from_bbox(figure.bbox), animated, legends


def _blitted_png(figure: Figure, background, animated: list, legends: list) -> bytes:
    canvas = figure.canvas
    canvas.restore_region(background)
    renderer = canvas.get_renderer()
    for artist in animated:
        if artist.get_visible():
            artist.draw(renderer)
    for region in legends:  # legends stay on top of the lines they describe
        canvas.restore_region(region)
    width, height = canvas.get_width_height()
    buf = io.BytesIO()
    Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(
        buf, format="png", compress_level=1
    )
    return buf.getvalue()


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _readout(slider) -> str:
    """What the slider shows: its option's label for a selection ("8/255"), else the value."""
    label = getattr(slider, "label", None)
    return label if isinstance(label, str) and label else _fmt(slider.value)


class Explorer(w.VBox):
    """Sliders, one figure redrawn in place, and a line of text.

    Parameters
    ----------
    draw : callable
        ``draw(fig, **values) -> str | None``: clear-and-draw into ``fig`` for the slider values
        (keyword arguments named like the sliders); may return a short caption (HTML allowed).
    sliders : dict
        Name → widget. Conventional names: ``"epsilon"`` (ε) and ``"inner_lr"`` (α).
    title : str, optional
        A heading shown above the sliders.
    setup : callable, optional
        ``setup(fig)`` builds the axes and artists once. With it, the figure is not cleared before
        ``draw``, which then only updates the artists' data (``set_data``, ``set_height``,
        ``set_text``), and the layout is frozen after the first render: several times faster than
        rebuilding a figure of many axes on every slider move.
    figsize, dpi :
        Size of the figure.
    blit : bool, optional
        Only with ``setup``. After the first full render, the figure is rendered once more without the
        artists that ``setup`` marked animated (``artist.set_animated(True)``), and that picture is kept;
        each later redraw pastes it back, draws only the animated artists on it (in z-order), and pastes
        the kept legends back on top. Use it when text (tick labels, legends) is most of a redraw's cost
        and only a few lines or images change. :meth:`blit_error` tells whether a blitted image is
        what a full render draws (a changing artist left unmarked shows as a difference).
    blit_key : callable, optional
        Only with ``blit``. ``blit_key(**values)`` names what the kept picture depends on (say, the
        slider that changes an axis' limits); when it changes, the picture is rendered again.

    Attributes
    ----------
    sliders : dict[str, ipywidgets.Widget]
    figure : matplotlib.figure.Figure — the only figure this explorer ever draws into.
    caption : ipywidgets.HTML — the text returned by ``draw``.
    last_update_s : float — wall time of the last :meth:`update`, in seconds.
    """

    def __init__(
        self,
        draw: Callable[..., str | None],
        sliders: dict[str, w.Widget],
        *,
        title: str | None = None,
        figsize: tuple[float, float] = (9.0, 3.2),
        dpi: int = 80,
        setup: Callable | None = None,
        blit: bool = False,
        blit_key: Callable | None = None,
    ):
        if not callable(draw):
            raise TypeError("draw must be callable as draw(fig, **values)")
        if not sliders:
            raise ValueError("sliders must name at least one slider")
        if blit and setup is None:
            raise ValueError("blit=True needs setup: the animated artists are built once, by setup")
        if blit_key is not None and not blit:
            raise ValueError("blit_key needs blit=True: it names when the kept picture is rendered again")
        for name, slider in sliders.items():
            if not isinstance(slider, w.ValueWidget):
                raise TypeError(f"sliders[{name!r}] must be an ipywidgets value widget")
        self.sliders: dict[str, w.Widget] = dict(sliders)
        self.figure = Figure(figsize=figsize, dpi=dpi, layout="constrained")
        self._draw = draw
        self._setup = setup
        self.image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.caption = w.HTML()
        self.last_update_s = float("nan")
        self._blit: tuple | None = None
        self._blit_key = blit_key
        self._background_key = None
        header = [w.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        super().__init__(header + [*self.sliders.values(), self.image, self.caption])
        for slider in self.sliders.values():
            slider.observe(self._on_change, names="value")
        if setup is not None:
            setup(self.figure)
        self.update()
        if setup is not None:
            self.figure.set_layout_engine("none")
        if blit:  # keep the picture without the animated artists, then show the first blitted image
            self._blit = _background(self.figure)
            self._background_key = self._key()
            self.update()

    @property
    def values(self) -> dict:
        return {name: slider.value for name, slider in self.sliders.items()}

    def _on_change(self, _change) -> None:
        self.update()

    def update(self) -> None:
        """Recompute and redraw for the current slider values."""
        start = time.perf_counter()
        if self._setup is None:
            self.figure.clear()
        text = self._draw(self.figure, **self.values)
        if self._blit is not None and self._blit_key is not None and self._key() != self._background_key:
            self._blit, self._background_key = _background(self.figure), self._key()
        self.image.value = _png(self.figure) if self._blit is None else _blitted_png(self.figure, *self._blit)
        self.caption.value = text or ""
        self.last_update_s = time.perf_counter() - start

    def _key(self):
        return self._blit_key(**self.values) if self._blit_key is not None else None

    def blit_error(self, tolerance: int = 8, margin: int = 2) -> int:
        """Pixels of the shown image that are wrong; 0 for a correct blitting explorer (and one that does
        not blit). A pixel counts when it differs by more than ``tolerance`` of 255 in a channel:

        * anywhere, from a blit over a picture kept afresh now — a kept picture gone stale (tick labels of an
          axis whose limits moved, a title or legend that ``draw`` changed, a changing artist left unmarked);
        * everywhere but the thin boxes of static frames (spines) and the anti-aliased edge rings of kept
          legends (grown by ``margin``), from a full render — a static artist that a full render draws over a
          moving one, which the blit draws under it (a reference line or a marker must then be animated too; a
          static frame's edge over a moving line or image is excused)."""
        if self._blit is None:
            return 0

        def rgb(png: bytes) -> np.ndarray:
            return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)

        shown = rgb(self.image.value)
        fresh = _background(self.figure)
        stale = np.abs(shown - rgb(_blitted_png(self.figure, *fresh))).max(-1) > tolerance
        animated = fresh[1]
        for artist in animated:  # a plain draw of the canvas leaves animated artists out: include them once
            artist.set_animated(False)
        try:
            full = rgb(_png(self.figure))
        finally:
            for artist in animated:
                artist.set_animated(True)
        if shown.shape != full.shape:
            return int(shown.shape[0] * shown.shape[1])
        differs = np.abs(shown - full).max(-1) > tolerance
        height, width = differs.shape
        renderer = self.figure.canvas.get_renderer()

        def pixels(box, grow: int) -> tuple[slice, slice]:
            x0, x1 = max(int(box.x0) - grow, 0), min(int(np.ceil(box.x1)) + grow + 1, width)
            y0, y1 = max(height - int(np.ceil(box.y1)) - grow - 1, 0), min(height - int(box.y0) + grow, height)
            return slice(y0, y1), slice(x0, x1)

        # a static frame (spine) is drawn over the moving artists in a full render, under them in a blit where
        # a moving line or image ends on it: its thin box, grown by ``margin``, may differ
        for spine in self.figure.findobj(Spine):
            drawn = spine.get_visible() and spine.axes.axison and spine.axes.get_frame_on()
            if drawn and not spine.get_animated():
                differs[pixels(spine.get_window_extent(renderer), margin)] = False
        # a kept legend is pasted over the moving artists: its frame's anti-aliased edge blends with what
        # lies beneath in a full render, so a ring of ``margin`` pixels around its edge may differ
        for legend in self.figure.findobj(Legend):
            if not legend.get_animated() and legend.get_visible():
                box = legend.get_window_extent(renderer)
                inner = differs[pixels(box.padded(-margin), 0)].copy()
                differs[pixels(box, margin)] = False
                differs[pixels(box.padded(-margin), 0)] = inner
        return int(stale.sum() + differs.sum())

    def set(self, **values) -> None:
        """Move several sliders at once and redraw once (handy in tests and scripted demos)."""
        unknown = set(values) - set(self.sliders)
        if unknown:
            raise ValueError(f"unknown slider(s) {sorted(unknown)}; this explorer has {sorted(self.sliders)}")
        with self.hold_trait_notifications():
            for slider in self.sliders.values():
                slider.unobserve(self._on_change, names="value")
            try:
                for name, value in values.items():
                    self.sliders[name].value = value
            finally:
                for slider in self.sliders.values():
                    slider.observe(self._on_change, names="value")
        self.update()

    def _repr_mimebundle_(self, **kwargs):
        widget_bundle = getattr(super(), "_repr_mimebundle_", None)  # ipywidgets 8
        bundle = (widget_bundle(**kwargs) if widget_bundle else self._widget_view_bundle()) or {}
        settings = ", ".join(f"{s.description} = {_readout(s)}" for s in self.sliders.values())
        caption = re.sub(r"<[^>]+>", "", self.caption.value)
        bundle["text/plain"] = f"Explorer: {settings}" + (f"\n{html.unescape(caption)}" if caption else "")
        # A static copy of the current figure: shown where no widget frontend is running.
        bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        return bundle

    def _widget_view_bundle(self) -> dict:
        """The display bundle ipywidgets 7 shows a widget with (ipywidgets 8 builds it itself)."""
        return {
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2,
                "version_minor": 0,
                "model_id": self._model_id,
            }
        }

    if _WIDGETS_MAJOR < 8:  # ipywidgets 7 (Colab's) displays widgets through this hook, not the bundle

        def _ipython_display_(self, **kwargs):
            from IPython.display import display

            display(self._repr_mimebundle_(), raw=True)
            self._handle_displayed(**kwargs)
