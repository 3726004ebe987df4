"""Checks for course/01_architecture.ipynb: each piece of Phi-4, against phi4lab.scratch.architecture and Hugging Face."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from transformers.models.phi3 import modeling_phi3

from phi4lab.exercises.checking import CountCalls, ExerciseFailure, StubError, _raised_by, check_function, run_answer
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model import config as C
from phi4lab.model.loading import random_hf_model
from phi4lab.scratch import architecture as A


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---- Exercise 1: RMSNorm -----------------------------------------------------------------------

def check_rms_norm(fn):
    g = _gen(0)
    cases = [(torch.randn(2, 5, 16, generator=g) * 3, torch.rand(16, generator=g) + 0.5, 1e-5),
             (torch.randn(3, 8, generator=g) * 1e-3, torch.rand(8, generator=g) + 0.5, 1e-5),   # eps matters here
             (torch.randn(4, 32, generator=g).bfloat16(), (torch.rand(32, generator=g) + 0.5).bfloat16(), 1e-5)]
    check_function(fn, A.rms_norm, cases, name="rms_norm", rtol=1e-4, atol=1e-5, mistakes={
        "epsilon goes inside the square root: x / sqrt(mean(x^2) + eps)":
            lambda x, w, e: w * (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + e)),
        "RMSNorm does not subtract the mean (that is LayerNorm)":
            lambda x, w, e: w * A.rms_norm(x - x.mean(-1, keepdim=True), torch.ones_like(w), e),
        "multiply by the learned weight after normalising": lambda x, w, e: A.rms_norm(x, torch.ones_like(w), e),
        "the mean of the squares is over the last dimension (the model dimension)":
            lambda x, w, e: w * x * torch.rsqrt(x.pow(2).mean(0, keepdim=True) + e),
    })
    norm = modeling_phi3.Phi3RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16, generator=g) + 0.5)
    x = torch.randn(2, 3, 16, generator=g)
    if not torch.allclose(fn(x, norm.weight, 1e-5), norm(x), atol=1e-6):
        raise ExerciseFailure("rms_norm passes its cases but differs from Hugging Face's Phi3RMSNorm")
    print("\N{CHECK MARK} and it matches Hugging Face's Phi3RMSNorm")


# ---- Exercise 2: rotary angles -----------------------------------------------------------------

def check_rotary_cos_sin(fn):
    cases = [(torch.arange(7), 8, 250_000.0), (torch.arange(3, 12), 16, 250_000.0), (torch.arange(5), 4, 10_000.0)]

    def interleaved(p, d, theta):
        inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
        ang = (p.float()[:, None] * inv).repeat_interleave(2, dim=-1)
        return ang.cos(), ang.sin()

    def every_dim(p, d, theta):
        inv = 1.0 / theta ** (torch.arange(0, d // 2).float() / d)
        ang = torch.cat([p.float()[:, None] * inv] * 2, -1)
        return ang.cos(), ang.sin()
    check_function(lambda *a: torch.stack(fn(*a)), lambda *a: torch.stack(A.rotary_cos_sin(*a)), cases,
                   name="rotary_cos_sin", rtol=1e-5, atol=1e-6, mistakes={
                       "Phi-4 pairs dimension j with j + head_dim/2 (rotate-half): concatenate the angles "
                       "[a, a], don't interleave them [a0, a0, a1, a1, ...]":
                           lambda *a: torch.stack(interleaved(*a)),
                       "the frequencies are theta^(-2j/head_dim) for j = 0 .. head_dim/2 - 1: "
                       "torch.arange(0, head_dim, 2) / head_dim":
                           lambda *a: torch.stack(every_dim(*a)),
                   })
    cfg = C.scaled(d_model=64, n_layers=1)
    hf = random_hf_model(cfg)
    hd = C.head_dim(cfg)
    cos, sin = hf.model.rotary_emb(torch.zeros(1, 1, 9, hd), torch.arange(9)[None])
    mine = fn(torch.arange(9), hd, 250_000.0)
    if not (torch.allclose(mine[0], cos[0], atol=1e-6) and torch.allclose(mine[1], sin[0], atol=1e-6)):
        raise ExerciseFailure("rotary_cos_sin passes its cases but differs from Hugging Face's Phi3RotaryEmbedding")
    print("\N{CHECK MARK} and it matches Hugging Face's Phi3RotaryEmbedding (theta 250,000)")


# ---- Exercise 3: applying the rotation ---------------------------------------------------------

def check_apply_rotary(fn):
    g = _gen(2)
    cases = []
    for d in (4, 8):
        cos, sin = A.rotary_cos_sin(torch.arange(6), d, 250_000.0)
        cases.append((torch.randn(2, 3, 6, d, generator=g), cos, sin))

    def pairs_adjacent(x, cos, sin):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        rot = torch.stack([-x2, x1], -1).flatten(-2)
        return x * cos + rot * sin
    check_function(fn, A.apply_rotary, cases, name="apply_rotary", rtol=1e-5, atol=1e-6, mistakes={
        "rotate_half pairs the two *halves*: (x1, x2) -> (-x2, x1) with x1 = x[..., :d/2], not adjacent "
        "dimensions": pairs_adjacent,
        "rotate_half is (-x2, x1), not (x2, -x1): you rotate the wrong way":
            lambda x, c, s: x * c - A.rotate_half(x) * s,
    })
    x, k = cases[0][0], torch.randn(2, 3, 6, 4, generator=g)
    q_hf, _ = modeling_phi3.apply_rotary_pos_emb(x, k, cases[0][1][None], cases[0][2][None])
    if not torch.allclose(fn(*cases[0]), q_hf, atol=1e-6):
        raise ExerciseFailure("apply_rotary passes its cases but differs from Hugging Face's apply_rotary_pos_emb")
    print("\N{CHECK MARK} and it matches Hugging Face's apply_rotary_pos_emb")


# ---- Exercise 4: splitting the fused QKV projection ---------------------------------------------

def check_split_qkv(fn):
    g = _gen(3)
    cases = [(torch.randn(2, 5, (4 + 2 * 2) * 3, generator=g), 4, 2, 3),
             (torch.randn(1, 3, (8 + 2 * 2) * 4, generator=g), 8, 2, 4)]

    def kqv(qkv, H, KV, d):
        k, q, v = qkv.split([KV * d, H * d, KV * d], -1)
        return (A.split_qkv(torch.cat([q, k, v], -1), H, KV, d))

    def dh(qkv, H, KV, d):
        q, k, v = qkv.split([H * d, KV * d, KV * d], -1)
        f = lambda t, h: t.reshape(*t.shape[:2], d, h).permute(0, 3, 1, 2)  # noqa: E731
        return f(q, H), f(k, KV), f(v, KV)
    check_function(lambda *a: torch.cat([t.flatten() for t in fn(*a)]),
                   lambda *a: torch.cat([t.flatten() for t in A.split_qkv(*a)]), cases,
                   name="split_qkv", rtol=0, atol=0, mistakes={
                       "the rows are Q first, then K, then V": lambda *a: torch.cat([t.flatten() for t in kqv(*a)]),
                       "each head's d_head values are contiguous: '(h d)', not '(d h)'":
                           lambda *a: torch.cat([t.flatten() for t in dh(*a)]),
                   })
    q, k, v = fn(*cases[0])
    if q.shape != (2, 4, 5, 3) or k.shape != (2, 2, 5, 3) or v.shape != (2, 2, 5, 3):
        raise ExerciseFailure(f"shapes: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; expected "
                              "[batch, heads, seq, d_head], i.e. (2, 4, 5, 3) and (2, 2, 5, 3)")


# ---- Exercise 5: repeat_kv ---------------------------------------------------------------------

def check_repeat_kv(fn):
    g = _gen(4)
    cases = [(torch.randn(2, 3, 5, 4, generator=g), 4), (torch.randn(1, 2, 3, 2, generator=g), 2),
             (torch.randn(1, 4, 2, 2, generator=g), 1)]
    check_function(fn, modeling_phi3.repeat_kv, cases, name="repeat_kv", rtol=0, atol=0, mistakes={
        "KV head g serves query heads g*n_rep ... g*n_rep + n_rep - 1 (consecutive): repeat_interleave, "
        "not repeat (which deals them out 0, 1, 2, 0, 1, 2, ...)": lambda x, n: x.repeat(1, n, 1, 1),
    })


# ---- Exercise 6: causal attention -------------------------------------------------------------

def _attention_variant(scale=True, mask_diag=False, mask=True, dim=-1):
    def f(q, k, v):
        n_rep = q.shape[1] // k.shape[1]
        k, v = A.repeat_kv(k, n_rep), A.repeat_kv(v, n_rep)
        s = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5 if scale else 1)
        T = s.shape[-1]
        if mask:
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(0 if mask_diag else 1), float("-inf"))
        p = s.softmax(dim)
        return torch.nan_to_num(p) @ v
    return f


def check_causal_attention(fn):
    g = _gen(5)
    cases = [(torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g),
              torch.randn(2, 2, 6, 8, generator=g)),
             (torch.randn(1, 6, 5, 4, generator=g), torch.randn(1, 3, 5, 4, generator=g),
              torch.randn(1, 3, 5, 4, generator=g))]
    check_function(fn, A.causal_attention, cases, name="causal_attention", rtol=1e-4, atol=1e-5, mistakes={
        "divide the scores by sqrt(d_head) before the softmax": _attention_variant(scale=False),
        "a token may attend to itself: mask only keys *after* the query (triu(1), not triu(0))":
            _attention_variant(mask_diag=True),
        "no causal mask: a query must not see later keys": _attention_variant(mask=False),
        "the softmax runs over the keys (the last dimension), so each query's weights sum to 1":
            _attention_variant(dim=-2),
    })


# ---- Exercise 7: the gated MLP ----------------------------------------------------------------

def check_gated_mlp(fn):
    g = _gen(6)
    cases = [(torch.randn(2, 3, 8, generator=g), torch.randn(2 * 12, 8, generator=g), torch.randn(8, 12, generator=g))]

    def swapped(x, gu, dn):
        gate, up = F.linear(x, gu).chunk(2, -1)
        return F.linear(F.silu(up) * gate, dn)
    check_function(fn, A.gated_mlp, cases, name="gated_mlp", rtol=1e-5, atol=1e-5, mistakes={
        "gate_up_proj holds the gate first, then up: silu(first half) * second half": swapped,
        "the activation is SiLU (x * sigmoid(x)), not GELU":
            lambda x, gu, dn: F.linear(F.gelu(F.linear(x, gu).chunk(2, -1)[0]) * F.linear(x, gu).chunk(2, -1)[1], dn),
        "the gate is an activation *times* the up projection, not a sum":
            lambda x, gu, dn: F.linear(F.silu(F.linear(x, gu).chunk(2, -1)[0]) + F.linear(x, gu).chunk(2, -1)[1], dn),
    })
    mlp = random_hf_model(C.scaled(d_model=64, n_layers=1)).model.layers[0].mlp
    x = torch.randn(1, 4, 64, generator=g)
    with torch.no_grad():
        if not torch.allclose(fn(x, mlp.gate_up_proj.weight, mlp.down_proj.weight), mlp(x), atol=1e-5):
            raise ExerciseFailure("gated_mlp passes its cases but differs from Hugging Face's Phi3MLP")
    print("\N{CHECK MARK} and it matches Hugging Face's Phi3MLP")


# ---- Exercise 8: the pre-norm block -----------------------------------------------------------

def check_block(fn):
    """fn(x, layer, cos, sin) with `layer` a phi4lab.scratch.architecture.Block whose pieces the learner calls."""
    cfg = C.scaled(d_model=64, n_layers=1)
    block = A.Block(cfg)
    g = _gen(7)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim == 1 else 0.1) + (1.0 if p.ndim == 1 else 0.0))
    x = torch.randn(2, 6, 64, generator=g)
    cos, sin = A.rotary_cos_sin(torch.arange(6), C.head_dim(cfg), 250_000.0)
    attn = lambda h: block.self_attn(h, cos, sin)  # noqa: E731

    def post_norm(x, layer, c, s):
        h = layer.input_layernorm(x + attn(x))
        return layer.post_attention_layernorm(h + layer.mlp(h))

    def one_norm(x, layer, c, s):
        h = x + attn(layer.input_layernorm(x))
        return h + layer.mlp(layer.input_layernorm(h))

    def no_residual(x, layer, c, s):
        h = attn(layer.input_layernorm(x))
        return layer.mlp(layer.post_attention_layernorm(h))
    with torch.no_grad():
        check_function(fn, lambda x, layer, c, s: layer(x, c, s), [(x, block, cos, sin)], name="block",
                       rtol=1e-4, atol=1e-5, mistakes={
                           "Phi-4 is pre-norm: normalise the sub-layer's *input*, then add its output to the "
                           "un-normalised stream": post_norm,
                           "the MLP has its own norm, post_attention_layernorm": one_norm,
                           "add each sub-layer's output back to the residual stream (x + ...)": no_residual,
                       })


# ---- Exercise 9: the whole model --------------------------------------------------------------

def check_forward(fn, hf_model=None):
    """fn(model, tokens) -> logits, using the model's parts; checked against Hugging Face's logits."""
    cfgs = [C.scaled(d_model=64, n_layers=2), C.scaled(d_model=64, n_layers=1, n_kv_heads=1)]
    g = _gen(8)
    for i, cfg in enumerate(cfgs):
        hf = hf_model if (hf_model is not None and i == 0) else random_hf_model(cfg, seed=i)
        ours = A.Phi4.from_hf(hf)
        tokens = torch.randint(0, 1000, (2, 12), generator=g)
        with torch.no_grad():
            try:
                mine = fn(ours, tokens)
            except NotImplementedError:
                raise StubError("forward is still a stub: replace `raise NotImplementedError` "
                                          "with your code") from None
            ref = hf(tokens).logits
            if tuple(mine.shape) != tuple(ref.shape):
                raise ExerciseFailure(f"logits have shape {tuple(mine.shape)}, expected {tuple(ref.shape)} "
                                      "[batch, seq, vocab]")
            err = (mine - ref).abs().max().item()
            if err > 1e-4:
                no_norm = ours.lm_head(_run_blocks(ours, tokens))
                if torch.allclose(mine, no_norm, atol=1e-4):
                    raise ExerciseFailure("apply the final norm (model.norm) before the unembedding")
                raise ExerciseFailure(f"logits differ from Hugging Face's by up to {err:.3g} (allowed 1e-4)")
    print(f"\N{CHECK MARK} forward: logits match Hugging Face's Phi3ForCausalLM to within 1e-4 on {len(cfgs)} configs")


def _run_blocks(model, tokens):
    cos, sin = A.rotary_cos_sin(torch.arange(tokens.shape[1]), C.head_dim(model.cfg), model.theta)
    x = model.embed_tokens(tokens)
    for block in model.layers:
        x = block(x, cos, sin)
    return x


# ---- Exercise 10: the sampling distribution ---------------------------------------------------
# The reference is Hugging Face's own: generate(do_sample=True, ...) applies these warpers, in this
# order, then a softmax, then torch.multinomial (transformers' generation/utils.py).

def sampling_probs_reference(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The distribution generate(do_sample=True, temperature=, top_k=, top_p=) draws the next token from."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = logits.float()
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return scores.softmax(-1)


def _top_p_without_crossing(logits, temperature, top_k, top_p):
    """Keeps only the tokens strictly inside top_p: the one that crosses the line is dropped."""
    scores = sampling_probs_reference(logits, temperature, top_k, 1.0).log()
    probs, order = scores.softmax(-1).sort(-1, descending=True)
    drop = probs.cumsum(-1) > top_p
    drop[..., 0] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf")).softmax(-1)


def _temperature_last(logits, temperature, top_k, top_p):
    filtered = sampling_probs_reference(logits, 1.0, top_k, top_p).log()
    return (filtered / temperature).softmax(-1)


def _unnormalised(logits, temperature, top_k, top_p):
    kept = sampling_probs_reference(logits, temperature, top_k, top_p) > 0
    return (logits.float() / temperature).softmax(-1) * kept


SAMPLING_MISTAKES = {
    "temperature divides the logits (logits / T): a low temperature sharpens the distribution":
        lambda x, t, k, p: sampling_probs_reference(x * t * t, t, k, p),
    "keep the token that crosses top_p: top-p keeps the smallest set of most likely tokens whose probabilities "
    "add up to *at least* top_p": _top_p_without_crossing,
    "apply the temperature first: Hugging Face filters the tempered logits, so top-p sees the sharpened "
    "(or flattened) distribution": _temperature_last,
    "softmax again after filtering (or set the filtered logits to -inf before the softmax): the kept "
    "probabilities must add up to 1": _unnormalised,
    "top-k keeps the k largest logits, not k - 1 or k + 1":
        lambda x, t, k, p: sampling_probs_reference(x, t, k + 1 if k else 0, p),
}


def check_sampling_probs(fn):
    g = _gen(10)
    logits = [torch.randn(3, 200, generator=g), torch.randn(2, 50, generator=g) * 3, torch.randn(1, 4096, generator=g) * 4]
    # One filter at a time first, so that a mistake is named where it alone shows.
    settings = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0), (1.0, 0, 0.9), (2.0, 0, 0.8), (0.8, 20, 0.9),
                (1.5, 0, 0.5), (0.6, 40, 0.95), (2.0, 10, 0.8)]
    cases = [(x, t, k, p) for x in logits for t, k, p in settings]
    check_function(fn, sampling_probs_reference, cases, name="sampling_probs", rtol=1e-5, atol=1e-7,
                   mistakes=SAMPLING_MISTAKES)


# ---- Exercise 11: attention with a KV cache ---------------------------------------------------

def cached_attention_reference(attn: A.Attention, x: torch.Tensor, past, theta: float):
    """Attention over the cache and the new tokens; the new tokens' keys and values join the cache.

    x [b, T_new, d_model] (normalised); past None or (k, v), each [b, KV, T_past, d], keys already rotated.
    Returns (output [b, T_new, d_model], (k, v) with T_past + T_new positions).
    """
    return _cached_attention(attn, x, past, theta)


def _cached_attention(attn, x, past, theta, *, angles_from_zero=False, square_mask=False, cache_rotated=True,
                      cache_expanded=False):
    T_past = 0 if past is None else past[0].shape[2]
    T_new = x.shape[1]
    q, k, v = A.split_qkv(attn.qkv_proj(x), attn.n_heads, attn.n_kv_heads, attn.head_dim)
    start = 0 if angles_from_zero else T_past
    cos, sin = A.rotary_cos_sin(torch.arange(start, start + T_new), attn.head_dim, theta)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    q, k_rot = A.apply_rotary(q, cos, sin), A.apply_rotary(k, cos, sin)
    if cache_expanded:
        n_rep = attn.n_heads // attn.n_kv_heads
        k_rot, v = A.repeat_kv(k_rot, n_rep), A.repeat_kv(v, n_rep)
    if past is not None:
        k_all, v_all = torch.cat([past[0], k_rot], 2), torch.cat([past[1], v], 2)
    else:
        k_all, v_all = k_rot, v
    n_rep = attn.n_heads // k_all.shape[1]
    scores = q @ A.repeat_kv(k_all, n_rep).transpose(-1, -2) / attn.head_dim ** 0.5
    T_all = k_all.shape[2]
    future = torch.ones(T_new, T_all, dtype=torch.bool).triu(1 if square_mask else T_past + 1)
    pattern = scores.masked_fill(future, float("-inf")).float().softmax(-1).to(q.dtype)
    out = attn.o_proj(rearrange(pattern @ A.repeat_kv(v_all, n_rep), "b h t d -> b t (h d)"))
    new_k = k_all if cache_rotated else (k if past is None else torch.cat([past[0], k], 2))
    return out, (new_k, v_all)


def forward_cached(model: A.Phi4, tokens: torch.Tensor, caches: list, attention=cached_attention_reference):
    """Logits for `tokens`, the positions after those already in `caches` (one (k, v) or None per layer).

    Each layer's attention runs through `attention(attn, x, past, theta)`, which returns the new cache;
    `caches` is updated in place. Used by notebook 01 with the learner's cached attention.
    """
    x = model.embed_tokens(tokens)
    for i, layer in enumerate(model.layers):
        h, caches[i] = attention(layer.self_attn, layer.input_layernorm(x), caches[i], model.theta)
        x = x + h
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.norm(x))


def _variant(**how):
    return lambda attn, x, past, theta: _cached_attention(attn, x, past, theta, **how)


CACHE_MISTAKES = {
    "the new tokens sit at positions T_past, T_past + 1, ...: rotate their queries and keys by the angles "
    "of those positions, not from 0": _variant(angles_from_zero=True),
    "new query i sits at position T_past + i and may see every key up to and including that one: the mask "
    "over [T_new, T_past + T_new] scores is offset by T_past (triu's diagonal argument)": _variant(square_mask=True),
    "cache the keys after the rotation, as Hugging Face does: each key keeps the angle of its own position, "
    "and is never rotated again": _variant(cache_rotated=False),
}


def _cache_scenario(model, attention, chunks):
    caches = [None] * len(model.layers)
    logits = [forward_cached(model, chunk, caches, attention) for chunk in chunks]
    return torch.cat(logits, 1), caches


def check_cached_attention(fn):
    """fn(attn, x, past, theta) -> (out, (k, v)): a prefill, a chunk of three and single steps equal the full forward."""
    g = _gen(11)
    for seed, cfg in enumerate([C.scaled(d_model=64, n_layers=2), C.scaled(d_model=64, n_layers=2, n_kv_heads=1)]):
        hf = random_hf_model(cfg, seed=seed)
        model = A.Phi4.from_hf(hf)
        tokens = torch.randint(0, 1000, (2, 11), generator=g)
        chunks = [tokens[:, :5], tokens[:, 5:8], tokens[:, 8:9], tokens[:, 9:10], tokens[:, 10:]]
        with torch.no_grad():
            try:
                mine, caches = _cache_scenario(model, fn, chunks)
            except NotImplementedError as e:
                if _raised_by(e, fn):
                    raise StubError("cached_attention is still a stub: replace `raise NotImplementedError` "
                                              "with your code") from None
                raise
            except (RuntimeError, TypeError, ValueError) as e:
                raise ExerciseFailure(f"cached_attention failed on a prefill of 5 tokens, then 3, then 1 at a time: "
                                      f"{type(e).__name__}: {e}. It returns (output, (k, v)); `past` is None on "
                                      "the first call") from None
            full = hf(tokens).logits
            n_kv, d = cfg.num_key_value_heads, C.head_dim(cfg)
            for layer, cache in enumerate(caches):
                if not (isinstance(cache, tuple) and len(cache) == 2):
                    raise ExerciseFailure("return the cache as a pair (k, v)")
                if tuple(cache[0].shape) != (2, n_kv, 11, d):
                    hint = (" (cache the key/value heads, not their copies for each query head: sharing them is "
                            "what grouped-query attention saves)") if cache[0].shape[1] != n_kv else ""
                    raise ExerciseFailure(f"layer {layer}'s cached keys have shape {tuple(cache[0].shape)} after "
                                          f"11 tokens, expected {(2, n_kv, 11, d)} [batch, KV heads, T, d_head]{hint}")
            if tuple(mine.shape) != tuple(full.shape):
                raise ExerciseFailure(f"the logits have shape {tuple(mine.shape)}, expected {tuple(full.shape)}")
            err = (mine - full).abs().max().item()
            if not torch.isfinite(mine).all():
                first = int((~torch.isfinite(mine)).any(-1).any(0).nonzero()[0])
                raise ExerciseFailure(f"with the cache, the logits hold NaN or inf, first at position {first} (the "
                                      "prefill is 0-4): a row of scores masked entirely gives a softmax of NaN. Does "
                                      "each query still see its own key?")
            if not err <= 1e-4:
                for message, wrong in CACHE_MISTAKES.items():
                    if torch.allclose(mine, _cache_scenario(model, wrong, chunks)[0], atol=1e-5):
                        raise ExerciseFailure(f"cached_attention: {message}")
                first = int((mine - full).abs().amax((0, 2)).gt(1e-4).nonzero()[0])
                raise ExerciseFailure(f"with the cache, the logits differ from the full forward pass by up to "
                                      f"{err:.3g}, first at position {first} (the prefill is 0-4, the chunk 5-7, "
                                      "then one token at a time)")
            # What Hugging Face's own cache holds after the same tokens: the rotated keys and the values.
            hf_cache = hf(tokens, use_cache=True).past_key_values
            for layer, (k, v) in enumerate(caches):
                hk, hv = hf_cache.layers[layer].keys, hf_cache.layers[layer].values
                if not (torch.allclose(k, hk, atol=1e-5) and torch.allclose(v, hv, atol=1e-5)):
                    raise ExerciseFailure(f"the logits are right, but layer {layer}'s cache differs from the keys and "
                                          "values Hugging Face caches (rotated keys, plain values)")
    print("\N{CHECK MARK} cached_attention: a prefill, a chunk and single steps give the full forward's logits "
          "(within 1e-4), and the cache holds what Hugging Face's does")


# ---- Exercise 12: generation --------------------------------------------------------------------

def generate_reference(model: A.Phi4, prompt: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int,
                       top_p: float, use_cache: bool = True, attention=cached_attention_reference) -> torch.Tensor:
    """Sample max_new_tokens after prompt [b, T] as Hugging Face's generate(do_sample=True) does."""
    ids, caches = prompt, [None] * len(model.layers)
    logits = forward_cached(model, prompt, caches, attention) if use_cache else model(prompt)
    for step in range(max_new_tokens):
        probs = sampling_probs_reference(logits[:, -1], temperature, top_k, top_p)
        token = torch.multinomial(probs, 1)
        ids = torch.cat([ids, token], 1)
        if step + 1 < max_new_tokens:
            logits = forward_cached(model, token, caches, attention) if use_cache else model(ids)
    return ids


