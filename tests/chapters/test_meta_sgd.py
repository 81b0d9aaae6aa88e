"""Notebook 07 · Meta-SGD: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch

from metaadv_edu import models
from metaadv_edu.chapters import meta_sgd as chapter


def no_grad_step(p, g, a):
    with torch.no_grad():
        return {k: p[k] - a[k] * g[k] for k in p}


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda p, g, a: {k: p[k] - a[k] * g[k] for k in p}, True, "differentiable with respect to θ and α"),
    (lambda p, g, a: {k: p[k] + a[k] * g[k] for k in p}, False, "wrong sign"),
    (lambda p, g, a: {k: p[k] - a[k].mean() * g[k] for k in p}, False, "not a scalar"),
    (lambda p, g, a: p, False, "not θ − α∘∇L"),
    (lambda p, g, a: {k: p[k] - a[k].detach() * g[k] for k in p}, False, "does not reach α"),
    (lambda p, g, a: {k: p[k] - a[k].data * g[k] for k in p}, False, "does not reach α"),
    (lambda p, g, a: {k: (p[k] - a[k] * g[k]).detach() for k in p}, False, "detached"),
    (lambda p, g, a: {k: p[k].detach() - a[k] * g[k] for k in p}, False, "does not reach θ"),
    (no_grad_step, False, "detached"),
])
def test_check_meta_sgd_step(fn, ok, hint, capsys):
    assert chapter.check_meta_sgd_step(fn) is ok
    assert hint in capsys.readouterr().out


def test_metasgd_explorer_switches_models_and_scales_alpha(device):
    from metaadv_edu import metasgd

    variants = {}
    for i, k in enumerate((5, 10)):
        torch.manual_seed(i)
        net, maml_net = models.SineRegressor().to(device), models.SineRegressor().to(device)
        variants[f"K={k}"] = (net, metasgd.init_inner_lrs(net, 0.01 * (i + 1)), maml_net, k)
    ex = chapter.metasgd_explorer(variants, n_tasks=3)
    images = {ex.image.value}
    for name, value in (("model", "K=10"), ("alpha_scale", 2.0), ("task", 2)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "K = 10" in ex.caption.value
