"""Adversarial querying: the derivations of notebook 08 as tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import attacks, covers, maml, models, robust_checks, robust_meta, transfer
from metaadv_edu.data import Tasks
from metaadv_edu.functional import forward, params_of
from tests.wrong import rejects


def _tasks(device, n_tasks=3, n_way=3, k_shot=2, k_query=3, seed=0, pool="meta-train"):
    return covers.cover_tasks(
        n_tasks,
        n_way=n_way,
        k_shot=k_shot,
        k_query=k_query,
        size=8,
        pool=pool,
        generator=torch.Generator().manual_seed(seed),
        device=device,
    )


def _model(device, n_way=3, seed=0):
    torch.manual_seed(seed)
    return models.TinyCNN(3, n_way, width=4, image_size=8).to(device)


def _attached_l2(
    model,
    tasks,
    *,
    inner_lr,
    steps=1,
    epsilon,
    attack="l2",
    attack_steps=1,
    step_size=None,
    clamp=True,
    params=None,
    target="adapted",
    **_,
):
    """A wrong adversarial-query loss: the L2 attack is left attached to the graph, so gradients flow
    through δ(θ′) as well."""
    params = params if params is not None else params_of(model)
    a = step_size if step_size is not None else 2.5 * epsilon / attack_steps
    losses = []
    for xs, ys, xq, yq in zip(*tasks):
        adapted = maml.adapt(model, params, xs, ys, inner_lr=inner_lr, steps=steps)
        at = adapted if target == "adapted" else params
        x = xq.clone().requires_grad_(True)
        for _ in range(attack_steps):
            (g,) = torch.autograd.grad(
                F.cross_entropy(forward(model, at, x), yq, reduction="sum"), x, create_graph=True
            )
            d = x + a * g / g.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1)) - xq
            x = xq + d * (epsilon / d.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))).clamp(max=1)
            x = x.clamp(0, 1) if clamp else x
        losses.append(F.cross_entropy(forward(model, adapted, x), yq))
    return torch.stack(losses).mean()


def _first_order(model, tasks, **kw):
    return robust_meta.adversarial_query_loss(model, tasks, first_order=True, **kw)


def _aimed_at_theta(model, tasks, **kw):
    return robust_meta.adversarial_query_loss(model, tasks, **{**kw, "target": "initial"})


def _sign_step(model, tasks, **kw):
    """A non-maximiser of the L2 ball: FGSM's sign step, scaled to lie inside it (‖δ‖₂ = ε·√192/16 < ε)."""
    return robust_meta.adversarial_query_loss(model, tasks, **{**kw, "attack": "fgsm", "epsilon": kw["epsilon"] / 16})


def test_meta_gradient_through_the_attacked_query_matches_finite_differences():
    out = robust_checks.meta_gradient_check()
    # One L2 step of ε is the exact inner maximiser for a two-class linear model: the losses agree to rounding.
    assert out["loss_adapted"] == pytest.approx(out["robust_loss"], rel=1e-12)
    assert out["error_adapted"] < 1e-7
    # Attacking θ instead of θ′ is a weaker attack on the adapted model and a different gradient.
    assert out["loss_initial"] < out["robust_loss"] - 1e-3
    assert out["error_initial"] > 1e-1


@rejects("aq_exact_meta_gradient", "a sign step inside the L2 ball instead of its maximiser")
def test_meta_gradient_check_rejects_a_non_maximiser():
    # δ = (ε/16)·sign(g) lies inside the L2 ball but is not its maximiser.
    out = robust_checks.meta_gradient_check(query_loss=_sign_step)
    assert out["error_adapted"] > 1e-2


def test_meta_gradient_check_cannot_see_an_attached_exact_maximiser():
    # Danskin (envelope theorem): at the exact maximiser the term through δ vanishes, so this check alone
    # cannot catch an attack left attached; the frozen-attack check below does.
    out = robust_checks.meta_gradient_check(query_loss=_attached_l2)
    assert out["error_adapted"] < 1e-7


def _cover_net_and_tasks(seed=0):
    torch.manual_seed(seed)
    model = models.TinyCNN(3, 5, width=8, image_size=16)
    tasks = covers.cover_tasks(
        2, n_way=5, k_shot=5, k_query=5, size=16, pool="meta-test", generator=torch.Generator().manual_seed(seed)
    )
    return model, tasks


