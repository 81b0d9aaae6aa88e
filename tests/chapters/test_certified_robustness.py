"""Notebook 11 · Certified robustness: its derivation checks reject plausible wrong implementations, its
graders name each typical mistake, its explorer redraws from precomputed arrays."""

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from metaadv_edu import certify, masking, models
from metaadv_edu.chapters import certified_robustness as chapter
from tests.wrong import rejects


def linear_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(10, 64, generator=g, dtype=torch.float64)
    bias = torch.randn(10, generator=g, dtype=torch.float64)
    x = torch.rand(6, 64, generator=g, dtype=torch.float64)
    y = (x @ weight.T + bias).argmax(1)
    y[0] = (y[0] + 1) % 10  # one misclassified example: radius 0
    return weight, bias, x, y


def radius_l2(weight, bias, x, y):
    z = x @ weight.T + bias
    diff = weight[y][:, None, :] - weight[None, :, :]
    ratio = (z.gather(1, y[:, None]) - z) / diff.norm(dim=-1)
    own = torch.nn.functional.one_hot(y, weight.shape[0]).bool()
    return ratio.masked_fill(own, float("inf")).amin(1).clamp(min=0)


def radius_ok(weight, bias, x, y):
    return certify.linear_certified_radius(weight, bias, x, y)


def test_linear_radius_check_accepts_the_formula():
    assert chapter.linear_radius_check(radius_ok, *linear_problem())["passes"]


@rejects("linear_radius_lp", "margin divided by the L2 norm of w_y − w_j instead of the L1 (dual) norm")
def test_linear_radius_check_rejects_the_l2_norm():
    assert not chapter.linear_radius_check(radius_l2, *linear_problem())["passes"]


@rejects("linear_radius_lp", "the box radius offered as the unboxed one (a different problem)")
def test_linear_radius_check_rejects_the_boxed_answer():
    def boxed(weight, bias, x, y):
        return certify.linear_certified_radius(weight, bias, x, y, box=(0.0, 1.0))

    assert not chapter.linear_radius_check(boxed, *linear_problem())["passes"]


@rejects("linear_radius_lp", "no clamp at 0: a negative radius for a misclassified example")
def test_linear_radius_check_rejects_a_negative_radius():
    def unclamped(weight, bias, x, y):
        z = x @ weight.T + bias
        ratio = (z.gather(1, y[:, None]) - z) / (weight[y][:, None, :] - weight[None, :, :]).abs().sum(-1)
        return ratio.masked_fill(torch.nn.functional.one_hot(y, weight.shape[0]).bool(), float("inf")).amin(1)

    assert not chapter.linear_radius_check(unclamped, *linear_problem())["passes"]


def small_cnn():
    torch.manual_seed(0)
    return models.TinyCNN(1, 10, width=4).eval()


def radius_through_w(layer, lower, upper):
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        mid, rad = (upper + lower) / 2, (upper - lower) / 2
        mid = layer(mid)
        if isinstance(layer, nn.Linear):
            rad = nn.functional.linear(rad, layer.weight)
        else:
            rad = nn.functional.conv2d(rad, layer.weight, None, layer.stride, layer.padding)
        return mid - rad, mid + rad
    return certify.interval_layer(layer, lower, upper)


def bounds_through_w(layer, lower, upper):
    if isinstance(layer, (nn.Linear, nn.Conv2d)):
        return layer(lower), layer(upper)
    return certify.interval_layer(layer, lower, upper)


def scaled_radius(factor):
    def rule(layer, lower, upper):
        low, up = certify.interval_layer(layer, lower, upper)
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            mid, rad = (up + low) / 2, (up - low) / 2
            return mid - factor * rad, mid + factor * rad
        return low, up

    return rule


def conv_through_w(layer, lower, upper):
    if isinstance(layer, nn.Conv2d):
        return radius_through_w(layer, lower, upper)
    return certify.interval_layer(layer, lower, upper)


def test_soundness_check_accepts_interval_arithmetic():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(small_cnn(), x, 0.1, generator=torch.Generator().manual_seed(1))
    assert out["passes"] and out["outside"] == 0


