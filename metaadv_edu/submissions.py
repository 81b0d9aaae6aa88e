"""Grading learners' submissions with the course's own graders, from code the learners never see.

A submission is never trusted for anything but its solution cells. :func:`grade_submission` takes from
it only the learner's solution cells (found by cell id, or by nbgrader's ``grade_id``), puts them into the
course's own handout of that notebook (so edited, deleted or added cells of the teacher's are ignored,
and reported), runs that notebook in a fresh kernel whose working directory is a temporary copy of the
submission's folder, and after each solution cell runs a grading cell the learner never saw
(:func:`metaadv_edu.autograde.report_grade`), whose verdict comes back through a display message tagged
with a secret made for this run. Each cell has a time limit and so has the whole notebook; a cell that
runs past its limit is interrupted (the kernel restarted and replayed if it does not stop), and the
other exercises are still graded.

:func:`grade_class` grades a folder of submissions, ``jobs`` kernels at a time (one process each), and turns every file,
readable or not, into gradebook rows (:data:`CSV_FIELDS`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from metaadv_edu.autograde import (
    COURSE,
    FRESH_IMPORT,
    HANDOUT_KEY,
    RESULT_MIME,
    Exercise,
    course_exercises,
    strip_grader_calls,
)

__all__ = ["CSV_FIELDS", "NotGradable", "grade_class", "grade_submission", "write_csv"]

CSV_FIELDS = ("learner", "notebook", "exercise", "passed", "points", "max_points", "result", "note")
#: Characters of output kept per cell; the rest is dropped (a learner's cell may print without end).
OUTPUT_LIMIT = 100_000
#: Seconds a kernel gets to answer after it was interrupted, before it is restarted.
INTERRUPT_GRACE = 10
#: Seconds beyond ``notebook_timeout`` per notebook after which a silent grading worker is given up on.
STUCK_GRACE = 300
#: Seconds a restarted kernel gets to answer a new client before the submission is given up on.
RESTART_LIMIT = 90


NO_EXERCISES = "none of the notebook's exercise cells found (not a copy of the course's handout?)"


class NotGradable(ValueError):
    """A submission that cannot be graded at all (the message says why)."""


# ------------------------------------------------------------------------- running a submission
def _client_class():
    from nbclient import NotebookClient

    class Client(NotebookClient):
        """Keeps at most OUTPUT_LIMIT characters of output per cell and takes the grading messages
        tagged with this run's token out of the outputs."""

        def __init__(self, nb, token: str, **kwargs):
            super().__init__(nb, **kwargs)
            self.token, self.results, self.sizes = token, {}, {}

        def output(self, outs, msg, display_id, cell_index):
            content = msg.get("content", {})
            data = content.get("data", {}) if msg["msg_type"] in ("display_data", "execute_result") else {}
            if RESULT_MIME in data:
                payload = data[RESULT_MIME]
                if isinstance(payload, dict) and payload.get("token") == self.token:
                    self.results.setdefault(cell_index, []).append(payload)
                return None
            used = self.sizes.get(cell_index, 0)
            size = len(content.get("text", "")) + len(json.dumps(data)) + len(str(content.get("traceback", "")))
            self.sizes[cell_index] = used + size
            if used > OUTPUT_LIMIT:
                return None
            if used + size > OUTPUT_LIMIT:
                note = f"[output beyond {OUTPUT_LIMIT} characters dropped]\n"
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return Client


