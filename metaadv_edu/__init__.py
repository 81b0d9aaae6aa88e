"""metaadv-edu: adversarial examples, GANs and meta-learning, derived and checked in notebooks.

The notebooks in ``notebooks/`` are the course; this package holds every piece of reusable code they
run, so that the same function is read, tested and used in one place. It has three layers.

**Library** — one method or one kind of data per module, its equation in the docstring; it imports
nothing from the layers below it in this list:

=================  ===========================================================  ==============
module             holds                                                        derived in
=================  ===========================================================  ==============
``attacks``        FGSM, PGD, robustness curves                                 01
``defenses``       standard, FGSM (mixed loss) and PGD adversarial training     02
``gan``            value function, D*, JSD, GAN training; the ε·tanh generator  03, 04
``maml``           MAML on ``torch.func`` (vmap over tasks), its loop reference 05
``reptile``        batched Reptile and its Taylor-analysis terms                06
``metasgd``        Meta-SGD with elementwise learnable α                        07
``meta_checks``    the derivation checks of MAML, Reptile and Meta-SGD           05, 06, 07
``robust_meta``    adversarial querying, task-wise attacks, its exact check     08
``detection``      few-shot "clean or perturbed?" tasks                         08
``certify``        linear radius, interval bounds, randomized smoothing         11
``masking``        input quantisation, BPDA, gradient-free random search        11
``data``, ``covers``, ``models``, ``functional``, ``training``, ``device``       shared
=================  ===========================================================  ==============

**Course** — what a notebook needs beyond its method. ``chapters/<notebook>.py`` holds one
notebook's cached-model recipes, explorer and ``check_*`` exercise graders, named after the notebook
(``notebooks/05_maml.ipynb`` ↔ :mod:`metaadv_edu.chapters.maml` beside :mod:`metaadv_edu.maml`).
Shared course machinery: ``widgets`` (the :class:`~metaadv_edu.widgets.Explorer`), ``cache``
(load-or-train), ``plotting``, ``panels`` (the attack explorers' rows), ``display`` (source listings,
✓ verdicts), ``grading`` (what every grader shares), ``measure`` (timing and graph memory).
Course modules import the library and earlier chapters; the library never imports them.

**Tooling** — ``cli`` (the ``metaadv-edu`` command) and ``notebooks`` (jupytext pairing with
``notebooks/src/*.md``, execution, learner's copies, grading). Nothing in the library or the course
imports it.

Tests mirror this: ``tests/test_<module>.py`` for the library (the derivation checks live there),
``tests/chapters/test_<notebook>.py`` for each chapter's graders and explorer.
"""

from metaadv_edu.device import float64_device, pick_device, seed_everything

__all__ = ["__version__", "float64_device", "pick_device", "seed_everything"]
__version__ = "0.1.0"