@rejects("ibp_soundness", "affine rule with the radius through W instead of |W|")
def test_soundness_check_rejects_radius_through_w():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(
        small_cnn(), x, 0.1, layer_rule=radius_through_w, generator=torch.Generator().manual_seed(1)
    )
    assert not out["passes"]


@rejects("ibp_soundness", "affine rule mapping lower to W·lower + b and upper to W·upper + b")
def test_soundness_check_rejects_bounds_through_w():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(
        small_cnn(), x, 0.1, layer_rule=bounds_through_w, generator=torch.Generator().manual_seed(1)
    )
    assert not out["passes"]


@rejects("ibp_soundness", "radius through W in the convolution only, |W| in the linear layer")
def test_soundness_check_rejects_w_in_the_convolution_only():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(
        small_cnn(), x, 0.05, layer_rule=conv_through_w, generator=torch.Generator().manual_seed(1)
    )
    assert not out["passes"] and out["layer_error"] > 1e-3


@rejects("ibp_soundness", "radius 0.7·|W|r: too tight (unsound), yet never caught by sampling deep outputs")
@pytest.mark.parametrize("factor", [0.7, 0.9, 1.1])
def test_soundness_check_rejects_a_scaled_radius(factor):
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(
        small_cnn(), x, 0.05, layer_rule=scaled_radius(factor), generator=torch.Generator().manual_seed(1)
    )
    assert not out["passes"] and out["layer_error"] > 1e-3


def elementwise_rule(kind):
    def rule(layer, lower, upper):
        lo, up = certify.interval_layer(layer, lower, upper)
        if kind == "relu" and isinstance(layer, nn.ReLU):
            return lo, 0.9 * up
        if kind == "pool" and isinstance(layer, nn.MaxPool2d):
            pool = nn.functional.avg_pool2d
            return pool(lower, layer.kernel_size, layer.stride), pool(upper, layer.kernel_size, layer.stride)
        return lo, up

    return rule


@rejects("ibp_soundness", "ReLU rule (relu(l), 0.9·relu(u)): an upper bound slightly too tight")
def test_soundness_check_rejects_a_shrunk_relu_bound():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(
        small_cnn(), x, 0.05, layer_rule=elementwise_rule("relu"), generator=torch.Generator().manual_seed(1)
    )
    assert not out["passes"] and out["layer_error"] > 1e-3


@rejects("ibp_soundness", "max pooling bounded by average pooling of the bounds")
def test_soundness_check_rejects_average_pooled_bounds():
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = chapter.interval_soundness_check(
        small_cnn(), x, 0.05, layer_rule=elementwise_rule("pool"), generator=torch.Generator().manual_seed(1)
    )
    assert not out["passes"] and out["layer_error"] > 1e-3


def test_smoothing_check_accepts_cohen_radius():
    assert chapter.smoothing_radius_check(certify.smoothing_radius)["passes"]


@rejects("smoothing_radius", "σ²·Φ⁻¹(p) instead of σ·Φ⁻¹(p) (with σ = 0.5: too small, not tight)")
def test_smoothing_check_rejects_sigma_squared():
    out = chapter.smoothing_radius_check(lambda p, s: s**2 * scipy_stats.norm.ppf(p))
    assert not out["passes"] and not out["tight"]


@rejects("smoothing_radius", "2σ·Φ⁻¹(p): forgetting the ½ of the general formula (unsound)")
def test_smoothing_check_rejects_a_radius_too_large():
    out = chapter.smoothing_radius_check(lambda p, s: 2 * s * scipy_stats.norm.ppf(p))
    assert not out["passes"] and not out["sound"]


@rejects("smoothing_radius", "σ·Φ⁻¹(p) with no abstention: a negative radius for p ≤ ½")
def test_smoothing_check_rejects_no_abstention():
    out = chapter.smoothing_radius_check(lambda p, s: s * scipy_stats.norm.ppf(p))
    assert not out["passes"] and not out["abstains"]


@rejects("smoothing_radius", "Φ⁻¹(p) without the factor σ (right only at σ = 1)")
def test_smoothing_check_rejects_a_radius_without_sigma():
    out = chapter.smoothing_radius_check(lambda p, s: scipy_stats.norm.ppf(p) if p > 0.5 else 0.0)
    assert not out["passes"]