def _run(nb, token: str, cwd: Path, timeout: int, notebook_timeout: int, grading_cells: set[int]):
    """Execute the code cells of ``nb`` under the time limits; return (status per cell index, results)."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync

    client = _client_class()(
        nb, token, timeout=timeout, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(cwd)}}
    )
    deadline = time.monotonic() + notebook_timeout
    status: dict[int, str] = {}
    done: list[int] = []

    def execute(cell, index: int, limit: float) -> None:
        client.timeout = max(1, int(min(limit, deadline - time.monotonic())))
        client.execute_cell(cell, index, store_history=index not in grading_cells)

    async def fresh_client() -> None:
        await asyncio.wait_for(client.async_start_new_kernel_client(), timeout=RESTART_LIMIT)

    def revive(interrupt: bool = True) -> None:
        """Interrupt the kernel; restart it and replay the cells run so far when it does not answer."""
        if interrupt:
            run_sync(client.km.interrupt_kernel)()
            try:
                execute(nbformat.v4.new_code_cell("pass"), -1, INTERRUPT_GRACE)
                return
            except (CellTimeoutError, DeadKernelError):
                pass
        run_sync(client.km.restart_kernel)(now=True)
        # a fresh client on the restarted kernel: the old client's sockets can wait forever on a reply
        # that the kernel it was talking to will never send (seen as a grading run that never ends)
        client.kc.stop_channels()
        run_sync(fresh_client)()
        for index in done:
            execute(copy.deepcopy(nb.cells[index]), index, timeout)

    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if deadline - time.monotonic() < 1:
                status[index] = "skipped"
                continue
            try:
                execute(cell, index, timeout)
            except CellTimeoutError:
                status[index] = "timed out"
                revive()
                continue
            except DeadKernelError:
                status[index] = "kernel died"
                revive(interrupt=False)
                continue
            errors = [o for o in cell.outputs if o.get("output_type") == "error"]
            status[index] = f"{errors[-1].ename}: {errors[-1].evalue}"[:200] if errors else "ok"
            if index not in grading_cells:
                done.append(index)
    return status, client.results


def _find(cells: list, ex: Exercise):
    for cell in cells:
        if cell.cell_type == "code" and cell.get("id") == ex.cell_id:
            return cell
    for cell in cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade_id") == ex.grade_id:
            return cell
    return None


def _changed_cells(handout, submitted, solution_ids: set[str]) -> list[str]:
    """How the teacher's cells of ``submitted`` differ from the handout's (by cell id)."""
    by_id = {c.get("id"): c for c in submitted.cells}
    edited, deleted = [], []
    for number, cell in enumerate(handout.cells, start=1):
        if cell.get("id") in solution_ids:
            continue
        mine = by_id.get(cell.get("id"))
        if mine is None:
            deleted.append(f"#{number}")
        elif mine.cell_type != cell.cell_type or mine.source != cell.source:
            edited.append(f"#{number}")
    known = {c.get("id") for c in handout.cells}
    grade_ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in submitted.cells} - {None}
    added = [c for c in submitted.cells if c.get("id") not in known and not grade_ids & {_grade_id(c)}]
    notes = []
    if edited:
        notes.append(f"edited cells {', '.join(edited)} (the course's were run)")
    if deleted:
        notes.append(f"deleted cells {', '.join(deleted)} (the course's were run)")
    if added:
        notes.append(f"{len(added)} added cell(s) not run")
    return notes


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _version_note(meta: dict, current: dict) -> str | None:
    if not meta:
        return "no handout metadata (not a copy made by `metaadv-edu student`)"
    if meta.get("version") != current["version"]:
        return f"handout of course version {meta.get('version')}; graded with version {current['version']}"
    if meta.get("digest") != current["digest"]:
        return "handout made from other notebook sources than the course's current ones"
    return None


def grade_submission(
    path: str | Path,
    course_notebook: str | Path,
    *,
    folder: str | Path | None = None,
    timeout: int = 120,
    notebook_timeout: int = 900,
) -> tuple[list[tuple[str, bool, str]], list[str]]:
    """Grade one learner's notebook against the course notebook of the same name.

    The kernel's working directory is a temporary copy of ``folder`` (the learner's folder; None: a
    folder holding only the notebook). ``timeout`` limits each cell, ``notebook_timeout`` the whole run.

    Returns ``(outcomes, notes)``: ``outcomes`` is a list of ``(exercise, passed, result)`` for every
    exercise of the course notebook, ``notes`` what the row should say about the whole submission.
    The submission is read only; it runs in a temporary copy of its folder.
    """
    from metaadv_edu.notebooks import student_notebook

    path, course_notebook = Path(path), Path(course_notebook)
    stem = course_notebook.stem
    course = nbformat.read(str(course_notebook), as_version=4)
    exercises = course_exercises(course, stem)
    handout, _ = student_notebook(course_notebook)
    submitted = nbformat.read(str(path), as_version=4)
    notes = [n for n in [_version_note(submitted.metadata.get(HANDOUT_KEY, {}), handout.metadata[HANDOUT_KEY])] if n]
    notes += _changed_cells(handout, submitted, {ex.cell_id for ex in exercises})
    token = secrets.token_hex(16)
    graded, harness, missing = copy.deepcopy(handout), {}, set()
    cells = []
    for cell in graded.cells:
        _clear(cell)
        cells.append(cell)
        ex = next((e for e in exercises if e.cell_id == cell.get("id")), None)
        if ex is None:
            continue
        mine = _find(submitted.cells, ex)
        if mine is None:
            missing.add(ex.name)
        else:
            if "### BEGIN SOLUTION" in mine.source:
                notes.append(f"{ex.name}: the cell still holds the course's solution markers")
            cell.source = strip_grader_calls(mine.source)
        call = f"report_grade({token!r}, {ex.module!r}, {ex.grader!r}, {ex.name!r}, {list(ex.arguments)!r})\n"
        # only names its own imports bind (a learner's `exec` or `print` cannot stand in); run without
        # history, so that the secret is not in `In` for the learner's function to read while it is graded
        harness[ex.name] = (len(cells) - 1, len(cells))
        cells.append(
            nbformat.v4.new_code_cell(FRESH_IMPORT + "importlib.import_module('metaadv_edu.autograde')." + call)
        )
    graded.cells = cells
    if len(missing) == len(exercises):
        raise NotGradable(NO_EXERCISES)
    with tempfile.TemporaryDirectory(prefix="metaadv-grade-") as tmp:
        work = Path(tmp) / "work"
        if folder is None:
            work.mkdir()
            shutil.copy2(path, work / path.name)
        else:
            shutil.copytree(folder, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        status, results = _run(graded, token, work, timeout, notebook_timeout, {h for _, h in harness.values()})
    outcomes = []
    for ex in exercises:
        solution, check = harness[ex.name]
        outcomes.append((ex.name, *_outcome(ex, status, results, solution, check, ex.name in missing, timeout)))
    return outcomes, notes


def _outcome(ex, status, results, solution: int, check: int, missing: bool, timeout: int) -> tuple[bool, str]:
    mine, grader = status.get(solution, "skipped"), status.get(check, "skipped")
    if grader == "timed out":
        return False, f"timed out: the grader's run of your code took more than {timeout} s"
    if grader == "skipped":
        return False, "not graded: the notebook ran past its time limit"
    if grader == "kernel died":
        return False, "not graded: the kernel died while grading"
    if missing:
        return False, "solution cell not found in the submission (no cell with its id or grade_id)"
    payloads = results.get(check, [])
    if len(payloads) != 1:
        return False, f"not graded: {len(payloads)} results reached the grading channel instead of one"
    passed, message = bool(payloads[0].get("passed")), str(payloads[0].get("message", ""))
    if mine == "timed out":
        return False, f"timed out: your cell ran for more than {timeout} s; {message}"
    if mine not in ("ok", "skipped"):
        return passed, f"your cell raised {mine}; {message}"
    return passed, message


def _clear(cell) -> None:
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None


# ------------------------------------------------------------------------- a class at once
@dataclass
class _Job:
    path: str
    relative: str
    stem: str | None
    course_notebook: str | None
    folder: str | None
    timeout: int
    notebook_timeout: int
    error: str | None = None


def _identify(path: Path, folder: Path, course_dir: Path, timeout: int, notebook_timeout: int) -> _Job:
    """What a submitted file is: which course notebook, or why it cannot be graded."""
    relative = path.relative_to(folder)
    job = _Job(str(path), relative.as_posix(), None, None, None, timeout, notebook_timeout)
    by_name = course_dir / path.name
    job.stem = path.stem if by_name.is_file() else None
    if len(relative.parts) > 1:
        job.folder = str(path.parent)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        job.error = f"cannot read the file: {exc}"
        return job
    if not text.strip():
        job.error = "empty file"
        return job
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for JSON that is not a notebook
        kind = (
            "invalid JSON"
            if isinstance(exc, ValueError) and "JSON" in type(exc).__name__ + str(exc)
            else "not a notebook"
        )
        job.error = f"{kind}: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
        return job
    meta = nb.metadata.get(HANDOUT_KEY, {})
    if not isinstance(meta, dict):  # nbformat accepts any value under a key of its metadata
        job.stem, job.error = None, f"not a notebook of this course (its metadata {HANDOUT_KEY!r} is not a mapping)"
        return job
    if meta.get("course", COURSE) != COURSE:
        job.stem, job.error = None, f"a notebook of another course ({str(meta.get('course'))[:80]})"
        return job
    stem = meta.get("notebook") or path.stem
    try:  # a name, not a path; a name too long for the file system raises
        known = isinstance(stem, str) and Path(stem).name == stem and (course_dir / f"{stem}.ipynb").is_file()
    except (OSError, ValueError):
        known = False
    if not known:
        job.stem, job.error = None, f"not a notebook of this course (no {str(stem)[:80]}.ipynb in {course_dir})"
        return job
    job.stem, job.course_notebook = stem, str(course_dir / f"{stem}.ipynb")
    return job


def _could_not_grade(exc: Exception) -> str:
    return f"could not grade: {type(exc).__name__}: {exc}"[:300]


def _grade_job(job: _Job) -> dict:
    if job.error:
        return {"error": job.error}
    try:
        outcomes, notes = grade_submission(
            job.path, job.course_notebook, folder=job.folder, timeout=job.timeout, notebook_timeout=job.notebook_timeout
        )
    except NotGradable as exc:
        return {"error": str(exc)}
    except Exception as exc:  # anything unexpected still becomes a row, never a stopped batch
        return {"error": _could_not_grade(exc)}
    return {"outcomes": outcomes, "notes": notes}


def _printable(text: str) -> str:
    """``text`` with what UTF-8 cannot encode escaped: a folder name that is not UTF-8 (an archive unzipped from
    another system) or a lone surrogate in a notebook's metadata would stop the table and the CSV."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _rows(job: _Job, result: dict, exercises: list[Exercise], points: dict[str, float]) -> list[dict[str, str]]:
    relative = Path(job.relative)
    learner = relative.parts[0] if len(relative.parts) > 1 else relative.stem

    def row(exercise: str, passed: bool, weight: float, text: str, note: str) -> dict[str, str]:
        fields = {
            "learner": learner,
            "notebook": relative.name,
            "exercise": exercise,
            "passed": str(int(passed)),
            "points": f"{weight if passed else 0.0:g}",
            "max_points": f"{weight:g}",
            "result": text,
            "note": note,
        }
        return {key: _printable(value) for key, value in fields.items()}

    if "error" in result and not exercises:
        return [row("", False, 0.0, "not graded", result["error"])]
    if "error" in result:
        return [row(ex.name, False, points.get(ex.name, ex.points), "not graded", result["error"]) for ex in exercises]
    note = "; ".join(result["notes"])
    weights = {ex.name: points.get(ex.name, ex.points) for ex in exercises}
    return [row(name, passed, weights.get(name, 1.0), text, note) for name, passed, text in result["outcomes"]]


