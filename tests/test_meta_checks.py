"""The derivation checks of notebooks 05–07 pass on the package's implementations and reject a
plausible wrong implementation of each (a check that cannot fail is not a check)."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import maml, metasgd, reptile
from metaadv_edu import meta_checks as mc
from metaadv_edu.functional import forward, params_of, sgd_step
from tests.wrong import rejects


# ------------------------------------------------------------------------ 05: meta-gradient
@rejects("maml_meta_gradient", "first-order meta-loss (the Hessian term dropped)")
def test_meta_gradient_check_passes_and_rejects_first_order():
    assert all(e < mc.TOL for e in mc.meta_gradient_errors().values())
    fo = lambda m, t, **kw: maml.meta_loss(m, t, first_order=True, **kw)  # noqa: E731
    assert all(e > 1e-4 for e in mc.meta_gradient_errors(fo).values())


@rejects("maml_meta_gradient", "a meta-loss that ignores steps and always adapts once")
def test_meta_gradient_check_rejects_a_wrong_number_of_steps():
    one_step = lambda m, t, *, inner_lr, steps: maml.meta_loss(m, t, inner_lr=inner_lr)  # noqa: E731
    errors = mc.meta_gradient_errors(one_step)
    assert errors[1] < mc.TOL and errors[3] > 1e-4


def pooled_meta_loss(model, tasks, *, inner_lr):
    """A vectorisation bug: one adaptation on every task's support set pooled together."""
    params = params_of(model)
    xs, ys = tasks.x_support.reshape(-1, 1), tasks.y_support.reshape(-1, 1)
    grads = torch.autograd.grad(F.mse_loss(forward(model, params, xs), ys), list(params.values()), create_graph=True)
    adapted = sgd_step(params, dict(zip(params, grads)), inner_lr)
    return F.mse_loss(forward(model, adapted, tasks.x_query.reshape(-1, 1)), tasks.y_query.reshape(-1, 1))


@rejects("maml_vmap_loop", "one adaptation on all support sets pooled together")
def test_vmap_loop_check_passes_and_rejects_pooled_adaptation():
    assert mc.vmap_loop_gap()[2]
    assert not mc.vmap_loop_gap(pooled_meta_loss)[2]


# ------------------------------------------------------------------------ 05: FOMAML's error, eq. (6)
def test_fomaml_check_passes_on_fomaml():
    rows = mc.fomaml_term_errors()
    assert all(ok for *_, ok in rows)
    sizes = [size for _, size, _, _ in rows]
    assert 8 < sizes[1] / sizes[0] < 12  # the Hessian term is proportional to α while α is small


@pytest.mark.parametrize("name", list(mc.FOMAML_MISTAKES))
@rejects("maml_fomaml_term", "query gradient at θ (no adaptation) or after an ascent inner step")
def test_fomaml_check_rejects_mistakes(name):
    rows = mc.fomaml_term_errors(mc.FOMAML_MISTAKES[name])
    assert not any(ok for *_, ok in rows)
    assert min(err for _, _, err, _ in rows) > 0.05


@rejects("maml_fomaml_term", "the support set used as the query set")
def test_fomaml_check_rejects_the_support_gradient_at_theta_prime():
    from metaadv_edu.chapters.maml import data_swap

    def support(net, task, a):
        return list(
            torch.autograd.grad(
                maml.meta_loss(net, data_swap(task), inner_lr=a, first_order=True), list(net.parameters())
            )
        )

    assert not any(ok for *_, ok in mc.fomaml_term_errors(support))


def test_skip_adaptation_passed_the_old_ratio_check():
    """Why the check changed: the relative first-order error of ∇L_Q(θ) also grows ∝ α."""
    net, task = mc.sine_net64(), mc.sine_task64()
    errors = []
    for a in (1e-4, 1e-3, 1e-2):
        g_so = torch.autograd.grad(maml.meta_loss(net, task, inner_lr=a), list(net.parameters()))
        g_fo = mc.FOMAML_MISTAKES[next(iter(mc.FOMAML_MISTAKES))](net, task, a)
        errors.append((mc._norm([x - y for x, y in zip(g_so, g_fo)]) / mc._norm(g_so)).item())
    assert all(8 < b / a < 12 for a, b in zip(errors, errors[1:]))


# ------------------------------------------------------------------------ 06: Reptile
@rejects("reptile_one_step_sgd", "the update sums the tasks' steps instead of averaging them")
def test_reptile_one_step_check_passes_and_rejects_a_summed_update():
    assert mc.reptile_one_step_gap() < mc.TOL

    def summed(model, tasks, *, inner_lr, inner_steps, outer_lr):  # Σ instead of mean over tasks
        return reptile.outer_step(
            model, tasks, inner_lr=inner_lr, inner_steps=inner_steps, outer_lr=outer_lr * tasks.n_tasks
        )

    assert mc.reptile_one_step_gap(summed) > 1e-4


