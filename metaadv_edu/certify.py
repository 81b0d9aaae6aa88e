r"""Certified robustness: lower bounds on robust accuracy, where attacks give upper bounds.

Derived in ``notebooks/11_certified_robustness.ipynb``. Three certificates:

* **Linear models, L∞** (Kolter & Madry's tutorial, ch. 2): the smallest adversarial ε of a correctly
  classified ``x`` under logits :math:`z = Wx + b` is, without the pixel box,

  .. math:: \epsilon^\star(x) = \min_{j \ne y} \frac{z_y - z_j}{\|w_y - w_j\|_1}

  (Hölder: the dual norm of L∞ is L1). With the box :math:`[0, 1]^n` the formula is a lower bound;
  :func:`linear_certified_radius` with ``box=(0, 1)`` solves the boxed problem exactly.
* **Interval bound propagation** (Gowal et al. 2018): an affine layer maps the box with centre μ and
  radius r to centre :math:`W\mu + b` and radius :math:`|W| r`; ReLU and max-pooling are monotone, so
  they map lower and upper bounds separately.
* **Randomized smoothing** (Cohen, Rosenfeld & Kolter 2019): the smoothed classifier
  :math:`g(x) = \arg\max_c P(f(x + \mathcal{N}(0, \sigma^2 I)) = c)` is constant in the L2 ball of radius
  :math:`\sigma\,\Phi^{-1}(\underline{p_A})` when :math:`\underline{p_A} > 1/2` lower-bounds the top
  class's probability.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize
from scipy import stats as scipy_stats
from torch import nn

from metaadv_edu import _validate as v

__all__ = [
    "SUPPORTED_LAYERS",
    "certified_by_intervals",
    "clopper_pearson_lower",
    "flat_layers",
    "ibp_loss",
    "interval_bounds",
    "interval_layer",
    "linear_certified_radius",
    "linear_radius_lp",
    "margin_lower_bounds",
    "smoothed_certify",
    "smoothing_radius",
]

#: The layers :func:`interval_bounds` propagates intervals through.
SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)


# ------------------------------------------------------------------ linear models
def _check_linear(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(
            f"weight must be (n_classes, n_features) and bias (n_classes,); got {tuple(weight.shape)} "
            f"and {tuple(bias.shape)}"
        )
    v.same_batch(x, y)
    flat = x.flatten(1)
    if flat.shape[1] != weight.shape[1]:
        raise ValueError(f"x has {flat.shape[1]} features per example but weight expects {weight.shape[1]}")
    if not torch.isfinite(flat).all():
        raise ValueError("x must hold finite values (no NaN or inf)")
    if int(y.min()) < 0 or int(y.max()) >= weight.shape[0]:
        raise ValueError(f"y must hold labels in [0, {weight.shape[0]})")
    return flat


def linear_certified_radius(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    box: tuple[float, float] | None = None,
) -> torch.Tensor:
    r"""Each example's exact L∞ robustness radius under the linear classifier ``z = weight·vec(x) + bias``.

    .. math:: \epsilon^\star = \min_{j \ne y} \frac{(w_y - w_j)^\top x + b_y - b_j}{\|w_y - w_j\|_1}

    the smallest ε at which some δ with :math:`\|\delta\|_\infty \le \epsilon` makes class j score at
    least as high as y (notebook 11, §2). Misclassified examples get 0. With ``box=(low, high)`` the
    perturbed input must also stay in the box: for each j the largest drop of the margin at budget t is
    :math:`\sum_i |a_i| \min(t, m_i)`, :math:`a = w_y - w_j`, where :math:`m_i` is how far pixel i may
    move in the harmful direction before leaving the box; the radius is the smallest t at which the
    drop reaches the margin (``inf`` if it never does). Returns shape ``(batch,)``, float64.
    """
    flat = _check_linear(weight, bias, x, y).double()
    w, b = weight.detach().double(), bias.detach().double()
    z = flat @ w.T + b
    a = w[y][:, None, :] - w[None, :, :]  # (B, C, n): w_y − w_j
    margin = z.gather(1, y[:, None]) - z  # (B, C): z_y − z_j
    if box is None:
        norm = a.abs().sum(-1)
        # identical rows w_y = w_j: class j is never reached if b_y > b_j (inf), always if not (0)
        unreachable = torch.where(margin > 0, math.inf, 0.0).to(margin.dtype)
        radius = torch.where(norm == 0, unreachable, margin / norm.masked_fill(norm == 0, 1.0))
    else:
        low, high = (float(c) for c in box)
        room = torch.where(a > 0, flat[:, None, :] - low, high - flat[:, None, :]).clamp(min=0)
        radius = _boxed_radius(a.abs(), room, margin)
    own = torch.zeros_like(radius, dtype=torch.bool)
    own.scatter_(1, y[:, None], True)
    radius = radius.masked_fill(own, math.inf).amin(1)
    return radius.clamp(min=0).to(x.device)


def _boxed_radius(weights: torch.Tensor, room: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Smallest t with Σ_i weights_i·min(t, room_i) ≥ margin, for every (example, class) pair at once."""
    room_sorted, order = room.sort(-1)
    w_sorted = weights.gather(-1, order)
    # Before breakpoint k, the pixels with room ≥ room_k still move: slope = Σ_{i ≥ k} w_i.
    slope_after = w_sorted.flip(-1).cumsum(-1).flip(-1)
    steps = torch.diff(room_sorted, dim=-1, prepend=torch.zeros_like(room_sorted[..., :1]))
    drop_at = (slope_after * steps).cumsum(-1)  # drop reached at t = room_sorted[k]
    reached = drop_at >= margin[..., None]
    k = reached.to(torch.int64).argmax(-1, keepdim=True)
    before = torch.where(k > 0, drop_at.gather(-1, (k - 1).clamp(min=0)), torch.zeros_like(k, dtype=margin.dtype))
    start = torch.where(k > 0, room_sorted.gather(-1, (k - 1).clamp(min=0)), torch.zeros_like(before))
    slope = slope_after.gather(-1, k)
    t = start + (margin[..., None] - before) / slope.clamp(min=1e-300)
    t = t.squeeze(-1)
    return torch.where(reached.any(-1), t, torch.full_like(t, math.inf))


