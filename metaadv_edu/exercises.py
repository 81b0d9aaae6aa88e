"""Exercises that check themselves.

Each ``check_*`` function runs a learner's implementation on hidden cases (several shapes, ε = 0,
the CPU and, where present, the GPU), compares it with the package's reference, prints a short
verdict — ✓, or what looks wrong with a hint — and returns True or False. It never shows the
solution and never lets an exception from the learner's code escape as a traceback.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from metaadv_edu import attacks

__all__ = [
    "check_adversarial_query_loss", "check_bounded_perturbation", "check_discriminator_loss", "check_fgsm",
    "check_first_order_gain", "check_inner_step", "check_maml_meta_loss", "check_meta_sgd_step",
    "check_mixed_loss", "check_pgd_step", "check_reptile_update",
]


class _Stop(Exception):
    """A verdict reached while running the cases."""


def _devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def _report(name: str, ok: bool, message: str) -> bool:
    print(f"{'✓' if ok else '✗'} {name}: {message}")
    return ok


def _call(fn: Callable, *args):
    try:
        return fn(*args)
    except NotImplementedError:
        raise _Stop("not written yet — replace the `raise NotImplementedError` with your code") from None
    except Exception as exc:  # the learner's code may fail in any way; report it kindly
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise _Stop(f"your function raised {type(exc).__name__}: {exc} (line {frame.lineno}: "
                    f"`{(frame.line or '').strip()}`)") from None


def _tensor_like(out, ref: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise _Stop(f"{what} should be a tensor, got {type(out).__name__}")
    if out.shape != ref.shape:
        raise _Stop(f"{what} should have shape {tuple(ref.shape)}, got {tuple(out.shape)}")
    if out.device != ref.device:
        raise _Stop(f"{what} is on {out.device} but the inputs were on {ref.device}: create "
                    "tensors on the device of the inputs")
    return out.detach().to(ref.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=tol, rtol=tol))


def _run(name: str, body: Callable[[], str]) -> bool:
    try:
        return _report(name, True, body())
    except _Stop as stop:
        return _report(name, False, str(stop))


def _toy_classifier(device, seed: int, n_in: int = 16, n_classes: int = 4) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model.to(device)


def _toy_batch(device, seed: int, n: int = 6, n_classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 4, 4, generator=g).to(device),
            torch.randint(n_classes, (n,), generator=g).to(device))


def _cases():
    for device in _devices():
        for seed, eps in ((0, 0.1), (1, 0.3), (2, 0.0), (3, 0.05)):
            model = _toy_classifier(device, seed)
            x, y = _toy_batch(device, seed + 10, n=3 + seed)
            yield model, x, y, eps


# ------------------------------------------------------------------------------ chapter 1: FGSM
def check_fgsm(my_fgsm: Callable) -> bool:
    """Grade ``my_fgsm(model, x, y, epsilon) -> x_adv``: untargeted FGSM, clamped to [0, 1]."""

    def body() -> str:
        for model, x, y, eps in _cases():
            model.zero_grad(set_to_none=True)
            out = _tensor_like(_call(my_fgsm, model, x, y, eps), x, "x_adv")
            if any(p.grad is not None for p in model.parameters()):
                raise _Stop("your function left gradients in the model's parameters (that is what "
                            "loss.backward() does): use torch.autograd.grad(loss, x) to get the "
                            "gradient with respect to the input only")
            ref = attacks.fgsm(model, x, y, eps)
            if _close(out, ref):
                continue
            grad, _ = attacks.input_gradient(model, x, y)
            if _close(out, (x - eps * grad.sign()).clamp(0, 1)):
                raise _Stop("wrong sign: you stepped *down* the loss. FGSM adds ε·sign(∇ₓL) to "
                            "increase the loss of the true class")
            if _close(out, x + eps * grad.sign()):
                raise _Stop("almost: the result must stay a valid image — clamp it to [0, 1]")
            if _close(out, (x + eps * grad).clamp(0, 1)) or _close(out, x + eps * grad):
                raise _Stop("you moved along the gradient itself; the L∞ maximiser uses only its "
                            "sign, so that every pixel moves by exactly ε")
            if eps == 0 and not _close(out, x):
                raise _Stop("with ε = 0 the attack must return x unchanged")
            raise _Stop(f"differs from the reference by up to {float((out - ref).abs().max()):.3g}; "
                        "check that you differentiate the cross-entropy of (model(x), y) with "
                        "respect to x")
        return "matches the reference on every case, ε = 0 included, and leaves the model untouched"

    return _run("FGSM", body)


def check_first_order_gain(my_gain: Callable) -> bool:
    """Grade ``my_gain(grad, epsilon) -> gain``: the first-order loss increase of FGSM per example,
    ε‖g‖₁, for a batch of gradients of shape (B, ...); returns shape (B,)."""

    def body() -> str:
        for device in _devices():
            for seed, shape in ((0, (4, 1, 8, 8)), (1, (3, 5)), (2, (2, 3, 4, 4))):
                g = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
                for eps in (0.1, 0.25, 0.0):
                    ref = eps * g.flatten(1).abs().sum(1)
                    out = _call(my_gain, g, eps)
                    if isinstance(out, torch.Tensor) and out.ndim == 0:
                        raise _Stop("return one gain per example (shape (B,)), not a single number "
                                    "for the whole batch")
                    out = _tensor_like(out, ref, "gain")
                    if _close(out, ref):
                        continue
                    if eps and _close(out, eps * g.flatten(1).norm(dim=1)):
                        raise _Stop("you used the L2 norm: the dual norm of L∞ is L1, so the gain "
                                    "is ε times the sum of |gᵢ|")
                    if eps and _close(out, g.flatten(1).abs().sum(1)):
                        raise _Stop("the gain scales with the budget: multiply by ε")
                    if eps and _close(out, eps * g.flatten(1).sum(1)):
                        raise _Stop("δ = ε·sign(g) gives δᵢgᵢ = ε|gᵢ| for every i: sum absolute values")
                    raise _Stop("not equal to ε‖g‖₁ per example")
        return "ε‖g‖₁ per example, for every shape and ε"

    return _run("first-order gain", body)


# --------------------------------------------------------------- chapter 2: adversarial training
def check_pgd_step(my_step: Callable) -> bool:
    """Grade ``my_step(x_adv, x, grad, epsilon, step_size) -> x_next``: one PGD ascent step,
    projected onto the ε-ball around x and clamped to [0, 1]."""

    def body() -> str:
        for device in _devices():
            for seed, eps, a in ((0, 0.1, 0.05), (1, 0.2, 0.3), (2, 0.0, 0.1)):
                gen = torch.Generator().manual_seed(seed)
                x = torch.rand(5, 1, 4, 4, generator=gen).to(device)
                x_adv = (x + eps * (2 * torch.rand(x.shape, generator=gen).to(device) - 1)).clamp(0, 1)
                grad = torch.randn(x.shape, generator=gen).to(device)
                ref = (x + (x_adv + a * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
                out = _tensor_like(_call(my_step, x_adv, x, grad, eps, a), x, "x_next")
                if _close(out, ref):
                    continue
                if _close(out, (x_adv + a * grad.sign()).clamp(0, 1)):
                    raise _Stop("you forgot the projection: clamp δ = x_next − x to [−ε, ε] so the "
                                "iterate stays in the ball")
                if _close(out, x + (x_adv + a * grad.sign() - x).clamp(-eps, eps)):
                    raise _Stop("project onto the ball, then clamp the image to [0, 1]")
                if _close(out, (x + (x_adv - a * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)):
                    raise _Stop("wrong sign: PGD ascends the loss (add a·sign(∇))")
                if _close(out, (x + (x_adv + a * grad - x).clamp(-eps, eps)).clamp(0, 1)):
                    raise _Stop("step along the sign of the gradient (steepest ascent for L∞)")
                raise _Stop("not equal to Π(x_adv + a·sign(g)) clamped to [0, 1]")
        return "ascent, projection onto the ε-ball and clamp all correct"

    return _run("PGD step", body)


def check_mixed_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, x, y, epsilon, alpha) -> loss``: Goodfellow's mixed objective
    α·J(x) + (1 − α)·J(x + ε·sign(∇ₓJ)), a scalar whose gradient flows into the model."""

    def body() -> str:
        for model, x, y, eps in _cases():
            for alpha in (0.5, 0.2):
                x_adv = attacks.fgsm(model, x, y, eps)
                clean, adv = F.cross_entropy(model(x), y), F.cross_entropy(model(x_adv), y)
                ref = alpha * clean + (1 - alpha) * adv
                out = _call(my_loss, model, x, y, eps, alpha)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise _Stop("return the loss as a single-number tensor")
                if not out.requires_grad:
                    raise _Stop("the loss has no gradient: do not detach it or compute it under "
                                "torch.no_grad(), the model must learn from it")
                value = out.detach().reshape(())
                if _close(value, ref.detach()):
                    continue
                if _close(value, ((1 - alpha) * clean + alpha * adv).detach()):
                    raise _Stop("α and 1 − α are swapped: α weighs the clean loss")
                if _close(value, adv.detach()):
                    raise _Stop("that is the adversarial loss alone; mix in the clean loss with weight α")
                raise _Stop("not equal to α·J(x) + (1 − α)·J(x_FGSM) (with x_FGSM clamped to [0, 1])")
        return "α·J(x) + (1 − α)·J(x_FGSM), with a gradient for the model"

    return _run("mixed loss", body)