@rejects("reptile_one_step_sgd", "two inner steps of half the outer rate")
def test_reptile_one_step_check_rejects_two_inner_steps():
    def two(model, tasks, *, inner_lr, inner_steps, outer_lr):
        return reptile.outer_step(model, tasks, inner_lr=inner_lr, inner_steps=2, outer_lr=outer_lr / 2)

    assert mc.reptile_one_step_gap(two) > 1e-8


@rejects("reptile_taylor", "k counted as gradient evaluations for MAML and FOMAML")
def test_taylor_check_passes_and_rejects_gradient_evaluation_counting():
    residuals = mc.taylor_residuals(ks=(2,))
    assert all(mc.taylor_slopes_ok(r) for r in residuals.values())

    def old_convention(terms, *, inner_lr, k):  # k counted as gradient evaluations (k − 1 inner steps)
        out = reptile.predicted_updates(terms, inner_lr=inner_lr, k=k - 1)
        out["Reptile"] = reptile.predicted_updates(terms, inner_lr=inner_lr, k=k)["Reptile"]
        return out

    wrong = mc.taylor_residuals(old_convention, ks=(2,))
    assert not mc.taylor_slopes_ok(wrong[("MAML", 2)]) and not mc.taylor_slopes_ok(wrong[("FOMAML", 2)])


@rejects("reptile_taylor", "the AvgGradInner term with the wrong sign")
def test_taylor_check_rejects_a_wrong_sign():
    def flipped(terms, *, inner_lr, k):
        return reptile.predicted_updates(terms, inner_lr=-inner_lr, k=k)

    wrong = mc.taylor_residuals(flipped, ks=(2,))
    assert not any(mc.taylor_slopes_ok(r) for r in wrong.values())


# ------------------------------------------------------------------------ 07: Meta-SGD
def test_alpha_gradient_check_passes():
    error_alpha, error_theta = mc.alpha_gradient_errors()
    assert error_alpha < mc.TOL and error_theta < mc.TOL


@pytest.mark.parametrize(
    "formula",
    [
        lambda g_q, g_s: g_q * g_s,  # wrong sign
        lambda g_q, g_s: -g_q,  # the support gradient factor missing
        lambda g_q, g_s: -0.5 * g_q * g_s,  # a stray factor
    ],
)
@rejects("metasgd_alpha_gradient", "∂L/∂α with the wrong sign, without ∇L_S, or halved")
def test_alpha_gradient_check_rejects_wrong_formulas(formula):
    assert mc.alpha_gradient_errors(formula=formula)[0] > 1e-6


def detached_alpha(model, lrs, tasks):
    return metasgd.meta_loss(model, {k: a.detach() for k, a in lrs.items()}, tasks) + 0 * sum(
        a.sum() for a in lrs.values()
    )


def ascent_alpha(model, lrs, tasks):
    return metasgd.meta_loss(model, {k: -a for k, a in lrs.items()}, tasks)


def first_order_metasgd(model, lrs, tasks):
    return maml.meta_loss(model, tasks, inner_lr=lrs, first_order=True)


@pytest.mark.parametrize(
    "fn, bad_alpha, bad_theta",
    [(detached_alpha, True, False), (ascent_alpha, True, True), (first_order_metasgd, False, True)],
)
@rejects("metasgd_alpha_gradient", "a Meta-SGD loss with α detached, an ascent step, or first order")
def test_alpha_gradient_check_rejects_wrong_meta_losses(fn, bad_alpha, bad_theta):
    error_alpha, error_theta = mc.alpha_gradient_errors(fn)
    assert (error_alpha > 1e-6) is bad_alpha and (error_theta > 1e-6) is bad_theta


@rejects("metasgd_equal_alpha", "α detached, first order, or the step halved")
def test_equal_alpha_check_passes_and_rejects_wrong_meta_losses():
    assert all(g < mc.TOL for g in mc.equal_alpha_gaps())
    assert mc.equal_alpha_gaps(detached_alpha)[2] > 1e-6
    assert mc.equal_alpha_gaps(first_order_metasgd)[1] > 1e-6
    half = lambda m, lrs, t: metasgd.meta_loss(m, {k: a / 2 for k, a in lrs.items()}, t)  # noqa: E731
    assert min(mc.equal_alpha_gaps(half)) > 1e-6
