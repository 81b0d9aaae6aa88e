r"""How similar are two representations of the same examples? Linear centred kernel alignment (CKA).

Derived and used in ``notebooks/10_feature_reuse.ipynb``. For representations :math:`X \in \mathbb{R}^{n\times p}`
and :math:`Y \in \mathbb{R}^{n\times q}` of the same n examples, with every column centred,

.. math:: \mathrm{CKA}(X, Y) = \frac{\|Y^\top X\|_F^2}{\|X^\top X\|_F\,\|Y^\top Y\|_F}
          \in [0, 1]

(Kornblith, Norouzi, Lee & Hinton 2019, eq. 3 with linear kernels). It is 1 when Y = XQ·s for an
orthogonal Q and a scale s ≠ 0, and it is invariant to both; it is *not* invariant to an arbitrary
invertible linear map, which can stretch some directions of X more than others.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from metaadv_edu.functional import Params

__all__ = ["layer_representations", "linear_cka"]


def _matrix(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of shape (n_examples, n_features), got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_examples, n_features), got shape {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 examples (rows) to centre, got {t.shape[0]}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must hold finite values only")
    t = t.detach().to(torch.float64)
    return t - t.mean(0, keepdim=True)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Linear CKA between two representations of the same examples (rows), :math:`\in [0, 1]`.

    .. math:: \mathrm{CKA}(X, Y) = \|Y_c^\top X_c\|_F^2 \,/\, (\|X_c^\top X_c\|_F\,\|Y_c^\top Y_c\|_F)

    with :math:`X_c, Y_c` the column-centred matrices. Computed in float64.

    Parameters
    ----------
    x, y : Tensor
        Shapes (n, p) and (n, q): row i of both describes example i. p and q may differ.

    Raises
    ------
    ValueError
        When the shapes disagree, or a representation is constant over the examples (CKA undefined).
    """
    xc, yc = _matrix("x", x), _matrix("y", y)
    if xc.shape[0] != yc.shape[0]:
        raise ValueError(f"x and y must describe the same examples: {xc.shape[0]} rows vs {yc.shape[0]}")
    xx, yy = torch.linalg.matrix_norm(xc.T @ xc), torch.linalg.matrix_norm(yc.T @ yc)
    for name, norm in (("x", xx), ("y", yy)):
        if norm <= 0:
            raise ValueError(f"{name} is the same for every example after centring; CKA is undefined")
    return float(torch.linalg.matrix_norm(yc.T @ xc) ** 2 / (xx * yy))


def layer_representations(model: nn.Sequential, params: Params, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each parameterised layer of a ``Sequential`` passes on, run with ``params``: for every
    ``Linear``/``Conv2d`` at index i, the output after the activation (and pooling) that follow it,
    flattened to (n_examples, features); the last layer's output as it is. Keys: ``"layer 1"``, …"""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    missing = [k for k, _ in model.named_parameters() if k not in params]
    if missing:
        raise ValueError(f"params lacks the model's tensors {missing}")
    out: dict[str, torch.Tensor] = {}
    count = 0
    layers = list(model)
    for index, layer in enumerate(layers):
        own = {name: params[f"{index}.{name}"] for name, _ in layer.named_parameters()}
        x = functional_call(layer, own, (x,)) if own else layer(x)
        if own:
            count += 1
        following = layers[index + 1] if index + 1 < len(layers) else None
        ends_block = following is None or any(True for _ in following.parameters()) or isinstance(following, nn.Flatten)
        if count and ends_block and f"layer {count}" not in out:
            out[f"layer {count}"] = x.flatten(1)
    return out