# ---------------------------------------------------------------------------- chapter 3: MAML
def _sine_case(device, seed: int, n_tasks: int = 3, k: int = 5):
    from metaadv_edu import data

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(device)
    tasks = data.sine_tasks(n_tasks, k, generator=torch.Generator().manual_seed(seed), device=device)
    return model, tasks


def check_inner_step(my_step: Callable) -> bool:
    """Grade ``my_step(model, params, x, y, inner_lr) -> new_params``: one differentiable MAML inner
    step θ′ = θ − α∇_θ L(θ; x, y) on the MSE loss, for ``params`` a dict of tensors."""
    from metaadv_edu import maml
    from metaadv_edu.functional import params_of

    def body() -> str:
        for device in _devices():
            for seed, alpha in ((0, 0.1), (1, 0.01)):
                model, tasks = _sine_case(device, seed)
                x, y = tasks.x_support[0], tasks.y_support[0]
                before = [p.detach().clone() for p in model.parameters()]
                params = params_of(model)
                out = _call(my_step, model, params, x, y, alpha)
                if any(not torch.equal(b, p) for b, p in zip(before, model.parameters())):
                    raise _Stop("your step changed the model's own parameters: return a new dict "
                                "θ′ and leave the module untouched")
                if not isinstance(out, dict) or set(out) != set(params):
                    raise _Stop("return a dict with the same keys as params (name → tensor)")
                ref = maml.adapt(model, params, x, y, inner_lr=alpha)
                values = {k: _tensor_like(out[k], ref[k], f"new_params[{k!r}]") for k in ref}
                if all(_close(values[k], ref[k].detach()) for k in ref):
                    if not all(out[k].requires_grad for k in out):
                        raise _Stop("the values are right, but θ′ is detached from θ: MAML needs to "
                                    "differentiate through the step (torch.autograd.grad(..., "
                                    "create_graph=True) or torch.func.grad)")
                    g_out = torch.autograd.grad(sum(t.sum() ** 2 for t in out.values()), list(params.values()))
                    g_ref = torch.autograd.grad(sum(t.sum() ** 2 for t in ref.values()), list(params.values()))
                    if not all(_close(a, b, 1e-4) for a, b in zip(g_out, g_ref)):
                        raise _Stop("θ′ has the right values but the wrong derivative with respect to θ: "
                                    "the gradient term must stay in the graph (create_graph=True) — "
                                    "without it the Hessian term of the meta-gradient is lost")
                    continue
                flipped = {k: (2 * params[k] - ref[k]).detach() for k in ref}
                if all(_close(values[k], flipped[k]) for k in ref):
                    raise _Stop("wrong sign: gradient *descent* subtracts α·∇L")
                raise _Stop("θ′ differs from θ − α∇L(θ); differentiate the loss of "
                            "functional_call(model, params, (x,)) with respect to params")
        return "θ′ = θ − α∇L(θ), differentiable, model untouched"

    return _run("MAML inner step", body)


