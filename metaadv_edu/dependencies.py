"""What a notebook's stored outputs depend on, so that they go stale only when that changes.

When ``metaadv-edu execute`` runs a notebook, the kernel reports at the end which of this package's
modules it imported, which model files the load-or-train cache loaded or wrote (:data:`cache.LOADED`), and
which functions the notebook displayed with :func:`display.show_source` (:data:`display.SHOWN`). The
notebook's metadata records a digest of each:

* a **module** by its code only: the syntax tree without docstrings, comments or layout, so a docstring
  fix or a reformatting leaves the notebooks that import it current;
* a **shown function** by its exact text, docstring and comments included, because the notebook prints it;
* a **weight file** of the package (``metaadv_edu/weights/``) by its bytes.

A notebook is stale when any recorded digest differs from the current files, or a recorded file is gone.
Modules it never imported cannot change its outputs and are not looked at.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

__all__ = [
    "REPORT_MARK",
    "changed",
    "code_digest",
    "module_path",
    "record",
    "report_code",
    "shown_digest",
    "weight_digest",
]

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name

#: Prefix of the line the kernel prints with its report (see :func:`report_code`).
REPORT_MARK = "metaadv-edu-dependencies:"


def report_code() -> str:
    """Code for the notebook's kernel, run after its last cell: print what the run depended on."""
    return (
        "import json as _json, sys as _sys\n"
        "print(" + repr(REPORT_MARK) + " + _json.dumps({\n"
        f"    'modules': sorted(m for m in _sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE + '.'!r})),\n"
        f"    'weights': sorted(getattr(_sys.modules.get({PACKAGE + '.cache'!r}), 'LOADED', ())),\n"
        f"    'shown': sorted(getattr(_sys.modules.get({PACKAGE + '.display'!r}), 'SHOWN', ())),\n"
        "}))\n"
    )


def module_path(module: str, package_dir: Path | None = None) -> Path:
    """The file of a package module, e.g. ``metaadv_edu.chapters.maml`` → ``chapters/maml.py``."""
    package_dir = package_dir or PACKAGE_DIR
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"module must be a {PACKAGE} module, got {module!r}")
    base = package_dir.joinpath(*parts[1:])
    return base / "__init__.py" if (base / "__init__.py").exists() or len(parts) == 1 else base.with_suffix(".py")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return tree


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _canonical(node) -> str:
    # ast.dump's text changes between Python versions even for the same code (3.12 adds ``type_params=[]``
    # to every function and class, 3.13 leaves out empty fields), so a notebook executed on one version
    # would look stale on another. This form names each node and its non-empty fields only.
    if isinstance(node, ast.JoinedStr):  # 3.12 splits f-strings' constant parts differently (f"{x:<{w}}" gains a '')
        parts: list = []
        for part in node.values:
            if isinstance(part, ast.Constant) and parts and isinstance(parts[-1], ast.Constant):
                parts[-1] = ast.Constant(parts[-1].value + part.value)
            elif not (isinstance(part, ast.Constant) and part.value == ""):
                parts.append(part)
        return f"JoinedStr(values={_canonical(parts)})"
    if isinstance(node, ast.AST):
        fields = [f"{name}={_canonical(value)}" for name, value in ast.iter_fields(node) if value not in (None, [])]
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_canonical(item) for item in node) + "]"
    return repr(node)


def code_digest(path: Path) -> str | None:
    """Digest of a module's code (its syntax tree without docstrings, comments or layout); None if missing.

    The same code gives the same digest on Python 3.10 to 3.13 (checked with each)."""
    if not path.exists():
        return None
    tree = _without_docstrings(ast.parse(path.read_text(encoding="utf-8")))
    return _hash(_canonical(tree).encode())


def _find(tree: ast.AST, qualname: str) -> ast.AST | None:
    node = tree
    for name in qualname.split("."):
        found = [
            n
            for n in getattr(node, "body", [])
            if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name
        ]
        if not found:
            return None
        node = found[-1]
    return node


def shown_digest(shown: str, package_dir: Path | None = None) -> str | None:
    """Digest of the exact source text of ``"module:qualname"`` (decorators, docstring and comments
    included), as :func:`display.show_source` prints it; None if it no longer exists."""
    module, _, qualname = shown.partition(":")
    path = module_path(module, package_dir)
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    node = _find(ast.parse(text), qualname)
    if node is None:
        return None
    lines = text.splitlines()
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return _hash("\n".join(lines[start - 1 : node.end_lineno]).encode())


def weight_digest(name: str, package_dir: Path | None = None) -> str | None:
    """Digest of a shipped weight file's bytes; None when the package ships no file of that name."""
    path = (package_dir or PACKAGE_DIR) / "weights" / name
    return _hash(path.read_bytes()) if path.exists() else None


def record(report: dict, package_dir: Path | None = None) -> dict:
    """The digests to store in a notebook's metadata, from the kernel's report (see :func:`report_code`)."""
    return {
        "modules": {m: code_digest(module_path(m, package_dir)) for m in report.get("modules", [])},
        "shown": {s: shown_digest(s, package_dir) for s in report.get("shown", [])},
        "weights": {w: weight_digest(w, package_dir) for w in report.get("weights", [])},
    }


def changed(recorded: dict, package_dir: Path | None = None) -> list[str]:
    """What differs from the recorded digests, in words (empty when the notebook is current)."""
    reasons = []
    for module, digest in recorded.get("modules", {}).items():
        if code_digest(module_path(module, package_dir)) != digest:
            reasons.append(f"the code of {module} changed")
    for shown, digest in recorded.get("shown", {}).items():
        if shown_digest(shown, package_dir) != digest:
            reasons.append(f"the shown source of {shown.replace(':', '.')} changed")
    for name, digest in recorded.get("weights", {}).items():
        if weight_digest(name, package_dir) != digest:
            reasons.append(f"the shipped weights {name} changed")
    return reasons
