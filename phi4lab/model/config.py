"""Phi-4 by the numbers.

Phi-4 is a `Phi3ForCausalLM`: a decoder-only transformer whose shape is fixed by a
handful of numbers in its `config.json`. Everything a learner wants to know about
its cost (how many parameters, how many bytes of weights, how big the KV cache
grows, how many FLOPs a token costs) follows from those numbers by arithmetic, so
this module computes them *without building a model*.

Where the numbers come from: `PHI4` is `microsoft/phi-4`'s config.json as published
(40 layers, d_model 5120, 40 query heads over 10 KV heads, d_mlp 17920, vocab
100,352, RoPE theta 250,000, RMSNorm eps 1e-5, untied embeddings). head_dim is not
in the file: Hugging Face derives it as hidden_size // num_attention_heads = 128.

`scaled()` builds small configs with Phi-4's *shape ratios* (4 query heads per KV
head, d_mlp = 3.5 x d_model, the same RoPE base and norm), so that a model small
enough for a laptop CPU exercises exactly the same code paths as the real one.
"""

from __future__ import annotations

import torch
from transformers import Phi3Config

# --------------------------------------------------------------------------------------
# The real thing
# --------------------------------------------------------------------------------------

# Verbatim fields of microsoft/phi-4's config.json (first Hub upload, transformers 4.47).
# bos = eos = pad = 100257 there; the *tokenizer* later moved EOS to <|im_end|> and PAD
# to <|dummy_85|> (see phi4lab.model.tokenizer).
PHI4_CONFIG_JSON = {
    "architectures": ["Phi3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 100257,
    "embd_pdrop": 0.0,
    "eos_token_id": 100257,
    "hidden_act": "silu",
    "hidden_size": 5120,
    "initializer_range": 0.02,
    "intermediate_size": 17920,
    "max_position_embeddings": 16384,
    "model_type": "phi3",
    "num_attention_heads": 40,
    "num_hidden_layers": 40,
    "num_key_value_heads": 10,
    "original_max_position_embeddings": 16384,
    "pad_token_id": 100257,
    "resid_pdrop": 0.0,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 250000,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 100352,
}


def _phi3_config(fields: dict) -> Phi3Config:
    fields = {k: v for k, v in fields.items() if k not in ("architectures", "model_type", "torch_dtype")}
    cfg = Phi3Config(**fields)
    cfg.architectures = ["Phi3ForCausalLM"]
    return cfg


PHI4: Phi3Config = _phi3_config(PHI4_CONFIG_JSON)

# The Phi family side by side: the shape fields of each model's config.json on the
# Hugging Face Hub (microsoft/Phi-3-mini-4k-instruct, Phi-3-medium-4k-instruct, phi-4,
# Phi-4-mini-instruct). Only what changes the shape or the attention is kept.
_FAMILY_FIELDS = {
    "phi-3-mini-4k": dict(num_hidden_layers=32, hidden_size=3072, intermediate_size=8192, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                          rope_theta=10000.0, sliding_window=2047, tie_word_embeddings=False),
    "phi-3-medium-4k": dict(num_hidden_layers=40, hidden_size=5120, intermediate_size=17920, num_attention_heads=40,
                            num_key_value_heads=10, vocab_size=32064, max_position_embeddings=4096,
                            rope_theta=10000.0, sliding_window=2047, tie_word_embeddings=False),
    "phi-4": {k: PHI4_CONFIG_JSON[k] for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                               "num_attention_heads", "num_key_value_heads", "vocab_size",
                                               "max_position_embeddings", "rope_theta", "sliding_window",
                                               "tie_word_embeddings")},
    "phi-4-mini": dict(num_hidden_layers=32, hidden_size=3072, intermediate_size=8192, num_attention_heads=24,
                       num_key_value_heads=8, vocab_size=200064, max_position_embeddings=131072,
                       rope_theta=10000.0, sliding_window=262144, tie_word_embeddings=True,
                       partial_rotary_factor=0.75),
}
FAMILY: dict[str, Phi3Config] = {name: Phi3Config(**fields) for name, fields in _FAMILY_FIELDS.items()}

# Phi-4's shape ratios, kept by scaled().
QUERY_HEADS_PER_KV_HEAD = 4  # 40 / 10: grouped-query attention
MLP_RATIO = 3.5  # 17920 / 5120
PHI4_VOCAB_SIZE = 100352  # 100,256 cl100k ranks + 96 added ids


# --------------------------------------------------------------------------------------
# Small twins with the same shape
# --------------------------------------------------------------------------------------

# Phi3Config fields a caller may override by name.
_FIELDS = {
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "partial_rotary_factor",
}


