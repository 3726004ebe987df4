# %% [markdown]
# # 10 · Circuits from the weights: phi4-tiny's induction circuit, opened
#
# Notebook 05 found previous-token heads in phi4-tiny's layer 2 and induction heads in its layer 3; notebook 06 showed by patching that the copied token's identity reaches the last position through layer-3 attention. Both read *activations* on prompts we chose. This notebook reads the **weights**: what each head can do, whatever the prompt, and which heads are wired to which. Then it goes back to activations to test what the weights suggest, path by path, over a dataset of prompt pairs.
#
# Phi-4's architecture makes this new ground. The textbook recipes (Elhage et al. 2021, *A Mathematical Framework for Transformer Circuits*) assume learned absolute positions and one key and value per query head. Phi-4 rotates queries and keys by their positions (RoPE), so *where* a head looks is not in any single matrix; and it shares each key/value head among 4 query heads (GQA), so composition into keys and values is a property of a *group* of heads.
#
# **Objectives.** By the end you can
# 1. split a logit into each head's direct contribution;
# 2. compute a head's full OV circuit and its copying score without forming a vocabulary-squared matrix, and say why the token embedding alone can give the wrong sign;
# 3. read a previous-token head's preferred offset from W_Q, W_K and the rotation;
# 4. compute K-composition per key/value group, and say where phi4lab's scores differ from TransformerLens' and why;
# 5. test a path (sender head → receiver's keys) with path patching, first where the answer is known, then on phi4-tiny;
# 6. patch over a dataset with confidence intervals, and compare attribution patching with activation patching cell by cell.
#
# **Prerequisites:** notebooks 05 and 06. **Run time:** about a minute on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import matplotlib.pyplot as plt
import torch
from transformer_lens import patching

import phi4lab
from phi4lab.analysis import circuits, planted, sweep
from phi4lab.analysis.path_patching import path_patch, path_patch_senders
from phi4lab.doctor import require
from phi4lab.exercises import circuits as checks
from phi4lab.model import config as phi4config

require()
_ = torch.manual_seed(0)
torch.set_grad_enabled(False)     # weights and interventions; attribution patching turns gradients on itself
model = phi4lab.load("phi4-tiny")
toy = planted.planted_model()

def signed(x, digits=1):
    return round(float(x), digits) + 0.0         # + 0.0 turns -0.0 into 0.0

def share(x):
    return f"{signed(x, 2):.0%}"     # notebook 05's hand-built model: its circuit is known
print(f"phi4-tiny: {model.cfg.n_layers} layers, {model.cfg.n_heads} query heads over "
      f"{model.cfg.n_key_value_heads} key/value heads, d_head {model.cfg.d_head}")

# %% [markdown]
# ## 1. The behaviour, and which heads write it
#
# The behaviour is notebook 06's: in-context copying. A prompt holds a span of random tokens and then its first tokens again; after the repeat, the model should predict the token that followed in the first copy (A, at position 6). The corrupted prompt puts another token B at position 6. The metric is logit(A) − logit(B) at the last position, over 16 pairs. `sweep.logit_difference` builds it in the form every tool below takes: logits of the last position for many runs at once, one value per prompt.

# %%
n_ordinary = model.cfg.d_vocab - 5                 # the 5 specials sit at the end of the vocabulary
g = torch.Generator().manual_seed(6)
n_pairs, span, shown = 16, 12, 6
spans = torch.randint(n_ordinary, (n_pairs, span), generator=g)
clean = torch.cat([spans, spans[:, :shown]], dim=1)             # the span, then its first 6 tokens again
answer = spans[:, shown]                                         # A, at position 6
other = (answer + 1 + torch.randint(n_ordinary - 1, (n_pairs,), generator=g)) % n_ordinary   # B, never A
corrupt = clean.clone()
corrupt[:, shown] = other
metric = sweep.logit_difference(answer, other)                   # logit(A) - logit(B) at the last position

def value(tokens):
    return metric(model(tokens)[None, :, -1])[0]                 # one value per pair

clean_value, corrupt_value = value(clean), value(corrupt)
print(f"{n_pairs} pairs of {clean.shape[1]} tokens; logit(A) - logit(B): clean mean {clean_value.mean():+.1f}, "
      f"corrupted mean {corrupt_value.mean():+.1f}")


# %% [markdown]
# **Direct logit attribution per head.** The final residual stream is a sum, and each head's output is one of its terms: the head's ``hook_z`` (its result before the output projection) times its slice of W_O. Freeze the final RMSNorm's scale at its real value, as notebook 06 did per layer, and the logit splits into one term per head.
#
# ### Exercise 1 · Each head's direct contribution
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `head_dla(z, W_O, scale, weight, u)`: `z` is one layer's `[n_heads, d_head]` at one position, `W_O` its `[n_heads, d_head, d_model]`, `scale` the final residual's RMS there, `weight` the final norm's weight `[d_model]`, `u` the answer's column of W_U. Return `[n_heads]`.
#
# <details><summary>Hint 1 (a nudge)</summary>What does head h add to the residual stream, and what does the final norm do to it before W_U reads it? Which of those steps are shared by all heads?</details>
# <details><summary>Hint 2 (the idea)</summary>Head h writes z[h] through its own slice W_O[h]: a [d_model] vector. With the scale frozen, the final norm divides that vector by the shared scale and multiplies it element-wise by the weight; its share of the logit is its dot product with u.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>torch.einsum("hd,hdm->hm", z, W_O)</code> is every head's write at once, [n_heads, d_model]; then <code>/ scale * weight</code> and <code>@ u</code>.</details>

