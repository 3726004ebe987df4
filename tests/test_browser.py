"""The course in a real browser: JupyterLab in headless Chromium, driven by Playwright.

nbval proves that the notebooks' *kernels* produce the right outputs. It
cannot see what a learner sees: a plotly figure whose JavaScript renderer is
missing is a blank cell, a widget whose front-end extension is missing shows
"Error displaying widget", and a page that loads a library from a CDN is blank
offline. This test opens the notebooks in JupyterLab as a student would, runs
every cell, and checks the page:

- every plotly figure and every widget output rendered (DOM present, non-empty):
  a figure shows its PNG copy, and its interactive SVG once the pointer enters it;
  every phi4lab.viz.attention view shows its images;
- no cell errored;
- the browser console shows no JavaScript errors;
- no request left the machine (every asset is served by the local server).

It uses Debian's ``chromium`` package (``apt install chromium``), not a browser
that Playwright downloads, which cannot work offline. Without Chromium the test
is skipped with that instruction; ``.ci/run`` installs it, so CI always runs it.
Screenshots go to ``build/test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
NOTEBOOKS = ["02_tokenization.ipynb", "05_attention_and_hooks.ipynb"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's Chromium: sudo apt install chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free local port with a random token, serving a copy of the course.

    A copy, because JupyterLab saves a notebook after running it; the committed
    notebooks must not change under the test.
    """
    course = tmp_path_factory.mktemp("course")
    for nb in NOTEBOOKS:                          # without outputs: whatever shows up, the browser ran
        notebook = nbformat.read(ROOT / "course" / nb, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(notebook, course / nb)
    # Settings for a test run: render every cell (JupyterLab's default windowing leaves
    # off-screen cells out of the DOM, where nothing can be checked) and no news pop-up.
    settings = tmp_path_factory.mktemp("lab-settings")
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false"}}.items():
        folder, name = plugin.split("/")
        (settings / "@jupyterlab" / folder).mkdir(parents=True, exist_ok=True)
        (settings / "@jupyterlab" / folder / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path_factory.mktemp("lab-log") / "jupyterlab.log", "w")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--notebook-dir={course}", "--allow-root",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={settings / 'workspaces'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited with {server.returncode}; see {log.name}")
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield url, token, course
    finally:
        server.terminate()                       # stop it by its process id
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_for_kernel(url: str, token: str, name: str, timeout_s: float = 90) -> None:
    """Wait until the server says this notebook's kernel is connected and idle.

    The page's own status shows "Idle" before the kernel's channels are up; cells
    queued then are never run. The server's session list is the ground truth.
    """
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        sessions = json.load(urlopen(f"{url}/api/sessions?token={token}", timeout=5))
        for s in sessions:
            kernel = s.get("kernel") or {}
            if s.get("path", "").endswith(name) and kernel.get("execution_state") == "idle" \
                    and kernel.get("connections", 0) > 0:
                time.sleep(1)
                return
        time.sleep(0.5)
    raise AssertionError(f"the kernel for {name} did not become ready within {timeout_s:.0f} s")


