"""The package keeps its shape: three layers that import only downwards, and a course module for every
notebook. How long a module may be is a guideline (CONTRIBUTING.md: about 500 formatted lines for one
concept), not a test; ruff's complexity rules (C901, PLR0915 in pyproject.toml) bound each function."""

import ast
from pathlib import Path

import pytest

from metaadv_edu import notebooks

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "metaadv_edu"
TOOLING = {"cli", "notebooks", "site", "colab", "dependencies", "autograde", "submissions"}
COURSE = {"chapters", "widgets", "cache", "plotting", "panels", "display", "grading", "measure"}


def _layer(module: str) -> str:
    top = module.split(".")[0]
    return "tooling" if top in TOOLING else "course" if top in COURSE else "library"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metaadv_edu"):
            rest = node.module.removeprefix("metaadv_edu").lstrip(".")
            found |= {f"{rest}.{a.name}".lstrip(".") if not rest else rest for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("metaadv_edu.") for a in node.names if a.name.startswith("metaadv_edu.")}
    return {m for m in found if m and m not in {"pick_device", "seed_everything"}}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name != "__init__":
            yield ".".join(rel.parts), path


ORDER = {"library": 0, "course": 1, "tooling": 2}


@pytest.mark.parametrize("module, path", list(_modules()), ids=[m for m, _ in _modules()])
def test_layers_import_only_downwards(module, path):
    mine = ORDER[_layer(module)]
    upward = [m for m in _imports(path) if ORDER[_layer(m)] > mine]
    assert not upward, f"{module} ({_layer(module)}) imports {upward} from a higher layer"


def test_the_rule_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from metaadv_edu.chapters import fgsm\nfrom metaadv_edu import cli\n")
    assert {_layer(m) for m in _imports(bad)} == {"course", "tooling"}


def test_every_notebook_has_its_course_module():
    names = {p.stem.split("_", 1)[1] for p in notebooks.find_notebooks(ROOT / "notebooks")}
    modules = {p.stem for p in (PACKAGE / "chapters").glob("*.py") if p.stem != "__init__"}
    assert names == modules


def test_a_non_editable_install_gets_every_subpackage_and_the_shipped_weights():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert set(setuptools["packages"]) == packages
    assert "weights/*.pt" in setuptools["package-data"]["metaadv_edu"]


def _private_names_used(path: Path) -> list[str]:
    """``module._name`` uses and ``from metaadv_edu.module import _name`` imports of another package module's
    private names (the shared argument checks of ``_validate`` are public to the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metaadv_edu"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name != "_validate":
                    found.append(f"{node.module}.{alias.name}")
                elif node.module == "metaadv_edu" or node.module == "metaadv_edu.chapters":
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("metaadv_edu.") and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and modules[node.value.id] != "_validate"
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{modules[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("module, path", list(_modules()), ids=[m for m, _ in _modules()])
def test_no_module_uses_another_modules_private_names(module, path):
    assert not _private_names_used(path), f"{module} uses private names of other modules"


def test_the_private_name_rule_catches_both_forms(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from metaadv_edu import gan, _validate as v\nfrom metaadv_edu.maml import _check\ngan._margin(v.x)\n"
    )
    assert sorted(_private_names_used(bad)) == ["gan._margin", "metaadv_edu.maml._check"]
