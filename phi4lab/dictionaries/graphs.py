"""Attribution graphs, built from scratch: which transcoder latents, tokens and errors drive a logit, and how.

The method is Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language
Models" (https://transformer-circuits.pub/2025/attribution-graphs/methods.html), with per-layer
transcoders (``phi4lab.dictionaries.sae.Transcoder``) in place of their cross-layer ones.

**1. A local replacement model.** Run the prompt once through the real model and keep what makes
a transformer nonlinear: every attention pattern, and every RMSNorm's scale (the RMS it divided
by). With those *frozen*, attention is a fixed mix of value vectors and each norm is a fixed
per-position multiplication: the residual stream becomes a **linear** function of what is written
into it. Then replace each MLP's output by its transcoder's: the active latents, each writing
``a_i * W_dec[i]``, plus an **error node**, whatever the transcoder got wrong at that layer and
position (real MLP output minus the transcoder's). With the error nodes in, the replacement model
computes exactly the real model's logits on this prompt (``ReplacementModel.check`` measures it).

**2. Direct effects by backward passes.** In a linear model, the direct effect of a source node
(a token's embedding, a latent, an error) on a target node (a latent's pre-activation, or a logit)
is the source's write vector dotted with the gradient of the target with respect to that write,
*with every other latent held fixed* (the MLPs are not differentiated through: their outputs are
leaves). One backward pass per target gives a whole row of the adjacency matrix; phi4lab does
many targets per pass by giving each its own batch row. The logit targets are the top next-token
logits, each minus the mean logit (a shift of every logit changes no probability).

**3. Prune, then score.** Most of the thousands of edges carry little. Each node's *influence* on
the output is the sum over all paths of the products of normalised edge weights (|A|, each row
scaled to sum to 1), weighted by the logits' probabilities: ``w (A + A^2 + ...)``. Nodes are kept
until they account for ``node_threshold`` of the total influence, then edges likewise. Two
scores say how much of the computation the graph explains:

* **replacement score**: of the influence that reaches the logits from the inputs (tokens) and the
  errors, the tokens' share. 1 if no path runs through an error node.
* **completeness score**: for every node, the share of its (normalised) inputs that do not come from
  error nodes, averaged with each node's influence on the output as weight.

**Where it misleads.** Frozen attention means the graph shows what heads *moved*, never why they
looked there (the QK circuit is outside it): an induction head's query, which is what makes it look
at the right place, is invisible. Error nodes are computation the transcoders missed. And edges are
direct effects in a linear model: a latent that matters only through the patterns it changes has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phi4lab.dictionaries.evaluate import transcoder_hooks
from phi4lab.dictionaries.sae import Transcoder
from phi4lab.model.bridge import final_norm_weight
from phi4lab.model.guards import check_tokens

KINDS = ("feature", "error", "token", "logit")


@dataclass(frozen=True)
class Node:
    """One node: a feature (layer, pos, latent), an error (layer, pos), a token (pos) or a logit (token id)."""

    kind: str
    layer: int | None        # None for tokens and logits
    pos: int
    index: int               # the latent (feature), the token id (token, logit); -1 for an error
    value: float             # the latent's activation; the logit's probability; 0 otherwise

    def name(self) -> str:
        if self.kind == "feature":
            return f"L{self.layer} #{self.index} @{self.pos}"
        if self.kind == "error":
            return f"L{self.layer} error @{self.pos}"
        return f"{self.kind} {self.index} @{self.pos}"


class ReplacementModel:
    """The prompt's local replacement model: frozen patterns and norm scales, transcoders plus errors."""

    @torch.no_grad()
    def __init__(self, model, transcoders: dict[int, Transcoder], tokens, *, ignore_first: bool = False):
        """ignore_first: leave position 0 out of the graph (no features, its error a constant), as circuit-tracer
        does for the BOS token it prepends: a prompt's first position is atypical (notebook 05's sinks)."""
        tokens = check_tokens(model, tokens)
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise ValueError(f"an attribution graph is for one prompt; got a batch of {tokens.shape[0]}")
            tokens = tokens[0]
        n_layers = model.cfg.n_layers
        missing = sorted(set(range(n_layers)) - set(transcoders))
        if missing:
            raise ValueError(f"every MLP needs a transcoder; none given for layers {missing} "
                             "(phi4lab.dictionaries.files.shipped_transcoder(layer) loads phi4-tiny's)")
        self.model, self.transcoders, self.tokens = model, transcoders, tokens
        device = next(model.parameters()).device
        elsewhere = sorted(layer for layer, tc in transcoders.items() if tc.W_enc.device != device)
        if elsewhere:
            raise ValueError(f"the transcoders of layers {elsewhere} are not on the model's device ({device}): "
                             f"move them first, e.g. transcoders = {{l: t.to('{device}') for l, t in transcoders.items()}}")
        self.device = device
        self.n_layers, self.T = n_layers, len(tokens)
        names = {"hook_embed", "ln_final.hook_scale"}
        for layer in range(n_layers):
            names |= {f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.ln2.hook_scale",
                      f"blocks.{layer}.attn.hook_pattern", *transcoder_hooks(layer)}
        logits, cache = model.run_with_cache(tokens[None].to(device), names_filter=lambda n: n in names)
        self.logits = logits[0, -1].float()
        f32 = {name: cache[name][0].float() for name in names}
        self.embed = f32["hook_embed"]                                            # [T, d]
        self.final_scale = f32["ln_final.hook_scale"]                             # [T, 1]
        self.layers = []
        for layer in range(n_layers):
            reads, writes = transcoder_hooks(layer)
            tc = transcoders[layer]
            values, indices = tc.encode_topk(f32[reads])                          # [T, k] each
            prediction = tc.decode_topk(values, indices)
            error = f32[writes] - prediction
            if ignore_first:
                values, error = values.clone(), error.clone()
                values[0], error[0] = 0.0, 0.0
            attn = model.blocks[layer].attn
            self.layers.append({
                "scale1": f32[f"blocks.{layer}.ln1.hook_scale"], "scale2": f32[f"blocks.{layer}.ln2.hook_scale"],
                "pattern": f32[f"blocks.{layer}.attn.hook_pattern"],             # [H, T, T]
                "w1": model.blocks[layer].ln1.weight.detach().float(),
                "w2": model.blocks[layer].ln2.weight.detach().float(),
                "W_V": attn.W_V.detach().float(), "W_O": attn.W_O.detach().float(),
                "b_V": getattr(attn, "b_V", None), "b_O": getattr(attn, "b_O", None),
                "values": values, "indices": indices,
                "mlp_out": f32[writes], "error": error,
                "bias": tc.b_dec.detach().float(),
            })
        self.w_final = final_norm_weight(model).detach().float()
        self.W_U = model.W_U.detach().float()
        self.b_U = getattr(model, "b_U", None)

    # ------------------------------------------------------------------ the linear forward pass

    def forward(self, embed: torch.Tensor, mlp_outs: list[torch.Tensor], head_mask: dict | None = None):
        """The frozen model on [B, T, d] inputs: (resid_mid per layer, final residual), all [B, T, d].

        `mlp_outs[layer]` is written where the MLP's output goes. head_mask {layer: [H]} scales each
        head's output at that layer (to split an edge by head).
        """
        resid, mids = embed, []
        for layer, frozen in enumerate(self.layers):
            x = resid / frozen["scale1"] * frozen["w1"]
            group = frozen["pattern"].shape[0] // frozen["W_V"].shape[0]
            v = torch.einsum("btd,kdh->bkth", x, frozen["W_V"])
            if frozen["b_V"] is not None:
                v = v + frozen["b_V"].detach().float()[None, :, None]
            v = v.repeat_interleave(group, dim=1)                               # GQA: each query head's values
            z = torch.einsum("nqk,bnkh->bnqh", frozen["pattern"], v)
            per_head = torch.einsum("bnqh,nhd->bnqd", z, frozen["W_O"])
            if head_mask and layer in head_mask:
                per_head = per_head * head_mask[layer].to(per_head)[None, :, None, None]
            attn_out = per_head.sum(1)
            if frozen["b_O"] is not None:
                attn_out = attn_out + frozen["b_O"].detach().float()
            resid = resid + attn_out
            mids.append(resid)
            resid = resid + mlp_outs[layer]
        return mids, resid

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        logits = resid / self.final_scale * self.w_final @ self.W_U
        return logits if self.b_U is None else logits + self.b_U.detach().float()

    @torch.no_grad()
    def check(self) -> float:
        """The largest gap between the replacement model's last-position logits and the real model's."""
        mlp = [frozen["mlp_out"][None] for frozen in self.layers]
        _, resid = self.forward(self.embed[None], mlp)
        return (self.unembed(resid)[0, -1] - self.logits).abs().max().item()

    # ------------------------------------------------------------------ the graph

    def nodes(self, n_logits: int = 5, logit_mass: float = 0.95) -> list[Node]:
        """Features (every active latent), errors, tokens, then the top logits: circuit-tracer's order.

        Logits: the most probable next tokens, until they hold `logit_mass` of the probability or
        `n_logits` of them.
        """
        out = []
        for layer, frozen in enumerate(self.layers):
            for pos in range(self.T):
                for value, index in zip(frozen["values"][pos].tolist(), frozen["indices"][pos].tolist()):
                    if value > 0:
                        out.append(Node("feature", layer, pos, int(index), float(value)))
        out += [Node("error", layer, pos, -1, 0.0) for layer in range(self.n_layers) for pos in range(self.T)]
        out += [Node("token", None, pos, int(t), 0.0) for pos, t in enumerate(self.tokens.tolist())]
        probs = self.logits.softmax(-1)
        top = probs.sort(descending=True)
        kept, mass = [], 0.0
        for p, token in zip(top.values.tolist(), top.indices.tolist()):
            if len(kept) >= n_logits or mass >= logit_mass:
                break
            kept.append(Node("logit", None, self.T - 1, int(token), float(p)))
            mass += p
        return out + kept

    def _reads(self, nodes: list[Node]) -> tuple[torch.Tensor, list[int]]:
        """Each target's read vector [n, d] at its residual site, and that site (a layer, or n_layers: final)."""
        reads, sites = [], []
        mean_unembed = self.W_U.mean(1)
        for node in nodes:
            if node.kind == "feature":
                frozen = self.layers[node.layer]
                enc = self.transcoders[node.layer].W_enc.detach().float()[:, node.index]
                reads.append(enc * frozen["w2"] / frozen["scale2"][node.pos])
                sites.append(node.layer)
            else:                                                             # a logit, minus the mean logit
                direction = self.W_U[:, node.index] - mean_unembed
                reads.append(direction * self.w_final / self.final_scale[node.pos])
                sites.append(self.n_layers)
        return torch.stack(reads), sites

    def _writes(self, nodes: list[Node]) -> list[torch.Tensor]:
        """Each source's write vector [d] (zeros for the logits, which write nothing)."""
        d = self.embed.shape[-1]
        out = []
        for node in nodes:
            if node.kind == "feature":
                out.append(node.value * self.transcoders[node.layer].W_dec.detach().float()[node.index])
            elif node.kind == "error":
                out.append(self.layers[node.layer]["error"][node.pos])
            elif node.kind == "token":
                out.append(self.embed[node.pos])
            else:
                out.append(torch.zeros(d, device=self.device))
        return out

    @torch.enable_grad()         # a notebook may have turned gradients off globally; the backward passes need them
    def gradients(self, targets: list[Node], head_mask: dict | None = None):
        """One backward pass for a batch of targets: d target / d (embedding, each MLP output), [B, T, d] each."""
        reads, sites = self._reads(targets)
        B, (T, d) = len(targets), self.embed.shape
        on = {"device": self.device}
        embed = torch.zeros(B, T, d, requires_grad=True, **on)        # the leaves: values do not matter,
        mlp = [torch.zeros(B, T, d, requires_grad=True, **on) for _ in self.layers]   # the map is linear
        mids, final = self.forward(embed, mlp, head_mask)
        stacked = torch.stack(mids + [final], dim=1)                  # [B, n_layers + 1, T, d]
        rows = torch.arange(B, **on)
        pos = torch.tensor([node.pos for node in targets], **on)
        objective = (stacked[rows, torch.tensor(sites, **on), pos] * reads).sum()
        grads = torch.autograd.grad(objective, [embed, *mlp])
        return grads[0].detach(), [grad.detach() for grad in grads[1:]]

    def attribute(self, n_logits: int = 5, logit_mass: float = 0.95, batch_size: int = 256,
                  progress: bool = False) -> AttributionGraph:
        """The full attribution graph: every direct effect between this prompt's nodes."""
        from tqdm.auto import tqdm

        nodes = self.nodes(n_logits, logit_mass)
        n = len(nodes)
        writes = torch.stack(self._writes(nodes))                           # [n, d]
        adjacency = torch.zeros(n, n)
        targets = [i for i, node in enumerate(nodes) if node.kind in ("feature", "logit")]
        sources_at = {}                                     # (site kind, layer) -> (node indices, their positions)
        for i, node in enumerate(nodes):
            key = ("embed", None) if node.kind == "token" else ("mlp", node.layer) if node.kind != "logit" else None
            if key is not None:
                sources_at.setdefault(key, []).append(i)
        for start in tqdm(range(0, len(targets), batch_size), desc="attributing", disable=not progress, leave=False):
            rows = targets[start:start + batch_size]
            g_embed, g_mlp = self.gradients([nodes[i] for i in rows])
            for (site, layer), cols in sources_at.items():
                grad = g_embed if site == "embed" else g_mlp[layer]             # [B, T, d]
                pos = torch.tensor([nodes[c].pos for c in cols], device=self.device)
                adjacency[torch.tensor(rows)[:, None], torch.tensor(cols)[None]] = torch.einsum(
                    "bsd,sd->bs", grad[:, pos], writes[torch.tensor(cols, device=self.device)]).cpu()
        return AttributionGraph(tokens=self.tokens.tolist(), nodes=nodes, adjacency=adjacency)

    def edge_by_head(self, source: Node, target: Node, layer: int) -> torch.Tensor:
        """How much of the direct edge source -> target runs through each head of `layer`: [n_heads].

        In the linear replacement model a path uses at most one head per layer, so removing head h
        of `layer` removes exactly the paths through it: its share is the edge minus the edge
        without it. The shares plus the paths that skip `layer`'s attention sum to the edge.
        """
        n_heads = self.layers[layer]["pattern"].shape[0]
        (write,) = self._writes([source])

        def edge(mask):
            g_embed, g_mlp = self.gradients([target], head_mask=None if mask is None else {layer: mask})
            grad = g_embed if source.kind == "token" else g_mlp[source.layer]
            return (grad[0, source.pos] * write).sum()

        full = edge(None)
        shares = []
        for head in range(n_heads):
            mask = torch.ones(n_heads, device=self.device)
            mask[head] = 0
            shares.append(full - edge(mask))
        return torch.stack(shares).detach().cpu()


