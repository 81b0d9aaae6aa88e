"""The course website: the stored, executed notebooks as a Sphinx site, in course order.

``metaadv-edu site [OUTDIR]`` (default ``build/site``) lays the site's sources out in a temporary
folder and runs Sphinx on them with ``docs/conf.py`` (myst-nb, sphinx-book-theme): a landing page
from the README's introduction, notebook table and results; one page per ``notebooks/NN_*.ipynb``
from its stored outputs (nothing is executed); ``TEACHING.md`` and ``REFERENCES.md`` when the
repository has them; and an API reference that autodoc builds from the package's docstrings. Sphinx
adds the search page and the previous / next links.

The pages load nothing from another host. MathJax is copied in from the ``django-static-mathjax``
package (``docs/requirements.txt``). Widget outputs keep only the image stored with them: an
explorer shows the still of its first figure, with a note on where its sliders run, and no widget
script is loaded. This module is also the Sphinx extension named in ``docs/conf.py``: it puts a
launch bar (Binder, Colab, the ``.ipynb``, "report a mistake") on every notebook page and folds the
solution cells into ``<details>``.

This is tooling: neither the library nor the course layer imports it.
"""

from __future__ import annotations

import copy
import html
import importlib
import io
import pkgutil
import posixpath
import re
import shutil
import tempfile
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REPO",
    "Page",
    "api_page",
    "build_site",
    "launch_links",
    "readme_sections",
    "setup",
    "stage_sources",
    "still_outputs",
]

REPO = "metaadv-edu/metaadv-edu"
BRANCH = "main"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MATHJAX_BUNDLE = "tex-svg-full.js"  # SVG output, every TeX extension built in: loads nothing else
MARKER = ".metaadv-edu-site"  # written into every build, so that a rebuild may replace the folder
TOOLING = ("cli", "colab", "notebooks", "site")  # modules left out of the API reference
SOLUTION_SUMMARY = "A solution (try the exercise first)"
EXPLORER_NOTE = (
    '<p class="site-explorer-note">A still of this explorer\'s figure. Its sliders run in a live notebook: '
    "launch this page on Binder or Colab (buttons at the top).</p>"
)
_NOTEBOOK = re.compile(r"[0-9]{2}_[A-Za-z0-9_]+")