def scaled(
    d_model: int = 128,
    n_layers: int = 2,
    n_kv_heads: int = 2,
    **overrides,
) -> Phi3Config:
    """A small Phi-4-architecture config that keeps Phi-4's ratios.

    With the defaults: 2 layers, d_model 128, 8 query heads over 2 KV heads
    (head_dim 16), d_mlp 448, Phi-4's vocabulary (so the real tokenizer works),
    RoPE theta 250,000, RMSNorm eps 1e-5, untied embeddings, context 512.

    Any `Phi3Config` field can be overridden by name, which is how tests build
    deliberately odd shapes (one KV head, as many KV heads as query heads, ...):

        scaled(d_model=64, n_kv_heads=1)
        scaled(num_attention_heads=4, num_key_value_heads=4)
    """
    unknown = set(overrides) - _FIELDS
    if unknown:
        raise TypeError(f"scaled() got unknown field(s) {sorted(unknown)}; allowed: {sorted(_FIELDS)}")
    n_heads = overrides.get("num_attention_heads", QUERY_HEADS_PER_KV_HEAD * n_kv_heads)
    n_kv = overrides.get("num_key_value_heads", n_kv_heads)
    hidden = overrides.get("hidden_size", d_model)
    head_dim = overrides.get("head_dim", hidden // n_heads if hidden % n_heads == 0 else None)
    if head_dim is None:
        raise ValueError(
            f"hidden_size {hidden} is not divisible by {n_heads} heads; pass head_dim= explicitly"
        )
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for rotary embeddings (rotate-half), got {head_dim}")
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot be shared evenly by {n_kv} KV heads")
    fields = dict(PHI4_CONFIG_JSON)
    fields.update(
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv,
        intermediate_size=round(MLP_RATIO * hidden),
        max_position_embeddings=512,
        original_max_position_embeddings=512,
        torch_dtype="float32",
    )
    fields.update(overrides)
    for special in ("bos_token_id", "eos_token_id", "pad_token_id"):
        # Phi-4's special ids only exist in Phi-4's vocabulary.
        if special not in overrides and fields[special] is not None and fields[special] >= fields["vocab_size"]:
            fields[special] = None
    fields["original_max_position_embeddings"] = fields["max_position_embeddings"]
    if head_dim * n_heads != hidden:
        fields["head_dim"] = head_dim
    return _phi3_config(fields)


# --------------------------------------------------------------------------------------
# Arithmetic: nothing here allocates a tensor
# --------------------------------------------------------------------------------------


def head_dim(cfg: Phi3Config) -> int:
    """Hugging Face's rule: an explicit head_dim wins, else hidden_size // n_heads."""
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def rotary_dim(cfg: Phi3Config) -> int:
    """How many dimensions of each head RoPE rotates: all of them in Phi-4, three quarters in Phi-4-mini.

    Hugging Face's rule: int(head_dim x partial_rotary_factor); the rest of the head passes unrotated.
    transformers 5 keeps the factor in cfg.rope_parameters, older versions in a field of its own.
    """
    factor = (getattr(cfg, "rope_parameters", None) or {}).get("partial_rotary_factor",
                                                                getattr(cfg, "partial_rotary_factor", 1.0))
    return int(head_dim(cfg) * (1.0 if factor is None else factor))


def parameter_breakdown(cfg: Phi3Config) -> dict[str, int]:
    """Parameters per tensor family, in the order they appear in the model."""
    d, L, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = head_dim(cfg)
    q_out = cfg.num_attention_heads * hd
    kv_out = cfg.num_key_value_heads * hd
    per_layer_attn = d * (q_out + 2 * kv_out) + q_out * d  # fused qkv_proj + o_proj, no biases
    per_layer_mlp = d * 2 * cfg.intermediate_size + cfg.intermediate_size * d  # gate_up_proj + down_proj
    per_layer_norm = 2 * d  # input_layernorm + post_attention_layernorm
    return {
        "embed_tokens": V * d,
        "attention": L * per_layer_attn,
        "mlp": L * per_layer_mlp,
        "norms": L * per_layer_norm + d,  # + the final norm
        "lm_head": 0 if cfg.tie_word_embeddings else V * d,
    }


def count_parameters(cfg: Phi3Config) -> int:
    """Exact parameter count of `Phi3ForCausalLM(cfg)`: 14,659,507,200 for Phi-4."""
    return sum(parameter_breakdown(cfg).values())


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element: 4 for fp32, 2 for bf16/fp16, 1 for fp8."""
    return torch.empty((), dtype=dtype).element_size()


def weight_bytes(cfg: Phi3Config, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes the weights occupy in `dtype` (29.32 GB for Phi-4 in bf16)."""
    return count_parameters(cfg) * dtype_bytes(dtype)


def kv_cache_bytes_per_token(cfg: Phi3Config, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of KV cache each token adds during generation.

    One K and one V vector per layer per *KV* head: this is where grouped-query
    attention pays off (Phi-4 keeps 10 KV heads for 40 query heads, 4x less cache).
    """
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim(cfg) * dtype_bytes(dtype)


def forward_flops_per_token(cfg: Phi3Config, context: int = 0) -> int:
    """Forward-pass FLOPs for one token (a multiply-add counts as 2 FLOPs).

    The dominant term is 2 x (weights of every linear layer, lm_head included;
    the embedding lookup is free). With `context` > 0, add the attention work of
    a token that attends to `context` earlier positions: QK^T and pattern x V,
    each 2 x n_heads x head_dim FLOPs per position per layer.
    """
    parts = parameter_breakdown(cfg)
    linear = parts["attention"] + parts["mlp"] + (parts["lm_head"] or parts["embed_tokens"])
    attention = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim(cfg) * context
    return 2 * linear + attention


def describe(cfg: Phi3Config) -> str:
    """One line with the shape that matters."""
    return (
        f"{cfg.num_hidden_layers} layers, d_model {cfg.hidden_size}, "
        f"{cfg.num_attention_heads} query / {cfg.num_key_value_heads} KV heads x {head_dim(cfg)}, "
        f"d_mlp {cfg.intermediate_size}, vocab {cfg.vocab_size}, "
        f"{count_parameters(cfg):,} parameters"
    )
