# %% [markdown]
# # 01 · Architecture: build Phi-4 from scratch, and match Hugging Face
#
# Phi-4 is 14.7 billion numbers arranged by a short recipe. In this notebook you write that recipe yourself, piece by piece: the normalisation, the rotary position embeddings, grouped-query attention, the gated MLP, the block, and the whole decoder. Each piece is checked against the Hugging Face `Phi3ForCausalLM` module it mirrors, and at the end your model loads a real checkpoint and produces the same logits to within 1e-4.
#
# **Objectives.** By the end you can
# 1. name every tensor in Phi-4 and say what it does, and count its parameters and memory;
# 2. implement RMSNorm, rotary embeddings (rotate-half, θ = 250,000), the fused QKV split, grouped-query attention with a causal mask, the gated SiLU MLP and the pre-norm block;
# 3. assemble them into a decoder that reproduces Hugging Face's logits on a real checkpoint;
# 4. compare Phi-4 with Phi-3-mini, Phi-3-medium and Phi-4-mini, and explain what GQA buys;
# 5. separate what the Phi-4 technical report states from what is often said about it;
# 6. sample the next token as Hugging Face's `generate` does (temperature, top-k, top-p), and generate with a KV cache you write, token for token the same as `generate` with the same seed.
#
# **Prerequisites:** notebook 00. **Run time:** about 20 seconds on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import torch
import torch.nn.functional as F
from einops import rearrange

import phi4lab
from phi4lab.scratch import architecture as A
from phi4lab.model import config as C
from phi4lab.doctor import require
from phi4lab.exercises import architecture as checks
from phi4lab.model.loading import random_hf_model

require()
_ = torch.manual_seed(0)
_ = torch.set_grad_enabled(False)  # we build and compare; nothing here trains

# %% [markdown]
# ## 1. What is in the box
#
# A Phi-3-architecture model with Phi-4's proportions, small enough to print. Every module you are about to write appears here:

# %%
twin_cfg = C.scaled(d_model=64, n_layers=2)
hf = random_hf_model(twin_cfg, seed=0)
print(hf)
print()
for name, p in list(hf.named_parameters())[:8]:
    print(f"{name:45s} {tuple(p.shape)}")

# %% [markdown]
# Read it against the real Phi-4 (`phi4lab.config.PHI4`, the published `config.json`): 40 blocks, d_model 5,120, 40 query heads and 10 key/value heads of 128 dimensions, an MLP of 17,920, a vocabulary of 100,352. The fused `qkv_proj` has 5,120 + 2 × 1,280 = 7,680 output rows, and `gate_up_proj` 2 × 17,920. The Phi family side by side, computed from each model's config (`phi4lab.config.FAMILY`):

# %%
print(f"{'':16s} {'layers':>6s} {'d_model':>7s} {'Q/KV heads':>10s} {'d_head':>6s} {'d_mlp':>6s} {'vocab':>7s} {'RoPE θ':>8s} "
      f"{'params':>15s} {'bf16 GB':>7s} {'KV KiB/token':>12s}")
for name, cfg in C.FAMILY.items():
    print(f"{name:16s} {cfg.num_hidden_layers:6d} {cfg.hidden_size:7d} {cfg.num_attention_heads:>5d}/{cfg.num_key_value_heads:<4d} "
          f"{C.head_dim(cfg):6d} {cfg.intermediate_size:6d} {cfg.vocab_size:7d} {cfg.rope_parameters['rope_theta']:8.0f} "
          f"{C.count_parameters(cfg):15,d} {C.weight_bytes(cfg) / 1e9:7.2f} {C.kv_cache_bytes_per_token(cfg) / 1024:12.0f}")
print()
print(f"{'':16s} {'context':>8s} {'attention':>22s} {'rotated dims':>12s} {'embeddings':>11s}")
for name, cfg in C.FAMILY.items():
    window = cfg.sliding_window
    attention = "full" if window is None or window >= cfg.max_position_embeddings else f"sliding window {window:,}"
    print(f"{name:16s} {cfg.max_position_embeddings:8,d} {attention:>22s} {C.rotary_dim(cfg):>5d} of {C.head_dim(cfg):<4d} "
          f"{'tied' if cfg.tie_word_embeddings else 'untied':>11s}")

# %% [markdown]
# The second table holds the differences the shapes hide. Phi-3's models attend through a **sliding window** (`sliding_window` in their configs): each query sees only the most recent keys, about 2K of them, so a fact further back can reach it only through earlier layers. Phi-4 attends to its whole context. Phi-4-mini rotates only three quarters of each head's dimensions (`partial_rotary_factor`; the rest carry no position at all), and **ties** its embeddings: the unembedding is the embedding matrix, transposed, which saves one vocabulary-sized matrix, the largest single matrix of a 200K-token model. Its config also stretches RoPE for long contexts (LongRoPE, `rope_scaling`); phi4lab's from-scratch model refuses that kind of RoPE, as Phi-4 has none.
#
# Phi-4 is Phi-3-medium's shape with a bigger vocabulary: the technical report says its architecture "closely follows phi-3-medium, except that we now use the tiktoken tokenizer ... with a padded vocabulary size of 100,352 ... and we use full attention over the 4K context length, rather than a 2K sliding window" (Abdin et al. 2024, p. 7). The difference in parameters is exactly the larger embedding and unembedding:

# %%
extra = C.count_parameters(C.FAMILY["phi-4"]) - C.count_parameters(C.FAMILY["phi-3-medium-4k"])
print(f"{extra:,} more parameters = 2 x (100,352 - 32,064) x 5,120 = {2 * (100_352 - 32_064) * 5120:,}")


