"""Build ``notebooks/*.ipynb`` from their plain-text sources in ``dev/notebooks/*.cells``.

The sources keep review diffs readable. Format: a line ``%% md`` starts a Markdown cell, ``%% code``
a code cell; ``%% code tags=a,b`` adds cell tags. Building writes notebooks without outputs; then
refresh them with ``metaadv-edu execute`` (or pass ``--execute`` here).

    python dev/build_notebooks.py [NAME ...] [--execute]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "dev" / "notebooks"
TARGET = ROOT / "notebooks"


def parse(text: str) -> list:
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        source = "\n".join(lines).strip("\n")
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "md"
                else nbformat.v4.new_code_cell(source))
        if tags:
            cell.metadata["tags"] = tags
        if "solution" in tags:
            cell.metadata["jupyter"] = {"source_hidden": True}
        cells.append(cell)

    for line in text.splitlines():
        if line.startswith("%% "):
            flush()
            parts = line[3:].split()
            kind, lines = parts[0], []
            tags = next((p[5:].split(",") for p in parts[1:] if p.startswith("tags=")), [])
            if kind not in ("md", "code"):
                raise ValueError(f"unknown cell kind in {line!r}")
        else:
            lines.append(line)
    flush()
    return cells


def build(name: str) -> Path:
    src = SOURCES / f"{name}.cells"
    nb = nbformat.v4.new_notebook()
    nb.cells = parse(src.read_text(encoding="utf-8"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = TARGET / f"{name}.ipynb"
    nbformat.validate(nb)
    nbformat.write(nb, str(out))
    return out


def main(argv: list[str]) -> int:
    execute = "--execute" in argv
    names = [a for a in argv if not a.startswith("--")] or sorted(p.stem for p in SOURCES.glob("*.cells"))
    for name in names:
        out = build(name)
        print(f"built {out.relative_to(ROOT)}")
        if execute:
            from metaadv_edu.notebooks import execute_notebook

            print(f"  executed in {execute_notebook(out):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
