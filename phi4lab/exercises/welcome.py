"""Checks for course/00_welcome.ipynb: Phi-4 by the numbers.

The references are phi4lab.config's own functions; the mistakes are the ones
people actually make when they first count a GQA model with a gated MLP.
"""

from __future__ import annotations

import torch

from phi4lab.exercises.checking import check_function
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model import config as C


def _configs():
    return [
        C.PHI4,
        C.scaled(),
        C.scaled(d_model=64, n_layers=3, n_kv_heads=1),
        C.scaled(d_model=96, num_attention_heads=6, num_key_value_heads=3, vocab_size=1000),
    ]


# ---- Exercise 1: KV cache per token --------------------------------------------------


def _kv_reference(cfg, bytes_per_element):
    return C.kv_cache_bytes_per_token(cfg, torch.float32) // 4 * bytes_per_element


KV_MISTAKES = {
    "you cached only K or only V: every layer keeps both, so multiply by 2":
        lambda cfg, b: cfg.num_hidden_layers * cfg.num_key_value_heads * C.head_dim(cfg) * b,
    "you used the query heads: with grouped-query attention only the KV heads are cached "
    "(Phi-4: 10 KV heads, each shared by 4 of the 40 query heads)":
        lambda cfg, b: 2 * cfg.num_hidden_layers * cfg.num_attention_heads * C.head_dim(cfg) * b,
    "you cached one layer: each of the num_hidden_layers layers has its own K and V":
        lambda cfg, b: 2 * cfg.num_key_value_heads * C.head_dim(cfg) * b,
    "you counted elements, not bytes: multiply by bytes_per_element":
        lambda cfg, b: 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * C.head_dim(cfg),
}


def check_kv_cache_bytes_per_token(fn):
    cases = [(cfg, b) for cfg in _configs() for b in (2, 4)]
    check_function(fn, _kv_reference, cases, name="kv_cache_bytes_per_token", mistakes=KV_MISTAKES)


# ---- Exercise 2: parameter count -----------------------------------------------------


def _params_reference(cfg):
    return C.count_parameters(cfg)


def _without(part):
    return lambda cfg: C.count_parameters(cfg) - C.parameter_breakdown(cfg)[part]


def _full_kv(cfg):
    extra = 2 * cfg.num_hidden_layers * cfg.hidden_size * (cfg.num_attention_heads - cfg.num_key_value_heads) * C.head_dim(cfg)
    return C.count_parameters(cfg) + extra


def _ungated(cfg):
    return C.count_parameters(cfg) - cfg.num_hidden_layers * cfg.hidden_size * cfg.intermediate_size


PARAM_MISTAKES = {
    "you tied the embeddings: Phi-4's lm_head is a separate matrix (tie_word_embeddings is False)": _without("lm_head"),
    "you left out the embedding matrix (vocab_size x hidden_size)": _without("embed_tokens"),
    "you gave K and V as many heads as Q: Phi-4 uses grouped-query attention (num_key_value_heads)": _full_kv,
    "you forgot the RMSNorm weights: two per layer plus the final norm, hidden_size each": _without("norms"),
    "your MLP has two matrices: Phi-4's gated MLP has three (gate and up, fused in gate_up_proj, then down)": _ungated,
}


def check_count_parameters(fn):
    check_function(fn, _params_reference, [(cfg,) for cfg in _configs()], name="count_parameters", mistakes=PARAM_MISTAKES)


# ---- Exercise 3: forward FLOPs per token ---------------------------------------------


def _flops_reference(cfg):
    return C.forward_flops_per_token(cfg)


FLOP_MISTAKES = {
    "you counted multiply-adds: a multiply-add is 2 FLOPs": lambda cfg: C.forward_flops_per_token(cfg) // 2,
    "you counted the embedding lookup as a matmul: it is a table lookup, ~free":
        lambda cfg: C.forward_flops_per_token(cfg) + 2 * C.parameter_breakdown(cfg)["embed_tokens"],
    "you left out lm_head: the final vocab_size x hidden_size matmul is real work":
        lambda cfg: C.forward_flops_per_token(cfg) - 2 * C.parameter_breakdown(cfg)["lm_head"],
}


