"""The attention views and explorers as static pages, built from phi4lab.viz on phi4-tiny at site-build time.

Each is the same self-contained HTML the notebooks display (inline CSS, data-URI images, a few lines of inline
JavaScript, no CDN), wrapped in a page with a way back to the course. Offline: phi4-tiny, its tokenizer, the
shipped SAEs all come with the package. The attribution graph is the one notebook 12 stored.
"""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPT = ("ROMEO. But soft, what light through yonder window breaks? It is the east, and Juliet is the sun. "
          "ROMEO. But soft, what light through yonder window breaks?")
EXPLORER_TEXT = "Phi-4 tokenizes 1234567 as 123|456|7, and naïve as na|ï|ve. 👍🏽 日本語 <|im_end|>"


@dataclass
class View:
    slug: str            # the page is views/<slug>.html
    title: str
    about: str           # one paragraph, plain text: what the page shows and where the course builds it
    notebook: str        # the notebook that teaches it
    body: str            # the view's self-contained HTML
    height: int          # the iframe's height on the views page, in CSS pixels


def _page(view: View) -> str:
    return (f"<!doctype html><html lang='en'><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(view.title)} · phi4lab</title><link rel='icon' href='../_static/favicon.svg'>"
            "<style>body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:16px 24px;color:#222}"
            "nav{font-size:14px;margin-bottom:8px}nav a{color:#0a58ca}h1{font-size:22px;margin:4px 0 8px}"
            "p.about{max-width:60em;font-size:14px;color:#444}.framed .page-head{display:none}</style>"
            # inside the views page's frame, the page's own heading repeats what the frame's section says
            "<script>if (window.self !== window.top) document.documentElement.classList.add('framed');</script>"
            f"<div class='page-head'><nav><a href='../views.html'>all views and explorers</a> · "
            f"<a href='../index.html'>the course</a></nav>"
            f"<h1>{html.escape(view.title)}</h1><p class='about'>{html.escape(view.about)}</p></div>"
            f"<main>{view.body}</main></html>")


def _stored_html(notebook: Path, start: str) -> str:
    """The first text/html output of `notebook` that starts with `start`, as the notebook stored it."""
    import nbformat

    for cell in nbformat.read(notebook, as_version=4).cells:
        for out in cell.get("outputs", []):
            page = out.get("data", {}).get("text/html", "")
            if page.lstrip().startswith(start):
                return page
    raise LookupError(f"{notebook.name} has no stored output that starts with {start!r}: run the notebook")


