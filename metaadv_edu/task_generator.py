r"""An adversarial generator trained against a few-shot learner *after* it adapts to each task.

Derived in ``notebooks/04_adversarial_generator.ipynb`` (the generator) and used in
``notebooks/09_detecting_unseen_attacks.ipynb`` (a perturbation the detectors never saw; there the generator
trained against MAML at 8/255 does not fool it, so it serves as a learned perturbation, not as an attack).
G is :class:`metaadv_edu.gan.PerturbationGenerator`, :math:`G(x, z) = \mathrm{clip}(x + \epsilon\tanh h(x, z), 0, 1)`.
For a task T with adapted weights :math:`\theta'_T` (``steps`` SGD steps of α on T's clean support set, no
graph), G lowers the Carlini–Wagner margin of the adapted classifier on T's query covers,

.. math:: \min_G\; \mathbb{E}_T\, \mathbb{E}_{(x, y) \in Q_T}\,
          \max\big(Z_y(\theta'_T, G(x, z)) - \max_{j \ne y} Z_j(\theta'_T, G(x, z)),\; -\kappa\big),

AdvGAN's loss without its discriminator: the ε-bound of G is its only constraint. One forward pass of
the result perturbs the covers of any task, without seeing the task's labels or adapted weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import vmap
from tqdm.auto import tqdm

from metaadv_edu import _validate as v
from metaadv_edu import robust_meta
from metaadv_edu.data import Tasks
from metaadv_edu.functional import forward
from metaadv_edu.gan import margin_loss

__all__ = ["generate", "train_task_generator"]


def generate(perturber: nn.Module, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """G(x, z) for a batch of tasks ``x`` (n_tasks, k, …), with one noise vector z per cover drawn on the CPU
    from ``generator`` (so the result does not depend on the device). No graph is kept."""
    if x.dim() != len(perturber.in_shape) + 2:
        raise ValueError(
            f"x must have shape (n_tasks, k, {', '.join(map(str, perturber.in_shape))}), got {tuple(x.shape)}"
        )
    z = torch.randn(x.shape[0] * x.shape[1], perturber.noise_dim, generator=generator).to(x.device)
    with torch.no_grad():
        return perturber(x.flatten(0, 1), z).view_as(x)


def train_task_generator(
    perturber: nn.Module,
    model: nn.Module,
    sample_tasks: Callable[[torch.Generator], Tasks],
    *,
    inner_lr,
    steps: int = 1,
    iterations: int,
    lr: float = 1e-3,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train ``perturber`` in place against ``model`` after adaptation (the objective of the module docstring).

    Each iteration samples tasks, adapts ``model`` to every support set (no graph), perturbs the query
    covers with G and takes one Adam step of ``lr`` on :func:`metaadv_edu.gan.margin_loss` of the adapted models. The
    model's weights and ``.grad`` are left untouched. Returns ``{"margin": [...], "fooled": [...]}``, the
    loss and the fraction of query covers misclassified at every iteration.
    """
    iterations = v.integer("iterations", iterations)
    lr = v.positive("lr", lr)
    opt = torch.optim.Adam(perturber.parameters(), lr=lr)
    history: dict[str, list[float]] = {"margin": [], "fooled": []}
    for _ in tqdm(range(iterations), desc="task generator", disable=not progress, leave=False):
        tasks = sample_tasks(generator)
        adapted = robust_meta.adapt_tasks(model, tasks, inner_lr=inner_lr, steps=steps)
        xq, yq = tasks.x_query, tasks.y_query
        z = torch.randn(xq.shape[0] * xq.shape[1], perturber.noise_dim, generator=generator).to(xq.device)
        x_adv = perturber(xq.flatten(0, 1), z).view_as(xq)
        logits = vmap(lambda p, xb: forward(model, p, xb))(adapted, x_adv)
        loss = margin_loss(logits.flatten(0, 1), yq.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["margin"].append(float(loss.detach()))
        history["fooled"].append(float((logits.argmax(-1) != yq).float().mean()))
    for p in model.parameters():
        p.grad = None
    return history
