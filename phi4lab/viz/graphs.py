"""An attribution graph as one self-contained HTML page: an SVG of the pruned graph, and its nodes in a table.

Positions run left to right (the prompt's tokens along the bottom), layers bottom to top, the
next-token logits at the top. A feature is an orange dot, an error a grey square; an edge is blue
where the source raises the target and red where it lowers it, as thick as its share of the
largest edge. Hovering a node highlights its edges (a few lines of inline script); every node's
tooltip names it. Nothing loads from the network, and every token label is escaped with its
invisible characters made visible (phi4lab.viz.tokens.visible; inside the SVG as plain text, since an
HTML tag there would end the SVG), so a prompt cannot become markup.
"""

from __future__ import annotations

import hashlib
import html
import re

import torch

from phi4lab.dictionaries.graphs import AttributionGraph
from phi4lab.viz import assets
from phi4lab.viz.attention import script_json
from phi4lab.viz.page import Page
from phi4lab.viz.tokens import visible

_CSS = assets.read("graph.css")
_JS = assets.read("graph.js")
_MARKED = re.compile(r'<span class="inv">(\[U\+[0-9A-F]{4,6}\])</span>')


def _svg_text(text: str) -> str:
    """``visible`` for text inside the SVG: the same escaping, but no <span> (an HTML tag there would end
    the SVG early), so an invisible character shows as plain [U+200B]."""
    return _MARKED.sub(r"\1", visible(text, whitespace=True))


class GraphView(Page):
    """An attribution-graph page (its body carries its own style sheet and heading)."""


def graph_view(graph: AttributionGraph, tokenizer, *, node_threshold: float = 0.8, edge_threshold: float = 0.98,
               max_nodes: int = 80, max_edges: int = 250, title: str = "attribution graph") -> GraphView:
    """The pruned graph (``graph.prune(node_threshold, edge_threshold)``): at most `max_nodes` features and
    errors (the most influential) and `max_edges` edges (the largest), so that the picture stays readable."""
    keep, edges = graph.prune(node_threshold, edge_threshold)
    influence = graph.influence()
    inner = [i for i in keep.nonzero().flatten().tolist() if graph.nodes[i].kind in ("feature", "error")]
    if len(inner) > max_nodes:                                 # the most influential ones
        drop = sorted(inner, key=lambda i: -influence[i].item())[max_nodes:]
        keep[torch.tensor(drop)] = False
        edges[~keep] = False
        edges[:, ~keep] = False
    if int(edges.sum()) > max_edges:
        sizes = graph.adjacency.abs() * edges
        edges &= sizes >= sizes.flatten().topk(max_edges).values[-1]
    n_layers = 1 + max((n.layer for n in graph.nodes if n.layer is not None), default=0)
    T = len(graph.tokens)
    decoded = {pos: tokenizer.decode([t]) for pos, t in enumerate(graph.tokens)}
    label = {pos: visible(text, whitespace=True) for pos, text in decoded.items()}          # for the HTML table
    svg_label = {pos: _svg_text(text) for pos, text in decoded.items()}                   # inside the SVG
    col, row_h, left = 64, 70, 70
    width, height = left + col * T + 20, row_h * (n_layers + 2) + 40

    def y_of(node) -> float:
        if node.kind == "token":
            return height - 40
        if node.kind == "logit":
            return 30
        return height - 40 - row_h * (node.layer + 1)

    # spread the nodes of one (row, position) cell across the column
    cells: dict[tuple, list[int]] = {}
    for i in keep.nonzero().flatten().tolist():
        node = graph.nodes[i]
        cells.setdefault((node.kind == "logit", node.layer, node.pos), []).append(i)
    xy = {}
    for members in cells.values():
        members.sort(key=lambda i: -influence[i].item())
        for j, i in enumerate(members):
            node = graph.nodes[i]
            spread = (j - (len(members) - 1) / 2) * min(12, (col - 8) / max(1, len(members)))
            xy[i] = (left + col * node.pos + col / 2 + spread, y_of(node) - (j % 2) * 6 * (node.kind == "logit"))
    weights = graph.adjacency[edges]
    biggest = weights.abs().max().item() if weights.numel() else 1.0
    parts = []
    for t, s in edges.nonzero().tolist():
        w = graph.adjacency[t, s].item()
        (x1, y1), (x2, y2) = xy[s], xy[t]
        parts.append(f'<path class="edge {"pos" if w > 0 else "neg"}" data-s="{s}" data-t="{t}" '
                     f'stroke-width="{0.4 + 3.6 * abs(w) / biggest:.2f}" '
                     f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{(y1 + y2) / 2:.1f} {x2:.1f},{(y1 + y2) / 2:.1f} {x2:.1f},{y2:.1f}">'
                     f'<title>{html.escape(graph.nodes[s].name())} → {html.escape(graph.nodes[t].name())}: {w:+.3f}</title></path>')
    for i, (x, y) in xy.items():
        node = graph.nodes[i]
        tip = f"{html.escape(node.name())} at {svg_label[node.pos]}; influence {influence[i].item():.3f}"
        if node.kind == "feature":
            tip += f"; activation {node.value:.2f}"
            shape = f'<circle class="node feature" data-node="{i}" cx="{x:.1f}" cy="{y:.1f}" r="5">'
            end = "</circle>"
        elif node.kind == "error":
            shape = f'<rect class="node error" data-node="{i}" x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8">'
            end = "</rect>"
        else:
            word = tokenizer.decode([node.index])
            text = _svg_text(word[:8])                                       # cut before escaping, not after
            if node.kind == "logit":
                tip = f"logit of {_svg_text(word)}: p = {node.value:.3f}"
            shape = (f'<g><rect class="node {node.kind}" data-node="{i}" x="{x - col / 2 + 3:.1f}" y="{y - 9:.1f}" '
                     f'width="{col - 6}" height="18" rx="3">')
            end = (f'</rect><text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" pointer-events="none">'
                   f'{text}</text></g>')
        parts.append(f"{shape}<title>{tip}</title>{end}")
    rows = "".join(f'<text class="row" x="4" y="{height - 36 - row_h * (layer + 1)}">layer {layer}</text>'
                   for layer in range(n_layers))
    rows += f'<text class="row" x="4" y="{height - 36}">tokens</text><text class="row" x="4" y="34">logits</text>'
    replacement, completeness = graph.scores()
    n_kept = int(keep.sum())
    table = "".join(
        f"<tr><td>{html.escape(graph.nodes[i].name())}</td><td>{label[graph.nodes[i].pos]}</td>"
        f"<td>{influence[i].item():.3f}</td></tr>"
        for i in sorted(xy, key=lambda i: -influence[i].item()) if graph.nodes[i].kind in ("feature", "error"))
    svg = "".join(parts)
    root = "p4g-" + hashlib.sha256((rows + svg).encode()).hexdigest()[:10]      # the same page, the same id
    body = (f'<div class="p4g" id="{root}"><style>{_CSS}</style><h3>{html.escape(title)}</h3>'
            f'<div class="scores">replacement score {replacement:.3f} · completeness {completeness:.3f} · '
            f'{n_kept} of {len(graph.nodes)} nodes, {int(edges.sum())} edges kept</div>'
            f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">{rows}{svg}</svg>'
            f'<table><tr><th>node</th><th>at token</th><th>influence</th></tr>{table}</table>'
            f'<script>{_JS % dict(root=script_json(root))}</script></div>')
    return GraphView(body, title)
