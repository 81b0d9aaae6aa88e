"""The course website: ``metaadv-edu site`` builds it with Sphinx from the stored notebooks; its pages,
links and figures are checked as files, then in headless Chromium served on loopback with every other
address blocked (equations rendered by the bundled MathJax, figures loaded, launch links right, search,
previous / next, the API reference, a phone-width screen). Screenshots go to ``test-artifacts/site/``."""

from __future__ import annotations

import copy
import functools
import http.server
import re
import threading
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

from metaadv_edu.cli import main
from metaadv_edu.site import api_page, launch_links, readme_sections, site_links, stage_sources, still_outputs

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "site"
STEMS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the reference pages after the notebooks, in the sidebar's and previous / next order
EXTRA = [doc for name, doc in (("TEACHING.md", "teaching"), ("REFERENCES.md", "references")) if (ROOT / name).is_file()]
ORDER = ["index", *STEMS, *EXTRA, "api"]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = "metaadv-edu/metaadv-edu"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "site"
    assert main(["site", str(out), "--root", str(ROOT)]) == 0
    return out


@functools.cache
def _soup(path: Path) -> BeautifulSoup:
    """The parsed page, parsed once for all the tests (a test that changes it works on a copy)."""
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _math_spans(stem: str) -> tuple[int, int]:
    """(inline, display) TeX spans in the notebook's Markdown cells."""
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    md = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    md = re.sub(r"(?s)```.*?```|`[^`\n]*`", "", md)
    display = len(re.findall(r"(?s)\$\$.+?\$\$", md))
    # inline math may continue on the paragraph's next line, never across a blank line
    inline = len(re.findall(r"\$(?:[^$\n]|\n(?!\n))+\$", re.sub(r"(?s)\$\$.+?\$\$", "", md)))
    return inline, display


def _widget_images(stem: str) -> int:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    return sum(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) and "image/png" in o["data"]
        for c in nb.cells
        for o in c.get("outputs", [])
    )


def _sidebar(soup: BeautifulSoup, page: str) -> list[str]:
    """The pages the left sidebar links to, in order (the current page's own link is '#')."""
    return [a["href"] if a["href"] != "#" else f"{page}.html" for a in soup.select(".bd-sidenav a")]


def test_every_notebook_has_a_page_in_course_order(site):
    assert len(STEMS) == 12 and STEMS[0].startswith("00") and STEMS[9].startswith("09") and STEMS[-1].startswith("11")
    for page in ORDER:
        assert _sidebar(_soup(site / f"{page}.html"), page) == [f"{p}.html" for p in ORDER], page
    landing = _soup(site / "index.html")
    table_links = [a["href"] for a in landing.select("article table a")]
    assert [h for h in table_links if h.endswith(".html")] == [f"{s}.html" for s in STEMS]
    results = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    first_result = (
        next(
            line
            for line in results.splitlines()
            if line.startswith("| ") and "---" not in line and not line.startswith("| experiment")
        )
        .split("|")[2]
        .strip()
    )
    text = landing.select_one("article").get_text()
    assert "Results" in text and first_result in text
    for i, page in enumerate(ORDER):  # previous / next follow the same order
        soup = _soup(site / f"{page}.html")
        prev, nxt = soup.select_one(".prev-next-area a.left-prev"), soup.select_one(".prev-next-area a.right-next")
        assert (prev["href"] if prev else None) == (f"{ORDER[i - 1]}.html" if i else None), page
        assert (nxt["href"] if nxt else None) == (f"{ORDER[i + 1]}.html" if i + 1 < len(ORDER) else None), page


@pytest.mark.parametrize("stem", STEMS)
def test_launch_bar_and_report_link_name_the_page(site, stem):
    soup = _soup(site / f"{stem}.html")
    bar = soup.select_one("article .site-launch")
    assert bar.select_one(".site-binder")["href"] == (
        f"https://mybinder.org/v2/gh/{REPO}/HEAD?urlpath=lab%2Ftree%2Fnotebooks%2F{stem}.ipynb"
    )
    assert bar.select_one(".site-colab")["href"] == (
        f"https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{stem}.ipynb"
    )
    download = bar.select_one(".site-download")
    assert download["href"] == f"{stem}.ipynb" and download.has_attr("download")
    assert (site / f"{stem}.ipynb").read_bytes() == (ROOT / "notebooks" / f"{stem}.ipynb").read_bytes()
    report = urllib.parse.urlsplit(bar.select_one(".site-report")["href"])
    assert (report.scheme, report.netloc, report.path) == ("https", "github.com", f"/{REPO}/issues/new")
    query = urllib.parse.parse_qs(report.query)
    assert stem in query["title"][0] and f"notebooks/{stem}.ipynb" in query["body"][0]
    assert "report a mistake on this page" in bar.get_text().lower()


