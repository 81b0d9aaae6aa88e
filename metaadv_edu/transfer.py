r"""Transfer learning for few-shot tasks: a pretrained body with a new, fine-tuned head.

The baseline that notebook 08 (``notebooks/08_meta_adversarial_training.ipynb``, part A) sets against the
meta-learners, in the form Goldblum, Fowl & Goldstein (2020) call *transfer learning*: a classifier trained
on many meta-train classes (or adversarially trained, notebook 02, for *robust* transfer learning) keeps
its body; its last layer is replaced by a zero-initialised N-way head, and all weights are fine-tuned on a
task's support set with the same SGD steps a meta-learner adapts with,

.. math:: \theta' = \theta_{\text{body}} \oplus (W = 0,\, b = 0), \qquad
          \theta' \leftarrow \theta' - \alpha\,\nabla_{\theta'} L_S(\theta') \quad (k \text{ times}).

The fine-tuning steps are :func:`metaadv_edu.robust_meta.adapt_tasks`; this module builds the network they
start from.
"""

from __future__ import annotations

import copy

from torch import nn

from metaadv_edu import _validate as v

__all__ = ["with_new_head"]


def with_new_head(model: nn.Sequential, n_way: int) -> nn.Sequential:
    """A copy of ``model`` whose last linear layer is replaced by a zero-initialised one with ``n_way``
    outputs: a pretrained body ready to be fine-tuned on the support set of an N-way task.

    With a zero head every class has the same logit, so the first fine-tuning step moves the head only
    (the body's gradient passes through the zero weights); from the second step on the body moves too.

    Parameters
    ----------
    model : nn.Sequential
        The pretrained classifier; its last module must be an ``nn.Linear``. It is not modified.
    n_way : int
        Number of classes of the new head, at least 2.
    """
    n_way = v.integer("n_way", n_way, low=2)
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise TypeError("with_new_head needs an nn.Sequential that ends with an nn.Linear layer")
    new = copy.deepcopy(model)
    old = new[-1]
    head = nn.Linear(old.in_features, n_way).to(device=old.weight.device, dtype=old.weight.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    new[-1] = head
    return new