def linear_radius_lp(
    weight: torch.Tensor,
    bias: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    box: tuple[float, float] | None = None,
) -> torch.Tensor:
    r"""The same radius as :func:`linear_certified_radius`, by linear programming (an independent answer).

    For each example and each :math:`j \ne y`: minimise t over (δ, t) subject to :math:`-t \le \delta_i \le t`,
    :math:`(w_y - w_j)^\top(x + \delta) + b_y - b_j \le 0` and, with ``box``, :math:`low \le x + \delta \le high`;
    the radius is the smallest optimum over j (``scipy.optimize.linprog``, HiGHS). Slow: a few examples only.
    """
    flat = _check_linear(weight, bias, x, y).detach().cpu().double().numpy()
    w, b = weight.detach().cpu().double().numpy(), bias.detach().cpu().double().numpy()
    labels = y.detach().cpu().numpy()
    n = flat.shape[1]
    cost = np.zeros(n + 1)
    cost[-1] = 1.0
    eye = np.eye(n)
    ball = np.block([[eye, -np.ones((n, 1))], [-eye, -np.ones((n, 1))]])  # δ − t ≤ 0, −δ − t ≤ 0
    radii = []
    for xi, yi in zip(flat, labels):
        z = xi @ w.T + b
        if np.delete(z, yi).max() >= z[yi]:
            radii.append(0.0)
            continue
        best = math.inf
        for j in range(w.shape[0]):
            if j == yi:
                continue
            a = w[yi] - w[j]
            rows = np.vstack([ball, np.append(a, 0.0)])
            rhs = np.append(np.zeros(2 * n), -(a @ xi + b[yi] - b[j]))
            bounds = [(None, None)] * n if box is None else [(box[0] - c, box[1] - c) for c in xi]
            result = optimize.linprog(cost, A_ub=rows, b_ub=rhs, bounds=[*bounds, (0, None)], method="highs")
            if result.status == 0:
                best = min(best, float(result.x[-1]))
            elif result.status != 2:  # 2: infeasible, class j cannot be reached; anything else is a failure
                raise RuntimeError(f"linprog failed for class {j}: {result.message}")
        radii.append(best)
    return torch.tensor(radii, dtype=torch.float64)