# %%
def head_dla(z: torch.Tensor, W_O: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
             u: torch.Tensor) -> torch.Tensor:
    '''Each head's direct contribution to one logit: [n_heads].'''
    # SOLUTION
    return torch.einsum("hd,hdm->hm", z, W_O) / scale * weight @ u
    # END SOLUTION


# %% tags=["check"]
checks.check_head_dla(head_dla, model)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def head_dla(z, W_O, scale, weight, u):
#     return torch.einsum("hd,hdm->hm", z, W_O) / scale * weight @ u
# ```
# </details>

# %% [markdown]
# **Predict, then run.** Which layer's heads push logit(A) − logit(B) up most directly, on the clean prompts? And do the heads of that layer share the job, or does one head do it?
#
# <details><summary>Answer (after running the next cell)</summary>Layer 3, and all eight of its heads, each a part: phi4-tiny's induction heads are redundant. Layers 0 to 2 write almost nothing directly; what they do, they do through layer 3.</details>

# %%
dla = circuits.head_dla(model, clean, torch.stack([answer, other], 1))   # [layers, heads, pairs, 2]
dla = (dla[..., 0] - dla[..., 1]).mean(-1)                               # logit(A) - logit(B), mean over pairs
for layer in range(model.cfg.n_layers):
    print(f"layer {layer}: heads sum to {signed(dla[layer].sum()):+5.1f}; the largest head "
          f"L{layer}H{int(dla[layer].argmax())} {signed(dla[layer].max()):+5.1f}")
assert (dla[3] > 0.5).all(), "every layer-3 head should push A up directly"


# %% [markdown]
# ## 2. OV circuits: what a head writes when it attends
#
# Once a head attends to a position, it copies that position's residual vector x through ``W_V`` (of its key/value group) and ``W_O``, into the residual stream of the query. Read the result through the unembedding, and you have the head's **full OV circuit**: row t says how the head changes every logit when it attends to token t. phi4lab keeps Hugging Face's weights unprocessed, so the input RMSNorm's weight sits before W_V and the final norm's weight before W_U; `circuits.ov_circuit` multiplies both in.
#
# It is vocabulary × vocabulary (the next cell prints the sizes), and it never needs to exist. It is a product A B of a vocab × d_head and a d_head × vocab matrix (TransformerLens' `FactoredMatrix`), and the nonzero eigenvalues of A B are those of the small d_head × d_head matrix B A. A **copying** head has mostly positive eigenvalues: attending to a token raises that token's logit. Elhage et al.'s copying score is the sum of the eigenvalues over the sum of their absolute values: 1 for a pure copier, −1 for a pure suppressor.
#
# ### Exercise 2 · The copying score from the thin factors
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Write `copying_score(A, B)` for the circuit A @ B, with A `[n, r]` and B `[r, n]`, without forming A @ B.
#
# <details><summary>Hint 1 (a nudge)</summary>Which small matrix has the same nonzero eigenvalues as A @ B? And what kind of numbers can the eigenvalues of a real, non-symmetric matrix be?</details>
# <details><summary>Hint 2 (the idea)</summary>Take the eigenvalues of B @ A, which is r × r. They can be complex, in conjugate pairs, so their sum is real: take its real part, and divide by the sum of their moduli |a + bi| (not of their real parts).</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>eig = torch.linalg.eigvals(B @ A)</code>; then <code>eig.sum().real / eig.abs().sum()</code>.</details>

