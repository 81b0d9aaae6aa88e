"""Notebook 03 · GANs: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import data
from metaadv_edu.chapters import gan as chapter


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda r, f: -(F.logsigmoid(r).mean() + F.logsigmoid(-f).mean()), True, "stable"),
    (lambda r, f: F.logsigmoid(r).mean() + F.logsigmoid(-f).mean(), False, "−V"),
    (lambda r, f: -(F.logsigmoid(f).mean() + F.logsigmoid(-r).mean()), False, "swapped"),
    (lambda r, f: -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean()), False, "not finite"),
    (lambda r, f: -(F.logsigmoid(r).sum() + F.logsigmoid(-f).sum()), False, "average"),
])
def test_check_discriminator_loss(fn, ok, hint, capsys):
    assert chapter.check_discriminator_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_gan_dynamics_explorer_scrubs_cached_runs():

    ring = data.ring_mixture(8, 2.0, 0.05)
    g = torch.Generator().manual_seed(0)
    runs = {(lr, k): {"d_loss": [1.0] * 10, "g_loss": [2.0] * 10, "snapshot_steps": [1, 25, 50],
                      "snapshots": [ring.sample(64, generator=g).tolist() for _ in range(3)]}
            for lr in (1e-4, 1e-3) for k in (1, 5)}
    ex = chapter.gan_dynamics_explorer(runs, ring)
    images = {ex.image.value}
    for name, value in (("lr_d", 1e-4), ("k_disc", 5), ("snapshot", 0)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
    assert len(images) == 4 and "modes covered" in ex.caption.value
