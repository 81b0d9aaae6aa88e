import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from metaadv_edu import attacks


def tiny_model(device, seed=0, n_in=6, n_classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n_in, 8), nn.Tanh(), nn.Linear(8, n_classes)).to(device)


def batch(device, seed=0, n=16, n_in=6, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n_in, generator=g).to(device), torch.randint(n_classes, (n,), generator=g).to(device)


eps_strategy = st.floats(min_value=0.0, max_value=0.6, allow_nan=False)


@settings(max_examples=30, deadline=None)
@given(epsilon=eps_strategy, seed=st.integers(0, 10_000), targeted=st.booleans())
def test_fgsm_stays_in_ball_and_clamp(epsilon, seed, targeted):
    model = tiny_model("cpu", seed % 7)
    x, y = batch("cpu", seed)
    x_adv = attacks.fgsm(model, x, y, epsilon, targeted=targeted)
    assert float((x_adv - x).abs().max()) <= epsilon + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert not x_adv.requires_grad


@settings(max_examples=25, deadline=None)
@given(
    epsilon=eps_strategy,
    steps=st.integers(1, 6),
    seed=st.integers(0, 10_000),
    step_frac=st.floats(0.05, 1.0),
    random_start=st.booleans(),
)
def test_pgd_stays_in_ball_and_clamp(epsilon, steps, seed, step_frac, random_start):
    model = tiny_model("cpu", seed % 5)
    x, y = batch("cpu", seed)
    x_adv = attacks.pgd(
        model,
        x,
        y,
        epsilon,
        step_size=step_frac * 0.3 + 1e-3,
        steps=steps,
        random_start=random_start,
        generator=torch.Generator().manual_seed(seed),
    )
    assert float((x_adv - x).abs().max()) <= epsilon + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_zero_epsilon_is_the_identity(device):
    model = tiny_model(device)
    x, y = batch(device)
    assert torch.equal(attacks.fgsm(model, x, y, 0.0), x)
    assert torch.equal(attacks.pgd(model, x, y, 0.0, step_size=0.1, steps=3), x)


def test_fgsm_raises_the_loss_and_targeted_lowers_the_target_loss(device):
    model = tiny_model(device)
    x, y = batch(device)
    x_adv = attacks.fgsm(model, x, y, 0.05, clamp=None)
    assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    target = (y + 1) % 3
    x_t = attacks.fgsm(model, x, target, 0.05, targeted=True, clamp=None)
    assert F.cross_entropy(model(x_t), target) < F.cross_entropy(model(x), target)


def test_fgsm_is_epsilon_sign_of_gradient(device):
    model = tiny_model(device)
    x, y = batch(device)
    xr = x.clone().requires_grad_(True)
    F.cross_entropy(model(xr), y, reduction="sum").backward()
    expected = x + 0.1 * xr.grad.sign()
    torch.testing.assert_close(attacks.fgsm(model, x, y, 0.1, clamp=None), expected)


def test_one_step_pgd_without_random_start_is_fgsm(device):
    model = tiny_model(device)
    x, y = batch(device)
    for eps in (0.01, 0.1, 0.3):
        a = attacks.pgd(model, x, y, eps, step_size=eps, steps=1, random_start=False)
        torch.testing.assert_close(a, attacks.fgsm(model, x, y, eps))


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_model(device):
    torch.manual_seed(0)
    x = torch.rand(256, 6, device=device)
    y = (x[:, 0] + x[:, 1] > x[:, 2] + x[:, 3]).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2)).to(device)
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    f, p = (
        attacks.robust_accuracy(model, x, y, [0.1], attack="fgsm"),
        attacks.robust_accuracy(model, x, y, [0.1], attack="pgd", steps=20, generator=torch.Generator().manual_seed(0)),
    )
    assert p[0] <= f[0]
    clean = attacks.robust_accuracy(model, x, y, [0.0])[0]
    assert clean > 0.9 and f[0] < clean


