"""Notebook 05 · MAML: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import maml, models
from metaadv_edu.chapters import maml as chapter
from metaadv_edu.functional import forward


def step_ok(model, params, x, y, lr):
    loss = F.mse_loss(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads)}


def step_no_graph(model, params, x, y, lr):
    loss = F.mse_loss(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads)}


def step_detached(model, params, x, y, lr):
    return {k: v.detach() for k, v in step_ok(model, params, x, y, lr).items()}


def step_sign(model, params, x, y, lr):
    loss = F.mse_loss(forward(model, params, x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {k: p + lr * g for (k, p), g in zip(params.items(), grads)}


def step_in_place(model, params, x, y, lr):
    new = step_ok(model, params, x, y, lr)
    with torch.no_grad():
        for p, k in zip(model.parameters(), new):
            p.copy_(new[k])
    return new


def step_ignoring_params(model, params, x, y, lr):
    """Differentiates model(x): a step from the module's own weights, whatever params holds."""
    weights = dict(model.named_parameters())
    grads = torch.autograd.grad(F.mse_loss(model(x), y), list(weights.values()), create_graph=True)
    return {k: p - lr * g for (k, p), g in zip(weights.items(), grads)}


def step_live_weights(model, params, x, y, lr):
    """Starts from params but takes the gradient of model(x), at the module's live weights."""
    grads = torch.autograd.grad(F.mse_loss(model(x), y), list(model.parameters()), create_graph=True)
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads)}


def step_summed_loss(model, params, x, y, lr):
    loss = F.mse_loss(forward(model, params, x), y, reduction="sum")
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    return {k: p - lr * g for (k, p), g in zip(params.items(), grads)}


def step_no_lr(model, params, x, y, lr):
    return step_ok(model, params, x, y, 1.0)


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (step_ok, True, "differentiable"),
        (step_ignoring_params, False, "module's own weights"),
        (step_live_weights, False, "gradient at the module's own weights"),
        (step_summed_loss, False, "*mean* squared error"),
        (step_no_lr, False, "inner learning rate"),
        (step_no_graph, False, "Hessian term"),
        (step_detached, False, "detached"),
        (step_sign, False, "wrong sign"),
        (step_in_place, False, "model's own parameters"),
        (lambda m, p, x, y, lr: list(p.values()), False, "dict"),
    ],
)
def test_check_inner_step(fn, ok, hint, capsys):
    assert chapter.check_inner_step(fn) is ok
    assert hint in capsys.readouterr().out


def ml_ok(model, params, tasks, lr):
    return maml.meta_loss(model, tasks, inner_lr=lr, params=params)


def ml_from_module(model, params, tasks, lr):
    """A meta-loss built on a step that ignores params: it adapts the module's own weights."""
    losses = []
    for xs, ys, xq, yq in zip(*tasks):
        adapted = step_ignoring_params(model, params, xs, ys, lr)
        losses.append(F.mse_loss(forward(model, adapted, xq), yq))
    return torch.stack(losses).mean()


