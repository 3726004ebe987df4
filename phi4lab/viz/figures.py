"""Plotly figures that also show in a saved notebook: each one keeps a PNG copy beside its JSON.

A plotly figure in a notebook is JSON that a JavaScript renderer draws. JupyterLab has that
renderer; GitHub, nbviewer, ``jupyter nbconvert`` and a learning platform's notebook viewer do
not, and show a blank cell where the figure was. ``use_static_fallbacks()``, called in each
notebook's setup cell, adds a PNG of the figure to the same output. Every other viewer shows the
PNG. JupyterLab still uses its plotly renderer (it ranks above images), which, given a PNG, shows
it at once and swaps in the interactive figure when the pointer enters it (as it does for any
notebook that JupyterLab saved, since it stores such a PNG itself).

The PNG is drawn by kaleido, which drives a local Chrome or Chromium (found on the ``PATH``, in
the usual install places, or where ``BROWSER_PATH`` says); nothing is fetched from the network
(plotly.js comes from the plotly package, and MathJax is left out). Where kaleido or the
browser is missing, on a laptop say, the figures show interactively exactly as before: the
first one prints a one-line note, and no figure raises or waits.
"""

from __future__ import annotations

import base64
import io

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

RENDERER = "phi4lab_png"
WIDTH = 800        # px, when a figure sets none: readable, and about 5 to 20 KB of PNG per figure
HEIGHT = 500       # px, plotly's own default, when a figure sets none
TIMEOUT_S = 60     # for one figure; the browser starts afresh for each (about 2 s on a 2-core machine)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngFallback(MimetypeRenderer):
    """A plotly renderer that adds ``image/png`` to a figure's output, or nothing where it cannot.

    plotly copies a renderer before each use, so what was learned about this machine (that no
    PNG can be drawn here) lives in ``state``, a dict the copies share.
    """

    def __init__(self, width: int = WIDTH, height: int = HEIGHT, timeout_s: float = TIMEOUT_S):
        self.width, self.height, self.timeout_s = width, height, timeout_s
        self.state: dict[str, str | None] = {"unavailable": None}

    def draw(self, fig_dict: dict) -> bytes:
        """The figure as PNG bytes, at the figure's own size if it sets one, at scale 1."""
        import kaleido  # optional: the lab extra installs it; without it, figures stay interactive only

        layout = fig_dict.get("layout", {})
        opts = {"format": "png", "scale": 1,
                "width": layout.get("width") or self.width, "height": layout.get("height") or self.height}
        png = kaleido.calc_fig_sync(fig_dict, opts=opts, kopts={"mathjax": False, "timeout": self.timeout_s})
        if not isinstance(png, bytes) or not png.startswith(PNG_SIGNATURE):
            raise ValueError(f"kaleido returned {type(png).__name__}, not a PNG")
        return palette_png(png)

    def to_mimebundle(self, fig_dict: dict) -> dict:
        if self.state["unavailable"] is not None:      # tried once in this kernel and failed: do not wait again
            return {}
        try:
            png = self.draw(fig_dict)
        except Exception as e:                         # any failure must leave the figure as it was
            self.state["unavailable"] = _reason(e)
            print(f"Note: figures here are interactive only; no PNG copy is saved with the notebook "
                  f"({self.state['unavailable']}).")
            return {}
        return {"image/png": base64.b64encode(png).decode("ascii")}


def palette_png(png: bytes) -> bytes:
    """The same picture in at most 256 colours, which is 3 to 4 times fewer bytes for a plot.

    Chrome writes RGBA; a plot has a few hundred to a few thousand colours, all but a few of them
    anti-aliasing blends, so a palette (median cut, no dithering: deterministic) changes no pixel
    one can see. A picture with transparency, or one the palette does not make smaller, is kept.
    """
    try:
        from PIL import Image  # Pillow comes with matplotlib
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png))
    if "A" in image.getbands() and image.getchannel("A").getextrema() != (255, 255):
        return png
    paletted = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    paletted.save(out, format="PNG", optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def _reason(error: Exception) -> str:
    if isinstance(error, ImportError):
        return "kaleido is not installed"
    if type(error).__name__ == "ChromeNotFoundError":
        return "kaleido found no Chrome or Chromium; install one, or set BROWSER_PATH"
    return f"kaleido failed: {type(error).__name__}"


def use_static_fallbacks(width: int = WIDTH) -> None:
    """Make every plotly figure shown from now on also carry a PNG copy (see the module docstring).

    Adds the ``phi4lab_png`` renderer to plotly's default renderers, so that ``fig.show()`` in a
    notebook displays one output holding both the interactive figure and its PNG. Call it again
    to start afresh (a new kernel does too). Where the default renderers display nothing inline
    (a terminal's ``browser``), they are left alone: there is no saved notebook to serve.
    """
    pio.renderers[RENDERER] = PngFallback(width=width)
    names = [n for n in (pio.renderers.default or "").split("+") if n and n != RENDERER]
    if any(isinstance(pio.renderers[n], MimetypeRenderer) for n in names):
        names.append(RENDERER)
    pio.renderers.default = "+".join(names)  # resolves the names now, so the fresh renderer is the one used
