# Sphinx configuration of the course website. Build it with `metaadv-edu site [OUTDIR]`: that command
# lays the pages out (the stored notebooks in course order, the README's landing content, TEACHING,
# references, the API reference) in a temporary source folder and runs Sphinx on it with this file.
# The extension metaadv_edu.site adds the launch bar, folds solutions, serves the bundled MathJax.

project = "metaadv-edu"
author = "metaadv-edu contributors"
copyright = "metaadv-edu contributors, MIT licence"

extensions = [
    "myst_nb",  # notebooks from their stored outputs, and Markdown pages (MyST)
    "sphinx.ext.autodoc",  # the API reference from the package's docstrings
    "sphinx.ext.napoleon",  # ... which are NumPy style
    "sphinx.ext.mathjax",
    "metaadv_edu.site",
]

# Notebooks: never executed, widgets shown as the still stored beside them, no widget scripts (a CDN)
nb_execution_mode = "off"
nb_ipywidgets_js = {}
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]

# Equations offline: MathJax 3 (SVG output) copied into _static/mathjax by metaadv_edu.site
mathjax_path = "mathjax/tex-svg-full.js"
mathjax3_config = {"svg": {"fontCache": "global"}}

# API reference: NumPy docstrings, members in source order, signatures with their type hints
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Theme: sphinx-book-theme; the launch bar of metaadv_edu.site replaces its own buttons
html_theme = "sphinx_book_theme"
html_title = "metaadv-edu"
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_favicon = None
html_css_files = ["site.css"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "use_source_button": False,
    "use_issues_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
