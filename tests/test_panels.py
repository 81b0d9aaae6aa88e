"""The attack panels draw each example where its label says it is: image strips with white gaps, δ on its own scale."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from metaadv_edu import panels, plotting


@pytest.mark.parametrize("channels", [1, 3])
def test_attack_columns_place_every_example_in_its_own_column(channels):
    n, h, w = 3, 4, 5
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, channels, h, w, generator=g)
    x_adv = (x + 0.1 * (torch.rand(x.shape, generator=g) * 2 - 1)).clamp(0, 1)
    y, pred_clean, pred_adv = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]), torch.tensor([2, 1, 1])
    fig = Figure()
    cols = panels.AttackColumns(fig, fig.add_gridspec(3, n), n, (channels, h, w))
    cols.show(x, x_adv, y, pred_clean, pred_adv, 0.1)
    strips = [np.ma.filled(image.get_array().astype(float), np.nan) for _, image in cols.rows]
    step = w + panels.AttackColumns.GAP
    assert strips[0].shape[1] == n * w + (n - 1) * panels.AttackColumns.GAP
    for c in range(n):
        cut = slice(c * step, c * step + w)
        np.testing.assert_allclose(strips[0][:, cut], plotting.image_hwc(x[c]), atol=1e-6)
        np.testing.assert_allclose(strips[1][:, cut], panels.delta_hw(x_adv[c] - x[c]), atol=1e-6)
        np.testing.assert_allclose(strips[2][:, cut], plotting.image_hwc(x_adv[c]), atol=1e-6)
        if c < n - 1:
            gap = slice(c * step + w, (c + 1) * step)
            assert (strips[0][:, gap] == 1).all() and np.isnan(strips[1][:, gap]).all()
    assert cols.rows[1][1].get_clim() == pytest.approx((-0.1, 0.1))
    clean, attacked = ([t.get_text() for t in row] for row in cols.labels)
    assert clean == ["class 0 → ✓ 0", "class 1 → ✓ 1", "class 2 → ✗ 1"]
    assert attacked == ["→ ✗ 2", "→ ✓ 1", "→ ✗ 1"]  # a wrong prediction is marked by a symbol, not colour alone
    colours = [t.get_color() for t in cols.labels[1]]
    wrong, right = plotting.PALETTE["vermillion"], plotting.PALETTE["black"]
    assert colours == [wrong, right, wrong]
    # each label sits above the centre of its own image
    centres = [t.get_position()[0] for t in cols.labels[0]]
    assert centres == pytest.approx([c * step + (w - 1) / 2 for c in range(n)])
