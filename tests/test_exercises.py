"""Every grader accepts the reference and rejects each typical mistake with its own hint."""

import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import attacks, exercises


def grad_of(model, x, y):
    return attacks.input_gradient(model, x, y)[0]


# ---------------------------------------------------------------------------------------- FGSM
def fgsm_ok(model, x, y, eps):
    return attacks.fgsm(model, x, y, eps)


def fgsm_wrong_sign(model, x, y, eps):
    return (x - eps * grad_of(model, x, y).sign()).clamp(0, 1)


def fgsm_no_clamp(model, x, y, eps):
    return x + eps * grad_of(model, x, y).sign()


def fgsm_raw_gradient(model, x, y, eps):
    return (x + eps * grad_of(model, x, y)).clamp(0, 1)


def fgsm_backward(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).clamp(0, 1).detach()


def fgsm_wrong_shape(model, x, y, eps):
    return x[0]


def fgsm_raises(model, x, y, eps):
    return x.nonexistent


def fgsm_stub(model, x, y, eps):
    raise NotImplementedError


@pytest.mark.parametrize("fn, ok, hint", [
    (fgsm_ok, True, "matches the reference"),
    (fgsm_wrong_sign, False, "wrong sign"),
    (fgsm_no_clamp, False, "clamp"),
    (fgsm_raw_gradient, False, "sign"),
    (fgsm_backward, False, "torch.autograd.grad"),
    (fgsm_wrong_shape, False, "shape"),
    (fgsm_raises, False, "AttributeError"),
    (fgsm_stub, False, "not written yet"),
])
def test_check_fgsm(fn, ok, hint, capsys):
    assert exercises.check_fgsm(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and ("✓" in out) == ok
    assert "Traceback" not in out


# ------------------------------------------------------------------------------------ the gain
@pytest.mark.parametrize("fn, ok, hint", [
    (lambda g, e: e * g.flatten(1).abs().sum(1), True, "ε‖g‖₁"),
    (lambda g, e: e * g.flatten(1).norm(dim=1), False, "L2 norm"),
    (lambda g, e: g.flatten(1).abs().sum(1), False, "multiply by ε"),
    (lambda g, e: e * g.flatten(1).sum(1), False, "absolute values"),
    (lambda g, e: e * g.abs().sum(), False, "one gain per example"),
    (lambda g, e: (e * g.flatten(1).abs().sum(1)).cpu() if g.is_cuda else "nope", False, "tensor"),
])
def test_check_first_order_gain(fn, ok, hint, capsys):
    assert exercises.check_first_order_gain(fn) is ok
    assert hint in capsys.readouterr().out


# ------------------------------------------------------------------------------------ PGD step
@pytest.mark.parametrize("fn, ok, hint", [
    (lambda xa, x, g, e, a: (x + (xa + a * g.sign() - x).clamp(-e, e)).clamp(0, 1), True, "correct"),
    (lambda xa, x, g, e, a: (xa + a * g.sign()).clamp(0, 1), False, "projection"),
    (lambda xa, x, g, e, a: x + (xa + a * g.sign() - x).clamp(-e, e), False, "then clamp"),
    (lambda xa, x, g, e, a: (x + (xa - a * g.sign() - x).clamp(-e, e)).clamp(0, 1), False, "wrong sign"),
    (lambda xa, x, g, e, a: (x + (xa + a * g - x).clamp(-e, e)).clamp(0, 1), False, "sign of the gradient"),
])
def test_check_pgd_step(fn, ok, hint, capsys):
    assert exercises.check_pgd_step(fn) is ok
    assert hint in capsys.readouterr().out


# ---------------------------------------------------------------------------------- mixed loss
def mixed_ok(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    return alpha * F.cross_entropy(model(x), y) + (1 - alpha) * F.cross_entropy(model(x_adv), y)


def mixed_swapped(model, x, y, eps, alpha):
    x_adv = attacks.fgsm(model, x, y, eps)
    return (1 - alpha) * F.cross_entropy(model(x), y) + alpha * F.cross_entropy(model(x_adv), y)


def mixed_detached(model, x, y, eps, alpha):
    return mixed_ok(model, x, y, eps, alpha).detach()


def mixed_adv_only(model, x, y, eps, alpha):
    return F.cross_entropy(model(attacks.fgsm(model, x, y, eps)), y)


@pytest.mark.parametrize("fn, ok, hint", [
    (mixed_ok, True, "gradient for the model"),
    (mixed_swapped, False, "swapped"),
    (mixed_detached, False, "no gradient"),
    (mixed_adv_only, False, "adversarial loss alone"),
])
def test_check_mixed_loss(fn, ok, hint, capsys):
    assert exercises.check_mixed_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_graders_use_the_inputs_device():
    seen = []

    def spy(model, x, y, eps):
        seen.append(x.device.type)
        return attacks.fgsm(model, x, y, eps)

    exercises.check_fgsm(spy)
    assert "cpu" in seen
    assert ("cuda" in seen) == torch.cuda.is_available()


# ------------------------------------------------------------------------------------------ MAML
from metaadv_edu import maml  # noqa: E402
from metaadv_edu.functional import forward  # noqa: E402


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


@pytest.mark.parametrize("fn, ok, hint", [
    (step_ok, True, "differentiable"),
    (step_no_graph, False, "Hessian term"),
    (step_detached, False, "detached"),
    (step_sign, False, "wrong sign"),
    (step_in_place, False, "model's own parameters"),
    (lambda m, p, x, y, lr: list(p.values()), False, "dict"),
])
def test_check_inner_step(fn, ok, hint, capsys):
    assert exercises.check_inner_step(fn) is ok
    assert hint in capsys.readouterr().out


def ml_ok(model, tasks, lr):
    return maml.meta_loss(model, tasks, inner_lr=lr)


@pytest.mark.parametrize("fn, ok, hint", [
    (ml_ok, True, "second-order"),
    (lambda m, t, lr: maml.meta_loss(m, t, inner_lr=lr, first_order=True), False, "Hessian term missing"),
    (lambda m, t, lr: t.n_tasks * maml.meta_loss(m, t, inner_lr=lr), False, "summed"),
    (lambda m, t, lr: F.mse_loss(m(t.x_query), t.y_query), False, "adapt to each task"),
    (lambda m, t, lr: maml.meta_loss(m, exercises.data_swap(t), inner_lr=lr), False, "query"),
    (lambda m, t, lr: ml_ok(m, t, lr).detach(), False, "no gradient"),
])
def test_check_maml_meta_loss(fn, ok, hint, capsys):
    assert exercises.check_maml_meta_loss(fn) is ok
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).mean(0) for k in t}, True, "for one task and for many"),
    (lambda t, p, b: {k: t[k] - b * (p[k] - t[k]).mean(0) for k in t}, False, "wrong sign"),
    (lambda t, p, b: {k: t[k] + b * (p[k] - t[k]).sum(0) for k in t}, False, "mean"),
    (lambda t, p, b: {k: t[k] + (p[k] - t[k]).mean(0) for k in t}, False, "β"),
    (lambda t, p, b: [t[k] for k in t], False, "dict"),
])
def test_check_reptile_update(fn, ok, hint, capsys):
    assert exercises.check_reptile_update(fn) is ok
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda p, g, a: {k: p[k] - a[k] * g[k] for k in p}, True, "elementwise"),
    (lambda p, g, a: {k: p[k] + a[k] * g[k] for k in p}, False, "wrong sign"),
    (lambda p, g, a: {k: p[k] - a[k].mean() * g[k] for k in p}, False, "not a scalar"),
    (lambda p, g, a: p, False, "not θ − α∘∇L"),
])
def test_check_meta_sgd_step(fn, ok, hint, capsys):
    assert exercises.check_meta_sgd_step(fn) is ok
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda r, f: -(F.logsigmoid(r).mean() + F.logsigmoid(-f).mean()), True, "stable"),
    (lambda r, f: F.logsigmoid(r).mean() + F.logsigmoid(-f).mean(), False, "−V"),
    (lambda r, f: -(F.logsigmoid(f).mean() + F.logsigmoid(-r).mean()), False, "swapped"),
    (lambda r, f: -(torch.log(torch.sigmoid(r)).mean() + torch.log(1 - torch.sigmoid(f)).mean()), False, "not finite"),
    (lambda r, f: -(F.logsigmoid(r).sum() + F.logsigmoid(-f).sum()), False, "average"),
])
def test_check_discriminator_loss(fn, ok, hint, capsys):
    assert exercises.check_discriminator_loss(fn) is ok
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("fn, ok, hint", [
    (lambda x, h, e: (x + e * torch.tanh(h)).clamp(0, 1), True, "differentiable"),
    (lambda x, h, e: x + e * torch.tanh(h), False, "clip the result"),
    (lambda x, h, e: (x + h.clamp(-e, e)).clamp(0, 1), False, "kills the gradient"),
    (lambda x, h, e: (x + torch.tanh(h)).clamp(0, 1), False, "scale the tanh"),
])
def test_check_bounded_perturbation(fn, ok, hint, capsys):
    assert exercises.check_bounded_perturbation(fn) is ok
    assert hint in capsys.readouterr().out


