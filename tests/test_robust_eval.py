"""Robust evaluation of few-shot learners (notebook 08, part A): strong attacks, the per-example worst case,
and the check that the attack inside adversarial querying is as strong as an independent one."""

from __future__ import annotations

import pytest
import torch

from metaadv_edu import covers, maml, models, robust_checks, robust_eval, robust_meta
from metaadv_edu.chapters import meta_adversarial_training as chapter
from metaadv_edu.data import Tasks
from metaadv_edu.functional import forward, params_of
from tests.wrong import rejects


def _tasks(device, n_tasks=3, seed=0):
    return covers.cover_tasks(
        n_tasks, n_way=3, k_shot=2, k_query=4, size=8, generator=torch.Generator().manual_seed(seed), device=device
    )


def _learner(device, seed=0):
    torch.manual_seed(seed)
    return robust_meta.Learner(models.TinyCNN(3, 3, width=4, image_size=8).to(device), 0.3, 1)


def test_worst_case_is_the_logical_and_and_never_above_any_attack():
    a = torch.tensor([[True, True, False], [True, False, True]])
    b = torch.tensor([[True, False, True], [True, True, True]])
    torch.testing.assert_close(robust_eval.worst_case([a, b]), a & b)
    assert robust_eval.worst_case([a, b]).float().mean() <= min(a.float().mean(), b.float().mean())
    with pytest.raises(ValueError, match="same examples"):
        robust_eval.worst_case([a, b[:, :2]])
    with pytest.raises(ValueError, match="at least one"):
        robust_eval.worst_case([])


def test_at_epsilon_zero_every_attack_scores_the_clean_inputs_and_draws_no_start(device):
    learner, tasks = _learner(device), _tasks(device)
    adapted = robust_meta.adapt_tasks(learner.model, tasks, inner_lr=learner.inner_lr, steps=learner.steps)
    with torch.no_grad():
        clean = torch.stack(
            [
                forward(learner.model, {k: p[t] for k, p in adapted.items()}, tasks.x_query[t]).argmax(-1)
                for t in range(3)
            ]
        )
    for attack in (robust_eval.Attack("fgsm"), robust_eval.Attack("pgd", 5, 3)):
        g = torch.Generator().manual_seed(0)
        correct = robust_eval.correct_under_attack(
            learner.model, adapted, tasks, epsilon=0.0, attack=attack, generator=g
        )
        assert torch.equal(correct, clean == tasks.y_query)
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())  # later ε see the same starts
    with pytest.raises(ValueError, match="adapted parameters hold"):
        robust_eval.correct_under_attack(
            learner.model, {k: p[:2] for k, p in adapted.items()}, tasks, epsilon=0.0, attack=robust_eval.Attack("fgsm")
        )


def test_restarts_only_remove_examples_and_a_restart_is_a_fresh_start(device):
    learner, tasks = _learner(device), _tasks(device)
    adapted = robust_meta.adapt_tasks(learner.model, tasks, inner_lr=learner.inner_lr, steps=learner.steps)
    one = robust_eval.correct_under_attack(
        learner.model,
        adapted,
        tasks,
        epsilon=0.1,
        attack=robust_eval.Attack("pgd", 5, 1),
        generator=torch.Generator().manual_seed(0),
    )
    three = robust_eval.correct_under_attack(
        learner.model,
        adapted,
        tasks,
        epsilon=0.1,
        attack=robust_eval.Attack("pgd", 5, 3),
        generator=torch.Generator().manual_seed(0),
    )
    # the first restart is the single-start attack; later restarts can only break more examples
    assert one.shape == tasks.y_query.shape and one.dtype == torch.bool
    assert not (three & ~one).any()


