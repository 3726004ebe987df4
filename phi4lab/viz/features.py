"""Feature dashboards that work offline: what makes an SAE latent fire, and what it does to the next token.

For one latent, a dashboard shows (in the spirit of Anthropic's and Neuronpedia's feature pages,
without their servers):

* the **top activating contexts**: the windows where it fires hardest, every token shaded by the
  latent's value there and the firing token outlined;
* an **activation histogram** of its nonzero values, and how often it fires;
* the **output tokens** its decoder direction raises and lowers most, read directly through the
  final norm's weight and the unembedding (phi4lab.dictionaries.features.output_tokens).

``feature_index`` lists many latents on one page with a search box (inline script, no library).
Every page is one self-contained HTML fragment: no CDN, no network, and every token label is
escaped and its invisible characters made visible (phi4lab.viz.tokens.visible), so text cannot
become markup or script.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import torch

from phi4lab.dictionaries.features import output_tokens
from phi4lab.dictionaries.sae import SparseAutoencoder
from phi4lab.viz import assets
from phi4lab.viz.attention import script_json
from phi4lab.viz.page import Page
from phi4lab.viz.tokens import visible

_CSS = assets.read("features.css")
_JS = assets.read("features.js")


def _label(tokenizer, token_id: int) -> str:
    return visible(tokenizer.decode([int(token_id)]), whitespace=True)


@dataclass
class Context:
    """One window around a firing: its token ids, the latent's value at each, and which one fired most."""

    tokens: list[int]
    values: list[float]
    peak: int                   # index into tokens
    source: tuple[int, int]     # (window, position) in the token set


def top_contexts(latents: torch.Tensor, tokens: torch.Tensor, latent: int, n: int = 8, radius: int = 8) -> list[Context]:
    """The n positions where `latent` fires most, each with `radius` tokens either side (one per window)."""
    values = latents[..., latent]                                               # [windows, T]
    best_per_window, where = values.max(-1)
    order = best_per_window.argsort(descending=True)
    out = []
    for w in order[:n].tolist():
        if best_per_window[w] <= 0:
            break
        p = int(where[w])
        lo, hi = max(0, p - radius), min(tokens.shape[1], p + radius + 1)
        out.append(Context(tokens[w, lo:hi].tolist(), values[w, lo:hi].tolist(), p - lo, (w, p)))
    return out


def _histogram_svg(values: torch.Tensor, bins: int = 24, width: int = 260, height: int = 70) -> str:
    if values.numel() == 0:
        return '<div class="empty">never fires on these tokens</div>'
    counts = torch.histc(values.float(), bins=bins, min=0.0, max=float(values.max()))
    peak = float(counts.max()) or 1.0
    bar = width / bins
    rects = "".join(f'<rect x="{i * bar:.1f}" y="{height - c / peak * height:.1f}" width="{bar - 1:.1f}" '
                    f'height="{c / peak * height:.1f}"/>' for i, c in enumerate(counts.tolist()))
    return (f'<svg class="hist" width="{width}" height="{height + 14}" viewBox="0 0 {width} {height + 14}">'
            f'{rects}<text x="0" y="{height + 12}">0</text><text x="{width}" y="{height + 12}" text-anchor="end">'
            f'{float(values.max()):.2f}</text></svg>')


class FeatureView(Page):
    """A dashboard or index page, with the feature pages' style sheet and its title as a heading."""

    def html(self) -> str:
        return f'<div class="p4f"><style>{_CSS}</style><h3>{html.escape(self.title)}</h3>{self._body}</div>'


def _context_html(tokenizer, ctx: Context, top: float) -> str:
    spans = []
    for i, (t, v) in enumerate(zip(ctx.tokens, ctx.values)):
        shade = 0.0 if top <= 0 else max(0.0, min(1.0, v / top))
        cls = "tok peak" if i == ctx.peak else "tok"
        spans.append(f'<span class="{cls}" style="background:rgba(230,120,20,{shade:.2f})" '
                     f'title="{v:.3f}">{_label(tokenizer, t)}</span>')
    return f'<div class="ctx"><span class="val">{ctx.values[ctx.peak]:.2f}</span>{"".join(spans)}</div>'


