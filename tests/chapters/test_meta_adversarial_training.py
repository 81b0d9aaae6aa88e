"""Notebook 08 · Meta-adversarial training: its graders accept the reference and reject each typical mistake with
its own hint; its explorer responds to every slider without training."""

from functools import partial

import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from metaadv_edu import attacks, models, robust_meta
from metaadv_edu.chapters import meta_adversarial_training as chapter
from metaadv_edu.functional import forward


def no_grads(model):
    return all(p.grad is None for p in model.parameters())


def _step_at(model, params, x, y, eps, *, clamp=True, sign=1.0, norm="l2", detach=True, per_cover=True):
    """One attack step against ``params``: L2 (ε·g/‖g‖₂ per cover) or FGSM's L∞ sign step."""
    used = {k: p.detach() for k, p in params.items()} if detach else params
    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(forward(model, used, z), y), z, create_graph=not detach)
    if norm == "linf":
        step = g.sign()
    elif per_cover:
        step = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    else:
        step = g / g.norm()
    out = x + sign * eps * step
    out = out.clamp(0, 1) if clamp else out
    return out.detach() if detach else out


def _aq(attack_params="adapted", score_params="adapted", **kw):

    def loss(model, adapted, x, y, eps):
        own = dict(model.named_parameters())
        at = adapted if attack_params == "adapted" else own
        scored = adapted if score_params == "adapted" else own
        x_adv = _step_at(model, at, x, y, eps, **kw)
        return F.cross_entropy(forward(model, scored, x_adv), y)

    return loss


def _aq_clean(model, adapted, x, y, eps):

    return F.cross_entropy(forward(model, adapted, x), y)


def _aq_detached(model, adapted, x, y, eps):
    return _aq()(model, {k: p.detach() for k, p in adapted.items()}, x, y, eps)


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (_aq(), True, "meta-gradient flows through the adaptation"),
        (_aq_clean, False, "clean query loss"),
        (_aq(attack_params="initial"), False, "the attack targets θ"),
        (_aq(score_params="initial"), False, "scored by the adapted weights"),
        (_aq(clamp=False), False, "forgot to clamp"),
        (_aq(sign=-1.0), False, "wrong sign"),
        (_aq(norm="linf"), False, "FGSM's L∞ step"),
        (_aq(per_cover=False), False, "normalise g per cover"),
        # the attack left attached to the graph: the value is right, the meta-gradient is not
        (_aq(detach=False), False, "perturbation held fixed (detach it)"),
        (_aq_detached, False, "do not detach adapted"),
        (lambda model, adapted, x, y, eps: torch.zeros(3), False, "single-number tensor"),
        (lambda model, adapted, x, y, eps: adapted["missing"], False, "KeyError"),
    ],
)
def test_check_adversarial_query_loss(fn, ok, hint, capsys):
    assert chapter.check_adversarial_query_loss(fn) is ok
    assert hint in capsys.readouterr().out


def test_training_budgets_match_across_learners():
    budget = chapter.BUDGET["image_gradients"]
    for kind in ("meta", "pretrained"):
        for eps in (0.0, 8 / 255):
            per_unit = chapter.training_cost(kind, eps)
            assert budget - per_unit < budget // per_unit * per_unit <= budget  # within one iteration or epoch
    assert chapter.training_cost("meta", 8 / 255) > chapter.training_cost("meta", 0.0)
    assert chapter.training_cost("pretrained", 8 / 255) == 4 * chapter.training_cost("pretrained", 0.0)


def test_cover_learners_share_one_budget_and_start_with_zero_heads():
    learners = chapter.cover_learners("cpu")  # the shipped weights
    assert list(learners) == ["MAML", "adversarial querying", "pretrained + fine-tune", "robust pretrained + fine-tune"]
    budget = chapter.BUDGET["image_gradients"]
    for t in learners.values():
        assert budget - chapter.training_cost(t.kind, t.epsilon) < t.image_gradients <= budget
        assert t.model[-1].out_features == chapter.COVER_FEW_SHOT["n_way"]
    # PGD on the query sets costs image-gradients: adversarial querying gets fewer meta-iterations
    assert learners["adversarial querying"].units < learners["MAML"].units
    for name in ("pretrained + fine-tune", "robust pretrained + fine-tune"):
        assert torch.count_nonzero(learners[name].model[-1].weight) == 0


