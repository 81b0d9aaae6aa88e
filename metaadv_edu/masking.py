r"""Gradient masking, and the attacks that see through it: BPDA and gradient-free random search.

Derived in ``notebooks/11_certified_robustness.ipynb``, §1. A "defence" that quantises its input,

.. math:: q(x) = \mathrm{round}\big((n_{\text{levels}} - 1)\,x\big) / (n_{\text{levels}} - 1),

has a zero gradient almost everywhere (``round`` is piecewise constant), so gradient attacks such as
FGSM and PGD receive no signal and the defence *looks* robust: the gradients are obfuscated (Athalye,
Carlini & Wagner 2018, "shattered gradients"). Backward Pass Differentiable Approximation (BPDA) keeps
q in the forward pass and replaces it by the identity in the backward pass,

.. math:: \nabla_x f(q(x)) \approx \nabla f\,\big|_{q(x)},

which is what :class:`InputQuantization` with ``straight_through=True`` computes. :func:`random_search`
needs no gradient at all: a simplified Square Attack (Andriushchenko et al. 2020) on the corners of the
L∞ ball.
"""

from __future__ import annotations

import torch
from torch import nn

from metaadv_edu import _validate as v

__all__ = ["InputQuantization", "bpda", "margin", "quantized", "random_search"]


class InputQuantization(nn.Module):
    """Round every input value to the nearest of ``levels`` equally spaced values in [0, 1].

    ``straight_through=True`` gives BPDA's version: the same output, but the backward pass treats the
    rounding as the identity (``x + (q(x) − x).detach()``).
    """

    def __init__(self, levels: int = 3, *, straight_through: bool = False):
        super().__init__()
        self.levels = v.integer("levels", levels, low=2)
        self.straight_through = bool(straight_through)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        q = torch.round(x.clamp(0, 1) * steps) / steps
        return x + (q - x).detach() if self.straight_through else q

    def extra_repr(self) -> str:
        return f"levels={self.levels}, straight_through={self.straight_through}"


def quantized(model: nn.Module, levels: int = 3) -> nn.Sequential:
    """The defended classifier x ↦ model(q(x)): ``model`` itself is shared, not copied."""
    return nn.Sequential(InputQuantization(levels), model)


def bpda(defended: nn.Sequential) -> nn.Sequential:
    """The same classifier as ``defended`` (made by :func:`quantized`) with a straight-through quantiser:
    identical outputs, gradients that pass through the rounding as if it were the identity."""
    if not (isinstance(defended, nn.Sequential) and isinstance(defended[0], InputQuantization)):
        raise TypeError("defended must be a classifier made by masking.quantized(model, levels)")
    return nn.Sequential(InputQuantization(defended[0].levels, straight_through=True), *list(defended)[1:])


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j per example: negative exactly when the prediction is wrong."""
    own = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return own - others


@torch.no_grad()
def random_search(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    *,
    iterations: int = 300,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Gradient-free L∞ attack: random search over corners of the ε-ball (a simplified Square Attack).

    Starts from :math:`\delta = \epsilon\,s` with random signs s; each iteration proposes, for every
    example still classified correctly, new random signs on a random square of pixels (all channels),
    and keeps the proposal when it lowers the margin :math:`z_y - \max_{j \ne y} z_j`. Squares shrink
    from half the shorter image side to one pixel. Only forward passes: gradient masking cannot stop it.
    """
    epsilon = v.nonnegative("epsilon", epsilon)
    iterations = v.integer("iterations", iterations)
    v.same_batch(x, y)
    if x.ndim != 4:
        raise ValueError(f"x must be images of shape (batch, channels, height, width), got {tuple(x.shape)}")
    x0 = x.detach()

    def signs(shape):
        return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(x0.dtype).to(x0.device)

    def project(delta):
        out = x0 + delta
        return out.clamp(*clamp) if clamp is not None else out

    delta = epsilon * signs(x0.shape)
    best = margin(model(project(delta)), y)
    height, width = x0.shape[-2:]
    for it in range(iterations):
        active = best >= 0
        if epsilon == 0 or not active.any():
            break
        h = max(1, round(min(height, width) / 2 * (1 - it / iterations)))  # the square fits either side
        rows = torch.randint(0, height - h + 1, (len(x0), 1, 1, 1), generator=generator).to(x0.device)
        cols = torch.randint(0, width - h + 1, (len(x0), 1, 1, 1), generator=generator).to(x0.device)
        r = torch.arange(height, device=x0.device).view(1, 1, -1, 1)
        c = torch.arange(width, device=x0.device).view(1, 1, 1, -1)
        square = (r >= rows) & (r < rows + h) & (c >= cols) & (c < cols + h)
        patch = epsilon * signs((len(x0), x0.shape[1], 1, 1))
        proposal = torch.where(square & active[:, None, None, None], patch, delta)
        value = margin(model(project(proposal)), y)
        better = (value < best) & active
        delta = torch.where(better[:, None, None, None], proposal, delta)
        best = torch.where(better, value, best)
    return project(delta).detach()
