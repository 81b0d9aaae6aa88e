"""Small helpers for the notebooks: show a function's source, print verdicts, show tables."""

from __future__ import annotations

import html
import inspect
import textwrap
from collections.abc import Sequence

__all__ = ["SHOWN", "show_source", "table", "table_html", "tick"]

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
    """A table of results: shown as an HTML table in a notebook, printed as aligned text elsewhere.

    Returns the aligned plain text (also the notebook output's ``text/plain``, which nbval and the README's
    number check read). In a notebook the HTML version is what Jupyter and the course site display, so a
    phone can scroll a wide table inside its own box instead of the whole page.
    """

    def fmt(value):
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    cells = [[fmt(c) for c in row] for row in rows]
    for i, row in enumerate(cells):
        if len(row) != len(headers):
            raise ValueError(f"rows[{i}] has {len(row)} cells; headers has {len(headers)}: they must match")
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    text = "\n".join(lines)
    shell = _notebook_shell()
    if shell is None:
        print(text)
    else:
        from IPython.display import display

        display({"text/plain": text, "text/html": table_html(cells, headers)}, raw=True)
    return text


def table_html(cells: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    """The HTML of :func:`table`: a header row, then one row per result, wrapped in a box that scrolls sideways."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="text-align:right">{html.escape(c)}</td>' for c in row) + "</tr>" for row in cells
    )
    return (
        '<div class="metaadv-table" style="overflow-x:auto;max-width:100%">'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _notebook_shell():
    """The running IPython kernel's shell, or None outside a notebook (scripts, tests, the command line)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None
