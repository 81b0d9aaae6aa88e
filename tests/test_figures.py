"""Figures everyone can read: colours come only from the palette in ``metaadv_edu.plotting`` (Okabe–Ito), series
differ in shape as well as colour, wrong predictions carry a symbol, and text is at least 10 pt."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import matplotlib.colors as mcolors
import pytest
import torch
from matplotlib.figure import Figure

from metaadv_edu import plotting

PACKAGE = Path(plotting.__file__).parent
#: Every module that draws figures: the chapters and the shared plotting code.
PLOTTING_MODULES = sorted(PACKAGE.glob("chapters/*.py")) + [
    PACKAGE / n for n in ("plotting.py", "panels.py", "widgets.py")
]

COLOUR_KEYWORDS = {
    "c",
    "color",
    "colors",
    "colour",
    "facecolor",
    "facecolors",
    "edgecolor",
    "edgecolors",
    "ecolor",
    "mec",
    "mfc",
    "markeredgecolor",
    "markerfacecolor",
    "labelcolor",
}
COLOUR_SETTERS = {"set_color", "set_facecolor", "set_edgecolor", "set_markerfacecolor", "set_markeredgecolor"}
PLOT_CALLS = {"plot", "semilogx", "semilogy", "loglog", "errorbar", "step"}
# a plot format string with a colour letter: "k", "r--", "o-b", "ko"
FORMAT_WITH_COLOUR = re.compile(r"[-.:,ov^<>1234sp*hH+xXDd|_]*[bgrcmykw][-.:,ov^<>1234sp*hH+xXDd|_]*")


def _named_colour(text: str) -> bool:
    """A colour written as a name, hex or cycle entry ("red", "tab:blue", "#d62728", "C0"): flagged anywhere."""
    lowered = text.lower()
    return (
        lowered in mcolors.CSS4_COLORS
        or lowered in mcolors.TABLEAU_COLORS
        or lowered.startswith(("tab:", "xkcd:"))
        or bool(re.fullmatch(r"#[0-9a-f]{3,8}", lowered))
        or bool(re.fullmatch(r"c\d", lowered))
    )


def _is_colour_value(node: ast.AST) -> bool:
    """A string constant (or a list/tuple/dict of them) that matplotlib reads as a colour (greys "0.5" too)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_colour_value(e) for e in node.elts)
    # "none" (no fill) is not a colour choice
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value != "none"
        and mcolors.is_color_like(node.value)
    )


def _palette_lines(tree: ast.AST) -> set[int]:
    """Lines of the ``PALETTE = {...}`` definition: the one place hex colours are allowed."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "PALETTE" for t in targets):
                lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def literal_colours(source: str, filename: str = "<module>") -> list[str]:
    """``file:line: text`` for every colour written literally in ``source`` instead of taken from the palette."""
    tree = ast.parse(source, filename)
    allowed = _palette_lines(tree)
    # a colour map's name ("gray") and a palette entry's name (PALETTE["grey"]) are not colours written literally
    exempt = {
        id(c) for n in ast.walk(tree) if isinstance(n, ast.keyword) and n.arg == "cmap" for c in ast.walk(n.value)
    }
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = fn.args.posonlyargs + fn.args.args
            named = list(zip(args[len(args) - len(fn.args.defaults) :], fn.args.defaults))
            named += list(zip(fn.args.kwonlyargs, fn.args.kw_defaults))
            exempt |= {id(default) for arg, default in named if arg.arg == "cmap" and default is not None}
    exempt |= {
        id(n.slice)
        for n in ast.walk(tree)
        if isinstance(n, ast.Subscript)
        and (
            (isinstance(n.value, ast.Name) and n.value.id == "PALETTE")
            or (isinstance(n.value, ast.Attribute) and n.value.attr == "PALETTE")
        )
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _named_colour(node.value):
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.keyword) and node.arg in COLOUR_KEYWORDS and _is_colour_value(node.value):
            found.append((node.value.lineno, f"{node.arg}={ast.unparse(node.value)}"))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value in COLOUR_KEYWORDS and _is_colour_value(value):
                    found.append((value.lineno, f"{key.value!r}: {ast.unparse(value)}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in COLOUR_SETTERS and node.args and _is_colour_value(node.args[0]):
                found.append((node.lineno, f"{node.func.attr}({ast.unparse(node.args[0])})"))
            if node.func.attr in PLOT_CALLS:
                for arg in node.args:
                    if (
                        isinstance(arg, ast.Constant)
                        and isinstance(arg.value, str)
                        and FORMAT_WITH_COLOUR.fullmatch(arg.value)
                    ):
                        found.append((arg.lineno, f"format {arg.value!r}"))
    return sorted({f"{filename}:{line}: {text}" for line, text in found if line not in allowed})


@pytest.mark.parametrize("path", PLOTTING_MODULES, ids=lambda p: p.name)
def test_plotting_code_takes_every_colour_from_the_palette(path):
    found = literal_colours(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not found, "literal colours (use plotting.PALETTE / plotting.series):\n" + "\n".join(found)


PLANTED = """
import matplotlib.pyplot as plt
from metaadv_edu.plotting import PALETTE