def build_views(course: Path) -> list[View]:
    """Every view: computed on phi4-tiny, except the attribution graph, read from notebook 12's output."""
    import torch

    import phi4lab
    from phi4lab.analysis import heads
    from phi4lab.dictionaries import features, files
    from phi4lab.model.tokenizer import phi4_tokenizer
    from phi4lab.recipes import tiny
    from phi4lab.viz import attention as viz
    from phi4lab.viz import tokens as X
    from phi4lab.viz.features import feature_dashboard, feature_index
    
    torch.manual_seed(0)
    model = phi4lab.load("phi4-tiny")
    views: list[View] = []

    with torch.no_grad():
        tokens = model.to_tokens(PROMPT)
        patterns = viz.patterns_from(model, tokens)
        labels = model.to_str_tokens(tokens[0])
    views.append(View(
        "attention-head", "One head: a previous-token head of phi4-tiny (layer 2, head 4)",
        "viz.attention_head on a line of Romeo and Juliet that repeats. Hover a cell to read its query, key and "
        "weight (the weights travel as a palette PNG rounded to 1/254; grey is the masked future).",
        "05_attention_and_hooks", viz.attention_head(patterns, labels, layer=2, head=4).html(), 620))
    views.append(View(
        "attention-heads", "A layer's heads: phi4-tiny's layer 3, framed by shared key/value head",
        "viz.attention_heads on the same prompt: all 8 query heads of layer 3, in two groups of 4 that share K and "
        "V, with each group's Jensen-Shannon divergence. Untick the box to ungroup the grid. On the repeated line "
        "these induction heads look at the token after the earlier copy.",
        "05_attention_and_hooks", viz.attention_heads(patterns, labels, layer=3, n_kv_heads=2).html(), 560))

    n_ordinary = tiny.TINY_VOCAB - len(tiny.TINY_SPECIALS)
    with torch.no_grad():
        natural = model.to_tokens(PROMPT)
        repeated = heads.random_repeated_tokens(25, 2, 8, vocab=n_ordinary, seed=0)
        prev_scores = heads.previous_token_scores(heads.attention_patterns(model, natural))
        ind_scores = heads.induction_scores(heads.attention_patterns(model, repeated), 25)
    views.append(View(
        "head-overview", "Where the heads are: previous-token and induction scores, layer x head",
        "viz.head_overview of phi4lab.analysis.heads' scores on phi4-tiny: previous-token heads in layer 2 "
        "feed the induction heads of layer 3.",
        "05_attention_and_hooks",
        viz.head_overview(prev_scores, n_kv_heads=2, score_name="previous-token score").html()
        + viz.head_overview(ind_scores, n_kv_heads=2, score_name="induction score", vmax=1.0).html(), 520))
    views.append(View(
        "attention-token", "One query token: where it looks (layer 3, head 0, last token)",
        "viz.token_view, the attention explorer's third view: the prompt's tokens shaded by the weight the chosen "
        "query gives each of them. In JupyterLab, viz.explore(model, text) adds pickers for view, layer, head and "
        "query token.",
        "05_attention_and_hooks", viz.token_view(patterns, labels, 3, 0, len(labels) - 1), 260))

    phi4, tiny_tok = X.phi4(), X.Tok.hf(model.tokenizer, "phi4-tiny")
    compare = X.page(EXPLORER_TEXT, [phi4, tiny_tok, X.Tok.bytes_baseline()])
    detail = X.page("ROMEO. But soft, what light through yonder window breaks?", [tiny_tok], model=model)
    chat, _ = X.chat_view(phi4_tokenizer(), [{"role": "system", "content": "Answer briefly."},
                                             {"role": "user", "content": "What is 2+2?"},
                                             {"role": "assistant", "content": "4."}])
    views.append(View(
        "tokenizer-explorer", "The tokenizer explorer: Phi-4 against phi4-tiny and raw bytes",
        "phi4lab.viz.tokens: the same text cut by Phi-4's tokenizer, phi4-tiny's 4,096-id BPE and a byte baseline "
        "(cuts that differ are marked), then phi4-tiny's per-token loss, then Phi-4's chat template. In "
        "JupyterLab, tokens.explore() lets you type.",
        "02_tokenization", compare + detail + chat, 700))

    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        first = torch.randint(10, model.cfg.d_vocab - 5, (16, 24), generator=g)
        repeats = torch.cat([first, first], dim=1)
        hook = "blocks.3.hook_resid_post"
        sae3, _ = files.shipped_sae(hook)
        latents = features.latent_activations(model, sae3, repeats, hook)
        on = latents > 0
        induction_latent = int((on[:, 25:].float().mean((0, 1)) - on[:, 1:24].float().mean((0, 1))).argmax())
        dashboard = feature_dashboard(model, sae3, latents, repeats, induction_latent, name="layer 3")
        index = feature_index(model, sae3, latents, repeats, which=[induction_latent, *range(12)], name="layer 3")
    views.append(View(
        "feature-dashboard", f"A feature dashboard: layer 3's second-copy latent ({induction_latent})",
        "phi4lab.viz.features.feature_dashboard for the shipped layer-3 SAE latent that fires most on the second "
        "copy of repeated random tokens: top contexts, an activation histogram, the tokens it raises and lowers.",
        "11_sparse_autoencoders", dashboard.html(), 700))
    views.append(View(
        "feature-index", "A feature index: a searchable table of latents",
        "phi4lab.viz.features.feature_index: each latent's firing rate, top context and top output tokens. Type "
        "in the box to filter the rows (by text or latent number).",
        "11_sparse_autoencoders", index.html(), 640))

    graph = _stored_html(course / "12_attribution_graphs.ipynb", '<div class="p4g"')
    views.append(View(
        "attribution-graph", "An attribution graph: phi4-tiny predicting the repeat",
        "phi4lab.viz.graphs.graph_view of the graph that phi4lab.dictionaries.graphs.attribute builds through the "
        "shipped transcoders, as notebook 12 drew it (taken from the notebook's stored output: the attribution "
        "takes longer than the rest of this page's views together). Hover a node to highlight its edges.",
        "12_attribution_graphs", graph, 760))
    return views


def write_views(course: Path, extra: Path, source: Path) -> list[View]:
    """Write views/<slug>.html under `extra` (copied verbatim into the site) and views.md under `source`."""
    t0 = time.perf_counter()
    views = build_views(course)
    (extra / "views").mkdir(parents=True, exist_ok=True)
    lines = ["# Attention views and explorers", "",
             "Built from `phi4lab.viz` on phi4-tiny when this site was built, offline: each is the self-contained "
             "HTML a notebook displays (no CDN, no server), so hovering, toggling and filtering work here too. "
             "The ipywidgets explorers need a running kernel: open the notebook in JupyterLab for those.", ""]
    for v in views:
        (extra / "views" / f"{v.slug}.html").write_text(_page(v), encoding="utf-8")
        lines += [f"## {v.title}", "", v.about, "",
                  f"Taught in [{v.notebook}](notebooks/{v.notebook}.ipynb) · "
                  f"<a href=\"views/{v.slug}.html\">open the page on its own</a>", "",
                  f'<iframe class="p4l-view-frame" src="views/{v.slug}.html" title="{html.escape(v.title)}" '
                  f'loading="lazy" style="width:100%;height:{v.height}px;border:1px solid #ddd"></iframe>', ""]
    (source / "views.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"views: {len(views)} pages built from phi4lab.viz in {time.perf_counter() - t0:.1f} s")
    return views
