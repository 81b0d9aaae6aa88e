import pytest
import torch

from metaadv_edu import attacks, data, defenses, models


@pytest.fixture(scope="module")
def digits():
    return data.load_digits("train"), data.load_digits("test")


def train(method, epsilon, digits, device, epochs=12):
    (x, y), test = digits
    x, y = x.to(device), y.to(device)
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=8).to(device)
    history = defenses.adversarial_training(
        model,
        x,
        y,
        method=method,
        epsilon=epsilon,
        epochs=epochs,
        pgd_steps=5,
        generator=torch.Generator().manual_seed(0),
        eval_data=tuple(t.to(device) for t in test),
        progress=False,
    )
    return model, history


def test_pgd_training_is_more_robust_than_standard(digits, device):
    (_, _), (xt, yt) = digits
    xt, yt = xt.to(device), yt.to(device)
    standard, h_std = train("standard", 0.0, digits, device)
    robust, h_rob = train("pgd", 0.2, digits, device)
    assert h_std["eval_accuracy"][-1] > 0.9
    g = torch.Generator().manual_seed(0)
    acc_std = attacks.robust_accuracy(standard, xt, yt, [0.2], attack="pgd", generator=g)[0]
    acc_rob = attacks.robust_accuracy(robust, xt, yt, [0.2], attack="pgd", generator=g)[0]
    assert acc_rob > acc_std + 0.2
    assert len(h_rob["loss"]) == 12


def test_fgsm_mixed_loss_is_the_weighted_sum(digits):
    (x, y), _ = digits
    torch.manual_seed(0)
    model = models.TinyCNN(1, 10, width=4)
    x, y = x[:32], y[:32]
    x_adv = attacks.fgsm(model, x, y, 0.1)
    ce = torch.nn.functional.cross_entropy
    expected = 0.3 * ce(model(x), y) + 0.7 * ce(model(x_adv), y)
    torch.testing.assert_close(defenses.fgsm_mixed_loss(0.1, 0.3)(model, x, y), expected)


def test_bad_method_and_alpha():
    model = models.TinyCNN(1, 10, width=4)
    x, y = data.load_digits("test")
    with pytest.raises(ValueError, match="method"):
        defenses.adversarial_training(model, x, y, method="trades")
    with pytest.raises(ValueError, match="alpha"):
        defenses.fgsm_mixed_loss(0.1, 1.5)
    with pytest.raises(ValueError, match="epsilon"):
        defenses.adversarial_training(model, x, y, epsilon=-1)