def test_paired_rows_and_verdicts_use_per_task_accuracies():
    # two learners on 4 tasks of 2 query examples: "a" is right on every example, "b" on one per task
    a = torch.ones(1, 4, 2, dtype=torch.bool)
    b = torch.tensor([[[True, False]] * 4])
    noisy = torch.tensor([[[True, True], [False, False], [True, False], [True, True]]])
    results = {("a", "PGD"): a, ("b", "PGD"): b, ("c", "PGD"): noisy}
    rows = chapter.paired_rows(results, [("a", "b"), ("c", "b")], [("PGD at 8/255", "PGD", 0)])
    assert rows[0][0] == "PGD at 8/255"
    assert rows[0][1] == "+50.0% ± 0.0% *"  # the same difference on every task: resolved
    assert rows[0][2].startswith("+12.5%") and not rows[0][2].endswith("*")
    assert chapter.paired_verdict(results, "a", "b", "PGD", 0) == (
        "a > b: a is better, under the attacks run (upper bounds)"
    )
    clean = {("a", "clean"): a, ("b", "clean"): b}
    assert chapter.paired_verdict(clean, "a", "b", "clean", 0) == "a > b: a is better"
    assert "not resolved" in chapter.paired_verdict(results, "c", "b", "PGD", 0)


def test_representative_task_has_the_gap_closest_to_the_mean(device):
    from metaadv_edu import covers

    torch.manual_seed(0)
    nets = {
        "a": models.TinyCNN(3, 3, width=4, image_size=8).to(device),
        "b": models.TinyCNN(3, 3, width=4, image_size=8).to(device),
    }
    tasks = covers.cover_tasks(
        6,
        n_way=3,
        k_shot=2,
        k_query=3,
        size=8,
        pool="meta-test",
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    index, gaps = robust_meta.representative_task(nets, tasks, inner_lr=0.3, steps=1, epsilon=0.1)
    assert gaps.shape == (6,)
    assert abs(gaps[index] - gaps.mean()) == (gaps - gaps.mean()).abs().min()


def test_robust_few_shot_explorer_adapts_and_attacks_without_training(device):
    from metaadv_edu import covers

    torch.manual_seed(0)
    nets = {
        "a": models.TinyCNN(3, 3, width=4, image_size=8).to(device),
        "b": models.TinyCNN(3, 3, width=4, image_size=8).to(device),
    }
    tasks = covers.cover_tasks(
        3,
        n_way=3,
        k_shot=2,
        k_query=2,
        size=8,
        pool="meta-test",
        generator=torch.Generator().manual_seed(0),
        device=device,
    )
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.items()}
    open_figures = plt.get_fignums()
    ex = chapter.robust_few_shot_explorer(nets, tasks, epsilon=0.0, inner_lr=0.2)
    images = {ex.image.value}
    assert "PGD <b>" in ex.caption.value and "2 clean covers per class" in ex.caption.value
    # blitted = a full render but on the static frames; a title left stale
    # differs in 0.04 % of the pixels or more
    assert ex.blit_error() == 0, "the first (stored) image is what a full render draws"
    for name, value in (("epsilon", 26 / 255), ("inner_lr", 0.01), ("learner", "a"), ("task", 2)):
        ex.sliders[name].value = value
        images.add(ex.image.value)
        assert ex.blit_error() == 0, f"after moving {name}, the blitted image is what a full render draws"
    assert len(images) == 5, "each slider move must change the picture"
    for k, m in nets.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters()))
        assert no_grads(m)
    assert plt.get_fignums() == open_figures


def pgd_query_loss(model, adapted, x, y, eps, a, k, *, aim="frozen", score="adapted", **pgd_kwargs):
    """Exercise 2 with notebook 01's attacks.pgd: aimed at the frozen θ′ (or θ, or the attached θ′), scored by θ′
    (or θ, or the frozen θ′); ``pgd_kwargs`` override its arguments (a random start, no clamp, …)."""
    frozen = {n: p.detach() for n, p in adapted.items()}
    aimed = {"frozen": lambda z: forward(model, frozen, z), "attached": lambda z: forward(model, adapted, z)}
    kwargs = {"step_size": a, "steps": k, "random_start": False, **pgd_kwargs}
    x_adv = attacks.pgd(aimed.get(aim, model), x, y, eps, **kwargs)
    scored = {"adapted": adapted, "frozen": frozen, "theta": dict(model.named_parameters())}[score]
    return F.cross_entropy(forward(model, scored, x_adv), y)