# %%
def copying_score(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    '''Elhage et al.'s copying score of the circuit A @ B, computed without forming A @ B.'''
    # SOLUTION
    eig = torch.linalg.eigvals(B @ A)
    return eig.sum().real / eig.abs().sum()
    # END SOLUTION


# %% tags=["check"]
checks.check_copying_score(copying_score)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def copying_score(A, B):
#     eig = torch.linalg.eigvals(B @ A)
#     return eig.sum().real / eig.abs().sum()
# ```
# </details>

# %% [markdown]
# Eigenvalues summarise the map; a second, blunter test asks for each token whether its own logit is the one the head raises most.
#
# ### Exercise 3 · How often does a head promote the token it reads?
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵⚪⚪⚪ · about 10 minutes
#
# Write `self_top_fraction(A, B, chunk)`: the share of rows t of A @ B (for a square circuit) whose largest entry is in column t, forming `chunk` rows at a time so that memory stays at chunk × n.
#
# <details><summary>Hint 1 (a nudge)</summary>Which rows of A @ B does one chunk of A's rows give you, and which column must row t's largest entry be in? Over which axis is that argmax taken?</details>
# <details><summary>Hint 2 (the idea)</summary>Step through A's rows chunk by chunk; multiply each chunk by B to get those rows of the circuit. Take each row's argmax over the columns and compare it with the row's own index in the whole matrix (the chunk's start plus its offset). Count the hits over all chunks and divide by the number of rows; the last chunk may be shorter.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>rows = (A[start:start + chunk] @ B).argmax(-1)</code>, compared with <code>torch.arange(start, start + len(rows))</code>, for <code>start</code> in <code>range(0, A.shape[0], chunk)</code>.</details>

# %%
def self_top_fraction(A: torch.Tensor, B: torch.Tensor, chunk: int) -> float:
    '''The share of rows of A @ B whose top entry is on the diagonal, chunk rows at a time.'''
    # SOLUTION
    hits = 0
    for start in range(0, A.shape[0], chunk):
        rows = (A[start:start + chunk] @ B).argmax(-1)
        hits += (rows == torch.arange(start, start + len(rows))).sum().item()
    return hits / A.shape[0]
    # END SOLUTION


# %% tags=["check"]
checks.check_self_top_fraction(self_top_fraction)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def self_top_fraction(A, B, chunk):
#     hits = 0
#     for start in range(0, A.shape[0], chunk):
#         rows = (A[start:start + chunk] @ B).argmax(-1)
#         hits += (rows == torch.arange(start, start + len(rows))).sum().item()
#     return hits / A.shape[0]
# ```
# </details>

# %% [markdown]
# **Predict, then run.** The textbook OV circuit starts from the token embedding W_E. Layer 3's heads are induction heads, and induction copies. Will their copying scores through W_E be close to +1?
#
# <details><summary>Answer (after running the next two cells)</summary>No: close to −1. Through W_E, every layer-3 head looks like a pure suppressor. But a layer-3 head never reads W_E: it reads the residual stream entering layer 3, which layers 0 to 2 have rewritten. Measured on that stream (the "effective embedding"), the same heads are copiers. The weights did not change; the question did.</details>

# %%
ids = torch.arange(10, n_ordinary)                               # ordinary tokens (the first ids are bytes)
print(f"a full OV circuit: {model.cfg.d_vocab:,} x {model.cfg.d_vocab:,} for phi4-tiny; for Phi-4, "
      f"{phi4config.PHI4.vocab_size:,} x {phi4config.PHI4.vocab_size:,} = {phi4config.PHI4.vocab_size ** 2 / 1e9:.0f} billion entries")
on_embedding = [circuits.ov_circuit(model, 3, h, token_ids=ids) for h in range(model.cfg.n_heads)]
print("through W_E:", " ".join(f"L3H{h} {copying_score(ov.A, ov.B):+.2f}" for h, ov in enumerate(on_embedding)))

# %%
effective = circuits.effective_embedding(model, 3, ids)          # each token's residual entering layer 3
on_stream = [circuits.ov_circuit(model, 3, h, effective, ids) for h in range(model.cfg.n_heads)]
print(f"through the residual stream entering layer 3 ({len(ids):,} tokens, each after 32 random ones):")
for h, ov in enumerate(on_stream):
    print(f"  L3H{h}: copying score {copying_score(ov.A, ov.B):+.3f}; own token on top for "
          f"{self_top_fraction(ov.A, ov.B, 1024):.0%} of tokens")
on_planted = circuits.ov_circuit(toy, *planted.PLANTED["induction"], token_ids=torch.arange(planted.N_TOKENS))
print(f"the planted induction head L1H3, for comparison: {circuits.copying_score(on_planted):+.3f}, "
      f"own token on top for {circuits.self_top_fraction(on_planted):.0%}")

# %% [markdown]
# By chance a token's own logit would almost never be the top one. These heads put it on top for about half of all tokens; the hand-made head of the planted model does it for every one of its tokens. The sign flip is the lesson: **an OV circuit is only as good as the input you feed it.** For a layer-0 head, W_E is what it reads; for a head deep in a real model, the effective embedding is closer to the truth, and it has to be measured on prompts.

# %% [markdown]
# ## 3. QK circuits with RoPE: where a head looks
#
# Without rotary embeddings, a head's preference between a query vector x_q and a key vector x_k is one bilinear form, x_q W_Q W_Kᵀ x_kᵀ. With RoPE the query at position i is rotated by R_i and the key at position j by R_j before the dot product, and rotations compose: R_i q · R_j k = R_(i−j) q · k. So the score depends on the **offset** i − j through a rotation of the query, one bilinear form per offset. A head that looks one token back is one whose query, rotated by one step, lines up with its key.
#
# To see the positional part alone, take one "average" residual vector for both query and key (`circuits.mean_normed_embedding`: the mean of the RMS-normalised token embeddings), project it through the head's W_Q and its group's W_K (norm weight folded in), and score it at every offset.
#
# ### Exercise 4 · The preferred offset, from the weights and the rotation
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵🔵⚪ · about 25 minutes
#
# Write `qk_by_offset(q, k, theta, max_offset)`: q and k are one query and one key `[d_head]`; return `[max_offset + 1]`, entry r the score of the query against the key r tokens back, divided by sqrt(d_head). Use `rotary_cos_sin(positions, d_head, theta)` and `rotate_half` from `phi4lab.scratch.architecture` (notebook 01 built them).
#
# <details><summary>Hint 1 (a nudge)</summary>The score depends only on the offset. Which of the two vectors can stay unrotated, and by how many steps must the other one turn for a key r tokens back?</details>
# <details><summary>Hint 2 (the idea)</summary>Rotate the query by the offset and leave the key where it is: R_r q · k, for every r at once, divided by sqrt(d_head).</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>cos, sin = rotary_cos_sin(torch.arange(max_offset + 1), q.shape[-1], theta)</code> gives one row per offset; <code>q * cos + rotate_half(q) * sin</code> broadcasts q over the rows.</details>

# %%
from phi4lab.scratch.architecture import rotary_cos_sin, rotate_half

def qk_by_offset(q: torch.Tensor, k: torch.Tensor, theta: float, max_offset: int) -> torch.Tensor:
    '''Score of query q against key k for keys 0 .. max_offset tokens back: [max_offset + 1].'''
    # SOLUTION
    cos, sin = rotary_cos_sin(torch.arange(max_offset + 1), q.shape[-1], theta)
    return (q * cos + rotate_half(q) * sin) @ k / q.shape[-1] ** 0.5
    # END SOLUTION


# %% tags=["check"]
checks.check_qk_by_offset(qk_by_offset)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def qk_by_offset(q, k, theta, max_offset):
#     cos, sin = rotary_cos_sin(torch.arange(max_offset + 1), q.shape[-1], theta)
#     return (q * cos + rotate_half(q) * sin) @ k / q.shape[-1] ** 0.5
# ```
#
# Rotating the key by +r instead computes R_(−r) q · k: the score of a key r tokens *ahead*, which a causal model never sees.
# </details>

# %% [markdown]
# **Predict, then run.** Notebook 05 found phi4-tiny's previous-token heads in layer 2 from their attention on real text. From the weights alone, at which offset will those heads score highest? And will every head of layer 2 agree?
#
# <details><summary>Answer (after running the next cell)</summary>Most layer-2 heads peak at offset 1, from W_Q, W_K and the rotation alone. Not all: some prefer another offset or hardly care about position, and the average vector stands for no token in particular.</details>

# %%
offsets = 8
profiles = torch.stack([circuits.qk_by_offset(model, 2, h, offsets) for h in range(model.cfg.n_heads)])
for h, p in enumerate(profiles):
    print(f"L2H{h}: highest at offset {int(p.argmax())}; score at offset 1 minus the best other offset "
          f"{signed(p[1] - torch.cat([p[:1], p[2:]]).max()):+.1f}")
print(f"{int((profiles.argmax(-1) == 1).sum())} of {model.cfg.n_heads} layer-2 heads look one token back, from the weights")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(7, 3))
for h, p in enumerate(profiles):
    ax.plot(range(offsets + 1), p, "-o", ms=3, label=f"L2H{h}")
