"""Load-or-train cache for the small models the notebooks use.

A model is stored under ``$METAADV_CACHE`` (default ``~/.cache/metaadv_edu``) in a file named after
a hash of its training configuration, so changing any setting trains a new model and never loads a
stale one. Files are written atomically (a temporary file, then ``os.replace``), loaded with
``torch.load(..., weights_only=True)`` and checked against a digest of their weights; a corrupt or
mismatched file is retrained with a warning, never a crash.

The package ships the trained weights of every model the notebooks use (``metaadv_edu/weights/``, in
the same format), so a first run needs no training: a model missing from the cache is loaded from there
when its name and configuration match. ``METAADV_SHIPPED_WEIGHTS=0`` ignores them (everything is trained);
``metaadv-edu execute --retrain`` retrains every model from scratch and replaces the shipped files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from metaadv_edu import _validate as v
from metaadv_edu import training

__all__ = [
    "SHIPPED",
    "CacheWarning",
    "cache_dir",
    "cache_path",
    "config_key",
    "fit_classifier",
    "load_or_train",
    "seeded",
    "shipped_weights_enabled",
    "timed",
]

ENV_VAR = "METAADV_CACHE"
SHIPPED_ENV_VAR = "METAADV_SHIPPED_WEIGHTS"
FORMAT = 1

#: The trained weights that come with the package (written by ``metaadv-edu execute --retrain``).
SHIPPED = Path(__file__).resolve().parent / "weights"

#: File names of the models this process loaded or trained (what a notebook's outputs depend on: read by
#: ``metaadv-edu execute``, see :mod:`metaadv_edu.dependencies`).
LOADED: set[str] = set()


class CacheWarning(UserWarning):
    """A cached model could not be used and is being retrained."""


def cache_dir() -> Path:
    """The cache directory: ``$METAADV_CACHE`` or ``~/.cache/metaadv_edu``."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metaadv_edu"


def shipped_weights_enabled() -> bool:
    """False when ``$METAADV_SHIPPED_WEIGHTS`` is ``0`` (or ``false``/``no``): then every model is trained."""
    return os.environ.get(SHIPPED_ENV_VAR, "1").strip().lower() not in {"0", "false", "no"}


def config_key(name: str, config: dict) -> str:
    """A short, stable hash of a model's name and its JSON-serialisable training config."""
    try:
        text = json.dumps({"name": name, "config": config, "format": FORMAT}, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"config must be JSON-serialisable (numbers, strings, lists, dicts): {exc}") from exc
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(name: str, config: dict) -> Path:
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"name must be letters, digits, '-' or '_', got {name!r}")
    return cache_dir() / f"{name}-{config_key(name, config)}.pt"


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _save(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _try_load(path: Path, name: str, config: dict, model: nn.Module):
    """The cached extra record if the file is valid for this config and model, else None."""
    if not path.exists():
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        if record.get("format") != FORMAT or record.get("name") != name:
            raise ValueError("format or name differs")
        if record.get("config") != json.loads(json.dumps(config)):
            raise ValueError("training config differs")
        state = record["state_dict"]
        if _digest(state) != record.get("digest"):
            raise ValueError("weights do not match their digest")
        model.load_state_dict(state)
    except Exception as exc:  # a broken cache file must never stop a lesson
        warnings.warn(f"cached model {path.name} is unusable ({exc}); retraining it", CacheWarning, stacklevel=3)
        return None
    return record.get("extra") or {}


def load_or_train(
    name: str,
    config: dict,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], dict | None],
    *,
    device=None,
    retrain: bool = False,
) -> tuple[nn.Module, dict]:
    """Return ``(model, extra)``: the cached model for ``(name, config)``, or a freshly trained one.

    Parameters
    ----------
    name : str
        A short identifier such as ``"digits-cnn"``.
    config : dict
        Everything that determines the trained weights (JSON-serialisable); part of the key.
    build : callable
        ``build() -> nn.Module`` makes the untrained model (same architecture every call).
    train : callable
        ``train(model) -> dict | None`` trains the model in place on its device and may return a
        record (histories, metrics) of numbers, strings, lists and dicts, cached with the weights.
    device : torch.device or str, optional
        Where the returned model lives (default: the CPU).
    retrain : bool
        Ignore the cache and train again (the new weights replace the cached ones).
    """
    device = v.as_device(device)
    path = cache_path(name, config)
    model = build()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build() must return an nn.Module, got {type(model).__name__}")
    extra = None if retrain else _try_load(path, name, config, model)
    if extra is None and not retrain and shipped_weights_enabled() and (SHIPPED / path.name).exists():
        extra = _try_load(SHIPPED / path.name, name, config, model)
    model.to(device)
    if extra is None:
        extra = train(model) or {}
        state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
        record = {
            "format": FORMAT,
            "name": name,
            "config": json.loads(json.dumps(config)),
            "state_dict": state,
            "digest": _digest(state),
            "extra": extra,
        }
        try:
            _save(path, record)
        except OSError as exc:
            warnings.warn(
                f"could not write the model cache at {path} ({exc}); the model will be retrained next time",
                CacheWarning,
                stacklevel=2,
            )
    LOADED.add(path.name)
    model.eval()
    return model, extra


# ------------------------------------------------------------------ pieces of the recipes
def seeded(factory, seed: int):
    """A ``build`` function for the cache: the same initial weights every call."""

    def build():
        torch.manual_seed(seed)
        return factory()

    return build


def fit_classifier(model, x, y, eval_data, *, epochs, lr, batch_size=64, seed=0, desc="training", **kwargs):
    """Train a classifier with a seeded shuffle; the record a recipe stores: history and test accuracy."""
    torch.manual_seed(seed)
    history = training.train_classifier(
        model,
        x,
        y,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        eval_data=eval_data,
        generator=torch.Generator().manual_seed(seed),
        desc=desc,
        **kwargs,
    )
    return {"history": history, "test_accuracy": history["eval_accuracy"][-1]}


def timed(train):
    """Wrap a ``train(model)`` so that its record also holds the wall-clock training time."""

    def timed(model):
        start = time.perf_counter()
        record = train(model) or {}
        return {**record, "train_seconds": time.perf_counter() - start}

    return timed