def check_maml_meta_loss(my_meta_loss: Callable) -> bool:
    """Grade ``my_meta_loss(model, tasks, inner_lr) -> loss``: the mean over tasks of the query MSE
    after one second-order inner step on the support set; ``.backward()`` gives the meta-gradient."""
    from metaadv_edu import maml

    def body() -> str:
        for device in _devices():
            for seed, alpha in ((0, 0.1), (2, 0.05)):
                model, tasks = _sine_case(device, seed)
                ref = maml.meta_loss(model, tasks, inner_lr=alpha)
                out = _call(my_meta_loss, model, tasks, alpha)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise _Stop("return the meta-loss as a single-number tensor")
                value = out.detach().reshape(())
                if not _close(value, ref.detach(), 1e-4):
                    n = tasks.n_tasks
                    if _close(value, n * ref.detach(), 1e-4):
                        raise _Stop("you summed over tasks; take the mean")
                    no_adapt = F.mse_loss(model(tasks.x_query), tasks.y_query).detach()
                    if _close(value, no_adapt, 1e-4):
                        raise _Stop("that is the query loss at θ: adapt to each task's support set first")
                    support_after = maml.meta_loss(model, data_swap(tasks), inner_lr=alpha).detach()
                    if _close(value, support_after, 1e-4):
                        raise _Stop("the outer loss must be measured on the *query* set, not the support set")
                    raise _Stop("not the mean query loss after one inner step on the support set")
                if not out.requires_grad:
                    raise _Stop("the meta-loss has no gradient: keep the graph through adaptation")
                params = list(model.parameters())
                g_out = torch.autograd.grad(out, params, allow_unused=True)
                if any(g is None for g in g_out):
                    raise _Stop("the meta-gradient does not reach every parameter of the model")
                g_ref = torch.autograd.grad(ref, params)
                g_fo = torch.autograd.grad(maml.meta_loss(model, tasks, inner_lr=alpha, first_order=True), params)
                if not all(_close(a, b, 1e-4) for a, b in zip(g_out, g_ref)):
                    if all(_close(a, b, 1e-4) for a, b in zip(g_out, g_fo)):
                        raise _Stop("Hessian term missing: the value is right but the gradient is "
                                    "first-order MAML's; keep create_graph=True in the inner step")
                    raise _Stop("the value is right but the meta-gradient is not")
        return "value and second-order meta-gradient both match"

    return _run("MAML meta-loss", body)


