"""Plotly figures keep a PNG copy, so that a saved notebook is not blank outside JupyterLab.

GitHub, nbviewer, nbconvert and a learning platform's viewer cannot run plotly's JavaScript; they
show an output's image/png instead. Two halves: every plotly output saved in the course carries a
real PNG of itself (a new figure without the copy fails here), and ``use_static_fallbacks`` adds
that copy where kaleido and a browser are at hand and leaves the figure interactive, with one note
and no error, where they are not.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
import time
import types
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import pytest
from PIL import Image

from phi4lab.viz import figures

COURSE = Path(__file__).resolve().parents[1] / "course"
NOTEBOOKS = sorted(COURSE.glob("[0-9][0-9]_*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def plotly_outputs(notebook: Path):
    """(cell index, output data) for each saved output that holds a plotly figure."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return [(i, o["data"]) for i, c in enumerate(cells) if c["cell_type"] == "code"
            for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]


def decode_png(data: str) -> tuple[bytes, Image.Image]:
    raw = base64.b64decode(data, validate=True)
    assert raw.startswith(figures.PNG_SIGNATURE), "not a PNG"
    Image.open(io.BytesIO(raw)).verify()          # chunk CRCs and structure
    return raw, Image.open(io.BytesIO(raw))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_saved_plotly_figure_carries_a_png_of_itself(notebook):
    problems = []
    for i, data in plotly_outputs(notebook):
        if "image/png" not in data:
            problems.append(f"cell {i}: plotly JSON only (call phi4lab.viz.figures.use_static_fallbacks() in the "
                            "setup cell, with kaleido and Chromium installed, and re-execute)")
            continue
        raw, image = decode_png(data["image/png"])
        layout = data[PLOTLY].get("layout", {})
        size = (layout.get("width") or figures.WIDTH, layout.get("height") or figures.HEIGHT)
        if image.size != size:                    # drawn at scale 1 from this very figure
            problems.append(f"cell {i}: PNG is {image.size}, the figure is {size}")
        if not 2_000 <= len(raw) <= 150_000:
            problems.append(f"cell {i}: PNG of {len(raw):,} bytes")
        lo, hi = image.convert("L").getextrema()
        if hi - lo < 100:                         # a blank or single-colour image is no fallback
            problems.append(f"cell {i}: PNG has no contrast ({lo}..{hi})")
    assert not problems, f"{notebook.name}: " + "; ".join(problems)


def test_the_course_has_the_figures_this_guards():
    counts = {n.stem[:2]: len(plotly_outputs(n)) for n in NOTEBOOKS}
    assert sum(counts.values()) >= 15 and counts["04"] >= 6, counts


def plot_like(mode="RGBA", alpha=255) -> Image.Image:
    """A white picture with anti-aliased lines in many blended colours, as Chrome draws a plot."""
    from PIL import ImageDraw
    image = Image.new(mode, (400, 200), (255, 255, 255, alpha)[:len(mode)])
    draw = ImageDraw.Draw(image)
    for k in range(40):
        draw.line([(0, 5 * k), (399, 199 - 3 * k)], fill=(9 * k % 256, 80, 255 - 5 * k, 255)[:len(mode)], width=2)
    return image.resize((800, 400), Image.Resampling.BICUBIC)     # blends: well over 256 colours


def as_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_a_palette_keeps_the_picture_and_sheds_most_bytes():
    image = plot_like()
    assert len(image.convert("RGB").getcolors(1 << 20)) > 256
    before = as_png(image)
    after = figures.palette_png(before)
    assert len(after) < len(before) / 2 and after == figures.palette_png(before)        # smaller, and deterministic
    out = Image.open(io.BytesIO(after))
    assert out.mode == "P" and out.size == image.size
    # no pixel moves far: the largest channel difference is small against 255
    diff = [abs(a - b) for a, b in zip(image.convert("RGB").tobytes(), out.convert("RGB").tobytes())]
    assert max(diff) <= 48 and sum(diff) / len(diff) < 2     # (8,000 colours in this test; a plot has fewer)
    few = Image.new("RGB", (300, 100), "white")
    few.paste((200, 30, 30), (50, 20, 250, 80))
    assert Image.open(io.BytesIO(figures.palette_png(as_png(few)))).convert("RGB").tobytes() == few.tobytes()
    see_through = as_png(plot_like(alpha=0))
    assert figures.palette_png(see_through) == see_through                    # transparency is kept as drawn


# ---- use_static_fallbacks --------------------------------------------------------------------------------

@pytest.fixture
def shown(monkeypatch):
    """Renderers as in a Jupyter kernel, restored afterwards; returns the list of bundles fig.show() displays."""
    import IPython.display

    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")     # restored through its setter
    bundles = []
    monkeypatch.setattr(IPython.display, "display", lambda bundle, raw=False: bundles.append(bundle))
    return bundles


