"""Circuits from the weights: what each head can do, read off its matrices, on Phi-4's architecture.

A head does two things (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits", https://transformer-circuits.pub/2021/framework/index.html):

* its **QK circuit** decides where it looks: the score between a query position and a key
  position is ``x_q W_Q . x_k W_K`` (scaled by 1/sqrt(d_head));
* its **OV circuit** decides what it writes once it looks: ``x_k W_V W_O`` is added to the
  query position's residual stream.

Both are low-rank maps on the residual stream, so they can be studied from the weights alone,
without running a prompt. Three things about Phi-4 change the textbook recipe, and this module
handles each:

1. **RMSNorm weights are not folded in.** phi4lab keeps Hugging Face's weights as they are, so
   a head reads ``rms_norm(x) * w_ln``, not x. Every function here multiplies the reading
   layer's norm weight into W_Q, W_K and W_V (``folded``), as TransformerLens does when it
   "processes" weights. The division by the RMS is kept too: every residual vector a circuit is
   fed (token embeddings, or measured residuals) is RMS-normalised first, as the head's norm does.
2. **RoPE makes QK depend on position.** Queries and keys are rotated by their positions before
   the dot product, so the score of a query i and a key j is ``q . R_(j-i) k``: one bilinear form
   per offset, not one matrix. ``qk_by_offset`` computes the positional part of a head's
   preference this way (a previous-token head peaks at offset 1), and ``qk_circuit`` the token
   part at a given offset.
3. **Grouped-query attention shares K and V.** Phi-4's 40 query heads use 10 key/value heads, 4
   each. A head's OV circuit goes through its group's W_V; K- and V-composition are properties of
   a key/value *group*, since the four heads of a group read the same keys and values.
   ``composition_scores`` computes them per group.

Where TransformerLens computes the same thing, ours is checked against it in the tests:
``head_dla`` sums to ``direct_logit_attribution``'s per-layer terms; ``composition_scores(...,
convention="transformer_lens")`` reproduces ``TransformerBridge.all_composition_scores``, and the
tests show where phi4lab's default differs (the norm weights, and K through W_K alone) and why.
"""

from __future__ import annotations

import torch
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import get_act_name

from phi4lab.model.bridge import final_norm_weight, hf_config
from phi4lab.model.guards import check_head, check_tokens
from phi4lab.scratch.architecture import apply_rotary, rope_parameters, rotary_cos_sin


def kv_group(model, head: int) -> int:
    """The key/value head that query head `head` reads (Phi-4: 4 consecutive query heads per group)."""
    return head // (model.cfg.n_heads // (model.cfg.n_key_value_heads or model.cfg.n_heads))


def _ln1(model, layer: int) -> torch.Tensor:
    """The attention input norm's weight of `layer` (Phi-3's ``input_layernorm.weight``)."""
    return model.blocks[layer].ln1.weight.detach()


def folded(model, layer: int) -> dict[str, torch.Tensor]:
    """A layer's attention weights with its input RMSNorm weight multiplied in.

    Returns W_Q [H, d_model, d_head], W_K and W_V [KV, d_model, d_head] (one per key/value group),
    W_O [H, d_head, d_model], in TransformerLens' row-vector convention: ``x @ W_Q`` is a query.
    """
    w = _ln1(model, layer)[:, None]
    attn = model.blocks[layer].attn
    return {"W_Q": w * attn.W_Q.detach(), "W_K": w * attn.W_K.detach(), "W_V": w * attn.W_V.detach(),
            "W_O": attn.W_O.detach()}


def _unembed(model) -> torch.Tensor:
    """W_U with the final norm's weight multiplied in: [d_model, d_vocab]."""
    return final_norm_weight(model).detach()[:, None] * model.W_U.detach()


# ------------------------------------------------------------------ direct logit attribution per head

@torch.no_grad()
def head_dla(model, tokens, answers, pos: int = -1, cache=None) -> torch.Tensor:
    """Each head's direct contribution to each answer's logit at `pos`: [n_layers, n_heads, batch, n_answers].

    A head's output at `pos` is its ``hook_z`` times its slice of W_O. Its direct effect on the
    logits goes through the final RMSNorm, whose scale is fixed from the real forward pass (as in
    ``lens.direct_logit_attribution``), then the norm's weight and the unembedding. The heads of a
    layer sum to that layer's attention term there.
    """
    tokens = check_tokens(model, tokens)
    answers = torch.as_tensor(answers, device=tokens.device).reshape(tokens.shape[0], -1)
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    outs = torch.stack([torch.einsum("bhd,hdm->hbm", cache[get_act_name("z", layer)][:, pos],
                                     model.blocks[layer].attn.W_O)
                        for layer in range(model.cfg.n_layers)])                  # [L, H, batch, d_model]
    L, H = outs.shape[:2]
    scaled = cache.apply_ln_to_stack(outs.flatten(0, 1), layer=None, pos_slice=pos)  # / the final norm's scale
    directions = _unembed(model)[:, answers]                                      # [d_model, batch, n_answers]
    return torch.einsum("cbd,dba->cba", scaled, directions).reshape(L, H, *answers.shape)


