# %% [markdown]
# # 12 · Attribution graphs: following a prediction through transcoder features
#
# Notebook 11's SAEs say *what* is in the residual stream. They do not say how one thing leads to another. An **attribution graph** does (Ameisen et al. 2025, *Circuit Tracing: Revealing Computational Graphs in Language Models*, the method behind circuit-tracer and Neuronpedia's graphs): for one prompt, it lists the features that were active, the tokens and the output logits, and the **direct effect** of each on each, and prunes the result down to the part that matters for the prediction.
#
# It needs two ingredients. **Transcoders** replace each MLP by a wide, sparse one whose latents can be nodes. And a **local replacement model**: the prompt's own attention patterns and norm scales, frozen, which makes everything between the nodes linear. This notebook builds both, computes a graph by hand, and checks it against the circuit the course already knows: phi4-tiny's induction heads.
#
# **Objectives.** By the end you can
# 1. say what a transcoder is and check one against the MLP it replaces;
# 2. build the frozen, linear model of one prompt, and verify that it computes the real logits;
# 3. compute an edge of the graph by a backward pass;
# 4. compute influence through all paths, prune, and read the replacement and completeness scores;
# 5. find the induction path in a graph, and say what the graph cannot show.
#
# **Prerequisites:** notebooks 10 and 11. **Run time:** under a minute on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import matplotlib.pyplot as plt
import torch

import phi4lab
from phi4lab.dictionaries import evaluate, files, graphs
from phi4lab.doctor import require
from phi4lab.exercises import attribution_graphs as checks
from phi4lab.viz.graphs import graph_view

require()
_ = torch.manual_seed(0)
torch.set_grad_enabled(False)      # the backward passes turn gradients on where they need them
model = phi4lab.load("phi4-tiny")
transcoders = files.shipped_transcoders()
for layer, tc in transcoders.items():
    v = files.shipped_transcoder(layer)[1]["validation"]
    print(f"layer {layer} transcoder: {tc.d_sae:,} latents, k = {tc.k}; at build, on the validation split: "
          f"FVU {v['fvu']:.3f}, {v['loss_recovered']:.1%} of the MLP's loss gap recovered, {v['dead']:.0%} never firing")


# %% [markdown]
# ## 1. Transcoders
#
# An SAE reconstructs an activation from itself. A **transcoder** (Dunefsky, Chlenski and Nanda 2024) reads the MLP's *input* and predicts the MLP's *output*:
#
# $$\hat y = \mathrm{TopK}(x\, W_\text{enc} + b_\text{enc})\, W_\text{dec} + b_\text{dec}, \qquad x = \texttt{blocks.L.mlp.hook\_in},\ y = \texttt{blocks.L.hook\_mlp\_out}.$$
#
# It is trained like an SAE (phi4lab's loop with targets), and its latents are the MLP's computation in sparse form: few are on at once, where all of an MLP's neurons are. phi4lab ships one for each of phi4-tiny's four MLPs, rebuilt by `phi4lab build-transcoders` in under six minutes. Their weights are stored in float16.
#
# ### Exercise 1 · A transcoder's prediction
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `transcoder_predict(x, W_enc, b_enc, W_dec, b_dec, k)`. It is notebook 11's SAE forward pass with one difference, which the check names if you miss it.
#
# <details><summary>Hint 1 (a nudge)</summary>The SAE subtracts b_dec from x before encoding, which makes sense because x and x̂ live in the same space. Do a transcoder's input and output live in the same space?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>b_dec</code> is an output bias now: it lives in the MLP output's space, so the input is not centred by it. TopK of relu(x W_enc + b_enc) gives z; the prediction is z W_dec + b_dec.</details>

