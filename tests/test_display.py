"""The notebooks' display helpers: tables as aligned text outside a notebook and as HTML inside one."""

from __future__ import annotations

import pytest

from metaadv_edu import display


def test_outside_a_notebook_the_table_is_printed_as_aligned_text(capsys):
    text = display.table([["standard", 0.5], ["PGD-trained", 0.75]], ["model", "PGD"])
    assert capsys.readouterr().out == text + "\n"
    lines = text.splitlines()
    assert lines[0].split() == ["model", "PGD"]
    assert set(lines[1]) == {"-", " "}
    assert lines[3].endswith("0.750") and len({len(line) for line in lines}) == 1


def test_in_a_notebook_the_table_is_html_with_the_text_beside_it(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(display, "_notebook_shell", lambda: object())
    monkeypatch.setattr("IPython.display.display", lambda bundle, raw: shown.append((bundle, raw)))
    text = display.table([["<b>", 1.0]], ["a & b", "x"])
    assert capsys.readouterr().out == ""
    ((bundle, raw),) = shown
    assert raw and bundle["text/plain"] == text
    html = bundle["text/html"]
    assert "<th>a &amp; b</th>" in html and "<td" in html and "&lt;b&gt;" in html and "<b>" not in html
    assert "overflow-x:auto" in html  # a wide table scrolls in its own box on a phone


def test_a_row_with_the_wrong_number_of_cells_is_refused():
    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells; headers has 2"):
        display.table([["a", 1], ["b"]], ["name", "value"])