# %% [markdown]
# **What the report does and does not say.** Descriptions of Phi-4 often mention several model sizes, "tuned multi-head attention" and a LARS optimizer. The report describes **one** model, "a decoder-only transformer architecture with 14B parameters" (14,659,507,200 by the count above), pretrained "for approximately 10T tokens using linear warm-up and decay schedules with peak learning rate of 0.0003, constant weight decay of 0.1, and global batch size of 5760". It does **not** name the optimizer, and it says nothing about LARS. The attention is grouped-query (40 query heads over 10 key/value heads), which comes from `config.json`, not from the report; the number of layers (40) comes from there too. Phi-4-mini is a separate 3.8B model with its own report and an o200k-style tokenizer of 200,064 ids.
#
# ## 2. RMSNorm
#
# Before each sub-layer, Phi-4 rescales every token's vector to a fixed root-mean-square size, then multiplies each dimension by a learned weight:
#
# $$\text{RMSNorm}(x) = w \odot \frac{x}{\sqrt{\tfrac{1}{d}\sum_i x_i^2 + \epsilon}}$$
#
# Unlike LayerNorm it does not subtract the mean and has no bias. Hugging Face computes it in fp32 even when the model runs in bf16: squaring bf16 numbers and averaging thousands of them loses too many digits.

# %% [markdown]
# ### Exercise 1 · RMSNorm
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `rms_norm(x, weight, eps)`: Phi-4's normalisation of the last dimension, as the formula above defines it, computed the way Hugging Face computes it (in fp32, the result returned in `x`'s dtype before the learned weight is applied).
#
# <details><summary>Hint 1 (a nudge)</summary>Where does epsilon go: inside the square root, or beside it? And over which dimension is the mean taken?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>x32 = x.float()</code>; <code>torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)</code> is 1/RMS; multiply, convert with <code>.to(x.dtype)</code>, then multiply by <code>weight</code>.</details>

# %%
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    '''weight * x / sqrt(mean(x^2) + eps), computed in fp32, returned in x's dtype.'''
    # SOLUTION
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)
    # END SOLUTION


# %% tags=["check"]
checks.check_rms_norm(rms_norm)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def rms_norm(x, weight, eps):
#     x32 = x.float()
#     normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
#     return weight * normed.to(x.dtype)
# ```
# </details>

# %% [markdown]
# ## 3. Rotary position embeddings
#
# Attention by itself does not know the order of the tokens. Phi-4 tells it by **rotating** each query and key: the head's dimensions are split into pairs, and pair *j* of the vector at position *m* is turned by the angle *m·θ_j*, with θ_j = 250,000^(−2j/d_head). Rotating both the query (at *m*) and the key (at *n*) makes their dot product depend on *m − n* only, so attention sees *relative* position. Small *j* turns fast (fine position), large *j* slowly (coarse position). Phi-4 raised the base from Phi-3's 10,000 to 250,000, which slows the slow pairs further, for its 16K context.
#
# Phi-4 uses the **rotate-half** layout: dimension *j* pairs with *j + d_head/2*, not with *j + 1*.

# %% [markdown]
# ### Exercise 2 · Rotary angles
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `rotary_cos_sin(positions, head_dim, theta)` returning `(cos, sin)`, each `[len(positions), head_dim]`: the cosines and sines of every position's rotation angles, laid out for the rotate-half pairing, so that `apply_rotary` (next) can multiply them element-wise with a query or key.
#
# <details><summary>Hint 1 (a nudge)</summary>How many distinct angles does one position have? In the rotate-half layout, which two dimensions share pair j's angle?</details>
# <details><summary>Hint 2 (the idea)</summary>Pair j turns by position × θ^(−2j/head_dim), for j = 0 … head_dim/2 − 1; dimensions j and j + head_dim/2 share it, so both halves of the last dimension hold the same angles.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>inv_freq = 1 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)</code>; an outer product with the positions; <code>torch.cat([a, a], -1)</code>.</details>

# %%
def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float):
    '''(cos, sin) of every position's rotary angles, [T, head_dim] each, rotate-half layout.'''
    # SOLUTION
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()
    # END SOLUTION


# %% tags=["check"]
checks.check_rotary_cos_sin(rotary_cos_sin)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def rotary_cos_sin(positions, head_dim, theta):
#     inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
#     angles = positions.float()[:, None] * inv_freq[None, :]
#     angles = torch.cat([angles, angles], dim=-1)
#     return angles.cos(), angles.sin()
# ```
# </details>

# %% [markdown]
# ### Exercise 3 · Applying the rotation
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `apply_rotary(x, cos, sin)` for `x` `[batch, heads, T, head_dim]` and the angles of Exercise 2: turn each pair (j, j + head_dim/2) of every vector by its angle, in the rotate-half layout.
#
# <details><summary>Hint 1 (a nudge)</summary>A 2-D rotation of (a, b) by θ is (a cos θ − b sin θ, b cos θ + a sin θ). With the halves x1 and x2 of the last dimension as the a's and the b's, what must be multiplied by sin?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>With <code>rotate_half(x) = (−x2, x1)</code>, the rotated vector is <code>x * cos + rotate_half(x) * sin</code>.</details>

# %%
def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    '''Rotate-half RoPE: x * cos + rotate_half(x) * sin.'''
    # SOLUTION
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin
    # END SOLUTION


# %% tags=["check"]
checks.check_apply_rotary(apply_rotary)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def apply_rotary(x, cos, sin):
#     half = x.shape[-1] // 2
#     rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
#     return x * cos + rotated * sin
# ```
# </details>

# %% [markdown]
# The promise of RoPE, checked with your functions: the same query and key vectors placed at positions (m, n) give the same dot product as at (m + 100, n + 100).

