"""Notebook 06 · Reptile: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest

from metaadv_edu.chapters import reptile as chapter


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).mean(0) for k in t}, True, "for one task and for many"),
    (lambda t, p, b: {k: t[k] - b * (p[k] - t[k]).mean(0) for k in t}, False, "wrong sign"),
    (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).sum(0) for k in t}, False, "mean"),
    (lambda t, p, b: {k: t[k] + (p[k] - t[k]).mean(0) for k in t}, False, "β"),
    (lambda t, p, b: [t[k] for k in t], False, "dict"),
])
def test_check_reptile_update(fn, ok, hint, capsys):
    assert chapter.check_reptile_update(fn) is ok
    assert hint in capsys.readouterr().out


def test_reptile_explorer_every_slider_changes_the_figure():
    ex = chapter.reptile_explorer()
    images = {ex.image.value}
    for name, value in (("inner_lr", 0.3), ("inner_steps", 1), ("outer_lr", 0.8)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "Reptile at" in ex.caption.value