ax.set(xlabel="offset (tokens back)", ylabel="score (positional part)", title="Layer 2's QK circuits by offset, from the weights")
ax.legend(fontsize=7, ncol=4); plt.tight_layout(); plt.show()


# %% [markdown]
# The token part is the other half: `circuits.qk_circuit(model, layer, head, offset)` is the vocab × vocab bilinear form at one offset, again as a `FactoredMatrix`. On the planted model's duplicate-token head, which matches content on slowly turning rotary pairs, each token's query finds its own token's key at any offset; `tests/test_circuits.py` checks that.

# %% [markdown]
# ## 4. Composition: which heads are wired to which
#
# An induction head's keys must carry "the token before me was A", which a previous-token head in an earlier layer writes. That is **K-composition**: a sender's OV map writes into the subspace a receiver's W_K reads. Elhage et al. score it as ‖W_A W_B‖ / (‖W_A‖ ‖W_B‖) (Frobenius norms) with W_A the sender's W_OV = W_V W_O and W_B the receiver's reading map: 1 when the receiver reads exactly what the sender writes, small for unrelated maps.
#
# On Phi-4's architecture two things change. The receiver's keys are shared by its key/value group, so K- (and V-) composition is computed per **group**. And with RoPE, W_Q W_Kᵀ is not the bilinear form any query–key pair uses (that is W_Q R_offset W_Kᵀ), so phi4lab reads K-composition through W_K alone, which a rotation on the key side leaves unchanged. The norm weights are multiplied in on both sides.
#
# ### Exercise 5 · K-composition into one key/value group, by hand
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵🔵⚪ · about 20 minutes
#
# Write `k_composition(W_V, W_O, W_K)` for one sender head (its group's `W_V` `[d_model, d_head]`, its own `W_O` `[d_head, d_model]`) and one receiver group (`W_K` `[d_model, d_head]`), all with norm weights already folded in.
#
# <details><summary>Hint 1 (a nudge)</summary>Which single matrix is the sender's whole map from the residual stream to the residual stream? Which product then says how much of what it writes the receiver's keys read?</details>
# <details><summary>Hint 2 (the idea)</summary>W_A is the sender's W_OV = W_V W_O and W_B is W_K: the score is ‖W_OV W_K‖ / (‖W_OV‖ ‖W_K‖), all Frobenius norms. The sender's norm is that of the product W_V W_O, not of each factor.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>W_OV = W_V @ W_O</code>; <code>torch.linalg.matrix_norm</code> is the Frobenius norm by default: <code>matrix_norm(W_OV @ W_K) / (matrix_norm(W_OV) * matrix_norm(W_K))</code>.</details>

