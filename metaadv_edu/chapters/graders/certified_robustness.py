"""Notebook 11's exercise graders (re-exported by :mod:`metaadv_edu.chapters.certified_robustness`, whose
``POINTS`` weighs them): the exact L∞ radius of a linear classifier, eq. (4); interval bound propagation
through an affine layer; and the certified radius of randomized smoothing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from scipy import stats as scipy_stats
from torch import nn

from metaadv_edu import certify, grading

__all__ = ["check_interval_affine", "check_linear_radius", "check_smoothing_radius"]


def _linear_cases():
    for device in grading.devices():
        for seed, n_classes, n_features in ((0, 3, 5), (1, 4, 8), (2, 10, 16)):
            g = torch.Generator().manual_seed(seed)
            weight = torch.randn(n_classes, n_features, generator=g).to(device)
            bias = torch.randn(n_classes, generator=g).to(device)
            x = torch.rand(7, n_features, generator=g).to(device)
            y = (x @ weight.T + bias).argmax(1)
            y[0] = (y[0] + 1) % n_classes  # one misclassified example: radius 0
            yield weight, bias, x, y


def check_linear_radius(my_radius: Callable) -> bool:
    """Grade ``my_radius(weight, bias, x, y) -> radius``: each example's exact L∞ radius, no box;
    0 for a misclassified example. ``x`` has shape (B, n_features)."""

    def body() -> str:
        for weight, bias, x, y in _linear_cases():
            ref = certify.linear_certified_radius(weight, bias, x, y).to(x.dtype)
            out = grading.tensor_like(grading.call(my_radius, weight, bias, x, y), ref, "radius")
            if grading.close(out, ref, 1e-4):
                continue
            z = x @ weight.T + bias
            diff = weight[y][:, None, :] - weight[None, :, :]
            margin = z.gather(1, y[:, None]) - z
            own = torch.nn.functional.one_hot(y, weight.shape[0]).bool()
            l2 = (margin / diff.norm(dim=-1)).masked_fill(own, float("inf")).amin(1).clamp(min=0)
            if grading.close(out, l2, 1e-4):
                raise grading.Stop("you divided by the L2 norm: for an L∞ budget the dual norm is L1, ‖w_y − w_j‖₁")
            ratio = margin / diff.abs().sum(-1)
            if grading.close(out, ratio.masked_fill(own, float("-inf")).amax(1).clamp(min=0), 1e-4):
                raise grading.Stop("take the minimum over j ≠ y: the attacker picks the easiest wrong class")
            nobias = (x @ weight.T).gather(1, y[:, None]) - x @ weight.T
            if grading.close(out, (nobias / diff.abs().sum(-1)).masked_fill(own, float("inf")).amin(1).clamp(min=0)):
                raise grading.Stop("the margin z_y − z_j includes the biases b_y − b_j")
            if grading.close(out, ratio.masked_fill(own, float("inf")).amin(1), 1e-4):
                raise grading.Stop("a misclassified example has radius 0, not a negative one (clamp at 0)")
            if grading.close(out, torch.zeros_like(ref)):
                raise grading.Stop("all zeros: leave out j = y, whose margin is 0 (and whose ‖w_y − w_y‖₁ is 0)")
            raise grading.Stop("not min over j ≠ y of (z_y − z_j)/‖w_y − w_j‖₁")
        return "the exact radius on every case, misclassified examples included"

    return grading.run("linear radius", body)


def check_interval_affine(my_affine: Callable) -> bool:
    """Grade ``my_affine(weight, bias, lower, upper) -> (lower_out, upper_out)``: interval bounds of
    ``lower @ weight.T + bias`` over the box [lower, upper] (shape (B, n_in) → (B, n_out))."""

    def body() -> str:
        for device in grading.devices():
            for seed in range(3):
                g = torch.Generator().manual_seed(seed)
                weight, bias = torch.randn(4, 6, generator=g).to(device), torch.randn(4, generator=g).to(device)
                lower = torch.randn(5, 6, generator=g).to(device)
                upper = lower + torch.rand(5, 6, generator=g).to(device)
                layer = nn.Linear(6, 4).to(device)
                with torch.no_grad():
                    layer.weight.copy_(weight)
                    layer.bias.copy_(bias)
                    ref_lo, ref_up = certify.interval_layer(layer, lower, upper)
                out = grading.call(my_affine, weight, bias, lower, upper)
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise grading.Stop("return a pair (lower_out, upper_out)")
                lo = grading.tensor_like(out[0], ref_lo, "lower_out")
                up = grading.tensor_like(out[1], ref_up, "upper_out")
                if grading.close(lo, ref_lo, 1e-4) and grading.close(up, ref_up, 1e-4):
                    continue
                mid, rad = (upper + lower) / 2, (upper - lower) / 2
                centre, through_w = mid @ weight.T + bias, rad @ weight.T
                if grading.close(lo, centre - through_w, 1e-4) and grading.close(up, centre + through_w, 1e-4):
                    raise grading.Stop(
                        "the radius went through W, not |W| (the same as W·lower + b and W·upper + b): a negative "
                        "weight maps the upper input bound to the lower output bound. Use the radius |W|r"
                    )
                if grading.close(up - lo, 2 * through_w.abs(), 1e-4):
                    raise grading.Stop("|W r| is not |W| r: weights of both signs cancel in W r. Use the radius |W|r")
                if grading.close(lo, ref_lo - bias, 1e-4) and grading.close(up, ref_up + bias, 1e-4):
                    raise grading.Stop("the bias shifts the centre only; the radius is |W| r without it")
                if grading.close(lo, ref_lo - bias, 1e-4) and grading.close(up, ref_up - bias, 1e-4):
                    raise grading.Stop("the bias is missing: the centre is Wμ + b")
                if grading.close(lo, ref_lo + bias, 1e-4) and grading.close(up, ref_up + bias, 1e-4):
                    raise grading.Stop("the bias is added twice: the centre is Wμ + b")
                if grading.close(lo, ref_up, 1e-4) and grading.close(up, ref_lo, 1e-4):
                    raise grading.Stop("lower and upper are swapped")
                raise grading.Stop("not (Wμ + b − |W|r, Wμ + b + |W|r) with μ = (u + l)/2, r = (u − l)/2")
        return "centre through W and b, radius through |W|: sound and as tight as intervals allow"

    return grading.run("interval affine rule", body)


def check_smoothing_radius(my_radius: Callable) -> bool:
    """Grade ``my_radius(p_lower, sigma) -> radius`` for a number ``p_lower`` in [0, 1]: Cohen et al.'s
    certified L2 radius, 0 when ``p_lower`` ≤ 1/2 (no certificate)."""

    def body() -> str:
        for sigma in (0.25, 0.5, 1.0, 2.0):
            for p in (0.3, 0.5, 0.6, 0.9, 0.99):
                ref = certify.smoothing_radius(p, sigma)
                out = grading.call(my_radius, p, sigma)
                try:
                    value = float(out)
                except (TypeError, ValueError):
                    raise grading.Stop(f"return a number, got {type(out).__name__}") from None
                if abs(value - ref) <= 1e-6 * max(1, abs(ref)):
                    continue
                inv = float(scipy_stats.norm.ppf(p))
                hints = [
                    (sigma * float(scipy_stats.norm.cdf(p)), "use the inverse of Φ (norm.ppf), not Φ itself"),
                    (sigma * inv, "no certificate when p_lower ≤ 1/2: return 0 there"),
                    (inv, "the radius scales with the noise: multiply by σ"),
                    (sigma**2 * inv, "σ, not σ²: the radius is σ·Φ⁻¹(p_lower)"),
                    (
                        sigma / 2 * inv,
                        "σ/2·(Φ⁻¹(p_A) − Φ⁻¹(p_B)) with p_B = 1 − p_A is σ·Φ⁻¹(p_A): you dropped p_B's term",
                    ),
                ]
                for wrong, hint in hints:
                    if p > 0.5 and abs(value - wrong) <= 1e-6 * max(1, abs(wrong)):
                        raise grading.Stop(hint)
                if p <= 0.5:
                    raise grading.Stop("no certificate when p_lower ≤ 1/2: return 0 there")
                raise grading.Stop("not σ·Φ⁻¹(p_lower)")
        return "σ·Φ⁻¹(p_lower), and 0 where p_lower ≤ 1/2"

    return grading.run("smoothing radius", body)
