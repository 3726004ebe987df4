# %% [markdown]
# # 00 · Welcome to phi4lab: Phi-4 by the numbers
#
# **phi4lab** is a workbench for looking inside Microsoft's **Phi-4**, a 14.7-billion-parameter open-weights (MIT) language model, and a course that uses it. This first notebook shows how to load a model and what Phi-4 costs: parameters, bytes, KV cache and FLOPs, all computed from its `config.json` by arithmetic you will write yourself.
#
# **Objectives.** By the end you can
# 1. load each kind of model phi4lab offers and run it with a cache of activations;
# 2. explain Phi-4's shape: 40 layers, d_model 5120, 40 query heads over 10 KV heads, a gated MLP 3.5x wide, a 100,352-token vocabulary;
# 3. compute its parameter count, memory in each precision, KV cache per token (with and without grouped-query attention) and forward FLOPs per token.
#
# **Prerequisites:** Python and a little PyTorch. **Run time:** under a minute on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5). Each is a function stub; the cell after it checks your answer against phi4lab's reference and tells you what is *probably* wrong. Hints sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import torch
import phi4lab
from phi4lab.model import config as C
from phi4lab.doctor import require

require()
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. What is in the box
#
# | module | what it is for |
# |---|---|
# | `phi4lab.config` | Phi-4's exact config and arithmetic on it (this notebook) |
# | `phi4lab.model.tokenizer` | the exact Phi-4 tokenizer, built offline from the cl100k_base ranks |
# | `phi4lab.load` | one entry point for every model; returns a TransformerLens `TransformerBridge` |
# | `phi4lab.model.memory` | a pre-flight that refuses work that cannot fit, before allocating |
# | `phi4lab.exercises` | the checks behind every exercise in the course |
# | `phi4lab doctor` | a command that reports versions, CPU, memory and reachable models |
#
# Three kinds of model load through `phi4lab.load`, all with Phi-4's architecture (`Phi3ForCausalLM` in Hugging Face):
#
# * **a random twin**: `phi4lab.load(config=phi4lab.config.scaled(...), seed=0)`, Phi-4's shape ratios at toy size, seeded;
# * **a local checkpoint**: `phi4lab.load("path/to/dir")`, from safetensors only;
# * **the real Phi-4**: `phi4lab.load("microsoft/phi-4", dtype=torch.bfloat16, device="cuda")` on a GPU with the weights in the Hugging Face cache;
# * and **phi4-tiny**, a small *trained* twin that ships with the course (`phi4lab.load()`).
#
# Let us build a random twin. `scaled()` keeps Phi-4's ratios (4 query heads per KV head, MLP 3.5x d_model, RoPE base 250,000) at toy size, and keeps the real 100,352-token vocabulary so the real tokenizer works.

# %%
cfg = C.scaled(d_model=128, n_layers=2, n_kv_heads=2)
print("twin: ", C.describe(cfg))
print("Phi-4:", C.describe(C.PHI4))
model = phi4lab.load(config=cfg, seed=0)
print(type(model).__name__, "wrapping", type(model.original_model).__name__)

# %% [markdown]
# The model is a TransformerLens `TransformerBridge` around the Hugging Face module, so the TransformerLens vocabulary works: `to_tokens`, `to_str_tokens`, `run_with_cache`, hook names like `blocks.0.attn.hook_pattern`. Its logits are Hugging Face's own (phi4lab's tests check them to 1e-4).
#
# Like Phi-4's Hugging Face tokenizer, phi4lab does **not** put a BOS token in front of your text; pass `prepend_bos=True` when you want `<|endoftext|>` (id 100257) first.

# %%
prompt = "Phi-4 has 40 layers."
print(model.to_str_tokens(prompt))
print(model.to_tokens(prompt).tolist(), "<- no BOS")
print(model.to_tokens(prompt, prepend_bos=True).tolist(), "<- with BOS")

logits, cache = model.run_with_cache(prompt)
print("logits", tuple(logits.shape), "= (batch, position, vocabulary)")
for name in ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"]:
    print(f"{name:28s} {tuple(cache[name].shape)}")

