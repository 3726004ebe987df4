"""Phi-4 from scratch: every piece of the decoder, written to be read, matching Hugging Face.

Phi-4 is a decoder-only transformer: token ids become vectors (the embedding),
40 identical blocks refine them, and a final norm plus a linear map (the
unembedding) turn the last vectors into scores for the next token. Each block
is *pre-norm*: it normalises its input before each of its two sub-layers and
adds their output back to the residual stream,

    h   = x + attention(rms_norm(x))
    out = h + mlp(rms_norm(h))

Everything below mirrors Hugging Face's ``Phi3ForCausalLM`` (transformers'
``modeling_phi3.py``) one piece at a time, with the same parameter layout, so
that ``Phi4.from_hf(model)`` can take the weights of any Phi-3-architecture
checkpoint and produce the same logits (tests/test_architecture.py checks each
piece, and the whole model to 1e-4).

The details that are easy to get wrong, each one an exercise in notebook 01:

- **RMSNorm** divides by the root mean square (no mean subtraction, unlike
  LayerNorm), with epsilon inside the square root, computed in fp32, then
  multiplies by a learned weight.
- **Rotary embeddings** (RoPE) rotate pairs of query/key dimensions by an
  angle proportional to the position. Phi-4 uses the "rotate-half" layout
  (dimension i pairs with i + d/2, not with i + 1), rotates the whole head
  (Phi-4-mini only three quarters of it), and uses base theta = 250,000
  (Phi-3 used 10,000).
- **The fused QKV projection** holds the query rows first, then the key rows,
  then the value rows.
- **Grouped-query attention**: 40 query heads share 10 key/value heads, each
  KV head serving 4 *consecutive* query heads (``repeat_interleave``).
- **The gated MLP**: ``gate_up_proj`` holds the gate half first, then the up
  half; the output is ``down(silu(gate) * up)``.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from phi4lab.model import config as phi4config
from phi4lab.model.bridge import hf_param_name, unwrap

# ------------------------------------------------------------------ the pieces, as functions

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps), computed in fp32, returned in x's dtype."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angles: [len(positions), head_dim] each.

    Pair j (dimensions j and j + head_dim/2) turns by position * theta^(-2j/head_dim):
    fast for small j, very slowly for large j. Both halves repeat the same angles.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]          # [T, head_dim / 2]
    angles = torch.cat([angles, angles], dim=-1)                      # [T, head_dim]
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [batch, heads, T, head_dim] by the angles in cos/sin [T, head_dim]."""
    return x * cos + rotate_half(x) * sin


def apply_partial_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dimensions of each head and pass the rest through unchanged.

    Phi-4 rotates the whole head, so this is apply_rotary. Phi-4-mini rotates three quarters
    (partial_rotary_factor 0.75: 96 of 128 dimensions); the last quarter carries no position at
    all, which leaves some capacity for purely content-based matching.
    """
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return apply_rotary(x, cos, sin)
    return torch.cat([apply_rotary(x[..., :r], cos, sin), x[..., r:]], dim=-1)


def split_qkv(qkv: torch.Tensor, n_heads: int, n_kv_heads: int, head_dim: int):
    """The fused projection's output [batch, T, (H + 2 KV) * d] -> q [b, H, T, d], k and v [b, KV, T, d]."""
    q_size, kv_size = n_heads * head_dim, n_kv_heads * head_dim
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)          # Q rows first, then K, then V
    q = rearrange(q, "b t (h d) -> b h t d", h=n_heads)
    k = rearrange(k, "b t (h d) -> b h t d", h=n_kv_heads)
    v = rearrange(v, "b t (h d) -> b h t d", h=n_kv_heads)
    return q, k, v


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[b, KV, T, d] -> [b, KV * n_rep, T, d]: KV head g serves query heads g*n_rep .. g*n_rep + n_rep - 1."""
    return x.repeat_interleave(n_rep, dim=1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax(q k^T / sqrt(d) + causal mask) v, with K and V expanded for grouped-query attention.

    q [b, H, T, d]; k, v [b, KV, T, d] -> [b, H, T, d]. The softmax runs in fp32.
    """
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    T = q.shape[-2]
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    pattern = scores.float().softmax(dim=-1).to(q.dtype)
    return pattern @ v


def gated_mlp(x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    """down(silu(gate) * up), with gate and up stacked in one matrix, gate first."""
    gate, up = F.linear(x, gate_up_weight).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down_weight)


