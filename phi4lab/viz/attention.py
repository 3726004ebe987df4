"""Attention views that work offline, on long prompts, and with grouped-query attention.

An attention pattern is a [query, key] matrix per head: row q says how query
token q splits its attention over the tokens before it. Three views answer
three questions:

- ``attention_head``: what does *this* head do? One head, big, with token
  labels (on short prompts) and a hover read-out of query, key and weight.
- ``attention_heads``: what do the heads of *this layer* do? All heads as a
  grid of small multiples, grouped under the key/value head they share.
- ``head_overview``: *where* are the heads of a kind? A layer x head table of
  one score (induction, previous-token, ...) from phi4lab.analysis.heads.

**Why not CircuitsVis or plotly?** Both ship each weight as a JSON number and
draw with a JavaScript library: a 512-token, 32-head pattern becomes a page of
about a hundred megabytes, and when the library comes from a CDN, an offline
lab sees a blank cell. Here each head is a small **palette PNG** embedded in
the page as a data URI:

1. Quantise: weight p in [0, 1] becomes round(p x 254), so the error is at
   most 1/508. Index 255 marks the masked future (key > query) and is drawn
   light grey, so "not allowed to look" differs from "chose not to look".
2. The PNG's palette *is* the colour map, so the browser draws the colours
   with no JavaScript at all (an exported or untrusted notebook still shows
   the picture). PNG's zlib compression makes the mostly-empty upper triangle
   and the near-zero weights almost free.
3. A few lines of inline JavaScript (no library, no network) read a pixel
   back to show exact values on hover.

For exported or graded notebooks, every view also draws itself with
matplotlib: ``view.figure()``, ``view.save("x.png")`` or ``.svg`` or ``.html``.

**Grouped-query attention.** Phi-4 has 40 query heads over 10 key/value
heads: query heads 4g..4g+3 share K and V head g. They share what they can
attend to and what they read, but not *where* they look (each has its own
queries). The grid frames each group and prints how far its heads' patterns
diverge (``phi4lab.analysis.heads.kv_group_divergence``: mean Jensen-Shannon divergence in bits; 0
means the group's heads look at the same places, 1 is the maximum).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json

import torch

from phi4lab.analysis.heads import kv_group_divergence
from phi4lab.model.bridge import is_bridge
from phi4lab.viz import assets
from phi4lab.viz.png import LEVELS, palette, png_bytes, quantise

MAX_LABELLED = 64     # longer prompts get hover labels only, no axis labels


# ------------------------------------------------------------------ inputs

def patterns_from(source, tokens=None) -> torch.Tensor:
    """Attention patterns as [n_layers, n_heads, query, key] (one prompt).

    source: a tensor [L, H, Q, K], [L, 1, H, Q, K] or [H, Q, K]; an
    ActivationCache holding ``blocks.*.attn.hook_pattern``; or a model, in
    which case `tokens` are run through it.
    """
    if _is_model(source):
        from phi4lab.analysis.heads import attention_patterns
        if tokens is None:
            raise ValueError("give the tokens to run through the model")
        from phi4lab.analysis.cache_plan import _config_of, check_forward_fits
        from phi4lab.model.guards import check_tokens
        if is_bridge(source):
            tokens = check_tokens(source, tokens)
        tokens = torch.as_tensor(tokens)
        n = tokens.shape[-1]
        cfg, _ = _config_of(source)
        copy = cfg.num_hidden_layers * cfg.num_attention_heads * n * n * 4      # the fp32 copy returned
        check_forward_fits(source, n, what=f"the attention patterns of a {n:,}-token prompt", extra_bytes=copy,
                           names=lambda name: name.endswith("attn.hook_pattern"))
        source = attention_patterns(source, tokens)
    elif hasattr(source, "keys") and not torch.is_tensor(source):
        names = sorted((k for k in source.keys() if k.endswith("attn.hook_pattern")),
                       key=lambda k: int(k.split(".")[1]))
        if not names:
            raise KeyError("this cache holds no attention patterns; cache 'blocks.*.attn.hook_pattern' "
                           "(names_filter=lambda n: n.endswith('hook_pattern'))")
        source = torch.stack([source[k] for k in names])
    p = torch.as_tensor(source).detach().float().cpu()
    if p.ndim == 5:
        if p.shape[1] != 1:
            raise ValueError(f"patterns for a batch of {p.shape[1]} prompts: pick one, e.g. patterns[:, 0]")
        p = p[:, 0]
    if p.ndim == 3:
        p = p[None]
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"expected patterns [layers, heads, query, key] with query == key, got {tuple(p.shape)}")
    if p.shape[-1] == 0:
        raise ValueError("the prompt is empty: there is no attention to show")
    return p


def _check_layer_head(p: torch.Tensor, layer: int, head: int | None = None) -> None:
    L, H = p.shape[:2]
    if not 0 <= layer < L:
        raise IndexError(f"layer {layer} is out of range: these patterns have layers 0..{L - 1}")
    if head is not None and not 0 <= head < H:
        raise IndexError(f"head {head} is out of range: these patterns have query heads 0..{H - 1}")


def _is_model(source) -> bool:
    """A phi4lab/TransformerLens bridge or a Hugging Face model (anything with a config), not patterns."""
    return is_bridge(source) or isinstance(source, torch.nn.Module) and hasattr(source, "config")


def _patterns_and_labels(source, tokens) -> tuple[torch.Tensor, list | None]:
    """(patterns, token labels) for a view: from patterns and labels, or from a model and its input.

    With a model, `tokens` is the text or the token ids to run, and the labels are the model's
    own string tokens; with patterns (or a cache), `tokens` are the labels.
    """
    if not _is_model(source):
        return patterns_from(source), tokens
    if tokens is None:
        raise ValueError("give the text or the token ids to run through the model")
    from phi4lab.model.guards import check_tokens, text_tokens
    if isinstance(tokens, str):
        if not is_bridge(source):
            raise TypeError("text needs a phi4lab/TransformerLens model; give a Hugging Face model token ids")
        tokens = text_tokens(source, tokens)
    ids = torch.as_tensor(tokens)
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.shape[0] != 1:
        raise ValueError(f"a view shows one prompt; got a batch of {ids.shape[0]}: pick one, e.g. tokens[:1]")
    if is_bridge(source):
        ids = check_tokens(source, ids)
        labels = source.to_str_tokens(ids[0])
    else:
        labels = [str(int(t)) for t in ids[0]]
    return patterns_from(source, ids), labels


def _labels(tokens, n: int) -> list[str]:
    if tokens is None:
        return [str(i) for i in range(n)]
    labels = [str(t) for t in tokens]
    if len(labels) != n:
        raise ValueError(f"{len(labels)} token labels for a {n}-token pattern")
    # Make whitespace visible: a label of " " would be invisible on an axis.
    return [t.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u2192") for t in labels]


# ------------------------------------------------------------------ the views

_CSS = assets.read("attention.css")

# Hover read-out: draw the palette PNG on a canvas once, read the pixel's colour,
# map it back to its palette index, and show the weight. No library, no network.
_JS = assets.read("attention.js")        # a %-template: %(id)s, %(tokens)s, %(palette)s, %(levels)d


def script_json(value) -> str:
    """JSON that is safe inside an inline <script>: a token label "</script><svg onload=...>" stays data.

    ``json.dumps`` leaves <, > and & as they are, and the HTML parser ends a script at the first
    "</script" whatever the JavaScript around it says. Escaped as \\u003c etc. they are the same
    string to JavaScript and no tag to HTML. U+2028 and U+2029 end a line in older JavaScript.
    """
    text = json.dumps(value)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


class AttentionView:
    """A built view: shows itself in Jupyter, saves itself as HTML, PNG or SVG."""

    def __init__(self, kind: str, body: str, title: str, tokens: list[str], colours, summary: str, draw):
        self.kind, self.title, self.tokens, self.summary = kind, title, tokens, summary
        self._body, self._colours, self._draw = body, colours, draw

    def html(self, element_id: str | None = None) -> str:
        """A self-contained fragment: inline CSS, data-URI images, inline script."""
        # The script finds its own view through document.currentScript; the id
        # (a hash of the content, so the page is deterministic) is the fallback.
        eid = element_id or "p4l-" + hashlib.sha1(self._body.encode()).hexdigest()[:12]
        script = _JS % dict(id=script_json(eid), tokens=script_json(self.tokens),
                            palette=script_json(self._colours), levels=LEVELS)
        return (f'<div class="p4l-att" id="{eid}"><style>{_CSS}</style>'
                f'<div class="title"><b>{html.escape(self.title)}</b></div>{self._body}'
                f'<div class="tip"></div><script>{script}</script></div>')

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return f"AttentionView({self.kind}: {self.summary})"

    @property
    def payload_bytes(self) -> int:
        return len(self.html(element_id="p4l-size").encode())

    def figure(self):
        """The same view as a static matplotlib Figure (for exports and graded notebooks)."""
        return self._draw()

    def save(self, path) -> None:
        """Write .html (a standalone page), .png or .svg, by the file's extension."""
        path = str(path)
        if path.endswith(".html"):
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"<!doctype html><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                        f"{self.html()}")
        elif path.endswith((".png", ".svg")):
            import matplotlib.pyplot as plt
            fig = self.figure()
            fig.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(fig)
        else:
            raise ValueError(f"save to .html, .png or .svg, not {path!r}")


