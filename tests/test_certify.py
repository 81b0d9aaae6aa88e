"""metaadv_edu.certify: interval bounds are sound, the linear radius is exact, the smoothing radius tends to
the distance to the boundary."""

import math

import numpy as np
import pytest
import torch
from scipy import optimize
from torch import nn

from metaadv_edu import attacks, certify, models


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return models.TinyCNN(1, 10, width=4).eval()


def random_linear(seed=0, n_classes=4, n_features=6):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_classes, n_features, generator=g, dtype=torch.float64)
    bias = torch.randn(n_classes, generator=g, dtype=torch.float64)
    x = torch.rand(12, n_features, generator=g, dtype=torch.float64)
    y = (x @ weight.T + bias).argmax(1)
    return weight, bias, x, y


# ------------------------------------------------------------------ interval bounds
def sampled_logits(model, x, epsilon, n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    outs = []
    with torch.no_grad():
        for kind in ("corner", "uniform"):
            for _ in range(n // 2):
                u = torch.rand(x.shape, generator=g)
                noise = (2 * (u > 0.5).float() - 1) if kind == "corner" else 2 * u - 1
                outs.append(model((x + epsilon * noise).clamp(0, 1)))
        if epsilon > 0:
            y = x.new_zeros(len(x), dtype=torch.long)
            outs.append(model(attacks.pgd(model, x, y, epsilon, step_size=epsilon / 4, steps=10)))
    return torch.stack(outs)


@pytest.mark.parametrize("epsilon", [0.0, 0.02, 0.1])
def test_interval_bounds_contain_every_sampled_output(epsilon):
    model = small_cnn()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lower, upper = certify.interval_bounds(model, x, epsilon)
    z = sampled_logits(model, x, epsilon)
    assert (z >= lower - 1e-5).all() and (z <= upper + 1e-5).all()
    if epsilon == 0:
        assert torch.allclose(lower, upper, atol=1e-5) and torch.allclose(lower, model(x), atol=1e-5)


def wrong_affine_rule(layer, lower, upper):
    """The radius pushed through W instead of |W|."""
    if isinstance(layer, nn.Linear):
        mid, rad = (upper + lower) / 2, (upper - lower) / 2
        mid, rad = layer(mid), nn.functional.linear(rad, layer.weight)
        return mid - rad, mid + rad
    return certify.interval_layer(layer, lower, upper)


def test_a_wrong_affine_rule_is_caught_by_sampling():
    model = small_cnn()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    lower, upper = certify.interval_bounds(model, x, 0.1, layer_rule=wrong_affine_rule)
    z = sampled_logits(model, x, 0.1)
    assert ((z < lower - 1e-5) | (z > upper + 1e-5)).any()


def test_the_first_affine_bound_is_attained_by_the_sign_corner():
    # r' = |W| r is exact for one affine layer: η = r·sign(W_i) reaches unit i's upper bound (a rule such as
    # rad = upper − lower, without the 1/2, is sound but too loose and fails here)
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    lower = torch.rand(3, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    upper = lower + 0.3
    lo, up = certify.interval_layer(layer, lower, upper)
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    with torch.no_grad():
        for i in range(4):
            corner_up = layer(mid + rad * layer.weight[i].sign())[:, i]
            corner_lo = layer(mid - rad * layer.weight[i].sign())[:, i]
            assert torch.allclose(corner_up, up[:, i]) and torch.allclose(corner_lo, lo[:, i])


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv_interval_bounds_are_sound_for_every_padding_mode(mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1, padding_mode=mode)
    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    epsilon = 0.1
    lo, up = certify.interval_layer(conv, x - epsilon, x + epsilon)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(200):
            z = conv(x + epsilon * (2 * (torch.rand(x.shape, generator=g) > 0.5).float() - 1))
            assert (z >= lo - 1e-5).all() and (z <= up + 1e-5).all()


def test_maxpool_and_relu_are_monotone_rules():
    lower = torch.tensor([[[[-1.0, 0.5], [0.2, -3.0]]]])
    upper = lower + torch.tensor([[[[0.5, 0.1], [2.0, 1.0]]]])
    lo, up = certify.interval_layer(nn.MaxPool2d(2), lower, upper)
    assert lo.item() == 0.5 and up.item() == pytest.approx(2.2)
    lo, up = certify.interval_layer(nn.ReLU(), lower, upper)
    assert (lo == lower.clamp(min=0)).all() and (up == upper.clamp(min=0)).all()


def test_clamp_only_tightens():
    model = small_cnn()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    lo_c, up_c = certify.interval_bounds(model, x, 0.1)
    lo, up = certify.interval_bounds(model, x, 0.1, clamp=None)
    assert (lo_c >= lo - 1e-6).all() and (up_c <= up + 1e-6).all()


def test_margin_bounds_are_tighter_than_logit_bounds_and_sound():
    model = small_cnn()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    m = certify.margin_lower_bounds(model, x, y, 0.05)
    lower, upper = certify.interval_bounds(model, x, 0.05)
    naive = lower.gather(1, y[:, None]) - upper
    assert (m >= naive - 1e-5).all()
    z = sampled_logits(model, x, 0.05)
    true_margins = z.gather(2, y[None, :, None].expand(len(z), -1, 1)) - z
    assert (true_margins >= m - 1e-5).all()


def test_certified_examples_survive_pgd():
    model = small_cnn()
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = model(x).argmax(1)
    certified = certify.certified_by_intervals(model, x, y, 0.01)
    adv = attacks.pgd(model, x, y, 0.01, step_size=0.003, steps=20)
    with torch.no_grad():
        survived = model(adv).argmax(1) == y
    assert certified.any() and survived[certified].all()


def test_interval_bounds_reject_bad_inputs():
    model = small_cnn()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="epsilon"):
        certify.interval_bounds(model, x, -0.1)
    with pytest.raises(ValueError, match="NaN"):
        certify.interval_bounds(model, x.masked_fill(x > 0.5, float("nan")), 0.1)
    with pytest.raises(TypeError, match="BatchNorm2d"):
        certify.interval_bounds(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), x, 0.1)
    with pytest.raises(TypeError, match="Sequential"):
        certify.interval_bounds(nn.Linear(64, 2), x.flatten(1), 0.1)


def test_ibp_loss_is_the_clean_loss_at_zero_epsilon_and_grows_with_it():
    model = small_cnn()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.arange(8) % 10
    clean = nn.functional.cross_entropy(model(x), y)
    worst0 = certify.ibp_loss(model, x, y, 0.0, kappa=0.0)
    # at ε = 0 the worst-case logits are z − z_y, whose cross-entropy equals the clean one
    assert torch.allclose(worst0, clean, atol=1e-5)
    assert certify.ibp_loss(model, x, y, 0.1, kappa=0.0) > worst0


# ------------------------------------------------------------------ linear models
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_radius_matches_the_lp(seed):
    weight, bias, x, y = random_linear(seed)
    exact = certify.linear_certified_radius(weight, bias, x, y)
    lp = certify.linear_radius_lp(weight, bias, x, y)
    assert torch.allclose(exact, lp, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxed_radius_matches_the_boxed_lp_and_is_never_smaller(seed):
    weight, bias, x, y = random_linear(seed, n_features=8)
    free = certify.linear_certified_radius(weight, bias, x, y)
    boxed = certify.linear_certified_radius(weight, bias, x, y, box=(0.0, 1.0))
    lp = certify.linear_radius_lp(weight, bias, x, y, box=(0.0, 1.0))
    finite = torch.isfinite(lp)
    assert torch.equal(torch.isfinite(boxed), finite)
    assert torch.allclose(boxed[finite], lp[finite], atol=1e-6)
    assert (boxed >= free - 1e-9).all()


def test_linear_radius_is_attained_by_the_sign_perturbation():
    weight, bias, x, y = random_linear(3)
    radius = certify.linear_certified_radius(weight, bias, x, y)
    z = x @ weight.T + bias
    for i in range(len(x)):
        margins = [
            (z[i, y[i]] - z[i, j]) / (weight[y[i]] - weight[j]).abs().sum() if j != y[i] else math.inf for j in range(4)
        ]
        j = int(np.argmin(margins))
        step = (radius[i] * (1 + 1e-6)) * -(weight[y[i]] - weight[j]).sign()
        z_adv = (x[i] + step) @ weight.T + bias
        assert z_adv[j] >= z_adv[y[i]]


def test_linear_radius_is_zero_for_misclassified_and_checks_inputs():
    weight, bias, x, _ = random_linear(0)
    wrong = ((x @ weight.T + bias).argmax(1) + 1) % 4
    assert (certify.linear_certified_radius(weight, bias, x, wrong) == 0).all()
    with pytest.raises(ValueError, match="weight"):
        certify.linear_certified_radius(weight[0], bias, x, wrong)
    with pytest.raises(ValueError, match="features"):
        certify.linear_certified_radius(weight, bias, x[:, :3], wrong)
    with pytest.raises(ValueError, match="NaN"):
        certify.linear_certified_radius(weight, bias, x * float("nan"), wrong)


def test_identical_weight_rows_give_inf_or_zero_not_nan():
    weight, bias, x, y = random_linear(4)
    weight = torch.cat([weight, weight[:1]])  # class 4 copies class 0's weights, with a lower bias
    bias = torch.cat([bias, bias[:1] - 1.0])
    y = (x @ weight.T + bias).argmax(1)
    exact = certify.linear_certified_radius(weight, bias, x, y)
    assert not exact.isnan().any()
    assert torch.allclose(exact, certify.linear_radius_lp(weight, bias, x, y), atol=1e-6)
    only_twins = certify.linear_certified_radius(weight[[0, 4]], bias[[0, 4]], x, torch.zeros_like(y))
    assert torch.isinf(only_twins).all()  # class 0 always wins against its twin with a lower bias
    tied = certify.linear_certified_radius(weight[[0, 4]], bias[[0, 0]], x, torch.zeros_like(y))
    assert (tied == 0).all()


def test_linear_radius_lp_raises_when_the_solver_fails(monkeypatch):
    weight, bias, x, y = random_linear(0)

    def failing(*args, **kwargs):
        return optimize.OptimizeResult(status=4, message="numerical difficulties", x=None)

    monkeypatch.setattr(certify.optimize, "linprog", failing)
    with pytest.raises(RuntimeError, match="linprog failed"):
        certify.linear_radius_lp(weight, bias, x, y)


# ------------------------------------------------------------------ randomized smoothing
def test_smoothing_radius_values_and_errors():
    assert certify.smoothing_radius(0.5, 0.25) == 0.0
    assert certify.smoothing_radius(0.3, 0.25) == 0.0
    assert certify.smoothing_radius(0.975, 0.5) == pytest.approx(0.5 * 1.959964, rel=1e-5)
    out = certify.smoothing_radius(torch.tensor([0.9, 0.4]), 1.0)
    assert isinstance(out, torch.Tensor) and out[1] == 0
    with pytest.raises(ValueError, match="sigma"):
        certify.smoothing_radius(0.9, 0.0)
    with pytest.raises(ValueError, match="p_lower"):
        certify.smoothing_radius(1.2, 0.5)
    with pytest.raises(ValueError, match="p_lower"):
        certify.smoothing_radius(float("nan"), 0.5)


def test_clopper_pearson_lower_bound_covers_the_truth():
    rng = np.random.default_rng(0)
    p, n = 0.8, 200
    counts = rng.binomial(n, p, size=2000)
    lower = certify.clopper_pearson_lower(counts, n, alpha=0.01)
    assert (lower <= p).mean() >= 0.985  # at least 99 % in expectation
    assert certify.clopper_pearson_lower(0, 10) == 0


def test_clopper_pearson_lower_is_the_exact_one_sided_bound():
    from scipy import stats as scipy_stats

    n, alpha = 50, 0.01
    for k in (1, 5, 25, 49, 50):
        ref = scipy_stats.binomtest(k, n, alternative="greater").proportion_ci(1 - alpha, method="exact").low
        assert certify.clopper_pearson_lower(k, n, alpha) == pytest.approx(ref, rel=1e-9)
    for a in (0.001, 0.05):
        assert certify.clopper_pearson_lower(500, 500, a) == pytest.approx(a ** (1 / 500), rel=1e-12)


def scipy_stats_beta_ppf(q, a, b):
    from scipy import stats as scipy_stats

    return float(scipy_stats.beta.ppf(q, a, b))


@pytest.mark.parametrize(
    "wrong",
    [
        lambda k, n, alpha: scipy_stats_beta_ppf(alpha / 2, k, n - k + 1),  # the two-sided interval's lower end
        lambda k, n, alpha: scipy_stats_beta_ppf(alpha, k + 1, n - k),  # Beta(k + 1, n − k): the upper-bound law
    ],
    ids=["two-sided", "beta-k+1"],
)
def test_clopper_pearson_reference_rejects_plausible_wrong_bounds(wrong):
    from scipy import stats as scipy_stats

    n, alpha, k = 50, 0.01, 40
    ref = scipy_stats.binomtest(k, n, alternative="greater").proportion_ci(1 - alpha, method="exact").low
    assert certify.clopper_pearson_lower(k, n, alpha) == pytest.approx(ref, rel=1e-9)
    assert wrong(k, n, alpha) != pytest.approx(ref, rel=1e-6)


def test_smoothed_radius_of_a_linear_classifier_tends_to_the_distance_to_its_boundary():
    # binary linear classifier: the smoothed classifier is the classifier itself, p_A = Φ(d/σ), R → d
    w, b, sigma = torch.tensor([0.6, -0.8, 0.3, 0.1]), 0.05, 0.5
    model = nn.Sequential(nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.stack([-w, w]) / 2)
        model[0].bias.copy_(torch.tensor([-b, b]) / 2)
    x = torch.tensor([[0.3, -0.1, 0.2, 0.4], [0.1, 0.2, -0.3, 0.0]])
    distance = ((x @ w + b).abs() / w.norm()).double()
    gaps = []
    for n in (200, 2000, 20000):
        pred, radius = certify.smoothed_certify(
            model, x, sigma, n0=50, n=n, n_classes=2, generator=torch.Generator().manual_seed(1), batch_size=20000
        )
        assert ((pred == (x @ w + b > 0).long()) | (pred == -1)).all()  # right, or abstains
        assert (radius <= distance + 1e-9).all()  # a certificate never exceeds the truth
        gaps.append(float((distance - radius).max()))
    assert (pred == (x @ w + b > 0).long()).all()
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.05