def test_evaluate_learners_reports_clean_every_attack_and_the_worst_case(device):
    learners = {"a": _learner(device, 0), "b": _learner(device, 1)}
    tasks = _tasks(device)
    attacks = {"FGSM": robust_eval.Attack("fgsm"), "PGD": robust_eval.Attack("pgd", 5, 2)}
    out = robust_eval.evaluate_learners(learners, tasks, [0.0, 0.1], attacks, seed=0)
    assert set(out) == {(n, a) for n in learners for a in ("clean", "FGSM", "PGD", robust_eval.WORST_CASE)}
    for name, learner in learners.items():
        adapted = robust_meta.adapt_tasks(learner.model, tasks, inner_lr=learner.inner_lr, steps=learner.steps)
        clean = robust_meta.task_accuracy(learner.model, adapted, tasks.x_query, tasks.y_query)
        torch.testing.assert_close(out[name, "clean"][1].float().mean(-1), clean)
        torch.testing.assert_close(out[name, "PGD"][0], out[name, "clean"][0])  # ε = 0 is the clean input
        worst = out[name, robust_eval.WORST_CASE]
        torch.testing.assert_close(worst, out[name, "clean"] & out[name, "FGSM"] & out[name, "PGD"])
        assert worst[1].float().mean() < out[name, "clean"][1].float().mean()  # ε = 0.1 breaks something


def test_worst_case_catches_what_a_weaker_attack_misses(device):
    # FGSM and PGD each miss some examples the other breaks only rarely; the AND is never above either.
    learners = {"a": _learner(device, 2)}
    out = robust_eval.evaluate_learners(
        learners,
        _tasks(device, n_tasks=6, seed=3),
        [0.05],
        {"FGSM": robust_eval.Attack("fgsm"), "PGD": robust_eval.Attack("pgd", 10)},
    )
    worst = out["a", robust_eval.WORST_CASE].float().mean()
    assert worst <= out["a", "FGSM"].float().mean() and worst <= out["a", "PGD"].float().mean()


def test_transfer_diagonal_is_the_white_box_attack_and_sources_differ(device):
    learners, tasks = {"a": _learner(device, 0), "b": _learner(device, 1)}, _tasks(device)
    attack = robust_eval.Attack("pgd", 5, 2)
    out = robust_eval.transfer_correct(learners, tasks, epsilon=0.1, attack=attack, seed=0)
    assert set(out) == {(s, t) for s in learners for t in learners}
    white = robust_eval.evaluate_learners(learners, tasks, [0.1], {"PGD": attack}, seed=0)
    for name in learners:
        torch.testing.assert_close(out[name, name], white[name, "PGD"][0])
    # perturbations made against another learner's weights are not the white-box ones
    assert not torch.equal(out["a", "b"], out["b", "b"]) or not torch.equal(out["b", "a"], out["a", "a"])
    clean = robust_eval.transfer_correct(learners, tasks, epsilon=0.0, attack=attack)
    torch.testing.assert_close(clean["a", "b"], clean["b", "b"])  # ε = 0: every source leaves x unchanged
    with pytest.raises(ValueError, match="epsilon"):
        robust_eval.transfer_correct(learners, tasks, epsilon=-1.0, attack=attack)
    with pytest.raises(ValueError, match="at least one"):
        robust_eval.transfer_correct({}, tasks, epsilon=0.1, attack=attack)


@pytest.mark.parametrize(
    ("attack", "match"),
    [
        (robust_eval.Attack("cw", 10), "attack.kind"),
        (robust_eval.Attack("pgd", 0), "attack.steps"),
        (robust_eval.Attack("pgd", 5, 0), "attack.restarts"),
        (robust_eval.Attack("fgsm", 1, 3), "FGSM"),
    ],
)
def test_bad_attacks_name_the_field(attack, match):
    with pytest.raises(ValueError, match=match):
        robust_eval.evaluate_learners({"a": _learner("cpu")}, _tasks("cpu"), [0.1], {"x": attack})


def test_bad_evaluation_arguments():
    learners, tasks = {"a": _learner("cpu")}, _tasks("cpu")
    with pytest.raises(ValueError, match="clean"):
        robust_eval.evaluate_learners(learners, tasks, [0.1], {"clean": robust_eval.Attack("fgsm")})
    with pytest.raises(ValueError, match="epsilons"):
        robust_eval.evaluate_learners(learners, tasks, [-0.1], {"F": robust_eval.Attack("fgsm")})
    with pytest.raises(TypeError, match="Attack"):
        robust_eval.evaluate_learners(learners, tasks, [0.1], {"F": ("fgsm", 1, 1)})