# %%
q, k = torch.randn(1, 1, 1, 128), torch.randn(1, 1, 1, 128)
def score(m, n):
    cos, sin = rotary_cos_sin(torch.tensor([m, n]), 128, 250_000.0)
    return (apply_rotary(q, cos[:1], sin[:1]) * apply_rotary(k, cos[1:], sin[1:])).sum().item()
for m, n in ((7, 3), (107, 103), (5007, 5003), (7, 6)):
    print(f"query at {m:5d}, key at {n:5d} (distance {m - n}): score {score(m, n):+.4f}")


# %% [markdown]
# **Predict, then run.** A pair that turns less than once over the whole context gives every position a different angle: it can tell positions far apart. Phi-3 used θ = 10,000 over a context of 4,096 tokens; Phi-4 uses θ = 250,000 over 16,384. Of the 64 pairs of a 128-dimensional head, will more or fewer turn less than once across Phi-4's context than across Phi-3's?
#
# <details><summary>Answer (after running the next cell)</summary>More, though the context is four times longer. A pair's wavelength, the number of positions it takes to turn once, is 2π θ^(2j/d): a larger θ lengthens every wavelength except pair 0's, the slowest pairs' most. The printout counts the pairs on each side of each context. That is why Phi-4's midtraining raised the base when it extended the context to 16K: the slow pairs stay slow enough to keep far positions apart, where a small base would make them wrap around and confuse distances.</details>

# %%
import matplotlib.pyplot as plt
import math

pairs = torch.arange(64)
models = ((10_000.0, 4096, "Phi-3 (θ 10,000)"), (250_000.0, 16384, "Phi-4 (θ 250,000)"))
wavelengths = {label: 2 * math.pi * theta ** (2 * pairs.double() / 128) for theta, _, label in models}
for theta, context, label in models:
    slow = int((wavelengths[label] > context).sum())
    print(f"{label:18s} longest wavelength {wavelengths[label][-1].item():>12,.0f} tokens; "
          f"pairs turning less than once in {context:,} tokens: {slow} of 64")

# %%
# NBVAL_IGNORE_OUTPUT
# (a picture of the numbers printed above)
fig, ax = plt.subplots(figsize=(7, 3))
for theta, context, label in models:
    ax.semilogy(pairs, wavelengths[label], label=label)
    ax.axhline(context, ls=":", color=ax.lines[-1].get_color(), lw=1)
ax.set_xlabel("dimension pair j (d_head 128)"); ax.set_ylabel("wavelength (tokens)")
ax.set_title("RoPE wavelengths; dotted: each model's context"); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 4. Attention with grouped queries
#
# One linear layer, `qkv_proj`, computes the queries, keys and values of all heads at once. Its output rows are, in order, the 40 query heads, the 10 key heads, the 10 value heads. After splitting and rotating, each group of 4 consecutive query heads shares one key/value head. The scores are scaled by 1/√d_head, the future is masked, the softmax runs over the keys in fp32, and the weighted sum of values is projected back by `o_proj`.

# %% [markdown]
# ### Exercise 4 · Split the fused projection
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `split_qkv(qkv, n_heads, n_kv_heads, head_dim)`: from `[batch, T, (n_heads + 2·n_kv_heads)·head_dim]` return `q` `[batch, n_heads, T, head_dim]` and `k`, `v` `[batch, n_kv_heads, T, head_dim]`.
#
# <details><summary>Hint 1 (a nudge)</summary>In what order do the query, key and value columns sit along the last dimension, and how wide is each part? Within one part, are one head's head_dim values next to each other?</details>
# <details><summary>Hint 2 (the idea)</summary>Cut the last dimension into n_heads·head_dim, n_kv_heads·head_dim and n_kv_heads·head_dim values (Q, then K, then V). Unflatten each part into (heads, head_dim), head first, and move the head axis in front of T.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>qkv.split([q_size, kv_size, kv_size], dim=-1)</code>, then <code>rearrange(t, "b t (h d) -> b h t d", h=...)</code> on each part.</details>

# %%
def split_qkv(qkv: torch.Tensor, n_heads: int, n_kv_heads: int, head_dim: int):
    '''[b, T, (H + 2 KV) * d] -> q [b, H, T, d], k [b, KV, T, d], v [b, KV, T, d].'''
    # SOLUTION
    q, k, v = qkv.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=-1)
    return (rearrange(q, "b t (h d) -> b h t d", h=n_heads),
            rearrange(k, "b t (h d) -> b h t d", h=n_kv_heads),
            rearrange(v, "b t (h d) -> b h t d", h=n_kv_heads))
    # END SOLUTION


# %% tags=["check"]
checks.check_split_qkv(split_qkv)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def split_qkv(qkv, n_heads, n_kv_heads, head_dim):
#     q, k, v = qkv.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=-1)
#     return (rearrange(q, "b t (h d) -> b h t d", h=n_heads),
#             rearrange(k, "b t (h d) -> b h t d", h=n_kv_heads),
#             rearrange(v, "b t (h d) -> b h t d", h=n_kv_heads))
# ```
# </details>

# %% [markdown]
# ### Exercise 5 · repeat_kv
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `repeat_kv(x, n_rep)`: `[b, KV, T, d]` → `[b, KV·n_rep, T, d]`, where key/value head *g* is repeated for query heads *g·n_rep* … *g·n_rep + n_rep − 1*.
#
# <details><summary>Hint 1 (a nudge)</summary>Should one key/value head's copies sit next to each other, or should the whole set of key/value heads be repeated one set after another? Along which axis?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Consecutive copies along the head axis: <code>repeat_interleave(n_rep, dim=1)</code>. (<code>repeat</code> would deal the heads out in turn, which is the other layout.)</details>

# %%
def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    '''Expand key/value heads to one per query head (consecutive groups).'''
    # SOLUTION
    return x.repeat_interleave(n_rep, dim=1)
    # END SOLUTION


