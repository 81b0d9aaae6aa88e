"""The course website: the stored, executed notebooks as static HTML pages, in course order.

``metaadv-edu site [OUTDIR]`` (default ``build/site``) converts every ``notebooks/NN_*.ipynb`` with
nbconvert from its stored outputs (nothing is executed), adds a landing page made from the README's
notebook table and results, and writes a self-contained folder: MathJax is copied in from the
``django-static-mathjax`` package (``docs/requirements.txt``), so the pages render their equations with
no network. Each page has a launch bar (Binder, Colab, the ``.ipynb``) and a link that opens a GitHub
issue about that page. Widget outputs keep only the image stored with them: an explorer shows the still
of its first figure, with a note on where its sliders run.

This is tooling: neither the library nor the course layer imports it.
"""

from __future__ import annotations

import copy
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REPO", "Page", "build_site", "launch_links"]

REPO = "metaadv-edu/metaadv-edu"
BRANCH = "main"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
MATHJAX_BUNDLE = "tex-svg-full.js"  # SVG output, every TeX extension built in: loads nothing else

# Cells through nbconvert's JupyterLab template; solutions folded away, explorers' stills captioned.
CELLS_TEMPLATE = r"""{%- extends 'base.html.j2' -%}
{% block codecell %}
{%- if 'solution' in cell.metadata.get('tags', []) -%}
<details class="site-solution"><summary>A solution (try the exercise first)</summary>
{{ super() }}
</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock codecell %}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="{{ output.metadata.filenames['image/png'] | posix_path | escape_html }}"
 alt="{{ output.metadata.get('site_alt', 'figure') | escape_html }}">
{%- if output.metadata.get('site_explorer') %}
<p class="site-explorer-note">A still of this explorer's figure. Its sliders run in a live notebook:
launch this page on Binder or Colab (buttons at the top).</p>
{%- endif %}
</div>
{%- endblock data_png %}
{% block footer %}{% endblock footer %}
"""

