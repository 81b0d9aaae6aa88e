"""A notebook goes stale when what its outputs depend on changes, and only then.

`metaadv-edu execute` records the package modules a notebook imported, the functions it displayed and the
model files it loaded (`metaadv_edu.dependencies`). These tests change a copy of the package and ask
whether the stored notebooks 05 (MAML) and 07 (Meta-SGD, which displays `metasgd.meta_loss`) are stale.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from metaadv_edu import cache, cli, dependencies, notebooks

ROOT = Path(__file__).resolve().parents[1]
NB05 = ROOT / "notebooks" / "05_maml.ipynb"
NB07 = ROOT / "notebooks" / "07_meta_sgd.ipynb"


@pytest.fixture
def package(tmp_path) -> Path:
    copy = tmp_path / "metaadv_edu"
    shutil.copytree(dependencies.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _recorded(path: Path) -> dict:
    return nbformat.read(str(path), as_version=4).metadata[notebooks.META_KEY]["dependencies"]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_record_names_what_05_imports_and_loads():
    recorded = _recorded(NB05)
    assert {"metaadv_edu.maml", "metaadv_edu.chapters.maml"} <= set(recorded["modules"])
    assert "metaadv_edu.site" not in recorded["modules"] and "metaadv_edu.cli" not in recorded["modules"]
    assert recorded["weights"], "05 loads its meta-trained sinusoid models"
    assert "metaadv_edu.metasgd:meta_loss" in _recorded(NB07)["shown"]


def test_05_is_current_with_the_package_as_it_is(package):
    assert notebooks.stale_reason(NB05, package_dir=package) is None


def test_a_docstring_in_site_or_a_module_05_never_imports_leaves_05_current(package):
    _edit(package / "site.py", '"""', '"""Reworded. ')
    unused = next(
        m for m in ("gan.py", "covers.py", "attacks.py") if f"metaadv_edu.{m[:-3]}" not in _recorded(NB05)["modules"]
    )
    (package / unused).write_text((package / unused).read_text() + "\n\ndef brand_new():\n    return 1\n")
    assert notebooks.stale_reason(NB05, package_dir=package) is None


def test_docstrings_comments_and_layout_of_a_module_05_imports_leave_it_current(package):
    path = package / "maml.py"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace('"""', '"""A reworded docstring. ', 1).replace("\n\n\ndef ", "\n\n\n# a comment\ndef ", 1)
    )
    assert notebooks.stale_reason(NB05, package_dir=package) is None


def test_a_change_to_code_05_runs_makes_it_stale(package):
    path = package / "maml.py"
    path.write_text(path.read_text(encoding="utf-8") + "\n\nDEFAULT_INNER_LR = 0.02\n", encoding="utf-8")
    reason = notebooks.stale_reason(NB05, package_dir=package)
    assert reason and "metaadv_edu.maml" in reason


def test_a_changed_weight_file_05_loads_makes_it_stale(package):
    name = next(iter(_recorded(NB05)["weights"]))
    weights = package / "weights" / name
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    reason = notebooks.stale_reason(NB05, package_dir=package)
    assert reason and name in reason


def test_a_comment_inside_shown_code_makes_07_stale_but_one_outside_does_not(package):
    path = package / "metasgd.py"
    text = path.read_text(encoding="utf-8")
    start = text.index("def meta_loss(")
    body = text.index("\n    ", text.index('"""', text.index('"""', start) + 3)) + 1
    outside = text.replace("\n\n\ndef ", "\n\n\n# unrelated\ndef ", 1)
    assert outside.index("# unrelated") < start
    path.write_text(outside, encoding="utf-8")
    assert notebooks.stale_reason(NB07, package_dir=package) is None
    text = path.read_text(encoding="utf-8")
    body = text.index("\n    ", text.index('"""', text.index('"""', text.index("def meta_loss(")) + 3)) + 1
    path.write_text(text[:body] + "    # a comment the notebook prints\n" + text[body:], encoding="utf-8")
    reason = notebooks.stale_reason(NB07, package_dir=package)
    assert reason and "metasgd.meta_loss" in reason


def test_shown_digest_reads_decorators_and_finds_methods(tmp_path):
    pkg = tmp_path / "metaadv_edu"
    pkg.mkdir()
    (pkg / "m.py").write_text("class A:\n    @staticmethod\n    def f():\n        return 1  # one\n")
    before = dependencies.shown_digest("metaadv_edu.m:A.f", pkg)
    (pkg / "m.py").write_text("class A:\n    @classmethod\n    def f():\n        return 1  # one\n")
    assert before and dependencies.shown_digest("metaadv_edu.m:A.f", pkg) not in {None, before}
    assert dependencies.shown_digest("metaadv_edu.m:A.g", pkg) is None


# ------------------------------------------------------------- retraining one notebook's models
TRAIN = """
import torch
from metaadv_edu import cache
def build():
    torch.manual_seed(0)
    return torch.nn.Linear(2, 1)
