"""Prototypical networks: prototypes are class means, the logits are negative squared distances, and with
squared Euclidean distance they are a linear classifier w_k = 2c_k, b_k = −‖c_k‖² on the embedding."""

import pytest
import torch

from metaadv_edu import covers, models, protonets
from metaadv_edu.chapters import feature_reuse as chapter
from tests.wrong import rejects


def _episode(seed=0, n_way=4, dim=6, extra=5, n_query=7, batch=()):
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.arange(n_way), torch.randint(n_way, (extra,), generator=g)]).expand(*batch, -1)
    zs = torch.randn(*batch, labels.shape[-1], dim, generator=g, dtype=torch.float64)
    zq = torch.randn(*batch, n_query, dim, generator=g, dtype=torch.float64)
    return zs, labels, zq, n_way


def test_prototypes_are_class_means():
    zs, labels, _, n_way = _episode()
    c = protonets.prototypes(zs, labels, n_way)
    for k in range(n_way):
        assert torch.allclose(c[k], zs[labels == k].mean(0))


def test_logits_are_negative_squared_distances():
    zs, labels, zq, n_way = _episode()
    c = protonets.prototypes(zs, labels, n_way)
    assert torch.allclose(protonets.prototype_logits(zs, labels, zq, n_way), -(torch.cdist(zq, c) ** 2), atol=1e-10)


def test_equivalent_linear_classifier():
    zs, labels, zq, n_way = _episode(seed=3, batch=(2,))
    logits = protonets.prototype_logits(zs, labels, zq, n_way)
    w, b = protonets.linear_head(protonets.prototypes(zs, labels, n_way))
    linear = zq @ w.transpose(-1, -2) + b.unsqueeze(-2)
    assert torch.allclose(logits - linear, -(zq**2).sum(-1, keepdim=True).expand_as(logits), atol=1e-10)
    assert torch.allclose(logits.softmax(-1), linear.softmax(-1), atol=1e-12)
    assert torch.equal(logits.argmax(-1), linear.argmax(-1))


def test_the_notebook_check_passes():
    out = chapter.protonet_linear_check()
    assert out["softmax_error"] < 1e-12 and out["offset_error"] < 1e-10


@rejects("protonet_linear", "w_k = c_k (the factor 2 dropped)")
def test_the_check_rejects_a_missing_factor_two():
    out = chapter.protonet_linear_check(lambda c: (c, -(c**2).sum(-1)))
    assert out["softmax_error"] > 1e-3


@rejects("protonet_linear", "b_k = +‖c_k‖² (sign flipped)")
def test_the_check_rejects_a_flipped_bias():
    out = chapter.protonet_linear_check(lambda c: (2 * c, (c**2).sum(-1)))
    assert out["softmax_error"] > 1e-3


@rejects("protonet_linear", "b_k = −‖c_k‖ (not squared)")
def test_the_check_rejects_an_unsquared_bias():
    out = chapter.protonet_linear_check(lambda c: (2 * c, -c.norm(dim=-1)))
    assert out["softmax_error"] > 1e-3


def test_episode_loss_trains_the_embedding():
    torch.manual_seed(0)
    embed = chapter.embedding(models.TinyCNN(3, 3, width=4, image_size=16))
    tasks = covers.cover_tasks(2, n_way=3, k_shot=2, k_query=2, size=16, generator=torch.Generator().manual_seed(0))
    loss = protonets.episode_loss(embed, tasks)
    loss.backward()
    assert loss.ndim == 0 and all(p.grad is not None for p in embed.parameters())
    acc = protonets.episode_accuracy(embed, tasks)
    assert acc.shape == (2,) and ((acc >= 0) & (acc <= 1)).all()


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"n_way": 1}, ValueError, "n_way"),
        ({"labels": "float"}, TypeError, "integer"),
        ({"labels": "out of range"}, ValueError, r"\[0, n_way - 1\]"),
        ({"labels": "missing class"}, ValueError, "every class"),
        ({"query_dim": 3}, ValueError, "dim"),
    ],
)
def test_bad_inputs_name_the_argument(change, error, match):
    zs, labels, zq, n_way = _episode()
    n_way = change.get("n_way", n_way)
    if change.get("labels") == "float":
        labels = labels.double()
    elif change.get("labels") == "out of range":
        labels = labels.clone()
        labels[0] = 9
    elif change.get("labels") == "missing class":
        labels = torch.zeros_like(labels)
    if "query_dim" in change:
        zq = zq[:, : change["query_dim"]]
    with pytest.raises(error, match=match):
        protonets.prototype_logits(zs, labels, zq, n_way)