def data_swap(tasks):
    """The same tasks with the query set replaced by the support set (a typical mistake's value)."""
    from metaadv_edu.data import Tasks

    return Tasks(tasks.x_support, tasks.y_support, tasks.x_support, tasks.y_support)


# ------------------------------------------------------------------------- chapter 4: Reptile
def check_reptile_update(my_update: Callable) -> bool:
    """Grade ``my_update(theta, phis, outer_lr) -> new_theta``: the batched Reptile step
    θ + β·mean_i(φ̃ᵢ − θ), for ``theta`` a dict of tensors and ``phis`` a dict of the same names
    holding each task's adapted tensors stacked along a first dimension."""

    def body() -> str:
        for device in _devices():
            for seed, n, beta in ((0, 4, 0.5), (1, 1, 1.0), (2, 7, 0.1)):
                g = torch.Generator().manual_seed(seed)
                theta = {"w": torch.randn(3, 2, generator=g).to(device), "b": torch.randn(3, generator=g).to(device)}
                phis = {k: (t + 0.3 * torch.randn(n, *t.shape, generator=g).to(device)) for k, t in theta.items()}
                out = _call(my_update, {k: t.clone() for k, t in theta.items()}, phis, beta)
                if not isinstance(out, dict) or set(out) != set(theta):
                    raise _Stop("return a dict with the same names as theta")
                ref = {k: theta[k] + beta * (phis[k] - theta[k]).mean(0) for k in theta}
                values = {k: _tensor_like(out[k], ref[k], f"new_theta[{k!r}]") for k in ref}
                if all(_close(values[k], ref[k]) for k in ref):
                    continue
                if all(_close(values[k], theta[k] - beta * (phis[k] - theta[k]).mean(0)) for k in ref):
                    raise _Stop("wrong sign: Reptile moves θ *towards* the adapted weights, θ + β(φ̃ − θ)")
                if n > 1 and all(_close(values[k], theta[k] + beta * (phis[k] - theta[k]).sum(0)) for k in ref):
                    raise _Stop("average over tasks (mean), do not sum")
                if all(_close(values[k], theta[k] + (phis[k] - theta[k]).mean(0)) for k in ref) and beta != 1:
                    raise _Stop("scale the step by the outer step size β")
                if all(_close(values[k], phis[k].mean(0)) for k in ref) and beta != 1:
                    raise _Stop("that jumps all the way to the mean of φ̃ (β = 1); interpolate with β")
                raise _Stop("not θ + β·mean(φ̃ − θ)")
        return "θ + β·mean(φ̃ − θ) for one task and for many"

    return _run("Reptile update", body)


