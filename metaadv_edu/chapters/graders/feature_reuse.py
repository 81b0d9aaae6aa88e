"""Notebook 10's exercise graders (re-exported by :mod:`metaadv_edu.chapters.feature_reuse`, whose ``POINTS``
weighs them): the prototype logits of eq. (6), ANIL's inner step, eq. (1), and the conjugate-gradient solve of
eq. (11)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from metaadv_edu import anil, grading, maml, protonets
from metaadv_edu.functional import forward

__all__ = ["check_anil_inner_step", "check_conjugate_gradient", "check_prototype_logits"]


def check_prototype_logits(my_logits: Callable) -> bool:
    """Grade ``my_logits(support_embeddings, support_labels, query_embeddings, n_way)``: the logits
    −‖f(q) − c_k‖² of every query (rows) for every class (columns), c_k the mean support embedding of class k."""

    def body() -> str:
        for device in grading.devices():
            for seed, (n_way, dim) in enumerate(((5, 8), (3, 2), (4, 16))):
                g = torch.Generator().manual_seed(seed)
                labels = torch.cat([torch.arange(n_way), torch.randint(n_way, (6,), generator=g)]).to(device)
                zs = torch.randn(len(labels), dim, generator=g).to(device)
                zq = torch.randn(7, dim, generator=g).to(device)
                ref = protonets.prototype_logits(zs, labels, zq, n_way)
                out = grading.tensor_like(grading.call(my_logits, zs, labels, zq, n_way), ref, "the logits")
                if grading.close(out, ref, 1e-4):
                    continue
                onehot = F.one_hot(labels, n_way).float()
                sums = onehot.T @ zs
                c = protonets.prototypes(zs, labels, n_way)
                w, b = protonets.linear_head(c)
                grading.first_mistake(
                    out,
                    [
                        (-ref, "wrong sign: a closer prototype must give a *larger* logit, −‖f(q) − c_k‖²"),
                        (-(-ref).sqrt(), "that is −‖f(q) − c_k‖, the plain distance: square it"),
                        (
                            -(torch.cdist(zq, sums) ** 2),
                            "c_k is the *mean* of class k's support embeddings, not their sum",
                        ),
                        (
                            zq @ w.T + b,
                            "that is the equivalent linear classifier 2c_kᵀf(q) − ‖c_k‖²: it has the same softmax but "
                            "drops −‖f(q)‖²; return the negative squared distance itself",
                        ),
                        (
                            -(torch.cdist(zq, zs[:n_way]) ** 2),
                            "the prototype is the mean over all of class k's examples",
                        ),
                    ],
                    1e-4,
                )
                raise grading.Stop("not −‖f(q) − c_k‖² for every query and class (rows: queries, columns: classes)")
        return "negative squared distances to the class means"

    return grading.run("prototype logits", body)


_NOT_THE_MODULE = (
    "differentiate the loss of forward(model, params, x): params are not the module's own weights, and model(x) "
    "gives the gradient at the module's weights, not at params"
)


def _anil_case(device, seed: int):
    """A toy classifier, a support and a query batch, and parameters θ that differ from the module's weights."""
    model = grading.toy_classifier(device, seed)
    x, y = grading.toy_batch(device, seed + 20, n=8)
    xq, yq = grading.toy_batch(device, seed + 40, n=6)
    g = torch.Generator().manual_seed(seed + 60)
    theta = {
        k: (p.detach() + 0.3 * torch.randn(p.shape, generator=g).to(device)).requires_grad_(True)
        for k, p in model.named_parameters()
    }
    return model, (x, y), (xq, yq), theta


def _anil_step_mistakes(model, theta, x, y, lr: float) -> list[tuple[dict, str]]:
    """Typical wrong ANIL steps, as (new parameter values, hint): first the ones that ignore ``theta``."""
    head = anil.head_names(model)
    own = dict(model.named_parameters())
    grad_own = dict(zip(head, torch.autograd.grad(F.cross_entropy(model(x), y), [own[k] for k in head])))
    ref = maml.adapt(model, theta, x, y, inner_lr=anil.inner_lrs(model, lr))
    return [
        (
            {k: theta[k] - lr * grad_own[k] if k in head else theta[k] for k in theta},
            _NOT_THE_MODULE,
        ),
        (
            {k: own[k] - lr * grad_own[k] if k in head else theta[k] for k in theta},
            "start from params, not from the module's own weights: the new head is params' head − α∇_w L_S at "
            "params, through forward(model, params, x)",
        ),
        (
            {k: ref[k] if k in head else own[k] for k in theta},
            "the body's tensors come from params, not from the module's own weights",
        ),
        (
            maml.adapt(model, theta, x, y, inner_lr=lr),
            "that is MAML's step: ANIL leaves the body unchanged and moves the head only",
        ),
        ({k: 2 * theta[k] - ref[k] for k in theta}, "wrong sign: the step goes *down* the support loss, θ − α∇L"),
    ]