@rejects("smoothing_radius", "1.15·σ·Φ⁻¹(p): a radius 15 % too large, unsound but near the boundary's scale")
def test_smoothing_check_rejects_a_slightly_too_large_radius():
    out = chapter.smoothing_radius_check(lambda p, s: 1.15 * s * scipy_stats.norm.ppf(p) if p > 0.5 else 0.0)
    assert not out["passes"] and not out["sound"] and out["tight"]


@rejects("smoothing_radius", "0.999·σ·Φ⁻¹(p): sound but not the exact radius of a linear classifier")
def test_smoothing_check_rejects_a_slightly_too_small_radius():
    out = chapter.smoothing_radius_check(lambda p, s: 0.999 * s * scipy_stats.norm.ppf(p) if p > 0.5 else 0.0)
    assert not out["passes"] and out["sound"] and not out["tight"]


def test_smoothing_check_confirms_its_reference_by_monte_carlo():
    out = chapter.smoothing_radius_check(certify.smoothing_radius, n=10_000)
    assert out["monte_carlo"] and out["max_error"] < 1e-9


def test_smoothing_check_needs_two_noise_levels():
    with pytest.raises(ValueError, match="sigmas"):
        chapter.smoothing_radius_check(certify.smoothing_radius, sigmas=(1.0, 1.0))


# ------------------------------------------------------------------ graders
def lin_ok(weight, bias, x, y):
    return certify.linear_certified_radius(weight, bias, x, y).to(x.dtype)


def lin_l2(weight, bias, x, y):
    return radius_l2(weight, bias, x, y)


def lin_max(weight, bias, x, y):
    z = x @ weight.T + bias
    diff = weight[y][:, None, :] - weight[None, :, :]
    ratio = (z.gather(1, y[:, None]) - z) / diff.abs().sum(-1)
    own = torch.nn.functional.one_hot(y, weight.shape[0]).bool()
    return ratio.masked_fill(own, float("-inf")).amax(1).clamp(min=0)


def lin_negative(weight, bias, x, y):
    z = x @ weight.T + bias
    diff = weight[y][:, None, :] - weight[None, :, :]
    ratio = (z.gather(1, y[:, None]) - z) / diff.abs().sum(-1)
    own = torch.nn.functional.one_hot(y, weight.shape[0]).bool()
    return ratio.masked_fill(own, float("inf")).amin(1)