def check_forward_flops_per_token(fn):
    cases = [(cfg,) for cfg in _configs() if not cfg.tie_word_embeddings]
    check_function(fn, _flops_reference, cases, name="forward_flops_per_token", mistakes=FLOP_MISTAKES)


# ---- Exercise 4: how many conversations fit -------------------------------------------


def _sequences_reference(cfg, gpu_bytes, context, bytes_per_element):
    weights = C.count_parameters(cfg) * bytes_per_element
    per_sequence = C.kv_cache_bytes_per_token(cfg, torch.float32) // 4 * bytes_per_element * context
    return max(0, (gpu_bytes - weights) // per_sequence)


SEQUENCE_MISTAKES = {
    "the weights take their share of the GPU first: only what they leave holds caches":
        lambda cfg, g, t, b: g // (C.kv_cache_bytes_per_token(cfg, torch.float32) // 4 * b * t),
    "a sequence of `context` tokens caches every one of its tokens: multiply the per-token bytes by the context":
        lambda cfg, g, t, b: max(0, (g - C.count_parameters(cfg) * b) // (C.kv_cache_bytes_per_token(
            cfg, torch.float32) // 4 * b)),
    "round down (//): a cache that does not fit whole does not fit":
        lambda cfg, g, t, b: max(0, -(-(g - C.count_parameters(cfg) * b) // (C.kv_cache_bytes_per_token(
            cfg, torch.float32) // 4 * b * t))),
    "when the weights alone do not fit, no sequence does: the answer is 0, not a negative number":
        lambda cfg, g, t, b: (g - C.count_parameters(cfg) * b) // (C.kv_cache_bytes_per_token(
            cfg, torch.float32) // 4 * b * t),
}


def check_sequences_that_fit(fn):
    gb = 10**9
    cases = [(C.PHI4, 80 * gb, 16384, 2), (C.PHI4, 80 * gb, 4096, 2), (C.PHI4, 40 * gb, 16384, 2),
             (C.PHI4, 24 * gb, 4096, 2), (C.PHI4, 141 * gb, 16384, 1), (C.scaled(), 10**8, 4096, 4),
             (C.scaled(d_model=64, n_layers=3, n_kv_heads=1), 5 * 10**6, 1000, 2)]
    check_function(fn, _sequences_reference, cases, name="sequences_that_fit", mistakes=SEQUENCE_MISTAKES)


# ---- Attention's own FLOPs, which grow with the context ------------------------------------------

def _attention_flops_reference(cfg, context):
    """FLOPs per token of the attention scores (q . k) and the weighted sum of values, over `context` keys."""
    return 4 * cfg.num_hidden_layers * cfg.num_attention_heads * C.head_dim(cfg) * context


ATTENTION_FLOP_MISTAKES = {
    "count both products: q . k for every key, and the pattern times V for every value (2 FLOPs per "
    "multiply-add each)": lambda cfg, t: 2 * cfg.num_hidden_layers * cfg.num_attention_heads * C.head_dim(cfg) * t,
    "every *query* head computes its own scores and its own weighted sum, so count the query heads; the KV heads "
    "only set how many keys and values are stored":
        lambda cfg, t: 4 * cfg.num_hidden_layers * cfg.num_key_value_heads * C.head_dim(cfg) * t,
    "every layer attends: multiply by num_hidden_layers":
        lambda cfg, t: 4 * cfg.num_attention_heads * C.head_dim(cfg) * t,
}


def check_attention_flops_per_token(fn):
    cases = [(cfg, t) for cfg in _configs() for t in (1, 4096, 16384)]
    check_function(fn, _attention_flops_reference, cases, name="attention_flops_per_token",
                   mistakes=ATTENTION_FLOP_MISTAKES)


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {
    "kv_cache_bytes_per_token": _kv_reference, "count_parameters": _params_reference,
    "forward_flops_per_token": _flops_reference, "sequences_that_fit": _sequences_reference,
    "attention_flops_per_token": _attention_flops_reference,
})