# ------------------------------------------------------------- check 3: the attack's strength
def _strength_setup():
    model, _ = chapter.cover_maml(0.0, "cpu")  # the shipped MAML weights: θ′ differs from θ after 2 steps
    tasks = covers.cover_tasks(
        5, n_way=5, k_shot=5, k_query=5, size=16, pool="meta-test", generator=torch.Generator().manual_seed(2026)
    )
    return model, tasks


def _aimed_at_theta(model, tasks, **kw):
    """A wrong adversarial-query loss: PGD attacks the initial weights θ, not the adapted θ′."""
    return robust_meta.adversarial_query_loss(model, tasks, **{**kw, "target": "initial"})


def _misdirected_attack_loss(model, tasks, *, inner_lr, steps, epsilon, attack_steps, ball, step_size, generator=None):
    """The adversarial-query loss with a wrong PGD: steps of ``step_size`` projected onto a ball of radius ``ball``."""
    theta = params_of(model)
    losses = []
    for xs, ys, xq, yq in zip(*tasks):
        adapted = maml.adapt(model, theta, xs, ys, inner_lr=inner_lr, steps=steps)
        start = epsilon * (torch.rand(xq.shape, generator=generator) * 2 - 1)
        x_adv = robust_meta.functional_attack(
            model, adapted, xq, yq, start, epsilon=ball, steps=attack_steps, step_size=step_size
        )
        losses.append(torch.nn.functional.cross_entropy(forward(model, adapted, x_adv), yq))
    return torch.stack(losses).mean()


def _descending(model, tasks, *, epsilon, attack_steps, **kw):
    """A wrong adversarial-query loss: the PGD steps go down the loss (x − a·sign ∇ₓL) instead of up."""
    step = -2.5 * epsilon / attack_steps
    kw = {k: v for k, v in kw.items() if k in ("inner_lr", "steps", "generator")}
    return _misdirected_attack_loss(
        model, tasks, epsilon=epsilon, attack_steps=attack_steps, ball=epsilon, step_size=step, **kw
    )


def _unprojected(model, tasks, *, epsilon, attack_steps, **kw):
    """A wrong adversarial-query loss: PGD steps of 2.5ε/steps that never project back onto the ε-ball."""
    step = 2.5 * epsilon / attack_steps
    kw = {k: v for k, v in kw.items() if k in ("inner_lr", "steps", "generator")}
    return _misdirected_attack_loss(
        model, tasks, epsilon=epsilon, attack_steps=attack_steps, ball=1.0, step_size=step, **kw
    )


def _four_epsilon(model, tasks, *, epsilon, **kw):
    """A wrong adversarial-query loss: the budget passed on four times too large."""
    return robust_meta.adversarial_query_loss(model, tasks, epsilon=4 * epsilon, **kw)


def test_attack_strength_check_accepts_the_attack_of_adversarial_querying():
    model, tasks = _strength_setup()
    out = robust_checks.attack_strength_check(model, tasks, inner_lr=0.2, steps=2, epsilon=8 / 255)
    assert out["ours"] > out["clean"] and out["independent"] > out["clean"]
    assert 0.9 < out["ratio"] < 1.1


@rejects("aq_attack_strength", "PGD aimed at the initial weights θ instead of the adapted θ′")
@rejects("aq_attack_strength", "PGD steps that descend the query loss (sign flipped)")
@pytest.mark.parametrize("wrong", [_aimed_at_theta, _descending])
def test_attack_strength_check_rejects_a_weaker_attack(wrong):
    model, tasks = _strength_setup()
    out = robust_checks.attack_strength_check(model, tasks, inner_lr=0.2, steps=2, epsilon=8 / 255, query_loss=wrong)
    assert out["ratio"] < 0.9


@rejects("aq_attack_strength", "PGD without the projection onto the ε-ball")
@rejects("aq_attack_strength", "ε too large (4ε)")
@pytest.mark.parametrize("attack_steps", [10, 2])
@pytest.mark.parametrize("wrong", [_unprojected, _four_epsilon])
def test_attack_strength_check_rejects_an_attack_beyond_the_budget(wrong, attack_steps):
    model, tasks = _strength_setup()
    out = robust_checks.attack_strength_check(
        model, tasks, inner_lr=0.2, steps=2, epsilon=8 / 255, attack_steps=attack_steps, query_loss=wrong
    )
    assert not 0.9 < out["ratio"] < 1.1
    assert out["ratio"] > 1.1


