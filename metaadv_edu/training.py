"""A plain mini-batch training loop and accuracy, shared by every classifier in the course."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from metaadv_edu import _validate as v

__all__ = ["accuracy", "cross_entropy_loss", "predict", "train_classifier"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def predict(model, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Logits for ``x``, computed in batches without building a graph."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of ``x`` classified as ``y``."""
    v.same_batch(x, y)
    return float((predict(model, x, batch_size=batch_size).argmax(-1) == y).float().mean())


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
    loss_fn: LossFn = cross_entropy_loss,
    generator: torch.Generator | None = None,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "training",
) -> dict[str, list[float]]:
    """Train ``model`` in place with Adam on shuffled mini-batches of ``(x, y)``.

    ``loss_fn(model, xb, yb)`` gives the loss of a batch (cross-entropy by default; the
    adversarial-training losses of :mod:`metaadv_edu.defenses` plug in here). Returns a history
    with the mean training loss per epoch and, with ``eval_data``, the accuracy on it.
    """
    v.same_batch(x, y)
    epochs = v.integer("epochs", epochs)
    batch_size = v.integer("batch_size", batch_size)
    lr = v.positive("lr", lr)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict[str, list[float]] = {"loss": []}
    if eval_data is not None:
        history["eval_accuracy"] = []
    model.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total, count = 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(model, x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history["loss"].append(total / count)
        if eval_data is not None:
            model.eval()
            history["eval_accuracy"].append(accuracy(model, *eval_data))
            model.train()
    model.eval()
    return history