def test_reference_pages_have_no_launch_bar(site):
    for page in ["index", *EXTRA, "api", "search"]:
        assert _soup(site / f"{page}.html").select_one(".site-launch") is None, page


def test_every_referenced_file_exists_and_nothing_is_fetched_from_elsewhere(site):
    pages = sorted(site.glob("*.html"))
    assert {p.stem for p in pages} == {*ORDER, "search", "genindex", "py-modindex"}
    for page in pages:
        soup = _soup(page)
        for tag, attr in (("img", "src"), ("script", "src"), ("link", "href"), ("a", "href")):
            for el in soup.find_all(tag):
                ref = el.get(attr)
                if not ref or ref.startswith(("#", "data:")) or (tag == "a" and ref.startswith("https://")):
                    continue
                assert "://" not in ref and not ref.startswith("//"), f"{page.name}: {tag} loads {ref}"
                target = site / urllib.parse.unquote(ref.split("#")[0].split("?")[0])
                assert target.is_file(), f"{page.name}: {tag} {attr}={ref} does not exist"
        text = page.read_text(encoding="utf-8")
        assert "widget-view+json" not in text and "widget-state+json" not in text, page.name
        assert "require.js" not in text and "jsdelivr" not in text and "unpkg" not in text, page.name
    for css in site.glob("_static/**/*.css"):  # a stylesheet must not pull fonts from a web service
        assert not re.search(r"@import\s+url\(\s*['\"]?(https?:)?//", css.read_text(encoding="utf-8")), css


@pytest.mark.parametrize("stem", STEMS)
def test_figures_and_explorer_stills_are_on_the_page(site, stem):
    soup = _soup(site / f"{stem}.html")
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    images = soup.select("article img")
    assert len(images) == pngs > 0
    assert all((site / img["src"]).stat().st_size > 1000 for img in images)
    assert all(len(img.get("alt", "").split()) >= 6 for img in images), "an image has no descriptive alt text"
    notes = soup.select("article .site-explorer-note")
    assert len(notes) == _widget_images(stem) >= 1
    solutions = sum("solution" in c.metadata.get("tags", []) for c in nb.cells)
    folded = soup.select("article details.site-solution")
    assert len(folded) == solutions
    assert all(d.select_one(".cell.tag_solution") and not d.has_attr("open") for d in folded)
    assert not soup.select(".cell.tag_solution:not(details.site-solution .cell)")


def test_question_shows_and_answer_folds():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# T\n\nWhy?", metadata={"tags": ["question"]}),
        nbformat.v4.new_markdown_cell(
            "<details><summary>Answer</summary>\n\nBecause.\n\n</details>", metadata={"tags": ["answer"]}
        ),
    ]
    assert [c.source for c in still_outputs(nb).cells] == [c.source for c in nb.cells]
    nb.cells[1].source = "<details><summary>Answer</summary> Because $x > 0$.</details>"
    md = still_outputs(nb).cells[1].source  # Markdown to MyST, as it is to Jupyter: its $x > 0$ renders
    assert md == "<details><summary>Answer</summary>\n\nBecause $x > 0$.\n\n</details>"


def test_explorer_keeps_its_still_with_a_note_and_alt_text_comes_from_cell_metadata():
    widget = {"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "image/png": "iVBORw0KGgo="}
    still = nbformat.v4.new_output("display_data", data={**widget, "text/plain": "Explorer: ε = 0.1"})
    bar = nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {}})
    nb = nbformat.v4.new_notebook(metadata={"widgets": {"state": {}}})
    nb.cells = [
        nbformat.v4.new_code_cell("explore()", outputs=[bar, still]),
        nbformat.v4.new_code_cell("plot()", outputs=[still], metadata={"mystnb": {"image": {"alt": "Loss curve"}}}),
    ]
    out = still_outputs(nb)
    assert "widgets" not in out.metadata
    first = out.cells[0].outputs
    assert [list(o.get("data", {})) for o in first] == [["image/png", "text/plain"], ["text/html"]]
    assert "site-explorer-note" in first[1].data["text/html"]
    assert out.cells[0].metadata["mystnb"]["image"]["alt"] == "Explorer: ε = 0.1"
    assert out.cells[1].metadata["mystnb"]["image"]["alt"] == "Loss curve"


