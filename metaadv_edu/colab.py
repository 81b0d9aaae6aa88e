"""Google Colab: the first code cell of every notebook and the "Open in Colab" badge.

Colab opens a notebook straight from GitHub into a machine that has PyTorch (a CUDA build), NumPy,
matplotlib, scikit-learn and ipywidgets already, but not this course's package. The first code
cell of each notebook, :data:`COLAB_CELL`, installs the package there from the repository, with
the loose lower bounds of ``pyproject.toml`` rather than the exact pins of ``binder/``: pip then
keeps Colab's own torch and widgets, so nothing needs a restart. Anywhere else the cell does
nothing. With a GPU runtime (Runtime → Change runtime type), ``pick_device()`` then chooses CUDA
with no change to the notebook.
"""

from __future__ import annotations

import re

__all__ = ["COLAB_CELL", "INSTALL_REQUIREMENT", "REPOSITORY", "colab_badge", "colab_url"]

#: The repository on GitHub that Colab opens the notebooks from and installs the package from.
REPOSITORY = "metaadv-edu/metaadv-edu"

#: What pip installs on Colab: the package from the repository's default branch, with the
#: dependencies declared in pyproject.toml (lower bounds only).
INSTALL_REQUIREMENT = f"metaadv-edu @ git+https://github.com/{REPOSITORY}"

#: The first code cell of every course notebook. Plain Python (no IPython magics), so that a test
#: can run it with ``exec``; it does nothing outside Colab.
COLAB_CELL = f'''\
import sys

if "google.colab" in sys.modules:  # on Colab only: install this course's package from GitHub
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "{INSTALL_REQUIREMENT}"], check=True)
    print("installed metaadv-edu from GitHub")'''

_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")


def _notebook_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str such as '05_maml', got {type(name).__name__}")
    stem = name.removesuffix(".ipynb")
    if not _NAME.match(stem):
        raise ValueError(f"name={name!r} is not a course notebook name; use one like '05_maml' or '05_maml.ipynb'")
    return stem


def colab_url(name: str, branch: str = "main") -> str:
    """The address that opens ``notebooks/NAME.ipynb`` of the repository in Colab."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/{branch}/notebooks/{_notebook_name(name)}.ipynb"


def colab_badge(name: str) -> str:
    """Markdown for the "Open in Colab" badge of a course notebook, e.g. ``colab_badge("05_maml")``."""
    return f"[![Open in Colab]({_BADGE_IMAGE})]({colab_url(name)})"