# %% tags=["check"]
checks.check_repeat_kv(repeat_kv)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def repeat_kv(x, n_rep):
#     return x.repeat_interleave(n_rep, dim=1)
# ```
#
# Hugging Face writes it with `expand` and `reshape`, which avoids a copy until the matmul; the result is the same.
# </details>

# %% [markdown]
# ### Exercise 6 · Causal attention
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 15 minutes
#
# Write `causal_attention(q, k, v)` for `q` `[b, H, T, d]` and `k`, `v` `[b, KV, T, d]`: every query head's attention over the keys of its own key/value head, no query seeing a later key, with the softmax in fp32 as Hugging Face computes it. Return the weighted values `[b, H, T, d]`.
#
# <details><summary>Hint 1 (a nudge)</summary>Each query head needs its group's keys and values: how do you give K and V as many heads as Q? What scale keeps the scores' size independent of d? Which scores must the causal mask remove?</details>
# <details><summary>Hint 2 (the idea)</summary>Expand K and V with your repeat_kv, by H / KV. The scores q kᵀ / √d are [b, H, T, T] (query, key); give every key that comes after its query the score −∞, take the softmax over the keys in fp32, cast back to q's dtype, and weight the values with it.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>scores = q kᵀ / √d; fill the entries above the diagonal (key after query) with −∞, <code>torch.ones(T, T, dtype=torch.bool).triu(1)</code>; <code>scores.float().softmax(-1).to(q.dtype) @ v</code>.</details>

# %%
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    '''softmax(q k^T / sqrt(d) + causal mask) v, with grouped-query attention.'''
    # SOLUTION
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    T = q.shape[-2]
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return scores.float().softmax(dim=-1).to(q.dtype) @ v
    # END SOLUTION


# %% tags=["check"]
checks.check_causal_attention(causal_attention)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def causal_attention(q, k, v):
#     n_rep = q.shape[1] // k.shape[1]
#     k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
#     scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
#     T = q.shape[-2]
#     scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
#     return scores.float().softmax(dim=-1).to(q.dtype) @ v
# ```
# </details>

# %% [markdown]
# ## 5. The gated MLP
#
# Each block's MLP widens the vector from 5,120 to 17,920 dimensions twice, once for a **gate** and once for an **up** projection, multiplies them after passing the gate through SiLU (x·sigmoid(x)), and projects back down. Phi-4 stores gate and up in one matrix, `gate_up_proj`, gate first.

# %% [markdown]
# ### Exercise 7 · Gated SiLU MLP
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `gated_mlp(x, gate_up_weight, down_weight)`, Phi-4's MLP as the paragraph above describes it, with the fused `gate_up_proj` weight and the `down_proj` weight, using `F.linear`.
#
# <details><summary>Hint 1 (a nudge)</summary>One matmul with the fused weight gives both halves; which half goes through SiLU?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>gate, up = F.linear(x, gate_up_weight).chunk(2, dim=-1)</code>; then <code>down(silu(gate) * up)</code>.</details>

# %%
def gated_mlp(x: torch.Tensor, gate_up_weight: torch.Tensor, down_weight: torch.Tensor) -> torch.Tensor:
    '''down(silu(gate) * up); gate_up_weight holds the gate rows, then the up rows.'''
    # SOLUTION
    gate, up = F.linear(x, gate_up_weight).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down_weight)
    # END SOLUTION


# %% tags=["check"]
checks.check_gated_mlp(gated_mlp)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def gated_mlp(x, gate_up_weight, down_weight):
#     gate, up = F.linear(x, gate_up_weight).chunk(2, dim=-1)
#     return F.linear(F.silu(gate) * up, down_weight)
# ```
# </details>

# %% [markdown]
# ## 6. The block
#
# A block adds two things to the residual stream: what attention computes from a normalised copy of it, then what the MLP computes from a normalised copy of the result.
#
# ```
#  x ──────────────┬──────────────────────────(+)──── h ──────────────┬───────────────────────────(+)──── out
#                  │                            ▲                     │                             ▲
#                  └─ input_layernorm ─ self_attn (qkv_proj → split → RoPE → GQA → o_proj)          │
#                                                                     └─ post_attention_layernorm ─ mlp (gate_up_proj → silu(gate)·up → down_proj)
# ```
#
# The line along the top is the **residual stream**: every sub-layer reads a normalised copy of it and adds its output back, so nothing a layer writes is ever overwritten, only added to. Notebooks 05 and 06 read and edit this stream with hooks. `phi4lab.scratch.architecture.Block` holds the four pieces (`input_layernorm`, `self_attn`, `post_attention_layernorm`, `mlp`) with Hugging Face's parameter names. Its modules call phi4lab's own versions of the functions you just wrote (`A.rms_norm`, `A.split_qkv`, `A.apply_rotary`, `A.causal_attention`, `A.gated_mlp`); in section 7, `A.using(...)` swaps yours in, so that the model compared with Hugging Face runs your code.

# %% [markdown]
# ### Exercise 8 · The pre-norm block
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `block_forward(x, layer, cos, sin)`: the output of one pre-norm block for the residual stream `x` `[batch, T, d_model]`, same shape, built from the block's four pieces `layer.input_layernorm`, `layer.self_attn(h, cos, sin)`, `layer.post_attention_layernorm` and `layer.mlp`.
#
# <details><summary>Hint 1 (a nudge)</summary>In a pre-norm block, does a sub-layer read the stream or a normalised copy of it? And is its output added to the normalised copy or to the stream?</details>
# <details><summary>Hint 2 (the idea)</summary>Two residual steps, attention first: each sub-layer reads its own norm of the current stream, and its output is added to the un-normalised stream. The MLP's step starts from the stream as attention left it.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>h = x + layer.self_attn(layer.input_layernorm(x), cos, sin)</code>; the MLP's step does the same to <code>h</code> with <code>post_attention_layernorm</code> and <code>mlp</code>.</details>

