"""Grades a learner cannot forge: one class of submissions (tests/autograde_class.py) graded once, with
two kernels, and the exact gradebook row each submission must give."""

import contextlib
import csv
import hashlib
import io
import json
import os
from pathlib import Path

import nbformat
import pytest

from metaadv_edu import autograde, cli, notebooks, submissions
from tests import autograde_class

ROOT = Path(__file__).resolve().parent.parent
NOT_WRITTEN = "not written yet"
VERSION_NOTE = f"handout of course version 0.0.1; graded with version {autograde.__version__}"
TAMPER_NOTE = "edited cells #2 (the course's were run); deleted cells #3 (the course's were run)"
# learner, notebook, exercise, passed, points, max_points, how the result starts, note
EXPECTED = [
    *[
        ("badjson", "01_fgsm.ipynb", e, "0", "0", m, "not graded", "invalid JSON: ")
        for e, m in (("FGSM", "1"), ("first-order gain", "1"), ("PGD", "2"))
    ],
    *[
        ("empty", "01_fgsm.ipynb", e, "0", "0", m, "not graded", "empty file")
        for e, m in (("FGSM", "1"), ("first-order gain", "1"), ("PGD", "2"))
    ],
    ("forger", "01_fgsm.ipynb", "FGSM", "0", "0", "1", NOT_WRITTEN, "1 added cell(s) not run"),
    ("forger", "01_fgsm.ipynb", "first-order gain", "0", "0", "1", NOT_WRITTEN, "1 added cell(s) not run"),
    ("forger", "01_fgsm.ipynb", "PGD", "0", "0", "2", NOT_WRITTEN, "1 added cell(s) not run"),
    ("loop", "01_fgsm.ipynb", "FGSM", "0", "0", "1", "timed out: the grader's run of your code took more than", ""),
    ("loop", "01_fgsm.ipynb", "first-order gain", "1", "1", "1", "ε‖g‖₁ per example", ""),
    ("loop", "01_fgsm.ipynb", "PGD", "1", "2", "2", "several projected, clamped ascent steps", ""),
    ("other", "01_fgsm.ipynb", "", "0", "0", "0", "not graded", "a notebook of another course (another-course)"),
    ("right", "01_fgsm.ipynb", "FGSM", "1", "1", "1", "matches the reference", ""),
    ("right", "01_fgsm.ipynb", "first-order gain", "1", "1", "1", "ε‖g‖₁ per example", ""),
    ("right", "01_fgsm.ipynb", "PGD", "1", "2", "2", "several projected, clamped ascent steps", ""),
    ("right", "06_reptile.ipynb", "Reptile update", "1", "1", "1", "θ + β·mean(θ′ − θ)", ""),
    ("right", "06_reptile.ipynb", "one-step Reptile as SGD", "1", "2", "2", "one-step Reptile is SGD", ""),
    ("tamperer", "01_fgsm.ipynb", "FGSM", "0", "0", "1", "differs from the reference", TAMPER_NOTE),
    ("tamperer", "01_fgsm.ipynb", "first-order gain", "0", "0", "1", NOT_WRITTEN, TAMPER_NOTE),
    ("tamperer", "01_fgsm.ipynb", "PGD", "1", "2", "2", "several projected, clamped ascent steps", TAMPER_NOTE),
    ("wrong", "01_fgsm.ipynb", "FGSM", "0", "0", "1", "wrong sign", VERSION_NOTE),
    ("wrong", "01_fgsm.ipynb", "first-order gain", "0", "0", "1", "you used the L2 norm", VERSION_NOTE),
    ("wrong", "01_fgsm.ipynb", "PGD", "1", "2", "2", "several projected, clamped ascent steps", VERSION_NOTE),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded once with ``-j 2``: (CSV rows, printed text, class folder, files before)."""
    root = tmp_path_factory.mktemp("autograde")
    course = autograde_class.trimmed_course(root / "course", ("01_fgsm", "06_reptile"))
    folder = autograde_class.write_class(root / "class", course)
    before = _snapshot(folder)
    out = io.StringIO()
    args = ["grade", str(folder), "--course", str(course), "-j", "2", "--timeout", "30", "--quiet"]
    with contextlib.redirect_stdout(out):
        code = cli.main([*args, "--csv", str(root / "grades.csv")])
    assert code == 0
    with (root / "grades.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows, out.getvalue(), folder, before


def test_every_submission_gets_its_exact_rows(graded):
    rows = graded[0]
    assert [tuple(r[k] for k in submissions.CSV_FIELDS[:6]) for r in rows] == [e[:6] for e in EXPECTED]
    for row, expected in zip(rows, EXPECTED):
        assert row["result"].startswith(expected[6]), (row, expected)
        if expected[7].endswith(": "):
            assert row["note"].startswith(expected[7]), row
        else:
            assert row["note"] == expected[7], row


def test_forgeries_earn_nothing_they_did_not_solve(graded):
    rows = graded[0]
    earned = {(r["learner"], r["notebook"]): 0.0 for r in rows}
    for r in rows:
        earned[r["learner"], r["notebook"]] += float(r["points"])
    assert earned["forger", "01_fgsm.ipynb"] == 0
    assert earned["tamperer", "01_fgsm.ipynb"] == 2  # only PGD, which it solved (without calling the grader)
    assert earned["right", "01_fgsm.ipynb"] == 4 and earned["right", "06_reptile.ipynb"] == 3


def test_the_batch_prints_a_table_and_a_summary_and_touches_no_submission(graded):
    _, out, folder, before = graded
    assert "learner" in out.splitlines()[0] and "not yet right" in out.splitlines()[0]
    assert "graded 9 notebooks of 8 learners" in out and "with 2 kernel(s)" in out
    assert "1 timed out, 3 file(s) not gradable" in out
    assert _snapshot(folder) == before  # nothing modified, nothing written into the class folder


def test_grader_calls_are_stripped_from_a_learners_cell():
    source = "def f(x):\n    return chapter.check_fgsm(x)\n\nchapter.check_fgsm(f);\ncheck_pgd(f)\nprint(1)"
    assert autograde.strip_grader_calls(source) == "def f(x):\n    return chapter.check_fgsm(x)\n\nprint(1)\n"
    assert autograde.strip_grader_calls("def f(:\n") == "def f(:\n"


def test_every_course_notebook_names_its_exercises_like_its_points():
    """Generic over the course: the exercises found from the solution cells are the chapter's POINTS."""
    for path in notebooks.find_notebooks(ROOT / "notebooks"):
        exercises = autograde.course_exercises(nbformat.read(str(path), as_version=4), path.stem)
        points = notebooks.course_points(path.name)
        assert [(e.name, e.points) for e in exercises] == [(k, float(v)) for k, v in points.items()], path.name
        assert all(e.cell_id and e.arguments for e in exercises), path.name


def test_unreadable_files_get_rows_with_the_teachers_points_and_no_kernel(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(submissions, "_run_in_workers", lambda *a, **k: pytest.fail("a worker process was started"))
    folder = tmp_path / "class"
    for learner, text in (("ada", ""), ("bob", "not json"), ("cy", '{"cells": []}')):
        (folder / learner).mkdir(parents=True)
        (folder / learner / "01_fgsm.ipynb").write_text(text, encoding="utf-8")
    nbformat.write(nbformat.v4.new_notebook(), str(folder / "notes.ipynb"))
    # a notebook nbformat reads although it breaks the schema (a cell without cell_type)
    broken = {
        "cells": [{"id": "c1", "metadata": {}, "source": "x = 1"}],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (folder / "dee").mkdir()
    (folder / "dee" / "01_fgsm.ipynb").write_text(json.dumps(broken), encoding="utf-8")
    # valid notebooks whose handout metadata is not a mapping, names a file outside the course (one that
    # exists), a name too long for the file system, or a lone surrogate that UTF-8 cannot encode
    handouts = (
        ("eve", "x"),
        ("fay", {"notebook": "../notebooks/01_fgsm"}),
        ("gus", {"notebook": "a" * 300}),
        ("hal", {"notebook": "\ud800"}),
    )
    for learner, meta in handouts:
        nb = {"cells": [], "metadata": {"metaadv_edu_handout": meta}, "nbformat": 4, "nbformat_minor": 5}
        (folder / learner).mkdir()
        (folder / learner / "01_fgsm.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    unzipped = folder / os.fsdecode(b"Jos\xe9")  # a folder name that is not UTF-8, as unzip may leave it
    try:
        unzipped.mkdir()
        (unzipped / "01_fgsm.ipynb").write_text("", encoding="utf-8")
    except OSError:  # a file system that takes UTF-8 names only (macOS)
        unzipped = None
    (folder / "Łukasz").mkdir()  # a name a cp1252 console cannot show
    (folder / "Łukasz" / "01_fgsm.ipynb").write_text("", encoding="utf-8")
    (tmp_path / "points.json").write_text('{"PGD": 3}')
    out = tmp_path / "grades.csv"
    args = ["grade", str(folder), "--csv", str(out), "--points", str(tmp_path / "points.json"), "--quiet"]
    console = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")  # a Windows console, output redirected
    with contextlib.redirect_stdout(console):
        assert cli.main(args) == 0
    console.flush()
    assert "\\u0141ukasz" in console.buffer.getvalue().decode("cp1252")  # escaped, not a crash
    assert cli.main(args) == 0
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["learner"], r["exercise"], r["max_points"], r["result"]) for r in rows if r["learner"] == "ada"] == [
        ("ada", "FGSM", "1", "not graded"),
        ("ada", "first-order gain", "1", "not graded"),
        ("ada", "PGD", "3", "not graded"),
    ]
    notes = {r["learner"]: r["note"] for r in rows}
    assert notes["ada"] == "empty file" and notes["bob"].startswith("invalid JSON")
    assert notes["cy"].startswith("none of the notebook's exercise cells found")
    assert notes["dee"].startswith("could not grade: AttributeError")
    assert notes["eve"].startswith("not a notebook of this course") and "not a mapping" in notes["eve"]
    for learner in ("fay", "gus", "hal", "notes"):
        assert notes[learner].startswith("not a notebook of this course"), learner
    assert "\\ud800" in notes["hal"] and notes["Łukasz"] == "empty file"  # escaped, not a crash
    assert unzipped is None or notes["Jos\\udce9"] == "empty file"
    assert f"{10 + (unzipped is not None)} file(s) not gradable" in capsys.readouterr().out


def test_no_execute_is_refused(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path), "--no-execute"]) == 2
    assert "stored outputs" in capsys.readouterr().err
    assert cli.main(["grade", str(tmp_path / "missing")]) == 2


