"""The README quotes only numbers that the course printed, each from the notebook it names.

Every table of the README's Results section names its source: a row of the first table ends its first
column with the notebook's number, "(05)"; any other table is introduced by a paragraph that names
"notebook NN" or a stored benchmark output ``benchmarks/results/NAME.txt`` (the last paragraph before the
table that names one). Every number in a row must
appear in the stored outputs of that source, not merely somewhere in the course.
"""

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
ROW_SOURCE = re.compile(r"\((\d\d)\)\s*\|")
PARAGRAPH_SOURCE = re.compile(r"[Nn]otebook (\d\d)|benchmarks/results/([\w-]+\.txt)")


def _results(readme: str) -> str:
    return readme.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]


def quoted_rows(readme: str) -> list[tuple[str, list[str]]]:
    """Each results-table row with the sources it quotes (notebook stems' numbers or benchmark files)."""
    rows, table_sources = [], []
    for block in re.split(r"\n\s*\n", _results(readme)):
        lines = block.strip().splitlines()
        if not lines or not lines[0].startswith("|"):
            table_sources = [a or b for a, b in PARAGRAPH_SOURCE.findall(block)] or table_sources
            continue
        for line in lines[2:]:  # the header and the |---| line quote nothing
            own = ROW_SOURCE.findall(line)
            rows.append((line, own or table_sources))
    return rows


def printed(source: str) -> str:
    """The text of the stored outputs of notebook ``NN`` or of ``benchmarks/results/NAME.txt``."""
    if source.endswith(".txt"):
        return (ROOT / "benchmarks" / "results" / source).read_text(encoding="utf-8")
    (path,) = sorted((ROOT / "notebooks").glob(f"{source}_*.ipynb"))
    texts = []
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text", ""))
            texts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(texts)


def unprinted_numbers(readme: str, read=printed) -> list[str]:
    problems = []
    for row, sources in quoted_rows(readme):
        if not sources:
            problems.append(f"no source named for {row!r}")
            continue
        found = set(NUMBER.findall("\n".join(read(s) for s in sources)))
        problems += [
            f"{n} in {row!r} (not printed by {', '.join(sources)})" for n in NUMBER.findall(row) if n not in found
        ]
    return problems


def test_every_number_in_the_readme_results_was_printed_by_the_notebook_it_names():
    missing = unprinted_numbers((ROOT / "README.md").read_text(encoding="utf-8"))
    assert not missing, "README numbers that their source does not print:\n" + "\n".join(missing)


def test_the_rule_catches_a_number_typed_by_hand_or_taken_from_another_notebook():
    readme = (
        "# x\n\n## Results\n\n| a | b |\n|---|---|\n| run (01) | 57.9 % / 51.7 % |\n\n"
        "Notebook 02 gave:\n\n| c | d |\n|---|---|\n| x | 0.788 |\n\n## Next\n"
    )
    outputs = {"01": "clean 57.9 %, PGD 51.7 %", "02": "0.788"}
    assert unprinted_numbers(readme, outputs.get) == []
    assert unprinted_numbers(readme, {"01": "clean 57.9 %, PGD 51.9 %", "02": "0.788"}.get) == [
        "51.7 in '| run (01) | 57.9 % / 51.7 % |' (not printed by 01)"
    ]
    # printed, but by another notebook than the one the row names
    assert unprinted_numbers(readme, {"01": "57.9 51.7", "02": "0.78"}.get)[0].startswith("0.788")
    assert unprinted_numbers("#\n\n## Results\n\n| a |\n|---|\n| 1.5 |\n\n## N\n", outputs.get) == [
        "no source named for '| 1.5 |'"
    ]