# %%
def transcoder_predict(x, W_enc, b_enc, W_dec, b_dec, k):
    '''The MLP output a TopK transcoder predicts from the MLP's input.'''
    # SOLUTION
    values, indices = torch.relu(x @ W_enc + b_enc).topk(k, dim=-1)
    z = torch.zeros(*x.shape[:-1], W_enc.shape[1], dtype=x.dtype).scatter(-1, indices, values)
    return z @ W_dec + b_dec
    # END SOLUTION


# %% tags=["check"]
reads, writes = evaluate.transcoder_hooks(2)
sample = torch.randint(10, 4000, (8, 33), generator=torch.Generator().manual_seed(0))
_, cache = model.run_with_cache(sample, names_filter=lambda n: n in (reads, writes))
checks.check_transcoder_predict(transcoder_predict, transcoders[2], cache[reads][:, 1:].reshape(-1, 192),
                                cache[writes][:, 1:].reshape(-1, 192))


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def transcoder_predict(x, W_enc, b_enc, W_dec, b_dec, k):
#     values, indices = torch.relu(x @ W_enc + b_enc).topk(k, dim=-1)
#     z = torch.zeros(*x.shape[:-1], W_enc.shape[1], dtype=x.dtype).scatter(-1, indices, values)
#     return z @ W_dec + b_dec
# ```
# </details>

# %% [markdown]
# (On random tokens the FVU is higher than at build: the transcoders were trained on the course's text, not on noise.)
#
# ## 2. The local replacement model
#
# The prompt is notebook 10's behaviour in miniature: 8 random tokens, then the first 7 of them again. phi4-tiny should predict the 8th.
#
# A transformer is nonlinear in three places: attention patterns (a softmax of the residual stream), norms (a division by its RMS), and MLPs. Run the prompt once and **freeze** the first two at their values on this run: each head's pattern becomes a fixed mixing matrix and each norm a fixed per-position scale. Replace each MLP by its transcoder's active latents plus an **error node**, the MLP output the transcoder got wrong at that layer and position. What is left is linear in everything written into the residual stream, and, because the errors are included, it still computes the real logits on this prompt, exactly.
#
# ### Exercise 2 · Attention, frozen
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 15 minutes
#
# Write `frozen_attention(resid, scale, w, pattern, W_V, W_O)` for one layer of one prompt: `resid` `[T, d]` the residual stream the layer reads, `scale` `[T, 1]` its frozen RMS, `w` `[d]` the norm's weight, `pattern` `[n_heads, T, T]` (query, key), `W_V` `[n_kv_heads, d, d_head]`, `W_O` `[n_heads, d_head, d]`. Return the layer's attention output `[T, d]`. Phi-4's grouped-query attention shares each K/V head among consecutive query heads (notebook 01).
#
# <details><summary>Hint 1 (a nudge)</summary>With the pattern and the scale frozen, what is left is a chain of linear steps: the norm, the values, the mix over key positions, the output projection. Which key/value head does query head h read? And in pattern[h, q, k], which index do you sum over?</details>
# <details><summary>Hint 2 (the idea)</summary>Normalise with the frozen scale and the weight (divide by the scale, multiply by w). Compute every key/value head's values, [n_kv_heads, T, d_head], and give each query head its group's with <code>repeat_interleave</code> over the head axis (consecutive query heads share one). Each query position takes the pattern-weighted mix of the value vectors at the key positions; each head maps its mix through its W_O, and the heads' outputs add up.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>x = resid / scale * w</code>; <code>v = torch.einsum("td,kdh->kth", x, W_V)</code>, then <code>repeat_interleave(n_heads // n_kv_heads, dim=0)</code>; <code>torch.einsum("nqk,nkh,nhd->qd", pattern, v, W_O)</code>.</details>