def test_attack_strength_check_names_a_bad_argument():
    model, tasks = _strength_setup()
    with pytest.raises(ValueError, match="epsilon"):
        robust_checks.attack_strength_check(model, Tasks(*tasks), inner_lr=0.2, steps=2, epsilon=0.0)


def test_learners_side_by_side_give_the_results_of_one_by_one(monkeypatch, device):
    import threading

    learners = {"a": _learner(device, 0), "b": _learner(device, 1), "c": _learner(device, 2)}
    tasks, attacks = _tasks(device), {"FGSM": robust_eval.Attack("fgsm"), "PGD ×2": robust_eval.Attack("pgd", 3, 2)}
    attack_tasks, calls = robust_meta.attack_tasks, []

    def recorded(model, *args, generator=None, **kwargs):  # who attacks, in which thread, from which random state
        calls.append((id(model), threading.current_thread().name, generator.get_state()))
        return attack_tasks(model, *args, generator=generator, **kwargs)

    with monkeypatch.context() as m:  # two cores, as on the course's smallest machine, even in a test worker
        m.setattr(torch, "get_num_threads", lambda: 2)
        m.setattr("os.cpu_count", lambda: 2)
        m.setattr(robust_meta, "attack_tasks", recorded)
        together = robust_eval.evaluate_learners(learners, tasks, [0.0, 0.1], attacks, seed=0)
        moved = robust_eval.transfer_correct(learners, tasks, epsilon=0.1, attack=attacks["PGD ×2"], seed=0)
    threaded = device.type == "cpu"  # off the CPU side_by_side runs one by one
    assert calls and all(thread.startswith("side-by-side") == threaded for _, thread, _ in calls)
    states = {}
    for model, _, state in calls:
        states.setdefault(model, []).append(state)
    # every learner's attacks start from the same seeded random states, whichever thread runs them
    first = states[id(learners["a"].model)]
    assert len(states) == 3 and all(len(s) == len(first) for s in states.values())
    assert all(torch.equal(a, b) for s in states.values() for a, b in zip(s, first))
    monkeypatch.setattr(robust_eval, "side_by_side", lambda fn, items, modules=None: [fn(i) for i in items])
    assert list(together) == list(robust_eval.evaluate_learners(learners, tasks, [0.0, 0.1], attacks, seed=0))
    for key, value in robust_eval.evaluate_learners(learners, tasks, [0.0, 0.1], attacks, seed=0).items():
        assert torch.equal(together[key], value), key
    for key, value in robust_eval.transfer_correct(learners, tasks, epsilon=0.1, attack=attacks["PGD ×2"]).items():
        assert torch.equal(moved[key], value), key


def test_learners_that_share_a_model_are_evaluated_one_by_one(monkeypatch, device):
    import threading

    a = _learner(device, 0)
    learners = {"a": a, "a again": robust_meta.Learner(a.model, 0.5, 2), "b": _learner(device, 1)}
    tasks, attack = _tasks(device), robust_eval.Attack("pgd", 3)
    threads = []

    def recorded(function):
        def run(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return function(*args, **kwargs)

        return run

    with monkeypatch.context() as m:  # two cores, as in the side-by-side test above
        m.setattr(torch, "get_num_threads", lambda: 2)
        m.setattr("os.cpu_count", lambda: 2)
        for name in ("adapt_tasks", "attack_tasks"):  # every adaptation and attack of a shared model
            m.setattr(robust_meta, name, recorded(getattr(robust_meta, name)))
        together = robust_eval.evaluate_learners(learners, tasks, [0.1], {"PGD": attack}, seed=0)
        moved = robust_eval.transfer_correct(learners, tasks, epsilon=0.1, attack=attack, seed=0)
    assert threads and set(threads) == {threading.main_thread().name}
    monkeypatch.setattr(robust_eval, "side_by_side", lambda fn, items, modules=None: [fn(i) for i in items])
    for key, value in robust_eval.evaluate_learners(learners, tasks, [0.1], {"PGD": attack}, seed=0).items():
        assert torch.equal(together[key], value), key
    for key, value in robust_eval.transfer_correct(learners, tasks, epsilon=0.1, attack=attack, seed=0).items():
        assert torch.equal(moved[key], value), key