LAYOUT = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{{ page.title }} · metaadv-edu</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="static/notebook.css">
<link rel="stylesheet" href="static/site.css">
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true},
  svg: {fontCache: 'global'}
};
</script>
<script defer src="static/mathjax/{{ mathjax }}"></script>
</head>
<body data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav class="site-nav" aria-label="Course">
<a class="site-home" href="index.html">metaadv-edu</a>
<ol>
{%- for p in pages %}
<li><a href="{{ p.href }}"{% if p.stem == page.stem %} aria-current="page"{% endif %}>{{ p.title }}</a></li>
{%- endfor %}
</ol>
</nav>
<div class="site-main">
{%- if links %}
<div class="site-launch" role="toolbar" aria-label="Run this notebook">
<a class="site-binder" href="{{ links.binder }}">Launch on Binder</a>
<a class="site-colab" href="{{ links.colab }}">Open in Colab</a>
<a class="site-download" href="{{ links.download }}" download>Download .ipynb</a>
<a class="site-report" href="{{ links.report }}">Report a mistake on this page</a>
</div>
{%- endif %}
<main class="jp-Notebook">
{{ body }}
</main>
<footer class="site-footer">
{%- if prev %}<a class="site-prev" href="{{ prev.href }}">← {{ prev.title }}</a>{% endif %}
{%- if next %}<a class="site-next" href="{{ next.href }}">{{ next.title }} →</a>{% endif %}
</footer>
</div>
</body>
</html>
"""

SITE_CSS = """
body { margin: 0; font-family: var(--jp-ui-font-family); background: #fff; }
.site-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto;
  padding: 1rem; box-sizing: border-box; background: #f6f7f9; border-right: 1px solid #dde; font-size: 14px; }
.site-nav ol { list-style: none; padding: 0; margin: 1rem 0 0 0; }
.site-nav li { margin: 0 0 .6rem 0; }
.site-nav a { color: #234; text-decoration: none; }
.site-nav a[aria-current] { font-weight: bold; color: #0b57d0; }
.site-home { font-size: 1.2rem; font-weight: bold; }
.site-main { margin-left: 15rem; padding: 1rem 2rem 3rem 2rem; max-width: 62rem; }
.site-launch { display: flex; flex-wrap: wrap; gap: .5rem; padding: .5rem 0 1rem 0;
  border-bottom: 1px solid #dde; margin-bottom: 1rem; }
.site-launch a { padding: .3rem .8rem; border: 1px solid #bbc; border-radius: 4px; text-decoration: none;
  color: #123; background: #f6f7f9; font-size: 14px; }
.site-launch a.site-report { margin-left: auto; border-color: #d9a; background: #fff5f7; }
main.jp-Notebook { padding: 0; overflow: visible; }
.jp-Collapser, a.anchor-link { display: none; }
:is(h1, h2, h3, h4):hover > a.anchor-link { display: inline; margin-left: .3rem; text-decoration: none; }
.jp-InputArea, .jp-InputArea-editor { overflow: hidden; }
.jp-OutputArea-output pre { line-height: inherit; font-family: inherit; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
mjx-assistive-mml { height: 1px !important; }  /* MathML kept for screen readers must not stretch the page */
.site-explorer-note { font-size: 13px; color: #456; font-style: italic; margin: .2rem 0 0 0; }
.site-solution { margin: .5rem 0; border: 1px dashed #bbc; border-radius: 4px; padding: .3rem .6rem; }
.site-solution summary { cursor: pointer; color: #0b57d0; }
.site-footer { display: flex; justify-content: space-between; margin-top: 2rem; padding-top: 1rem;
  border-top: 1px solid #dde; }
.site-landing table { border-collapse: collapse; margin: 1rem 0; font-size: 14px; }
.site-landing th, .site-landing td { border: 1px solid #ccd; padding: .3rem .5rem; vertical-align: top; }
.site-landing img { max-width: 100%; }
@media (max-width: 50rem) {
  .site-nav { position: static; width: auto; border-right: none; }
  .site-main { margin-left: 0; padding: 1rem; }
}
"""


@dataclass(frozen=True)
class Page:
    stem: str  # notebook name without .ipynb; "" for the landing page
    title: str

    @property
    def href(self) -> str:
        return f"{self.stem}.html" if self.stem else "index.html"


def launch_links(stem: str, title: str, repo: str = REPO, branch: str = BRANCH) -> dict[str, str]:
    """Binder, Colab, download and "report a mistake" addresses for the notebook ``stem``."""
    if not re.fullmatch(r"[0-9]{2}_[A-Za-z0-9_]+", stem):
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


def _still_outputs(nb):
    """A copy of ``nb`` in which every widget output keeps only the image stored beside it.

    A widget view cannot be rendered without a kernel; the course stores each explorer's first figure
    as a PNG in the same output, so the page shows that. Widget outputs with nothing else to show (a
    progress bar's text) are dropped, and so is the notebook's widget state. The Colab badge and the
    Colab-only install cell are left out: the page's launch bar does their job.
    """
    from metaadv_edu.colab import COLAB_CELL

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    # the launch bar opens Colab; its badge (a remote image) and its install cell stay in the notebook
    nb.cells = [c for c in nb.cells if not (c.cell_type == "code" and c.source.strip() == COLAB_CELL.strip())]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines = cell.source.splitlines()
            cell.source = "\n".join(line for line in lines if not line.startswith("[![Open in Colab]"))
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                data.pop(WIDGET_VIEW)
                if not set(data) - {"text/plain"}:
                    continue
                out.setdefault("metadata", {})["site_explorer"] = True
            if "image/png" in data:
                text = data.get("text/plain", "")
                alt = "figure" if text.startswith("<Figure") else text.splitlines()[0] if text else "figure"
                out.setdefault("metadata", {})["site_alt"] = alt
            kept.append(out)
        if cell.cell_type == "code":
            cell.outputs = kept
    return nb


def _exporter():
    import jinja2
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import ExtractOutputPreprocessor

    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"site.j2": CELLS_TEMPLATE})],
        template_file="site.j2",
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    return exporter


def _lab_css(exporter) -> str:
    for base in exporter.template_paths:
        static = Path(base) / "static"
        if (static / "index.css").is_file() and (static / "theme-light.css").is_file():
            return (static / "index.css").read_text() + "\n" + (static / "theme-light.css").read_text()
    raise FileNotFoundError("nbconvert's JupyterLab template CSS (static/index.css) was not found")


def _mathjax_dir() -> Path:
    try:
        import mathjax
    except ImportError as exc:
        raise RuntimeError("MathJax is missing: pip install -r docs/requirements.txt") from exc
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax"
    if not (es5 / "es5" / MATHJAX_BUNDLE).is_file():
        raise RuntimeError(f"{es5} holds no es5/{MATHJAX_BUNDLE}: pip install -r docs/requirements.txt")
    return es5


_NB_LINK = re.compile(r'href="(?:notebooks/)?([0-9]{2}_[A-Za-z0-9_]+)\.ipynb(#[^"]*)?"')


def _link_pages(html: str, stems: set[str]) -> str:
    """Links between notebooks point at their pages instead of the .ipynb files."""
    return _NB_LINK.sub(lambda m: f'href="{m[1]}.html{m[2] or ""}"' if m[1] in stems else m[0], html)


def readme_sections(readme: str) -> str:
    """The landing page's Markdown: the README's introduction, notebook table and results."""
    readme = re.sub(r"(?m)^(\|.*)\n\s*\n(?=\|)", r"\1\n", readme)  # rows split by a stray blank line
    parts = re.split(r"(?m)^## ", readme)
    intro = "\n".join(line for line in parts[0].splitlines() if not line.startswith("[!["))
    keep = [intro]
    for part in parts[1:]:
        heading = part.splitlines()[0].strip()
        if heading == "The notebooks":
            keep.append("## " + part)
        elif heading == "Results":
            keep.append("## " + part)
    return "\n\n".join(keep)


def build_site(outdir: str | Path = "build/site", root: str | Path | None = None) -> list[Path]:
    """Write the site for the repository at ``root`` (default: this checkout) into ``outdir``.

    Returns the written HTML pages, the landing page first. ``outdir`` must be new, empty or an earlier
    build, which is replaced.
    """
    import jinja2
    import nbformat
    from markupsafe import Markup
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    from metaadv_edu.notebooks import find_notebooks

    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    out = Path(outdir)
    paths = find_notebooks(root / "notebooks")
    if not paths:
        raise ValueError(f"no course notebooks (NN_*.ipynb) in {root / 'notebooks'}")
    if out.exists():
        if any(out.iterdir()) and not (out / "static" / "site.css").is_file():
            raise ValueError(
                f"outdir {out} is not empty and holds no earlier build of the site; refusing to "
                "overwrite it: choose a new folder such as build/site"
            )
        shutil.rmtree(out)
    (out / "static" / "mathjax").mkdir(parents=True)
    mathjax = _mathjax_dir()
    shutil.copy2(mathjax / "es5" / MATHJAX_BUNDLE, out / "static" / "mathjax" / MATHJAX_BUNDLE)
    shutil.copy2(mathjax / "LICENSE", out / "static" / "mathjax" / "LICENSE")
    (out / ".nojekyll").write_text("")

    notebooks = [nbformat.read(p, as_version=4) for p in paths]
    pages = [Page(p.stem, _title(nb, p.stem)) for p, nb in zip(paths, notebooks)]
    stems = {p.stem for p in pages}
    layout = jinja2.Environment(autoescape=True).from_string(LAYOUT)
    exporter = _exporter()
    written = []
    inlined_css: list[str] = []
    for i, (path, nb, page) in enumerate(zip(paths, notebooks, pages)):
        resources = {
            "metadata": {"name": page.stem, "path": str(path.parent)},
            "output_files_dir": f"{page.stem}_files",
            "unique_key": page.stem,
        }
        body, resources = exporter.from_notebook_node(_still_outputs(nb), resources=resources)
        inlined_css = inlined_css or list(resources.get("inlining", {}).get("css", []))
        for name, data in resources.get("outputs", {}).items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        shutil.copy2(path, out / path.name)
        html = layout.render(
            page=page,
            pages=pages,
            mathjax=MATHJAX_BUNDLE,
            links=launch_links(page.stem, page.title),
            body=Markup(_link_pages(body, stems)),
            prev=pages[i - 1] if i else Page("", "Course home"),
            next=pages[i + 1] if i + 1 < len(pages) else None,
        )
        written.append(out / page.href)
        written[-1].write_text(html, encoding="utf-8")

    (out / "static" / "notebook.css").write_text(_lab_css(exporter) + "\n".join(inlined_css), encoding="utf-8")
    (out / "static" / "site.css").write_text(SITE_CSS, encoding="utf-8")
    landing_md = readme_sections((root / "README.md").read_text(encoding="utf-8"))
    for image in sorted(set(re.findall(r"\]\((notebooks/images/[^)\s]+)\)", landing_md))):
        (out / "images").mkdir(exist_ok=True)
        shutil.copy2(root / image, out / "images" / Path(image).name)
    landing_md = landing_md.replace("](notebooks/images/", "](images/")
    body = (
        '<div class="site-landing jp-RenderedHTMLCommon jp-RenderedMarkdown">'
        + markdown2html_mistune(landing_md)
        + "</div>"
    )
    home = Page("", "Course home")
    html = layout.render(
        page=home,
        pages=pages,
        mathjax=MATHJAX_BUNDLE,
        links=None,
        body=Markup(_link_pages(body, stems)),
        prev=None,
        next=pages[0],
    )
    (out / "index.html").write_text(html, encoding="utf-8")
    return [out / "index.html", *written]
