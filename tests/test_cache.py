import multiprocessing as mp
import warnings

import pytest
import torch
from torch import nn

from metaadv_edu import cache


def build():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def make_trainer(counter):
    def train(model):
        counter.append(1)
        with torch.no_grad():
            model.weight.fill_(float(len(counter)))
        return {"history": [1.0, 0.5], "note": "trained"}

    return train


def test_round_trip(device):
    calls = []
    m1, extra1 = cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls), device=device)
    m2, extra2 = cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls), device=device)
    assert len(calls) == 1
    assert extra1 == extra2 == {"history": [1.0, 0.5], "note": "trained"}
    assert next(m2.parameters()).device.type == device.type
    torch.testing.assert_close(m1.weight, m2.weight)
    assert not m2.training


def test_config_is_part_of_the_key():
    calls = []
    cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls))
    cache.load_or_train("lin", {"a": 2}, build, make_trainer(calls))
    assert len(calls) == 2
    assert cache.cache_path("lin", {"a": 1}) != cache.cache_path("lin", {"a": 2})
    assert cache.config_key("x", {"b": 1, "a": 2}) == cache.config_key("x", {"a": 2, "b": 1})


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("METAADV_CACHE", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    cache.load_or_train("lin", {}, build, make_trainer([]))
    assert len(list((tmp_path / "c").glob("lin-*.pt"))) == 1
    assert not list((tmp_path / "c").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip-weights", "empty"])
def test_corrupt_file_is_retrained_with_a_warning(damage):
    calls = []
    cache.load_or_train("lin", {"d": damage}, build, make_trainer(calls))
    path = cache.cache_path("lin", {"d": damage})
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a model" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        record = torch.load(path, weights_only=True)
        record["state_dict"]["weight"] += 1
        torch.save(record, path)
    with pytest.warns(cache.CacheWarning, match="retraining"):
        _model, _ = cache.load_or_train("lin", {"d": damage}, build, make_trainer(calls))
    assert len(calls) == 2
    # the retrained file is good again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.load_or_train("lin", {"d": damage}, build, make_trainer(calls))
    assert len(calls) == 2


def test_architecture_mismatch_is_retrained():
    cache.load_or_train("net", {}, build, make_trainer([]))
    with pytest.warns(cache.CacheWarning):
        model, _ = cache.load_or_train("net", {}, lambda: nn.Linear(4, 2), make_trainer([]))
    assert model.weight.shape == (2, 4)


def test_unwritable_cache_warns_but_returns_the_model(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("METAADV_CACHE", str(blocker / "sub"))
    with pytest.warns(cache.CacheWarning, match="could not write"):
        _model, extra = cache.load_or_train("lin", {}, build, make_trainer([]))
    assert extra["note"] == "trained"


def test_bad_names_and_configs():
    with pytest.raises(ValueError, match="name"):
        cache.cache_path("../evil", {})
    with pytest.raises(TypeError, match="JSON"):
        cache.config_key("x", {"f": object()})
    with pytest.raises(TypeError, match="build"):
        cache.load_or_train("x", {}, lambda: 3, make_trainer([]))


def _writer(directory, value, barrier):
    import os

    os.environ["METAADV_CACHE"] = directory

    def train(model):
        with torch.no_grad():
            model.weight.fill_(value)
        return {"value": value}

    barrier.wait()
    for _ in range(5):
        cache.load_or_train("race", {}, build, train, retrain=True)


def test_concurrent_writers_leave_a_valid_file(tmp_path, monkeypatch):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), float(v), barrier)) for v in (1, 2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    monkeypatch.setenv("METAADV_CACHE", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, extra = cache.load_or_train("race", {}, build, make_trainer([]))
    assert extra["value"] in (1.0, 2.0, 3.0)
    assert float(model.weight[0, 0].detach()) == extra["value"]
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------ weights shipped with the package
@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A private stand-in for metaadv_edu/weights holding one trained "lin" model."""
    folder = tmp_path / "shipped"
    monkeypatch.setattr(cache, "SHIPPED", folder)
    monkeypatch.setenv("METAADV_CACHE", str(tmp_path / "maker"))
    cache.load_or_train("lin", {"a": 1}, build, make_trainer([]))
    folder.mkdir()
    file = cache.cache_path("lin", {"a": 1}).name
    (tmp_path / "maker" / file).rename(folder / file)
    monkeypatch.setenv("METAADV_CACHE", str(tmp_path / "learner"))
    return folder


def test_a_shipped_model_is_loaded_without_training(shipped):
    calls = []
    model, extra = cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls))
    assert calls == [] and extra["note"] == "trained" and model.weight[0, 0].item() == 1.0
    cache.load_or_train("lin", {"a": 2}, build, make_trainer(calls))  # another config is not shipped
    assert calls == [1]


def test_shipped_weights_can_be_switched_off_and_retrain_ignores_them(shipped, monkeypatch):
    calls = []
    monkeypatch.setenv("METAADV_SHIPPED_WEIGHTS", "0")
    assert not cache.shipped_weights_enabled()
    cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls))
    assert calls == [1]
    monkeypatch.setenv("METAADV_SHIPPED_WEIGHTS", "1")
    cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls), retrain=True)
    assert calls == [1, 1]


def test_a_damaged_shipped_file_is_retrained_with_a_warning(shipped):
    for file in shipped.glob("*.pt"):
        file.write_bytes(b"not a model")
    calls = []
    with pytest.warns(cache.CacheWarning, match="unusable"):
        cache.load_or_train("lin", {"a": 1}, build, make_trainer(calls))
    assert calls == [1]


def test_every_shipped_model_file_is_valid_and_named_by_its_config():
    files = sorted(cache.SHIPPED.glob("*.pt"))
    assert files, "the package ships the notebooks' trained models (metaadv-edu execute --retrain)"
    for file in files:
        record = torch.load(file, map_location="cpu", weights_only=True)
        assert file.name == cache.cache_path(record["name"], record["config"]).name
        assert cache._digest(record["state_dict"]) == record["digest"]
        assert record["format"] == cache.FORMAT
    assert sum(f.stat().st_size for f in files) < 16 * 2**20


@pytest.mark.parametrize("recipe", ["fgsm.digits_logreg", "start_here.digits_cnn"])
def test_retraining_from_scratch_reproduces_the_shipped_weights(recipe, monkeypatch):
    """Training is seeded: the same recipe trained again matches the shipped file to 1e-4 of the largest
    weight (on another machine float rounding may differ slightly, hence a tolerance, not equality)."""
    import importlib

    module, name = recipe.split(".")
    build = getattr(importlib.import_module(f"metaadv_edu.chapters.{module}"), name)
    shipped, _ = build()
    assert cache.shipped_weights_enabled() and not list(cache.cache_dir().glob("*.pt")), "loaded, not trained"
    monkeypatch.setenv("METAADV_SHIPPED_WEIGHTS", "0")
    monkeypatch.setattr(cache, "SHIPPED", cache.SHIPPED / "absent")  # nothing to load: train
    retrained, _ = build()
    assert len(list(cache.cache_dir().glob("*.pt"))) == 1, "trained now (and cached)"
    for (key, a), b in zip(shipped.state_dict().items(), retrained.state_dict().values()):
        scale = max(a.abs().max().item(), 1e-6)
        assert (a - b).abs().max().item() <= 1e-4 * scale, key