# ------------------------------------------------------------------ adversarial-query loss
def _fgsm_at(model, params, x, y, eps, *, clamp=True, sign=1.0):
    from metaadv_edu.functional import forward

    frozen = {k: p.detach() for k, p in params.items()}
    g = attacks.input_gradient(lambda z: forward(model, frozen, z), x, y)[0]
    out = x + sign * eps * g.sign()
    return out.clamp(0, 1) if clamp else out


def _aq(attack_params="adapted", score_params="adapted", **kw):
    from metaadv_edu.functional import forward

    def loss(model, adapted, x, y, eps):
        own = dict(model.named_parameters())
        at = adapted if attack_params == "adapted" else own
        scored = adapted if score_params == "adapted" else own
        x_adv = _fgsm_at(model, at, x, y, eps, **kw)
        return F.cross_entropy(forward(model, scored, x_adv), y)

    return loss


def _aq_clean(model, adapted, x, y, eps):
    from metaadv_edu.functional import forward

    return F.cross_entropy(forward(model, adapted, x), y)


def _aq_detached(model, adapted, x, y, eps):
    return _aq()(model, {k: p.detach() for k, p in adapted.items()}, x, y, eps)


@pytest.mark.parametrize("fn, ok, hint", [
    (_aq(), True, "meta-gradient flows through the adaptation"),
    (_aq_clean, False, "clean query loss"),
    (_aq(attack_params="initial"), False, "the attack targets θ"),
    (_aq(score_params="initial"), False, "scored by the adapted weights"),
    (_aq(clamp=False), False, "forgot to clamp"),
    (_aq(sign=-1.0), False, "wrong sign"),
    (_aq_detached, False, "do not detach adapted"),
    (lambda model, adapted, x, y, eps: torch.zeros(3), False, "single-number tensor"),
    (lambda model, adapted, x, y, eps: adapted["missing"], False, "KeyError"),
])
def test_check_adversarial_query_loss(fn, ok, hint, capsys):
    assert exercises.check_adversarial_query_loss(fn) is ok
    assert hint in capsys.readouterr().out