def ml_summed_inner_loss(model, params, tasks, lr):
    losses = []
    for xs, ys, xq, yq in zip(*tasks):
        adapted = step_summed_loss(model, params, xs, ys, lr)
        losses.append(F.mse_loss(forward(model, adapted, xq), yq))
    return torch.stack(losses).mean()


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (ml_ok, True, "second-order"),
        (lambda m, p, t, lr: maml.meta_loss(m, t, inner_lr=lr, params=p, first_order=True), False, "Hessian term"),
        (lambda m, p, t, lr: t.n_tasks * ml_ok(m, p, t, lr), False, "summed"),
        (lambda m, p, t, lr: F.mse_loss(forward(m, p, t.x_query), t.y_query), False, "adapt to each task"),
        (lambda m, p, t, lr: ml_ok(m, p, chapter.data_swap(t), lr), False, "query"),
        (lambda m, p, t, lr: ml_ok(m, p, t, lr).detach(), False, "no gradient"),
        (ml_from_module, False, "module's own weights"),
        (lambda m, p, t, lr: maml.meta_loss(m, t, inner_lr=lr), False, "module's own weights"),
        (ml_summed_inner_loss, False, "not the sum over support points"),
    ],
)
def test_check_maml_meta_loss(fn, ok, hint, capsys):
    assert chapter.check_maml_meta_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_maml_explorer_every_slider_changes_the_figure(device):
    torch.manual_seed(0)
    meta, base = models.SineRegressor().to(device), models.SineRegressor().to(device)
    ex = chapter.maml_explorer(meta, base, n_tasks=3, pool=12)
    before = [p.detach().clone() for p in meta.parameters()]
    images = {ex.image.value}
    assert ex.blit_error() == 0  # the first image: the one a stored notebook shows
    for name, value in (("inner_lr", 0.1), ("steps", 5), ("k_support", 4), ("epsilon", 0.5), ("task", 2), ("steps", 0)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is not what a full render draws"
    assert len(images) == 7
    assert "after 0 step(s)" in ex.caption.value
    assert all(torch.equal(a, b) for a, b in zip(before, meta.parameters()))
    assert all(p.grad is None for p in meta.parameters())


def test_adaptation_path_is_plain_gradient_descent_on_the_support_points():
    from metaadv_edu.functional import params_of

    torch.manual_seed(0)
    model = models.SineRegressor()
    xs, grid = torch.rand(7, 1) * 10 - 5, torch.linspace(-5, 5, 50).view(-1, 1)
    ys, truth = torch.sin(xs), torch.sin(grid)
    losses, kept = chapter._adaptation_path(model, params_of(model, detach=True), xs, ys, grid, truth, 0.3, 2)
    params = {k: p.requires_grad_(True) for k, p in params_of(model, detach=True).items()}
    expected = []
    for step in range(11):
        expected.append(F.mse_loss(forward(model, params, grid), truth).item())
        if step == 2:
            assert torch.allclose(kept, forward(model, params, grid).detach(), atol=1e-5)
        params = {k: p.detach().requires_grad_(True) for k, p in step_ok(model, params, xs, ys, 0.3).items()}
    assert torch.allclose(losses, torch.tensor(expected), rtol=1e-4, atol=1e-6)


def _hvp(loss, t, v, *, create_graph=True):
    t = t.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(t), t, create_graph=create_graph)
    return torch.autograd.grad(g, t, v)[0]


def _meta_grad(
    support,
    query_grad,
    theta,
    alpha,
    *,
    sign=-1.0,
    at_adapted=False,
    first_order=False,
    query_at_theta=False,
    create_graph=True,
):
    t = theta.detach().requires_grad_(True)
    (g_s,) = torch.autograd.grad(support(t), t)
    adapted = theta - alpha * g_s
    g_q = query_grad(theta if query_at_theta else adapted)
    if first_order:
        return g_q
    return g_q + sign * alpha * _hvp(support, adapted if at_adapted else theta, g_q, create_graph=create_graph)


@pytest.mark.parametrize(
    "kwargs, ok, hint",
    [
        ({}, True, "Hessian-vector product"),
        ({"first_order": True}, False, "first-order MAML"),
        ({"sign": 1.0}, False, "wrong sign"),
        ({"at_adapted": True}, False, "take it at θ"),
        ({"query_at_theta": True}, False, "adapted θ′"),
        ({"create_graph": False}, False, "create_graph=True"),
    ],
)
def test_check_maml_hvp(kwargs, ok, hint, capsys):
    assert chapter.check_maml_hvp(lambda s, q, t, a: _meta_grad(s, q, t, a, **kwargs)) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_check_maml_hvp_names_the_query_hessian_and_a_dropped_identity(capsys):
    def query_hessian(s, q, t, a):  # the query loss's HVP, by central differences of query_grad
        adapted = t - a * torch.autograd.grad(s(t.requires_grad_(True)), t)[0]
        g = q(adapted)
        return g - a * (q(adapted + 1e-6 * g) - q(adapted - 1e-6 * g)) / 2e-6

    assert chapter.check_maml_hvp(query_hessian) is False
    assert "*support* loss" in capsys.readouterr().out
    hessian_term_only = lambda s, q, t, a: _meta_grad(s, q, t, a) - _meta_grad(s, q, t, a, first_order=True)  # noqa: E731
    assert chapter.check_maml_hvp(hessian_term_only) is False
    assert "keeps v itself" in capsys.readouterr().out