def own_loop(model, adapted, x, y, eps, a, k, *, project=True):
    """The loop of notebook 01 written out by hand, against the frozen θ′."""
    frozen = {n: p.detach() for n, p in adapted.items()}
    x_adv = x.clone()
    for _ in range(k):
        z = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(forward(model, frozen, z), y), z)
        x_adv = x_adv + a * g.sign()
        if project:
            x_adv = x + (x_adv - x).clamp(-eps, eps)
        x_adv = x_adv.clamp(0, 1)
    return F.cross_entropy(forward(model, adapted, x_adv), y)


def _fgsm_query_loss(model, adapted, x, y, eps, a, k):
    frozen = {n: p.detach() for n, p in adapted.items()}
    x_adv = attacks.fgsm(lambda z: forward(model, frozen, z), x, y, eps)
    return F.cross_entropy(forward(model, adapted, x_adv), y)


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (pgd_query_loss, True, "flows through θ′"),
        # attacks.pgd differentiates with respect to the input only and detaches its result: the attached θ′ is
        # the same attack, so the grader accepts it
        (partial(pgd_query_loss, aim="attached"), True, "flows through θ′"),
        (own_loop, True, "flows through θ′"),
        (partial(pgd_query_loss, aim="theta"), False, "not `model` (which runs θ)"),
        (partial(pgd_query_loss, score="theta"), False, "not by model(x_adv)"),
        (partial(pgd_query_loss, score="frozen"), False, "no gradient"),
        (partial(pgd_query_loss, random_start=True), False, "random_start=False"),
        (_fgsm_query_loss, False, "that is FGSM"),
        (partial(pgd_query_loss, steps=1), False, "a single PGD step"),
        (partial(pgd_query_loss, clamp=None), False, "clamp to [0, 1]"),
        (partial(pgd_query_loss, targeted=True), False, "leave targeted=False"),
        (lambda model, adapted, x, y, eps, a, k: F.cross_entropy(forward(model, adapted, x), y), False, "clean query"),
        (partial(own_loop, project=False), False, "not the cross-entropy of θ′ at the PGD-attacked"),
    ],
)
def test_check_pgd_query_loss(fn, ok, hint, capsys):
    assert chapter.check_pgd_query_loss(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def _w(params):
    return params["1.weight"][1] - params["1.weight"][0]


def _shifted(params, x, y, shift):
    w, b = _w(params), params["1.bias"][1] - params["1.bias"][0]
    return F.softplus(-(2 * y.double() - 1) * (x @ w + b) + shift).mean()


def _linf_ok(theta, adapted, x, y, eps):
    return _shifted(adapted, x, y, eps * _w(adapted).abs().sum())


@pytest.mark.parametrize(
    "fn, ok, hint",
    [
        (_linf_ok, True, "through the adaptation"),
        (lambda theta, adapted, x, y, eps: _shifted(adapted, x, y, eps * _w(adapted).norm()), False, "ε‖w‖₂"),
        (lambda theta, adapted, x, y, eps: _shifted(adapted, x, y, eps * _w(adapted).abs().max()), False, "ε‖w‖∞"),
        (lambda theta, adapted, x, y, eps: _shifted(adapted, x, y, -eps * _w(adapted).abs().sum()), False, "sign"),
        # the maximiser −ε·s·sign(w) taken from θ instead of θ′: wrong where the inner step flips a sign of w
        (
            lambda theta, adapted, x, y, eps: _shifted(adapted, x, y, eps * (_w(adapted) * _w(theta).sign()).sum()),
            False,
            "not θ's",
        ),
        (lambda theta, adapted, x, y, eps: _linf_ok(theta, theta, x, y, eps), False, "robust loss of θ"),
        (lambda theta, adapted, x, y, eps: _shifted(adapted, x, y, 0.0), False, "clean query loss"),
        (
            lambda theta, adapted, x, y, eps: _linf_ok(theta, {k: p.detach() for k, p in adapted.items()}, x, y, eps),
            False,
            "no gradient",
        ),
        # θ′ recomputed from θ without the graph of the inner step: the first-order meta-gradient
        (
            lambda theta, adapted, x, y, eps: _linf_ok(
                theta, {k: theta[k] + (adapted[k] - theta[k]).detach() for k in adapted}, x, y, eps
            ),
            False,
            "meta-gradient is not",
        ),
    ],
)
def test_check_linf_robust_loss(fn, ok, hint, capsys):
    assert chapter.check_linf_robust_loss(fn) is ok
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out
