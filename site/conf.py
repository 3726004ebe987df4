"""Sphinx configuration for the course website (`make site`; site/build.py copies it into the Sphinx source folder it stages).

Sphinx + myst-nb + sphinx-book-theme, all from PyPI and pinned in constraints.txt. Notebooks are never executed
(their stored outputs are the content); every script, font and style sheet is served from the site itself.
"""

project = "phi4lab"
author = "phi4lab contributors"
copyright = "phi4lab contributors, MIT licence"
html_title = "phi4lab: Phi-4 from the inside"

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# myst-nb: show what the notebooks stored, run nothing.
nb_execution_mode = "off"
nb_ipywidgets_js = {}               # no widget manager from a CDN: site/convert.py draws widgets as static HTML
nb_output_stderr = "show"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# MathJax 3 from npm (site/package.json), copied into _static by site/build.py: formulas render offline.
mathjax_path = "vendor/mathjax/tex-chtml.js"

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_extra_path = ["_extra"]        # the attention views and explorers, copied verbatim
html_css_files = ["phi4lab-site.css"]
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "light"}   # without it the theme logs "invalid theme mode" on a first visit
html_copy_source = False            # the notebooks live in the repository; the site is for reading
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "search_bar_text": "Search the course...",
    "secondary_sidebar_items": {"**": ["page-toc"], "course-map": []},   # the course map's tables need the width
}


def _plotly_where_needed(app, pagename, templatename, context, doctree):
    """plotly.js (4.8 MB, from the installed plotly package) only on pages that still draw a plotly figure."""
    if "p4l-plotly-spec" in context.get("body", ""):
        app.add_js_file("vendor/plotly.min.js")
        app.add_js_file("plotly-figures.js")


def setup(app):
    app.connect("html-page-context", _plotly_where_needed)