def test_the_hvp_meta_gradient_is_autograd_through_the_inner_step():
    """The reference the grader uses equals differentiating L_Q(θ − α∇L_S(θ)) end to end."""
    from metaadv_edu import grading

    theta, support, query = grading.toy_regression("cpu", 3)
    t = theta.clone().requires_grad_(True)
    (g_s,) = torch.autograd.grad(support(t), t, create_graph=True)
    (end_to_end,) = torch.autograd.grad(query(t - 0.1 * g_s), t)

    def query_grad(z):
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(query(z), z)[0]

    assert torch.allclose(_meta_grad(support, query_grad, theta, 0.1), end_to_end, atol=1e-10)


def test_average_task_is_minus_1_62_cos_x_and_the_gap_measures_it(device):
    import math

    assert abs(chapter.AVERAGE_TASK_AMPLITUDE - 2 * 2.55 / math.pi) < 1e-12
    x = torch.rand(200_000, 1, generator=torch.Generator().manual_seed(0)) * 10 - 5
    amp = 0.1 + 4.9 * torch.rand(200_000, 1, generator=torch.Generator().manual_seed(1))
    phase = math.pi * torch.rand(200_000, 1, generator=torch.Generator().manual_seed(2))
    y = amp * torch.sin(x - phase)
    coef = (y * torch.cos(x)).mean() / (torch.cos(x) ** 2).mean()  # least-squares fit of c·cos x
    assert abs(coef.item() + chapter.AVERAGE_TASK_AMPLITUDE) < 0.03

    class Average(torch.nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(scale))

        def forward(self, x):
            return -self.w * chapter.AVERAGE_TASK_AMPLITUDE * torch.cos(x)

    assert chapter.average_task_gap(Average(1.0).to(device)) < 1e-6
    assert abs(chapter.average_task_gap(Average(0.0).to(device)) - 1.0) < 1e-6  # "zero everywhere" is 100 % off


def test_one_step_shift_grows_with_the_step_size(device):
    from metaadv_edu import data

    torch.manual_seed(0)
    net = models.SineRegressor().to(device)
    tasks = data.sine_tasks(10, 10, 20, generator=torch.Generator().manual_seed(0), device=device)
    small, needed = chapter.one_step_shift(net, tasks, 0.001)
    large, needed_again = chapter.one_step_shift(net, tasks, 0.01)
    assert 5 < large / small < 15 and needed == needed_again > 0


