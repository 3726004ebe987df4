"""Checks for course/12_attribution_graphs.ipynb: transcoders, the frozen model, edges, influence and scores."""

from __future__ import annotations

import torch

from phi4lab.dictionaries.graphs import AttributionGraph
from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.exercises.sparse_autoencoders import _topk_ref
from phi4lab.exercises.standalone import stand_alone


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- Exercise 1: a transcoder's prediction -------------------------------------------------------------

def _predict_ref(x, W_enc, b_enc, W_dec, b_dec, k):
    return _topk_ref(x @ W_enc + b_enc, k) @ W_dec + b_dec           # notebook 11's SAE, without the centring


PREDICT_MISTAKES = {
    "a transcoder does not centre its input: b_dec is an *output* bias (it lives in the MLP output's space)":
        lambda x, We, be, Wd, bd, k: _predict_ref(x - bd, We, be, Wd, bd, k),
    "add b_dec to the prediction: y_hat = z @ W_dec + b_dec":
        lambda x, We, be, Wd, bd, k: _predict_ref(x, We, be, Wd, torch.zeros_like(bd), k),
    "keep only the k largest latents (TopK after the ReLU), not every positive one":
        lambda x, We, be, Wd, bd, k: torch.relu(x @ We + be) @ Wd + bd,
}


def check_transcoder_predict(fn, transcoder=None, mlp_in=None, mlp_out=None):
    g = _generator(0)
    cases = []
    for n, d_in, m, d_out, k in ((5, 4, 12, 4, 3), (16, 24, 64, 24, 8)):   # an MLP: d_out = d_in
        cases.append((torch.randn(n, d_in, generator=g), torch.randn(d_in, m, generator=g),
                      torch.randn(m, generator=g) * 0.1, torch.randn(m, d_out, generator=g),
                      torch.randn(d_out, generator=g), k))
    check_function(fn, _predict_ref, cases, name="transcoder_predict", rtol=1e-4, atol=1e-5,
                   mistakes=PREDICT_MISTAKES)
    if transcoder is not None:
        mine = fn(mlp_in, transcoder.W_enc.detach(), transcoder.b_enc.detach(), transcoder.W_dec.detach(),
                  transcoder.b_dec.detach(), transcoder.k)
        if not torch.allclose(mine, transcoder(mlp_in)[0], rtol=1e-4, atol=1e-4):
            raise ExerciseFailure("on the shipped transcoder yours differs from Transcoder.forward")
        fvu = (mlp_out - mine).pow(2).sum() / (mlp_out - mlp_out.mean(0)).pow(2).sum()
        print(f"\N{CHECK MARK} on the shipped transcoder it matches Transcoder.forward (FVU of the MLP's output "
              f"here: {fvu:.3f})")


# ---- Exercise 2: attention with its pattern and norm frozen ---------------------------------------------