def test_links_to_documents_go_to_their_page_or_to_github():
    text = "[a](README.md#for-teachers) [b](../TEACHING.md#grading) [c](REFERENCES.md) [d](CONTRIBUTING.md)"
    assert site_links(text) == (
        "[a](https://github.com/metaadv-edu/metaadv-edu#for-teachers) [b](teaching.md#grading) "
        "[c](references.md) [d](https://github.com/metaadv-edu/metaadv-edu/blob/main/CONTRIBUTING.md)"
    )
    untouched = "[n](05_maml.ipynb) [w](https://example.org/x.md) [h](#here)"
    assert site_links(untouched, base="notebooks") == untouched
    assert site_links("[s](src/05_maml.md)", base="notebooks").endswith("/blob/main/notebooks/src/05_maml.md)")


@pytest.mark.parametrize("stem", STEMS)
def test_every_figure_of_a_notebook_has_alt_text_saying_what_it_shows(stem):
    """Alt text comes from the cell's ``mystnb.image.alt``: a description, not "figure" or slider values."""
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt.split()) >= 6, f"{stem}, cell {cell.get('id')}: no alt text in its metadata"
            assert not alt.lower().startswith(("figure", "explorer:", "<figure")), alt


def test_notebook_links_point_at_pages(site):
    soup = copy.copy(_soup(site / "05_maml.html"))
    for bar in soup.select(".site-launch"):
        bar.decompose()
    hrefs = {a["href"] for a in soup.select("article a[href]")}
    assert "00_start_here.html" in hrefs and not any(h.endswith(".ipynb") for h in hrefs)


def test_api_reference_documents_the_library_and_leaves_out_the_tooling(site):
    source = api_page()
    assert ".. automodule:: metaadv_edu.stats" in source and ".. automodule:: metaadv_edu.chapters.maml" in source
    assert "metaadv_edu.site" not in source and "metaadv_edu.cli" not in source
    soup = _soup(site / "api.html")
    mean_ci = soup.select_one('dt[id="metaadv_edu.stats.mean_ci"]')
    assert mean_ci is not None
    described = mean_ci.find_next_sibling("dd").get_text()
    assert "Parameters" in described
    assert not soup.select(".problematic"), "a docstring's markup did not parse"


def test_sources_list_teaching_and_references_after_the_notebooks_in_course_order(tmp_path):
    root, src = tmp_path / "repo", tmp_path / "src"
    (root / "notebooks").mkdir(parents=True)
    src.mkdir()
    for stem in ["10_new", "09_next", "00_start"]:  # found by their names, in course order
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# Title {stem}")])
        nbformat.write(nb, root / "notebooks" / f"{stem}.ipynb")
    (root / "README.md").write_text(
        "# c\n\nAn intro.\n\n## The notebooks\n\n[n](notebooks/09_next.ipynb), [p](#performance)\n"
    )
    (root / "TEACHING.md").write_text("# Teaching\n")
    (root / "REFERENCES.md").write_text("# References\n")
    paths = sorted((root / "notebooks").glob("*.ipynb"))
    pages = stage_sources(root, src, paths)
    assert [(p.stem, p.title) for p in pages] == [(s, f"Title {s}") for s in ["00_start", "09_next", "10_new"]]
    index = (src / "index.md").read_text()
    entries = [line for line in index.splitlines() if re.fullmatch(r"[0-9a-z_]+", line)]
    assert entries == ["00_start", "09_next", "10_new", "teaching", "references", "api"]
    assert "[n](09_next.ipynb)" in index and f"[p](https://github.com/{REPO}#performance)" in index
    assert (src / "teaching.md").read_text() == "# Teaching\n" and (src / "references.md").is_file()
    assert (src / "_static" / "mathjax" / "tex-svg-full.js").stat().st_size > 100_000