# ------------------------------------------------------------------ OV circuits

def _rms_rows(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Each row divided by its root mean square: what a head's RMSNorm does before its weight."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@torch.no_grad()
def effective_embedding(model, layer: int, token_ids, context: int = 32, seed: int = 0) -> torch.Tensor:
    """[len(token_ids), d_model]: the residual stream entering `layer` at each token, in random context.

    The OV circuit's textbook form starts from W_E, the token's embedding. But a head in layer 3
    reads what layers 0-2 have made of the token, which can be quite different (in phi4-tiny it is:
    the copying score of its layer-3 heads changes sign). This measures it: each
    token is placed at the end of `context` random tokens from `token_ids` and the residual entering
    `layer` is read there.
    """
    ids = torch.as_tensor(token_ids).reshape(-1)
    if ids.numel() == 0:
        raise ValueError("token_ids is empty: give at least one token id")
    g = torch.Generator().manual_seed(seed)
    prefix = ids[torch.randint(0, len(ids), (len(ids), context), generator=g)]
    tokens = check_tokens(model, torch.cat([prefix, ids[:, None]], dim=1))
    name = get_act_name("resid_pre", layer)
    rows = []
    for start in range(0, len(ids), 256):
        _, cache = model.run_with_cache(tokens[start:start + 256], names_filter=name)
        rows.append(cache[name][:, -1])
    return torch.cat(rows)


def ov_circuit(model, layer: int, head: int, embedding: torch.Tensor | None = None, token_ids=None) -> FactoredMatrix:
    """The full OV circuit of one head, token to logits: x (w_ln1 W_V) W_O (w_final W_U).

    Row t: how the head, attending to token t, changes every logit. x is each token's residual
    vector, RMS-normalised as the head's norm does: by default the token embeddings W_E (the
    textbook form, which leaves out what earlier layers wrote), or `embedding` rows, e.g. from
    ``effective_embedding``, for the tokens `token_ids` (whose logits are then the columns too, so
    the circuit stays square). A FactoredMatrix: n x d_head times d_head x n, never the n^2 product.
    """
    check_head(model, layer, head)
    weights = folded(model, layer)
    ids = None if token_ids is None else torch.as_tensor(token_ids).reshape(-1)
    if embedding is None:
        embedding = model.W_E.detach() if ids is None else model.W_E.detach()[ids]
    elif ids is None or len(ids) != len(embedding):
        raise ValueError("with embedding=, give token_ids too: one id per row of the embedding, "
                         f"here {len(embedding)} rows")
    x = _rms_rows(embedding, model.cfg.eps).to(weights["W_V"].dtype)
    left = x @ weights["W_V"][kv_group(model, head)]                              # [n, d_head]
    unembed = _unembed(model) if ids is None else _unembed(model)[:, ids]
    right = weights["W_O"][head] @ unembed                                        # [d_head, n]
    return FactoredMatrix(left, right)


def copying_score(circuit: FactoredMatrix) -> float:
    """Elhage et al.'s copying score: sum of the eigenvalues over the sum of their absolute values.

    A positive eigenvalue is a direction that the map sends to itself: a token that, attended to,
    raises its own logit. The nonzero eigenvalues of A B (d_vocab x d_vocab) are those of B A
    (d_head x d_head), which is what FactoredMatrix computes. 1 is a pure copier, -1 a pure
    suppressor, about 0 neither.
    """
    eig = circuit.eigenvalues
    total = eig.abs().sum()
    return 0.0 if total == 0 else (eig.sum().real / total).item()     # a head that writes nothing copies nothing


@torch.no_grad()
def self_top_fraction(circuit: FactoredMatrix, token_ids=None, chunk: int = 1024) -> float:
    """The share of tokens whose own logit is the largest the head writes when it attends to them.

    Rows are formed `chunk` at a time, so memory stays at chunk x d_vocab. token_ids: the rows to
    test (default all); the column of each row's own token must exist (square circuits only).
    """
    ids = torch.arange(circuit.ldim) if token_ids is None else torch.as_tensor(token_ids).reshape(-1)
    if ids.numel() == 0:
        raise ValueError("token_ids is empty: give at least one token id")
    if int(ids.min()) < 0 or int(ids.max()) >= circuit.rdim:
        raise IndexError(f"token ids must be in 0..{circuit.rdim - 1}")
    hits = 0
    for start in range(0, len(ids), chunk):
        rows = ids[start:start + chunk].to(circuit.A.device)
        hits += (circuit.A[rows] @ circuit.B).argmax(-1).eq(rows).sum().item()
    return hits / len(ids)


# ------------------------------------------------------------------ QK circuits with RoPE

def _rotation(model, offsets: torch.Tensor):
    """cos and sin of the rotary angles for these offsets: [len(offsets), d_head] each."""
    theta = rope_parameters(hf_config(model))["rope_theta"]
    return rotary_cos_sin(offsets, model.cfg.d_head, theta)


def mean_normed_embedding(model) -> torch.Tensor:
    """The average token's RMS-normalised embedding, [d_model]: a stand-in residual for "any token"."""
    return _rms_rows(model.W_E.detach(), model.cfg.eps).mean(0)


@torch.no_grad()
def qk_by_offset(model, layer: int, head: int, max_offset: int = 16, query=None, key=None) -> torch.Tensor:
    """The positional part of a head's attention score, [max_offset + 1]: entry r is for a key r tokens back.

    With RoPE, a query q at position i and a key k at position j score ``R_i q . R_j k = R_(i-j) q . k``
    (divided by sqrt(d_head)). Here q and k are the head's query and key of one residual vector each:
    `query` and `key` (default: the average token's normalised embedding, for both), through the
    layer's folded W_Q and its group's W_K, each RMS-normalised first as the head's norm does.
    A previous-token head peaks at offset 1; a head that
    does not care about position is flat. Softmax over a real prompt's keys turns these scores into
    attention, so read differences, not levels.
    """
    check_head(model, layer, head)
    if max_offset < 0:
        raise ValueError(f"max_offset must be >= 0, got {max_offset}")
    base = mean_normed_embedding(model)
    query = base if query is None else torch.as_tensor(query, dtype=torch.float32)
    key = base if key is None else torch.as_tensor(key, dtype=torch.float32)
    weights = folded(model, layer)
    # the head's norm divides its input by its RMS: do the same to the vectors it is fed
    query, key = (_rms_rows(v[None], model.cfg.eps)[0] for v in (query, key))
    q = query.to(weights["W_Q"]) @ weights["W_Q"][head]                        # [d_head]
    k = key.to(weights["W_K"]) @ weights["W_K"][kv_group(model, head)]
    cos, sin = _rotation(model, torch.arange(max_offset + 1, device=q.device))
    rotated = apply_rotary(q[None, None].expand(1, max_offset + 1, -1), cos.to(q), sin.to(q))[0]
    return (rotated @ k) / model.cfg.d_head ** 0.5


def qk_circuit(model, layer: int, head: int, offset: int = 0) -> FactoredMatrix:
    """The token part of a head's QK circuit at one offset: [d_vocab (query token), d_vocab (key token)].

    Entry (s, t): the score of a query whose residual is token s's embedding against a key r = offset
    tokens back whose residual is token t's, ``R_r (e_s W_Q) . (e_t W_K) / sqrt(d_head)``, norm
    weights folded in, each embedding RMS-normalised as the head's norm does. As for the OV circuit,
    only the embedding is considered.
    """
    check_head(model, layer, head)
    if offset < 0:
        raise ValueError(f"offset counts keys back from the query, so it must be >= 0, got {offset}")
    weights = folded(model, layer)
    cos, sin = _rotation(model, torch.tensor([offset]))
    x = _rms_rows(model.W_E.detach(), model.cfg.eps).to(weights["W_Q"].dtype)
    q = x @ weights["W_Q"][head]                                                # [vocab, d_head]
    q = apply_rotary(q[None], cos.to(q), sin.to(q))[0]
    k = x @ weights["W_K"][kv_group(model, head)]
    return FactoredMatrix(q / model.cfg.d_head ** 0.5, k.T)


# ------------------------------------------------------------------ composition

def _gram(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a @ b||_F from thin factors, a [..., n, r] and b [..., r, m]: sqrt(trace(a^T a  b b^T)).

    Only r x r matrices are formed, never the n x m product (d_model x d_model here).
    """
    return torch.sqrt(torch.einsum("...ij,...ji->...", a.mT @ a, b @ b.mT).clamp_min(0))


@torch.no_grad()
def composition_scores(model, kind: str, convention: str = "phi4lab") -> torch.Tensor:
    """How much each head's output feeds each later head's queries (Q), keys (K) or values (V).

    Elhage et al.'s score of a sender's OV map W_A and a receiver's reading map W_B is
    ``||W_A W_B||_F / (||W_A||_F ||W_B||_F)``: 1 when the receiver reads exactly what the sender
    writes, and small for unrelated random maps (about 1/sqrt(d_model): 0.07 for phi4-tiny's 192).

    convention="phi4lab" (default), for Phi-4's architecture:
        the sender's W_OV = (w_ln1 W_V[group]) W_O[head]; the receiver reads through its layer's norm
        weight, with W_Q of a query head (Q), or W_K (K) or W_V (V) of a key/value *group*. K is read
        through W_K alone: with RoPE, W_Q W_K^T is not the bilinear form any query-key pair uses
        (that is W_Q R_offset W_K^T), and a rotation of the key side leaves ||W_OV W_K|| unchanged.
        Returns [L, H, L, H] for Q and [L, H, L, KV] for K and V.
    convention="transformer_lens": TransformerBridge.all_composition_scores' definition, [L, H, L, H]:
        raw weights (no norm weights), K through W_K W_Q^T and Q through W_Q W_K^T at offset 0, V
        through the receiver's full W_OV; K and V repeated for every query head of a group.

    Entries whose receiver layer is not after the sender's are 0, and so are those of a head whose
    OV map or reading map is zero (TransformerLens gives NaN there).
    """
    if kind not in ("Q", "K", "V"):
        raise ValueError(f"kind must be 'Q', 'K' or 'V', got {kind!r}")
    if convention not in ("phi4lab", "transformer_lens"):
        raise ValueError(f"convention must be 'phi4lab' or 'transformer_lens', got {convention!r}")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    groups = [kv_group(model, h) for h in range(H)]
    if convention == "transformer_lens":
        attn = [model.blocks[layer].attn for layer in range(L)]
        layers = [{n: getattr(a, n).detach() for n in ("W_Q", "W_K", "W_V", "W_O")} for a in attn]
        for w in layers:                                   # one K and V per query head, as TransformerLens expands them
            w["W_K"], w["W_V"] = w["W_K"][groups], w["W_V"][groups]
    else:
        layers = [folded(model, layer) for layer in range(L)]
    # the sender: W_OV = W_V[group] W_O[head], kept as thin factors [d_model, d_head] and [d_head, d_model]
    v_left = torch.stack([w["W_V"][groups] if convention == "phi4lab" else w["W_V"] for w in layers])
    o_right = torch.stack([w["W_O"] for w in layers])                             # [L, H, d_head, d_model]
    sender = _gram(v_left, o_right)                                               # ||W_OV||_F, [L, H]
    # the receiver: a reading map W_B = b_left @ b_right, [d_model, d_head] @ [d_head, d_model]
    # (phi4lab's readers are a single [d_model, d_head] matrix: b_right is then the identity)
    if convention == "transformer_lens":
        q, k = torch.stack([w["W_Q"] for w in layers]), torch.stack([w["W_K"] for w in layers])
        b_left, b_right = {"Q": (q, k.mT), "K": (k, q.mT), "V": (v_left, o_right)}[kind]
    else:
        b_left = torch.stack([w["W_" + kind] for w in layers])                    # [L, H or KV, d_model, d_head]
        b_right = None
    receiver = _gram(b_left, b_right) if b_right is not None else torch.linalg.matrix_norm(b_left)
    G = b_left.shape[1]
    v_gram = v_left.mT @ v_left                                                   # [L, H, d_head, d_head]
    b_gram = None if b_right is None else b_right @ b_right.mT                    # [L, G, d_head, d_head]
    scores = torch.zeros(L, H, L, G, dtype=sender.dtype, device=sender.device)
    for r in range(1, L):                              # receiver layer r reads senders in layers 0 .. r-1
        for s in range(r):                             # one sender layer at a time: memory H x G x d_head^2
            # ||W_V W_O b_left b_right||_F^2 = tr(M^T (W_V^T W_V) M (b_right b_right^T)) with M = W_O b_left:
            # only d_head x d_head matrices, never a d_model-sized product
            middle = torch.einsum("hdm,gme->hgde", o_right[s], b_left[r])          # [H, G, d_head, d_head]
            inner = middle.mT @ v_gram[s][:, None] @ middle
            if b_gram is not None:
                inner = inner @ b_gram[r][None]
            num = torch.sqrt(torch.diagonal(inner, dim1=-2, dim2=-1).sum(-1).clamp_min(0))
            denominator = sender[s][:, None] * receiver[r][None]
            # a head that writes nothing (or reads nothing) composes with nothing: 0, not 0/0
            scores[s, :, r] = torch.where(denominator > 0, num / denominator.clamp_min(1e-30), 0.0)
    return scores