# ------------------------------------------------------------------ interval bound propagation
def interval_layer(layer: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Propagate the box ``[lower, upper]`` through one layer (notebook 11, §3).

    Affine layers (Linear, Conv2d) map centre :math:`\mu = (u + l)/2` and radius :math:`r = (u - l)/2` to
    :math:`W\mu + b` and :math:`|W| r`; ReLU and MaxPool2d are monotone in every input, so they map the
    lower and the upper bound separately; Flatten reshapes both. Conv2d pads the radius exactly as its
    forward pass pads the input (any ``padding_mode``), so reflected or replicated pixels keep their radius.
    """
    if isinstance(layer, nn.Linear):
        mid, rad = (upper + lower) / 2, (upper - lower) / 2
        mid, rad = layer(mid), F.linear(rad, layer.weight.abs())
        return mid - rad, mid + rad
    if isinstance(layer, nn.Conv2d):
        mid, rad = (upper + lower) / 2, (upper - lower) / 2
        mid = layer(mid)
        rad = layer._conv_forward(rad, layer.weight.abs(), None)  # same padding (any mode) as the forward pass
        return mid - rad, mid + rad
    if isinstance(layer, (nn.ReLU, nn.MaxPool2d, nn.Flatten)):
        return layer(lower), layer(upper)
    raise TypeError(
        f"interval bounds do not support the layer {type(layer).__name__}; supported: "
        + ", ".join(t.__name__ for t in SUPPORTED_LAYERS)
    )


def flat_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of the ``nn.Sequential`` ``model``, nested Sequentials unpacked, in the order interval
    bounds pass through them; ``TypeError`` for a layer outside :data:`SUPPORTED_LAYERS`."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential of {[t.__name__ for t in SUPPORTED_LAYERS]}")
    layers = []
    for layer in model:
        layers += flat_layers(layer) if isinstance(layer, nn.Sequential) else [layer]
    for layer in layers:
        if not isinstance(layer, SUPPORTED_LAYERS):
            raise TypeError(
                f"interval bounds do not support the layer {type(layer).__name__}; supported: "
                + ", ".join(t.__name__ for t in SUPPORTED_LAYERS)
            )
    return layers


def _input_box(x: torch.Tensor, epsilon, clamp) -> tuple[torch.Tensor, torch.Tensor]:
    epsilon = v.nonnegative("epsilon", epsilon)
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise ValueError("x must be a floating-point tensor of finite values (no NaN or inf)")
    lower, upper = x - epsilon, x + epsilon
    if clamp is not None:
        lower, upper = lower.clamp(*clamp), upper.clamp(*clamp)
    return lower, upper


def interval_bounds(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float,
    *,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    layer_rule=interval_layer,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Lower and upper bounds on the logits of ``model`` over :math:`\{x' : \|x' - x\|_\infty \le \epsilon\}`.

    The input box :math:`[x - \epsilon, x + \epsilon]` is intersected with ``clamp`` (the valid pixels:
    it only tightens the bound), then pushed through the layers of the ``nn.Sequential`` ``model``
    (Linear, Conv2d, ReLU, MaxPool2d, Flatten) by ``layer_rule`` (default :func:`interval_layer`).
    Sound: every perturbed input's logits lie between the bounds.
    """
    layers = flat_layers(model)
    lower, upper = _input_box(x, epsilon, clamp)
    for layer in layers:
        lower, upper = layer_rule(layer, lower, upper)
    return lower, upper


def margin_lower_bounds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, clamp=(0.0, 1.0)
) -> torch.Tensor:
    r"""Lower bounds on the margins :math:`z_y - z_j` over the ε-ball, shape (batch, n_classes).

    The last layer must be Linear; it is folded into the margin (Gowal et al. 2018, "elision"): with
    :math:`c_j = w_y - w_j`, the bound is :math:`c_j^\top\mu + b_y - b_j - |c_j|^\top r` for the box (μ, r)
    of the last hidden layer — tighter than :math:`\underline{z_y} - \overline{z_j}`. Column y is 0.
    """
    v.same_batch(x, y)
    layers = flat_layers(model)
    if not isinstance(layers[-1], nn.Linear):
        raise TypeError(f"the last layer must be Linear to bound margins, got {type(layers[-1]).__name__}")
    lower, upper = _input_box(x, epsilon, clamp)
    for layer in layers[:-1]:
        lower, upper = interval_layer(layer, lower, upper)
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    w, b = layers[-1].weight, layers[-1].bias
    c = w[y][:, None, :] - w[None, :, :]  # (B, C, h)
    offset = b[y][:, None] - b[None, :] if b is not None else 0.0
    return (c * mid[:, None, :]).sum(-1) + offset - (c.abs() * rad[:, None, :]).sum(-1)


def certified_by_intervals(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, tolerance: float = 1e-4
) -> torch.Tensor:
    """True where interval bounds prove that no ε-perturbation (inside [0, 1]) changes the prediction from y.

    The bounds are computed in the model's floating-point precision, whose rounding is not accounted for;
    an example counts as certified only when every margin's lower bound exceeds ``tolerance`` (≥ 0), a
    safety margin for float32 rounding of the logits."""
    tolerance = v.nonnegative("tolerance", tolerance)
    with torch.no_grad():
        margins = margin_lower_bounds(model, x, y, epsilon)
    margins = margins.scatter(1, y[:, None], math.inf)
    return margins.amin(1) > tolerance