# %%
def block_forward(x: torch.Tensor, layer: A.Block, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    '''The output of one pre-norm block: the residual stream after attention and the MLP have added to it.'''
    # SOLUTION
    h = x + layer.self_attn(layer.input_layernorm(x), cos, sin)
    return h + layer.mlp(layer.post_attention_layernorm(h))
    # END SOLUTION


# %% tags=["check"]
checks.check_block(block_forward)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def block_forward(x, layer, cos, sin):
#     h = x + layer.self_attn(layer.input_layernorm(x), cos, sin)
#     return h + layer.mlp(layer.post_attention_layernorm(h))
# ```
# </details>

# %% [markdown]
# ## 7. The whole model, on a real checkpoint
#
# `A.Phi4.from_hf(model)` builds the from-scratch module tree and copies a Hugging Face model's weights into it by name. The forward pass is yours.

# %% [markdown]
# ### Exercise 9 · The forward pass
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `forward(model, tokens)`: the logits `[batch, T, vocab]` of the from-scratch model for `tokens` `[batch, T]`, computed with your `rotary_cos_sin` and `block_forward`. The model's parts are `model.embed_tokens`, `model.layers`, `model.norm` and `model.lm_head`; `C.head_dim(model.cfg)` and `model.theta` are the rotary angles' head size and base.
#
# <details><summary>Hint 1 (a nudge)</summary>Which positions do the tokens have, and does any layer need different rotary angles from another? What has to happen to the last block's output before the unembedding?</details>
# <details><summary>Hint 2 (the idea)</summary>Compute cos and sin once, for positions 0 … T−1, and pass the same pair to every block. Embed the tokens, run the blocks in order with block_forward, then apply the final norm and the unembedding.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>cos, sin = rotary_cos_sin(torch.arange(tokens.shape[-1]), C.head_dim(model.cfg), model.theta)</code>; <code>x = model.embed_tokens(tokens)</code>; <code>x = block_forward(x, layer, cos, sin)</code> for each <code>layer</code> in <code>model.layers</code>; <code>model.lm_head(model.norm(x))</code>.</details>

# %%
def forward(model: A.Phi4, tokens: torch.Tensor) -> torch.Tensor:
    '''Logits of the from-scratch model, using your pieces.'''
    # SOLUTION
    cos, sin = rotary_cos_sin(torch.arange(tokens.shape[-1]), C.head_dim(model.cfg), model.theta)
    x = model.embed_tokens(tokens)
    for layer in model.layers:
        x = block_forward(x, layer, cos, sin)
    return model.lm_head(model.norm(x))
    # END SOLUTION


# %% tags=["check"]
checks.check_forward(forward)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def forward(model, tokens):
#     cos, sin = rotary_cos_sin(torch.arange(tokens.shape[-1]), C.head_dim(model.cfg), model.theta)
#     x = model.embed_tokens(tokens)
#     for layer in model.layers:
#         x = block_forward(x, layer, cos, sin)
#     return model.lm_head(model.norm(x))
# ```
# </details>

# %% [markdown]
# Now a trained checkpoint: phi4-tiny, loaded from its safetensors file in `data/phi4-tiny` by Hugging Face, its weights copied into the from-scratch model, and both run on the same Shakespeare. Inside `A.using(...)` every block computes with *your* `rms_norm`, `split_qkv`, `apply_rotary`, `causal_attention` (with your `repeat_kv`) and `gated_mlp`, and your `forward` and `block_forward` drive them: of phi4lab's code, only the linear layers and the few lines of `Attention.forward` that join your pieces and merge the heads are left on the path. The gap is printed as a bound, not as its exact size: the last digits of a float sum depend on the CPU's vector instructions, and the claim is that it stays below 1e-4.

# %%
tiny_bridge = phi4lab.load("phi4-tiny")
scratch = A.Phi4.from_hf(tiny_bridge)
tokens = tiny_bridge.to_tokens("ROMEO. But soft, what light through yonder window breaks? It is the east")
yours = dict(rms_norm=rms_norm, split_qkv=split_qkv, apply_rotary=apply_rotary,
             causal_attention=causal_attention, gated_mlp=gated_mlp)
with torch.no_grad(), A.using(**yours):
    ours = forward(scratch, tokens)
    theirs = tiny_bridge(tokens)
gap = (ours - theirs).abs().max().item()
assert gap < 1e-4, f"your model's logits differ from Hugging Face's by {gap:.2e}"
print(f"{tokens.shape[1]} tokens through {len(yours)} of your functions in every block; "
      f"largest logit difference from Hugging Face below 1e-4: {gap < 1e-4}")
print("same next-token choice at every position:", bool((ours.argmax(-1) == theirs.argmax(-1)).all()))

# %%
# NBVAL_IGNORE_OUTPUT
# Your model, writing Python: greedy decoding, one token at a time (phi4-tiny has 3.5M parameters;
# it has learned the look of the standard library, not its meaning).
ids = tiny_bridge.to_tokens("    def __init__(self, name):\n        self.name = name\n")
for _ in range(30):
    ids = torch.cat([ids, forward(scratch, ids)[:, -1:].argmax(-1)], dim=1)
print(tiny_bridge.tokenizer.decode(ids[0]))

# %% [markdown]
# ## 8. Why grouped-query attention
#
# When a model generates, it keeps every layer's keys and values for every earlier token (the **KV cache**), so that each new token costs one step instead of a re-run of the whole prompt. Per token that is 2 (K and V) × layers × KV heads × d_head numbers. With as many KV heads as query heads, Phi-4 would keep 4x more:

# %%
import copy
mha = copy.deepcopy(C.PHI4)
mha.num_key_value_heads = mha.num_attention_heads
for label, cfg in (("Phi-4 (40 query / 10 KV heads)", C.PHI4), ("same, 40 KV heads (plain MHA)", mha)):
    per_token = C.kv_cache_bytes_per_token(cfg)
    print(f"{label:32s} {per_token / 1024:6.0f} KiB per token in bf16; 16K tokens: {per_token * 16384 / 2**30:5.1f} GiB")
print(f"parameters saved by sharing K and V: {C.count_parameters(mha) - C.count_parameters(C.PHI4):,}")

# %% [markdown]
# At Phi-4's full 16K context, one sequence's cache falls from 12.5 GiB to 3.1 GiB: the difference between one conversation and four on the same GPU. The cost, as notebook 05 shows, is that the 4 query heads of a group must find what they need in the same keys and values.

# %% [markdown]
# ## 9. Generating text: sampling and the KV cache
#
# A language model gives a distribution over the next token; generating text means choosing one, appending it, and asking again. `argmax` (greedy decoding, as in section 7) is one choice. Chat models sample instead, reshaping the distribution first with three knobs that Hugging Face's `generate(do_sample=True, temperature=..., top_k=..., top_p=...)` applies in this order:
#
# * **temperature** sharpens (below 1) or flattens (above 1) the distribution;
# * **top-k** keeps the k most likely tokens;
# * **top-p** (nucleus sampling, Holtzman et al. 2020) keeps the fewest most likely tokens whose probabilities add up to at least p.
#
# Then it draws one token with `torch.multinomial`. Write the first part yourself, and your model will sample exactly what `generate` samples, from the same seed.

# %% [markdown]
# ### Exercise 10 · The sampling distribution
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 20 minutes
#
# Write `sampling_probs(logits, temperature, top_k, top_p)`: from logits `[batch, vocab]`, the probabilities `[batch, vocab]` that `generate(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p)` draws from. `top_k=0` and `top_p=1.0` switch those filters off. A filtered token has probability exactly 0.
#
# <details><summary>Hint 1 (a nudge)</summary>Work on the logits, in the order the list above gives, and turn them into probabilities only at the end. What value can a logit take so that its probability is exactly 0?</details>
# <details><summary>Hint 2 (the idea)</summary>Give a filtered token the logit −∞. For top-p, sort the tokens by probability and add up the probabilities; the token that crosses p stays in, since without it the kept tokens would add up to less than p.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>torch.topk(scores, top_k).values[..., -1:]</code> is the k-th largest logit; drop what lies below it. For top-p, Hugging Face sorts in <i>ascending</i> order and drops the tokens whose cumulative probability is <code>&lt;= 1 - top_p</code>; <code>scatter</code> puts the sorted mask back in vocabulary order.</details>

# %%
def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    '''The next-token distribution after temperature, top-k (0: off) and top-p (1.0: off), as generate() samples it.'''
    # SOLUTION
    scores = logits.float() / temperature
    if top_k:
        kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(-1)                    # ascending, as Hugging Face does
        drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False                                     # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return scores.softmax(-1)
    # END SOLUTION


# %% tags=["check"]
checks.check_sampling_probs(sampling_probs)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def sampling_probs(logits, temperature, top_k, top_p):
#     scores = logits.float() / temperature
#     if top_k:
#         kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[..., -1:]
#         scores = scores.masked_fill(scores < kth, float("-inf"))
#     if top_p < 1.0:
#         sorted_scores, order = scores.sort(-1)
#         drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - top_p
#         drop[..., -1] = False
#         scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
#     return scores.softmax(-1)
# ```
#
# Dividing by a temperature of 1 changes nothing, so no test is needed for it. Summing the sorted probabilities from the *least* likely up, and dropping what stays at or below 1 − p, keeps exactly the tokens whose probabilities from the top add up to at least p. In floating point the two directions can disagree on a token right at the line, which is why the reference is Hugging Face's own `TopPLogitsWarper`.
# </details>

# %% [markdown]
# **Predict, then run.** With `top_p=0.9`, how many of phi4-tiny's 4,096 tokens stay in the running after a line of *Romeo and Juliet*, at temperature 0.7, 1.0 and 1.5? And after the first line of a Python method?
#
# <details><summary>Answer (after running the next cell)</summary>After the verse, a dozen at 0.7, hundreds at 1.0, more than a thousand at 1.5: temperature changes how many tokens share the top 90% of the mass, and top-p's cut follows. After the code line, one token at every temperature, the run of spaces that indents the method's body: phi4-tiny is sure of it, and a sure model is nearly deterministic whatever the knobs say. Top-p adapts to the model's confidence; top-k keeps k tokens whatever it is.</details>

# %%
for text in ("ROMEO. But soft, what light through yonder window breaks? It is the", "    def __init__(self, name):\n"):
    last = tiny_bridge(tiny_bridge.to_tokens(text))[:, -1]
    kept = [int((sampling_probs(last, t, 0, 0.9) > 0).sum()) for t in (0.7, 1.0, 1.5)]
    top = tiny_bridge.tokenizer.decode(last.argmax(-1))
    print(f"{text!r:75s} tokens kept at temperature 0.7 / 1.0 / 1.5: {kept[0]} / {kept[1]} / {kept[2]}; "
          f"the most likely: {top!r}")

# %% [markdown]
# ### The KV cache
#
# Each new token needs attention over every earlier token, and the earlier tokens' keys and values never change: position 7's key depends only on the tokens up to 7. So a generator keeps every layer's keys and values (the **KV cache** of section 8), runs only the new token through the model, and attends from its query to the whole cache. The first call, the **prefill**, runs the whole prompt at once and fills the cache.
#
# ### Exercise 11 · Attention with a KV cache
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵🔵🔵 · about 30 minutes
#
# Write `cached_attention(attn, x, past, theta)`, one attention layer of a model that generates with a cache. `attn` is a from-scratch `A.Attention` (its `qkv_proj`, `o_proj`, `n_heads`, `n_kv_heads`, `head_dim`); `x` is `[batch, T_new, d_model]`, the normalised residual stream of the *new* tokens only; `past` is `None` on the first call, after that the `(k, v)` pair you returned last time, each `[batch, n_kv_heads, T_past, head_dim]`. Return the layer's output for the new tokens, `[batch, T_new, d_model]`, and the new `(k, v)` holding all T_past + T_new positions. The check runs a prefill of 5 tokens, then 3 at once, then one at a time, and compares the logits with the model run on all 11 tokens at once; it also compares your cache with the one Hugging Face keeps. Use your `split_qkv`, `rotary_cos_sin`, `apply_rotary` and `repeat_kv`.
#
# <details><summary>Hint 1 (a nudge)</summary>Where in the sequence are the new tokens? Everything that depends on position (the rotation, the mask) must use their real positions.</details>
# <details><summary>Hint 2 (the idea)</summary>The new tokens are positions T_past … T_past + T_new − 1. Rotate their queries and keys by those positions' angles, append the rotated keys and the values to the cache, and attend from the new queries to all T_past + T_new keys. Query i may see keys up to position T_past + i: the mask is no longer square.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>rotary_cos_sin(torch.arange(T_past, T_past + T_new), head_dim, theta)</code>; <code>k = torch.cat([past_k, k], dim=2)</code>; the scores are <code>[b, H, T_new, T_past + T_new]</code>; mask them with <code>torch.ones(T_new, T_past + T_new, dtype=torch.bool).triu(T_past + 1)</code>; cache <code>k</code> and <code>v</code> before <code>repeat_kv</code>.</details>

# %%
def cached_attention(attn: A.Attention, x: torch.Tensor, past, theta: float):
    '''Attention for the new tokens over the cache and themselves; returns (output, (k, v) including them).'''
    # SOLUTION
    T_past = 0 if past is None else past[0].shape[2]
    T_new = x.shape[1]
    q, k, v = split_qkv(attn.qkv_proj(x), attn.n_heads, attn.n_kv_heads, attn.head_dim)
    cos, sin = rotary_cos_sin(torch.arange(T_past, T_past + T_new), attn.head_dim, theta)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
    n_rep = attn.n_heads // attn.n_kv_heads
    scores = q @ repeat_kv(k, n_rep).transpose(-1, -2) / attn.head_dim ** 0.5
    future = torch.ones(T_new, T_past + T_new, dtype=torch.bool).triu(T_past + 1)
    pattern = scores.masked_fill(future, float("-inf")).float().softmax(-1).to(q.dtype)
    z = pattern @ repeat_kv(v, n_rep)
    return attn.o_proj(rearrange(z, "b h t d -> b t (h d)")), (k, v)
    # END SOLUTION


# %% tags=["check"]
checks.check_cached_attention(cached_attention)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def cached_attention(attn, x, past, theta):
#     T_past = 0 if past is None else past[0].shape[2]
#     T_new = x.shape[1]
#     q, k, v = split_qkv(attn.qkv_proj(x), attn.n_heads, attn.n_kv_heads, attn.head_dim)
#     cos, sin = rotary_cos_sin(torch.arange(T_past, T_past + T_new), attn.head_dim, theta)
#     q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
#     if past is not None:
#         k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
#     n_rep = attn.n_heads // attn.n_kv_heads
#     scores = q @ repeat_kv(k, n_rep).transpose(-1, -2) / attn.head_dim ** 0.5
#     future = torch.ones(T_new, T_past + T_new, dtype=torch.bool).triu(T_past + 1)
#     pattern = scores.masked_fill(future, float("-inf")).float().softmax(-1).to(q.dtype)
#     z = pattern @ repeat_kv(v, n_rep)
#     return attn.o_proj(rearrange(z, "b h t d -> b t (h d)")), (k, v)
# ```
#
# The cache holds the keys *after* the rotation, each at its own position's angle, so they are never rotated again. And it holds the 2 key/value heads per layer, not the 8 copies `repeat_kv` makes: that is where grouped-query attention's 4x saving (section 8) comes from.
# </details>

# %% [markdown]
# A whole model with a cache is the forward pass of section 7 with your cached attention in every block. Read it, then use it:

# %%
def forward_cached(model: A.Phi4, tokens: torch.Tensor, caches: list) -> torch.Tensor:
    '''Logits for `tokens`, the positions after those in `caches` (one (k, v) or None per layer, updated in place).'''
    x = model.embed_tokens(tokens)
    for i, layer in enumerate(model.layers):
        h, caches[i] = cached_attention(layer.self_attn, layer.input_layernorm(x), caches[i], model.theta)
        x = x + h
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.norm(x))