SITE_CSS = """
.site-launch { display: flex; flex-wrap: wrap; gap: .5rem; padding: 0 0 1rem 0;
  border-bottom: 1px solid var(--pst-color-border); margin-bottom: 1rem; }
.site-launch a { padding: .25rem .7rem; border: 1px solid var(--pst-color-border); border-radius: 4px;
  text-decoration: none; font-size: .85rem; }
.site-launch a.site-report { margin-left: auto; }
.site-explorer-note { font-size: .85rem; font-style: italic; margin: .2rem 0 0 0; }
details.site-solution { margin: .5rem 0; border: 1px dashed var(--pst-color-border); border-radius: 4px;
  padding: .3rem .6rem; }
details.site-solution > summary { cursor: pointer; color: var(--pst-color-link); }
mjx-assistive-mml { height: 1px !important; }  /* MathML kept for screen readers must not stretch the page */
.bd-article img { max-width: 100%; height: auto; }
/* on a phone, a wide equation or a long signature scrolls or wraps by itself; the page does not */
mjx-container[display="true"], div.math, dl.py > dd { overflow-x: auto; overflow-y: hidden; max-width: 100%; }
dt.sig, dt.sig span.pre, .bd-article :not(pre) > code, .bd-article :not(pre) > code span.pre {
  overflow-wrap: anywhere; white-space: normal; }
/* printed results wrap on a narrow screen (tables are HTML, so no alignment is lost); code keeps its lines */
.bd-article .cell_output pre { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


@dataclass(frozen=True)
class Page:
    stem: str  # notebook name without .ipynb; "index" for the landing page
    title: str

    @property
    def href(self) -> str:
        return f"{self.stem}.html"


def launch_links(stem: str, title: str, repo: str = REPO, branch: str = BRANCH) -> dict[str, str]:
    """Binder, Colab, download and "report a mistake" addresses for the notebook ``stem``."""
    if not _NOTEBOOK.fullmatch(stem):
        raise ValueError(f"stem must name a course notebook like '05_maml', got {stem!r}")
    body = (
        f"Page: {title} (notebooks/{stem}.ipynb)\n\n"
        "Where (section or equation):\n\nWhat is wrong, and what it should say:\n"
    )
    query = urllib.parse.urlencode({"title": f"Mistake in {stem}: ", "body": body}, quote_via=urllib.parse.quote)
    return {
        "binder": f"https://mybinder.org/v2/gh/{repo}/HEAD?urlpath=lab%2Ftree%2Fnotebooks%2F{stem}.ipynb",
        "colab": f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{stem}.ipynb",
        "download": f"{stem}.ipynb",
        "report": f"https://github.com/{repo}/issues/new?{query}",
    }


def _title(nb, stem: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return stem


def _alt(out) -> str:
    text = out.get("data", {}).get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return "figure" if not text or text.startswith("<Figure") else text.splitlines()[0]


def _markdown_in_details(source: str) -> str:
    """Blank lines around a ``<details>`` block's text, so that MyST reads it (and its equations) as Markdown.

    Jupyter renders Markdown inside ``<details><summary>…</summary> … </details>`` on one line; to
    CommonMark, which MyST follows, that is one raw HTML block whose ``$…$`` would stay raw TeX.
    """
    source = re.sub(r"(</summary>)[ \t]*\n?(?!\n)", r"\1\n\n", source)
    return re.sub(r"(?<!\n\n)(?<!^)[ \t]*(</details>)", r"\n\n\1", source)


def still_outputs(nb):
    """A copy of ``nb`` in which every widget output keeps only the image stored beside it.

    A widget view cannot be rendered without a kernel; the course stores each explorer's first figure
    as a PNG in the same output, so the page shows that, followed by a note on where the sliders run.
    Widget outputs with nothing else to show (a progress bar's text) are dropped, and so is the
    notebook's widget state (myst-nb would load the widget scripts from a CDN for it). The text of a
    folded answer is set apart from its ``<details>`` tags by blank lines. The Colab badge
    and the Colab-only install cell are left out: the page's launch bar does their job. An image's alt
    text is the cell's ``mystnb.image.alt`` metadata where the notebook sets it, else the first line of
    the output's text.
    """
    from nbformat.v4 import new_output

    from metaadv_edu.colab import COLAB_CELL

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    nb.cells = [c for c in nb.cells if not (c.cell_type == "code" and c.source.strip() == COLAB_CELL.strip())]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            cell.source = _markdown_in_details(
                "\n".join(line for line in lines if not line.startswith("[![Open in Colab]"))
            )
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            explorer = WIDGET_VIEW in data
            data.pop(WIDGET_VIEW, None)
            if explorer and not set(data) - {"text/plain"}:
                continue
            if "image/png" in data:
                image = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})
                image.setdefault("alt", _alt(out))
            kept.append(out)
            if explorer:
                kept.append(new_output("display_data", data={"text/html": EXPLORER_NOTE}))
        cell.outputs = kept
    return nb


def readme_sections(readme: str) -> str:
    """The landing page's Markdown: the README's introduction, notebook table and results."""
    readme = re.sub(r"(?m)^(\|.*)\n\s*\n(?=\|)", r"\1\n", readme)  # rows split by a stray blank line
    parts = re.split(r"(?m)^## ", readme)
    intro = "\n".join(line for line in parts[0].splitlines() if not line.startswith("[!["))
    keep = [intro]
    for part in parts[1:]:
        heading = part.splitlines()[0].strip()
        if heading in ("The notebooks", "Results"):
            keep.append("## " + part)
    return "\n\n".join(keep)


def api_page(package: str = "metaadv_edu") -> str:
    """The API reference's MyST source: one autodoc section per public module of ``package``.

    The package's modules come first, then each notebook's chapter module; the tooling (``TOOLING``:
    the command line, notebook execution, this site) is left out.
    """
    pkg = importlib.import_module(package)
    modules = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") and not m.ispkg]
    chapters = importlib.import_module(f"{package}.chapters")
    course = [m.name for m in pkgutil.iter_modules(chapters.__path__) if not m.name.startswith("_")]
    lines = [
        "# API reference",
        "",
        f"The documented public functions and classes of the `{package}` package, from their docstrings: "
        "first the package's modules, then the chapter module of each notebook (its helpers and the graders "
        "of its exercises).",
        "",
    ]
    for heading, prefix, names in (
        ("Modules", "", [m for m in modules if m not in TOOLING]),
        ("Chapter modules (`chapters`)", "chapters.", course),
    ):
        lines += [f"## {heading}", ""]
        for name in sorted(names):
            lines += [
                f"### `{prefix}{name}`",
                "",
                "```{eval-rst}",
                f".. automodule:: {package}.{prefix}{name}",
                "```",
                "",
            ]
    return "\n".join(lines)


def _toctree(caption: str, docs: list[str]) -> list[str]:
    return [":::{toctree}", f":caption: {caption}", ":hidden:", "", *docs, ":::", ""]


def stage_sources(root: Path, src: Path, paths: list[Path]) -> list[Page]:
    """Write the Sphinx sources of the site for the repository ``root`` into ``src``."""
    import nbformat

    pages = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        pages.append(Page(path.stem, _title(nb, path.stem)))
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = site_links(cell.source, base="notebooks")
        nbformat.write(still_outputs(nb), src / path.name)
    landing = readme_sections((root / "README.md").read_text(encoding="utf-8"))
    for image in sorted(set(re.findall(r"\]\((notebooks/images/[^)\s]+)\)", landing))):
        (src / "images").mkdir(exist_ok=True)
        shutil.copy2(root / image, src / "images" / Path(image).name)
    landing = landing.replace("](notebooks/images/", "](images/")
    landing = re.sub(r"\]\(notebooks/([0-9]{2}_[A-Za-z0-9_]+\.ipynb)", r"](\1", landing)
    # a link to a README section that the landing page leaves out goes to the README on GitHub
    kept = {"the-notebooks", "results"}
    landing = re.sub(
        r"\]\(#([a-z0-9-]+)\)",
        lambda m: m[0] if m[1] in kept else f"](https://github.com/{REPO}#{m[1]})",
        landing,
    )
    extra = []
    for name, doc in SITE_DOCS:
        if (root / name).is_file():
            (src / f"{doc}.md").write_text(site_links((root / name).read_text(encoding="utf-8")), encoding="utf-8")
            extra.append(doc)
    (src / "api.md").write_text(api_page(), encoding="utf-8")
    toc = _toctree("Notebooks", [p.stem for p in pages]) + _toctree("Reference", [*extra, "api"])
    (src / "index.md").write_text(landing.rstrip() + "\n\n" + "\n".join(toc), encoding="utf-8")
    static = src / "_static"
    (static / "mathjax").mkdir(parents=True)
    mathjax = _mathjax_dir()
    shutil.copy2(mathjax / "es5" / MATHJAX_BUNDLE, static / "mathjax" / MATHJAX_BUNDLE)
    shutil.copy2(mathjax / "LICENSE", static / "mathjax" / "LICENSE")
    (static / "site.css").write_text(SITE_CSS, encoding="utf-8")
    return pages


#: The repository's documents that are also pages of the site: (file, page name).
SITE_DOCS = (("TEACHING.md", "teaching"), ("REFERENCES.md", "references"))


def site_links(text: str, base: str = "", repo: str = REPO, branch: str = BRANCH) -> str:
    """Rewrite the links of a notebook's or a document's Markdown for the site.

    A link to a document that is a page of the site (``TEACHING.md``, ``REFERENCES.md``, with or without
    ``../``) goes to that page; a link to the README or to any other file of the repository goes to GitHub,
    since the site has no page for it; a link to a notebook goes to the notebook's page. ``base`` is the folder
    of the document in the repository (``"notebooks"`` for a notebook), against which relative links resolve.
    """
    pages = dict(SITE_DOCS)

    def rewrite(m: re.Match) -> str:
        target, anchor = m[1], m[2] or ""
        name = target.split("/")[-1]
        if name in pages:
            return f"]({pages[name]}.md{anchor})"
        if re.fullmatch(r"[0-9]{2}_[A-Za-z0-9_]+\.ipynb", name):
            return f"]({name}{anchor})"
        path = posixpath.normpath(posixpath.join(base, target))
        if name == "README.md":
            return f"](https://github.com/{repo}{anchor})"
        return f"](https://github.com/{repo}/blob/{branch}/{path}{anchor})"

    return re.sub(
        r"\]\((?!https?:|mailto:|#)((?:\.\./|\./)?[A-Za-z0-9_./-]+\.(?:md|ipynb|py|txt|toml|yml))(#[^)\s]*)?\)",
        rewrite,
        text,
    )


def _mathjax_dir() -> Path:
    try:
        import mathjax
    except ImportError as exc:
        raise RuntimeError("MathJax is missing: pip install -r docs/requirements.txt") from exc
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax"
    if not (es5 / "es5" / MATHJAX_BUNDLE).is_file():
        raise RuntimeError(f"{es5} holds no es5/{MATHJAX_BUNDLE}: pip install -r docs/requirements.txt")
    return es5


def build_site(outdir: str | Path = "build/site", root: str | Path | None = None) -> list[Path]:
    """Write the site for the repository at ``root`` (default: this checkout) into ``outdir``.

    Returns the written HTML pages: the landing page, the notebooks in course order, then the
    reference pages. ``outdir`` must be new, empty or an earlier build, which is replaced.
    """
    from metaadv_edu.notebooks import find_notebooks

    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    out = Path(outdir)
    paths = find_notebooks(root / "notebooks")
    if not paths:
        raise ValueError(f"no course notebooks (NN_*.ipynb) in {root / 'notebooks'}")
    confdir = root / "docs"
    if not (confdir / "conf.py").is_file():
        raise ValueError(f"root {root} holds no docs/conf.py (the site's Sphinx configuration)")
    if out.exists():
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise ValueError(
                f"outdir {out} is not empty and holds no earlier build of the site; refusing to "
                "overwrite it: choose a new folder such as build/site"
            )
        shutil.rmtree(out)
    with tempfile.TemporaryDirectory(prefix="metaadv-site-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        pages = stage_sources(root, src, paths)
        _run_sphinx(src, confdir, out, Path(tmp) / "doctrees")
    if (out / "_sources").is_dir() and not any((out / "_sources").iterdir()):
        (out / "_sources").rmdir()
    for path in paths:
        shutil.copy2(path, out / path.name)
    (out / MARKER).write_text("written by metaadv-edu site; the folder is replaced by the next build\n")
    (out / ".nojekyll").write_text("")
    others = sorted(p for p in out.glob("*.html") if p.stem not in {"index", *(p.stem for p in pages)})
    return [out / "index.html", *(out / p.href for p in pages), *others]


def _run_sphinx(src: Path, confdir: Path, out: Path, doctrees: Path) -> None:
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    log = io.StringIO()
    with patch_docutils(confdir), docutils_namespace(), warnings.catch_warnings():
        # Sphinx's and its extensions' notices of their own future changes (napoleon reads autodoc's
        # options the way Sphinx 11 will drop) are for their authors: they must not stop the build
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        app = Sphinx(str(src), str(confdir), str(out), str(doctrees), "html", status=None, warning=log)
        app.build(force_all=True)
    if app.statuscode:
        raise RuntimeError(f"Sphinx failed to build the site:\n{log.getvalue()}")


# ---------------------------------------------------------------- the Sphinx extension


def _launch_bar(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Put the launch bar at the top of a notebook page's body."""
    if doctree is None or not _NOTEBOOK.fullmatch(pagename) or "body" not in context:
        return
    title = re.sub(r"<[^>]+>", "", context.get("title", pagename))
    links = {k: html.escape(v) for k, v in launch_links(pagename, html.unescape(title)).items()}
    bar = (
        '<div class="site-launch" role="toolbar" aria-label="Run this notebook">'
        f'<a class="site-binder" href="{links["binder"]}">Launch on Binder</a>'
        f'<a class="site-colab" href="{links["colab"]}">Open in Colab</a>'
        f'<a class="site-download" href="{links["download"]}" download>Download .ipynb</a>'
        f'<a class="site-report" href="{links["report"]}">Report a mistake on this page</a>'
        "</div>\n"
    )
    context["body"] = bar + context["body"]


def _fold_solutions(app, doctree, docname: str) -> None:
    """Wrap every code cell tagged ``solution`` (input and outputs) in a closed ``<details>``."""
    from docutils import nodes

    for cell in list(doctree.findall(nodes.container)):
        if "tag_solution" not in cell.get("classes", []):
            continue
        opening = f'<details class="site-solution"><summary>{SOLUTION_SUMMARY}</summary>'
        parent = cell.parent
        index = parent.index(cell)
        parent.insert(index + 1, nodes.raw("", "</details>", format="html"))
        parent.insert(index, nodes.raw("", opening, format="html"))


_LITERAL = re.compile(r"(``.+?``)")


def _escape_bars(app, what: str, name: str, obj, options, lines: list[str]) -> None:
    """Docstrings write absolute values and table columns as ``|x|``; to reST that is a substitution.

    Every ``|`` outside inline literals is escaped, except on the lines of a reST line block or grid
    table (``| `` or ``+-`` at the start).
    """
    for i, line in enumerate(lines):
        if "|" in line and not line.lstrip().startswith(("| ", "+-", "+=")):
            parts = _LITERAL.split(line)
            lines[i] = "".join(p if p.startswith("``") else p.replace("|", r"\|") for p in parts)


def _static_path(app, config) -> None:
    static = Path(app.srcdir) / "_static"
    if static.is_dir() and str(static) not in config.html_static_path:
        config.html_static_path.append(str(static))


def setup(app) -> dict:
    """Register the site's additions with Sphinx (named in ``docs/conf.py``'s ``extensions``)."""
    app.connect("config-inited", _static_path)
    app.connect("autodoc-process-docstring", _escape_bars)
    app.connect("doctree-resolved", _fold_solutions)
    app.connect("html-page-context", _launch_bar)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
