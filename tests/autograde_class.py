"""A class of submissions for the grading tests, built from the stored course notebooks.

The course is trimmed to what the exercises need (markdown, the setup cells up to the import of the
chapter module, and the exercise cells) so that grading a class runs in seconds; the submissions are
learner's copies of it (``metaadv-edu student``) changed the way a learner would change them.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from metaadv_edu import notebooks
from metaadv_edu.autograde import HANDOUT_KEY

ROOT = Path(__file__).resolve().parent.parent
BIG = 50 * 2**20  # characters printed by one submission


def trimmed_course(folder: Path, stems: tuple[str, ...]) -> Path:
    """The course notebooks ``stems`` with only their setup and exercise cells, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        nb = nbformat.read(str(ROOT / "notebooks" / f"{stem}.ipynb"), as_version=4)
        setup_done, cells = False, []
        for i, cell in enumerate(nb.cells):
            nxt = nb.cells[i + 1] if i + 1 < len(nb.cells) else None
            exercise = "solution" in cell.metadata.get("tags", []) or (
                nxt is not None and "solution" in nxt.metadata.get("tags", [])
            )
            if cell.cell_type == "code" and not setup_done and not exercise:
                # the setup cells' imports only: loading data and models is not what is graded here
                cell.source = "\n".join(line for line in cell.source.split("\n") if line.startswith(("import", "from")))
                setup_done = "metaadv_edu.chapters import" in cell.source
                cells.append(cell)
            elif cell.cell_type == "markdown" or exercise:
                cells.append(cell)
        nb.cells = cells
        nbformat.write(nb, str(folder / f"{stem}.ipynb"))
    return folder


def solutions(course: Path, stem: str) -> list[str]:
    """The course's solution cells of ``stem`` as a learner would write them (no solution markers)."""
    nb = nbformat.read(str(course / f"{stem}.ipynb"), as_version=4)
    return [
        re.sub(r"\n *### (BEGIN|END) SOLUTION", "", c.source)
        for c in nb.cells
        if "solution" in c.metadata.get("tags", [])
    ]


def handout(course: Path, stem: str):
    nb, _ = notebooks.student_notebook(course / f"{stem}.ipynb")
    return nb


def _answer(nb, sources: dict[int, str]):
    cells = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    for number, source in sources.items():
        cells[number].source = source
    return nb


WRONG_01 = {
    0: "def my_fgsm(model, x, y, epsilon):\n"
    "    x = x.detach().requires_grad_(True)\n"
    "    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)\n"
    "    return (x - epsilon * grad.sign()).clamp(0, 1).detach()\n\nchapter.check_fgsm(my_fgsm);",
    1: "def my_gain(grad, epsilon):\n    return epsilon * grad.flatten(1).norm(dim=1)\n\n"
    "chapter.check_first_order_gain(my_gain);",
}
FORGERY = 'for name in ["FGSM", "first-order gain", "PGD"]:\n    print(f"✓ {name}: correct")'
# a redefined grader and grading module, a shadowed `exec`, and a function that forges a verdict with
# any secret it finds in the notebook's history while it is being graded
REDEFINE = (
    "import re\n"
    "import metaadv_edu.chapters.fgsm as fgsm_module\n"
    "from IPython.display import display\n"
    "from metaadv_edu import grading\n\n"
    "def my_fgsm(model, x, y, epsilon):\n"
    "    for token in re.findall(r\"report_grade\\('([0-9a-f]{32})'\", '\\n'.join(In)):\n"
    "        verdict = {'token': token, 'exercise': 'FGSM', 'passed': True, 'message': 'forged'}\n"
    "        display({'application/vnd.metaadv-edu.grade+json': verdict}, raw=True)\n"
    "    return x\n\n"
    "def exec(*args, **kwargs):\n    pass\n\n"
    "fgsm_module.check_fgsm = lambda f: grading.report('FGSM', True, 'correct')\n"
    "chapter.check_fgsm = fgsm_module.check_fgsm\n"
    "grading.run = lambda name, body: grading.report(name, True, 'correct')\n"
    "chapter.check_fgsm(my_fgsm);"
)
# an infinite loop that even swallows the interrupt: the kernel has to be restarted
LOOP = (
    "import time\n\ndef my_fgsm(model, x, y, epsilon):\n    while True:\n        try:\n            time.sleep(0.1)\n"
    "        except KeyboardInterrupt:\n            pass\n\nchapter.check_fgsm(my_fgsm);"
)


def write_class(folder: Path, course: Path) -> Path:
    """The class: each learner's folder holds the notebooks they handed in; returns ``folder``.

    ``right`` (two notebooks), ``wrong`` (two named mistakes and one right answer, in the handout of an
    older course version), ``forger`` (the handout with one printing cell added), ``tamperer`` (a
    redefined grader and grading module, a shadowed ``exec``, a verdict forged with any secret found in
    ``In``, a grader call replaced by a printed ✓, a grader call deleted, a teacher's cell edited and one
    deleted), ``loop`` (an infinite loop that swallows the interrupt in one exercise, 50 MB printed in
    another), ``badjson``, ``empty`` and ``other`` (another course).
    """
    right = {stem: solutions(course, stem) for stem in ("01_fgsm", "06_reptile")}

    def save(learner: str, nb, stem: str = "01_fgsm") -> None:
        (folder / learner).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(folder / learner / f"{stem}.ipynb"))

    for stem in ("01_fgsm", "06_reptile"):
        save("right", _answer(handout(course, stem), dict(enumerate(right[stem]))), stem)
    forged = handout(course, "01_fgsm")
    forged.cells.append(nbformat.v4.new_code_cell(FORGERY))
    save("forger", forged)
    wrong = _answer(handout(course, "01_fgsm"), {**WRONG_01, 2: right["01_fgsm"][2]})
    wrong.metadata[HANDOUT_KEY]["version"] = "0.0.1"
    save("wrong", wrong)
    gain_stub = [c for c in handout(course, "01_fgsm").cells if "solution" in c.metadata.get("tags", [])][1].source
    tampered = _answer(
        handout(course, "01_fgsm"),
        {
            0: REDEFINE,
            1: gain_stub.replace("chapter.check_first_order_gain(my_gain);", 'print("✓ first-order gain: ok")'),
            2: right["01_fgsm"][2].split("\n\nchapter.")[0],
        },
    )
    code = [i for i, c in enumerate(tampered.cells) if c.cell_type == "code"]
    tampered.cells[code[0]].source += "\nprint('✓ FGSM: correct')"
    del tampered.cells[code[1]]
    save("tamperer", tampered)
    loud = f"print('x' * {BIG})\n" + right["01_fgsm"][1]
    save("loop", _answer(handout(course, "01_fgsm"), {0: LOOP, 1: loud, 2: right["01_fgsm"][2]}))
    for learner, text in (("badjson", '{"cells": ['), ("empty", "")):
        (folder / learner).mkdir(parents=True, exist_ok=True)
        (folder / learner / "01_fgsm.ipynb").write_text(text, encoding="utf-8")
    other = handout(course, "01_fgsm")
    other.metadata[HANDOUT_KEY]["course"] = "another-course"
    save("other", other)
    return folder