# %% [markdown]
# Look at the shapes: `hook_q` has 8 heads but `hook_k` only 2. That is **grouped-query attention** (GQA): each key/value head is shared by 4 query heads, exactly as in Phi-4 (40 query heads, 10 KV heads). The attention pattern still has one map per *query* head.
#
# A local checkpoint directory loads the same way. Here we save the twin as a Hugging Face checkpoint with `phi4lab.save` and load it back; phi4lab checks every tensor's name and shape against `config.json` before reading a byte, and refuses pickle (`.bin`) files, which can run code when loaded.

# %%
import tempfile
from pathlib import Path

folder = Path(tempfile.mkdtemp())
phi4lab.save(model, folder)
print(sorted(p.name for p in folder.iterdir()))
again = phi4lab.load(folder)
tokens = model.to_tokens(prompt)
print("same logits after the round trip:", torch.allclose(again(tokens), model(tokens)))

# %% [markdown]
# The real Phi-4 and phi4-tiny load by name. The cell below reports what this machine can reach and loads nothing big: loading `microsoft/phi-4` needs about 29 GB in bf16, and phi4lab refuses, before allocating anything, a model that cannot fit in free memory.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on the machine)
from phi4lab.doctor import phi4_reachability

for name, where in phi4_reachability().items():
    print(f"{name:16s} {where}")
# On a GPU with the weights cached, this is all it takes:
#   phi4 = phi4lab.load("microsoft/phi-4", dtype=torch.bfloat16, device="cuda")

# %% [markdown]
# ## 2. Phi-4 by the numbers
#
# Everything below follows from a handful of numbers in Phi-4's `config.json`:

# %%
P = C.PHI4
for field in ["num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings"]:
    print(f"{field:26s} {getattr(P, field)}")
print(f"{'head_dim (derived)':26s} {C.head_dim(P)}")
print(f"{'rope_theta':26s} {P.rope_parameters['rope_theta']}")


# %% [markdown]
# ### Exercise 1 · KV cache per token
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# When a model generates text it keeps, for every token so far, the key and value vectors of every layer, so that the next token can attend to them without recomputing. How many bytes does each token add?
#
# Write `kv_cache_bytes_per_token(cfg, bytes_per_element)`. Use `cfg.num_hidden_layers`, `cfg.num_key_value_heads` and `C.head_dim(cfg)`.
#
# <details><summary>Hint 1 (a nudge)</summary>Which of a layer's vectors does a later token need again: the queries, the keys, the values? And with grouped-query attention, how many heads of each does one token leave behind in one layer?</details>
# <details><summary>Hint 2 (the idea)</summary>Per layer and per key/value head, one key vector and one value vector of length head_dim are stored; query heads are not cached at all. Count those elements over all the layers, then turn elements into bytes.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>(K and V) × num_hidden_layers × num_key_value_heads × head_dim elements, times <code>bytes_per_element</code>; return an <code>int</code>.</details>

# %%
def kv_cache_bytes_per_token(cfg, bytes_per_element: int) -> int:
    """Bytes of K and V cache that one token adds, summed over all layers.

    cfg: a Phi3Config (use cfg.num_hidden_layers, cfg.num_key_value_heads, C.head_dim(cfg)).
    bytes_per_element: 2 for bf16/fp16, 4 for fp32.
    """
    # SOLUTION
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * C.head_dim(cfg) * bytes_per_element
    # END SOLUTION


# %% tags=["check"]
from phi4lab.exercises import welcome as checks

checks.check_kv_cache_bytes_per_token(kv_cache_bytes_per_token)
### BEGIN HIDDEN TESTS
held = C.scaled(d_model=160, n_layers=5, n_kv_heads=5, num_attention_heads=10, vocab_size=3000)
checks.held_out(kv_cache_bytes_per_token, [(held, 2), (held, 1)])
### END HIDDEN TESTS

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def kv_cache_bytes_per_token(cfg, bytes_per_element):
#     return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * C.head_dim(cfg) * bytes_per_element
# ```
# K and V (2) x layers x KV heads x head_dim x bytes. For Phi-4 in bf16: 2 x 40 x 10 x 128 x 2 = 204,800 bytes = 200 KiB per token.
# </details>