def lin_stub(weight, bias, x, y):
    raise NotImplementedError


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (lin_ok, True, "exact radius"),
        (lin_l2, False, "L1"),
        (lin_max, False, "minimum over j"),
        (lin_negative, False, "clamp at 0"),
        (lin_stub, False, "not written yet"),
    ],
)
def test_check_linear_radius(fn, ok, hint, capsys):
    assert chapter.check_linear_radius(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def aff_ok(weight, bias, lower, upper):
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    mid, rad = mid @ weight.T + bias, rad @ weight.abs().T
    return mid - rad, mid + rad


def aff_endpoints(weight, bias, lower, upper):
    return lower @ weight.T + bias, upper @ weight.T + bias


def aff_bias_in_radius(weight, bias, lower, upper):
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    mid, rad = mid @ weight.T + bias, rad @ weight.abs().T + bias
    return mid - rad, mid + rad


def aff_radius_through_w(weight, bias, lower, upper):
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    mid, rad = mid @ weight.T + bias, rad @ weight.T
    return mid - rad, mid + rad


def aff_abs_after_w(weight, bias, lower, upper):
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    mid, rad = mid @ weight.T + bias, (rad @ weight.T).abs()
    return mid - rad, mid + rad


def aff_no_bias(weight, bias, lower, upper):
    lo, up = aff_ok(weight, bias, lower, upper)
    return lo - bias, up - bias


def aff_swapped(weight, bias, lower, upper):
    lo, up = aff_ok(weight, bias, lower, upper)
    return up, lo


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (aff_ok, True, "radius through |W|"),
        (aff_endpoints, False, "W·lower + b and W·upper + b"),
        (aff_radius_through_w, False, "the radius went through W, not |W|"),
        (aff_abs_after_w, False, "|W r| is not |W| r"),
        (aff_no_bias, False, "the bias is missing"),
        (aff_bias_in_radius, False, "centre only"),
        (aff_swapped, False, "swapped"),
        (lambda w, b, lo, up: lo, False, "pair"),
    ],
)
def test_check_interval_affine(fn, ok, hint, capsys):
    assert chapter.check_interval_affine(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def rad(p, s):
    return s * scipy_stats.norm.ppf(p) if p > 0.5 else 0.0


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (rad, True, "σ·Φ⁻¹"),
        (lambda p, s: s * scipy_stats.norm.cdf(p) if p > 0.5 else 0.0, False, "inverse of Φ"),
        (lambda p, s: s * scipy_stats.norm.ppf(p), False, "return 0 there"),
        (lambda p, s: scipy_stats.norm.ppf(p) if p > 0.5 else 0.0, False, "multiply by σ"),
        (lambda p, s: s**2 * scipy_stats.norm.ppf(p) if p > 0.5 else 0.0, False, "σ²"),
        (lambda p, s: s / 2 * scipy_stats.norm.ppf(p) if p > 0.5 else 0.0, False, "p_B"),
        (lambda p, s: "big", False, "a number"),
    ],
)
def test_check_smoothing_radius(fn, ok, hint, capsys):
    assert chapter.check_smoothing_radius(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


# ------------------------------------------------------------------ explorer
def test_explorer_redraws_for_every_control_without_computing():
    rng = np.random.default_rng(0)
    eps = [0.0, 0.05, 0.1, 0.15]
    certified = np.stack([rng.random(20) < 0.9 - 0.2 * k for k in range(4)])
    attacked = certified | (rng.random((4, 20)) < 0.5)
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 10
    curves = {"PGD": [0.9, 0.9, 0.9, 0.9], "BPDA": [0.9, 0.6, 0.3, 0.1]}
    smoothing = {0.25: (rng.random(20) * 0.5, rng.random(20) < 0.8), 0.5: (rng.random(20), rng.random(20) < 0.6)}
    explorer = chapter.bounds_explorer(eps, attacked, certified, x, y, eps, curves, smoothing)
    first = explorer.image.value
    explorer.set(epsilon=0.15)
    assert explorer.image.value != first
    gap = int((attacked[3] & ~certified[3]).sum())
    assert f"{gap} test digits are in the gap" in explorer.caption.value
    second = explorer.image.value
    explorer.set(sigma=0.5)
    assert explorer.image.value != second
    third = explorer.image.value
    explorer.set(attack="BPDA")
    assert explorer.image.value != third and "under BPDA at ε = 0.15: 10.0%" in explorer.caption.value
    assert explorer.blit_error() == 0, "the blitted image is what a full render draws"


def test_checklist_flags_the_masked_defence_and_passes_bpda():
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=4).eval()
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    defended = masking.quantized(model, 3)
    naive = chapter.evaluation_checklist(defended, defended, x, y)
    honest = chapter.evaluation_checklist(defended, masking.bpda(defended), x, y)
    assert not naive["accuracy at ε = 1 is 0"] and honest["accuracy at ε = 1 is 0"]
    assert not naive["input gradient not identically zero"] and honest["input gradient not identically zero"]
    assert not naive["PGD-10 clearly stronger than FGSM"]


def test_checklist_passes_an_undefended_model():
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=4).eval()
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    out = chapter.evaluation_checklist(model, model, x, y)
    assert out["accuracy at ε = 1 is 0"] and out["input gradient not identically zero"]
    assert out["random search not stronger than PGD-10"]
    assert out["2 restarts of PGD-10 break no more than one run"]
    assert out["steps ε/8 (×20) or ε/2 (×10) break no more than ε/4"]
    detailed = chapter.evaluation_checklist(model, model, x, y, details=True)
    assert {name: passes for name, (passes, _) in detailed.items()} == out
    assert all(isinstance(evidence, str) and evidence for _, evidence in detailed.values())


def test_checklist_fails_an_under_powered_attack():
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=4).eval()
    torch.manual_seed(1)
    unrelated = models.TinyCNN(1, 10, width=4).eval()  # PGD follows the gradients of an unrelated network
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    out = chapter.evaluation_checklist(model, unrelated, x, y, epsilon=0.2)
    assert not out["2 restarts of PGD-10 break no more than one run"]
    assert not out["steps ε/8 (×20) or ε/2 (×10) break no more than ε/4"]
    assert not out["random search not stronger than PGD-10"]


