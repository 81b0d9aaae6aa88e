import os
from pathlib import Path

import nbformat
import pytest

from metaadv_edu import autograde, cli, notebooks

ROOT = Path(__file__).resolve().parent.parent


def test_doctor_reports_every_line(capsys):
    code = cli.main(["doctor"])
    out = capsys.readouterr().out
    for word in ("python", "torch", "device", "widgets extension", "model cache", "notebooks"):
        assert word in out
    assert "cpu" in out or "cuda" in out
    assert code in (0, 1)
    assert ("✗" in out) == (code == 1)


def test_doctor_flags_an_unwritable_cache(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("METAADV_CACHE", str(blocker / "cache"))
    assert cli.main(["doctor"]) == 1
    assert "✗ model cache" in capsys.readouterr().out


@pytest.mark.keep_device_env
def test_doctor_flags_a_bad_device_variable(monkeypatch, capsys):
    monkeypatch.setenv("METAADV_DEVICE", "tpu")
    assert cli.main(["doctor"]) == 1
    assert "✗ device" in capsys.readouterr().out


def _tiny_notebook(path: Path, source: str = "print(1 + 1)") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"), nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, str(path))
    return path


def test_execute_then_check(tmp_path, capsys):
    path = _tiny_notebook(tmp_path / "00_tiny.ipynb")
    assert cli.main(["execute", "--check", str(tmp_path)]) == 1
    assert "never executed" in capsys.readouterr().out
    assert cli.main(["execute", str(tmp_path)]) == 0
    nb = nbformat.read(str(path), as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "2\n"
    assert cli.main(["execute", "--check", str(tmp_path)]) == 0
    # editing the code makes the stored outputs stale
    nb.cells[1].source = "print(2 + 2)"
    nbformat.write(nb, str(path))
    assert cli.main(["execute", "--check", str(tmp_path)]) == 1
    assert "code changed" in capsys.readouterr().out
    # --stale executes only what is stale
    _tiny_notebook(tmp_path / "01_other.ipynb")
    assert cli.main(["execute", str(tmp_path / "01_other.ipynb")]) == 0
    capsys.readouterr()
    assert cli.main(["execute", "--stale", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 stale: 00_tiny.ipynb" in out and "executing 01_other" not in out
    assert cli.main(["execute", "--check", str(tmp_path)]) == 0


def test_execute_reports_a_failing_notebook(tmp_path):
    _tiny_notebook(tmp_path / "01_bad.ipynb", "raise RuntimeError('boom')")
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="boom"):
        cli.main(["execute", str(tmp_path)])


def test_find_notebooks_orders_the_course(tmp_path):
    for name in ("02_b.ipynb", "00_a.ipynb", "notes.ipynb"):
        _tiny_notebook(tmp_path / name)
    assert [p.name for p in notebooks.find_notebooks(tmp_path)] == ["00_a.ipynb", "02_b.ipynb"]
    with pytest.raises(ValueError, match="does not exist"):
        notebooks.find_notebooks(tmp_path / "missing")


def test_stored_course_notebooks_are_current():
    stale = [(p.name, r) for p in notebooks.find_notebooks(ROOT / "notebooks") if (r := notebooks.stale_reason(p))]
    assert not stale, f"run `metaadv-edu execute` to refresh: {stale}"


def test_demo_rejects_an_unknown_notebook(capsys):
    assert cli.main(["demo", "99_nothing", "--no-browser"]) == 2
    assert "no notebook" in capsys.readouterr().err


def test_readme_quickstart_gives_the_setup_open_and_test_commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n", 1)[1].strip() for b in quick.split("```")[1::2]]
    assert blocks == [
        "pip install -r binder/requirements.txt",
        "jupyter lab notebooks/",
        "pip install -r requirements-dev.txt\npytest",
    ]


SOLUTION = (
    "def f(g, e):\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION\n\nchapter.check_first_order_gain(f);"
)
STUB = "def f(g, e):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nchapter.check_first_order_gain(f);"
SETUP = "from metaadv_edu.chapters import fgsm as chapter"


def _exercise_notebook(folder):
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    stub = nbformat.v4.new_code_cell(STUB)
    stub.outputs = [nbformat.v4.new_output("stream", text="✗ not written yet\n")]
    stub.execution_count = 3
    solution = nbformat.v4.new_code_cell(SOLUTION, metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}})
    solution.outputs = [nbformat.v4.new_output("stream", text="✓ f\n")]
    nb.cells = [nbformat.v4.new_code_cell(SETUP), stub, solution, nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, str(folder / "01_fgsm.ipynb"))
    return folder


def test_clear_solution_replaces_each_marked_region_like_nbgrader():
    assert notebooks.clear_solution(SOLUTION) == STUB
    two = (
        "a = 1\n### BEGIN SOLUTION\nb = 2\n### END SOLUTION\n"
        "if a:\n    ### BEGIN SOLUTION\n    c = 3\n    ### END SOLUTION"
    )
    assert notebooks.clear_solution(two) == (
        "a = 1\n# YOUR CODE HERE\nraise NotImplementedError()\nif a:\n"
        "    # YOUR CODE HERE\n    raise NotImplementedError()"
    )
    for bad in ("### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION"):
        with pytest.raises(ValueError, match="source"):
            notebooks.clear_solution(bad)


def test_student_copy_clears_solutions_and_outputs(tmp_path, capsys):
    src = _exercise_notebook(tmp_path / "src")
    assert cli.main(["student", str(tmp_path / "out"), "--source", str(src)]) == 0
    copy = nbformat.read(str(tmp_path / "out" / "01_fgsm.ipynb"), as_version=4)
    # the solution cell, cleared, takes the place of the stub cell it equals; it is shown and keeps its tag
    assert [c.source for c in copy.cells] == [SETUP, STUB, "x = 1"]
    assert copy.metadata["metaadv_edu_handout"]["version"] == autograde.__version__
    assert copy.cells[1].metadata == {"tags": ["solution"]}
    assert all(c.outputs == [] and c.execution_count is None for c in copy.cells)
    assert "(1 solutions)" in capsys.readouterr().out
    assert cli.main(["student", str(src), "--source", str(src)]) == 2


def test_student_copy_keeps_the_questions_and_leaves_out_their_answers(tmp_path):
    src = _exercise_notebook(tmp_path / "src")
    nb = nbformat.read(str(src / "01_fgsm.ipynb"), as_version=4)
    question = nbformat.v4.new_markdown_cell("Why?", metadata={"tags": ["question"]})
    answer = nbformat.v4.new_markdown_cell("<details><summary>Answer</summary>Because.</details>")
    answer.metadata["tags"] = ["answer"]
    nb.cells += [question, answer]
    nbformat.write(nb, str(src / "01_fgsm.ipynb"))
    assert cli.main(["student", str(tmp_path / "out"), "--source", str(src)]) == 0
    copy = nbformat.read(str(tmp_path / "out" / "01_fgsm.ipynb"), as_version=4)
    assert "Why?" in [c.source for c in copy.cells]
    assert not any("Because" in c.source for c in copy.cells)


COURSE = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_a_learners_copy_keeps_every_section_and_drops_only_the_answers(path):
    """An ``answer`` cell is one folded block and nothing else, so leaving it out of a handout loses no prose."""
    course = nbformat.read(path, as_version=4)
    for cell in course.cells:
        if "answer" in cell.metadata.get("tags", []):
            text = cell.source.strip()
            assert text.startswith("<details>") and text.endswith("</details>"), f"{path.stem}: {text[:80]!r}"
            assert text.count("<details>") == 1, f"{path.stem}: one answer per cell: {text[:80]!r}"
    handout, _ = notebooks.student_notebook(path)
    text = "\n".join(c.source for c in handout.cells if c.cell_type == "markdown")
    for cell in course.cells:
        if cell.cell_type == "markdown" and "answer" not in cell.metadata.get("tags", []):
            for heading in (line for line in cell.source.splitlines() if line.startswith("## ")):
                assert heading in text, f"{path.stem}: the handout lost {heading!r}"


def test_nbgrader_source_marks_solution_cells_and_adds_hidden_tests(tmp_path):
    src = _exercise_notebook(tmp_path / "src")
    assert cli.main(["student", str(tmp_path / "source" / "ps1"), "--source", str(src), "--nbgrader-source"]) == 0
    nb = nbformat.read(str(tmp_path / "source" / "ps1" / "01_fgsm.ipynb"), as_version=4)
    assert [c.source for c in nb.cells][:3] == [SETUP, SOLUTION, nb.cells[2].source] and nb.cells[3].source == "x = 1"
    assert nb.cells[1].metadata["nbgrader"] == {
        "grade": False,
        "grade_id": "01_fgsm-solution-1",
        "locked": False,
        "schema_version": 3,
        "solution": True,
        "task": False,
    }
    assert "jupyter" not in nb.cells[1].metadata and nb.cells[1].outputs == []
    # one locked, hidden test cell per exercise, worth the chapter's POINTS, calling the course's grader
    test = nb.cells[2]
    assert test.metadata["nbgrader"] == {
        "grade": True,
        "grade_id": "01_fgsm-test-1",
        "locked": True,
        "points": 1.0,
        "schema_version": 3,
        "solution": False,
        "task": False,
    }
    assert test.source.startswith("### BEGIN HIDDEN TESTS") and test.source.endswith("### END HIDDEN TESTS")
    assert "'check_first_order_gain', 'first-order gain', f" in test.source
    unmarked = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["solution"]})])
    with pytest.raises(ValueError, match="BEGIN SOLUTION"):
        notebooks.nbgrader_source(unmarked)


def test_the_hidden_test_fails_exactly_when_the_grader_does(capsys):
    autograde.nbgrader_check("metaadv_edu.chapters.fgsm", "check_first_order_gain", "first-order gain", _gain)
    assert capsys.readouterr().out.startswith("✓ first-order gain: ")
    with pytest.raises(AssertionError, match=r"first-order gain: .*L2 norm"):
        autograde.nbgrader_check(
            "metaadv_edu.chapters.fgsm",
            "check_first_order_gain",
            "first-order gain",
            lambda g, e: e * g.flatten(1).norm(dim=1),
        )


def _gain(grad, epsilon):
    return epsilon * grad.flatten(1).abs().sum(dim=1)


@pytest.mark.parametrize("nbgrader", [False, True])
def test_student_never_overwrites_an_edited_copy_without_force(tmp_path, capsys, nbgrader):
    src = _exercise_notebook(tmp_path / "src")
    out = tmp_path / "handout"
    flag = ["--nbgrader-source"] if nbgrader else []
    assert cli.main(["student", str(out), "--source", str(src), *flag]) == 0
    copy = out / "01_fgsm.ipynb"
    (out / "notes.txt").write_text("mine")
    assert cli.main(["student", str(out), "--source", str(src), *flag]) == 0  # the same copies again: fine
    assert "unchanged" in capsys.readouterr().out
    nb = nbformat.read(str(copy), as_version=4)
    nb.cells[1].source = "def f(g, e):\n    return 'my work'"
    nbformat.write(nb, str(copy))
    edited = copy.read_text()
    assert cli.main(["student", str(out), "--source", str(src), *flag]) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err and str(copy) in err and "--force" in err
    assert copy.read_text() == edited
    assert cli.main(["student", str(out), "--source", str(src), *flag, "--force"]) == 0
    assert "my work" not in copy.read_text() and (out / "notes.txt").read_text() == "mine"


def _course_cells():
    import jupytext

    for twin in sorted((ROOT / "notebooks" / "src").glob("0[1-8]_*.md")):
        yield twin.name, jupytext.read(str(twin)).cells


def test_every_course_solution_is_marked_and_follows_its_stub():
    """The stub a self-paced learner fills in is exactly the learner's copy of the solution cell."""
    for name, cells in _course_cells():
        solutions = [i for i, c in enumerate(cells) if "solution" in c.metadata.get("tags", [])]
        assert solutions, f"{name} has no exercise"
        for i in solutions:
            assert "### BEGIN SOLUTION" in cells[i].source, f"{name}: solution cell {i} has no markers"
            assert cells[i - 1].source == notebooks.clear_solution(cells[i].source), f"{name}: cell {i - 1}"


def test_course_points_cover_every_grader_of_the_chapter():
    import re

    for name, _cells in _course_cells():
        module = ROOT / "metaadv_edu" / "chapters" / f"{name[3:-3]}.py"
        graders = module.parent / "graders" / module.name  # a long chapter keeps its graders there, re-exported
        source = module.read_text() + (graders.read_text() if graders.is_file() else "")
        graded = re.findall(r'grading\.run\("([^"]+)"', source)
        assert list(notebooks.course_points(name[:-3] + ".ipynb")) == graded, name
        assert all(v > 0 for v in notebooks.course_points(name[:-3] + ".ipynb").values())


def test_course_notebooks_hide_their_solutions():
    for path in notebooks.find_notebooks(ROOT / "notebooks"):
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if "solution" in cell.metadata.get("tags", []):
                assert cell.metadata.get("jupyter", {}).get("source_hidden") is True


def test_every_course_notebook_equals_its_text_twin():
    paths = notebooks.find_notebooks(ROOT / "notebooks")
    assert {notebooks.source_path(p).name for p in paths} == {p.name for p in (ROOT / "notebooks" / "src").glob("*.md")}
    out_of_sync = {p.name: r for p in paths if (r := notebooks.pair_difference(p))}
    assert not out_of_sync, f"run `metaadv-edu execute --sync-only`: {out_of_sync}"


def _pair(tmp_path):
    (tmp_path / "jupytext.toml").write_text((ROOT / "jupytext.toml").read_text())
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}})
    solution.outputs = [nbformat.v4.new_output("stream", text="kept\n")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n\n$$a = b$$"), nbformat.v4.new_code_cell("x = 1"), solution]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "09_demo.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_sync_writes_the_twin_then_takes_edits_from_either_side(tmp_path):
    path = _pair(tmp_path)
    assert notebooks.sync_pair(path) == "notebook"
    twin = notebooks.source_path(path)
    text = twin.read_text()
    assert "tags: [solution]" in text and "source_hidden: true" in text and "$$a = b$$" in text
    assert notebooks.pair_difference(path) is None and notebooks.sync_pair(path) == "unchanged"

    twin.write_text(text.replace("x = 1", "x = 10"))  # a fix made in the text file
    os.utime(twin, (path.stat().st_mtime + 5,) * 2)
    assert notebooks.pair_difference(path) is not None
    assert notebooks.sync_pair(path) == "text"
    nb = nbformat.read(str(path), as_version=4)
    assert nb.cells[1].source == "x = 10"
    assert nb.cells[2].metadata["tags"] == ["solution"] and nb.cells[2].outputs[0]["text"] == "kept\n"

    nb.cells[0].source = "# Title, fixed in JupyterLab"  # a fix made in the notebook
    nbformat.write(nb, str(path))
    os.utime(path, (twin.stat().st_mtime + 5,) * 2)
    assert notebooks.sync_pair(path) == "notebook"
    assert "# Title, fixed in JupyterLab" in twin.read_text()
    assert notebooks.pair_difference(path) is None


def test_execute_sync_only_reports_and_fixes_a_stale_twin(tmp_path, capsys):
    path = _pair(tmp_path)
    assert cli.main(["execute", "--check", str(path)]) == 1
    assert "is missing" in capsys.readouterr().out
    assert cli.main(["execute", "--sync-only", str(path)]) == 0
    assert notebooks.pair_difference(path) is None