# %% [markdown]
# Why grouped-query attention? Compare Phi-4 with the same model if every query head had its own K and V.
#
# **Predict, then run.** Without grouped-query attention, each of the 40 query heads would have its own key and value head instead of sharing one of 10. How much bigger would each token's cache be?
#
# <details><summary>Answer (after running the next cell)</summary>Exactly 4 times: the cache holds one key and one value vector per KV head, and 40 KV heads are 4 times 10; 800 KiB per token instead of 200 KiB. The query heads cost nothing in the cache, whatever their number.</details>

# %%
no_gqa = C.scaled(hidden_size=5120, n_layers=40, num_attention_heads=40, num_key_value_heads=40)
for label, c in [("Phi-4 (10 KV heads)", C.PHI4), ("without GQA (40 KV heads)", no_gqa)]:
    per_token = C.kv_cache_bytes_per_token(c, torch.bfloat16)
    print(f"{label:26s} {per_token / 2**10:6.0f} KiB/token   "
          f"{4096 * per_token / 2**30:5.2f} GiB at 4,096 tokens   {16384 * per_token / 2**30:6.3f} GiB at 16,384")


# %% [markdown]
# At Phi-4's full 16K context one sequence's cache is 3.125 GiB; without GQA it would be 12.5 GiB, almost half the weights again, per sequence. The cache grows in a straight line with the context, and GQA makes the line four times less steep:

# %%
# NBVAL_IGNORE_OUTPUT
# (the picture of the numbers printed above; nbval compares the text, not the pixels)
import matplotlib.pyplot as plt
context = torch.arange(0, 16385, 256)
fig, ax = plt.subplots(figsize=(7, 3))
for label, c in [("Phi-4 (10 KV heads)", C.PHI4), ("without GQA (40 KV heads)", no_gqa)]:
    ax.plot(context, context * C.kv_cache_bytes_per_token(c, torch.bfloat16) / 2**30, label=label)
ax.axhline(C.weight_bytes(C.PHI4, torch.bfloat16) / 2**30, color="grey", ls=":", label="Phi-4's weights (bf16)")
ax.set_xlabel("context length (tokens)"); ax.set_ylabel("KV cache of one sequence (GiB)")
ax.set_title("KV cache in bf16 against context, up to Phi-4's 16K"); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ### Exercise 2 · Count Phi-4's parameters
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `count_parameters(cfg)` for any Phi-4-architecture config. The model has:
#
# * an embedding matrix, `vocab_size x hidden_size`;
# * per layer: a fused `qkv_proj` (Q, K, V stacked, no bias), an `o_proj`, a gated MLP whose `gate_up_proj` holds the gate and up projections and a `down_proj`, and two RMSNorm weight vectors;
# * a final RMSNorm, and an `lm_head` (`hidden_size x vocab_size`) unless `cfg.tie_word_embeddings` is True.
#
# <details><summary>Hint 1 (a nudge)</summary>Go matrix by matrix: a linear layer from n inputs to m outputs holds m × n weights (there are no biases). Which matrices does grouped-query attention make smaller, and which matrix is counted twice unless the embeddings are tied?</details>
# <details><summary>Hint 2 (the idea)</summary>qkv_proj maps hidden_size to num_attention_heads × head_dim outputs for Q plus num_key_value_heads × head_dim for each of K and V; o_proj maps the query heads' outputs back to hidden_size. gate_up_proj maps hidden_size to 2 × intermediate_size, down_proj maps intermediate_size back. Each RMSNorm holds hidden_size weights.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>With d = hidden_size, q = num_attention_heads × head_dim and kv = num_key_value_heads × head_dim: one layer holds d·(q + 2·kv) + q·d for attention, 3·d·intermediate_size for the MLP and 2·d for its norms. Add the embedding, the final norm's d, and an lm_head as large as the embedding unless <code>cfg.tie_word_embeddings</code>. For Phi-4 the answer is 14,659,507,200.</details>

# %%
def count_parameters(cfg) -> int:
    """Exact number of parameters of Phi3ForCausalLM(cfg): embeddings, every layer, final norm, lm_head."""
    # SOLUTION
    d, hd = cfg.hidden_size, C.head_dim(cfg)
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    attention = d * (q + 2 * kv) + q * d
    mlp = d * 2 * cfg.intermediate_size + cfg.intermediate_size * d
    norms = 2 * d
    embed = cfg.vocab_size * d
    lm_head = 0 if cfg.tie_word_embeddings else embed
    return embed + cfg.num_hidden_layers * (attention + mlp + norms) + d + lm_head
    # END SOLUTION