def feature_dashboard(model, sae: SparseAutoencoder, latents: torch.Tensor, tokens: torch.Tensor, latent: int, *,
                      n_contexts: int = 8, n_outputs: int = 8, name: str = "", tokenizer=None) -> FeatureView:
    """One latent's page. latents: [windows, T, d_sae] from phi4lab.dictionaries.features.latent_activations
    on `tokens` [windows, T] (computed once, shared by every dashboard of the same SAE).
    tokenizer: what turns ids into labels (default: the model's)."""
    if latents.shape[:2] != tokens.shape[:2]:
        raise ValueError(f"latents {list(latents.shape[:2])} and tokens {list(tokens.shape[:2])} must be the "
                         "same windows: compute the latents on these tokens")
    if not 0 <= latent < sae.d_sae:
        raise IndexError(f"latent {latent} is out of range: this SAE has latents 0..{sae.d_sae - 1}")
    tok = tokenizer or model.tokenizer
    values = latents[..., latent]
    nonzero = values[values > 0]
    contexts = top_contexts(latents, tokens, latent, n=n_contexts)
    top = float(nonzero.max()) if nonzero.numel() else 0.0
    up, down = output_tokens(model, sae, latent, n_outputs)
    outs = ("<table class='outs'><tr><th>raises</th><th>lowers</th></tr>"
            + "".join(f"<tr><td>{_label(tok, u)}</td><td>{_label(tok, d)}</td></tr>" for u, d in zip(up, down))
            + "</table>")
    rate = nonzero.numel() / max(1, values.numel())
    body = (f'<div class="stats">fires on {rate:.2%} of {values.numel():,} tokens; largest value {top:.2f}</div>'
            f'<div class="row"><div>{_histogram_svg(nonzero)}</div><div>{outs}</div></div>'
            f'<div class="ctxs">{"".join(_context_html(tok, c, top) for c in contexts) or "<i>no firing</i>"}</div>')
    return FeatureView(body, f"{name + ' ' if name else ''}latent {latent}")


def feature_index(model, sae: SparseAutoencoder, latents: torch.Tensor, tokens: torch.Tensor,
                  which: list[int] | None = None, *, name: str = "", tokenizer=None) -> FeatureView:
    """A searchable table of latents: firing rate, largest value, the top context and the top output tokens."""
    tok = tokenizer or model.tokenizer
    fires = (latents > 0).flatten(0, 1)
    rates = fires.float().mean(0)
    which = list(range(sae.d_sae)) if which is None else [int(i) for i in which]
    rows = []
    for i in which:
        if not 0 <= i < sae.d_sae:
            raise IndexError(f"latent {i} is out of range: this SAE has latents 0..{sae.d_sae - 1}")
        contexts = top_contexts(latents, tokens, i, n=1, radius=5)
        snippet = _context_html(tok, contexts[0], contexts[0].values[contexts[0].peak]) if contexts else "<i>never fires</i>"
        up, _ = output_tokens(model, sae, i, 5)
        rows.append(f'<tr data-latent="{i}"><td>{i}</td><td>{rates[i]:.2%}</td><td>{snippet}</td>'
                    f'<td>{" ".join(f"<span class=tok>{_label(tok, u)}</span>" for u in up)}</td></tr>')
    body = ('<input class="search" type="search" placeholder="filter by text or latent number">'
            '<table class="index"><tr><th>latent</th><th>fires</th><th>top context</th><th>raises</th></tr>'
            + "".join(rows) + "</table>"
            f'<script>{_JS % dict(count=script_json(len(rows)))}</script>')
    return FeatureView(body, f"{name + ' ' if name else ''}{len(rows)} latents")