def _frozen_ref(resid, scale, w, pattern, W_V, W_O):
    x = resid / scale * w
    v = torch.einsum("td,kdh->kth", x, W_V).repeat_interleave(pattern.shape[0] // W_V.shape[0], dim=0)
    return torch.einsum("nqk,nkh,nhd->qd", pattern, v, W_O)


FROZEN_MISTAKES = {
    "the norm divides by its scale (the RMS it measured): resid / scale * w, not resid * scale * w":
        lambda r, s, w, p, V, O: _frozen_ref(r, 1 / s, w, p, V, O),
    "grouped-query attention: query head h reads key/value head h // (n_heads // n_kv_heads); "
    "repeat_interleave each K/V head, do not tile them (repeat)":
        lambda r, s, w, p, V, O: torch.einsum("nqk,nkh,nhd->qd", p, torch.einsum(
            "td,kdh->kth", r / s * w, V).repeat(p.shape[0] // V.shape[0], 1, 1), O),
    "a query position mixes the value vectors of the key positions: pattern[h, q, k] weighs v[k], "
    "so contract over the last index of the pattern (you used the transposed pattern)":
        lambda r, s, w, p, V, O: _frozen_ref(r, s, w, p.transpose(-1, -2), V, O),
    "multiply in the norm's weight: the heads read rms_norm(x) * w":
        lambda r, s, w, p, V, O: _frozen_ref(r, s, torch.ones_like(w), p, V, O),
}


def check_frozen_attention(fn, replacement=None):
    g = _generator(1)
    cases = []
    for T, d, H, KV, dh in ((4, 6, 4, 2, 3), (9, 16, 8, 2, 4), (5, 8, 2, 2, 4)):
        pattern = torch.tril(torch.rand(H, T, T, generator=g))
        pattern = pattern / pattern.sum(-1, keepdim=True)
        cases.append((torch.randn(T, d, generator=g), torch.rand(T, 1, generator=g) + 0.5, torch.rand(d, generator=g) + 0.5,
                      pattern, torch.randn(KV, d, dh, generator=g), torch.randn(H, dh, d, generator=g)))
    check_function(fn, _frozen_ref, cases, name="frozen_attention", rtol=1e-4, atol=1e-5, mistakes=FROZEN_MISTAKES)
    if replacement is not None:
        frozen = replacement.layers[0]
        mine = fn(replacement.embed, frozen["scale1"], frozen["w1"], frozen["pattern"], frozen["W_V"], frozen["W_O"])
        mids, _ = replacement.forward(replacement.embed[None], [f["mlp_out"][None] for f in replacement.layers])
        if not torch.allclose(mine, (mids[0] - replacement.embed[None])[0], atol=1e-4):
            raise ExerciseFailure("on phi4-tiny's layer 0 with its frozen pattern and scale, yours differs from the "
                                  "replacement model's attention output")
        print("\N{CHECK MARK} on phi4-tiny's layer 0 it reproduces the attention output of the real run")


# ---- Exercise 3: one edge, by a backward pass -------------------------------------------------------------

def _edge_ref(forward, shape, n_layers, read, target_pos, source_pos, write):
    embed = torch.zeros(1, *shape, requires_grad=True)
    mlp = [torch.zeros(1, *shape, requires_grad=True) for _ in range(n_layers)]
    with torch.enable_grad():
        _, final = forward(embed, mlp)
        (grad,) = torch.autograd.grad((final[0, target_pos] * read).sum(), [embed])
    return (grad[0, source_pos] * write).sum()


def check_edge(fn, replacement, graph: AttributionGraph):
    """Every token -> top-logit edge, against the graph's adjacency (computed in batches by phi4lab)."""
    logit = graph.indices("logit")[0].item()
    target = graph.nodes[logit]
    reads, _ = replacement._reads([target])
    shape, n_layers = tuple(replacement.embed.shape), replacement.n_layers
    worst, checked = 0.0, 0
    for i in graph.indices("token").tolist():
        source = graph.nodes[i]
        with torch.enable_grad():
            mine = fn(replacement.forward, shape, n_layers, reads[0].clone(), target.pos, source.pos,
                      replacement.embed[source.pos].clone())         # copies: the notebook's state stays as it is
        if isinstance(mine, torch.Tensor):
            if mine.numel() != 1:
                raise ExerciseFailure(f"an edge is one number; yours has shape {tuple(mine.shape)}")
            mine = mine.item()
        if not isinstance(mine, float):
            raise ExerciseFailure(f"return the edge as a number (a float or a 0-d tensor), got {type(mine).__name__}")
        expected = graph.adjacency[logit, i].item()
        worst = max(worst, abs(mine - expected))
        checked += 1
        if abs(mine - expected) > 1e-3 * max(1.0, abs(expected)):
            hint = ""
            if abs(mine) < 1e-9 and abs(expected) > 1e-6:
                hint = (" Yours is zero: is the gradient taken with respect to the embedding leaf, and does "
                        "the objective read the final residual at the target's position?")
            elif abs(mine + expected) < 1e-3 * max(1.0, abs(expected)):
                hint = " Right size, wrong sign."
            raise ExerciseFailure(f"the edge from the token at position {source.pos} is {mine:.5g}; the graph's "
                                  f"adjacency says {expected:.5g}.{hint}")
    print(f"\N{CHECK MARK} edge: all {checked} token -> logit edges match the graph's adjacency (largest gap {worst:.1e})")


# ---- Exercise 4: influence through every path ---------------------------------------------------------------

def _influence_ref(A, w):
    n = A.shape[0]
    return w @ torch.linalg.inv(torch.eye(n, dtype=A.dtype) - A) - w


INFLUENCE_MISTAKES = {
    "influence counts paths of length 1 and more: w A + w A^2 + ..., not only the direct edges w A":
        lambda A, w: w @ A,
    "start the sum at A, not at the identity: the logits' own weights w are not influence":
        lambda A, w: w @ torch.linalg.inv(torch.eye(A.shape[0], dtype=A.dtype) - A),
    "rows are targets, columns sources: influence flows from the logits back to their sources, w @ A, not A @ w":
        lambda A, w: _influence_ref(A.T, w),
}


def _dag(n, n_logits, g, dtype=torch.float64):
    """A random normalised adjacency with no cycles: node i reads only nodes after it; the logits come first."""
    A = torch.rand(n, n, generator=g, dtype=dtype) * (torch.rand(n, n, generator=g) < 0.4)
    A = torch.triu(A, diagonal=1)
    A[n_logits:, :n_logits] = 0
    A = A / A.sum(1, keepdim=True).clamp_min(1e-10)
    w = torch.zeros(n, dtype=dtype)
    w[:n_logits] = torch.softmax(torch.randn(n_logits, generator=g, dtype=dtype), 0)
    return A, w


def check_influence(fn):
    g = _generator(2)
    cases = [_dag(5, 1, g), _dag(30, 3, g), _dag(80, 4, g)]
    check_function(fn, _influence_ref, cases, name="influence", rtol=1e-6, atol=1e-8, mistakes=INFLUENCE_MISTAKES)


# ---- Exercise 5: replacement and completeness scores -----------------------------------------------------------

def _scores_ref(A, influence, w, errors, tokens):
    from_tokens, from_errors = influence[tokens].sum(), influence[errors].sum()
    weight = influence + w
    return from_tokens / (from_tokens + from_errors), ((1 - A[:, errors].sum(1)) * weight).sum() / weight.sum()


SCORES_MISTAKES = {
    "the replacement score compares the inputs (tokens) with the errors only: tokens / (tokens + errors), not "
    "tokens over the influence of every node":
        lambda A, inf, w, e, t: (inf[t].sum() / inf.sum(), _scores_ref(A, inf, w, e, t)[1]),
    "weigh each node's non-error share by its influence on the output plus its own logit weight, not equally":
        lambda A, inf, w, e, t: (_scores_ref(A, inf, w, e, t)[0], (1 - A[:, e].sum(1)).mean()),
    "a node's error share is the sum of its row's entries in the error *columns* (its inputs), not its column":
        lambda A, inf, w, e, t: (_scores_ref(A, inf, w, e, t)[0], _scores_ref(A.T.contiguous(), inf, w, e, t)[1]),
}


def _scored_case(g):
    A, w = _dag(24, 2, g)
    inf = _influence_ref(A, w)
    idx = torch.randperm(22, generator=g) + 2
    return A, inf, w, idx[:5].sort().values, idx[5:9].sort().values


def check_scores(fn, graph: AttributionGraph | None = None):
    g = _generator(3)
    cases = [_scored_case(g) for _ in range(3)]
    check_function(fn, _scores_ref, cases, name="scores", rtol=1e-6, atol=1e-8, mistakes=SCORES_MISTAKES)
    if graph is not None:
        A = graph.normalized()
        got = fn(A, graph.influence(A), graph.logit_weights(), graph.indices("error"), graph.indices("token"))
        ref = graph.scores()
        if not all(abs(float(a) - b) < 1e-5 for a, b in zip(got, ref)):
            raise ExerciseFailure(f"on the induction graph yours gives {tuple(float(v) for v in got)}, "
                                  f"AttributionGraph.scores {ref}")
        print("\N{CHECK MARK} on the induction graph it matches AttributionGraph.scores")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {})