def ibp_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, kappa: float = 0.5) -> torch.Tensor:
    r"""Gowal et al.'s training loss :math:`\kappa\,L(z, y) + (1 - \kappa)\,L(\hat z, y)`.

    :math:`\hat z_j = -\underline{(z_y - z_j)}` are the worst-case logits from :func:`margin_lower_bounds`
    (:math:`\hat z_y = 0`); L is the cross-entropy.
    """
    kappa = v.finite_number("kappa", kappa, low=0.0, high=1.0)
    worst = -margin_lower_bounds(model, x, y, epsilon)
    return kappa * F.cross_entropy(model(x), y) + (1 - kappa) * F.cross_entropy(worst, y)


# ------------------------------------------------------------------ randomized smoothing
def smoothing_radius(p_lower, sigma: float):
    r"""Certified L2 radius :math:`R = \sigma\,\Phi^{-1}(\underline{p_A})` of the smoothed classifier.

    Cohen et al. (2019), Theorem 1 with :math:`\underline{p_A} = 1 - \overline{p_B}`:
    :math:`R = \tfrac{\sigma}{2}(\Phi^{-1}(\underline{p_A}) - \Phi^{-1}(\overline{p_B}))`. Where
    :math:`\underline{p_A} \le 1/2` nothing is certified and the radius is 0. ``p_lower``: a number, an
    array or a tensor in [0, 1]; returns the same kind.
    """
    sigma = v.positive("sigma", sigma)
    is_tensor = isinstance(p_lower, torch.Tensor)
    p = p_lower.detach().cpu().double().numpy() if is_tensor else np.asarray(p_lower, dtype=np.float64)
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_lower must be probabilities in [0, 1] (no NaN)")
    radius = np.where(p > 0.5, sigma * scipy_stats.norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)
    if is_tensor:
        return torch.as_tensor(radius, device=p_lower.device)
    return float(radius) if radius.ndim == 0 else radius


def clopper_pearson_lower(count, n: int, alpha: float = 0.001):
    r"""One-sided :math:`1 - \alpha` Clopper–Pearson lower bound on a probability from ``count`` successes
    in ``n`` trials: the :math:`\alpha` quantile of Beta(count, n − count + 1) (0 when count = 0)."""
    n = v.integer("n", n)
    alpha = v.finite_number("alpha", alpha, low=0.0, low_inclusive=False, high=0.5)
    k = np.asarray(count.detach().cpu().numpy() if isinstance(count, torch.Tensor) else count, dtype=np.float64)
    if (k < 0).any() or (k > n).any():
        raise ValueError(f"count must be in [0, n={n}]")
    return np.where(k > 0, scipy_stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)


def _class_counts(model, x, sigma, n, n_classes, generator, batch_size):
    counts = torch.zeros(len(x), n_classes, dtype=torch.int64)
    with torch.no_grad():
        for i, xi in enumerate(x):
            done = 0
            while done < n:
                m = min(batch_size, n - done)
                noise = torch.randn((m, *xi.shape), generator=generator, dtype=xi.dtype).to(xi.device)
                pred = model(xi.unsqueeze(0) + sigma * noise).argmax(-1).cpu()
                counts[i] += torch.bincount(pred, minlength=n_classes)
                done += m
    return counts


def smoothed_certify(
    model,
    x: torch.Tensor,
    sigma: float,
    *,
    n0: int = 64,
    n: int = 1000,
    alpha: float = 0.001,
    n_classes: int = 10,
    generator: torch.Generator | None = None,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Cohen et al.'s CERTIFY for each example: predictions (−1 = abstain) and certified L2 radii.

    ``n0`` noisy copies choose the top class :math:`\hat c_A`; ``n`` fresh ones count how often the base
    classifier ``model`` answers :math:`\hat c_A`; :math:`\underline{p_A}` is the Clopper–Pearson lower
    bound at level ``alpha``; the radius is :func:`smoothing_radius`. With probability at least 1 − alpha
    per example, a non-abstaining prediction is what the smoothed classifier answers everywhere within
    the radius. Noise is drawn on the CPU from ``generator``.
    """
    sigma = v.positive("sigma", sigma)
    n0, n = v.integer("n0", n0), v.integer("n", n)
    chosen = _class_counts(model, x, sigma, n0, n_classes, generator, batch_size).argmax(1)
    counts = _class_counts(model, x, sigma, n, n_classes, generator, batch_size)
    k = counts.gather(1, chosen[:, None]).squeeze(1)
    p_lower = clopper_pearson_lower(k.numpy(), n, alpha)
    radius = torch.as_tensor(smoothing_radius(p_lower, sigma), dtype=torch.float64)
    prediction = torch.where(torch.as_tensor(p_lower) > 0.5, chosen, torch.full_like(chosen, -1))
    return prediction, radius
