import pytest
import torch
from torch.func import functional_call, vmap

from metaadv_edu import models


@pytest.mark.parametrize("size, channels", [(8, 1), (32, 3), (16, 3)])
def test_tiny_cnn_shapes(size, channels, device):
    net = models.TinyCNN(channels, 7, width=4, image_size=size).to(device)
    out = net(torch.rand(5, channels, size, size, device=device))
    assert out.shape == (5, 7)


def test_tiny_cnn_rejects_odd_sizes():
    with pytest.raises(ValueError, match="image_size"):
        models.TinyCNN(1, 10, image_size=12)


def test_models_have_no_running_statistics():
    for net in (models.TinyCNN(), models.MLP(64), models.SineRegressor(), models.LogisticRegression(64)):
        assert not list(net.buffers())


def test_sine_regressor_is_1_40_40_1():
    net = models.SineRegressor()
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(40, 1), (40,), (40, 40), (40,), (1, 40), (1,)]


def test_cnn_runs_under_vmap_with_per_task_parameters(device):
    net = models.TinyCNN(1, 3, width=4).to(device)
    params = {k: p.detach().unsqueeze(0).repeat(2, *[1] * p.ndim) for k, p in net.named_parameters()}
    x = torch.rand(2, 6, 1, 8, 8, device=device)
    out = vmap(lambda p, xb: functional_call(net, p, (xb,)))(params, x)
    assert out.shape == (2, 6, 3)
    torch.testing.assert_close(out[0], net(x[0]))


def test_mlp_and_count():
    net = models.MLP(64, (32, 16), 10)
    assert net(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    assert models.count_parameters(net) == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
