"""The README quotes only numbers that the course printed: every number in a table of its Results
section appears in a stored notebook's outputs or in a stored benchmark output (benchmarks/results/)."""

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def _results_tables(readme: str) -> list[str]:
    section = readme.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]


def _printed() -> str:
    texts = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for out in cell.get("outputs", []):
                texts.append(out.get("text", ""))
                texts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    texts.extend(p.read_text(encoding="utf-8") for p in sorted((ROOT / "benchmarks" / "results").glob("*.txt")))
    return "\n".join(texts)


def unprinted_numbers(readme: str, printed: str) -> list[str]:
    found = set(NUMBER.findall(printed))
    return [f"{n} in {row!r}" for row in _results_tables(readme) for n in NUMBER.findall(row) if n not in found]


def test_every_number_in_the_readme_results_was_printed_by_the_course():
    missing = unprinted_numbers((ROOT / "README.md").read_text(encoding="utf-8"), _printed())
    assert not missing, "README numbers that no stored output prints:\n" + "\n".join(missing)


def test_the_rule_catches_a_number_typed_by_hand():
    readme = "# x\n\n## Results\n\n| a | b |\n|---|---|\n| run | 57.9 % / 51.7 % |\n\n## Next\n"
    assert unprinted_numbers(readme, "clean 57.9 %, PGD 51.7 %") == []
    assert unprinted_numbers(readme, "clean 57.9 %, PGD 51.9 %") == ["51.7 in '| run | 57.9 % / 51.7 % |'"]
