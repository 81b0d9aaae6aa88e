"""metaadv_edu.masking: the quantiser hides the gradient, BPDA restores it, random search needs none."""

import pytest
import torch
from torch import nn

from metaadv_edu import attacks, masking, models


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return models.TinyCNN(1, 10, width=4).eval()


def test_quantiser_hides_the_gradient_and_bpda_restores_it():
    model = small_cnn()
    defended = masking.quantized(model, 3)
    through = masking.bpda(defended)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert torch.equal(defended(x), through(x))
    (g_masked,) = torch.autograd.grad(defended(x).sum(), x)
    (g_bpda,) = torch.autograd.grad(through(x).sum(), x)
    q = defended[0](x).detach().requires_grad_(True)
    (g_at_q,) = torch.autograd.grad(model(q).sum(), q)
    assert (g_masked == 0).all() and torch.allclose(g_bpda, g_at_q)
    with pytest.raises(TypeError, match="quantized"):
        masking.bpda(model)


def test_random_search_stays_in_the_ball_and_beats_the_masked_gradient():
    model = small_cnn()
    defended = masking.quantized(model, 3)
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = defended(x).argmax(1)
    adv = masking.random_search(defended, x, y, 0.3, iterations=100, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    fgsm_adv = attacks.fgsm(defended, x, y, 0.3)
    with torch.no_grad():
        assert (defended(fgsm_adv).argmax(1) == y).all()  # zero gradient: FGSM does nothing
        assert (defended(adv).argmax(1) != y).float().mean() > 0.5
    assert torch.equal(masking.random_search(defended, x, y, 0.0), x)
    with pytest.raises(ValueError, match="epsilon"):
        masking.random_search(defended, x, y, -1.0)


def test_random_search_handles_images_wider_than_tall():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 10)).eval()
    x = torch.rand(8, 1, 2, 16, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    adv = masking.random_search(model, x, y, 0.2, iterations=30, generator=torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.2 + 1e-6