# ------------------------------------------------------------------------ chapter 4: Meta-SGD
def check_meta_sgd_step(my_step: Callable) -> bool:
    """Grade ``my_step(params, grads, inner_lrs) -> new_params``: θ′ = θ − α∘∇L with an α of the
    same shape as each parameter (all three arguments are dicts of tensors)."""

    def body() -> str:
        for device in _devices():
            for seed in (0, 1):
                g = torch.Generator().manual_seed(seed)
                shapes = {"w": (4, 3), "b": (4,)}
                params = {k: torch.randn(s, generator=g).to(device) for k, s in shapes.items()}
                grads = {k: torch.randn(s, generator=g).to(device) for k, s in shapes.items()}
                lrs = {k: torch.rand(s, generator=g).to(device) * 0.1 for k, s in shapes.items()}
                out = _call(my_step, params, grads, lrs)
                if not isinstance(out, dict) or set(out) != set(params):
                    raise _Stop("return a dict with the same names as params")
                ref = {k: params[k] - lrs[k] * grads[k] for k in params}
                values = {k: _tensor_like(out[k], ref[k], f"new_params[{k!r}]") for k in ref}
                if all(_close(values[k], ref[k]) for k in ref):
                    continue
                if all(_close(values[k], params[k] + lrs[k] * grads[k]) for k in ref):
                    raise _Stop("wrong sign: the inner step descends, θ − α∘∇L")
                if all(_close(values[k], params[k] - lrs[k].mean() * grads[k]) for k in ref):
                    raise _Stop("α is not a scalar here: multiply elementwise, one rate per parameter")
                raise _Stop("not θ − α∘∇L (elementwise product)")
        return "θ − α∘∇L, elementwise"

    return _run("Meta-SGD step", body)