def train(model):
    with torch.no_grad():
        model.weight.add_(1.0)
for name in {names!r}:
    cache.load_or_train(name, {{"v": 1}}, build, train)
print("ok")
"""


def _course(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    paths = {}
    for stem, names in {"00_a": ["tiny-a", "tiny-shared"], "01_b": ["tiny-shared"], "02_c": ["tiny-c"]}.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(TRAIN.format(names=names))]
        paths[stem] = folder / f"{stem}.ipynb"
        nbformat.write(nb, str(paths[stem]))
    return paths


@pytest.mark.slow
def test_retrain_one_notebook_replaces_only_its_models_and_names_the_notebooks_that_share_them(
    tmp_path, monkeypatch, capsys
):
    package = tmp_path / "pkg"
    (package / "weights").mkdir(parents=True)
    monkeypatch.setattr(dependencies, "PACKAGE_DIR", package)
    monkeypatch.setattr(cache, "SHIPPED", package / "weights")
    course = _course(tmp_path / "notebooks")
    monkeypatch.setattr(cli, "_notebooks_dir", lambda: tmp_path / "notebooks")
    assert cli.main(["execute", "--retrain"]) == 0  # the whole course: every model shipped
    shipped = {p.name: p.read_bytes() for p in (package / "weights").glob("*.pt")}
    assert len(shipped) == 3
    stranger = package / "weights" / "unrelated-0000.pt"
    stranger.write_bytes(b"kept")
    capsys.readouterr()
    # a new training recipe for notebook 00's models
    _edit(course["00_a"], "add_(1.0)", "add_(2.0)")
    assert cli.main(["execute", "--retrain", str(course["00_a"])]) == 0
    out = capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in (package / "weights").glob("*.pt")}
    changed = {name for name in shipped if after[name] != shipped[name]}
    assert changed == {n for n in shipped if n.startswith(("tiny-a", "tiny-shared"))}
    assert stranger.read_bytes() == b"kept"
    assert "01_b.ipynb" in out and "02_c.ipynb" not in out.split("stale")[-1]
    assert notebooks.stale_reason(course["00_a"]) is None
    assert "tiny-shared" in notebooks.stale_reason(course["01_b"])
    assert notebooks.stale_reason(course["02_c"]) is None
    assert notebooks.recorded_weights(course["00_a"]) == sorted(
        n for n in after if n.startswith(("tiny-a", "tiny-shared"))
    )


VERSIONED_SOURCE = '''"""A module."""


@decorator(1)
class A(Base, metaclass=Meta):
    def f(self, x: int = 0, *args, y: float = 1.5, **kwargs) -> str:
        """A method."""
        async def g():
            async with lock:
                return [i async for i in source() if i]
        text = f"{x!r:>3}" + f"{x:<{y}}{{}}" f"{y=}" + str(lambda z, /: z)
        return text + ("u" if (w := x) else b"b").__class__.__name__


def h(t: tuple[int, ...]) -> None:
    global COUNT
    try:
        match t:
            case (1, *rest) if rest:
                pass
    except ValueError:
        del COUNT
'''


def test_the_code_digest_is_the_same_on_every_supported_python(tmp_path):
    # ast.dump writes the same tree differently on 3.11, 3.12 (type_params) and 3.13 (no empty fields):
    # a digest of that text made every notebook look stale to a contributor on another version. This
    # value was computed on Python 3.10, 3.11, 3.12 and 3.13.
    module = tmp_path / "m.py"
    module.write_text(VERSIONED_SOURCE, encoding="utf-8")
    assert dependencies.code_digest(module) == "eca5dbd8512f68a1"
    module.write_text(VERSIONED_SOURCE.replace("x!r:>3", "x!s:>3"), encoding="utf-8")
    assert dependencies.code_digest(module) != "eca5dbd8512f68a1"