def test_frozen_attack_check_accepts_adversarial_query_loss():
    model, tasks = _cover_net_and_tasks()
    out = robust_checks.frozen_attack_check(model, tasks, inner_lr=0.2, steps=2, epsilon=1.0)
    assert out["loss_error"] < 1e-6 and out["grad_error"] < 1e-5


@rejects("aq_frozen_attack", "the attack left attached to the graph")
@rejects("aq_frozen_attack", "first-order adaptation (Hessian term dropped)")
@rejects("aq_frozen_attack", "the attack aimed at θ instead of θ′")
@pytest.mark.parametrize("wrong", [_attached_l2, _first_order, _aimed_at_theta])
def test_frozen_attack_check_rejects_wrong_meta_gradients(wrong):
    # an attack left in the graph, the first-order shortcut, an attack on θ: each changes the gradient by > 5 %
    model, tasks = _cover_net_and_tasks()
    out = robust_checks.frozen_attack_check(model, tasks, inner_lr=0.2, steps=2, epsilon=1.0, query_loss=wrong)
    assert out["grad_error"] > 5e-2


def test_l2_attack_stays_in_the_ball_and_one_step_is_the_normalised_gradient(device):
    model, tasks = _model(device), _tasks(device)
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3, steps=1)
    x_adv = robust_meta.attack_tasks(
        model, adapted, tasks.x_query, tasks.y_query, epsilon=0.5, attack="l2", attack_steps=4
    )
    assert ((x_adv - tasks.x_query).flatten(2).norm(dim=2) <= 0.5 + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    one = robust_meta.attack_tasks(
        model, adapted, tasks.x_query, tasks.y_query, epsilon=0.5, attack="l2", attack_steps=1, step_size=0.5
    )
    p0 = {k: p[0] for k, p in adapted.items()}
    x = tasks.x_query[0].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(forward(model, p0, x), tasks.y_query[0], reduction="sum"), x)
    expected = (tasks.x_query[0] + 0.5 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    torch.testing.assert_close(one[0], expected)


def test_linear_robust_loss_is_the_loss_at_the_fgsm_point(device):
    torch.manual_seed(0)
    model = models.LogisticRegression(12, 2).to(device).double()
    x = torch.rand(20, 12, device=device, dtype=torch.float64)
    y = torch.randint(0, 2, (20,), device=device)
    x_adv = attacks.fgsm(model, x, y, 0.1, clamp=None)
    expected = F.cross_entropy(model(x_adv), y)
    exact = robust_checks.linear_robust_loss(params_of(model), x, y, 0.1, norm="linf")
    torch.testing.assert_close(exact, expected)
    # and over the L2 ball, at the normalised-gradient point
    w = model[1].weight[1] - model[1].weight[0]
    s = (2 * y - 1).double()[:, None]
    expected = F.cross_entropy(model(x - 0.1 * s * w / w.norm()), y)
    torch.testing.assert_close(robust_checks.linear_robust_loss(params_of(model), x, y, 0.1), expected)


def test_functional_attack_is_pgd_of_the_attacks_module(device):
    model = _model(device)
    x = torch.rand(6, 3, 8, 8, device=device)
    y = torch.randint(0, 3, (6,), device=device)
    params = params_of(model, detach=True)
    mine = robust_meta.functional_attack(
        model, params, x, y, torch.zeros_like(x), epsilon=0.05, steps=5, step_size=0.02
    )
    reference = attacks.pgd(model, x, y, 0.05, step_size=0.02, steps=5, random_start=False)
    torch.testing.assert_close(mine, reference)
    assert (mine - x).abs().max() <= 0.05 + 1e-6
    assert mine.min() >= 0 and mine.max() <= 1


def test_every_task_is_attacked_against_its_own_adapted_model(device):
    model, tasks = _model(device), _tasks(device)
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3, steps=2)
    x_adv = robust_meta.attack_tasks(model, adapted, tasks.x_query, tasks.y_query, epsilon=0.05, attack="fgsm")
    for i in range(len(tasks.x_query)):
        theta_i = {k: p[i] for k, p in adapted.items()}
        expected = attacks.fgsm(lambda z, p=theta_i: forward(model, p, z), tasks.x_query[i], tasks.y_query[i], 0.05)
        torch.testing.assert_close(x_adv[i], expected)
        # adapt_tasks is maml.adapt, task by task
        ref = maml.adapt(
            model, params_of(model, detach=True), tasks.x_support[i], tasks.y_support[i], inner_lr=0.3, steps=2
        )
        for k in ref:
            torch.testing.assert_close(theta_i[k], ref[k].detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("epsilon", [0.0, 0.05])
def test_attack_of_one_task_is_the_attack_of_attack_tasks(device, epsilon):
    """The explorer's single-task PGD (plain autograd) equals attack_tasks's vmapped PGD: same random start,
    step size and projection; one task's slice of the batch, attacked against that task's own weights."""
    model, tasks = _model(device), _tasks(device)
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3, steps=2)
    one = {k: p[1:2] for k, p in adapted.items()}
    batch = robust_meta.attack_tasks(
        model,
        one,
        tasks.x_query[1:2],
        tasks.y_query[1:2],
        epsilon=epsilon,
        attack_steps=4,
        generator=torch.Generator().manual_seed(3),
    )[0]
    x_adv, clean, attacked = robust_meta.attack_one_task(
        model,
        {k: p[0] for k, p in one.items()},
        tasks.x_query[1],
        tasks.y_query[1],
        epsilon=epsilon,
        attack_steps=4,
        seed=3,
    )
    torch.testing.assert_close(x_adv, batch)
    with torch.no_grad():
        theta = {k: p[1] for k, p in adapted.items()}
        assert torch.equal(clean, forward(model, theta, tasks.x_query[1]).argmax(-1))
        assert torch.equal(attacked, forward(model, theta, batch).argmax(-1))
    if epsilon:
        # a different seed starts elsewhere: the comparison above could tell a wrong start apart
        other = robust_meta.attack_one_task(
            model,
            {k: p[0] for k, p in one.items()},
            tasks.x_query[1],
            tasks.y_query[1],
            epsilon=epsilon,
            attack_steps=4,
            seed=4,
        )[0]
        assert not torch.equal(other, batch)


