"""The course website: ``metaadv-edu site`` builds it from the stored notebooks; its pages, links and
figures are checked as files, then in headless Chromium served on loopback with every other address
blocked (equations rendered by the bundled MathJax, figures loaded, launch links right).
Screenshots go to ``test-artifacts/site/``."""

from __future__ import annotations

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
from metaadv_edu.site import launch_links, readme_sections

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "site"
STEMS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
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


def _soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _math_spans(stem: str) -> tuple[int, int]:
    """(inline, display) TeX spans in the notebook's Markdown cells."""
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    md = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    md = re.sub(r"(?s)```.*?```|`[^`\n]*`", "", md)
    display = len(re.findall(r"(?s)\$\$.+?\$\$", md))
    inline = len(re.findall(r"\$[^$\n]+\$", re.sub(r"(?s)\$\$.+?\$\$", "", md)))
    return inline, display


def _widget_images(stem: str) -> int:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    return sum(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {}) and "image/png" in o["data"]
        for c in nb.cells
        for o in c.get("outputs", [])
    )


def test_every_notebook_has_a_page_in_course_order(site):
    assert len(STEMS) == 12 and STEMS[0].startswith("00") and STEMS[9].startswith("09") and STEMS[-1].startswith("11")
    for page in ["index", *STEMS]:
        nav = [a["href"] for a in _soup(site / f"{page}.html").select(".site-nav ol a")]
        assert nav == [f"{s}.html" for s in STEMS], page
    landing = _soup(site / "index.html")
    table_links = [a["href"] for a in landing.select(".site-landing table a")]
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
    assert "Results" in landing.get_text() and first_result in landing.get_text()
    for i, stem in enumerate(STEMS):  # previous / next follow the same order
        footer = _soup(site / f"{stem}.html").select_one(".site-footer")
        nxt = footer.select_one(".site-next")
        assert (nxt["href"] if nxt else None) == (f"{STEMS[i + 1]}.html" if i + 1 < len(STEMS) else None)


@pytest.mark.parametrize("stem", STEMS)
def test_launch_bar_and_report_link_name_the_page(site, stem):
    soup = _soup(site / f"{stem}.html")
    bar = soup.select_one(".site-launch")
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


def test_every_referenced_file_exists_and_nothing_is_fetched_from_elsewhere(site):
    pages = sorted(site.glob("*.html"))
    assert len(pages) == len(STEMS) + 1
    for page in pages:
        soup = _soup(page)
        for tag, attr in (("img", "src"), ("script", "src"), ("link", "href"), ("a", "href")):
            for el in soup.find_all(tag):
                ref = el.get(attr)
                if not ref or ref.startswith(("#", "data:")) or (tag == "a" and ref.startswith("https://")):
                    continue
                assert "://" not in ref and not ref.startswith("//"), f"{page.name}: {tag} loads {ref}"
                target = site / urllib.parse.unquote(ref.split("#")[0])
                assert target.is_file(), f"{page.name}: {tag} {attr}={ref} does not exist"
        text = page.read_text(encoding="utf-8")
        assert "widget-view+json" not in text and "widget-state+json" not in text, page.name


@pytest.mark.parametrize("stem", STEMS)
def test_figures_and_explorer_stills_are_on_the_page(site, stem):
    soup = _soup(site / f"{stem}.html")
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    images = soup.select("main img")
    assert len(images) == pngs > 0
    assert all((site / img["src"]).stat().st_size > 1000 for img in images)
    notes = soup.select(".site-explorer-note")
    assert len(notes) == _widget_images(stem) >= 1
    solutions = sum("solution" in c.metadata.get("tags", []) for c in nb.cells)
    assert len(soup.select("details.site-solution")) == solutions


def test_notebook_links_point_at_pages(site):
    soup = _soup(site / "05_maml.html")
    hrefs = {a["href"] for a in soup.select("main a[href]")}
    assert "00_start_here.html" in hrefs and not any(h.endswith(".ipynb") for h in hrefs)


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


def _open(browser, url: str):
    """A page on which every request that is not to 127.0.0.1 is aborted and recorded."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
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


_RAW_TEX = re.compile(r"\$\$|\\(frac|nabla|theta|alpha|mathbb|mathcal|begin|sum|tag)\b|\$[^$\n]{0,80}\\[A-Za-z]")


@pytest.mark.browser
@pytest.mark.parametrize("stem", ["index", *STEMS])
def test_page_in_chromium_offline(browser, served, stem):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page, record = _open(browser, f"{served}/{stem}.html")
    try:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
        page.evaluate("() => MathJax.startup.promise")
        if stem != "index":  # every TeX span of the notebook became a MathJax element
            inline, display = _math_spans(stem)
            shown = page.locator("main mjx-container[display='true']").count()
            assert (page.locator("main mjx-container").count() - shown, shown) == (inline, display), stem
        assert page.locator("mjx-merror").count() == 0, f"{stem}: MathJax reports a TeX error"
        text = "\n".join(page.locator("main .jp-MarkdownCell, .site-landing").all_inner_texts())
        raw = _RAW_TEX.search(text)
        assert raw is None, f"{stem}: raw TeX visible: …{text[max(0, raw.start() - 60) : raw.end() + 60]}…"
        gap = page.evaluate("""() => Math.max(0, ...[...document.querySelectorAll('.jp-RenderedMarkdown')]
            .filter(m => m.lastElementChild)
            .map(m => m.getBoundingClientRect().bottom - m.lastElementChild.getBoundingClientRect().bottom))""")
        assert gap < 40, f"{stem}: {gap:.0f} px of empty space below a Markdown cell's text"
        sizes = page.evaluate("() => [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])")
        assert sizes and all(width > 0 for _, width in sizes), f"{stem}: images not loaded: {sizes}"
        if stem != "index":
            assert page.get_attribute(".site-binder", "href").endswith(f"notebooks%2F{stem}.ipynb")
            assert page.get_attribute(".site-colab", "href").endswith(f"/blob/main/notebooks/{stem}.ipynb")
            assert page.get_attribute(".site-download", "href") == f"{stem}.ipynb"
            assert page.locator(".site-report").is_visible()
            assert page.locator(".site-explorer-note").count() == _widget_images(stem)
        page.screenshot(path=str(ARTIFACTS / f"{stem}.png"))
        if stem != "index":  # a derivation and the explorer's still, for a person to look at
            display = page.locator("main mjx-container[display='true']")
            if display.count():
                display.nth(min(2, display.count() - 1)).evaluate("e => e.scrollIntoView({block: 'start'})")
                page.screenshot(path=str(ARTIFACTS / f"{stem}-derivation.png"))
            page.locator(".site-explorer-note").first.evaluate("e => e.scrollIntoView({block: 'end'})")
            page.screenshot(path=str(ARTIFACTS / f"{stem}-explorer.png"))
        assert record["blocked"] == [], f"{stem}: tried to reach {record['blocked']}"
        assert record["failed"] == [], f"{stem}: failed requests {record['failed']}"
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{stem}-failure.png"), full_page=True)
        raise
    finally:
        page.close()


def test_pages_leave_out_the_colab_badge_and_install_cell_that_the_launch_bar_replaces(site):
    for stem in STEMS:
        nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        assert "google.colab" in nb.cells[1].source and "colab-badge.svg" in nb.cells[0].source
        main = _soup(site / f"{stem}.html").select_one("main")
        assert "google.colab" not in main.get_text() and not main.select('img[src*="colab"]'), stem