def _img(codes: torch.Tensor, colours, label: str, px: int) -> str:
    data = base64.b64encode(png_bytes(codes, colours)).decode()
    return (f'<img src="data:image/png;base64,{data}" width="{px}" height="{px}" '
            f'data-head="{html.escape(label)}" alt="{html.escape(label)}">')


def attention_head(patterns, tokens=None, layer: int = 0, head: int = 0, *, size: int = 420,
                   contrast: str = "sqrt") -> AttentionView:
    """One head's pattern, big, with token labels on prompts up to 64 tokens and a hover read-out.

    patterns: patterns or a cache (then `tokens` are the labels), or a model (then `tokens` is
    the text or the token ids to run, and the labels are its string tokens).
    """
    p, tokens = _patterns_and_labels(patterns, tokens)
    _check_layer_head(p, layer, head)
    n = p.shape[-1]
    labels = _labels(tokens, n)
    colours = palette(contrast)
    name = f"L{layer}H{head}"
    img = _img(quantise(p[layer, head]), colours, name, size)
    if n <= MAX_LABELLED:
        cell = size / n
        ylab = "".join(f'<div style="height:{cell:.2f}px;line-height:{cell:.2f}px;text-align:right;'
                       f'overflow:hidden">{html.escape(t)}</div>' for t in labels)
        xlab = "".join(f'<div class="xl" style="width:{cell:.2f}px;display:inline-block;'
                       f'max-height:70px">{html.escape(t)}</div>' for t in labels)
        body = (f'<div class="head"><div style="font-size:{min(11, cell * 0.8):.0f}px">{ylab}</div><div>{img}</div>'
                f'<div></div><div style="font-size:{min(11, cell * 0.8):.0f}px;white-space:nowrap">{xlab}</div></div>')
    else:
        body = img
    body += '<div style="color:#666">rows: queries, columns: keys; grey: the causal mask</div>'

    def draw():
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 5.5))
        im = ax.imshow(_masked(p[layer, head]), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"attention pattern {name}")
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        if n <= MAX_LABELLED:
            ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(n), labels, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
        return fig

    return AttentionView("head", body, f"Attention pattern, layer {layer} head {head}", labels, colours,
                         f"{name}, {n} tokens", draw)