def test_a_gradebook_that_cannot_be_written_is_said_before_grading_and_the_table_still_shows(
    tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "class" / "ada"
    folder.mkdir(parents=True)
    (folder / "01_fgsm.ipynb").write_text("", encoding="utf-8")
    monkeypatch.setattr(submissions, "grade_class", lambda *a, **k: pytest.fail("graded before the check"))
    assert cli.main(["grade", str(tmp_path / "class"), "--csv", str(tmp_path), "--quiet"]) == 2  # a folder
    assert "cannot write there" in capsys.readouterr().err
    monkeypatch.undo()

    def locked(rows, path):  # the file opened in a spreadsheet after the check
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(submissions, "write_csv", locked)
    assert cli.main(["grade", str(tmp_path / "class"), "--csv", str(tmp_path / "g.csv"), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "ada" in out and "1 file(s) not gradable" in out and "could not be written" in err


def test_the_gradebook_is_written_before_the_console_can_fail(tmp_path):
    folder = tmp_path / "class" / "ada"
    folder.mkdir(parents=True)
    (folder / "01_fgsm.ipynb").write_text("", encoding="utf-8")

    class ClosedPipe(io.StringIO):  # `metaadv-edu grade … | head` once head has exited
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    with contextlib.redirect_stdout(ClosedPipe()), pytest.raises(BrokenPipeError):
        cli.main(["grade", str(tmp_path / "class"), "--csv", str(tmp_path / "g.csv"), "--quiet"])
    with (tmp_path / "g.csv").open(newline="", encoding="utf-8") as f:
        assert [r["learner"] for r in csv.DictReader(f)] == ["ada"] * 3
