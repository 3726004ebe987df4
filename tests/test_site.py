"""The course website (`make site`) in a real browser: built offline, served locally, read in headless Chromium.

The site is built into a temporary folder by site/build.py (Sphinx + myst-nb + sphinx-book-theme from
constraints.txt, MathJax from site/package-lock.json; no notebook is executed), served by a local HTTP server,
and a sample of its pages is opened in Debian's Chromium through Playwright:

- every page renders: a title, a body with text, no JavaScript error in the console, no failed request;
- every figure has pixels: each <img> loaded (naturalWidth > 0), each plotly figure and canvas has a
  non-zero box and a screenshot of it is not all one colour;
- no request leaves the machine: every request of every page and frame is recorded, anything not for
  127.0.0.1, localhost or a file is blocked and fails the test;
- the search page finds notebooks for a query, and nothing for a word no page has.

Skips, with the install command, without Chromium or the site's toolchain. Screenshots go to
build/test-artifacts/site/; the build time and the site's size are printed (pytest -s shows them).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "site"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOOLCHAIN = [m for m in ("sphinx", "myst_nb", "sphinx_book_theme") if importlib.util.find_spec(m) is None]
MATHJAX = ROOT / "site" / "node_modules" / "mathjax" / "es5" / "tex-chtml.js"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's Chromium: sudo apt install chromium"),
    pytest.mark.skipif(bool(TOOLCHAIN), reason=f"needs {', '.join(TOOLCHAIN)}: "
                       ".venv/bin/pip install -c constraints.txt -e '.[lab,test]'"),
    pytest.mark.skipif(not MATHJAX.exists(), reason="needs the site's MathJax: (cd site && npm ci)"),
]


def _plotly_outputs(name: str) -> int:
    nb = nbformat.read(ROOT / "course" / name, as_version=4)
    return sum("application/vnd.plotly.v1+json" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "html"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "site" / "build.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, f"site/build.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"\n{done.stdout.strip()}\ntest_site: site built in {seconds:.1f} s (with interpreter start-up); "
          f"{len(files)} files, {size / 2**20:.1f} MiB on disk")
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def server(site):
    """The built site over HTTP on a free port of 127.0.0.1 (search needs http://, not file://)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class Visit:
    """One page in a fresh context: every request recorded, external ones blocked, errors collected."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1300, "height": 900})
        self.requests, self.external, self.errors, self.failed = [], [], [], []
        self.context.route("**/*", self._route)
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("response", lambda r: self.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        self.page.goto(url, wait_until="load")

    def _route(self, route):
        if _leaves_the_machine(route.request.url):
            self.external.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    def check_clean(self):
        leaving = [u for u in self.requests if _leaves_the_machine(u)]
        assert not self.external and not leaving, "requests left the machine:\n" + "\n".join(
            (self.external + leaving)[:20])
        assert not self.errors, "JavaScript errors in the console:\n" + "\n".join(self.errors)[:3000]
        assert not self.failed, "failed requests:\n" + "\n".join(self.failed)
        assert self.requests, "no request recorded: the recorder is broken"

    def close(self):
        self.context.close()


def _leaves_the_machine(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme in ("data", "blob", "about", "file"):
        return False
    return parsed.hostname not in LOCAL_HOSTS


def _not_one_colour(png: bytes) -> bool:
    from PIL import Image
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=2) or [None, None]) > 1


def _check_renders(v: Visit, name: str) -> str:
    page = v.page
    assert page.title().strip(), f"{name}: empty <title>"
    article = page.locator("article.bd-article")
    text = article.inner_text() if article.count() else page.locator("body").inner_text()
    assert len(text.strip()) > 100, f"{name}: the page body is (nearly) empty: {text[:200]!r}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    return text


def _check_figures(v: Visit, name: str) -> dict:
    """Every <img> loaded, every plotly figure drew, every canvas has pixels; returns the counts."""
    page = v.page
    plotly = page.locator(".p4l-plotly-target")
    for i in range(plotly.count()):          # plotly.js draws after load: wait for each figure's SVG
        plotly.nth(i).locator(".main-svg").first.wait_for(state="attached", timeout=30_000)
    images = page.locator("img")
    for i in range(images.count()):          # lazily loaded ones load once scrolled to
        img = images.nth(i)
        if not img.evaluate("i => i.complete && i.naturalWidth > 0"):
            img.scroll_into_view_if_needed()
            page.wait_for_function("i => i.complete", arg=img.element_handle(), timeout=10_000)
        src = img.get_attribute("src") or ""
        assert img.evaluate("i => i.naturalWidth > 0"), f"{name}: image {i} has no pixels: {src[:80]}"
    for kind, boxes in (("plotly figure", plotly), ("canvas", page.locator("article canvas"))):
        for i in range(boxes.count()):
            box = boxes.nth(i)
            box.scroll_into_view_if_needed()
            bb = box.bounding_box()
            assert bb and bb["width"] > 0 and bb["height"] > 0, f"{name}: {kind} {i} has an empty box: {bb}"
            shot = box.screenshot(path=str(ARTIFACTS / f"{name}-{kind.replace(' ', '-')}-{i}.png"))
            assert _not_one_colour(shot), f"{name}: {kind} {i} is all one colour"
    return {"img": images.count(), "plotly": plotly.count(),
            "output_img": page.locator(".cell_output img").count()}


def _shoot(element, name: str) -> None:
    element.scroll_into_view_if_needed()
    shot = element.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    assert _not_one_colour(shot), f"{name} is all one colour"


NOTEBOOKS = {
    # name: what the page must show beyond text
    "02_tokenization": "explorer",
    "04_pretraining": "plotly",
    "05_attention_and_hooks": "views",
    "11_sparse_autoencoders": "math",
}


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_page_renders_with_its_figures_offline(site, server, browser, stem):
    v = Visit(browser, f"{server}/notebooks/{stem}.html")
    try:
        text = _check_renders(v, stem)
        nb = nbformat.read(ROOT / "course" / f"{stem}.ipynb", as_version=4)
        assert nb.cells[0].source.lstrip("# ").split("\n")[0] in v.page.title()
        assert len(v.page.locator(".cell_output").all()) >= 5, "the notebook's outputs are missing"
        counts = _check_figures(v, stem)
        page = v.page
        if NOTEBOOKS[stem] == "plotly":
            # each plotly output is a figure: drawn by the vendored plotly.js, or its static PNG where it has one
            expected = _plotly_outputs(f"{stem}.ipynb")
            assert expected > 0 and counts["plotly"] + counts["output_img"] >= expected, (expected, counts)
            first = page.locator(".p4l-plotly-target, .cell_output img").first
            _shoot(first, f"{stem}-first-figure")
        if NOTEBOOKS[stem] == "views":
            att = page.locator(".p4l-att")
            assert att.count() >= 5, "the attention views are missing"
            assert page.locator(".p4l-att img[data-head]").count() >= 8
            assert page.locator(".p4l-widget input[type=range]").count() == 3, "the explorer's saved controls"
            _shoot(att.nth(1), f"{stem}-attention-view")
        if NOTEBOOKS[stem] == "explorer":
            assert page.locator(".p4l-widget textarea").count() == 1 and page.locator(".p4l-widget .p4x").count()
            assert "Error displaying widget" not in text
            _shoot(page.locator(".p4l-widget").first, f"{stem}-explorer")
        if NOTEBOOKS[stem] == "math":
            page.locator("mjx-container").first.wait_for(state="attached", timeout=30_000)
            assert page.locator("mjx-container").count() >= 5, "MathJax did not typeset the formulas"
            assert "\\mathrm{TopK}" not in text, "a formula is shown as TeX source"
            _shoot(page.locator("mjx-container[display=true]").first, f"{stem}-formula")
        v.page.wait_for_timeout(300)
        v.check_clean()
    finally:
        v.close()


def test_landing_page_and_course_map(site, server, browser):
    v = Visit(browser, f"{server}/index.html")
    try:
        _check_renders(v, "index")
        links = v.page.locator("nav a[href*='notebooks/']").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        stems = {Path(urlparse(h).path).stem for h in links}
        course = {p.stem for p in (ROOT / "course").glob("[0-9][0-9]_*.ipynb")}
        assert course <= stems, f"notebooks missing from the navigation: {sorted(course - stems)}"
        _check_figures(v, "index")
        v.check_clean()
    finally:
        v.close()
    v = Visit(browser, f"{server}/course-map.html")
    try:
        text = _check_renders(v, "course-map")
        from phi4lab.exercises import coursemap
        maps = coursemap.read_course(ROOT / "course")
        rows = v.page.locator("table tr").all_inner_texts()
        total = next(r for r in rows if r.startswith("whole course"))
        assert total.split("\t")[1].strip() == str(sum(len(m.exercises) for m in maps)), total
        for m in maps:                       # every notebook in both tables, linked to its page
            assert v.page.locator(f"table a[href$='notebooks/{Path(m.name).stem}.html']").count() == 2, m.name
        assert "laptop CPU run time" in text
        v.check_clean()
    finally:
        v.close()


def test_views_page_and_an_explorer_page_render_offline(site, server, browser):
    v = Visit(browser, f"{server}/views.html")
    try:
        _check_renders(v, "views")
        frames = v.page.locator("iframe.p4l-view-frame")
        assert frames.count() >= 7
        for i in range(frames.count()):
            frames.nth(i).scroll_into_view_if_needed()
            frame = frames.nth(i).content_frame
            frame.locator("main").wait_for(timeout=15_000)
            assert frame.locator("main").inner_text().strip() or frame.locator("main img, main svg").count()
        v.page.wait_for_timeout(300)
        v.check_clean()
    finally:
        v.close()
    v = Visit(browser, f"{server}/views/tokenizer-explorer.html")
    try:
        _check_renders(v, "tokenizer-explorer")
        assert v.page.locator(".p4x").count() >= 3, "the explorer drew no tokenizer"
        assert "日本語" in v.page.locator("main").inner_text()
        v.check_clean()
    finally:
        v.close()
    v = Visit(browser, f"{server}/views/attention-heads.html")
    try:
        _check_renders(v, "attention-heads")
        counts = _check_figures(v, "attention-heads")
        assert counts["img"] == 8, counts                         # phi4-tiny's 8 query heads of layer 3
        box = v.page.locator("img[data-head='L3H0']").bounding_box()
        v.page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] - 2)
        assert "weight" in v.page.locator(".tip").inner_text()    # the hover read-out runs from the site
        v.check_clean()
    finally:
        v.close()
    v = Visit(browser, f"{server}/views/feature-index.html")
    try:
        _check_renders(v, "feature-index")
        rows = v.page.locator("tr[data-latent]")
        n = rows.count()
        assert n >= 10
        first = rows.first.get_attribute("data-latent")
        v.page.fill("input.search", first)
        shown = [rows.nth(i).get_attribute("data-latent") for i in range(n) if rows.nth(i).is_visible()]
        assert first in shown and len(shown) < n, shown
        v.check_clean()
    finally:
        v.close()


def test_search_finds_notebooks_offline(site, server, browser):
    v = Visit(browser, f"{server}/search.html?q=induction")
    try:
        results = v.page.locator("#search-results ul.search li")
        v.page.locator("#search-results .search-summary").wait_for(timeout=30_000)
        _check_renders(v, "search")
        hrefs = results.locator("a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert results.count() >= 3, v.page.locator("#search-results").inner_text()[:500]
        assert any("05_attention_and_hooks" in h for h in hrefs), hrefs
        v.check_clean()
    finally:
        v.close()
    v = Visit(browser, f"{server}/search.html?q=zyxwvutsrq")                 # a word no page has
    try:
        v.page.locator("#search-results .search-summary").wait_for(timeout=30_000)
        assert v.page.locator("#search-results ul.search li").count() == 0
        v.check_clean()
    finally:
        v.close()


def test_a_plotly_figure_without_a_png_is_drawn_by_the_vendored_plotly_js(site, server, browser):
    """Whether or not the notebooks' figures carry PNGs, the plotly.js path itself works offline."""
    sys.path.insert(0, str(ROOT / "site"))
    import convert
    figure = {"data": [{"type": "scatter", "x": [0, 1, 2], "y": [2, 0, 3], "mode": "lines+markers"}],
              "layout": {"title": {"text": "a test figure </script><script>window.__pwned=1</script>"},
                         "height": 300}}
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[
        nbformat.v4.new_output("display_data", data={convert.PLOTLY: figure}),
        nbformat.v4.new_output("display_data", data={convert.PLOTLY: figure, "image/png": "iVBORw0KGgo="})])])
    out, counts = convert.convert(nb)
    assert counts["plotly_js"] == 1 and counts["plotly_png"] == 1
    assert set(out.cells[0].outputs[1].data) == {"image/png", "text/plain"}    # the PNG wins where there is one
    check = site / "_plotly_check"
    check.mkdir(exist_ok=True)
    vendored = site / "_static" / "vendor" / "plotly.min.js"
    if not vendored.exists():                 # every notebook figure had its PNG: the site vendors no plotly.js
        from plotly.offline import get_plotlyjs
        vendored = check / "plotly.min.js"
        vendored.write_text(get_plotlyjs(), encoding="utf-8")
    page_html = ("<!doctype html><meta charset='utf-8'><title>plotly check</title>"
                 f"<script src='../{vendored.relative_to(site).as_posix()}'></script>"
                 "<script src='../_static/plotly-figures.js'></script>"
                 + out.cells[0].outputs[0].data["text/html"])
    (check / "index.html").write_text(page_html, encoding="utf-8")
    v = Visit(browser, f"{server}/_plotly_check/index.html")
    try:
        v.page.locator(".p4l-plotly-target .main-svg").first.wait_for(state="attached", timeout=30_000)
        counts = _check_figures(v, "plotly-check")
        assert counts["plotly"] == 1
        assert v.page.evaluate("window.__pwned") is None
        assert "a test figure" in v.page.locator(".p4l-plotly-target").inner_text()
        v.check_clean()
    finally:
        v.close()


def test_the_site_vendors_what_it_loads(site):
    """Nothing in the built pages points at a CDN; the vendored files are there."""
    assert (site / "_static" / "vendor" / "mathjax" / "tex-chtml.js").exists()
    drawn = []
    for page in site.rglob("*.html"):
        if page.parent.name == "_plotly_check":          # the page the plotly test wrote
            continue
        text = page.read_text(encoding="utf-8")
        if "p4l-plotly-spec" in text:
            drawn.append(page)
            assert "_static/vendor/plotly.min.js" in text and "_static/plotly-figures.js" in text, page
        for cdn in ("cdn.plot.ly", "cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis"):
            assert cdn not in text, f"{page.relative_to(site)} refers to {cdn}"
    # plotly.js (4.8 MB) ships only when some figure has no static PNG to show instead
    assert (site / "_static" / "vendor" / "plotly.min.js").exists() == bool(drawn)
    from plotly.offline import get_plotlyjs_version
    versions = json.loads((site / "_static" / "vendor" / "versions.json").read_text())
    assert versions["mathjax"] == json.loads((ROOT / "site" / "package.json").read_text())["dependencies"]["mathjax"]
    assert versions["plotly.js"] == get_plotlyjs_version()     # the one the installed plotly package ships