# %% [markdown]
# ### Exercise 12 · Generate
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 15 minutes
#
# Write `generate(model, prompt, max_new_tokens, temperature, top_k, top_p, use_cache)`: return the prompt's ids `[1, T]` followed by `max_new_tokens` sampled ones. With `use_cache=True`, run the prompt once through `forward_cached` and then one new token at a time; with `use_cache=False`, run the whole sequence through `forward(model, ids)` at every step. Either way, the tokens must be exactly those of Hugging Face's `generate(do_sample=True, ...)` after the same `torch.manual_seed`: draw each one with `torch.multinomial(probs, 1)`, one draw per token.
#
# <details><summary>Hint 1 (a nudge)</summary>Which position's logits predict the next token? And what does the cached model need as its input on the next step: the whole sequence, or less?</details>
# <details><summary>Hint 2 (the idea)</summary>Keep a list of caches, one <code>None</code> per layer, for <code>forward_cached</code>. Each step: take the logits at the last position, <code>sampling_probs</code>, <code>torch.multinomial</code>, append the token; then the cached model reads only that token, the uncached one the whole sequence.</details>

# %%
def generate(model: A.Phi4, prompt: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int,
             top_p: float, use_cache: bool = True) -> torch.Tensor:
    '''The prompt's ids followed by max_new_tokens sampled as generate(do_sample=True) samples them.'''
    # SOLUTION
    ids, caches = prompt, [None] * len(model.layers)
    logits = forward_cached(model, ids, caches) if use_cache else forward(model, ids)
    for step in range(max_new_tokens):
        token = torch.multinomial(sampling_probs(logits[:, -1], temperature, top_k, top_p), 1)
        ids = torch.cat([ids, token], dim=1)
        if step + 1 < max_new_tokens:
            logits = forward_cached(model, token, caches) if use_cache else forward(model, ids)
    return ids
    # END SOLUTION


