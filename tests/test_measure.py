"""measure.graph_bytes counts what a graph keeps alive, each storage once, on graphs of known size."""

import pytest
import torch

from metaadv_edu import data, maml, metasgd, models, reptile
from metaadv_edu.measure import graph_bytes


def leaf(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def test_a_product_keeps_both_factors():
    x, w = leaf(1000), leaf(1000, seed=1)
    assert graph_bytes((x * w).sum()) == 4 * (1000 + 1000)


def test_a_tensor_saved_by_several_nodes_counts_once():
    x, w = leaf(1000), leaf(1000, seed=1)
    y = (x[:500] * w[:500]).sum() + (x * x).sum() + x.sin().sum()
    # x is saved by three nodes (once as a view): its 4,000 bytes count once, and so do w's.
    assert graph_bytes(y) == 4 * (1000 + 1000)


def test_a_saved_result_counts_and_a_tensor_without_graph_keeps_nothing():
    x = leaf(1000)
    assert graph_bytes(x.exp().sum()) == 4 * 1000  # ExpBackward saves its result, SumBackward nothing
    assert graph_bytes(x.detach() * 2) == 0
    assert graph_bytes({"a": x.exp(), "b": x.sin()}) == 4 * 2000  # exp(x) saved, and x by sin


def test_bad_output_is_rejected():
    with pytest.raises(TypeError, match="output"):
        graph_bytes([1.0])


def test_the_meta_learners_graphs_are_ordered_as_their_algorithms_say():
    torch.manual_seed(0)
    model = models.SineRegressor()
    tasks = data.sine_tasks(25, 10, generator=torch.Generator().manual_seed(0))
    second = graph_bytes(maml.meta_loss(model, tasks, inner_lr=0.01))
    first = graph_bytes(maml.meta_loss(model, tasks, inner_lr=0.01, first_order=True))
    lrs = metasgd.init_inner_lrs(model, 0.01)
    meta_sgd = graph_bytes(metasgd.meta_loss(model, lrs, tasks))
    assert 0 < first < second < meta_sgd
    # Meta-SGD keeps what MAML keeps plus every task's support gradient (25 × 1,761 float32 numbers).
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(meta_sgd - second - 25 * n_params * 4) < 0.1 * 25 * n_params * 4
    # the vmap path and the loop keep about the same memory as the batched path for the same computation
    for other in (
        maml.meta_loss(model, tasks, inner_lr=0.01, fast_path=False),
        maml.meta_loss_loop(model, tasks, inner_lr=0.01),
    ):
        assert abs(graph_bytes(other) - second) < 0.05 * second
    assert graph_bytes(reptile.adapted_weights(model, tasks, inner_lr=0.02, inner_steps=5)) == 0