def test_landing_page_rejoins_a_table_split_by_a_blank_line():
    readme = "# t\n\nintro\n\n## The notebooks\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n\n## Other\n\nx\n"
    md = readme_sections(readme)
    assert "| 1 | 2 |\n| 3 | 4 |" in md and "Other" not in md and "intro" in md


def test_launch_links_reject_a_name_that_is_not_a_notebook():
    with pytest.raises(ValueError, match="stem"):
        launch_links("../etc", "x")


def test_site_refuses_to_overwrite_a_folder_it_did_not_build(capsys, tmp_path):
    assert main(["site", str(ROOT / "notebooks"), "--root", str(ROOT)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["site", str(tmp_path), "--root", str(ROOT)]) == 2
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_pages_leave_out_the_colab_badge_and_install_cell_that_the_launch_bar_replaces(site):
    for stem in STEMS:
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        assert "google.colab" in nb.cells[1].source and "colab-badge.svg" in nb.cells[0].source
        article = _soup(site / f"{stem}.html").select_one("article")
        assert "google.colab" not in article.get_text() and not article.select('img[src*="colab"]'), stem


# ---------------------------------------------------------------- in the browser, network off


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _open(browser, url: str, width: int = 1300):
    """A page on which every request that is not to 127.0.0.1 is aborted and recorded."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    record = {"blocked": [], "failed": []}

    def route(r):
        if urllib.parse.urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            record["blocked"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("response", lambda resp: resp.status >= 400 and record["failed"].append(f"{resp.status} {resp.url}"))
    page.goto(url, wait_until="load")
    return page, record


def _typeset(page) -> None:
    """Wait until MathJax has typeset the page (Sphinx loads it only on pages with an equation)."""
    if not page.locator("script[src*='_static/mathjax/']").count():
        return
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")


def _offline(record: dict, name: str) -> None:
    assert record["blocked"] == [], f"{name}: tried to reach {record['blocked']}"
    assert record["failed"] == [], f"{name}: failed requests {record['failed']}"


_RAW_TEX = re.compile(r"\$\$|\\(frac|nabla|theta|alpha|mathbb|mathcal|begin|sum|tag)\b|\$[^$\n]{0,80}\\[A-Za-z]")
# the article's prose: without code cells (their source may hold TeX in strings) and the launch bar
_PROSE = """() => { const a = document.querySelector('article').cloneNode(true);
    a.querySelectorAll('.cell, .site-launch, mjx-container').forEach(e => e.remove()); return a.innerText; }"""


@pytest.mark.browser
@pytest.mark.parametrize("stem", ["index", *STEMS])
def test_page_in_chromium_offline(browser, served, stem):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page, record = _open(browser, f"{served}/{stem}.html")
    try:
        _typeset(page)
        if stem != "index":  # every TeX span of the notebook became a MathJax element
            assert page.locator("script[src*='_static/mathjax/']").count() == 1, f"{stem}: MathJax not loaded"
            inline, display = _math_spans(stem)
            shown = page.locator("article mjx-container[display='true']").count()
            assert (page.locator("article mjx-container").count() - shown, shown) == (inline, display), stem
        assert page.locator("mjx-merror").count() == 0, f"{stem}: MathJax reports a TeX error"
        text = page.evaluate(_PROSE)
        raw = _RAW_TEX.search(text)
        assert raw is None, f"{stem}: raw TeX visible: …{text[max(0, raw.start() - 60) : raw.end() + 60]}…"
        page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")  # images load when scrolled to
        page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        sizes = page.evaluate("() => [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert sizes and all(width > 0 for _, width in sizes), f"{stem}: images not loaded: {sizes}"
        page.evaluate("() => window.scrollTo(0, 0)")
        if stem != "index":
            assert page.get_attribute(".site-binder", "href").endswith(f"notebooks%2F{stem}.ipynb")
            assert page.get_attribute(".site-colab", "href").endswith(f"/blob/main/notebooks/{stem}.ipynb")
            assert page.get_attribute(".site-download", "href") == f"{stem}.ipynb"
            assert page.locator(".site-report").is_visible()
            assert page.locator(".site-explorer-note").count() == _widget_images(stem)
            solution = page.locator("details.site-solution").first
            if solution.count():  # folded until its summary is clicked
                assert not solution.locator(".cell_input").is_visible()
                solution.locator("summary").click()
                assert solution.locator(".cell_input").is_visible()
        page.screenshot(path=str(ARTIFACTS / f"{stem}.png"))
        if stem != "index":  # a derivation and the explorer's still, for a person to look at
            display = page.locator("article mjx-container[display='true']")
            if display.count():
                display.nth(min(2, display.count() - 1)).evaluate("e => e.scrollIntoView({block: 'start'})")
                page.screenshot(path=str(ARTIFACTS / f"{stem}-derivation.png"))
            page.locator(".site-explorer-note").first.evaluate("e => e.scrollIntoView({block: 'end'})")
            page.screenshot(path=str(ARTIFACTS / f"{stem}-explorer.png"))
        _fits_a_phone(page, stem)  # the same page on a phone's screen: one load and typesetting for both
        _offline(record, stem)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{stem}-failure.png"), full_page=True)
        raise
    finally:
        page.close()


@pytest.mark.browser
def test_search_finds_a_term_offline(browser, served):
    page, record = _open(browser, f"{served}/index.html")
    try:
        # the theme's search box, opened as a learner opens it
        page.locator("button.search-button-field:visible").first.click()
        box = page.locator("#pst-search-dialog input[name='q']")
        box.fill("Reptile")
        box.press("Enter")
        page.wait_for_url("**/search.html?q=Reptile*")
        results = page.locator("#search-results ul.search li")
        results.first.wait_for(timeout=30_000)
        hrefs = [a.get_attribute("href") for a in results.locator("a").all()]
        assert any(h.split("?")[0].split("#")[0] == "06_reptile.html" for h in hrefs), hrefs
        page.screenshot(path=str(ARTIFACTS / "search.png"))
        _offline(record, "search")
    finally:
        page.close()


@pytest.mark.browser
def test_previous_and_next_links_navigate(browser, served):
    # two light pages (no equations to typeset); test_every_notebook_has_a_page_in_course_order checks every link
    first, second = ORDER[-3], ORDER[-2]
    page, record = _open(browser, f"{served}/{first}.html")
    try:
        page.locator(".prev-next-area a.right-next").click()
        page.wait_for_url(f"**/{second}.html")
        assert page.locator("article h1").count() == 1
        page.locator(".prev-next-area a.left-prev").click()
        page.wait_for_url(f"**/{first}.html")
        _offline(record, "prev/next")
    finally:
        page.close()


@pytest.mark.browser
def test_api_page_shows_a_documented_function_offline(browser, served):
    page, record = _open(browser, f"{served}/api.html#metaadv_edu.stats.mean_ci")
    try:
        _typeset(page)
        entry = page.locator('dt[id="metaadv_edu.stats.mean_ci"]')
        assert entry.is_visible() and "mean_ci" in entry.inner_text()
        described = page.locator('dt[id="metaadv_edu.stats.mean_ci"] + dd')
        assert "Parameters" in described.inner_text() and described.locator("dl.field-list").count() >= 1
        page.screenshot(path=str(ARTIFACTS / "api.png"))
        _fits_a_phone(page, "api")  # the same page on a phone's screen
        _offline(record, "api")
    finally:
        page.close()


def _fits_a_phone(page, stem: str) -> None:
    """At 390 px (a phone), neither the page nor a printed output scrolls sideways."""
    page.set_viewport_size({"width": 390, "height": 900})
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{stem}: the page is {overflow} px wider than a 390 px screen"
    wide = page.evaluate(
        "() => [...document.querySelectorAll('.cell_output pre')]"
        ".filter(p => p.scrollWidth > p.clientWidth + 1).map(p => p.textContent.slice(0, 60))"
    )
    assert wide == [], f"{stem}: printed output scrolls sideways on a phone: {wide}"
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"{stem}-390px.png"))


@pytest.mark.browser
@pytest.mark.parametrize("stem", [page for page in ORDER if page not in ["index", *STEMS, "api"]])
def test_text_does_not_scroll_sideways_on_a_phone(browser, served, stem):
    # the landing page, the notebooks' pages and the API page are checked at phone width where they are opened
    page, record = _open(browser, f"{served}/{stem}.html")
    try:
        _typeset(page)
        _fits_a_phone(page, stem)
        _offline(record, stem)
    finally:
        page.close()
