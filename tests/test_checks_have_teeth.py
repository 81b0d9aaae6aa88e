"""Every ✓ check the notebooks print has a test that feeds it a wrong implementation (see tests/wrong.py)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _check_cells(path: Path) -> list[dict]:
    """The code cells whose stored outputs print a ✓ verdict, except graders' lines ("✓ NAME: ...")."""
    cells = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = "".join(
            "".join(out.get("text", "")) for out in cell.get("outputs", []) if out.get("output_type") == "stream"
        )
        verdicts = [line for line in text.splitlines() if "✓" in line and not line.lstrip().startswith(("✓", "✗"))]
        if verdicts:
            cells.append({"cell": cell, "verdicts": verdicts})
    return cells


def rejected_checks(root: Path = ROOT / "tests") -> dict[str, list[str]]:
    """``{check: [mistake, ...]}`` from every ``@rejects(check, mistake)`` under ``root``."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "rejects"
                and len(node.args) == 2
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)
            ):
                found.setdefault(node.args[0].value, []).append(node.args[1].value)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_check_of_the_notebook_is_proven_to_fail_on_wrong_code(path):
    rejected = rejected_checks()
    unnamed, untested = [], []
    for item in _check_cells(path):
        names = item["cell"].get("metadata", {}).get("checks", [])
        if not names:
            unnamed.append(item["verdicts"][0])
        untested += [name for name in names if name not in rejected]
    assert not unnamed, f"cells printing a ✓ check without 'checks' in their metadata: {unnamed}"
    assert not untested, f"checks without a @rejects test feeding them a wrong implementation: {untested}"


def test_the_enumeration_reads_marks_and_verdicts(tmp_path):
    (tmp_path / "test_x.py").write_text(
        'from tests.wrong import rejects\n\n@rejects("dstar", "D = p/(p+q) with p and q swapped")\ndef test_a(): ...\n'
    )
    assert rejected_checks(tmp_path) == {"dstar": ["D = p/(p+q) with p and q swapped"]}
    nb = tmp_path / "01_x.ipynb"
    outputs = [{"output_type": "stream", "name": "stdout", "text": "D* maximises V: ✓\n✓ FGSM: correct\n"}]
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "outputs": outputs, "source": ""}]}))
    assert [c["verdicts"] for c in _check_cells(nb)] == [["D* maximises V: ✓"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_compared_check_states_its_verdict_as_a_mark(path):
    # On a GPU, nbval compares these cells with their digits masked (conftest.py at the root): a verdict
    # written as a number ("0 of 40") would be masked away, a ✓ or ✗ is still compared.
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        meta = cell.get("metadata", {})
        if cell["cell_type"] != "code" or not meta.get("checks") or "nbval-check-output" not in meta.get("tags", []):
            continue
        text = json.dumps(cell.get("outputs", []), ensure_ascii=False)
        assert "✓" in text or "✗" in text, f"{meta['checks']}: no ✓ or ✗ in its stored output"