def draw(ax, xs, ys):
    ax.plot(xs, ys, color=PALETTE["blue"])
    ax.plot(xs, ys, color="tab:red")
    ax.plot(xs, ys, "k--")
    ax.scatter(xs, ys, edgecolors="0.6")
    lines = {"truth": {"color": "green", "lw": 2}}
    colours = {"MAML": "#1f77b4"}
    ax.title.set_color("black")
    ax.imshow(ys, cmap="gray")
    ax.set_title("red = attacked")
"""


def test_the_colour_scan_names_file_and_line_of_each_planted_literal():
    found = literal_colours(PLANTED, "planted.py")
    assert found == [
        "planted.py:10: 'color': 'green'",
        "planted.py:10: 'green'",
        "planted.py:11: '#1f77b4'",
        "planted.py:12: 'black'",
        "planted.py:12: set_color('black')",
        "planted.py:7: 'tab:red'",
        "planted.py:7: color='tab:red'",
        "planted.py:8: format 'k--'",
        "planted.py:9: edgecolors='0.6'",
    ]


def test_the_colour_scan_passes_palette_code():
    clean = "from metaadv_edu.plotting import PALETTE, series\nax.plot(x, y, 'o-', **series(1).line())\n"
    clean += "ax.axhline(0.5, color=PALETTE['grey'], linestyle=':')\nax.imshow(z, cmap='gray')\n"
    clean += "ax.plot(x, y, color=plotting.PALETTE['black'])\n"
    assert literal_colours(clean) == []


def test_palette_is_okabe_ito_and_series_differ_in_shape_as_well_as_colour():
    assert plotting.PALETTE["blue"] == "#0072B2" and plotting.PALETTE["vermillion"] == "#D55E00"
    n = len(plotting.SERIES)
    assert len({s.color for s in plotting.SERIES}) == n
    assert len({s.marker for s in plotting.SERIES}) == n
    assert len({str(s.linestyle) for s in plotting.SERIES}) == n
    assert len({s.hatch for s in plotting.SERIES}) == n
    assert plotting.series(n) == plotting.series(0)
    with pytest.raises(ValueError, match="i must be"):
        plotting.series(-1)


def test_plain_plots_get_the_palette_and_distinct_line_styles():
    fig = Figure()
    ax = fig.subplots()
    lines = [ax.plot([0, 1], [i, i + 1])[0] for i in range(3)]
    assert [mcolors.to_hex(line.get_color()).upper() for line in lines] == [s.color for s in plotting.SERIES[:3]]
    assert len({line.get_linestyle() for line in lines}) == 3


def test_plot_curves_gives_each_curve_its_own_marker_and_line_style():
    ax = plotting.plot_curves([0, 1, 2], {"a": [1, 2, 3], "b": [3, 2, 1]}, xlabel="ε", ylabel="accuracy")
    a, b = ax.get_lines()
    assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle()
    assert ax.get_xlabel() == "ε" and ax.get_ylabel() == "accuracy"


def test_text_is_at_least_ten_points():
    fig = Figure()
    ax = fig.subplots()
    ax.set_title("t")
    ax.set_xlabel("x")
    ax.plot([0, 1], label="a")
    legend = ax.legend()
    sizes = [ax.title.get_fontsize(), ax.xaxis.label.get_fontsize(), legend.get_texts()[0].get_fontsize()]
    sizes += [t.get_fontsize() for t in ax.get_xticklabels()]
    assert min(sizes) >= plotting.MIN_FONT_SIZE == 10


def test_a_wrong_prediction_is_marked_by_a_symbol_as_well_as_colour():
    wrong, right = plotting.mark_prediction("cat", False), plotting.mark_prediction("dog", True)
    assert wrong[0] == "✗ cat" and right[0] == "✓ dog" and wrong[1] != right[1]


def test_parameter_labels_are_words():
    net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40), torch.nn.Linear(40, 1))
    assert plotting.parameter_label("0.weight", net) == "layer 1 weights (40 × 1)"
    assert plotting.parameter_label("2.bias", net) == "layer 2 biases (40)"
    assert plotting.parameter_label("3.weight", net) == "output layer weights (1 × 40)"
    assert plotting.parameter_label("net.0.weight") == "module 0 weights"
    assert plotting.parameter_label("alpha") == "alpha"
    with pytest.raises(ValueError, match="name must be a parameter"):
        plotting.parameter_label("9.weight", net)


def test_epsilon_255_slider_reads_out_fractions_of_255_and_passes_the_float():
    from metaadv_edu import widgets

    slider = widgets.epsilon_255_slider(8 / 255, max_255=32)
    assert slider.label == "8/255" and slider.value == 8 / 255
    assert [label for label, _ in slider.options[:3]] == ["0/255", "1/255", "2/255"] and len(slider.options) == 33
    assert widgets.epsilon_255_slider(0.1, max_255=48).label == "26/255"  # moved to the nearest stop
    shown = []
    ex = widgets.Explorer(lambda fig, epsilon: shown.append(epsilon), {"epsilon": slider})
    ex.sliders["epsilon"].value = 16 / 255
    assert shown[-1] == 16 / 255
    assert "ε — perturbation budget = 16/255" in ex._repr_mimebundle_()["text/plain"]
    for kwargs, name in (({"max_255": 0}, "max_255"), ({"step_255": 0}, "step_255"), ({"value": 0.5}, "value")):
        with pytest.raises(ValueError, match=name):
            widgets.epsilon_255_slider(**kwargs)


def _all_text(fig) -> list:
    return [t for t in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")) if t.get_text()]


def test_density_figure_labels_both_axes_of_both_panels():
    import matplotlib.pyplot as plt

    from metaadv_edu.chapters import gan as chapter

    x = torch.linspace(-4, 5, 50)
    p, q = torch.exp(-(x**2) / 2), torch.exp(-((x - 1) ** 2) / 2)
    fig = chapter.density_figure(x, p, q, p / (p + q), p / (p + q) + 0.01)
    try:
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel()
            styles = {line.get_linestyle() for line in ax.get_lines()}
            assert len(styles) == len(ax.get_lines()) == 2  # told apart without colour
        assert min(t.get_fontsize() for t in _all_text(fig)) >= plotting.MIN_FONT_SIZE
        with pytest.raises(ValueError, match="q must hold one value per point"):
            chapter.density_figure(x, p, q[:10], p, p)
    finally:
        plt.close(fig)


def test_one_task_figure_draws_each_step_count_in_its_own_style():
    import matplotlib.pyplot as plt

    from metaadv_edu import models
    from metaadv_edu.chapters import maml as chapter

    torch.manual_seed(0)
    net = models.mlp([1, 8, 1], torch.nn.ReLU)
    xs = torch.linspace(-4, 4, 5).view(-1, 1)
    fig = chapter.one_task_figure({"a": net, "b": net}, xs, torch.sin(xs), 1.0, 0.0, steps=(0, 1, 5))
    try:
        assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "output y"
        fits = [line for line in fig.axes[0].get_lines() if " step" in line.get_label()]
        assert [line.get_label() for line in fits] == ["0 steps", "1 step", "5 steps"]
        assert len({line.get_linestyle() for line in fits}) == 3
        assert len({line.get_marker() for line in fits}) == 3, "markers too: not colour and dashes alone"
        assert not np_equal(fits[0].get_ydata(), fits[2].get_ydata()), "5 steps of adaptation must move the fit"
        with pytest.raises(ValueError, match="inner_lr"):
            chapter.one_task_figure({"a": net}, xs, torch.sin(xs), 1.0, 0.0, inner_lr=0.0)
    finally:
        plt.close(fig)


def np_equal(a, b) -> bool:
    import numpy as np

    return bool(np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))


def test_alpha_histograms_name_each_tensor_in_words():
    import matplotlib.pyplot as plt

    from metaadv_edu.chapters import meta_sgd as chapter

    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    alphas = {n: torch.full_like(p, 0.01) for n, p in net.named_parameters()}
    fig = chapter.alpha_histograms(alphas, net)
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles == ["layer 1 weights (4 × 1)", "layer 1 biases (4)", "output layer weights (1 × 4)"] + [
            "output layer biases (1)"
        ]
        assert all(ax.get_xlabel() == "learned α" for ax in fig.axes if ax.get_title())
        with pytest.raises(ValueError, match="alphas must map"):
            chapter.alpha_histograms({"9.weight": torch.zeros(1)}, net)
    finally:
        plt.close(fig)


def _cheap_explorers():
    """Explorers that need no trained model: the quadratic Reptile one, GAN runs and certified bounds from arrays."""
    import numpy as np

    from metaadv_edu import data
    from metaadv_edu.chapters import certified_robustness, gan, reptile

    ring = data.ring_mixture(8, 2.0, 0.05)
    g = torch.Generator().manual_seed(0)
    runs = {
        (lr, k): {
            "d_loss": [1.0] * 10,
            "g_loss": [2.0] * 10,
            "snapshot_steps": [1, 25, 50],
            "snapshots": [ring.sample(64, generator=g).tolist() for _ in range(3)],
        }
        for lr in (1e-4, 1e-3)
        for k in (1, 5)
    }
    rng = np.random.default_rng(0)
    eps = [0.0, 0.05, 0.1, 0.15]
    certified = np.stack([rng.random(20) < 0.9 - 0.2 * k for k in range(4)])
    attacked = certified | (rng.random((4, 20)) < 0.5)
    x, y = torch.rand(20, 1, 8, 8, generator=g), torch.arange(20) % 10
    smoothing = {0.25: (rng.random(20) * 0.5, rng.random(20) < 0.8), 0.5: (rng.random(20), rng.random(20) < 0.6)}
    curves = {"PGD": [0.9] * 4, "BPDA": [0.9, 0.6, 0.3, 0.1]}
    return {
        "reptile": reptile.reptile_explorer(),
        "gan": gan.gan_dynamics_explorer(runs, ring),
        "certified": certified_robustness.bounds_explorer(eps, attacked, certified, x, y, eps, curves, smoothing),
    }


def test_explorer_text_is_at_least_ten_points_and_plots_have_axis_labels():
    for name, ex in _cheap_explorers().items():
        sizes = [t.get_fontsize() for t in _all_text(ex.figure)]
        assert sizes and min(sizes) >= plotting.MIN_FONT_SIZE, name
        for ax in ex.figure.axes:
            if ax.get_lines() and ax.axison:  # a plot, not an image strip
                assert ax.get_xlabel(), f"{name}: an axis without a label"