def _call_step(my_step: Callable, model, theta: dict, x, y, lr: float):
    """The learner's step on a copy of ``theta``; :class:`~metaadv_edu.grading.Stop` when it fails, changes the
    module, the dict it was given or the tensors in it."""
    before = [p.detach().clone() for p in model.parameters()]
    values_before = {k: t.detach().clone() for k, t in theta.items()}
    given = dict(theta)
    try:
        out = grading.call(my_step, model, given, x, y, lr)
    except grading.Stop as stop:  # autograd.grad of model(x)'s loss with respect to params
        if "not have been used in the graph" in str(stop):
            raise grading.Stop(_NOT_THE_MODULE) from None
        raise
    if any(not torch.equal(b, p) for b, p in zip(before, model.parameters())):
        raise grading.Stop(
            "your step changed the model's own parameters: return a new dict and leave the module untouched"
        )
    if given.keys() != theta.keys() or any(given[k] is not theta[k] for k in theta):
        raise grading.Stop(
            "your step changed the dict params it was given: return a new dict and leave params as it "
            "is (a meta-batch adapts every task from the same θ)"
        )
    if any(not torch.equal(theta[k].detach(), values_before[k]) for k in theta):
        raise grading.Stop("your step changed the tensors of params in place: build new tensors")
    return out


def check_anil_inner_step(my_step: Callable) -> bool:
    """Grade ``my_step(model, params, x, y, inner_lr) -> new_params``: one ANIL inner step on the support set
    (x, y) at ``params`` θ, a dict of tensors that differ from the module's own weights: the head's tensors
    (:func:`metaadv_edu.anil.head_names`) move by −α∇L, the body's stay; the graph is kept so that the
    meta-gradient reaches θ through the step; neither the module nor the dict ``params`` is changed."""

    def body() -> str:
        for device in grading.devices():
            for seed in (0, 1):
                model, (x, y), (xq, yq), theta = _anil_case(device, seed)
                lr = 0.3
                out = _call_step(my_step, model, theta, x, y, lr)
                ref = maml.adapt(model, theta, x, y, inner_lr=anil.inner_lrs(model, lr))
                if not isinstance(out, dict) or set(out) != set(ref):
                    raise grading.Stop(f"return a dict with the same names as params: {sorted(ref)}")
                values = {k: grading.tensor_like(out[k], ref[k], f"new_params[{k!r}]") for k in ref}
                if not all(grading.close(values[k], ref[k].detach(), 1e-5) for k in ref):
                    for wrong, hint in _anil_step_mistakes(model, theta, x, y, lr):
                        if all(grading.close(values[k], wrong[k].detach(), 1e-5) for k in ref):
                            raise grading.Stop(hint)
                    head = anil.head_names(model)
                    if any(not grading.close(values[k], theta[k].detach(), 1e-6) for k in ref if k not in head):
                        raise grading.Stop(f"the body's tensors must not change; only {head} move")
                    if any(grading.close(values[k], theta[k].detach(), 1e-6) for k in head):
                        raise grading.Stop(
                            f"every tensor of the head moves ({head}: weight and bias), not only the weight"
                        )
                    raise grading.Stop("the head's tensors should be w − α∇_w L_S(θ), the gradient taken at params")
                query = F.cross_entropy(forward(model, out, xq), yq)
                if not query.requires_grad:
                    raise grading.Stop("the values are right but carry no graph: keep it (create_graph=True)")
                grading.same_gradient(
                    query,
                    F.cross_entropy(forward(model, ref, xq), yq),
                    list(theta.values()),
                    "the values are right but the meta-gradient is not: differentiate through the step "
                    "(create_graph=True), and keep the body's tensors as they are, not detached copies",
                )
        return (
            "at params (not the module's weights) the head moves by −α∇_w L_S, the body stays, and the "
            "meta-gradient flows through the step"
        )

    return grading.run("ANIL inner step", body)


def check_conjugate_gradient(my_cg: Callable) -> bool:
    """Grade ``my_cg(matvec, b, iterations) -> u``: conjugate gradient for A u = b from u = 0, with A
    symmetric positive definite and given only as ``matvec(p) = A p`` (b and u are 1-D tensors)."""

    def body() -> str:
        for device in grading.devices():
            for seed, n in ((0, 6), (1, 12)):
                g = torch.Generator().manual_seed(seed)
                q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
                a = (q * torch.logspace(0, 2, n, dtype=torch.float64)) @ q.T
                a, b = a.to(device), torch.randn(n, generator=g, dtype=torch.float64).to(device)

                def matvec(p, a=a):
                    return a @ p

                first = grading.tensor_like(grading.call(my_cg, matvec, b, 1), b, "u")
                one_step = (b @ b) / (b @ a @ b) * b
                if not grading.close(first, one_step, 1e-8):
                    grading.first_mistake(
                        first,
                        [
                            (b, "after one iteration u = a·p with a = rᵀr / pᵀAp (p = r = b), not p itself"),
                            ((b @ b) / (b @ b) * b, "the step length is rᵀr / pᵀAp: use A p in the denominator"),
                        ],
                        1e-8,
                    )
                    raise grading.Stop("after one iteration u should be (bᵀb / bᵀAb)·b")
                exact = torch.linalg.solve(a, b)
                full = grading.tensor_like(grading.call(my_cg, matvec, b, n), b, "u")
                if not grading.close(full, exact, 1e-6):
                    raise grading.Stop(
                        f"after n = {n} iterations CG solves A u = b exactly (up to rounding); yours does not: "
                        "check each update: u ← u + a·p, r ← r − a·Ap and p ← r_new + (r_newᵀr_new / rᵀr)·p"
                    )
        return "one iteration is the exact line search along b, and n iterations solve the n-dimensional system"

    return grading.run("conjugate gradient", body)