# %%
def k_composition(W_V: torch.Tensor, W_O: torch.Tensor, W_K: torch.Tensor) -> torch.Tensor:
    '''The K-composition score of one sender head into one receiver key/value group.'''
    # SOLUTION
    W_OV = W_V @ W_O
    return torch.linalg.matrix_norm(W_OV @ W_K) / (torch.linalg.matrix_norm(W_OV) * torch.linalg.matrix_norm(W_K))
    # END SOLUTION


# %% tags=["check"]
checks.check_k_composition(k_composition, model)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def k_composition(W_V, W_O, W_K):
#     W_OV = W_V @ W_O
#     return torch.linalg.matrix_norm(W_OV @ W_K) / (torch.linalg.matrix_norm(W_OV) * torch.linalg.matrix_norm(W_K))
# ```
# </details>

# %% [markdown]
# **Predict, then run.** Which layer's heads will compose most with layer 3's keys: layer 0, 1 or 2?
#
# <details><summary>Answer (after running the next cell)</summary>Layer 2, where the previous-token heads are: its best heads score more than twice as high as any head of layers 0 and 1. The planted model, where the wiring is known, shows the same thing in its purest form: its previous-token head L0H0 is the only sender into the keys of the induction head's group, and into the other group it sends nothing.</details>

# %%
k_comp = circuits.composition_scores(model, "K")                  # [sender layer, head, receiver layer, group]
into_3 = k_comp[:3, :, 3]                                         # senders in layers 0-2, into layer 3's groups
for layer in range(3):
    print(f"layer {layer} -> layer 3 keys: {into_3[layer].min():.2f} to {into_3[layer].max():.2f}")