def fake_kaleido(monkeypatch, draw):
    """Put a kaleido whose calc_fig_sync is `draw` in sys.modules; returns the list of its calls."""
    calls = []

    def calc_fig_sync(fig_dict, opts=None, kopts=None, **kw):
        calls.append({"fig": fig_dict, "opts": opts, "kopts": kopts})
        return draw(opts)
    monkeypatch.setitem(sys.modules, "kaleido", types.SimpleNamespace(calc_fig_sync=calc_fig_sync))
    return calls


def png_of(opts) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (opts["width"], opts["height"]), "white").save(buf, format="PNG")
    return buf.getvalue()


def bar(**layout) -> go.Figure:
    return go.Figure(go.Bar(x=["a", "b", "c"], y=[1, 3, 2]), layout=layout)


def test_a_kernel_default_gains_the_png_renderer_once_and_a_terminal_is_left_alone(shown):
    figures.use_static_fallbacks()
    figures.use_static_fallbacks()
    assert pio.renderers.default == "plotly_mimetype+phi4lab_png"
    pio.renderers.default = "colab"               # an HTML renderer: still a notebook output, so it gets the PNG too
    figures.use_static_fallbacks()
    assert pio.renderers.default == "colab+phi4lab_png"
    pio.renderers.default = "browser"             # IPython in a terminal opens a browser tab: no output to save
    figures.use_static_fallbacks()
    assert pio.renderers.default == "browser"


def test_each_figure_shows_its_plotly_json_and_the_png_kaleido_drew(shown, monkeypatch, capsys):
    calls = fake_kaleido(monkeypatch, png_of)
    figures.use_static_fallbacks()
    bar(height=320).show()
    bar(width=600, height=300).show()
    assert [sorted(b) for b in shown] == [["application/vnd.plotly.v1+json", "image/png"]] * 2
    assert shown[0][PLOTLY]["data"][0]["y"] == [1, 3, 2]
    _, image = decode_png(shown[0]["image/png"])
    assert image.size == (figures.WIDTH, 320) and image.convert("RGB").getcolors() == [(figures.WIDTH * 320,
                                                                                         (255, 255, 255))]
    assert [c["opts"] for c in calls] == [{"format": "png", "scale": 1, "width": figures.WIDTH, "height": 320},
                                          {"format": "png", "scale": 1, "width": 600, "height": 300}]
    assert all(c["kopts"]["mathjax"] is False for c in calls)    # nothing to fetch from a CDN
    assert capsys.readouterr().out == ""


def test_without_kaleido_the_figure_stays_interactive_with_one_note(shown, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "kaleido", None)        # `import kaleido` raises ImportError
    figures.use_static_fallbacks()
    bar().show()
    bar().show()
    assert [list(b) for b in shown] == [[PLOTLY], [PLOTLY]]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("Note:") and "kaleido is not installed" in out, out


def test_a_renderer_that_failed_once_is_not_tried_again(shown, monkeypatch, capsys):
    def broken(opts):
        raise RuntimeError("the browser crashed")
    calls = fake_kaleido(monkeypatch, broken)
    figures.use_static_fallbacks()
    for _ in range(3):
        bar().show()
    assert len(calls) == 1 and [list(b) for b in shown] == [[PLOTLY]] * 3
    assert "kaleido failed: RuntimeError" in capsys.readouterr().out
    figures.use_static_fallbacks()                # a fresh start tries again
    bar().show()
    assert len(calls) == 2


def test_bytes_that_are_not_a_png_are_not_saved(shown, monkeypatch, capsys):
    fake_kaleido(monkeypatch, lambda opts: b"<svg/>")
    figures.use_static_fallbacks()
    bar().show()
    assert list(shown[0]) == [PLOTLY] and "ValueError" in capsys.readouterr().out


def test_with_kaleido_but_no_browser_the_figure_stays_interactive(shown, monkeypatch, capsys, tmp_path):
    """The real kaleido, pointed at a browser that is not there, as on a laptop without Chrome."""
    pytest.importorskip("kaleido")
    from choreographer.browsers import Chromium
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-chrome"))
    if Path(Chromium.find_browser(skip_local=False)).is_file():
        pytest.skip("a Chrome that kaleido downloaded itself is preferred to BROWSER_PATH here")
    figures.use_static_fallbacks()
    start = time.perf_counter()
    bar().show()
    assert list(shown[0]) == [PLOTLY]
    assert time.perf_counter() - start < 10
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no Chrome or Chromium" in out, out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="needs Debian's Chromium: sudo apt install chromium")
def test_kaleido_draws_the_same_png_twice_with_chromium_offline(shown, capsys):
    """What the notebooks save: a real PNG at the figure's size, and the same bytes on a re-run (no churn)."""
    pytest.importorskip("kaleido")
    figures.use_static_fallbacks()
    bar(height=320, title="three bars").show()
    bar(height=320, title="three bars").show()
    assert capsys.readouterr().out == ""
    first, second = (b["image/png"] for b in shown)
    raw, image = decode_png(first)
    assert image.size == (figures.WIDTH, 320) and first == second
    lo, hi = image.convert("L").getextrema()
    assert hi - lo > 100