def test_sine_maml_inner_lr_is_validated_and_shipped(monkeypatch, tmp_path):
    """A non-positive α is refused before any training, and both α the notebooks use load from the
    shipped weights (the default α = 0.01 keeps its old cache key)."""
    from metaadv_edu import cache

    monkeypatch.setenv("METAADV_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="inner_lr"):
        chapter.sine_maml(iterations=1200, inner_lr=0.0)
    for lr in (0.01, 0.03):
        config = {**chapter.SINE_META, "iterations": 1200, "first_order": False, "seed": 0, "inner_lr": lr}
        assert (cache.SHIPPED / cache.cache_path("sine-maml", config).name).exists()


def _lr_gradient_by_hand(xs, ys, xq, yq, w, alpha):
    """The chain rule written out: dw₁/dα = −g₀, dw₂/dα = −g₀ − g₁ + αH_S g₀."""
    g0 = 2 / len(ys) * xs.T @ (xs @ w - ys)
    w1 = w - alpha * g0
    g1 = 2 / len(ys) * xs.T @ (xs @ w1 - ys)
    w2 = w1 - alpha * g1
    g_query = 2 / len(yq) * xq.T @ (xq @ w2 - yq)
    return -(g_query @ (g0 + g1 - alpha * 2 / len(ys) * xs.T @ (xs @ g0)))


def _lr_gradient_one_step(xs, ys, xq, yq, w, alpha):
    """The one-step formula −∇L_Q(w₁)·∇L_S(w), applied to a two-step problem."""
    g0 = 2 / len(ys) * xs.T @ (xs @ w - ys)
    return -(2 / len(yq) * xq.T @ (xq @ (w - alpha * g0) - yq)) @ g0


def _lr_gradient_by_autograd(xs, ys, xq, yq, w, alpha):
    a = torch.tensor(alpha, dtype=w.dtype, requires_grad=True)
    w2 = w
    for _ in range(2):
        w2 = w2 - a * 2 / len(ys) * xs.T @ (xs @ w2 - ys)
    return torch.autograd.grad(((xq @ w2 - yq) ** 2).mean(), a)[0]


def _lr_gradient_under_enable_grad(xs, ys, xq, yq, w, alpha):
    """Autograd switched back on inside the learner's function."""
    with torch.enable_grad():
        return _lr_gradient_by_autograd(xs, ys, xq, yq, w, alpha)


def _lr_gradient_by_func_grad(xs, ys, xq, yq, w, alpha):
    """torch.func.grad ignores an outer torch.no_grad()."""

    def query_loss(a):
        w2 = w
        for _ in range(2):
            w2 = w2 - a * 2 / len(ys) * xs.T @ (xs @ w2 - ys)
        return ((xq @ w2 - yq) ** 2).mean()

    return torch.func.grad(query_loss)(torch.tensor(alpha, dtype=w.dtype))


def _lr_gradient_by_backward(xs, ys, xq, yq, w, alpha):
    """Tensor.backward under torch.set_grad_enabled(True)."""
    with torch.set_grad_enabled(True):
        a = torch.tensor(alpha, dtype=w.dtype, requires_grad=True)
        w2 = w
        for _ in range(2):
            w2 = w2 - a * 2 / len(ys) * xs.T @ (xs @ w2 - ys)
        ((xq @ w2 - yq) ** 2).mean().backward()
        return a.grad


def _lr_gradient_minus_two_g0(xs, ys, xq, yq, w, alpha):
    """dw₂/dα taken as −2∇L_S(w): for a linear model numerically the Hessian sign flipped."""
    g0 = 2 / len(ys) * xs.T @ (xs @ w - ys)
    w1 = w - alpha * g0
    w2 = w1 - alpha * 2 / len(ys) * xs.T @ (xs @ w1 - ys)
    return -2 / len(yq) * xq.T @ (xq @ w2 - yq) @ (2 * g0)


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (_lr_gradient_by_hand, True, "agrees with autograd"),
        (_lr_gradient_under_enable_grad, False, "blocks autograd"),
        (_lr_gradient_by_func_grad, False, "blocks autograd"),
        (_lr_gradient_by_backward, False, "blocks autograd"),
        (_lr_gradient_minus_two_g0, False, "−2∇L_S(w)"),
        (lambda *t: float(_lr_gradient_by_hand(*t)), True, "agrees with autograd"),
        (lambda *t: chapter.two_step_lr_gradient(*t, through_step_two=False), False, "depends on α too"),
        (lambda *t: -_lr_gradient_by_hand(*t), False, "wrong sign"),
        (lambda *t: chapter.two_step_lr_gradient(*t, hessian_sign=1.0), False, "Hessian term has the wrong sign"),
        (_lr_gradient_one_step, False, "one-step formula"),
        (lambda *t: chapter.two_step_lr_gradient(*t, scale=1.0), False, "factor 2"),
        (_lr_gradient_by_autograd, False, "by hand"),
        (lambda *t: _lr_gradient_by_hand(*t).reshape(1, 1).expand(2, 2), False, "shape"),
    ],
)
def test_check_two_step_lr_gradient(fn, ok, hint, capsys):
    assert chapter.check_two_step_lr_gradient(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_the_two_step_grader_gives_autograd_back(capsys):
    entry_points = (torch.autograd.grad, torch.Tensor.backward, torch.enable_grad, torch.set_grad_enabled)
    chapter.check_two_step_lr_gradient(_lr_gradient_by_func_grad)
    assert (torch.autograd.grad, torch.Tensor.backward, torch.enable_grad, torch.set_grad_enabled) == entry_points
    assert torch.func.grad(lambda t: (t**2).sum())(torch.ones(2)).tolist() == [2.0, 2.0]
    assert torch.is_grad_enabled()


def test_the_two_step_closed_form_is_autograd_through_both_steps():
    for seed, alpha in ((0, 0.1), (5, 0.4)):
        g = torch.Generator().manual_seed(seed)
        xs, xq = (
            torch.randn(4, 3, generator=g, dtype=torch.float64),
            torch.randn(6, 3, generator=g, dtype=torch.float64),
        )
        ys, yq, w = (torch.randn(n, generator=g, dtype=torch.float64) for n in (4, 6, 3))
        task = (xs, ys, xq, yq, w)
        assert torch.allclose(chapter.two_step_lr_gradient(*task, alpha), _lr_gradient_by_autograd(*task, alpha))


def test_sine_evaluation_tunes_the_baseline_and_scores_both_models_on_shared_tasks(device):
    """The baseline gets the candidate with the lowest mean validation MSE over steps 1..k, MAML keeps its
    own α, and both are scored on the same seeded test tasks (100 + K), as notebook 05 reports them."""
    from metaadv_edu import data

    torch.manual_seed(0)
    meta_net, base_net = models.SineRegressor().to(device), models.SineRegressor().to(device)
    val = data.sine_tasks(8, 10, 20, generator=torch.Generator().manual_seed(99), device=device)
    candidates = (0.001, 0.01, 5.0)  # 5.0 diverges: it may never be chosen
    ev = chapter.sine_evaluation(meta_net, base_net, val, candidates=candidates, shots=(5, 10), n_tasks=6, max_steps=3)
    means = torch.stack([maml.adaptation_losses(base_net, val, inner_lr=c, max_steps=3).mean(1) for c in candidates])
    torch.testing.assert_close(ev.validation, means)
    assert ev.pretrained_lr == candidates[int(means[:2, 1:].mean(1).argmin())]
    assert ev.inner_lrs == {"MAML": 0.01, "pretrained": ev.pretrained_lr}
    assert set(ev.scores) == {(n, k) for n in ("MAML", "pretrained") for k in (5, 10)}
    tasks = data.sine_tasks(6, 5, 100, generator=torch.Generator().manual_seed(105), device=device)
    torch.testing.assert_close(
        ev.scores[("MAML", 5)], maml.adaptation_losses(meta_net, tasks, inner_lr=0.01, max_steps=3)
    )
    rows = chapter.evaluation_table(ev, steps=(0, 3))
    assert [r[:2] for r in rows[:2]] == [
        ["K = 5", "MAML, α = 0.01"],
        ["K = 5", f"pretrained, α = {ev.pretrained_lr:g}"],
    ]
    assert all(len(r) == 4 for r in rows)
    fig = chapter.evaluation_figure(ev)
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    maml_line, base_line = fig.axes[0].get_lines()
    assert maml_line.get_marker() != base_line.get_marker() and maml_line.get_linestyle() != base_line.get_linestyle()
    with pytest.raises(ValueError, match="n_tasks"):
        chapter.sine_evaluation(meta_net, base_net, val, n_tasks=1)
    with pytest.raises(ValueError, match="candidates"):
        chapter.sine_evaluation(meta_net, base_net, val, candidates=(0.01, -1.0))