toy_k = circuits.composition_scores(toy, "K")[0, :, 1]             # planted: layer 0's heads into layer 1's groups
induction_group = circuits.kv_group(toy, planted.PLANTED["induction"][1])
print(f"planted model: L0H0 into the induction head's group {toy_k[0, induction_group]:.2f}, into the other group "
      f"{toy_k[0, 1 - induction_group]:.2f}; every other layer-0 head at most {toy_k[1:].max():.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(5, 4.5))
im = ax.imshow(into_3.flatten(0, 1), cmap="viridis", aspect="auto")
ax.set(xticks=range(model.cfg.n_key_value_heads), xticklabels=[f"L3 group {g}" for g in range(model.cfg.n_key_value_heads)],
       yticks=range(24), yticklabels=[f"L{layer}H{h}" for layer in range(3) for h in range(8)],
       title="K-composition into layer 3, per key/value group")
ax.tick_params(axis="y", labelsize=7); plt.colorbar(im); plt.tight_layout(); plt.show()

# %% [markdown]
# **TransformerLens' scores.** TransformerLens 4 ships the same measure as `TransformerBridge.all_composition_scores`, with the key/value heads repeated for every query head of a group. `circuits.composition_scores(model, kind, convention="transformer_lens")` reproduces it; the difference from phi4lab's default is a choice of definition, not an error on either side: TransformerLens reads raw weights (the norm weights left out) and K through W_K W_Qᵀ at offset 0.

# %%
for kind in "QKV":
    ours = circuits.composition_scores(model, kind, convention="transformer_lens")
    theirs = model.all_composition_scores(kind).scores
    print(f"{kind}: phi4lab's transformer_lens convention against TransformerLens, largest difference "
          f"{'below 1e-5' if (ours - theirs).abs().max() < 1e-5 else (ours - theirs).abs().max()}")
tl_k = model.all_composition_scores("K").scores[:3, :, 3]          # [sender layer, head, receiver head]
print(f"TransformerLens' K-composition from layer 2 into layer 3: {tl_k[2].min():.2f} to {tl_k[2].max():.2f}; "
      f"from layers 0-1: {tl_k[:2].min():.2f} to {tl_k[:2].max():.2f}")


# %% [markdown]
# Both definitions put layer 2 ahead. They are still scores from weights: a large one says a path *can* carry information, not that it does on any prompt. For that, patch.

# %% [markdown]
# ## 5. Path patching: does the path carry the behaviour?
#
# Activation patching (notebook 06) asks whether an activation matters. **Path patching** (Wang et al. 2022) asks whether one *path* matters: sender head → receiver head's queries, keys or values. Three runs:
#
# 1. the clean and the corrupted prompt, caching every head's output `hook_z`;
# 2. the corrupted prompt again with **every head frozen** at its corrupted output, except the senders, which get their clean output; the MLPs recompute. Record what the receivers read (`hook_q`, `hook_k` or `hook_v`);
# 3. the corrupted prompt once more with only the receivers' inputs replaced by the recorded ones, and measure.
#
# Freezing the other heads is what makes it a path: the senders' change can reach the receiver only directly, or through MLPs, never through another head.
#
# ### Exercise 6 · The freezing hook
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 15 minutes
#
# Write `freeze_hook(corrupt_z, clean_z, senders)`, which returns a hook `hook(z, hook)` for one layer's `hook_z` `[batch, pos, head, d_head]`: every head's output from `corrupt_z`, except the heads listed in `senders` (this layer's sender heads), from `clean_z`. Leave both caches as they are.
#
# <details><summary>Hint 1 (a nudge)</summary>In this run every head is frozen: does the hook need the activation z it is given at all? And how do you build the result without writing into either cache?</details>
# <details><summary>Hint 2 (the idea)</summary>Start from a copy of the corrupted activation, not from <code>z</code>, and overwrite the senders' slice along the head axis (axis 2) with the clean activation's. <code>freeze_hook</code> returns the inner function; the inner function returns the new tensor.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Inside <code>hook(z, hook)</code>: <code>out = corrupt_z.clone()</code>; <code>out[:, :, senders] = clean_z[:, :, senders]</code>; return <code>out</code>.</details>

# %%
def freeze_hook(corrupt_z: torch.Tensor, clean_z: torch.Tensor, senders: list[int]):
    '''A hook for blocks.L.attn.hook_z: all heads at their corrupted output, the senders at their clean one.'''
    # SOLUTION
    def hook(z, hook):
        out = corrupt_z.clone()
        out[:, :, senders] = clean_z[:, :, senders]
        return out
    return hook
    # END SOLUTION


# %% tags=["check"]
checks.check_freeze_hook(freeze_hook)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def freeze_hook(corrupt_z, clean_z, senders):
#     def hook(z, hook):
#         out = corrupt_z.clone()
#         out[:, :, senders] = clean_z[:, :, senders]
#         return out
#     return hook
# ```
# </details>

# %% [markdown]
# **Where the answer is known.** On the planted model, corrupt the token before the one to be copied (the first copy's last token), so that no key says "the token before me was the query's token". Then patch the path from the previous-token head L0H0 into the induction head L1H3, through its keys, its queries or its values, and from the sink head L0H2 into its keys. `phi4lab.analysis.path_patching.path_patch` runs the three steps.

# %%
toy_clean = planted.repeated_prompt(period=8, repeats=2, batch=4, seed=0)
toy_corrupt = toy_clean.clone()
for b in range(len(toy_clean)):
    toy_corrupt[b, 8] = next(t for t in range(planted.N_TOKENS) if t not in toy_clean[b].tolist())
toy_metric = sweep.logit_difference(toy_clean[:, 9], toy_corrupt[:, 8])
toy_values = [toy_metric(toy(t)[None, :, -1])[0].mean() for t in (toy_clean, toy_corrupt)]
print(f"planted model: clean {toy_values[0]:.1f}, corrupted {toy_values[1]:.1f}")
prev, sink, (layer, head) = planted.PLANTED["previous_token"], planted.PLANTED["sink"], planted.PLANTED["induction"]
for name, senders, kind in (("L0H0 -> L1H3 keys", [prev], "k"), ("L0H0 -> L1H3 queries", [prev], "q"),
                            ("L0H0 -> L1H3 values", [prev], "v"), ("L0H2 -> L1H3 keys", [sink], "k")):
    v = path_patch(toy, toy_clean, toy_corrupt, senders, [(layer, head, kind)], toy_metric).mean()
    print(f"  {name:22s} restores {share((v - toy_values[1]) / (toy_values[0] - toy_values[1]))}")

# %% [markdown]
# The planted wiring, found by patching: the whole effect runs from L0H0 into L1H3's keys, and nothing runs through the queries, the values or the sink head.
#
# **On phi4-tiny.** The same experiment with the same kind of corruption: the 16 spans, with the token *before* A (position 5) replaced. Its keys can no longer tell the induction heads where A is.
#
# **Predict, then run.** Patch one layer-2 head at a time into the keys of all of layer 3. phi4-tiny has several previous-token heads in layer 2. How much will the best single head restore: nearly all, about half, or little?
#
# <details><summary>Answer (after running the next two cells)</summary>Little: no single head restores more than a small fraction. All of layer 2 together restores much more, and more than the single heads' shares added up. The previous-token signal is spread over several heads, and because a softmax decides where an induction head looks, the parts do not add up; one head's share of the signal is not enough to move the attention.</details>

# %%
key_corrupt = clean.clone()
key_corrupt[:, shown - 1] = other                                # the token before A, in the first copy
key_value = value(key_corrupt)
into_keys = [(3, h, "k") for h in range(model.cfg.n_heads)]

def restored(v):
    return ((v.mean() - key_value.mean()) / (clean_value.mean() - key_value.mean())).item()

print(f"corrupting the token before A: logit(A) - logit(B) falls from {clean_value.mean():+.1f} to {key_value.mean():+.1f}")
singles = path_patch_senders(model, clean, key_corrupt, into_keys, metric).mean(-1)     # [layers 0-2, heads]
singles_share = (singles - key_value.mean()) / (clean_value.mean() - key_value.mean())
best = divmod(int(singles_share.argmax()), model.cfg.n_heads)
print(f"one head at a time (each head of layers 0-2) into layer 3's keys: the best, L{best[0]}H{best[1]}, "
      f"restores {share(singles_share.max())}; layer 2's eight single shares add up to {share(singles_share[2].sum())}")

# %%
layer_2 = [(2, h) for h in range(model.cfg.n_heads)]
early = [(layer, h) for layer in (0, 1) for h in range(model.cfg.n_heads)]
for name, senders, kind in (("all of layer 2 -> layer 3 keys", layer_2, "k"),
                            ("all of layer 2 -> layer 3 queries", layer_2, "q"),
                            ("all of layer 2 -> layer 3 values", layer_2, "v"),
                            ("all of layers 0-1 -> layer 3 keys", early, "k")):
    receivers = [(3, h, kind) for h in range(model.cfg.n_heads)]
    print(f"{name:34s} restores {share(restored(path_patch(model, clean, key_corrupt, senders, receivers, metric)))}")

# %% [markdown]
# The weights said layer 2 composes with layer 3's keys; patching says that path carries about half of the effect, and that the queries and values of layer 3 do not care about layer 2 here. Layers 0 and 1 reach layer 3's keys only through layer 2. What is not restored reaches layer 3's keys by routes this experiment keeps corrupted: the corrupted token's own embedding, the MLPs that read it, and the heads of layers 0 and 1.

# %% [markdown]
# ## 6. Patching over a dataset, with intervals
#
# One pair proves little; notebook 06 used 16 and bootstrapped. `phi4lab.analysis.sweep` runs the grids of notebook 06 much faster and keeps one value per pair: patching the residual stream entering layer l at position p leaves every layer below l and every position before p exactly as in the corrupted run, so those activations (and their keys and values) are reused, and the patches of a layer run in a few batches, each recomputed from its first patch's position. The numbers are TransformerLens' own, as the next cells check; `benchmarks/patching_sweep.py` times both.

# %%
# NBVAL_IGNORE_OUTPUT
# TransformerLens' sweep, one forward pass per head (it draws a progress bar)
_, clean_cache = model.run_with_cache(clean)
tl_heads = patching.get_act_patch_attn_head_out_all_pos(model, corrupt, clean_cache, lambda x: metric(x[None, :, -1]).mean())

# %%
heads_grid = sweep.head_out_sweep(model, clean, corrupt, metric)                      # [layers, heads, pairs]
resid_grid = sweep.resid_pre_sweep(model, clean, corrupt, metric)                     # [layers, positions, pairs]
print(f"against TransformerLens' get_act_patch_attn_head_out_all_pos: largest difference "
      f"{'below 1e-4' if (heads_grid.mean(-1) - tl_heads).abs().max() < 1e-4 else (heads_grid.mean(-1) - tl_heads).abs().max()}")

# the recovery of each pair, (patched - corrupted) / (clean - corrupted), and an interval over the pairs
recovery = (heads_grid - corrupt_value) / (clean_value - corrupt_value)
mean, low, high = sweep.interval(recovery, n=1000)
for h in range(model.cfg.n_heads):
    print(f"L3H{h}: recovers {share(mean[3, h])} (95% interval {share(low[3, h])} to {share(high[3, h])})")
top_early = divmod(int(mean[:3].argmax()), model.cfg.n_heads)
print(f"the largest head outside layer 3, L{top_early[0]}H{top_early[1]}, recovers {share(mean[:3].max())}")

# %% [markdown]
# Each layer-3 head alone brings back a small, well-determined share: the eight share the copying, and the intervals are narrow because the 16 pairs agree. A layer-0 head does more than any one of them. Patched at every position, it rewrites what position 6 itself holds about A, and layer 3 then copies the restored identity: the grid localises a difference, not a job.

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(7, 3))
x = torch.arange(model.cfg.n_layers * model.cfg.n_heads)
ax.bar(x, mean.flatten(), yerr=torch.stack([mean - low, high - mean]).flatten(1), capsize=2)
ax.set(xticks=x[::8], xticklabels=[f"layer {layer}" for layer in range(model.cfg.n_layers)],
       ylabel="recovery", title="Each head's output patched from clean (all positions), 95% intervals over 16 pairs")
