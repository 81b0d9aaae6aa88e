"""Notebook 10 · What meta-learning learns: its graders accept the reference and reject each typical mistake
with its own hint; its explorer responds to every slider without training; its cost measurement."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import anil, data, imaml, maml, models, protonets
from metaadv_edu.chapters import feature_reuse as chapter
from metaadv_edu.functional import forward


def _verdict(capsys, grader, fn):
    ok = grader(fn)
    return ok, capsys.readouterr().out


# ------------------------------------------------------------------------------- prototype logits
def _means(zs, labels, n_way):
    return torch.stack([zs[labels == k].mean(0) for k in range(n_way)])


def test_prototype_grader_accepts_the_reference(capsys):
    ok, out = _verdict(capsys, chapter.check_prototype_logits, protonets.prototype_logits)
    assert ok and out.startswith("✓")


def test_prototype_grader_names_each_mistake(capsys):
    cases = {
        "wrong sign": lambda zs, y, zq, n: torch.cdist(zq, _means(zs, y, n)) ** 2,
        "plain distance": lambda zs, y, zq, n: -torch.cdist(zq, _means(zs, y, n)),
        "*mean*": lambda zs, y, zq, n: -(torch.cdist(zq, torch.stack([zs[y == k].sum(0) for k in range(n)])) ** 2),
        "equivalent linear": lambda zs, y, zq, n: zq @ (2 * _means(zs, y, n)).T - (_means(zs, y, n) ** 2).sum(-1),
    }
    for hint, fn in cases.items():
        ok, out = _verdict(capsys, chapter.check_prototype_logits, fn)
        assert not ok and hint in out, (hint, out)


# ---------------------------------------------------------------------------------- ANIL inner step
def _anil_step(model, params, x, y, lr):
    head = anil.head_names(model)
    grads = torch.autograd.grad(
        F.cross_entropy(forward(model, params, x), y), [params[k] for k in head], create_graph=True
    )
    return {**params, **{k: params[k] - lr * g for k, g in zip(head, grads)}}


def test_anil_grader_accepts_the_reference(capsys):
    ok, out = _verdict(capsys, chapter.check_anil_inner_step, _anil_step)
    assert ok, out


def test_anil_grader_names_each_mistake(capsys):
    def no_graph(model, params, x, y, lr):
        return {
            k: p.detach() if k in anil.head_names(model) else p for k, p in _anil_step(model, params, x, y, lr).items()
        }

    def flipped(model, params, x, y, lr):
        return {k: 2 * params[k] - p for k, p in _anil_step(model, params, x, y, lr).items()}

    def weight_only(model, params, x, y, lr):  # the head's bias left where it was
        bias = [k for k in anil.head_names(model) if k.endswith("bias")]
        return {**_anil_step(model, params, x, y, lr), **{k: params[k] for k in bias}}

    def model_call(model, params, x, y, lr):  # the support loss of model(x): the gradient at the module's weights
        head, own = anil.head_names(model), dict(model.named_parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), [own[k] for k in head], create_graph=True)
        return {**params, **{k: params[k] - lr * g for k, g in zip(head, grads)}}

    def model_call_wrt_params(model, params, x, y, lr):  # model(x), differentiated with respect to params
        head = anil.head_names(model)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), [params[k] for k in head], create_graph=True)
        return {**params, **{k: params[k] - lr * g for k, g in zip(head, grads)}}

    def module_weights(model, params, x, y, lr):  # steps from the module's own head, not from params'
        head, own = anil.head_names(model), dict(model.named_parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), [own[k] for k in head], create_graph=True)
        return {**params, **{k: own[k] - lr * g for k, g in zip(head, grads)}}

    cases = {
        "MAML's step": lambda m, p, x, y, lr: maml.adapt(m, p, x, y, inner_lr=lr),
        "wrong sign": flipped,
        "meta-gradient": no_graph,
        "weight and bias": weight_only,
        "params are not the module's own weights": model_call,
        "not the module's own weights": model_call_wrt_params,
        "start from params": module_weights,
    }
    for hint, fn in cases.items():
        ok, out = _verdict(capsys, chapter.check_anil_inner_step, fn)
        assert not ok and hint in out, (hint, out)


def test_anil_grader_stops_a_step_that_changes_its_inputs_with_a_hint_not_a_traceback(capsys):
    def reuses_the_dict(model, params, x, y, lr):  # right values and graph, but the caller's dict is rewritten
        new = params
        new.update(_anil_step(model, params, x, y, lr))
        return new

    def moves_the_module(model, params, x, y, lr):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        return _anil_step(model, params, x, y, lr)

    cases = {"leave params as it is": reuses_the_dict, "leave the module untouched": moves_the_module}
    for hint, fn in cases.items():
        ok, out = _verdict(capsys, chapter.check_anil_inner_step, fn)
        assert not ok and out.startswith("✗") and hint in out, (hint, out)


# ------------------------------------------------------------------------------ conjugate gradient
def _cg(matvec, b, iterations):
    return imaml.conjugate_gradient(lambda p: {"v": matvec(p["v"])}, {"v": b}, iterations=iterations)["v"]


def test_cg_grader_accepts_the_reference(capsys):
    ok, out = _verdict(capsys, chapter.check_conjugate_gradient, _cg)
    assert ok, out


def test_cg_grader_rejects_steepest_descent_and_a_wrong_step(capsys):
    def steepest(matvec, b, iterations):  # exact line search, but no conjugate directions
        u, r = torch.zeros_like(b), b.clone()
        for _ in range(iterations):
            ar = matvec(r)
            a = (r @ r) / (r @ ar)
            u, r = u + a * r, r - a * ar
        return u

    ok, out = _verdict(capsys, chapter.check_conjugate_gradient, steepest)
    assert not ok and "p ← r_new" in out
    ok, out = _verdict(capsys, chapter.check_conjugate_gradient, lambda matvec, b, iterations: b.clone())
    assert not ok and "a = rᵀr / pᵀAp" in out


# -------------------------------------------------------------------------------------- explorer
def test_explorer_every_slider_changes_the_figure():
    torch.manual_seed(0)
    meta, anil_model = models.SineRegressor(), models.SineRegressor()
    tasks, amplitude, phase = data.sine_tasks(3, 10, generator=torch.Generator().manual_seed(0), return_params=True)
    ex = chapter.feature_reuse_explorer(meta, anil_model, tasks, amplitude, phase, steps=3, lam=10.0)
    before = [p.detach().clone() for p in meta.parameters()]
    images = {ex.image.value}
    # blitted = a full render (a title left stale differs in 0.04 % of the pixels or more)
    assert ex.blit_error() == 0, "the first (stored) image is what a full render draws"
    for name, value in (("inner_lr", 0.05), ("steps", 8), ("lam", 0.1), ("task", 2), ("steps", 0)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is what a full render draws"
    assert len(images) == 6
    assert all(torch.equal(a, b) for a, b in zip(before, meta.parameters()))
    assert all(p.grad is None for p in meta.parameters())


def test_explorer_paths_grown_on_demand_equal_paths_computed_at_once():
    # moving k up extends stored paths, down indexes them: every state must read as a fresh explorer's at it
    torch.manual_seed(0)
    meta, anil_model = models.SineRegressor(), models.SineRegressor()
    tasks, amplitude, phase = data.sine_tasks(3, 10, generator=torch.Generator().manual_seed(0), return_params=True)
    ex = chapter.feature_reuse_explorer(meta, anil_model, tasks, amplitude, phase, steps=1, lam=3.0)
    for k in (3, 8, 2, 8):
        ex.sliders["steps"].value = k
        fresh = chapter.feature_reuse_explorer(meta, anil_model, tasks, amplitude, phase, steps=k, lam=3.0)
        assert ex.caption.value == fresh.caption.value, k


def test_explorer_reports_divergence_instead_of_failing():
    torch.manual_seed(0)
    tasks, amplitude, phase = data.sine_tasks(2, 10, generator=torch.Generator().manual_seed(0), return_params=True)
    ex = chapter.feature_reuse_explorer(models.SineRegressor(), models.SineRegressor(), tasks, amplitude, phase)
    ex.set(inner_lr=0.3, steps=20, lam=100.0)
    assert "diverged" in ex.caption.value


def test_explorer_never_prints_a_huge_or_infinite_mse():
    import re

    torch.manual_seed(0)
    tasks, amplitude, phase = data.sine_tasks(2, 10, generator=torch.Generator().manual_seed(0), return_params=True)
    ex = chapter.feature_reuse_explorer(models.SineRegressor(), models.SineRegressor(), tasks, amplitude, phase)
    seen_diverged = False
    for lr, steps, lam in ((0.1, 20, 30.0), (0.1, 5, 25.0), (0.3, 20, 100.0), (0.01, 5, 10.0)):
        ex.set(inner_lr=lr, steps=steps, lam=lam)
        caption = ex.caption.value
        seen_diverged |= "diverged" in caption
        values = re.findall(r"MSE <b>([^<]+)</b>", caption)
        assert all(float(m) <= chapter.DIVERGED_MSE for m in values), caption
    assert seen_diverged


# ------------------------------------------------------------------------------------ measurements
def test_meta_gradient_memory_grows_with_k_for_maml_only():
    torch.manual_seed(0)
    net = models.SineRegressor()
    tasks = data.sine_tasks(2, 10, generator=torch.Generator().manual_seed(0))
    costs = chapter.meta_gradient_costs(net, tasks, [1, 2, 4], inner_lr=0.005, lam=50.0, cg_steps=2)
    b = costs["MAML"]["bytes"]
    assert b[0] < b[1] < b[2] and abs((b[2] - b[1]) - 2 * (b[1] - b[0])) < 0.05 * (b[2] - b[0])
    assert len(set(costs["iMAML"]["bytes"])) == 1 and len(set(costs["first-order MAML"]["bytes"])) == 1


def test_meta_gradient_memory_does_not_depend_on_where_the_tasks_were_sliced_from():
    torch.manual_seed(0)
    net = models.SineRegressor()
    big = data.sine_tasks(200, 10, generator=torch.Generator().manual_seed(0))
    views = data.Tasks(*(t[:2] for t in big))  # views of 200-task tensors
    copies = data.Tasks(*(t[:2].clone() for t in big))
    kwargs = {"inner_lr": 0.005, "lam": 50.0, "cg_steps": 2, "repeats": 1}
    from_views = chapter.meta_gradient_costs(net, views, [1, 2], **kwargs)
    from_copies = chapter.meta_gradient_costs(net, copies, [1, 2], **kwargs)
    for name in from_views:
        assert from_views[name]["bytes"] == from_copies[name]["bytes"], name
    # first-order MAML keeps θ′ (one parameter-sized copy) and a few small activations, far below the 4 × 8 kB
    # that the 200-task support and query storages would add
    theta_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    assert theta_bytes <= from_views["first-order MAML"]["bytes"][0] < theta_bytes + 8000


def test_saved_graph_bytes_charges_a_view_its_whole_storage_and_skips_excluded_tensors():
    big = torch.randn(1000)
    w, u = torch.randn(1, requires_grad=True), torch.randn(1, requires_grad=True)
    assert chapter.saved_graph_bytes((w * big[:1]).sum()) == 4000  # the 1-element view keeps all of big
    assert chapter.saved_graph_bytes((w * big[:1].clone()).sum()) == 4
    both = (w * u).sum()  # MulBackward saves w and u
    assert chapter.saved_graph_bytes(both) == 8 and chapter.saved_graph_bytes(both, exclude=[w]) == 4


def test_saved_graph_bytes_counts_a_shared_storage_once():
    x = torch.randn(1000, requires_grad=True)
    y = x * 2
    z = (y * y).sum()  # y saved twice by one MulBackward: self and other share a storage
    assert 4000 <= chapter.saved_graph_bytes(z) < 4100  # y once (plus the 0-d factor 2 that x * 2 may keep)


def test_logistic_regression_baseline_runs_per_task():
    from metaadv_edu import covers

    tasks = covers.cover_tasks(2, n_way=3, k_shot=2, k_query=2, size=16, generator=torch.Generator().manual_seed(0))
    embed = chapter.embedding(models.TinyCNN(3, 3, width=4, image_size=16))
    acc = chapter.logistic_regression_accuracy(embed, tasks)
    assert acc.shape == (2,) and ((acc >= 0) & (acc <= 1)).all()


def test_explorer_imaml_fit_is_proximal_gradient_descent():
    import re

    torch.manual_seed(0)
    meta = models.SineRegressor()
    tasks, amplitude, phase = data.sine_tasks(2, 10, generator=torch.Generator().manual_seed(0), return_params=True)
    ex = chapter.feature_reuse_explorer(meta, models.SineRegressor(), tasks, amplitude, phase, steps=6, lam=30.0)
    ex.set(inner_lr=0.02, task=1)
    phi = imaml.proximal_adapt(
        meta, dict(meta.named_parameters()), tasks.x_support[1], tasks.y_support[1], lam=30.0, inner_lr=0.02, steps=6
    )
    grid = torch.linspace(-5, 5, 200).unsqueeze(-1)
    with torch.no_grad():
        mse = float(((forward(meta, phi, grid)[:, 0] - amplitude[1] * torch.sin(grid[:, 0] - phase[1])) ** 2).mean())
    shown = float(re.search(r"iMAML \(λ\): MSE <b>([\d.]+)</b>", ex.caption.value).group(1))
    assert abs(shown - mse) < 0.006


def test_untrained_nets_of_another_seed_differ_and_bad_seeds_are_refused():
    for build in (chapter.untrained_cover_net, chapter.untrained_sine_net):
        a, a_again, b = build(), build(0), build(1)
        first = next(iter(a.state_dict()))
        assert torch.equal(a.state_dict()[first], a_again.state_dict()[first])
        assert not torch.equal(a.state_dict()[first], b.state_dict()[first])
        with pytest.raises(ValueError, match="seed"):
            build(-1)


# ------------------------------------------------------------------ measurements moved out of the notebook
def _cover_tasks(n=3, seed=0):
    from metaadv_edu import covers

    return covers.cover_tasks(n, n_way=3, k_shot=2, k_query=3, size=16, generator=torch.Generator().manual_seed(seed))


def test_before_after_cka_is_one_without_steps_that_move_and_drops_where_a_layer_moves():
    torch.manual_seed(0)
    net = models.TinyCNN(3, 3, width=4, image_size=16)
    tasks = _cover_tasks()
    moved = chapter.before_after_cka(net, tasks, inner_lr=0.5, steps=3)
    assert set(moved) == {"layer 1", "layer 2", "layer 3"} and all(v.shape == (3,) for v in moved.values())
    # the head-only rates leave the body's representations exactly where they were
    head_only = chapter.before_after_cka(net, tasks, inner_lr=anil.inner_lrs(net, 0.5), steps=3)
    assert torch.allclose(head_only["layer 1"], torch.ones(3)) and torch.allclose(head_only["layer 2"], torch.ones(3))
    assert (head_only["layer 3"] < 1 - 1e-4).all() and (moved["layer 1"] < 1 - 1e-6).all()
    with pytest.raises(ValueError, match="steps"):
        chapter.before_after_cka(net, tasks, inner_lr=0.5, steps=0)


def test_before_after_cka_uses_the_given_inputs_for_every_task():
    torch.manual_seed(0)
    net = models.SineRegressor()
    tasks = data.sine_tasks(4, 10, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(-5, 5, 50).unsqueeze(-1)
    rows = chapter.before_after_cka(net, tasks, inner_lr=0.01, steps=2, inputs=grid)
    theta = dict(net.named_parameters())
    adapted = maml.adapt(net, theta, tasks.x_support[2], tasks.y_support[2], inner_lr=0.01, steps=2)
    expected = chapter.layer_cka(net, theta, adapted, grid)
    assert all(abs(float(rows[layer][2]) - expected[layer]) < 1e-5 for layer in expected)


def test_reference_cka_compares_two_networks_and_refuses_another_architecture():
    net, same = chapter.untrained_cover_net(0), chapter.untrained_cover_net(0)
    tasks = _cover_tasks()
    ones = chapter.reference_cka(net, same, tasks.x_query)
    assert all(torch.allclose(v, torch.ones(3)) for v in ones.values())
    other = chapter.reference_cka(net, chapter.untrained_cover_net(1), tasks.x_query)
    assert (other["layer 1"] < 0.999).all()
    with pytest.raises(TypeError, match="architecture"):
        chapter.reference_cka(net, models.SineRegressor(), tasks.x_query)


def test_cka_paired_rows_pair_the_same_tasks():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(40, generator=g)
    before_after = reference + 0.01 + 0.001 * torch.randn(40, generator=g)  # always a little above, by task
    rows = chapter.cka_paired_rows({"layer 1": before_after}, {"ref": {"layer 1": reference}}, ["layer 1"])
    assert rows[0][:2] == ["ref", "layer 1"] and "before/after > reference" in rows[0][3]
    shuffled = {"ref": {"layer 1": reference[torch.randperm(40, generator=g)]}}
    wrong = chapter.cka_paired_rows({"layer 1": before_after}, shuffled, ["layer 1"])
    assert "not resolved" in wrong[0][3]


def test_tuned_accuracy_picks_the_best_rate_on_validation_and_breaks_ties_by_the_smaller():
    torch.manual_seed(0)
    net = models.TinyCNN(3, 3, width=4, image_size=16)
    val, test = _cover_tasks(4, 1), _cover_tasks(5, 2)
    alpha, acc = chapter.tuned_accuracy(net, val, test, grid=(0.1, 0.5), steps=1)
    assert alpha in (0.1, 0.5) and acc.shape == (5,) and acc.device.type == "cpu"
    # a grid whose rates all act the same (rates ignore α): the tie goes to the smallest
    alpha, _ = chapter.tuned_accuracy(net, val, test, grid=(0.3, 0.2, 0.4), steps=1, rates=lambda a: 0.1)
    assert alpha == 0.2
    with pytest.raises(ValueError, match="grid"):
        chapter.tuned_accuracy(net, val, test, grid=(), steps=1)


def test_training_compute_counts_notebook_08s_budget():
    counts = chapter.training_compute(160, 400)
    assert counts["MAML and ANIL"] == {
        "updates": 160,
        "per update": 500,
        "image-gradients": 80_000,
        "cover passes": 32_000,
    }
    assert counts["ProtoNet"]["image-gradients"] == counts["ProtoNet"]["cover passes"] == 80_000
    assert counts["pretrained"]["cover passes"] == 76_800
    with pytest.raises(ValueError, match="meta_updates"):
        chapter.training_compute(0, 400)


def test_paired_outcome_names_the_more_accurate_learner_or_says_not_resolved():
    a = torch.tensor([0.8, 0.9, 0.7, 0.85, 0.9, 0.75])
    assert chapter.paired_outcome(a, a - 0.1, "A", "B") == "A more accurate"
    assert chapter.paired_outcome(a - 0.1, a, "A", "B") == "B more accurate"
    noise = torch.tensor([0.01, -0.01, 0.02, -0.02, 0.0, 0.0])
    assert chapter.paired_outcome(a + noise, a, "A", "B") == "not resolved"