# %% tags=["check"]
checks.check_count_parameters(count_parameters)
### BEGIN HIDDEN TESTS
checks.held_out(count_parameters, [(C.scaled(d_model=160, n_layers=5, n_kv_heads=5, num_attention_heads=10, vocab_size=3000),), (C.scaled(d_model=96, n_layers=4, n_kv_heads=1, num_attention_heads=6, vocab_size=500),)])
### END HIDDEN TESTS
print(f"Phi-4: {count_parameters(C.PHI4):,} parameters")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# Per layer: attention 5120 x (5120 + 2 x 1280) + 5120 x 5120 = 65,536,000; MLP 5120 x 35,840 + 17,920 x 5120 = 275,251,200; norms 10,240. Times 40 layers, plus embedding and lm_head (513,802,240 each) and the final norm (5,120): 14,659,507,200.
# </details>

# %% [markdown]
# **Predict, then run.** Where do Phi-4's parameters live? Rank attention, the MLPs and the two vocabulary matrices (embedding and unembedding), and guess the MLP's share of each block.
#
# <details><summary>Answer (after running the next cell)</summary>The MLPs, by far: 81% of every block, because each holds three matrices of 5,120 × 17,920 while attention holds Q and O at 5,120 × 5,120 and K and V at a quarter of that (GQA). The two vocabulary matrices together are 7% of the model.</details>

# %%

parts = C.parameter_breakdown(C.PHI4)
total = sum(parts.values())
for name, n in parts.items():
    print(f"{name:13s} {n:>15,}  {n / total:6.1%}")
print(f"the MLP's share of each block: {parts['mlp'] / (parts['attention'] + parts['mlp']):.0%}; "
      f"the two vocabulary matrices' share of the model: {(parts['embed_tokens'] + parts['lm_head']) / total:.0%}")
fig, ax = plt.subplots(figsize=(7, 2.2))
left = 0
for name, n in parts.items():
    ax.barh(0, n / 1e9, left=left, label=name)
    left += n / 1e9
ax.set_xlabel("billions of parameters"); ax.set_yticks([]); ax.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
ax.set_title("Phi-4's 14.66 B parameters", pad=28)
plt.tight_layout(); plt.show()

# %% [markdown]
# A warning from the field: TransformerLens' model table lists Phi-4 with **15.2 B** parameters. Its formula gives every query head its own K and V and leaves out the embeddings. Your checker's diagnosis would have caught both.
#
# ### Bytes in each precision
#
# Parameters x bytes per element. Only the weights: activations, the KV cache and (for training) gradients and optimizer state come on top.

# %%
for dtype in [torch.float32, torch.bfloat16, torch.float16]:
    b = C.weight_bytes(C.PHI4, dtype)
    print(f"{str(dtype):15s} {C.dtype_bytes(dtype)} B/param   {b / 1e9:6.2f} GB = {b / 2**30:6.2f} GiB")


# %% [markdown]
# Phi-4 is published in bf16: 29.32 GB, 27.31 GiB. It fits on one 40 GB or 80 GB GPU, not on a laptop, which is why the course runs on Phi-4-shaped twins and moves to the real model only on a GPU.

# %% [markdown]
# ### Exercise 3 · How many conversations fit
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# A server holds the weights once and one KV cache per conversation. Write `sequences_that_fit(cfg, gpu_bytes, context, bytes_per_element)`: how many sequences of `context` tokens fit their caches on a GPU of `gpu_bytes` beside the weights, with weights and cache stored at `bytes_per_element`. Ignore activations and the allocator's overheads.
#
# <details><summary>Hint 1 (a nudge)</summary>What takes its share of the GPU before any conversation starts, and what is left after it? How much of that does one conversation of context tokens need?</details>
# <details><summary>Hint 2 (the idea)</summary>Subtract the weights' bytes (your count_parameters times bytes_per_element) from gpu_bytes; one sequence's cache is your per-token cache bytes times the context. Only whole caches count, and when the weights alone do not fit, no sequence does.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Divide what is left by one sequence's cache with <code>//</code>, and wrap it in <code>max(0, ...)</code>.</details>