plt.tight_layout(); plt.show()


# %% [markdown]
# ## 7. Attribution patching: every cell from one backward pass
#
# Each cell of those grids is a forward pass. **Attribution patching** (Nanda 2023; Syed et al. 2023) estimates all of them at once with a first-order Taylor step: moving an activation from its corrupted value a_corrupt to its clean value changes the metric by about (a_clean − a_corrupt) · ∂metric/∂a, with the gradient taken once, on the corrupted run.
#
# ### Exercise 7 · The attribution estimate
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `attribution_estimate(clean_act, corrupt_act, grad)`: all three `[..., d]`; return `[...]`.
#
# <details><summary>Hint 1 (a nudge)</summary>A first-order Taylor step: which vector is the step, in which direction does it go, and what multiplies it?</details>
# <details><summary>Hint 2 (the idea)</summary>The step is the activation's move from where the gradient was taken, the corrupted run, to the clean one. The estimate is that step's dot product with the gradient, one per position: over the last axis, d.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>clean_act - corrupt_act</code>, multiplied element-wise by <code>grad</code>, then <code>.sum(-1)</code>.</details>

# %%
def attribution_estimate(clean_act: torch.Tensor, corrupt_act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    '''The first-order estimate of the metric's change when the activation moves from corrupt to clean.'''
    # SOLUTION
    return ((clean_act - corrupt_act) * grad).sum(-1)
    # END SOLUTION


# %% tags=["check"]
checks.check_attribution_estimate(attribution_estimate)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def attribution_estimate(clean_act, corrupt_act, grad):
#     return ((clean_act - corrupt_act) * grad).sum(-1)
# ```
# </details>

# %% [markdown]
# `sweep.attribution_patch` applies it to every layer × position of the residual stream and every head (summed over positions), from one clean run, one corrupted run and one backward pass; its head scores equal TransformerLens' `attribution_patch` (the tests check that).
#
# **Predict, then run.** The cell that matters most is the residual stream at position 6, where the prompts differ: patching it restores the clean answer entirely. Will the linear estimate there be too large, about right, or too small?
#
# <details><summary>Answer (after running the next cell)</summary>Too small, by a wide margin. A step from the corrupted token to the clean one is not small: the attention of the induction heads switches, a softmax saturates, and a first-order step sees only the slope at the start. The estimate still ranks the cells well, which is what it is for: a cheap map of where to look, then exact patching where it matters.</details>

# %%
estimate = sweep.attribution_patch(model, clean, corrupt, metric)
exact_resid = (resid_grid - corrupt_value).mean(-1)                                  # change from the corrupted run
exact_heads = (heads_grid - corrupt_value).mean(-1)
est_resid, est_heads = estimate["resid_pre"].mean(-1), estimate["head_out"].mean(-1)
r_resid = torch.corrcoef(torch.stack([est_resid.flatten(), exact_resid.flatten()]))[0, 1]
r_heads = torch.corrcoef(torch.stack([est_heads.flatten(), exact_heads.flatten()]))[0, 1]
print(f"correlation with activation patching: {'above' if r_resid > 0.95 else 'below'} 0.95 over layer x position, "
      f"{'above' if r_heads > 0.95 else 'below'} 0.95 over heads")
for layer in range(model.cfg.n_layers):
    print(f"  entering layer {layer} at position {shown}: exact {exact_resid[layer, shown]:+.1f}, "
          f"estimate {est_resid[layer, shown]:+.1f}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
for a, (est, exact, title) in zip(ax, ((est_resid, exact_resid, "residual stream, layer x position"),
                                       (est_heads, exact_heads, "head outputs"))):
    a.scatter(exact.flatten(), est.flatten(), s=10)
    lim = float(max(exact.abs().max(), est.abs().max())) * 1.05
    a.plot([-lim, lim], [-lim, lim], color="grey", lw=0.5)
    a.set(xlabel="activation patching (exact)", ylabel="attribution patching (estimate)", title=title)
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 8. What weight-level evidence does and does not show
#
# * **OV and QK circuits** say what a head *can* do, for every input at once, with no prompt chosen by us. But they are computed on an input we choose to stand for the residual stream (W_E, the effective embedding, an average vector), and the choice can flip the sign, as it did in section 2. Through a nonlinearity (the softmax, the norms, the MLPs) the weights alone say nothing exact.
# * **Composition scores** say which paths are *possible*. A large score is a wire, not a current: the path may carry nothing on the prompts that matter, and a small score does not rule out a path through an MLP.
# * **Path patching** says which paths *carry* the difference between two prompts, for those prompts, with everything else frozen. What it freezes is a choice (here: heads frozen, MLPs free), and the answer depends on it. It measures sufficiency for these pairs, like all patching.
# * **Attribution patching** is a linear map of all of it at the price of one backward pass. It ranks well and underestimates where the model is far from linear between the two runs, which is often exactly the cell that matters most. Use it to choose where to patch, not instead of patching.
#
# Weights and activations answer different questions; the circuit is the story that survives both, here: previous-token heads in layer 2 write "the token before me" into the positions of the first copy, layer 3's heads read it through their keys to find the position after the current token's earlier occurrence, and copy what they find there.
#
# ## Recap
#
# * A head's direct logit attribution is its z times its W_O slice, through the final norm's frozen scale and weight; the heads of a layer sum to the layer's term.
# * A full OV circuit is a FactoredMatrix; its copying score comes from the d_head × d_head product B A. Through W_E phi4-tiny's induction heads look like suppressors, through the residual stream they actually read they copy.
# * With RoPE, QK is one bilinear form per offset: R_r q · k. The previous-token offset appears from W_Q, W_K and the rotation.
# * Under GQA, K- and V-composition belong to key/value groups; phi4lab folds the norm weights in and reads K through W_K, and reproduces TransformerLens' definition on request.
# * Path patching confirms the layer-2 → layer-3-keys path; patching over pairs gives intervals; attribution patching maps every cell at once, and underestimates the big ones.
#
# **Bonus.** (1) Compute V-composition from layer 2 into layer 3 and explain why it is smaller than K-composition here. (2) Compute the effective embedding for layer 2 and ask whether the previous-token heads' QK profiles change when you use it instead of the average embedding. (3) Time `sweep.resid_pre_sweep` against `patching.get_act_patch_resid_pre` on these 16 pairs.