def _run_all_and_wait(page, panel, timeout_s: float) -> None:
    """Run > Run All Cells, then wait until the run has ended.

    Ended: nothing queued or running for 3 s, and either every code cell has an
    execution number or a cell errored (JupyterLab stops a Run All at the first
    error; the caller reports it).
    """
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline, quiet = time.time() + timeout_s, 0
    prompts: list[str] = []
    while time.time() < deadline:
        time.sleep(1)
        prompts = panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        running = any("*" in p for p in prompts)
        numbered = prompts and all(p.strip("[]: ").isdigit() for p in prompts)
        errored = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
        quiet = quiet + 1 if not running and (numbered or errored) else 0
        if quiet >= 3:
            return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "timeout.png"))
    raise AssertionError(f"the notebook did not finish within {timeout_s:.0f} s; prompts: {prompts}")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_renders_in_jupyterlab(lab, browser, name):
    url, token, course = lab
    host = urlparse(url).netloc
    console_errors, external = [], []
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    failed_responses = []
    page.on("response", lambda r: failed_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    def on_request(request):
        parsed = urlparse(request.url)
        if parsed.scheme in ("http", "https", "ws", "wss") and parsed.netloc != host:
            external.append(request.url)
    page.on("request", on_request)

    # a workspace of its own, so that only this notebook is open
    page.goto(f"{url}/lab/workspaces/{Path(name).stem}/tree/{name}?token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    _wait_for_kernel(url, token, name)
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    _run_all_and_wait(page, panel, timeout_s=float(os.environ.get('PHI4LAB_BROWSER_TIMEOUT', 240)))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
    notebook = panel.locator(".jp-Notebook")

    # No cell errored: save, and read the outputs back from the file the browser wrote.
    before = (course / name).stat().st_mtime_ns
    page.get_by_role("menuitem", name="File", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Save Notebook(?! As)")).click()   # the name includes Ctrl+S
    for _ in range(60):
        if (course / name).stat().st_mtime_ns != before:
            break
        time.sleep(0.5)
    time.sleep(0.5)
    saved = nbformat.read(course / name, as_version=4)
    ran = [c for c in saved.cells if c.cell_type == "code"]
    failed = [o for c in ran for o in c.outputs if o.output_type == "error"]
    assert not failed, f"a cell errored: {failed[0].ename}: {failed[0].evalue}"
    # a fresh kernel numbers the cells 1, 2, 3 ...: every one ran, in order, in this run
    assert [c.execution_count for c in ran] == list(range(1, len(ran) + 1)), "not every code cell ran"

    expected = {"02_tokenization.ipynb": dict(widgets=1, plotly=1),
                "05_attention_and_hooks.ipynb": dict(widgets=1, plotly=1, views=5)}[name]
    # Front-end renderers finish after the kernel: wait for the last of each kind to appear.
    for selector, n in ((".jp-OutputArea-output.jp-RenderedPlotly", expected["plotly"]),
                        (".jp-OutputArea-output > .jupyter-widgets", expected["widgets"]),
                        (".p4l-att img", expected.get("views", 0))):
        if n:
            notebook.locator(selector).nth(n - 1).wait_for(state="attached", timeout=60_000)

    # Every plotly figure shows its PNG copy (phi4lab.viz.figures) at once, and becomes the interactive
    # figure when the pointer enters it: jupyterlab-plotly draws a figure whose output has a PNG on hover.
    figures = notebook.locator(".jp-OutputArea-output.jp-RenderedPlotly")
    for i in range(figures.count()):
        fig = figures.nth(i)
        fig.scroll_into_view_if_needed()
        assert fig.locator("img.plot-img").evaluate("i => i.complete && i.naturalWidth > 0"), \
            f"plotly figure {i} shows no PNG copy"
        fig.hover()
        fig.locator(".main-svg").first.wait_for(state="attached", timeout=60_000)
        assert fig.locator(".main-svg").count() > 0, f"plotly figure {i} is blank"
    # every widget rendered something (and not the "Error displaying widget" placeholder)
    widgets = notebook.locator(".jp-OutputArea-output:has(> .jupyter-widgets)")
    for i in range(widgets.count()):
        assert widgets.nth(i).inner_text().strip() or widgets.nth(i).locator("img, svg, canvas").count(), \
            f"widget output {i} is empty"
    assert "Error displaying widget" not in notebook.inner_text()
    # every phi4lab.viz.attention view shows its pictures
    for img in notebook.locator(".p4l-att img").all()[:50]:
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), "an attention view image did not load"

    assert widgets.count() >= expected["widgets"] and figures.count() >= expected["plotly"]
    if "views" in expected:
        assert notebook.locator(".p4l-att").count() >= expected["views"]
    page.screenshot(path=str(ARTIFACTS / f"{name}-end.png"), full_page=False)
    assert not console_errors, ("JavaScript errors in the console:\n" + "\n".join(console_errors)[:2000]
                                + "\nfailed requests:\n" + "\n".join(failed_responses))
    assert not external, "requests left the machine:\n" + "\n".join(external[:20])
    context.close()


def test_attention_view_hover_reads_weights_back_in_chromium(browser, tmp_path):
    """The inline script maps a pixel's colour back to its weight; the toggle ungroups the grid."""
    import torch

    from phi4lab.viz import attention as viz
    p = torch.zeros(1, 2, 4, 4)
    p[0, 0] = torch.tensor([[1, 0, 0, 0], [0.25, 0.75, 0, 0], [0.5, 0.2, 0.3, 0], [0.1, 0.2, 0.3, 0.4]])
    p[0, 1] = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]
    viz.attention_heads(p, ["a", "b", "c", "d"], 0, n_kv_heads=1).save(tmp_path / "view.html")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "view.html").as_uri())
    box = page.locator("img[data-head='L0H0']").bounding_box()
    for q, k, shown in ((1, 1, "0.748"), (2, 2, "0.299"), (0, 3, "masked (future)")):   # weights rounded to 1/254
        page.mouse.move(box["x"] + (k + 0.5) * box["width"] / 4, box["y"] + (q + 0.5) * box["height"] / 4)
        tip = page.locator(".tip").inner_text()
        assert f"query {q} " in tip and f"key   {k} " in tip and f"weight {shown}" in tip, tip
    page.locator("input.gqa").uncheck()
    assert "flat" in page.locator(".grid").get_attribute("class")
    assert not errors
    page.close()