def test_model_parameters_get_no_gradient_and_mode_is_kept(device):
    model = tiny_model(device)
    model.train()
    x, y = batch(device)
    attacks.fgsm(model, x, y, 0.1)
    attacks.pgd(model, x, y, 0.1, step_size=0.05, steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    model.eval()
    attacks.fgsm(model, x, y, 0.1)
    assert not model.training


def test_works_with_any_callable_and_inside_no_grad(device):
    w = torch.randn(6, 3, device=device)
    x, y = batch(device)
    with torch.no_grad():
        x_adv = attacks.fgsm(lambda inp: inp @ w, x, y, 0.1, clamp=None)
    assert x_adv.shape == x.shape and x_adv.device.type == device.type


def test_pgd_random_start_is_seeded(device):
    model = tiny_model(device)
    x, y = batch(device)

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return attacks.pgd(model, x, y, 0.2, step_size=0.01, steps=2, generator=generator)

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_robust_accuracy_curve_is_batched_and_starts_at_clean(device):
    model = tiny_model(device)
    x, y = batch(device, n=50)
    curve = attacks.robust_accuracy(model, x, y, [0.0, 0.1, 0.3], batch_size=7)
    clean = float((model(x).argmax(1) == y).float().mean())
    assert curve[0] == pytest.approx(clean)
    assert curve == attacks.robust_accuracy(model, x, y, [0.0, 0.1, 0.3], batch_size=50)
    custom = attacks.robust_accuracy(model, x, y, [0.1], attack=lambda m, a, b, e: a)
    assert custom[0] == pytest.approx(clean)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"epsilon": float("inf")}, "epsilon"),
        ({"step_size": 0.0}, "step_size"),
        ({"step_size": -1.0}, "step_size"),
        ({"steps": 0}, "steps"),
        ({"clamp": (1, 0)}, "clamp"),
    ],
)
def test_bad_arguments_raise_before_any_work(kwargs, match):
    calls = []

    def model(inp):
        calls.append(1)
        return inp @ torch.ones(6, 3)

    x, y = batch("cpu")
    args = {"epsilon": 0.1, "step_size": 0.01, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        attacks.pgd(model, x, y, args.pop("epsilon"), **args)
    if "step_size" not in kwargs and "steps" not in kwargs:
        with pytest.raises(ValueError, match=match):
            attacks.fgsm(model, x, y, kwargs.get("epsilon", 0.1), clamp=kwargs.get("clamp", (0, 1)))
    assert not calls


def test_shape_errors_name_the_problem():
    x, y = batch("cpu")
    with pytest.raises(ValueError, match="batch size"):
        attacks.fgsm(lambda inp: inp[:, :3], x, y[:5], 0.1)
    with pytest.raises(ValueError, match="logits of shape"):
        attacks.fgsm(lambda inp: inp.sum(1), x, y, 0.1)
    with pytest.raises(ValueError, match="outside"):
        attacks.fgsm(lambda inp: inp[:, :2], x, y + 5, 0.1)
    with pytest.raises(ValueError, match="int64"):
        attacks.fgsm(lambda inp: inp[:, :3], x, y.float(), 0.1)
    with pytest.raises(ValueError, match="attack"):
        attacks.robust_accuracy(lambda inp: inp[:, :3], x, y, [0.1], attack="cw")


def _restart_runs(model, x, y, restarts, **kwargs):
    """The single runs that pgd(..., restarts=R) makes, drawn from the same generator in the same order."""
    generator = torch.Generator().manual_seed(3)
    return [attacks.pgd(model, x, y, 0.3, generator=generator, **kwargs) for _ in range(restarts)]


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_restarts_keep_the_per_example_worst_case(device, targeted):
    model = tiny_model(device, seed=4)
    x, y = batch(device, seed=5, n=64)
    kwargs = {"step_size": 0.02, "steps": 3, "targeted": targeted}
    runs = _restart_runs(model, x, y, 4, **kwargs)
    best = attacks.pgd(model, x, y, 0.3, generator=torch.Generator().manual_seed(3), restarts=4, **kwargs)
    with torch.no_grad():
        logits = torch.stack([model(r) for r in runs])  # (restarts, batch, classes)
        success = (logits.argmax(-1) == y) if targeted else (logits.argmax(-1) != y)
        value = torch.stack([F.cross_entropy(lg, y, reduction="none") for lg in logits]) * (-1 if targeted else 1)
        best_logits = model(best)
    best_success = (best_logits.argmax(-1) == y) if targeted else (best_logits.argmax(-1) != y)
    best_value = F.cross_entropy(best_logits, y, reduction="none") * (-1 if targeted else 1)
    # each example's result is one of its runs, succeeds if any run does, and has the best value among
    # the runs with that outcome
    assert all(any(torch.equal(best[i], r[i]) for r in runs) for i in range(len(x)))
    assert torch.equal(best_success, success.any(0))
    same_outcome = success == best_success
    assert torch.allclose(best_value, torch.where(same_outcome, value, -torch.inf).amax(0))
    # the runs disagree on some examples, so picking per example matters (no single run is the answer)
    assert not any(torch.equal(best, r) for r in runs)


def test_pgd_restarts_lower_the_accuracy_below_every_single_run(device):
    model = tiny_model(device, seed=4)
    x, y = batch(device, seed=5, n=64)
    runs = _restart_runs(model, x, y, 5, step_size=0.02, steps=3)
    single = [attacks.correct_under(model, x, y, lambda m, a, b, r=r: r) for r in runs]
    best = attacks.pgd(
        model, x, y, 0.3, step_size=0.02, steps=3, generator=torch.Generator().manual_seed(3), restarts=5
    )
    combined = attacks.correct_under(model, x, y, lambda m, a, b: best)
    assert torch.equal(combined, torch.stack(single).all(0))
    curve = attacks.robust_accuracy(
        model,
        x,
        y,
        [0.3],
        attack="pgd",
        steps=3,
        step_size=0.02,
        restarts=5,
        generator=torch.Generator().manual_seed(3),
    )
    assert curve[0] == pytest.approx(float(combined.float().mean()))
    assert curve[0] <= min(float(s.float().mean()) for s in single)


def test_pgd_restarts_need_a_random_start():
    model = tiny_model("cpu")
    x, y = batch("cpu")
    with pytest.raises(ValueError, match="random_start"):
        attacks.pgd(model, x, y, 0.1, step_size=0.01, steps=2, random_start=False, restarts=3)
    with pytest.raises(ValueError, match="restarts"):
        attacks.pgd(model, x, y, 0.1, step_size=0.01, steps=2, restarts=0)


def test_correct_under_is_batched_and_checks_the_attack(device):
    model = tiny_model(device)
    x, y = batch(device, n=50)
    clean = model(x).argmax(1) == y
    assert torch.equal(attacks.correct_under(model, x, y, lambda m, a, b: a, batch_size=7), clean)
    with pytest.raises(TypeError, match="attack"):
        attacks.correct_under(model, x, y, "pgd")


def test_targeted_pgd_moves_towards_its_target(device):
    model = tiny_model(device, seed=4)
    x, y = batch(device, seed=5, n=64)
    target = (y + 1) % 3
    x_adv = attacks.pgd(model, x, target, 0.3, step_size=0.05, steps=10, targeted=True, random_start=False)
    with torch.no_grad():
        before = F.cross_entropy(model(x), target, reduction="none")
        after = F.cross_entropy(model(x_adv), target, reduction="none")
        hits_before = (model(x).argmax(-1) == target).float().mean()
        hits_after = (model(x_adv).argmax(-1) == target).float().mean()
    assert (after <= before + 1e-6).all() and after.mean() < before.mean()
    assert hits_after > hits_before


def _each_target_runs(model, x, y, n_classes, **kwargs):
    """The targeted runs that pgd_each_target makes, drawn from the same generator in the same order."""
    generator = torch.Generator().manual_seed(7)
    return [
        attacks.pgd(model, x, (y + s) % n_classes, 0.3, targeted=True, generator=generator, **kwargs)
        for s in range(1, n_classes)
    ]


def test_pgd_each_target_is_the_per_example_worst_case_of_its_runs(device):
    model = tiny_model(device, seed=4, n_classes=4)
    x, y = batch(device, seed=5, n=64, n_classes=4)
    kwargs = {"step_size": 0.05, "steps": 6}
    runs = _each_target_runs(model, x, y, 4, **kwargs)
    best = attacks.pgd_each_target(model, x, y, 0.3, generator=torch.Generator().manual_seed(7), **kwargs)
    assert (best - x).abs().max() <= 0.3 + 1e-6 and best.min() >= 0 and best.max() <= 1
    combined = attacks.correct_under(model, x, y, lambda m, a, b: best)
    single = [attacks.correct_under(model, x, y, lambda m, a, b, r=r: r) for r in runs]
    clean = attacks.correct_under(model, x, y, lambda m, a, b: a)
    # an example survives only if the clean input and every targeted run leave it correct
    assert torch.equal(combined, torch.stack([clean, *single]).all(0))
    assert all(combined.float().mean() <= s.float().mean() for s in single)
    # the runs disagree, so the per-example choice matters
    assert not all(torch.equal(single[0], s) for s in single[1:])


def test_pgd_each_target_with_targets_attacks_the_likeliest_wrong_classes(device):
    model = tiny_model(device, seed=4, n_classes=4)
    x, y = batch(device, seed=5, n=64, n_classes=4)
    kwargs = {"step_size": 0.05, "steps": 6}
    with torch.no_grad():
        logits = model(x).masked_fill(torch.nn.functional.one_hot(y, 4).bool(), float("-inf"))
    order = logits.topk(2, dim=-1).indices  # the two likeliest wrong classes of each example
    generator = torch.Generator().manual_seed(7)
    runs = [attacks.pgd(model, x, t, 0.3, targeted=True, generator=generator, **kwargs) for t in order.T]
    best = attacks.pgd_each_target(model, x, y, 0.3, generator=torch.Generator().manual_seed(7), targets=2, **kwargs)
    combined = attacks.correct_under(model, x, y, lambda m, a, b: best)
    single = [attacks.correct_under(model, x, y, lambda m, a, b, r=r: r) for r in runs]
    clean = attacks.correct_under(model, x, y, lambda m, a, b: a)
    assert torch.equal(combined, torch.stack([clean, *single]).all(0))
    # towards the least likely class instead, a shift of the label, the runs are others
    shifted = [r for r in _each_target_runs(model, x, y, 4, **kwargs)[:2]]
    assert not all(torch.equal(a, b) for a, b in zip(runs, shifted))


def test_pgd_each_target_checks_its_arguments():
    model = tiny_model("cpu")
    x, y = batch("cpu")
    with pytest.raises(ValueError, match="targets must be between 1 and"):
        attacks.pgd_each_target(model, x, y, 0.1, step_size=0.01, steps=2, targets=99)
    with pytest.raises(ValueError, match="targets"):
        attacks.pgd_each_target(model, x, y, 0.1, step_size=0.01, steps=2, targets=0)
    with pytest.raises(ValueError, match="step_size"):
        attacks.pgd_each_target(model, x, y, 0.1, step_size=0.0, steps=2)
    with pytest.raises(ValueError, match="epsilon"):
        attacks.pgd_each_target(model, x, y, -0.1, step_size=0.01, steps=2)
