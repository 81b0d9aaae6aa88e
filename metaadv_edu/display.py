"""Small helpers for the notebooks: show a function's source, print verdicts, print tables."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Sequence

__all__ = ["SHOWN", "show_source", "table", "tick"]

#: ``"module:qualname"`` of every function shown by :func:`show_source` in this process (a notebook's
#: outputs print their text: read by ``metaadv-edu execute``, see :mod:`metaadv_edu.dependencies`).
SHOWN: set[str] = set()


def tick(ok: bool) -> str:
    """✓ when a check holds, ✗ when it does not."""
    return "✓" if ok else "✗"


def show_source(obj, *, docstring: bool = True) -> None:
    """Display the source of a package function as a code listing (a notebook's "equation in code")."""
    from IPython.display import Markdown, display

    source = textwrap.dedent(inspect.getsource(obj))
    if not docstring and obj.__doc__:
        start = source.find('"""') if '"""' in source else source.find("'''")
        quote = source[start : start + 3]
        end = source.find(quote, start + 3) + 3
        prefix = source[:start]
        if prefix.rstrip().endswith("r"):
            prefix = prefix.rstrip()[:-1]
        source = prefix.rstrip() + "\n    ..." + source[end:]
    module = obj.__module__
    SHOWN.add(f"{module}:{obj.__qualname__}")
    display(Markdown(f"`{module}.{obj.__qualname__}`\n```python\n{source.rstrip()}\n```"))


def table(rows: Sequence[Sequence], headers: Sequence[str], *, floatfmt: str = ".3f") -> str:
    """A plain-text table (returned and printed), aligned for a monospace font."""

    def fmt(value):
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    print(text)
    return text