# %% tags=["check"]
checks.check_generate(generate)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def generate(model, prompt, max_new_tokens, temperature, top_k, top_p, use_cache=True):
#     ids, caches = prompt, [None] * len(model.layers)
#     logits = forward_cached(model, ids, caches) if use_cache else forward(model, ids)
#     for step in range(max_new_tokens):
#         token = torch.multinomial(sampling_probs(logits[:, -1], temperature, top_k, top_p), 1)
#         ids = torch.cat([ids, token], dim=1)
#         if step + 1 < max_new_tokens:
#             logits = forward_cached(model, token, caches) if use_cache else forward(model, ids)
#     return ids
# ```
# </details>

# %% [markdown]
# Now phi4-tiny, generating through your code end to end: your pieces inside every block, your cached attention, your sampler. Hugging Face's `generate` runs its own code on the same weights, from the same seed.

# %%
from phi4lab.model.bridge import unwrap

prompt = tiny_bridge.to_tokens("ROMEO. But soft, what light through yonder window breaks? It is the")
hf_tiny = unwrap(tiny_bridge)                    # the Hugging Face model inside the bridge
settings = dict(temperature=0.8, top_k=50, top_p=0.95)
with torch.no_grad(), A.using(**yours):
    torch.manual_seed(1)
    ours = generate(scratch, prompt, 40, use_cache=True, **settings)
