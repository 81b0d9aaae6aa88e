"""Linear CKA: its invariances (orthogonal maps, isotropic scaling, shifts), what it is not invariant to, and
the per-layer representations it compares."""

import pytest
import torch

from metaadv_edu import models, similarity
from metaadv_edu.chapters import feature_reuse as chapter
from metaadv_edu.functional import params_of
from tests.wrong import rejects


def _x(seed=0, n=100, d=20):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d, seed=1):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_identical_representations_have_cka_one():
    assert similarity.linear_cka(_x(), _x()) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transforms_and_isotropic_scaling():
    x = _x()
    assert similarity.linear_cka(x, x @ _orthogonal(20)) == pytest.approx(1.0, abs=1e-12)
    assert similarity.linear_cka(x, -0.01 * x) == pytest.approx(1.0, abs=1e-12)
    assert similarity.linear_cka(x @ _orthogonal(20, 3), 7.0 * x + 2.0) == pytest.approx(1.0, abs=1e-12)


def test_not_invariant_to_an_anisotropic_invertible_map():
    x = _x()
    stretch = torch.diag(torch.logspace(-2, 1, 20, dtype=torch.float64))
    assert torch.linalg.matrix_rank(stretch) == 20
    assert similarity.linear_cka(x, x @ stretch) < 0.9


def test_feature_counts_may_differ_and_independent_noise_is_dissimilar():
    x = _x(n=500, d=5)
    y = _x(seed=9, n=500, d=50)
    value = similarity.linear_cka(x, y)
    assert 0.0 <= value < 0.2
    assert similarity.linear_cka(x, torch.cat([x, x], 1)) == pytest.approx(1.0, abs=1e-12)


def gram_cka(x, y):
    """The Gram-matrix form of linear CKA, tr(G_X G_Y) / (‖G_X‖_F ‖G_Y‖_F) with G = X_c X_cᵀ of the centred
    columns: computed from the n × n example Grams, independently of linear_cka's feature-space form."""
    gx, gy = (x - x.mean(0)) @ (x - x.mean(0)).T, (y - y.mean(0)) @ (y - y.mean(0)).T
    return float(torch.trace(gx @ gy) / (torch.linalg.matrix_norm(gx) * torch.linalg.matrix_norm(gy)))


def test_equals_the_gram_matrix_form():
    values = []
    for seed, (p, q) in enumerate(((20, 20), (5, 30), (40, 3))):
        x = _x(seed, n=60, d=p)
        y = torch.tanh(x[:, :1] * _x(seed + 10, n=1, d=q)) + 0.7 * _x(seed + 20, n=60, d=q)  # partly related
        values.append(similarity.linear_cka(x, y))
        assert values[-1] == pytest.approx(gram_cka(x, y), abs=1e-12)
    assert all(0.05 < v < 0.8 for v in values)  # away from 0 and 1, where √CKA or CKA² would agree too


def test_symmetric():
    x, y = _x(0), _x(1) + 0.5 * _x(0)
    assert similarity.linear_cka(x, y) == pytest.approx(similarity.linear_cka(y, x), abs=1e-12)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.zeros(5), torch.zeros(5, 2), "2-D"),
        (torch.randn(1, 3), torch.randn(1, 3), "at least 2"),
        (torch.randn(4, 3), torch.randn(5, 3), "same examples"),
        (torch.ones(4, 3), torch.randn(4, 3), "same for every example"),
        (torch.full((4, 3), float("nan")), torch.randn(4, 3), "finite"),
    ],
)
def test_bad_inputs_name_the_argument(x, y, match):
    with pytest.raises(ValueError, match=match):
        similarity.linear_cka(x, y)


def test_layer_representations_of_the_course_networks():
    net = models.TinyCNN(3, 5, width=8, image_size=16)
    reps = similarity.layer_representations(net, params_of(net), torch.rand(6, 3, 16, 16))
    assert {k: tuple(t.shape) for k, t in reps.items()} == {"layer 1": (6, 512), "layer 2": (6, 256), "layer 3": (6, 5)}
    sine = models.SineRegressor()
    reps = similarity.layer_representations(sine, params_of(sine), torch.rand(7, 1))
    assert [tuple(t.shape) for t in reps.values()] == [(7, 40), (7, 40), (7, 1)]
    x = torch.rand(7, 1)
    with torch.no_grad():
        assert torch.allclose(similarity.layer_representations(sine, params_of(sine), x)["layer 3"], sine(x))
    with pytest.raises(ValueError, match="lacks"):
        similarity.layer_representations(sine, {}, torch.rand(7, 1))


def test_the_notebook_check_passes_for_linear_cka():
    out = chapter.cka_invariance_check()
    assert out["orthogonal"] == pytest.approx(1, abs=1e-9) and out["scaled and shifted"] == pytest.approx(1, abs=1e-9)
    assert out["anisotropic"] < 0.9


def uncentred_cka(x, y):
    return float(
        torch.linalg.matrix_norm(y.T @ x) ** 2 / (torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y))
    )


def unnormalised_hsic(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / x.shape[0] ** 2)


@rejects("cka_invariance", "CKA without centring the columns (not invariant to a shift)")
def test_the_check_rejects_uncentred_cka():
    out = chapter.cka_invariance_check(uncentred_cka)
    assert abs(out["scaled and shifted"] - 1) > 1e-3


@rejects("cka_invariance", "unnormalised HSIC ‖YᵀX‖² instead of CKA (not scale invariant)")
def test_the_check_rejects_unnormalised_hsic():
    out = chapter.cka_invariance_check(unnormalised_hsic)
    assert abs(out["scaled and shifted"] - 1) > 1e-3 or abs(out["orthogonal"] - 1) > 1e-3
