"""The course's exercises as a grading tool sees them, and what runs inside a learner's kernel.

:func:`course_exercises` finds a course notebook's exercises from its solution cells (each ends with a
``check_*`` grader call) and the chapter's ``POINTS``; :func:`report_grade` is what the grading cells of
:mod:`metaadv_edu.submissions` run in the kernel: the chapter module imported afresh from the installed
package, its grader called on the learner's function in a fresh namespace, the verdict sent as a display
message tagged with a secret made for that run (printed text cannot reach that channel).
:func:`nbgrader_test_cells` are the same check as nbgrader hidden test cells (:func:`nbgrader_check`).

What remains trusted: a solution cell's code runs with the rights of the user who grades, in the same
process as the grader, so it can read files and, with enough effort, tamper with the grader while it
runs. Grade in a container or as a separate user without access to anything else.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import nbformat

from metaadv_edu import __version__
from metaadv_edu.notebooks import SOLUTION_TAG

__all__ = [
    "COURSE",
    "FRESH_IMPORT",
    "HANDOUT_KEY",
    "RESULT_MIME",
    "Exercise",
    "course_exercises",
    "handout_metadata",
    "nbgrader_check",
    "nbgrader_test_cells",
    "report_grade",
    "run_grader",
    "strip_grader_calls",
]

COURSE = "metaadv-edu"
HANDOUT_KEY = "metaadv_edu_handout"
RESULT_MIME = "application/vnd.metaadv-edu.grade+json"
FRESH_IMPORT = (
    "import importlib, sys\n"
    "for _name in [m for m in sys.modules if m == 'metaadv_edu' or m.startswith('metaadv_edu.')]:\n"
    "    del sys.modules[_name]\n"
)


@dataclass(frozen=True)
class Exercise:
    """One graded exercise of a course notebook: its solution cell and the grader call it ends with."""

    name: str
    points: float
    cell_id: str
    grade_id: str
    module: str
    grader: str
    arguments: tuple[str, ...]


# ------------------------------------------------------------------------- the course's exercises
def _grader_calls(source: str) -> list[ast.stmt]:
    """The top-level statements of ``source`` that call a ``check_*`` grader."""
    calls = []
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name.startswith("check_"):
                calls.append(stmt)
    return calls


def strip_grader_calls(source: str) -> str:
    """``source`` without its top-level ``check_*(...)`` calls; unchanged when it does not parse
    (it then fails in the kernel, with the learner's own syntax error)."""
    try:
        calls = _grader_calls(source)
    except SyntaxError:
        return source
    lines = source.split("\n")
    for stmt in reversed(calls):
        del lines[stmt.lineno - 1 : stmt.end_lineno]
    return "\n".join(lines).rstrip() + "\n"


def _aliases(nb) -> dict[str, str]:
    """Names bound by the notebook's imports of chapter modules or their graders → dotted origin."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metaadv_edu"):
                for alias in node.names:
                    found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name.startswith("metaadv_edu"):
                        found[alias.asname] = alias.name
    return found


def _exercise_name(function: Callable) -> str:
    names = re.findall(r'grading\.run\(\s*"([^"]+)"', inspect.getsource(function))
    if len(names) != 1:
        raise ValueError(f'{function.__qualname__}: expected one grading.run("name", …) call, found {names}')
    return names[0]


def course_exercises(nb, stem: str) -> list[Exercise]:
    """The graded exercises of the course notebook ``nb`` (named ``stem``), in the order it asks them.

    Each solution cell (tag ``solution``) must end with a call of a ``check_*`` grader of a chapter
    module; the exercise's name is the one that grader reports, its points come from the module's
    ``POINTS``. The ``grade_id`` is the one :func:`metaadv_edu.notebooks.nbgrader_source` gives it.
    """
    import importlib

    aliases, exercises = _aliases(nb), []
    solutions = [c for c in nb.cells if c.cell_type == "code" and SOLUTION_TAG in c.metadata.get("tags", [])]
    for count, cell in enumerate(solutions, start=1):
        calls = _grader_calls(cell.source)
        if not calls:
            raise ValueError(f"{stem}: solution cell {cell.get('id')} calls no check_* grader")
        call = calls[-1].value
        func = call.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            module_name, grader = aliases.get(func.value.id, ""), func.attr
        elif isinstance(func, ast.Name):
            module_name, grader = aliases.get(func.id, "").rpartition(".")[0], func.id
        else:
            module_name, grader = "", ""
        if not module_name.startswith("metaadv_edu.chapters."):
            raise ValueError(f"{stem}: cannot tell which chapter module's {grader or 'grader'} cell {cell.id} calls")
        module = importlib.import_module(module_name)
        name = _exercise_name(getattr(module, grader))
        points = getattr(module, "POINTS", {})
        if name not in points:
            raise ValueError(f"{stem}: exercise {name!r} has no points in {module_name}.POINTS")
        exercises.append(
            Exercise(
                name=name,
                points=float(points[name]),
                cell_id=cell.get("id", ""),
                grade_id=f"{stem}-solution-{count}",
                module=module_name,
                grader=grader,
                arguments=tuple(ast.get_source_segment(cell.source, a) for a in call.args),
            )
        )
    return exercises


def handout_metadata(nb, stem: str) -> dict:
    """What a handout carries about where it comes from: the course, its version, the notebook and a
    digest of the teacher's cells."""
    h = hashlib.sha256()
    for cell in nb.cells:  # the teacher's cells: neither solutions nor nbgrader's test cells
        if SOLUTION_TAG not in cell.metadata.get("tags", []) and not cell.metadata.get("nbgrader", {}).get("grade"):
            h.update(f"{cell.cell_type}\0{cell.source}\0".encode())
    return {"course": COURSE, "version": __version__, "notebook": stem, "digest": h.hexdigest()[:16]}


def nbgrader_test_cells(exercises: list[Exercise]) -> dict[str, nbformat.NotebookNode]:
    """One locked, hidden nbgrader test cell per exercise, keyed by its solution cell's id: it runs the
    course's grader, freshly imported, and fails (with the grader's hint) when the grader does."""
    cells = {}
    for ex in exercises:
        grade_id = ex.grade_id.replace("-solution-", "-test-")
        source = (
            "### BEGIN HIDDEN TESTS\n"
            + FRESH_IMPORT
            + f"importlib.import_module('metaadv_edu.autograde').nbgrader_check(\n"
            f"    {ex.module!r}, {ex.grader!r}, {ex.name!r}, {', '.join(ex.arguments)}\n)\n"
            "### END HIDDEN TESTS"
        )
        meta = {
            "grade": True,
            "grade_id": grade_id,
            "locked": True,
            "points": ex.points,
            "schema_version": 3,
            "solution": False,
            "task": False,
        }
        cell = nbformat.v4.new_code_cell(source, metadata={"nbgrader": meta})
        cell.id = grade_id
        cells[ex.cell_id] = cell
    return cells


# ------------------------------------------------------------------------- inside the kernel
def run_grader(module_name: str, grader: str, exercise: str, arguments: Callable[[], list]) -> tuple[bool, str]:
    """Call ``module_name.grader(*arguments())`` with its output swallowed; return (passed, the grader's
    verdict message). Passed only when the grader returns True *and* reports a ✓ for ``exercise``."""
    import contextlib
    import importlib

    class Sink:
        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    reports: list[tuple[str, bool, str]] = []
    grading = importlib.import_module("metaadv_edu.grading")
    check = getattr(importlib.import_module(module_name), grader)
    try:
        args = arguments()
    except NameError as exc:
        return False, f"{exc}: the exercise's cell did not define it"
    report = grading.report
    grading.report = lambda name, ok, message: reports.append((name, bool(ok), str(message))) or bool(ok)
    try:
        with contextlib.redirect_stdout(Sink()), contextlib.redirect_stderr(Sink()):
            returned = check(*args)
    except Exception as exc:  # a grader never raises for a learner's mistake; say what happened
        return False, f"the grader stopped: {type(exc).__name__}: {exc}"
    finally:
        grading.report = report
    if not reports:
        return False, "the grader gave no verdict"
    name, ok, message = reports[-1]
    return returned is True and ok and name == exercise, message[:300]


def report_grade(token: str, module_name: str, grader: str, exercise: str, arguments: list[str]) -> None:
    """Run in the kernel by a grading cell: grade ``exercise`` on the learner's objects named by the
    ``arguments`` expressions and send the verdict as a display message tagged with ``token``."""
    from IPython import get_ipython
    from IPython.display import display

    namespace = get_ipython().user_ns
    passed, message = run_grader(module_name, grader, exercise, lambda: [eval(a, namespace) for a in arguments])
    payload = {"token": token, "exercise": exercise, "passed": passed, "message": message}
    display({RESULT_MIME: payload}, raw=True)


def nbgrader_check(module_name: str, grader: str, exercise: str, *args) -> None:
    """An nbgrader hidden test: print the course grader's verdict; raise AssertionError when it fails."""
    passed, message = run_grader(module_name, grader, exercise, lambda: list(args))
    print(f"{'✓' if passed else '✗'} {exercise}: {message}")
    if not passed:
        raise AssertionError(f"{exercise}: {message}")