def hf_generate(hf_model, prompt, max_new_tokens, temperature, top_k, top_p, seed):
    """Hugging Face's sampling, seeded, never stopping early (no end-of-text token)."""
    torch.manual_seed(seed)
    return hf_model.generate(prompt, do_sample=True, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=None, pad_token_id=0,
                             attention_mask=torch.ones_like(prompt))


def check_generate(fn):
    """fn(model, prompt, max_new_tokens, temperature, top_k, top_p, use_cache) -> ids: Hugging Face's tokens."""
    g = _gen(12)
    settings = [(12, 0.8, 20, 0.9, True), (10, 1.3, 0, 0.95, True), (8, 0.7, 10, 1.0, False)]
    for seed, (n, t, k, p, use_cache) in enumerate(settings):
        cfg = C.scaled(d_model=64, n_layers=2)
        hf = random_hf_model(cfg, seed=seed)
        model = A.Phi4.from_hf(hf)
        prompt = torch.randint(0, 1000, (1, 6), generator=g)
        with torch.no_grad():
            expected = hf_generate(hf, prompt, n, t, k, p, seed)
            torch.manual_seed(seed)
            with CountCalls(model.embed_tokens) as steps:
                mine = run_answer(fn, "generate", model, prompt.clone(), n, t, k, p, use_cache)
            if not isinstance(mine, torch.Tensor):
                raise ExerciseFailure(f"return the token ids as a tensor, got {type(mine).__name__}")
            call = f"generate(model, prompt, {n}, temperature={t}, top_k={k}, top_p={p}, use_cache={use_cache})"
            if tuple(mine.shape) != tuple(expected.shape):
                raise ExerciseFailure(f"{call} returned shape {tuple(mine.shape)}, expected {tuple(expected.shape)}: "
                                      f"the prompt's {prompt.shape[1]} ids followed by {n} new ones")
            if not torch.equal(mine[:, :prompt.shape[1]], prompt):
                raise ExerciseFailure("return the prompt's ids followed by the new ones")
            if not torch.equal(mine, expected):
                greedy = hf.generate(prompt, do_sample=False, max_new_tokens=n, min_new_tokens=n, eos_token_id=None,
                                     pad_token_id=0, attention_mask=torch.ones_like(prompt))
                if torch.equal(mine, greedy):
                    raise ExerciseFailure(f"{call} took the most likely token each time: draw it from sampling_probs "
                                          "with torch.multinomial(probs, 1)")
                first = int((mine != expected)[0].nonzero()[0]) - prompt.shape[1]
                raise ExerciseFailure(
                    f"{call}: new token {first} differs from Hugging Face's generate with the same seed "
                    f"(yours {int(mine[0, prompt.shape[1] + first])}, theirs {int(expected[0, prompt.shape[1] + first])}). "
                    "Draw exactly one torch.multinomial(probs, 1) per new token, from the logits at the last "
                    "position, and feed the sampled token back in")
            wanted = [prompt.shape[1]] + [1] * (n - 1) if use_cache else list(range(prompt.shape[1], prompt.shape[1] + n))
            if steps.lengths != wanted:
                how = ("the prompt once, then one new token at a time" if use_cache
                       else "the whole sequence at every step, growing by one")
                raise ExerciseFailure(f"{call} gave the right tokens, but the model read sequences of lengths "
                                      f"{steps.lengths[:6]}{'...' if len(steps.lengths) > 6 else ''}; with "
                                      f"use_cache={use_cache} it should read {how}: {wanted[:6]}"
                                      f"{'...' if len(wanted) > 6 else ''}")
    print(f"\N{CHECK MARK} generate: token for token the same as Hugging Face's generate(do_sample=True) "
          f"with the same seed, in {len(settings)} settings, cached and not")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.

def block_forward_reference(x, layer, cos, sin):
    """One pre-norm decoder block: phi4lab.scratch.architecture.Block.forward does it."""
    return layer(x, cos, sin)


def forward_reference(model, tokens):
    """The whole model: phi4lab.scratch.architecture.Phi4.forward does it."""
    return model(tokens)


stand_alone(globals(), {
    "rms_norm": A.rms_norm, "rotary_cos_sin": A.rotary_cos_sin, "apply_rotary": A.apply_rotary,
    "split_qkv": A.split_qkv, "repeat_kv": A.repeat_kv, "causal_attention": A.causal_attention,
    "gated_mlp": A.gated_mlp, "block_forward": block_forward_reference, "forward": forward_reference,
    "sampling_probs": sampling_probs_reference, "cached_attention": cached_attention_reference,
    "generate": generate_reference,
})