def attention_heads(patterns, tokens=None, layer: int = 0, *, n_kv_heads: int | None = None, size: int | None = None,
                    contrast: str = "sqrt") -> AttentionView:
    """All heads of one layer as a grid, framed by shared key/value head (with a toggle to ungroup).

    patterns: as for `attention_head`: patterns or a cache with labels, or a model with its input.
    """
    p, tokens = _patterns_and_labels(patterns, tokens)
    _check_layer_head(p, layer)
    H, n = p.shape[1], p.shape[-1]
    n_kv = n_kv_heads or H
    if H % n_kv:
        raise ValueError(f"{H} query heads cannot share {n_kv} key/value heads evenly")
    per = H // n_kv
    size = size or max(90, min(180, 1440 // max(H, 8)))
    labels = _labels(tokens, n)
    colours = palette(contrast)
    div = kv_group_divergence(p[layer:layer + 1], n_kv)[0]
    groups = []
    for g in range(n_kv):
        figs = "".join(f'<figure>{_img(quantise(p[layer, h]), colours, f"L{layer}H{h}", size)}'
                       f'<figcaption>H{h}</figcaption></figure>' for h in range(g * per, (g + 1) * per))
        title = (f'KV head {g}: heads {g * per}-{(g + 1) * per - 1}, divergence {div[g]:.2f} bits'
                 if per > 1 else f"head {g}")
        groups.append(f'<div class="group"><div class="gtitle">{title}</div>{figs}</div>')
    toggle = (f'<label><input type="checkbox" class="gqa" checked> group by shared key/value head '
              f'({per} query heads per KV head)</label>' if per > 1 else "")
    body = f'{toggle}<div class="grid">{"".join(groups)}</div>'

    def draw():
        import matplotlib.pyplot as plt
        cols = per if per > 1 else min(H, 8)
        rows = n_kv if per > 1 else -(-H // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows), squeeze=False)
        for h, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if h < H:
                ax.imshow(_masked(p[layer, h]), cmap="Blues", vmin=0, vmax=1)
                ax.set_title(f"H{h}" + (f" (KV {h // per})" if per > 1 else ""), fontsize=8)
            else:
                ax.axis("off")
        fig.suptitle(f"layer {layer}: all heads" + (", one row per shared KV head" if per > 1 else ""))
        fig.tight_layout()
        return fig

    return AttentionView("layer", body, f"Layer {layer}: {H} heads over {n_kv} key/value heads, {n} tokens",
                         labels, colours, f"layer {layer}, {H} heads, {n} tokens", draw)


def head_overview(scores: torch.Tensor, *, n_kv_heads: int | None = None, score_name: str = "score",
                  vmax: float | None = None) -> AttentionView:
    """A layer x head table of one score, columns grouped by shared key/value head."""
    s = torch.as_tensor(scores).detach().float().cpu()
    if s.ndim != 2:
        raise ValueError(f"scores must be [layers, heads], got shape {tuple(s.shape)}")
    L, H = s.shape
    per = H // n_kv_heads if n_kv_heads else 1
    if n_kv_heads and H % n_kv_heads:
        raise ValueError(f"{H} query heads cannot share {n_kv_heads} key/value heads evenly")
    top = float(vmax if vmax is not None else max(s.max().item(), 1e-9))
    colours = palette("linear")
    head_row = "".join(f'<td class="{"gsep" if per > 1 and h % per == 0 and h else ""}"><b>H{h}</b></td>'
                       for h in range(H))
    rows = [f"<tr><td></td>{head_row}</tr>"]
    for layer in range(L):
        cells = []
        for h in range(H):
            v = s[layer, h].item()
            r, g, b = colours[round(min(max(v / top, 0), 1) * LEVELS)]
            ink = "#fff" if v / top > 0.55 else "#000"
            sep = "gsep" if per > 1 and h % per == 0 and h else ""
            cells.append(f'<td class="{sep}" style="background:rgb({r},{g},{b});color:{ink}" '
                         f'title="L{layer}H{h} {html.escape(score_name)} {v:.3f}">{v:.2f}</td>')
        rows.append(f"<tr><td><b>L{layer}</b></td>{''.join(cells)}</tr>")
    note = f"<div style='color:#666'>thick lines separate the {n_kv_heads} key/value groups</div>" if per > 1 else ""
    body = f'<table class="ov">{"".join(rows)}</table>{note}'

    def draw():
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(max(4, 0.45 * H + 1.5), max(2.5, 0.45 * L + 1)))
        im = ax.imshow(s, cmap="Blues", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(H), [f"H{h}" for h in range(H)], fontsize=7)
        ax.set_yticks(range(L), [f"L{layer}" for layer in range(L)])
        for g in range(1, n_kv_heads or 1):
            ax.axvline(g * per - 0.5, color="#334", lw=2)
        ax.set_title(f"{score_name} per head")
        fig.colorbar(im, ax=ax)
        return fig

    return AttentionView("overview", body, f"{score_name} per head ({L} layers x {H} heads)", [], colours,
                         f"{score_name}, {L}x{H}", draw)


def _masked(pattern: torch.Tensor):
    """For matplotlib: the pattern with the causal mask as NaN (drawn blank)."""
    a = pattern.clone()
    n_q, n_k = a.shape
    a[torch.ones(n_q, n_k, dtype=torch.bool).triu(1 + n_k - n_q)] = float("nan")
    return a.numpy()


# ------------------------------------------------------------------ the widget

def token_view(patterns, tokens, layer: int, head: int, query: int) -> str:
    """The prompt as text, each token shaded by how much `query` attends to it (HTML)."""
    p = patterns_from(patterns)
    _check_layer_head(p, layer, head)
    n = p.shape[-1]
    if not 0 <= query < n:
        raise IndexError(f"query {query} is out of range: the prompt has tokens 0..{n - 1}")
    colours = palette("sqrt")
    row = p[layer, head, query]
    spans = []
    for k, t in enumerate(tokens):
        t = str(t)
        if k > query:
            style = "color:#aaa"
        else:
            r, g, b = colours[round(float(row[k].clamp(0, 1)) * LEVELS)]
            style = f"background:rgb({r},{g},{b});" + ("color:#fff" if row[k] > 0.4 else "")
        if k == query:
            style += ";outline:2px solid #d60"
        spans.append(f'<span style="{style}" title="key {k}: {float(row[k]):.3f}">{html.escape(t)}</span>')
    return ('<div style="font-family:monospace;white-space:pre-wrap;line-height:1.7">' + "".join(spans) +
            f'</div><div style="color:#666">attention from token {query} (outlined), L{layer}H{head}</div>')


def explore(model, text: str, *, max_tokens: int = 512):
    """Interactive attention explorer: pick the view, layer, head and query token.

    Runs the model once on `text` (refusing an empty prompt, one longer than the
    context or `max_tokens`, or one whose patterns would not fit in memory), then
    redraws from the cached patterns as the pickers change. Special-token strings
    in `text` stay text, as everywhere text is typed.
    """
    import ipywidgets as W
    from IPython.display import display

    from phi4lab.model.guards import text_tokens

    tokens = text_tokens(model, text)          # all of it, typed specials as text, or a clear refusal
    if tokens.shape[-1] > max_tokens:
        raise ValueError(f"the prompt has {tokens.shape[-1]} tokens; the explorer draws at most {max_tokens} "
                         "(pass max_tokens= to raise it)")
    labels = model.to_str_tokens(tokens[0])
    p = patterns_from(model, tokens)
    L, H, n = p.shape[0], p.shape[1], p.shape[-1]
    n_kv = model.cfg.n_key_value_heads or H

    view = W.ToggleButtons(options=["head", "layer", "token"], value="layer", description="view")
    layer = W.IntSlider(0, 0, L - 1, description="layer")
    head = W.IntSlider(0, 0, H - 1, description="head")
    query = W.IntSlider(n - 1, 0, n - 1, description="query token")
    grouped = W.Checkbox(True, description=f"group by KV head ({H // n_kv} per group)")
    out = W.Output()

    def redraw(*_):
        head.disabled = view.value == "layer"
        query.disabled = view.value != "token"
        out.clear_output(wait=True)
        with out:
            if view.value == "head":
                display(attention_head(p, labels, layer.value, head.value))
            elif view.value == "layer":
                display(attention_heads(p, labels, layer.value, n_kv_heads=n_kv if grouped.value else None))
            else:
                display(W.HTML(token_view(p, labels, layer.value, head.value, query.value)))

    for w in (view, layer, head, query, grouped):
        w.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox([view, grouped]), W.HBox([layer, head, query]), out])