# %%
def sequences_that_fit(cfg, gpu_bytes: int, context: int, bytes_per_element: int) -> int:
    """Whole sequences of `context` tokens whose KV caches fit in gpu_bytes beside the weights."""
    # SOLUTION
    left = gpu_bytes - count_parameters(cfg) * bytes_per_element
    per_sequence = kv_cache_bytes_per_token(cfg, bytes_per_element) * context
    return max(0, left // per_sequence)
    # END SOLUTION

# %% tags=["check"]
checks.check_sequences_that_fit(sequences_that_fit)
### BEGIN HIDDEN TESTS
checks.held_out(sequences_that_fit, [(C.scaled(d_model=160, n_layers=5, n_kv_heads=5, num_attention_heads=10, vocab_size=3000), 10**7, 512, 2), (C.PHI4, 100 * 10**9, 8192, 2)])
### END HIDDEN TESTS

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def sequences_that_fit(cfg, gpu_bytes, context, bytes_per_element):
#     left = gpu_bytes - count_parameters(cfg) * bytes_per_element
#     per_sequence = kv_cache_bytes_per_token(cfg, bytes_per_element) * context
#     return max(0, left // per_sequence)
# ```
# </details>

# %% [markdown]
# **Predict, then run.** An 80 GB GPU holds Phi-4's bf16 weights (29.3 GB) with room to spare. How many conversations of 16,384 tokens fit beside them? And without grouped-query attention?
#
# <details><summary>Answer (after running the next cell)</summary>15 with GQA, 3 without. Beside Phi-4's weights 50.7 GB are left, which hold its 3.4 GB cache 15 times (decimal GB here, as the GPU is sold; the 3.125 GiB above is the same cache in binary units). Without GQA each cache is 13.4 GB, and the weights grow a little too (K and V get as many heads as Q), so only 3 fit. At 4,096 tokens the counts are four times larger, give or take the rounding down. GQA is what lets one GPU serve a class rather than a handful.</details>

# %%
gpu = 80 * 10**9
for label, c in [("Phi-4 (10 KV heads)", C.PHI4), ("without GQA (40 KV heads)", no_gqa)]:
    fits = [sequences_that_fit(c, gpu, t, 2) for t in (16384, 4096)]
    print(f"{label:26s} on 80 GB in bf16: {fits[0]:3d} sequences of 16,384 tokens, {fits[1]:3d} of 4,096")
left = gpu - C.weight_bytes(C.PHI4, torch.bfloat16)
print(f"left after the weights: {left / 1e9:.1f} GB; one 16K cache: {16384 * C.kv_cache_bytes_per_token(C.PHI4, torch.bfloat16) / 1e9:.1f} GB "
      f"with GQA, {16384 * C.kv_cache_bytes_per_token(no_gqa, torch.bfloat16) / 1e9:.1f} GB without")

# %% [markdown]
# ### Exercise 4 · FLOPs per token
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# A matrix-vector product with an `m x n` weight matrix costs `m x n` multiply-adds, i.e. `2 x m x n` FLOPs. Ignoring the attention over previous tokens, a token's forward pass multiplies its vector by every linear layer once. Write `forward_flops_per_token(cfg)`. You may call your `count_parameters`, or `C.parameter_breakdown(cfg)`.
#
# <details><summary>Hint 1 (a nudge)</summary>Which of the model's parameters sit in a matrix that the token's vector is multiplied by? Which are only looked up, or used as elementwise scales?</details>
# <details><summary>Hint 2 (the idea)</summary>Every weight of a linear layer is one multiply-add for the token, so the FLOPs are twice the parameters of the linear layers: attention, the MLPs and lm_head. The embedding is a table lookup and the RMSNorm weights are elementwise scales: leave both out.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>parts = C.parameter_breakdown(cfg)</code> has the keys <code>"attention"</code>, <code>"mlp"</code> and <code>"lm_head"</code>; return twice their sum.</details>

# %%
def forward_flops_per_token(cfg) -> int:
    """FLOPs of every linear layer for one token (2 per multiply-add; attention over the context excluded)."""
    # SOLUTION
    parts = C.parameter_breakdown(cfg)
    return 2 * (parts["attention"] + parts["mlp"] + parts["lm_head"])
    # END SOLUTION


# %% tags=["check"]
checks.check_forward_flops_per_token(forward_flops_per_token)
### BEGIN HIDDEN TESTS
checks.held_out(forward_flops_per_token, [(C.scaled(d_model=160, n_layers=5, n_kv_heads=5, num_attention_heads=10, vocab_size=3000),), (C.scaled(d_model=96, n_layers=4, n_kv_heads=1, num_attention_heads=6, vocab_size=500),)])
### END HIDDEN TESTS
print(f"Phi-4: {forward_flops_per_token(C.PHI4) / 1e9:.1f} GFLOP per token")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# `2 x (attention + mlp + lm_head)` parameters: 2 x 14,145,290,240 = 28.3 GFLOP per token.
# </details>

# %% [markdown]
# That count leaves out the one part of the forward pass that grows with the context: each query head's scores against every earlier key, and its weighted sum of their values.
#
# ### Exercise 5 · Attention's own FLOPs
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Write `attention_flops_per_token(cfg, context)`: the FLOPs one new token spends on attention itself (not the projections counted above) when it attends to `context` tokens, summed over the layers.
#
# <details><summary>Hint 1 (a nudge)</summary>Per layer and per query head, the new token's query meets each of the context positions in two products of length head_dim: which two? Does GQA's sharing of keys and values save any of them?</details>
# <details><summary>Hint 2 (the idea)</summary>q · k for each key, then the pattern-weighted sum of the values: 2 × head_dim multiply-adds per position and query head, 2 FLOPs each. Every query head does its own, whatever GQA shares, in every layer.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>4 × num_hidden_layers × num_attention_heads × head_dim × context, with <code>C.head_dim(cfg)</code>.</details>

# %%
def attention_flops_per_token(cfg, context: int) -> int:
    """FLOPs of the scores and the weighted sum of values, for one token attending to `context` tokens."""
    # SOLUTION
    return 4 * cfg.num_hidden_layers * cfg.num_attention_heads * C.head_dim(cfg) * context
    # END SOLUTION

# %% tags=["check"]
checks.check_attention_flops_per_token(attention_flops_per_token)
### BEGIN HIDDEN TESTS
checks.held_out(attention_flops_per_token, [(C.scaled(d_model=160, n_layers=5, n_kv_heads=5, num_attention_heads=10, vocab_size=3000), 300), (C.PHI4, 2048)])
### END HIDDEN TESTS
for context in (4096, 16384):
    a = attention_flops_per_token(C.PHI4, context)
    print(f"Phi-4 at {context:6,d} tokens of context: attention {a / 1e9:4.1f} GFLOP, "
          f"{a / (a + forward_flops_per_token(C.PHI4)):.0%} of the token's forward FLOPs")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def attention_flops_per_token(cfg, context):
#     return 4 * cfg.num_hidden_layers * cfg.num_attention_heads * C.head_dim(cfg) * context
# ```
# </details>

# %% [markdown]
# With the usual rule of thumb that training costs about 3x the forward pass (forward plus a backward that is twice as expensive), Phi-4's pre-training on about 9.8 trillion tokens (the model card's figure) cost roughly:

# %%
tokens = 9.8e12
train_flops = 3 * C.forward_flops_per_token(C.PHI4) * tokens
print(f"~{train_flops:.2g} FLOP  (6 x N x D = {6 * C.count_parameters(C.PHI4) * tokens:.2g})")

# %% [markdown]
# ## Recap
#
# * `phi4lab.load` gives a TransformerLens `TransformerBridge` for a random twin, a local safetensors checkpoint, `microsoft/phi-4` or phi4-tiny; no BOS is prepended unless you ask.
# * Phi-4 has 14,659,507,200 parameters: 40 blocks of GQA attention (40 query / 10 KV heads of 128) and a gated SiLU MLP (81% of each block), plus untied 100,352-row embedding and unembedding.
# * In bf16 the weights are 29.3 GB; each token of context adds 200 KiB of KV cache (800 KiB without GQA), so an 80 GB GPU holds 15 conversations of 16K tokens beside the weights (3 without GQA); a token costs about 28.3 GFLOP forward.
#
# **Further reading:** the Phi-4 Technical Report (Abdin et al., 2024, arXiv:2412.08905), §3; Ainslie et al., *GQA* (2023); Kaplan et al., *Scaling Laws for Neural Language Models* (2020), for the 6ND rule. **Next:** `01_architecture.ipynb` builds each of these pieces from scratch.