def _checklist_case():
    """A small CNN, an unrelated one (the transfer source) and 60 inputs it labels itself."""
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=4).eval()
    torch.manual_seed(1)
    unrelated = models.TinyCNN(1, 10, width=4).eval()
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model, unrelated, x, model(x).argmax(1)


def test_checklist_step_size_row_does_not_depend_on_the_restart_seeds():
    model, unrelated, x, y = _checklist_case()
    row = "steps ε/8 (×20) or ε/2 (×10) break no more than ε/4"
    runs = [
        chapter.evaluation_checklist(model, unrelated, x, y, epsilon=0.2, restart_seeds=seeds, details=True)
        for seeds in ((1, 2), (5, 6))
    ]
    assert runs[0][row] == runs[1][row]
    assert (
        runs[0]["2 restarts of PGD-10 break no more than one run"]
        != runs[1]["2 restarts of PGD-10 break no more than one run"]
    )


def test_checklist_rejects_bad_restart_seeds():
    model = models.TinyCNN(1, 10, width=4).eval()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="restart_seeds"):
        chapter.evaluation_checklist(model, model, x, model(x).argmax(1), restart_seeds=(0, 1))


def test_checklist_effort_rows_report_counts_without_a_one_sided_test():
    model, unrelated, x, y = _checklist_case()
    out = chapter.evaluation_checklist(model, unrelated, x, y, epsilon=0.2, details=True)
    _, restarts = out["2 restarts of PGD-10 break no more than one run"]
    assert restarts.endswith("/60") and "p =" not in restarts  # a count: the worst case only moves one way
    _, steps = out["steps ε/8 (×20) or ε/2 (×10) break no more than ε/4"]
    assert steps.startswith("ε/8: ") and "; ε/2: " in steps
    assert steps.count(" vs ") == 2 and steps.count(", p = ") == 2  # a single run can differ both ways


# ------------------------------------------------------------------ attack sweeps
def tiny_setup(n=40):
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=4).eval()
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model, x, model(x).argmax(1)


def test_pgd_run_stays_in_the_ball_and_does_not_move_at_zero():
    model, x, y = tiny_setup(8)
    assert torch.equal(chapter.pgd_run(model, x, y, 0.0), x)
    adv = chapter.pgd_run(model, x, y, 0.1, steps=5, restarts=2, seed=3)
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv, chapter.pgd_run(model, x, y, 0.1, steps=5, restarts=2, seed=3))
    with pytest.raises(ValueError, match="epsilon"):
        chapter.pgd_run(model, x, y, -0.1)


def test_masking_sweep_sees_the_zero_gradient_and_bpda_undoes_it():
    model, x, y = tiny_setup()
    defended = masking.quantized(model, 3)
    eps = [0.0, 0.3]
    correct, undefended = chapter.masking_sweep(
        model, defended, masking.bpda(defended), x, y, eps, search_iterations=20
    )
    assert list(correct) == ["FGSM", "PGD-10", "BPDA-PGD (3 × 30)", "PGD on f alone (skips q)", "random search"]
    clean = (defended(x).argmax(1) == y).float().numpy()
    for name, c in correct.items():
        assert c.shape == (2, len(x)) and np.array_equal(c[0], clean), name  # ε = 0: nothing moves
    assert np.array_equal(correct["FGSM"][1], clean)  # sign(0) = 0: FGSM returns x unchanged
    assert correct["BPDA-PGD (3 × 30)"][1].mean() < correct["FGSM"][1].mean()
    assert undefended.shape == (2, len(x)) and undefended[0].all() and undefended[1].mean() < 1


def test_certify_and_attack_brackets_the_truth():
    model, x, y = tiny_setup()
    certified, survives = chapter.certify_and_attack(model, x, y, [0.0, 0.01, 0.05, 0.2], search_iterations=20)
    assert certified.shape == survives.shape == (4, len(x)) and certified.dtype == survives.dtype == bool
    assert survives[0].all()  # y is the model's own prediction
    assert not (certified & ~survives).any()  # a certified example survives every attack
    assert (certified[:-1] >= certified[1:]).all()  # nested balls: certified at ε ⇒ certified at smaller ε
    assert survives[-1].mean() < 1