# ---------------------------------------------------------------------------- chapter 2: GANs
def check_discriminator_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(real_logits, fake_logits) -> loss``: the discriminator's loss
    −E log D(x) − E log(1 − D(G(z))) with D = sigmoid(logit), as a scalar."""
    from metaadv_edu import gan

    def body() -> str:
        for device in _devices():
            for seed, scale in ((0, 1.0), (1, 5.0), (2, 30.0)):
                g = torch.Generator().manual_seed(seed)
                real = (scale * torch.randn(16, 1, generator=g)).to(device)
                fake = (scale * torch.randn(16, 1, generator=g)).to(device)
                ref = gan.discriminator_loss(real, fake)
                out = _call(my_loss, real, fake)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise _Stop("return the loss as a single-number tensor (average over the batch)")
                value = out.detach().reshape(()).to(ref.dtype)
                if _close(value, ref, 1e-4):
                    continue
                if not torch.isfinite(value):
                    raise _Stop("the loss is not finite for confident logits: log(sigmoid(s)) underflows; "
                                "use F.logsigmoid or binary_cross_entropy_with_logits")
                if _close(value, -ref, 1e-4):
                    raise _Stop("that is V(D, G) itself; the discriminator *maximises* V, so its loss is −V")
                if _close(value, gan.discriminator_loss(fake, real), 1e-4):
                    raise _Stop("the labels are swapped: real samples are labelled 1, generated ones 0")
                if _close(value, 16 * ref, 1e-3):
                    raise _Stop("average over the batch instead of summing")
                raise _Stop("not −E log D(x) − E log(1 − D(G(z)))")
        return "−E log D(x) − E log(1 − D(G(z))), stable for confident logits"

    return _run("discriminator loss", body)


def check_bounded_perturbation(my_output: Callable) -> bool:
    """Grade ``my_output(x, h, epsilon) -> x_adv``: the adversarial generator's output layer
    clip(x + ε·tanh(h), 0, 1), which keeps ‖x_adv − x‖∞ ≤ ε by construction."""

    def body() -> str:
        for device in _devices():
            for seed, eps in ((0, 0.1), (1, 0.3), (2, 0.0)):
                g = torch.Generator().manual_seed(seed)
                x = torch.rand(5, 1, 4, 4, generator=g).to(device)
                h = (3 * torch.randn(5, 1, 4, 4, generator=g)).to(device)
                ref = (x + eps * torch.tanh(h)).clamp(0, 1)
                out = _tensor_like(_call(my_output, x, h, eps), x, "x_adv")
                if _close(out, ref):
                    continue
                if _close(out, x + eps * torch.tanh(h)):
                    raise _Stop("clip the result to [0, 1]: it must stay a valid image")
                if _close(out, (x + (x + torch.tanh(h)).clamp(x - eps, x + eps) - x).clamp(0, 1)) or \
                        _close(out, (x + h.clamp(-eps, eps)).clamp(0, 1)):
                    raise _Stop("bounded, but clamping h kills the gradient wherever the bound is active; "
                                "ε·tanh(h) is smooth and still strictly inside the ball")
                if _close(out, (x + torch.tanh(h)).clamp(0, 1)):
                    raise _Stop("scale the tanh by ε: tanh alone lies in (−1, 1)")
                raise _Stop("not clip(x + ε·tanh(h), 0, 1)")
        return "clip(x + ε·tanh(h), 0, 1): bounded and differentiable"

    return _run("bounded perturbation", body)


# --------------------------------------------------------- chapter 5: meta-adversarial training
def check_adversarial_query_loss(my_loss: Callable) -> bool:
    """Grade ``my_loss(model, adapted, x, y, epsilon) -> loss``: adversarial querying's outer loss for
    one task. ``adapted`` holds θ′ (a dict, still attached to θ); attack the query inputs ``x`` with
    FGSM against θ′ (clamped to [0, 1], held fixed), then return the cross-entropy of θ′ on them."""
    from metaadv_edu import maml
    from metaadv_edu.functional import forward, params_of
    from metaadv_edu.robust_meta import functional_attack

    def attacked(model, params, x, y, eps, clamp=True, sign=1.0):
        return functional_attack(model, params, x, y, torch.zeros_like(x), epsilon=eps, steps=1,
                                 step_size=sign * eps, clamp=clamp)

    def body() -> str:
        for device in _devices():
            for seed, eps in ((0, 0.3), (1, 0.1), (2, 0.0), (3, 0.2)):
                model = _toy_classifier(device, seed)
                xs, ys = _toy_batch(device, seed + 20, n=8)
                x, y = _toy_batch(device, seed + 40, n=6)
                theta = params_of(model)
                adapted = maml.adapt(model, theta, xs, ys, inner_lr=0.5)
                ce = lambda p, z, model=model, y=y: F.cross_entropy(forward(model, p, z), y)  # noqa: E731
                ref = ce(adapted, attacked(model, adapted, x, y, eps))
                out = _call(my_loss, model, adapted, x, y, eps)
                if not isinstance(out, torch.Tensor) or out.numel() != 1:
                    raise _Stop("return the loss as a single-number tensor (the mean over the query set)")
                value = out.detach().reshape(()).to(ref.dtype)
                if not _close(value, ref.detach(), 1e-4):
                    theta0 = {k: p.detach() for k, p in theta.items()}
                    mistakes = [
                        (ce(adapted, x), "that is the clean query loss: perturb the query inputs first"),
                        (ce(adapted, attacked(model, theta0, x, y, eps)),
                         "the attack targets θ, but the query is answered by θ′: compute the FGSM gradient "
                         "with forward(model, adapted, ·)"),
                        (ce(theta0, attacked(model, adapted, x, y, eps)),
                         "the attacked query must be scored by the adapted weights θ′, not by the model's own θ"),
                        (ce(adapted, attacked(model, adapted, x, y, eps, clamp=False)),
                         "forgot to clamp: the attacked covers must stay in [0, 1]"),
                        (ce(adapted, attacked(model, adapted, x, y, eps, sign=-1.0)),
                         "wrong sign: the attack *raises* the loss, x + ε·sign(∇ₓL)"),
                    ]
                    for wrong, hint in mistakes:
                        if eps and _close(value, wrong.detach(), 1e-4):
                            raise _Stop(hint)
                    raise _Stop("not the cross-entropy of θ′ at the FGSM-attacked query inputs")
                if not out.requires_grad:
                    raise _Stop("the value is right but has no gradient: keep θ′ attached (do not detach adapted)")
                params = list(theta.values())
                g_out = torch.autograd.grad(out, params, retain_graph=True, allow_unused=True)
                g_ref = torch.autograd.grad(ref, params)
                if any(g is None for g in g_out) or not all(_close(a, b, 1e-4) for a, b in zip(g_out, g_ref)):
                    raise _Stop("the value is right but the meta-gradient is not: the loss must depend on θ "
                                "only through θ′, with the perturbation held fixed (detach it)")
        return "FGSM against θ′, clamped, scored by θ′; the meta-gradient flows through the adaptation"

    return _run("adversarial-query loss", body)