def test_robust_accuracy_falls_with_epsilon_and_epsilon_zero_is_clean(device):
    model, tasks = _model(device), _tasks(device, n_tasks=4)
    acc = robust_meta.robust_task_accuracy(
        model, tasks, [0.0, 0.05, 0.3], inner_lr=0.3, steps=1, generator=torch.Generator().manual_seed(0)
    )
    assert acc.shape == (3, 4)
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3, steps=1)
    torch.testing.assert_close(acc[0], robust_meta.task_accuracy(model, adapted, tasks.x_query, tasks.y_query))
    assert acc[2].mean() <= acc[0].mean()


def test_adversarial_query_loss_with_zero_budget_is_the_maml_loss(device):
    model, tasks = _model(device), _tasks(device)
    aq = robust_meta.adversarial_query_loss(model, tasks, inner_lr=0.3, steps=1, epsilon=0.0)
    ref = maml.meta_loss(model, tasks, inner_lr=0.3, steps=1)
    torch.testing.assert_close(aq, ref)


def test_adversarial_query_loss_is_the_loss_at_the_attacked_query(device):
    model, tasks = _model(device), _tasks(device)
    aq = robust_meta.adversarial_query_loss(model, tasks, inner_lr=0.3, steps=1, epsilon=0.05, attack="fgsm")
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3, steps=1)
    x_adv = robust_meta.attack_tasks(model, adapted, tasks.x_query, tasks.y_query, epsilon=0.05, attack="fgsm")
    losses = [
        F.cross_entropy(forward(model, {k: p[i] for k, p in adapted.items()}, x_adv[i]), tasks.y_query[i])
        for i in range(len(x_adv))
    ]
    assert aq.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-4)
    clean = maml.meta_loss(model, tasks, inner_lr=0.3, steps=1)
    assert aq > clean


