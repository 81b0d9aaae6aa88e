"""The small networks of the course. None uses BatchNorm running statistics, so every model can be
run functionally under ``torch.func.vmap`` (meta-learning notebooks 05–08)."""

from __future__ import annotations

import math

from torch import nn

from metaadv_edu import _validate as v

__all__ = ["MLP", "LogisticRegression", "SineRegressor", "TinyCNN", "count_parameters", "mlp"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class LogisticRegression(nn.Sequential):
    """Multinomial logistic regression: logits = W·vec(x) + b (notebook 01's linear model)."""

    def __init__(self, in_features: int, n_classes: int = 10):
        v.integer("in_features", in_features)
        v.integer("n_classes", n_classes, low=2)
        super().__init__(nn.Flatten(), nn.Linear(in_features, n_classes))


class MLP(nn.Sequential):
    """Flatten → (Linear → ReLU) × len(hidden) → Linear."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64,), n_classes: int = 10):
        v.integer("in_features", in_features)
        v.integer("n_classes", n_classes, low=1)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, v.integer("hidden width", h)), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        super().__init__(*layers)


class TinyCNN(nn.Sequential):
    """(Conv3×3 → ReLU → MaxPool2) blocks until the map is 4×4, then a linear classifier.

    8×8 digits get one block, 32×32 covers three. ``width`` channels in the first block, doubled
    (up to 4×) in the next ones.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, *, width: int = 16, image_size: int = 8):
        v.integer("in_channels", in_channels)
        v.integer("n_classes", n_classes, low=2)
        v.integer("width", width)
        image_size = v.integer("image_size", image_size, low=4)
        if image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 4, got {image_size}")
        blocks = max(1, int(math.log2(image_size)) - 2)
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(blocks):
            out = width * min(2**i, 4)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels = out
        side = image_size // 2**blocks
        layers += [nn.Flatten(), nn.Linear(channels * side * side, n_classes)]
        super().__init__(*layers)


class SineRegressor(nn.Sequential):
    """The 1-40-40-1 ReLU regressor of MAML's sinusoid experiment (Finn et al. 2017, §5.1).

    ``activation="tanh"`` gives a smooth network, for checks that rely on Taylor expansions
    (a ReLU network's loss has kinks, where second-order expansions break down).
    """

    def __init__(self, hidden: int = 40, activation: str = "relu"):
        hidden = v.integer("hidden", hidden)
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[v.choice("activation", activation, ("relu", "tanh"))]
        super().__init__(nn.Linear(1, hidden), act(), nn.Linear(hidden, hidden), act(), nn.Linear(hidden, 1))


def mlp(sizes, act, last=None) -> nn.Sequential:
    """Linear layers of the given ``sizes`` with ``act()`` between them and ``last`` (a module) at the end."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)
