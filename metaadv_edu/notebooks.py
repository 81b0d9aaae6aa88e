"""Executing the course's notebooks and telling whether their stored outputs are current.

``metaadv-edu execute`` re-runs every notebook in place, in order, and records in each notebook's
metadata a digest of its code and of this package's source. ``metaadv-edu execute --check`` compares
those digests with the current files: a notebook is stale when its code, or the package it imports,
changed after it was last executed, or when a code cell has no stored output.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import nbformat

__all__ = [
    "build_notebook",
    "execute_notebook",
    "find_notebooks",
    "grade_notebook",
    "package_digest",
    "parse_cells",
    "source_digest",
    "stale_reason",
    "student_copy",
]

PACKAGE_DIR = Path(__file__).resolve().parent
META_KEY = "metaadv_edu"


def find_notebooks(root: str | Path) -> list[Path]:
    """The course notebooks (``NN_*.ipynb``) under ``root`` in course order."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ValueError(f"notebook folder {root} does not exist")
    return sorted(p for p in root.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def source_digest(nb) -> str:
    h = hashlib.sha256()
    for cell in _code_cells(nb):
        h.update(cell.source.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def package_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def stale_reason(path: str | Path) -> str | None:
    """Why the stored outputs of a notebook are stale, or None when they are current."""
    nb = nbformat.read(str(path), as_version=4)
    meta = nb.metadata.get(META_KEY, {})
    if not meta:
        return "never executed by `metaadv-edu execute`"
    if any(c.get("execution_count") is None for c in _code_cells(nb)):
        return "some code cells have no stored output"
    if meta.get("source_digest") != source_digest(nb):
        return "its code changed after it was executed"
    if meta.get("package_digest") != package_digest():
        return "the metaadv_edu package changed after it was executed"
    return None


def execute_notebook(path: str | Path, *, timeout: int = 900, kernel_name: str = "python3") -> float:
    """Execute a notebook in place (working directory: its folder); return the seconds it took."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    seconds = time.perf_counter() - start
    nb.metadata[META_KEY] = {"source_digest": source_digest(nb), "package_digest": package_digest()}
    nbformat.write(nb, str(path))
    return seconds


VERDICT = re.compile(r"^([✓✗]) (.+?): ", re.MULTILINE)


def grade_notebook(path: str | Path, *, execute: bool = True, timeout: int = 600) -> tuple[dict[str, bool], int]:
    """The exercise graders' verdicts in a learner's notebook, ``{exercise: passed}``, and the number of
    cells that raised an error.

    With ``execute`` the notebook is first run in a fresh kernel (errors in the learner's cells do not
    stop it; the file is not modified); otherwise the stored outputs are read. The last verdict printed
    for an exercise counts.
    """
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    if execute:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    verdicts: dict[str, bool] = {}
    errors = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            errors += output.get("output_type") == "error"
            if output.get("output_type") == "stream":
                for mark, name in VERDICT.findall(output.get("text", "")):
                    verdicts[name] = mark == "✓"
    return verdicts, errors


SOLUTION_TAG = "solution"


def student_copy(path: str | Path, out_dir: str | Path) -> tuple[Path, int]:
    """Write a learner's copy of a notebook: cells tagged ``solution`` removed, outputs cleared.

    Returns the new path and the number of solution cells removed.
    """
    path, out_dir = Path(path), Path(out_dir)
    nb = nbformat.read(str(path), as_version=4)
    kept = [c for c in nb.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    removed = len(nb.cells) - len(kept)
    for cell in kept:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.cells = kept
    nb.metadata.pop(META_KEY, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    nbformat.write(nb, str(target))
    return target, removed


# ------------------------------------------------------------------------- notebook sources
def parse_cells(text: str) -> list:
    """Cells from the plain-text source format of ``notebooks/src/*.cells``.

    A line ``%% md`` starts a Markdown cell, ``%% code`` a code cell; ``%% code tags=a,b`` adds cell
    tags. Cells tagged ``solution`` are collapsed (their source hidden) in the built notebook.
    """
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        source = "\n".join(lines).strip("\n")
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "md"
                else nbformat.v4.new_code_cell(source))
        if tags:
            cell.metadata["tags"] = tags
        if SOLUTION_TAG in tags:
            cell.metadata["jupyter"] = {"source_hidden": True}
        cells.append(cell)

    for line in text.splitlines():
        if line.startswith("%% "):
            flush()
            parts = line[3:].split()
            kind, lines = parts[0], []
            tags = next((p[5:].split(",") for p in parts[1:] if p.startswith("tags=")), [])
            if kind not in ("md", "code"):
                raise ValueError(f"unknown cell kind in {line!r}: use '%% md' or '%% code'")
        else:
            lines.append(line)
    flush()
    return cells


def build_notebook(source: str | Path, target_dir: str | Path) -> Path:
    """Write ``target_dir/NAME.ipynb`` (no outputs) from ``source`` = ``.../NAME.cells``."""
    source = Path(source)
    nb = nbformat.v4.new_notebook()
    nb.cells = parse_cells(source.read_text(encoding="utf-8"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    out = Path(target_dir) / f"{source.stem}.ipynb"
    nbformat.write(nb, str(out))
    return out