@dataclass
class AttributionGraph:
    """Nodes in circuit-tracer's order (features, errors, tokens, logits) and adjacency [target, source]."""

    tokens: list[int]
    nodes: list[Node]
    adjacency: torch.Tensor

    def indices(self, kind: str) -> torch.Tensor:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return torch.tensor([i for i, node in enumerate(self.nodes) if node.kind == kind], dtype=torch.long)

    def logit_weights(self) -> torch.Tensor:
        w = torch.zeros(len(self.nodes))
        logits = self.indices("logit")
        w[logits] = torch.tensor([self.nodes[i].value for i in logits.tolist()])
        return w

    def normalized(self) -> torch.Tensor:
        """|A| with each row scaled to sum to 1: the share of a node's inputs each source gives."""
        a = self.adjacency.abs()
        return a / a.sum(1, keepdim=True).clamp_min(1e-10)

    def influence(self, normalized: torch.Tensor | None = None) -> torch.Tensor:
        """Each node's total influence on the logits: w A + w A^2 + ..., summed until no path is left.

        The graph has no cycles (edges go forward in layers), so the powers of A reach zero within
        n_layers + 2 steps.
        """
        a = self.normalized() if normalized is None else normalized
        current = self.logit_weights() @ a
        total = current.clone()
        for _ in range(len(self.nodes)):
            if not current.any():
                return total
            current = current @ a
            total += current
        raise RuntimeError("influence did not converge: the adjacency matrix has a cycle")

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score); see the module docstring."""
        a = self.normalized()
        influence = self.influence(a)
        errors, tokens = self.indices("error"), self.indices("token")
        from_tokens, from_errors = influence[tokens].sum(), influence[errors].sum()
        replacement = from_tokens / (from_tokens + from_errors)
        non_error = 1 - a[:, errors].sum(1)
        weight = influence + self.logit_weights()
        completeness = (non_error * weight).sum() / weight.sum()
        return replacement.item(), completeness.item()

    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> tuple[torch.Tensor, torch.Tensor]:
        """(node mask [n], edge mask [n, n]): the nodes and edges that carry the given shares of influence.

        Tokens and logits always stay; a feature or error with no kept edge out (or a feature with
        none in) goes, repeatedly, until nothing changes.
        """
        for name, t in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {t}")
        weights = self.logit_weights()
        influence = self.influence()
        keep = influence >= _threshold(influence, node_threshold)
        always = torch.cat([self.indices("token"), self.indices("logit")])
        keep[always] = True
        pruned = self.adjacency.clone()
        pruned[~keep] = 0
        pruned[:, ~keep] = 0
        a = pruned.abs()
        a = a / a.sum(1, keepdim=True).clamp_min(1e-10)
        node_influence = AttributionGraph(self.tokens, self.nodes, pruned).influence(a) + weights
        edge_scores = a * node_influence[:, None]
        edges = edge_scores >= _threshold(edge_scores.flatten(), edge_threshold)
        edges &= edge_scores > 0
        inner = torch.cat([self.indices("feature"), self.indices("error")])
        features = self.indices("feature")
        while True:
            before = keep.clone()
            edges[~keep] = False
            edges[:, ~keep] = False
            keep[inner] &= edges[:, inner].any(0)                        # something downstream reads it
            keep[features] &= edges[features].any(1)                     # something upstream drives it
            if torch.equal(before, keep):
                return keep, edges

    def top_sources(self, target: int, k: int = 5) -> list[tuple[int, float]]:
        """The k sources with the largest direct effect (by size) on node `target`: [(node index, effect)]."""
        row = self.adjacency[target]
        order = row.abs().argsort(descending=True)[:k]
        return [(int(i), row[i].item()) for i in order if row[i] != 0]


def _threshold(scores: torch.Tensor, share: float) -> torch.Tensor:
    """The smallest score among the largest ones that together hold `share` of the total."""
    ordered = scores.sort(descending=True).values
    cumulative = ordered.cumsum(0) / ordered.sum().clamp_min(1e-30)
    at = min(int(torch.searchsorted(cumulative, torch.tensor(share)).item()), len(ordered) - 1)
    return ordered[at]


def attribute(model, transcoders: dict[int, Transcoder], tokens, *, ignore_first: bool = False,
              **kwargs) -> AttributionGraph:
    """The attribution graph of `tokens` (one prompt) through `transcoders` {layer: Transcoder}."""
    return ReplacementModel(model, transcoders, tokens, ignore_first=ignore_first).attribute(**kwargs)
