"""The course layer: one module per notebook, named after it.

``notebooks/05_maml.ipynb`` uses :mod:`metaadv_edu.maml` (the method) and
:mod:`metaadv_edu.chapters.maml` (its cached models, its explorer and its exercise graders).
"""
