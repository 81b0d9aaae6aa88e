"""Executing the course's notebooks, keeping them paired with their text twins, and telling whether
their stored outputs are current.

Each ``notebooks/NAME.ipynb`` (stored executed, with outputs) is paired by jupytext with
``notebooks/src/NAME.md`` (MyST Markdown: the reviewable source). Edit either side; :func:`sync_pair`
(``metaadv-edu execute`` calls it first) or ``jupytext --sync`` makes them equal again.

``metaadv-edu execute`` re-runs every notebook in place, in order, and records in each notebook's
metadata a digest of its code and of what its outputs depend on: the package modules it imported, the
functions it displayed and the shipped weight files it loaded (:mod:`metaadv_edu.dependencies`).
``metaadv-edu execute --check`` compares those digests with the current files: a notebook is stale when
its code or one of those dependencies changed after it was last executed, or when a code cell has no
stored output. A change to a module the notebook never imported, or to a docstring or comment it does not
display, leaves it current.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import nbformat

from metaadv_edu import dependencies

__all__ = [
    "clear_solution",
    "course_points",
    "execute_notebook",
    "find_notebooks",
    "nbgrader_source",
    "notebook_text",
    "pair_difference",
    "recorded_weights",
    "source_digest",
    "source_path",
    "stale_reason",
    "student_copy",
    "student_notebook",
    "sync_pair",
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


def stale_reason(path: str | Path, *, package_dir: Path | None = None) -> str | None:
    """Why the stored outputs of a notebook are stale, or None when they are current."""
    nb = nbformat.read(str(path), as_version=4)
    meta = nb.metadata.get(META_KEY, {})
    if not meta:
        return "never executed by `metaadv-edu execute`"
    if any(c.get("execution_count") is None for c in _code_cells(nb)):
        return "some code cells have no stored output"
    if meta.get("source_digest") != source_digest(nb):
        return "its code changed after it was executed"
    if "dependencies" not in meta:
        return "executed by an older version of `metaadv-edu execute` (no record of its dependencies)"
    reasons = dependencies.changed(meta["dependencies"], package_dir)
    return "; ".join(reasons) if reasons else None


def recorded_weights(path: str | Path) -> list[str]:
    """The model files a notebook loaded or trained when it was last executed (from its metadata)."""
    nb = nbformat.read(str(path), as_version=4)
    return sorted(nb.metadata.get(META_KEY, {}).get("dependencies", {}).get("weights", {}))


def execute_notebook(path: str | Path, *, timeout: int = 900, kernel_name: str = "python3") -> float:
    """Execute a notebook in place (working directory: its folder); return the seconds it took.

    After the last cell the kernel reports which package modules, shown functions and model files the run
    used; their digests go into the notebook's metadata (see :func:`stale_reason`).
    """
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    report_cell = nbformat.v4.new_code_cell(dependencies.report_code())
    nb.cells.append(report_cell)
    start = time.perf_counter()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    finally:
        nb.cells.remove(report_cell)
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in report_cell.outputs if o.get("output_type") == "stream")
    line = next(x for x in text.splitlines() if x.startswith(dependencies.REPORT_MARK))
    report = json.loads(line.removeprefix(dependencies.REPORT_MARK))
    nb.metadata[META_KEY] = {"source_digest": source_digest(nb), "dependencies": dependencies.record(report)}
    nbformat.write(nb, str(path))
    return seconds


SOLUTION_TAG = "solution"
ANSWER_TAG = "answer"  # the folded answer of a "check your understanding" question: left out of handouts
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"  # nbgrader's ClearSolutions.code_stub for Python


def _is_solution(cell) -> bool:
    return cell.cell_type == "code" and SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def clear_solution(source: str) -> str:
    """``source`` with each ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region replaced by nbgrader's
    code stub, indented like the BEGIN line (what nbgrader's ``ClearSolutions`` does)."""
    lines, inside = [], False
    for line in source.split("\n"):
        if BEGIN_SOLUTION in line:
            if inside:
                raise ValueError(f"source: nested {BEGIN_SOLUTION!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(indent + stub for stub in CODE_STUB.splitlines())
        elif END_SOLUTION in line:
            if not inside:
                raise ValueError(f"source: {END_SOLUTION!r} without {BEGIN_SOLUTION!r}")
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise ValueError(f"source: {BEGIN_SOLUTION!r} without {END_SOLUTION!r}")
    return "\n".join(lines)


def _clear_outputs(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)


def nbgrader_source(nb, name: str = "notebook"):
    """The notebook as an nbgrader *source* notebook (for ``source/<assignment>/`` of an nbgrader course).

    Each exercise in the course is a stub cell followed by a hidden solution cell (tag ``solution``) whose
    solution code sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the stub is exactly the
    solution cell with that region cleared. nbgrader keeps a solution cell and clears its region, so the
    stub cell would be a duplicate that the cleared solution cell overrides: here it is dropped, the
    solution cell is shown, and it gets the cell metadata ``generate_assignment`` requires
    (``solution: true`` and a ``grade_id``). Outputs are cleared. Returns ``(notebook, solution cells)``.
    """
    cells, count = [], 0
    for cell in nb.cells:
        if _is_solution(cell):
            if BEGIN_SOLUTION not in cell.source:
                raise ValueError(f"{name}: a solution cell has no {BEGIN_SOLUTION!r} marker:\n{cell.source[:200]}")
            stub = clear_solution(cell.source)
            if cells and cells[-1].cell_type == "code" and cells[-1].source.strip() == stub.strip():
                cells.pop()
            shown = cell.metadata.get("jupyter", {})
            shown.pop("source_hidden", None)
            if not shown:
                cell.metadata.pop("jupyter", None)
            count += 1
            cell.metadata["nbgrader"] = {
                "grade": False,
                "grade_id": f"{name}-solution-{count}",
                "locked": False,
                "schema_version": 3,
                "solution": True,
                "task": False,
            }
        _clear_outputs(cell)
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop(META_KEY, None)
    return nb, count


def student_notebook(path: str | Path, *, keep_solutions: bool = False):
    """A learner's copy of a course notebook: the notebook nbgrader's ``generate_assignment`` releases
    from :func:`nbgrader_source` — each exercise's solution cell shown with its marked region replaced
    by ``raise NotImplementedError()`` (taking the place of the stub cell it equals), the answers of the
    "check your understanding" questions (cells tagged ``answer``) left out, outputs cleared, nbgrader's
    cell metadata left out. With ``keep_solutions`` the nbgrader source notebook itself, with
    one locked, hidden autograder test cell after each solution cell
    (:func:`metaadv_edu.autograde.nbgrader_test_cells`). Either carries the course's name and version
    in its metadata (:func:`metaadv_edu.autograde.handout_metadata`).

    Returns ``(notebook, number of solutions)``.
    """
    from metaadv_edu import autograde

    path = Path(path)
    course = nbformat.read(str(path), as_version=4)
    exercises = autograde.course_exercises(course, path.stem) if keep_solutions else []
    nb, count = nbgrader_source(course, path.stem)
    if keep_solutions:
        tests = autograde.nbgrader_test_cells(exercises)
        nb.cells = [c for cell in nb.cells for c in ([cell, tests[cell.id]] if cell.get("id") in tests else [cell])]
    else:
        nb.cells = [c for c in nb.cells if ANSWER_TAG not in c.get("metadata", {}).get("tags", [])]
        for cell in nb.cells:
            if _is_solution(cell):
                cell.source = clear_solution(cell.source)
                cell.metadata.pop("nbgrader", None)
    nb.metadata[autograde.HANDOUT_KEY] = autograde.handout_metadata(nb, path.stem)
    return nb, count


def notebook_text(nb) -> str:
    """The text :func:`nbformat.write` writes for ``nb``."""
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def student_copy(path: str | Path, out_dir: str | Path, *, keep_solutions: bool = False) -> tuple[Path, int]:
    """Write :func:`student_notebook` of ``path`` into ``out_dir``; return the new path and the number of
    solutions."""
    path, out_dir = Path(path), Path(out_dir)
    nb, count = student_notebook(path, keep_solutions=keep_solutions)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    target.write_text(notebook_text(nb), encoding="utf-8")
    return target, count


# ------------------------------------------------------------------------- gradebook
def course_points(notebook: str) -> dict[str, float]:
    """The points of each exercise of a course notebook (``01_fgsm.ipynb`` → ``chapters.fgsm.POINTS``),
    in the order the notebook asks them; empty for a notebook that is not part of the course."""
    import importlib

    stem = Path(notebook).stem
    if not re.fullmatch(r"\d\d_\w+", stem):
        return {}
    try:
        module = importlib.import_module(f"metaadv_edu.chapters.{stem[3:]}")
    except ModuleNotFoundError:
        return {}
    return dict(getattr(module, "POINTS", {}))


# ------------------------------------------------------------------------- notebook sources
SOURCE_FORMAT = "md:myst"


def source_path(path: str | Path) -> Path:
    """The MyST Markdown twin of a course notebook: ``notebooks/NAME.ipynb`` ↔ ``notebooks/src/NAME.md``
    (the pairing is configured in the repository's ``jupytext.toml``)."""
    path = Path(path)
    return path.parent / "src" / f"{path.stem}.md"


def _source_text(nb, path: Path) -> str:
    import jupytext
    from jupytext.config import load_jupytext_config

    return jupytext.writes(nb, fmt=SOURCE_FORMAT, config=load_jupytext_config(str(path.resolve())))


def pair_difference(path: str | Path) -> str | None:
    """Why a notebook and its text twin disagree, or None when the twin is exactly what jupytext
    writes from the notebook (same cells, sources, tags and cell metadata)."""
    path = Path(path)
    twin = source_path(path)
    if not twin.exists():
        return f"{twin} is missing"
    expected = _source_text(nbformat.read(str(path), as_version=4), path)
    actual = twin.read_text(encoding="utf-8")
    if expected == actual:
        return None
    for n, (a, b) in enumerate(zip(expected.splitlines(), actual.splitlines()), start=1):
        if a != b:
            return f"{twin.name} line {n} differs from the notebook: {b!r} vs {a!r}"
    return f"{twin.name} and the notebook differ in length"


def sync_pair(path: str | Path) -> str:
    """Bring a notebook and its text twin to the same cells, the more recently edited side winning.

    Returns ``"text"`` when the notebook's inputs were taken from the text file (outputs kept where the
    code is unchanged), ``"notebook"`` when the text file was rewritten from the notebook, or
    ``"unchanged"``.
    """
    import jupytext

    path = Path(path)
    twin = source_path(path)
    if not twin.exists() or pair_difference(path) is None:
        if not twin.exists():
            twin.parent.mkdir(parents=True, exist_ok=True)
            twin.write_text(_source_text(nbformat.read(str(path), as_version=4), path), encoding="utf-8")
            return "notebook"
        return "unchanged"
    if twin.stat().st_mtime >= path.stat().st_mtime:
        text_nb = jupytext.read(str(twin))
        nb = nbformat.read(str(path), as_version=4)
        merged = jupytext.combine.combine_inputs_with_outputs(text_nb, nb, fmt=SOURCE_FORMAT)
        for key in ("metaadv_edu", "widgets", "language_info"):
            if key in nb.metadata:
                merged.metadata[key] = nb.metadata[key]
        merged.metadata.pop("jupytext", None)
        nbformat.write(merged, str(path))
        if pair_difference(path) is not None:  # normalise the text side to jupytext's own rendering
            twin.write_text(_source_text(merged, path), encoding="utf-8")
        return "text"
    twin.write_text(_source_text(nbformat.read(str(path), as_version=4), path), encoding="utf-8")
    return "notebook"