def test_hostile_strings_run_no_script_in_any_view(browser, tmp_path):
    """Token labels, titles and typed text that try to break out of the page stay text in Chromium."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_viz import HOSTILE, hostile_feature_pages, hostile_graph_page, hostile_views

    from phi4lab.model.tokenizer import phi4_tokenizer
    from phi4lab.viz import tokens as token_explorer
    pages = {f"view{i}.html": v for i, v in enumerate(hostile_views() + hostile_feature_pages() + [hostile_graph_page()])}
    for name, view in pages.items():
        view.save(tmp_path / name)
    typed = " ".join(HOSTILE)
    explorer_html = token_explorer.page(typed, [token_explorer.phi4()]) + token_explorer.chat_view(phi4_tokenizer(), [{"role": "user", "content": typed}])[0]
    (tmp_path / "explorer.html").write_text(f"<!doctype html><meta charset='utf-8'>{explorer_html}", encoding="utf-8")
    for name in [*pages, "explorer.html"]:
        page = browser.new_page()
        errors, dialogs = [], []
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.on("dialog", lambda d, dialogs=dialogs: (dialogs.append(d.message), d.dismiss()))
        page.goto((tmp_path / name).as_uri())
        page.wait_for_timeout(300)                   # give an onload/onerror payload time to fire
        assert page.evaluate("window.__pwned") is None, name
        assert not dialogs and not errors, (name, dialogs, errors)
        img = page.locator("img[data-head]").first
        if img.count():                              # the hover script still runs, and shows the label as text
            box = img.bounding_box()
            page.mouse.move(box["x"] + 2, box["y"] + box["height"] - 2)     # last query, key 0
            assert HOSTILE[0] in page.locator(".tip").inner_text(), name
        page.close()


def test_feature_index_search_filters_rows_offline(browser, tmp_path):
    """The feature index's search box hides the rows that do not match, with no network."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_viz import hostile_feature_pages

    _, index = hostile_feature_pages()
    index.save(tmp_path / "index.html")
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "index.html").as_uri())
    rows = page.locator("tr[data-latent]")
    assert rows.count() == 10
    page.fill("input.search", "7")
    shown = [i for i in range(10) if rows.nth(i).is_visible()]
    assert 7 in shown and all("7" in rows.nth(i).inner_text().lower() for i in shown), shown   # only matching rows
    assert len(shown) < 10 or all("7" in rows.nth(i).inner_text() for i in range(10))
    page.fill("input.search", "")
    assert all(rows.nth(i).is_visible() for i in range(10))
    assert not errors and all(u.startswith("file://") for u in requests), (errors, requests)
    page.close()


def test_graph_page_draws_the_graph_and_hover_highlights_edges_offline(browser, tmp_path, tiny_model):
    """The attribution graph of an induction prompt, in Chromium: nodes and edges laid out on the page, hovering
    a node highlights exactly its edges, nothing requested from the network, no script error."""
    import torch

    from phi4lab.dictionaries import files, graphs
    from phi4lab.viz.graphs import graph_view

    first = torch.randint(10, 4000, (10,), generator=torch.Generator().manual_seed(1))
    graph = graphs.attribute(tiny_model, files.shipped_transcoders(), torch.cat([first, first[:-1]]))
    graph_view(graph, tiny_model.tokenizer).save(tmp_path / "graph.html")
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "graph.html").as_uri())
    box = page.locator("svg").first.bounding_box()
    assert box["width"] > 300 and box["height"] > 200
    assert page.locator(".node.feature").count() >= 5 and page.locator(".edge").count() >= 10
    logit = page.locator(".node.logit").first
    node_id = logit.get_attribute("data-node")
    logit.hover()
    lit = page.locator(".edge.hl")
    assert lit.count() > 0 and all(lit.nth(i).get_attribute("data-t") == node_id or
                                   lit.nth(i).get_attribute("data-s") == node_id for i in range(lit.count()))
    assert page.locator(".edge.dim").count() + lit.count() == page.locator(".edge").count()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "attribution-graph.png"))
    assert not errors and all(u.startswith("file://") for u in requests), (errors, requests)
    page.close()