def test_adversarial_query_meta_gradient_flows_only_through_the_adaptation(device):
    # Danskin: the gradient equals MAML's meta-gradient with the query inputs replaced by the frozen
    # adversarial ones.
    model, tasks = _model(device), _tasks(device)
    g = torch.Generator().manual_seed(3)
    loss = robust_meta.adversarial_query_loss(
        model, tasks, inner_lr=0.3, steps=1, epsilon=0.05, attack_steps=3, generator=g
    )
    grads = torch.autograd.grad(loss, list(model.parameters()))
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3, steps=1)
    x_adv = robust_meta.attack_tasks(
        model,
        adapted,
        tasks.x_query,
        tasks.y_query,
        epsilon=0.05,
        attack_steps=3,
        generator=torch.Generator().manual_seed(3),
    )
    frozen = Tasks(tasks.x_support, tasks.y_support, x_adv, tasks.y_query)
    ref = torch.autograd.grad(maml.meta_loss(model, frozen, inner_lr=0.3, steps=1), list(model.parameters()))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_adversarial_querying_makes_few_shot_learning_more_robust():
    sample = lambda g: covers.cover_tasks(4, n_way=3, k_shot=3, k_query=3, size=8, generator=g)  # noqa: E731
    test = _tasks("cpu", n_tasks=30, n_way=3, k_shot=3, k_query=5, seed=9, pool="meta-test")
    accs = {}
    for eps in (0.0, 0.06):
        model = _model("cpu", seed=1)
        common = {
            "iterations": 80,
            "inner_lr": 0.3,
            "outer_lr": 1e-2,
            "generator": torch.Generator().manual_seed(0),
            "progress": False,
        }
        if eps:
            robust_meta.meta_train_adversarial(model, sample, epsilon=eps, attack_steps=2, **common)
        else:
            maml.meta_train(model, sample, **common)
        accs[eps] = robust_meta.robust_task_accuracy(
            model, test, [0.0, 0.06], inner_lr=0.3, steps=1, generator=torch.Generator().manual_seed(0)
        ).mean(1)
    assert accs[0.0][0] > 0.5  # it learned to classify new genres
    assert accs[0.06][1] > accs[0.0][1] + 0.05  # and adversarial querying is more robust


def test_with_new_head_keeps_the_body_and_zeroes_the_head(device):
    model = models.TinyCNN(3, 10, width=4, image_size=8).to(device)
    new = transfer.with_new_head(model, 5)
    assert new[-1].out_features == 5
    assert torch.count_nonzero(new[-1].weight) == 0 and torch.count_nonzero(new[-1].bias) == 0
    torch.testing.assert_close(new[0].weight, model[0].weight)
    assert model[-1].out_features == 10  # the original is untouched
    assert new(torch.rand(2, 3, 8, 8, device=device)).abs().max() == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"epsilon": 0.1, "inner_lr": 0.0}, "inner_lr"),
        ({"epsilon": 0.1, "attack_steps": 0}, "attack_steps"),
        ({"epsilon": 0.1, "attack": "cw"}, "attack"),
        ({"epsilon": 0.1, "target": "query"}, "target"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    model, tasks = _model("cpu"), _tasks("cpu")
    args = {"inner_lr": 0.3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        robust_meta.adversarial_query_loss(model, tasks, **args)


@pytest.mark.parametrize(("kwargs", "match"), [({"epsilon": -0.1}, "epsilon"), ({"attack_steps": 0}, "attack_steps")])
def test_attack_of_one_task_names_a_bad_argument(kwargs, match):
    model, tasks = _model("cpu"), _tasks("cpu")
    args = {"epsilon": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        robust_meta.attack_one_task(model, params_of(model, detach=True), tasks.x_query[0], tasks.y_query[0], **args)


def test_bad_shapes_and_pools():
    model, tasks = _model("cpu"), _tasks("cpu")
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=0.3)
    with pytest.raises(ValueError, match="adapted parameters hold"):
        robust_meta.attack_tasks(model, adapted, tasks.x_query[:2], tasks.y_query[:2], epsilon=0.1)
    with pytest.raises(TypeError, match="integer class labels"):
        robust_meta.robust_task_accuracy(
            model,
            Tasks(tasks.x_support, tasks.y_support.float(), tasks.x_query, tasks.y_query.float()),
            [0.1],
            inner_lr=0.3,
        )
    with pytest.raises(ValueError, match="n_way"):
        transfer.with_new_head(model, 1)


def test_tune_inner_lr_by_accuracy_picks_the_best_rate_on_the_given_tasks(device):
    model, tasks = _model(device), _tasks(device, n_tasks=4)
    rates = [1e-4, 0.3, 3.0]
    best, scores = robust_meta.tune_inner_lr_by_accuracy(model, tasks, rates, steps=1)
    assert len(scores) == 3 and best == rates[max(range(3), key=lambda i: (scores[i], -rates[i]))]
    adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=best, steps=1)
    assert scores[rates.index(best)] == pytest.approx(
        float(robust_meta.task_accuracy(model, adapted, tasks.x_query, tasks.y_query).mean())
    )
    with pytest.raises(ValueError, match="inner_lrs"):
        robust_meta.tune_inner_lr_by_accuracy(model, tasks, [], steps=1)