# %%
def frozen_attention(resid, scale, w, pattern, W_V, W_O):
    '''One layer's attention output with its pattern and norm scale frozen: a linear map of resid.'''
    # SOLUTION
    x = resid / scale * w
    v = torch.einsum("td,kdh->kth", x, W_V).repeat_interleave(pattern.shape[0] // W_V.shape[0], dim=0)
    return torch.einsum("nqk,nkh,nhd->qd", pattern, v, W_O)
    # END SOLUTION


# %% tags=["check"]
first = torch.randint(10, 4000, (8,), generator=torch.Generator().manual_seed(3))
prompt = torch.cat([first, first[:-1]])                   # 8 random tokens, then the first 7 again
answer = int(first[-1])
replacement = graphs.ReplacementModel(model, transcoders, prompt)
checks.check_frozen_attention(frozen_attention, replacement)
print(f"the replacement model reproduces the real logits to within 1e-3: {replacement.check() < 1e-3}")
print("prompt:", [model.tokenizer.decode([t]) for t in prompt.tolist()], "| answer:", repr(model.tokenizer.decode([answer])))

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def frozen_attention(resid, scale, w, pattern, W_V, W_O):
#     x = resid / scale * w
#     v = torch.einsum("td,kdh->kth", x, W_V).repeat_interleave(pattern.shape[0] // W_V.shape[0], dim=0)
#     return torch.einsum("nqk,nkh,nhd->qd", pattern, v, W_O)
# ```
# </details>

# %% [markdown]
# ## 3. The graph, edge by edge
#
# The **nodes**: every active transcoder latent (layer, position, latent), one error node per layer and position, one token node per position (its embedding), and the most probable next-token logits. A latent writes `a_i W_dec[i]` where its MLP's output goes; an error writes its error vector; a token writes its embedding. A latent reads its pre-activation through its encoder column; a logit node reads the logit minus the mean logit (a shift of every logit changes no probability).
#
# An **edge** s → t is s's direct effect on t in the frozen model: every other node's write held fixed, MLPs not differentiated through. Because the model is linear, it is the gradient of t's reading with respect to what s writes, dotted with what s writes. One backward pass from t gives all of t's incoming edges at once.

# %%
graph = replacement.attribute()
kinds = {kind: len(graph.indices(kind)) for kind in graphs.KINDS}
print(f"{len(graph.nodes):,} nodes: {kinds}; adjacency {list(graph.adjacency.shape)} (rows: targets, columns: sources)")
top = graph.indices("logit")[0].item()
print(f"top logit: {model.tokenizer.decode([graph.nodes[top].index])!r} with p = {graph.nodes[top].value:.2f}; "
      f"the answer is {model.tokenizer.decode([answer])!r}")


# %% [markdown]
# ### Exercise 3 · One edge, by a backward pass
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵🔵🔵 · about 20 minutes
#
# Write `edge(forward, shape, n_layers, read, target_pos, source_pos, write)`: the direct effect of a token's embedding on a logit node, from one backward pass through the frozen model.
#
# - `forward(embed, mlp_outs)` is the frozen model: `embed` `[1, T, d]` and `mlp_outs` a list of `n_layers` tensors `[1, T, d]`; it returns `(resid_mid per layer, final residual)`, each `[1, T, d]`.
# - `shape` is `(T, d)`; `read` `[d]` is the logit node's reading vector at the final residual, at position `target_pos`.
# - `write` `[d]` is the token's embedding at `source_pos`.
#
# Gradients are off in this notebook; turn them on inside your function with `torch.enable_grad()`.
#
# <details><summary>Hint 1 (a nudge)</summary>The frozen model is linear in what is written into the residual stream. What, then, is the gradient of the reading with respect to the embedding at source_pos, and how does it turn write into an effect? Why should the MLP outputs be inputs of forward rather than computed from the embedding?</details>
# <details><summary>Hint 2 (the idea)</summary>Make the leaves, the embedding and each MLP output, tensors of zeros that require gradients: the map is linear, so their values do not matter, and because the MLP outputs are leaves, no path runs through an MLP (the effect is direct). Run <code>forward</code>, take the reading at <code>target_pos</code> (the final residual there, dotted with <code>read</code>), differentiate it with respect to the embedding leaf, and dot the gradient at <code>source_pos</code> with <code>write</code>.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>embed = torch.zeros(1, *shape, requires_grad=True)</code>, and the same for each MLP leaf; inside <code>torch.enable_grad()</code>, <code>(grad,) = torch.autograd.grad((final[0, target_pos] * read).sum(), [embed])</code>; the edge is <code>(grad[0, source_pos] * write).sum()</code>.</details>

# %%
def edge(forward, shape, n_layers, read, target_pos, source_pos, write):
    '''The direct effect of what is written at source_pos (the embedding) on a reading of the final residual.'''
    # SOLUTION
    embed = torch.zeros(1, *shape, requires_grad=True)
    mlp = [torch.zeros(1, *shape, requires_grad=True) for _ in range(n_layers)]
    with torch.enable_grad():
        _, final = forward(embed, mlp)
        (grad,) = torch.autograd.grad((final[0, target_pos] * read).sum(), [embed])
    return (grad[0, source_pos] * write).sum()
    # END SOLUTION


# %% tags=["check"]
checks.check_edge(edge, replacement, graph)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def edge(forward, shape, n_layers, read, target_pos, source_pos, write):
#     embed = torch.zeros(1, *shape, requires_grad=True)
#     mlp = [torch.zeros(1, *shape, requires_grad=True) for _ in range(n_layers)]
#     with torch.enable_grad():
#         _, final = forward(embed, mlp)
#         (grad,) = torch.autograd.grad((final[0, target_pos] * read).sum(), [embed])
#     return (grad[0, source_pos] * write).sum()
# ```
# </details>

# %% [markdown]
# **Predict, then run.** Which token's embedding has the largest direct effect on the top logit: the current token (the last one), the answer's own first occurrence, or the token just before that first occurrence?
#
# <details><summary>Answer (after running the next cell)</summary>The answer's first occurrence, by far: in the frozen model an induction head's attention to it is a fixed weight, so its embedding flows to the last position through the head's OV circuit, which copies it. The current token and the token before the first occurrence are what made the head look there, through its query and its keys; with the patterns frozen, that role is not an edge at all (section 5). The smaller edges they do have flow through value vectors, like every edge that crosses positions.</details>

# %%
for source, weight in graph.top_sources(top, 5):
    node = graph.nodes[source]
    where = f"position {node.pos} ({model.tokenizer.decode([prompt[node.pos].item()])!r})"
    print(f"{node.kind:7s} {node.name():18s} at {where:26s} {weight:+.2f}")

# %% [markdown]
# The edge from the answer's first occurrence reaches the last position through attention, and in the linear model a path uses at most one head per layer. So removing one head of layer 3 from the frozen model removes exactly the paths through it, and the edge splits by head:

# %%
first_occurrence = next(i for i in graph.indices("token").tolist() if graph.nodes[i].pos == len(first) - 1)
shares = replacement.edge_by_head(graph.nodes[first_occurrence], graph.nodes[top], layer=3)
total = graph.adjacency[top, first_occurrence]
print(f"edge {total:+.2f}; through layer 3's heads: {[round(v, 1) for v in shares.tolist()]} "
      f"(sum {shares.sum():+.2f}, {shares.sum() / total:.0%} of the edge)")


# %% [markdown]
# Every layer-3 head carries part of it, as notebook 10's head attribution found: phi4-tiny's induction heads are redundant. The attribution graph found the induction circuit's output path from the weights and one prompt, without a corrupted prompt to patch from.
#
# ## 4. Influence, pruning and scores
#
# A graph of thousands of nodes is not an explanation. Edges compose: a token that drives a latent that drives the logit influences the logit through both. With |A| normalised so that each node's incoming edges sum to 1 (the share of its inputs each source gives), the **influence** of every node on the logits sums over all paths:
#
# $$\text{influence} = w A + w A^2 + w A^3 + \dots = w\left[(I - A)^{-1} - I\right],$$
#
# with w the logits' probabilities on the logit nodes. The graph has no cycles, so the series ends after a few terms.
#
# ### Exercise 4 · Influence
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `influence(A, w)` for a normalised `A` `[n, n]` (rows targets, columns sources) and `w` `[n]`. Either sum the powers until they vanish or use the closed form.
#
# <details><summary>Hint 1 (a nudge)</summary>Rows are targets and columns sources: on which side of A does w go, so that one step moves from the logits to their sources? If you sum powers, where does the sum start, and how do you know when to stop?</details>
# <details><summary>Hint 2 (the idea)</summary>w A is one step back from the logits, w A² two steps, and so on; w itself is not influence, so start at w A. Keep multiplying the current row vector by A and adding it to the total; the graph has no cycles, so the product eventually becomes exactly zero and the loop ends.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>current = w @ A</code>; then repeatedly <code>current = current @ A</code>, adding each, until <code>current</code> is all zeros.</details>

# %%
def influence(A: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    '''Every node's influence on the weighted logits, over all paths of length 1 and more.'''
    # SOLUTION
    current = w @ A
    total = current.clone()
    while current.abs().sum() > 0:
        current = current @ A
        total = total + current
    return total
    # END SOLUTION


# %% tags=["check"]
checks.check_influence(influence)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def influence(A, w):
#     current = w @ A
#     total = current.clone()
#     while current.abs().sum() > 0:
#         current = current @ A
#         total = total + current
#     return total
# ```
# </details>

# %% [markdown]
# Two numbers say how much of the computation the graph explains (Ameisen et al. 2025):
#
# - the **replacement score**: of the influence that reaches the logits from the inputs and from the error nodes, the inputs' (tokens') share. 1 if no path runs through an error;
# - the **completeness score**: for each node, the share of its normalised inputs that are not errors, averaged with each node's influence on the output (plus its own logit weight) as the weight.
#
# ### Exercise 5 · The scores
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `scores(A, influence, w, errors, tokens)` returning `(replacement, completeness)`; `errors` and `tokens` are index tensors of those nodes.
#
# <details><summary>Hint 1 (a nudge)</summary>For the replacement score, whose influence is compared with whose: every node's, or only two kinds? For the completeness score, which entries of A are a node's inputs from the errors: part of its row, or of its column?</details>
# <details><summary>Hint 2 (the idea)</summary>Replacement: the tokens' summed influence over the tokens' plus the errors' summed influence. Completeness: a node's error share is the sum of its row's entries in the error columns, and its non-error share is one minus that; take the weighted mean of those shares with each node's influence plus its logit weight as the weight.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>influence[tokens].sum()</code> and <code>influence[errors].sum()</code>; per node, <code>1 - A[:, errors].sum(1)</code>; with <code>weight = influence + w</code>, the mean is <code>(share * weight).sum() / weight.sum()</code>.</details>

# %%
def scores(A, influence, w, errors, tokens):
    '''(replacement score, completeness score) of a graph.'''
    # SOLUTION
    from_tokens, from_errors = influence[tokens].sum(), influence[errors].sum()
    weight = influence + w
    return from_tokens / (from_tokens + from_errors), ((1 - A[:, errors].sum(1)) * weight).sum() / weight.sum()
    # END SOLUTION


# %% tags=["check"]
checks.check_scores(scores, graph)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def scores(A, influence, w, errors, tokens):
#     from_tokens, from_errors = influence[tokens].sum(), influence[errors].sum()
#     weight = influence + w
#     return from_tokens / (from_tokens + from_errors), ((1 - A[:, errors].sum(1)) * weight).sum() / weight.sum()
# ```
# </details>

# %% [markdown]
# **Pruning** keeps the nodes that together hold 80% of the total influence (tokens and logits always stay), then the edges that hold 98% of what flows between them, and drops any latent or error left with no edge in or out. The page below draws what is left: positions left to right, layers bottom to top, blue edges raise their target and red ones lower it. Hover a node to see its edges.

# %%
replacement_score, completeness = graph.scores()
keep, kept_edges = graph.prune(node_threshold=0.8, edge_threshold=0.98)
print(f"replacement score {replacement_score:.2f}, completeness {completeness:.2f}")
print(f"pruned to {int(keep.sum())} of {len(graph.nodes):,} nodes and {int(kept_edges.sum()):,} edges")

# %%
# NBVAL_IGNORE_OUTPUT
graph_view(graph, model.tokenizer, title="phi4-tiny predicting the repeat")


# %% [markdown]
# ## 5. Where the graph misleads
#
# **Predict, then run.** Replace one token of the prompt by another random token and measure how much the answer's logit (minus the mean logit) falls in the *real* model. Compare, position by position, with the token's influence in the graph. Where do they disagree most?
#
# <details><summary>Answer (after running the next cell)</summary>At the token before the answer's first occurrence, and at the current (last) token. Both matter causally: the first tells the induction head's keys "the token before me was A", through a previous-token head; the second is the A the head's query looks for. Both act through attention *patterns*, which the graph froze. Replacing either costs the real prediction about as much as replacing the answer's first occurrence, yet the graph gives each a fraction of the first occurrence's influence, and what it does give them flows through value vectors, not through where the heads looked. An attribution graph shows what moved where, never why attention looked there.</details>

# %%
def answer_logit(tokens):
    logits = model(tokens[None])[0, -1]
    return (logits[answer] - logits.mean()).item()

clean_logit = answer_logit(prompt)
g = torch.Generator().manual_seed(7)
drops = []
for pos in range(len(prompt)):
    changed = []
    for _ in range(8):
        corrupt = prompt.clone()
        corrupt[pos] = torch.randint(10, 4000, (), generator=g)
        changed.append(clean_logit - answer_logit(corrupt))
    drops.append(sum(changed) / len(changed))
drops = torch.tensor(drops)
token_influence = graph.influence()[graph.indices("token")]
for pos in (len(first) - 2, len(first) - 1, len(prompt) - 1):
    print(f"position {pos:2d}: the real logit falls by {drops[pos]:5.1f} when the token is replaced; "
          f"share of the graph's token influence {token_influence[pos] / token_influence.sum():.0%}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(7, 2.6))
x = torch.arange(len(prompt))
ax.bar(x - 0.2, drops / drops.abs().max(), width=0.4, label="real model: logit drop when replaced")
ax.bar(x + 0.2, token_influence / token_influence.max(), width=0.4, label="graph: token influence")
ax.set_xticks(x, [model.tokenizer.decode([t])[:6] for t in prompt.tolist()], rotation=60, fontsize=7)
ax.legend(fontsize=8); ax.set_title("what the frozen-attention graph sees, and what it misses", fontsize=9)
plt.tight_layout(); plt.show()

# %% [markdown]
# Two more limits to keep in mind:
#
# - **Error nodes** are computation the transcoders missed. The replacement score above says how much of the influence on the logits went through them; on a prompt unlike the transcoders' training data, it falls.
# - **Direct effects in a linear model.** A latent that matters only by changing attention patterns, or by what an MLP does non-linearly with it, has no edge, however important it is.
#
# **Bonus.**
# 1. `circuit-tracer` (Hanna, Piotrowski et al.) computes the same graphs with cross-layer transcoders on larger models. It needs an older `transformers` than phi4lab pins, so it cannot run in this environment; its graph files and Neuronpedia's viewer use the same node order (features, errors, tokens, logits) as `AttributionGraph`.
# 2. Build the graph of a line of Shakespeare from the corpus (notebook 11's `domain_tokens`) and compare its replacement score with the induction prompt's.
# 3. Split the edge from the answer's first occurrence by the heads of layer 0 as well (`edge_by_head(..., layer=0)`). Which layer-0 heads carry it, and what does that say about how the embedding reaches layer 3?