def grade_class(
    folder: str | Path,
    course_dir: str | Path,
    *,
    jobs: int = 1,
    timeout: int = 120,
    notebook_timeout: int = 900,
    points: dict[str, float] | None = None,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Grade every ``*.ipynb`` under ``folder`` against the course notebooks in ``course_dir``, ``jobs``
    kernels at a time; return the gradebook rows (:data:`CSV_FIELDS`), learners and notebooks in order.

    Every file gets rows: one per exercise of its course notebook (0 points for one not solved, not run
    or not graded, with the reason in ``result``), or a single row saying why it is not gradable.

    The kernels run in fresh worker processes (``spawn``), so a script that calls this function must
    guard its top level with ``if __name__ == "__main__":`` (``metaadv-edu grade`` does).
    """
    folder, course_dir = Path(folder), Path(course_dir)
    if jobs < 1:
        raise ValueError(f"jobs must be ≥ 1, got {jobs}")
    if timeout < 1 or notebook_timeout < 1:
        raise ValueError(f"timeout and notebook_timeout must be ≥ 1 s, got {timeout} and {notebook_timeout}")
    paths = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())
    queue = [_identify(p, folder, course_dir, timeout, notebook_timeout) for p in paths]
    exercises: dict[str, list[Exercise]] = {}
    broken: dict[str, str] = {}
    for job in queue:
        if job.stem and job.stem not in exercises:
            course = nbformat.read(str(course_dir / f"{job.stem}.ipynb"), as_version=4)
            try:
                exercises[job.stem] = course_exercises(course, job.stem)
            except ValueError as exc:  # the course's own notebook: say so on its rows, grade the others
                exercises[job.stem], broken[job.stem] = [], f"the course notebook cannot be graded: {exc}"
        if job.stem in broken and not job.error:
            job.error = broken[job.stem]
        if not job.error:  # a notebook without one exercise cell of the course's: no kernel needed to say so
            try:
                cells = nbformat.read(job.path, as_version=4).cells
                if all(_find(cells, ex) is None for ex in exercises[job.stem]):
                    job.error = NO_EXERCISES
            except Exception as exc:  # nbformat reads notebooks it cannot validate; grading would fail alike
                job.error = _could_not_grade(exc)
    # files that cannot be graded get their rows here, without a worker process
    results: dict[int, dict] = {i: {"error": job.error} for i, job in enumerate(queue) if job.error}
    runnable = [i for i in range(len(queue)) if i not in results]
    if runnable:
        results.update(_run_in_workers([queue[i] for i in runnable], runnable, jobs, notebook_timeout, progress))
    rows = []
    for i, job in enumerate(queue):
        rows += _rows(job, results[i], exercises.get(job.stem or "", []), points or {})
    return rows


def _run_in_workers(queue: list[_Job], keys: list[int], jobs: int, notebook_timeout: int, progress: bool) -> dict:
    """Grade ``queue`` in up to ``jobs`` worker processes, one notebook at a time each; ``{key: result}``.

    A worker process that dies breaks the pool: every notebook not yet graded gets a 'could not grade' row
    (grade the class again for those)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, TimeoutError, as_completed

    from tqdm.auto import tqdm

    # Fresh ("spawn") worker processes, never forked ones: a process forked from one that has already run
    # a kernel client shares its event loop's epoll descriptor and can wait forever for a reply its
    # parent consumed. Each worker grades one notebook at a time: in CPython 3.11, ast.parse, which
    # tracebacks use, is not safe across threads.
    context = multiprocessing.get_context("spawn")
    # a backstop beyond the per-notebook limit: a worker that stops answering costs its notebooks a row
    # saying so, never the batch
    waves = -(-len(queue) // jobs)
    backstop = waves * (notebook_timeout + STUCK_GRACE)
    results: dict[int, dict] = {}
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(queue)), mp_context=context)
    answered = False
    try:
        with tqdm(total=len(queue), disable=not progress) as bar:
            futures = {pool.submit(_grade_job, job): i for i, job in enumerate(queue)}
            try:
                for future in as_completed(futures, timeout=backstop):
                    try:
                        results[futures[future]] = future.result()
                    except Exception as exc:  # a worker process that died: its notebooks still get rows
                        results[futures[future]] = {"error": _could_not_grade(exc)}
                    bar.update()
                answered = True
            except TimeoutError:
                stuck = f"not graded: the grading worker did not answer within {backstop} s"
                for i in set(futures.values()) - set(results):
                    results[i] = {"error": stuck}
    finally:
        if not answered:  # the executor has no public way to stop a worker that hangs
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
        pool.shutdown(wait=answered, cancel_futures=True)
    return {keys[i]: result for i, result in results.items()}


def write_csv(rows: list[dict[str, str]], path: str | Path) -> Path:
    """Write gradebook rows as CSV (UTF-8, header :data:`CSV_FIELDS`)."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path
