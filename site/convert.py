"""The executed notebooks, made fit for a static page: nothing is executed, only stored outputs are rewritten.

- A plotly figure (``application/vnd.plotly.v1+json``) becomes its static PNG where the output has one, and
  otherwise a ``text/html`` placeholder that ``_static/plotly-figures.js`` draws with the plotly.js vendored
  from the installed ``plotly`` package (no CDN).
- An ipywidgets output becomes static HTML drawn from the widget state the notebook saved (progress bars at
  their final value, the tokenizer explorer's HTML, the attention explorer's output, its controls shown as
  they were): a static page has no kernel for the controls to talk to.
"""

from __future__ import annotations

import copy
import html
import json

import nbformat

PLOTLY = "application/vnd.plotly.v1+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
CONTROLS = {"TextareaModel", "TextModel", "CheckboxModel", "ToggleButtonsModel", "IntSliderModel",
            "FloatSliderModel", "DropdownModel", "ButtonModel", "SelectModel", "RadioButtonsModel"}


def script_json(value) -> str:
    """JSON that is safe inside <script>: <, > and & escaped, so that no string in it can close the tag."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def plotly_html(figure: dict, key: str) -> str:
    """A div that _static/plotly-figures.js fills with the figure (its JSON in a script tag that runs nothing)."""
    spec = {"data": figure.get("data", []), "layout": figure.get("layout", {}), "config": figure.get("config", {})}
    height = spec["layout"].get("height") or 450
    return (f'<div class="p4l-plotly" id="{key}">'
            f'<script type="application/json" class="p4l-plotly-spec">{script_json(spec)}</script>'
            f'<div class="p4l-plotly-target" style="width:100%;min-height:{int(height)}px"></div></div>')


class Widgets:
    """Static HTML for widget views, from a notebook's saved widget state."""

    def __init__(self, metadata: dict):
        self.state = (metadata.get("widgets", {}).get(WIDGET_STATE, {}) or {}).get("state", {})
        self.controls = 0

    def _model(self, ref) -> dict | None:
        key = ref[len("IPY_MODEL_"):] if isinstance(ref, str) and ref.startswith("IPY_MODEL_") else ref
        return self.state.get(key)

    def render(self, model_id: str) -> str | None:
        model = self._model(model_id)
        return None if model is None else self._render(model)

    def _label(self, s: dict) -> str:
        d = s.get("description") or ""
        return f'<span class="p4l-w-label">{html.escape(d)}</span>' if d else ""

    def _render(self, model: dict) -> str:
        name, s = model.get("model_name", ""), model.get("state", {})
        if name in CONTROLS:
            self.controls += 1
        if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
            kids = "".join(self._render(m) for m in map(self._model, s.get("children", [])) if m)
            return f'<div class="p4l-w-{"h" if name == "HBoxModel" else "v"}box">{kids}</div>'
        if name == "HTMLModel":
            return f'<div class="p4l-w-html">{self._label(s)}{s.get("value", "")}</div>'
        if name in ("LabelModel", "HTMLMathModel"):
            return f'<div class="p4l-w-html">{html.escape(str(s.get("value", "")))}</div>'
        if name in ("FloatProgressModel", "IntProgressModel"):
            return (f'<progress class="p4l-w-progress {html.escape(s.get("bar_style") or "")}" '
                    f'max="{float(s.get("max", 100)):g}" value="{float(s.get("value", 0)):g}"></progress>')
        if name in ("TextareaModel", "TextModel"):
            return (f'<div class="p4l-w-text">{self._label(s)}<textarea readonly rows="3">'
                    f'{html.escape(str(s.get("value", "")))}</textarea></div>')
        if name == "CheckboxModel":
            checked = " checked" if s.get("value") else ""
            return (f'<label class="p4l-w-check"><input type="checkbox" disabled{checked}> '
                    f'{html.escape(s.get("description", ""))}</label>')
        if name in ("ToggleButtonsModel", "DropdownModel", "SelectModel", "RadioButtonsModel"):
            options, chosen = s.get("_options_labels", []), s.get("index")
            items = "".join(f'<span class="p4l-w-option{" chosen" if i == chosen else ""}">{html.escape(str(o))}</span>'
                            for i, o in enumerate(options))
            return f'<div class="p4l-w-options">{self._label(s)}{items}</div>'
        if name in ("IntSliderModel", "FloatSliderModel"):
            return (f'<div class="p4l-w-slider">{self._label(s)}<input type="range" disabled min="{s.get("min", 0)}" '
                    f'max="{s.get("max", 100)}" value="{s.get("value", 0)}"> <b>{html.escape(str(s.get("value")))}</b>'
                    "</div>")
        if name == "ButtonModel":
            return f'<button disabled>{html.escape(s.get("description", ""))}</button>'
        if name == "OutputModel":
            return f'<div class="p4l-w-output">{"".join(map(output_html, s.get("outputs", [])))}</div>'
        return ""            # layouts, styles and anything unknown draw nothing


def output_html(out: dict) -> str:
    """One stored output (inside an Output widget) as HTML, by the priority a notebook viewer uses."""
    if out.get("output_type") == "stream":
        return f'<pre class="p4l-w-stream">{html.escape("".join(out.get("text", "")))}</pre>'
    data = out.get("data", {})
    if "text/html" in data:
        return "".join(data["text/html"])
    if "image/png" in data:
        return f'<img alt="output" src="data:image/png;base64,{"".join(data["image/png"]).strip()}">'
    if "text/plain" in data:
        return f'<pre>{html.escape("".join(data["text/plain"]))}</pre>'
    return ""


def convert(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, dict]:
    """A copy of `nb` for the site, and counts of what changed (plotly figures as PNG / as plotly.js, widgets)."""
    nb = copy.deepcopy(nb)
    widgets = Widgets(nb.metadata)
    counts = {"plotly_png": 0, "plotly_js": 0, "widgets": 0, "widget_controls": 0}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for n, out in enumerate(cell.get("outputs", [])):
            data = out.get("data")
            if not data:
                continue
            if PLOTLY in data:
                figure = data.pop(PLOTLY)
                if "image/png" in data:                  # the static fallback: preferred, and needs no script
                    counts["plotly_png"] += 1
                    data.pop("text/html", None)
                else:
                    counts["plotly_js"] += 1
                    data["text/html"] = plotly_html(figure, f"p4l-plotly-{index}-{n}")
                data.setdefault("text/plain", "<plotly figure>")
            elif WIDGET_VIEW in data:
                view = data.pop(WIDGET_VIEW)
                before = widgets.controls
                static = widgets.render(view.get("model_id", ""))
                if static:
                    counts["widgets"] += 1
                    note = ""
                    if widgets.controls > before:
                        counts["widget_controls"] += 1
                        note = ('<div class="p4l-w-note">An interactive widget, shown as the notebook saved it: '
                                "open the notebook in JupyterLab (<code>make lab</code>) to use its controls.</div>")
                    data["text/html"] = f'<div class="p4l-widget">{static}{note}</div>'
    nb.metadata.pop("widgets", None)                     # no widget manager: the HTML above is the whole picture
    return nb, counts