# The functions the modules below call, by name. ``using`` swaps in other versions of them.
PIECES = ("rms_norm", "rotary_cos_sin", "apply_rotary", "split_qkv", "repeat_kv", "causal_attention", "gated_mlp")


@contextmanager
def using(**pieces):
    """Run the modules below with your own versions of the pieces, then put ours back.

    The modules look the functions up by name in this module each time they run,
    so inside ``with using(rms_norm=my_rms_norm, causal_attention=my_attention):``
    every ``Phi4``, ``Block``, ``Attention``, ``MLP`` and ``RMSNorm`` computes with
    yours: notebook 01 compares the model built from the learner's own pieces with
    Hugging Face this way. The originals come back even if the body raises.
    """
    unknown = sorted(set(pieces) - set(PIECES))
    if unknown:
        raise KeyError(f"no piece called {', '.join(unknown)}; the pieces are {', '.join(PIECES)}")
    not_callable = sorted(name for name, fn in pieces.items() if not callable(fn))
    if not_callable:
        raise TypeError(f"{', '.join(not_callable)} must be functions")
    module = globals()
    saved = {name: module[name] for name in pieces}
    module.update(pieces)
    try:
        yield
    finally:
        module.update(saved)


# ------------------------------------------------------------------ the model, as modules

class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.qkv_proj = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = split_qkv(self.qkv_proj(x), self.n_heads, self.n_kv_heads, self.head_dim)
        q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        z = causal_attention(q, k, v)                                  # [b, H, T, d]
        return self.o_proj(rearrange(z, "b h t d -> b t (h d)"))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(d_model, 2 * d_mlp, bias=False)
        self.down_proj = nn.Linear(d_mlp, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_mlp(x, self.gate_up_proj.weight, self.down_proj.weight)


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d_model)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Block(nn.Module):
    """Pre-norm: normalise, transform, add back; twice."""

    def __init__(self, cfg):
        super().__init__()
        d, hd = cfg.hidden_size, phi4config.head_dim(cfg)
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.self_attn = Attention(d, cfg.num_attention_heads, cfg.num_key_value_heads, hd)
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.mlp = MLP(d, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Phi4(nn.Module):
    """The whole decoder. Parameter names follow Hugging Face's, minus the ``model.`` prefix."""

    def __init__(self, cfg):
        super().__init__()
        rope = rope_parameters(cfg)
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope type {rope['rope_type']!r} (e.g. LongRoPE) is not implemented here; Phi-4 has none")
        self.cfg, self.theta = cfg, rope["rope_theta"]
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[-1]
        if T > self.cfg.max_position_embeddings:
            raise ValueError(f"{T} tokens exceed the context of {self.cfg.max_position_embeddings}")
        # The angles are those of a head of rotary_dim dimensions (head_dim unless the rotary is partial).
        cos, sin = rotary_cos_sin(torch.arange(T, device=tokens.device), phi4config.rotary_dim(self.cfg), self.theta)
        x = self.embed_tokens(tokens)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for block in self.layers:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))

    @classmethod
    def from_hf(cls, hf_model) -> "Phi4":
        """Copy the weights of a Hugging Face Phi3ForCausalLM (or a phi4lab bridge around one)."""
        hf_model = unwrap(hf_model)
        model = cls(hf_model.config)
        state = {}
        for name, tensor in hf_model.state_dict().items():
            name = hf_param_name(name)                               # names as seen through a bridge
            if name.startswith("model."):
                name = name[len("model."):]
            state[name] = tensor
        if hf_model.config.tie_word_embeddings and "lm_head.weight" not in state:
            state["lm_head.weight"] = state["embed_tokens.weight"]
        ours = model.state_dict()
        wanted = {k: state[k] for k in ours if k in state}
        missing = sorted(set(ours) - set(wanted))
        if missing:
            raise KeyError(f"the Hugging Face model lacks {missing[:5]}{'...' if len(missing) > 5 else ''}")
        model.load_state_dict(wanted)
        return model.to(next(hf_model.parameters()).dtype).eval()


def rope_parameters(cfg) -> dict:
    """RoPE settings: transformers 5 keeps them in cfg.rope_parameters, older versions in fields."""
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    params.setdefault("rope_theta", getattr(cfg, "rope_theta", 10_000.0))
    params.setdefault("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0))
    return params