theirs = checks.hf_generate(hf_tiny, prompt, 40, seed=1, **settings)
print("40 sampled tokens, token for token the same as Hugging Face's generate with the same seed:", torch.equal(ours, theirs))
print(tiny_bridge.tokenizer.decode(ours[0]))

# %% [markdown]
# **Predict, then run.** Generate 300 tokens after this prompt, with the cache and without. Which is faster, and does the gap stay the same along the way, or grow?
#
# <details><summary>Answer (after running the next cell)</summary>The cache wins, and the gap grows with the length. Without it, step n runs all n tokens through every layer again, so the total work grows with the square of the length; with it, each step runs one token and only its attention reads the n cached keys. The second half of the run gains more than the first, as the printout shows on this machine. On a GPU the prefill is cheap and each cached step is bound by reading the weights and the cache from memory, which is why a smaller cache (GQA, section 8) means more conversations at once.</details>

# %%
# NBVAL_IGNORE_OUTPUT
# (timings depend on the machine)
import time

def seconds(use_cache: bool, n: int) -> float:
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad(), A.using(**yours):
        generate(scratch, prompt, n, 1.0, 0, 1.0, use_cache=use_cache)
    return time.perf_counter() - start

for n in (150, 300):
    cached, uncached = seconds(True, n), seconds(False, n)
    print(f"{n} new tokens: with the cache {cached:5.2f} s, without {uncached:5.2f} s, {uncached / cached:4.1f}x faster")

# %% [markdown]
# ## Recap
#
# * Phi-4 = embedding, 40 pre-norm blocks, final RMSNorm, untied unembedding; 14,659,507,200 parameters, Phi-3-medium's shape with a 100,352-id vocabulary.
# * RMSNorm: divide by the root mean square (epsilon inside the root), in fp32, times a learned weight; no mean, no bias.
# * RoPE: rotate-half pairs (j, j + d/2), angles position × 250,000^(−2j/d); the dot product depends on relative position only.
# * Attention: fused QKV rows in the order Q, K, V; 4 consecutive query heads per KV head (`repeat_interleave`); scale, causal mask, fp32 softmax.
# * MLP: `down(silu(gate) * up)`, gate first in `gate_up_proj`.
# * GQA cuts the KV cache by 4x. The report states one 14B model, its schedule and data; it names no optimizer and no LARS.
# * Sampling: temperature, then top-k, then top-p (the token that crosses p stays), softmax, one `torch.multinomial` draw; with the same seed your generator and Hugging Face's agree token for token.
# * The KV cache: new tokens rotated at their real positions, rotated keys and plain values appended per KV head, an offset causal mask; generation's cost then grows with the length instead of its square.
#
# **Further reading.** Abdin et al. 2024, *Phi-4 Technical Report* (arXiv:2412.08905), §3; Zhang and Sennrich 2019, *Root Mean Square Layer Normalization*; Su et al. 2021, *RoFormer* (rotary embeddings); Shazeer 2020, *GLU Variants Improve Transformer*; Ainslie et al. 2023, *GQA*; Holtzman et al. 2020, *The Curious Case of Neural Text Degeneration* (top-p); transformers' `modeling_phi3.py` and `generation/logits_process.py`. **Next:** notebook 02, how Phi-4 turns text into the token ids this model reads.
