# %% [markdown]
# # 11 · Sparse autoencoders: features in superposition, found and used
#
# Notebook 10 read phi4-tiny's circuit off its weights, head by head. Heads are a lucky unit: each one does one job. Directions in the residual stream are not so lucky. A residual stream of 192 dimensions seems to carry far more than 192 things at once, each a direction, most of them off on any one token: **superposition**. Then no single dimension, and no single neuron, means one thing.
#
# A **sparse autoencoder** (SAE) is today's main tool against it (Bricken et al. 2023, *Towards Monosemanticity*; Gao et al. 2024, *Scaling and evaluating sparse autoencoders*). It rewrites each activation as a sparse sum of many more learned directions than the activation has dimensions, hoping each direction is one feature. No public SAEs exist for Phi-4, so this notebook trains its own on phi4-tiny, evaluates them the way the field does, reads them with offline dashboards, and uses them to edit what the model does.
#
# **Objectives.** By the end you can
# 1. say when a model stores features in superposition, from a toy model whose features are known;
# 2. write an SAE's forward pass (TopK), its loss (FVU), and the gradient its training really needs;
# 3. train one on phi4-tiny and see L1's shrinkage that TopK avoids;
# 4. evaluate an SAE: FVU, L0, dead latents, and the loss recovered when the model reads it;
# 5. read a latent with a dashboard, and ablate, clamp or steer it.
#
# **Prerequisites:** notebooks 05 and 10. **Run time:** about a minute on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import matplotlib.pyplot as plt
import torch

import phi4lab
from phi4lab.dictionaries import activations, evaluate, features, files, toy, training
from phi4lab.doctor import require
from phi4lab.exercises import sparse_autoencoders as checks
from phi4lab.recipes import saes as recipe
from phi4lab.viz import features as dashboards

require()
_ = torch.manual_seed(0)
torch.set_grad_enabled(False)      # training turns gradients on where it needs them
model = phi4lab.load("phi4-tiny")
print(f"phi4-tiny: d_model {model.cfg.d_model}, {model.cfg.n_layers} layers, vocabulary {model.cfg.d_vocab:,}")


# %% [markdown]
# ## 1. Superposition, where the features are known
#
# Elhage et al. 2022 (*Toy Models of Superposition*) built the smallest model that can show it. n features go into m < n dimensions and come back out:
#
# $$h = W x, \qquad x' = \mathrm{ReLU}(W^\top h + b),$$
#
# with one column $W_i$ per feature, trained to reconstruct x. Each feature is zero with probability 1 − density and otherwise uniform in [0, 1], and feature i's error is weighted by its importance. Two numbers describe what the model did with feature i: its **norm** ‖W_i‖ (about 1 if stored, about 0 if dropped) and its **interference**, how much the other features project onto its direction, $\sum_{j \ne i} (\hat W_i \cdot W_j)^2$ (0 if it has a direction of its own).
#
# ### Exercise 1 · Norms and interference
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Write `norms_and_interference(W)` for one toy model's `W` of shape `[m, n]` (hidden × features). Return `(norms [n], interference [n])`.
#
# <details><summary>Hint 1 (a nudge)</summary>Is feature i's direction a row or a column of W? And which term of the interference sum must be left out?</details>
# <details><summary>Hint 2 (the idea)</summary>Feature i is the column <code>W[:, i]</code>, so the norms are taken over dim 0, the hidden one. Divide each column by its norm to get Ŵ_i; then every dot product Ŵ_i · W_j is one entry of a single matrix product. Square, sum over j, and take away the j = i term.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>With unit columns <code>U = W / norms</code>, the matrix <code>(U.T @ W) ** 2</code> holds every (Ŵ_i · W_j)²; sum each row, minus its diagonal entry.</details>

# %%
def norms_and_interference(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    '''(||W_i|| for each feature, sum over j != i of (W_i_hat . W_j)^2 for each feature).'''
    # SOLUTION
    norms = W.norm(dim=0)
    dots = ((W / norms.clamp_min(1e-8)).T @ W).pow(2)
    return norms, dots.sum(-1) - dots.diagonal()
    # END SOLUTION


# %% tags=["check"]
checks.check_norms_interference(norms_and_interference)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def norms_and_interference(W):
#     norms = W.norm(dim=0)
#     dots = ((W / norms.clamp_min(1e-8)).T @ W).pow(2)
#     return norms, dots.sum(-1) - dots.diagonal()
# ```
# </details>

# %% [markdown]
# **Predict, then run.** Five features of falling importance go into two dimensions, at three densities: every feature on all the time, on a tenth of the time, and on 3% of the time. How many of the five does each model store?
#
# <details><summary>Answer (after running the next cell)</summary>Dense features: two, the two most important, each with a dimension of its own and no interference, as a principal-component analysis would do. Sparse features: all five, in a pentagon. Two sparse features are rarely on together, so when one fires, the others' small negative projections fall below the ReLU's threshold and are cut off; interference is the price, paid only when features co-occur.</details>

# %%
densities = torch.tensor([1.0, 0.1, 0.03])
toys = toy.train_toy(5, 2, densities, 0.9 ** torch.arange(5), steps=2000, seed=0)
for i in range(3):
    norms, inter = norms_and_interference(toys.model.W.detach()[i])
    print(f"density {densities[i].item():.2f}: {int((norms > 0.5).sum())} of 5 features stored; "
          f"norms {[round(v, 1) for v in norms.tolist()]}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for i, ax in enumerate(axes):
    W = toys.model.W.detach()[i]
    for j in range(5):
        ax.plot([0, W[0, j]], [0, W[1, j]], lw=2, color=plt.cm.viridis(j / 4))
    ax.set(title=f"density {densities[i].item():.2f}", xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal")
    ax.set_xticks([]); ax.set_yticks([])
fig.suptitle("columns of W: five features in two dimensions (yellow = least important)")
plt.tight_layout(); plt.show()

# %% [markdown]
# The paper's smallest case maps the whole story: **two features in one dimension**, with the second feature's importance and both features' density varied. Each of the 64 little models ends in one of three states: feature 2 ignored, stored in superposition with feature 1 (the two columns point in opposite directions), or given the dimension alone. The grid trains all of them at once.

# %%
phase_densities, relative = torch.logspace(-2, 0, 8), torch.logspace(-1, 1, 8)
phases = toy.phase_diagram(phase_densities, relative, steps=1500, seed=0)
names = {toy.NOT_STORED: "not stored", toy.SUPERPOSITION: "superposition", toy.DEDICATED: "dedicated"}
print(f"{phases.numel()} models;", "dense and unimportant:", names[int(phases[0, -1])], "| dense and important:",
      names[int(phases[-1, -1])], "| sparse:", names[int(phases[4, 0])])

# %%
# NBVAL_IGNORE_OUTPUT
plt.figure(figsize=(4.5, 3.5))
plt.pcolormesh(phase_densities, relative, phases, cmap=plt.matplotlib.colors.ListedColormap(["#ddd", "#f4a259", "#2166ac"]),
               vmin=-0.5, vmax=2.5)
plt.xscale("log"); plt.yscale("log")
plt.xlabel("density (1 − sparsity)"); plt.ylabel("importance of feature 2")
plt.title("grey: not stored · orange: superposition · blue: dedicated", fontsize=9)
plt.show()


# %% [markdown]
# Dense features are stored only if they are worth a dimension. Sparse ones share. The cells between the phases are noisy (a few models stop in a local minimum), which the paper's figure shows too.
#
# A real model's features are not known, so what it stores cannot be read off W. But if its features are sparse and outnumber its dimensions, each activation is a sparse sum of feature directions, and that is a problem a dictionary can solve.

# %% [markdown]
# ## 2. The sparse autoencoder, by hand
#
# An SAE with d_sae latents on activations of d_in dimensions (d_sae ≫ d_in):
#
# $$z = \mathrm{TopK}\big((x - b_\text{dec}) W_\text{enc} + b_\text{enc}\big), \qquad \hat x = z\, W_\text{dec} + b_\text{dec},$$
#
# with `W_enc` `[d_in, d_sae]`, `W_dec` `[d_sae, d_in]` whose rows have unit norm, and TopK keeping the k largest pre-activations after a ReLU and zeroing the rest. Each latent is a detector (a column of `W_enc`) and a direction (a row of `W_dec`); the SAE is trained to make x̂ close to x. TopK makes L0, the number of latents on per input, at most k by construction.
#
# ### Exercise 2 · TopK
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `topk_activation(pre, k)`: for pre-activations `[..., d_sae]`, keep the k largest of `relu(pre)` along the last dimension and zero the rest. Same shape out.
#
# <details><summary>Hint 1 (a nudge)</summary>Which tensor method gives the k largest entries along a dimension and where they are? How do you then put those values back at their positions in a tensor of zeros?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>values, indices = torch.relu(pre).topk(k, dim=-1)</code>, then <code>scatter</code> the values into <code>torch.zeros_like(pre)</code> along the last dimension.</details>

# %%
def topk_activation(pre: torch.Tensor, k: int) -> torch.Tensor:
    '''The k largest of relu(pre) per input, the rest zero.'''
    # SOLUTION
    values, indices = torch.relu(pre).topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)
    # END SOLUTION


# %% tags=["check"]
checks.check_topk(topk_activation)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def topk_activation(pre, k):
#     values, indices = torch.relu(pre).topk(k, dim=-1)
#     return torch.zeros_like(pre).scatter(-1, indices, values)
# ```
# </details>

# %% [markdown]
# ### Exercise 3 · The forward pass
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `sae_forward(x, W_enc, b_enc, W_dec, b_dec, k)` returning `(x_hat, z)`, with your `topk_activation`. The check runs it on the shipped layer-2 SAE and real activations too.
#
# <details><summary>Hint 1 (a nudge)</summary>Read the formula above term by term: what happens to x before it meets W_enc, and what is added after W_dec? Where does your topk_activation go?</details>
# <details><summary>Hint 2 (the idea)</summary>The encoder reads x − b_dec: the pre-activations are (x − b_dec) W_enc + b_enc, and your TopK of them is z. The decoder adds b_dec back: x̂ = z W_dec + b_dec.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>z = topk_activation((x - b_dec) @ W_enc + b_enc, k)</code>; return <code>(x_hat, z)</code> in that order.</details>

# %%
def sae_forward(x, W_enc, b_enc, W_dec, b_dec, k):
    '''(reconstruction [..., d_in], latents [..., d_sae]) of a TopK SAE.'''
    # SOLUTION
    z = topk_activation((x - b_dec) @ W_enc + b_enc, k)
    return z @ W_dec + b_dec, z
    # END SOLUTION


# %% tags=["check"]
hook = "blocks.2.hook_resid_post"
sae2, cfg2 = files.shipped_sae(hook)
train_tokens, val_tokens = recipe.corpus_windows(model)          # the SAEs' own data: phi4-tiny's training mixture
acts = activations.collect(model, train_tokens[:384], hook)      # 384 windows x 127 positions
checks.check_sae_forward(sae_forward, sae2, acts)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def sae_forward(x, W_enc, b_enc, W_dec, b_dec, k):
#     z = topk_activation((x - b_dec) @ W_enc + b_enc, k)
#     return z @ W_dec + b_dec, z
# ```
# </details>

# %% [markdown]
# ### Exercise 4 · The fraction of variance unexplained
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# The SAE's loss, and its first quality number, is the **FVU**: the squared error summed over a set of activations, divided by their squared deviations from their mean. 0 is perfect; 1 is no better than predicting the mean. Unlike a raw squared error it means the same on any layer of any model. Write `fvu(x, x_hat)` for `[n, d]` tensors.
#
# <details><summary>Hint 1 (a nudge)</summary>Is the FVU one ratio of two sums, or a mean of per-example ratios? And the mean of x that the deviations are measured from: over which dimension is it taken?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Numerator: the squared error <code>(x - x_hat).pow(2).sum()</code>, over everything. Denominator: the same with <code>x.mean(0)</code>, each dimension's mean over the n activations, in place of <code>x_hat</code>.</details>

# %%
def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    '''The fraction of variance of x that x_hat leaves unexplained, over the whole set: a 0-d tensor.'''
    # SOLUTION
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    # END SOLUTION


# %% tags=["check"]
checks.check_fvu(fvu)
print(f"the shipped layer-2 SAE on these activations: FVU {fvu(acts, sae2(acts)[0]):.3f}")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def fvu(x, x_hat):
#     return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
# ```
# </details>

# %% [markdown]
# ## 3. Training one on phi4-tiny
#
# `training.train_sae` is the loop, short enough to read: `b_dec` starts at the data's mean, the encoder at the decoder's transpose; each step minimises the batch's FVU with Adam; the decoder's rows are kept on the unit sphere; latents that stop firing get an auxiliary loss (section 3's exercises). A small SAE on the activations collected above takes seconds; the shipped ones were trained on 520,192 activations with 3,072 latents.

# %%
small = training.SAEConfig(d_sae=768, kind="topk", k=32, epochs=2, dead_after=20_000, seed=0)
sae_topk, history = training.train_sae(acts, small)
report = evaluate.reconstruction(sae_topk, acts)
print(f"TopK, 768 latents, k = 32, on {len(acts):,} activations: FVU {report.fvu:.2f}, L0 {report.l0:.0f}")
print(f"(the shipped layer-2 SAE: {cfg2['d_sae']:,} latents, k = {cfg2['k']}, trained on "
      f"{cfg2['trained_on_activations']:,} activations)")

# %%
# NBVAL_IGNORE_OUTPUT
plt.figure(figsize=(4.5, 2.5))
plt.plot(history.step, history.fvu)
plt.xlabel("step"); plt.ylabel("batch FVU"); plt.yscale("log"); plt.title("training a small TopK SAE", fontsize=9)
plt.show()


# %% [markdown]
# **L1 and its shrinkage.** The first SAEs were sparse by a penalty instead: a ReLU, and λ Σ_i z_i ‖W_dec[i]‖ added to the loss. The penalty works, but it pulls *every* active latent towards zero, including the ones that should be large. Measure it by the factor γ that best rescales the reconstruction towards x, least squares over the whole set:
#
# $$\gamma = \frac{\sum \hat x \cdot x}{\sum \hat x \cdot \hat x}.$$
#
# γ = 1: no systematic shrinkage. γ > 1: the reconstructions are too small.
#
# ### Exercise 5 · Shrinkage
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `shrinkage(x, x_hat)` returning γ as a 0-d tensor.
#
# <details><summary>Hint 1 (a nudge)</summary>γ is one number for the whole set. What do the sums in the formula run over, and which of x and x̂ appears twice in the denominator?</details>
# <details><summary>Hint 2 (the idea)</summary>Both sums run over every sample and every dimension at once: the numerator adds up x̂ times x entry by entry, the denominator x̂ times x̂. One division for the whole set, not a factor per sample.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>The numerator is <code>(x_hat * x).sum()</code>; the denominator is the same with <code>x_hat</code> in both places.</details>

# %%
def shrinkage(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    '''The least-squares factor gamma that best rescales x_hat towards x.'''
    # SOLUTION
    return (x_hat * x).sum() / (x_hat * x_hat).sum()
    # END SOLUTION


# %% tags=["check"]
checks.check_shrinkage(shrinkage)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def shrinkage(x, x_hat):
#     return (x_hat * x).sum() / (x_hat * x_hat).sum()
# ```
# </details>

# %% [markdown]
# **Predict, then run.** Train a ReLU SAE with an L1 coefficient of 0.1 on the same activations. Will its γ be above 1, below 1, or about 1? And the TopK SAE's?
#
# <details><summary>Answer (after running the next cell)</summary>The L1 SAE's γ is well above 1 (its reconstructions are systematically too short: shrinkage), and it needs far more latents on per token than the TopK SAE to reach a worse FVU. TopK's γ is 1.00: nothing penalises a latent for being large, so nothing shrinks. That is why TopK (and JumpReLU, which Gemma Scope uses) replaced plain L1.</details>

# %%
relu_cfg = training.SAEConfig(d_sae=768, kind="relu", k=None, l1=0.1, epochs=2, dead_after=20_000, seed=0)
sae_relu, _ = training.train_sae(acts, relu_cfg)
for name, sae in (("TopK, k = 32", sae_topk), ("ReLU + L1 (0.1)", sae_relu)):
    r = evaluate.reconstruction(sae, acts)
    print(f"{name:16s} FVU {r.fvu:.2f}  L0 {r.l0:5.0f}  gamma {shrinkage(acts, sae(acts)[0]):.2f}")


# %% [markdown]
# ### Exercise 6 · The gradient TopK really needs
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵⚪⚪⚪ · about 25 minutes
#
# Only k of the d_sae latents reach the loss for each input, so only k columns of `W_enc` get gradient from it. Autograd does not know that: through a dense `x_c @ W_enc` it does d_sae × d_in work per input, twice. phi4lab's encoder (`sae._TopKEncode`) writes the backward pass by hand, and that is what brought its training time near eai-sparsify's.
#
# Write `encoder_grad(x_c, indices, values, grad_values, d_sae)`: the gradient of the loss with respect to `W_enc` (`[d_in, d_sae]`), given the centred inputs `x_c` `[n, d_in]`, the k chosen latents per input `indices` `[n, k]`, their kept values (after the ReLU) `values` `[n, k]`, and the loss's gradient with respect to those values `grad_values` `[n, k]`. Use only the k chosen columns; never form an `[n, d_sae]` tensor.
#
# <details><summary>Hint 1 (a nudge)</summary>Which columns of W_enc does one input's loss reach, and through which values? What does the ReLU do to the gradient of a kept value that is 0?</details>
# <details><summary>Hint 2 (the idea)</summary>Kept value v = relu(x_c · W_enc[:, j] + b_enc[j]) for the chosen j. Its derivative with respect to column j is x_c, where the ReLU let it through (v > 0), and 0 where it did not.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Column j collects x_c[n] · g[n, slot] for every (input, slot) that chose j. <code>torch.zeros(d_sae, d_in, dtype=x_c.dtype).index_add_(0, indices.flatten(), contributions)</code> sums them (the check's inputs are float64); transpose at the end.</details>

# %%
def encoder_grad(x_c, indices, values, grad_values, d_sae):
    '''d loss / d W_enc [d_in, d_sae] of a TopK encoder, from the k chosen latents per input only.'''
    # SOLUTION
    g = grad_values * (values > 0)
    out = torch.zeros(d_sae, x_c.shape[-1], dtype=x_c.dtype)
    out.index_add_(0, indices.flatten(), (g[..., None] * x_c[:, None]).reshape(-1, x_c.shape[-1]))
    return out.T
    # END SOLUTION


# %% tags=["check"]
checks.check_encoder_grad(encoder_grad)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def encoder_grad(x_c, indices, values, grad_values, d_sae):
#     g = grad_values * (values > 0)
#     out = torch.zeros(d_sae, x_c.shape[-1], dtype=x_c.dtype)
#     out.index_add_(0, indices.flatten(), (g[..., None] * x_c[:, None]).reshape(-1, x_c.shape[-1]))
#     return out.T
# ```
# </details>

# %% [markdown]
# ### Exercise 7 · AuxK: bringing dead latents back
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵⚪⚪ · about 20 minutes
#
# A latent that never makes the top k gets no gradient, so it never will: it is **dead**, wasted capacity. Gao et al.'s AuxK loss gives the dead ones a job: the `aux_k` dead latents with the largest pre-activations, and only they, try to reconstruct the **error** the live latents left, `x - x_hat`. Their values go through the ReLU and their decoder rows, the squared error is averaged over the batch and divided by the variance (as the FVU is), and the result is added to the loss with a small coefficient.
#
# Write `aux_loss(pre, error, dead, W_dec, aux_k, variance)`: `pre` `[n, d_sae]`, `error` `[n, d]`, `dead` `[d_sae]` (bool), `W_dec` `[d_sae, d]`, `variance` a 0-d tensor. If fewer than `aux_k` latents are dead, use them all.
#
# <details><summary>Hint 1 (a nudge)</summary>Only dead latents may compete: what pre-activation makes a live latent lose every top-k comparison? And what do the chosen latents try to reconstruct?</details>
# <details><summary>Hint 2 (the idea)</summary>Give the live latents −∞ and take, per input, the top min(aux_k, number of dead latents) pre-activations. ReLU the chosen values, put them into zeros <code>[n, d_sae]</code> at their latents, and decode with <code>W_dec</code> (no bias: the target is the error). The loss is the squared error against <code>error</code>, summed over d, averaged over the n inputs, divided by <code>variance</code>.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>top = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)</code> picks among the dead only; <code>torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values)) @ W_dec</code> is their reconstruction.</details>

# %%
def aux_loss(pre, error, dead, W_dec, aux_k, variance):
    '''How well the aux_k most active dead latents reconstruct the live latents' error, FVU-normalised.'''
    # SOLUTION
    top = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)
    revived = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values)) @ W_dec
    return (error - revived).pow(2).sum(-1).mean() / variance
    # END SOLUTION


# %% tags=["check"]
checks.check_aux_loss(aux_loss)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def aux_loss(pre, error, dead, W_dec, aux_k, variance):
#     top = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)
#     revived = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values)) @ W_dec
#     return (error - revived).pow(2).sum(-1).mean() / variance
# ```
# </details>

# %% [markdown]
# ## 4. Evaluating the shipped SAEs
#
# FVU says how well an SAE reconstructs; it does not say whether the model can *use* the reconstruction. The test that matters splices the SAE in: the layer after the hook reads x̂ instead of x. Compare the next-token loss with the clean model's and with the loss when the activation is zeroed instead; **loss recovered** = (zero − spliced) / (zero − clean). 1 means the model loses nothing by reading the SAE.
#
# phi4lab ships two SAEs for phi4-tiny, on the residual stream after layers 2 and 3 (3,072 latents, k = 32), in SAELens's file format and hash-checked on load. `phi4lab build-saes` rebuilds them from scratch in about three minutes. The next cell measures them on the validation split, which neither the model nor the SAEs saw.
#
# **Predict, then run.** Which SAE leaves more of the loss on the table when spliced in, layer 2's or layer 3's? (Hint: what does the layer-3 residual stream feed?)
#
# <details><summary>Answer (after running the next cell)</summary>Layer 3's, though its FVU is lower. Its residual stream is the model's last: the final norm and the unembedding read it directly, so every error lands on the logits. Layer 2's error still passes through a whole layer, which tolerates some of it. A lower FVU is not a smaller cost; that is why loss recovered is reported beside it.</details>

# %%
val_hooks = list(recipe.HOOKS)
val_acts = activations.collect(model, val_tokens, val_hooks)
shipped = {}
for h in val_hooks:
    sae, cfg = files.shipped_sae(h)
    r = evaluate.evaluate(model, sae, val_acts[h], val_tokens, h)
    shipped[h] = sae
    print(f"{h}: FVU {r.fvu:.3f}, L0 {r.l0:.0f}, dead {r.dead:.1%}, loss clean {r.clean_loss:.3f} / "
          f"spliced {r.spliced_loss:.3f} / zeroed {r.zero_loss:.3f}: {r.loss_recovered:.1%} recovered")
    print(f"  goals L0 <= 32, FVU <= 0.15, recovered >= 85%: {r.l0 <= 32 and r.fvu <= 0.15 and r.loss_recovered >= 0.85}")

# %% [markdown]
# "Dead" here means never firing on the validation split's tokens; a latent that fires once in ten thousand tokens looks dead on so few. The quality goals these SAEs were built to (L0 at most 32, FVU at most 0.15, at least 85% of the loss recovered) are checked by the test suite on every run.

# %% [markdown]
# ## 5. Reading a latent: dashboards
#
# What does a latent mean? A **dashboard** shows the contexts where it fires hardest, how often it fires, and the tokens its decoder direction raises most through the unembedding (read directly, as in notebook 10's direct logit attribution). phi4lab's pages are self-contained HTML, so they work offline and can be saved and shared.
#
# Notebook 05 found induction heads in layer 3. What they write should be visible to the layer-3 SAE: on repeated random tokens, is there a latent that fires on the second copy and not on the first?

# %%
g = torch.Generator().manual_seed(0)
first = torch.randint(10, model.cfg.d_vocab - 5, (32, 24), generator=g)
repeats = torch.cat([first, first], dim=1)                          # 24 random tokens, then the same 24 again
sae3 = shipped["blocks.3.hook_resid_post"]
z3 = features.latent_activations(model, sae3, repeats, "blocks.3.hook_resid_post") > 0
on_first, on_second = z3[:, 1:24].float().mean((0, 1)), z3[:, 25:].float().mean((0, 1))
induction_latent = int((on_second - on_first).argmax())
print(f"latent {induction_latent}: fires on {on_second[induction_latent]:.0%} of second-copy tokens "
      f"and {on_first[induction_latent]:.0%} of first-copy tokens")

# %%
# NBVAL_IGNORE_OUTPUT
latents3 = features.latent_activations(model, sae3, repeats[:16], "blocks.3.hook_resid_post")
dashboards.feature_dashboard(model, sae3, latents3, repeats[:16], induction_latent, name="layer 3")

# %% [markdown]
# The corpus mixes Shakespeare with Python. Some layer-2 latents should belong to one of them. The next cell finds, for each domain, the latent that fires most often on it while almost never on the other, and the feature index below lists a few with a search box.

# %%
from phi4lab.recipes import corpus as corpus_data
from phi4lab.recipes.tiny import token_stream

built = corpus_data.build_corpus(progress=False)
domain_tokens, rates = {}, {}
for domain in ("prose", "code"):
    domain_tokens[domain] = token_stream(model.tokenizer, built.validation, domain)[: 16 * 128].long().reshape(16, 128)
    lat = features.latent_activations(model, sae2, domain_tokens[domain], hook)
    rates[domain] = (lat[:, 1:] > 0).float().mean((0, 1))
code_latent = int(torch.where(rates["prose"] < 0.002, rates["code"], torch.zeros(())).argmax())
prose_latent = int(torch.where(rates["code"] < 0.002, rates["prose"], torch.zeros(())).argmax())
for name, i in (("code", code_latent), ("prose", prose_latent)):
    print(f"{name} latent {i}: on {rates['code'][i]:.1%} of code tokens, {rates['prose'][i]:.1%} of prose tokens")

# %%
# NBVAL_IGNORE_OUTPUT
mixed = torch.cat([domain_tokens["prose"][:8], domain_tokens["code"][:8]])
latents2 = features.latent_activations(model, sae2, mixed, hook)
dashboards.feature_dashboard(model, sae2, latents2, mixed, code_latent, name="layer 2")

# %%
# NBVAL_IGNORE_OUTPUT
dashboards.feature_index(model, sae2, latents2, mixed, which=[code_latent, prose_latent, *range(8)], name="layer 2")


# %% [markdown]
# ## 6. Using a latent: ablate, clamp, steer
#
# A latent is a direction; editing the activation along it tests what the model does with it. **Ablating** removes the latent's part, x → x − z_i W_dec[i], and leaves everything else, including the SAE's error x − x̂, which the model also uses. (Replacing x by the SAE's reconstruction would change two things at once.)
#
# ### Exercise 8 · An ablation hook
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `make_ablate_hook(sae, latent)`: return a TransformerLens hook `hook(x, hook) -> new x` that subtracts `z_i * W_dec[i]` at every position, where `z_i` is the latent's value there (`sae.encode(x)`). Do not change `x` in place.
#
# <details><summary>Hint 1 (a nudge)</summary>The latent's value is one number per position, and its direction has d_in entries: what shape must the value have to scale the direction at every position? And how do you subtract without touching x?</details>
# <details><summary>Hint 2 (the idea)</summary>Encode <code>x</code>, keep only this latent's value with its last dimension (size one), multiply by the latent's decoder row <code>sae.W_dec[latent]</code>, and return <code>x</code> minus that product as a new tensor (<code>x - ...</code>, not <code>x -= ...</code>).</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>z = sae.encode(x)[..., latent:latent + 1]</code> keeps the last dimension for broadcasting against <code>sae.W_dec[latent]</code>; the hook is a closure over <code>sae</code> and <code>latent</code>.</details>

# %%
def make_ablate_hook(sae, latent):
    '''A hook that removes one latent's contribution from the activation, keeping the SAE's error.'''
    # SOLUTION
    def hook(x, hook):
        return x - sae.encode(x)[..., latent:latent + 1] * sae.W_dec[latent]
    return hook
    # END SOLUTION


# %% tags=["check"]
checks.check_ablate_hook(make_ablate_hook, sae2, acts)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def make_ablate_hook(sae, latent):
#     def hook(x, hook):
#         return x - sae.encode(x)[..., latent:latent + 1] * sae.W_dec[latent]
#     return hook
# ```
# </details>

# %% [markdown]
# **Predict, then run.** Ablate the second-copy latent of layer 3 on the repeated sequences. Does phi4-tiny lose its ability to predict the second copy?
#
# <details><summary>Answer (after running the next cell)</summary>No: the loss on the second copy barely moves. The latent *reports* that the induction heads fired; it is not the prediction itself, which the heads write into many directions at once (notebook 10 found all eight layer-3 heads sharing the job). A latent that marks a behaviour is not always a latent that carries it; only an intervention tells them apart.</details>

# %%
from phi4lab.training.loop import next_token_losses

def second_copy_loss(logits):
    return next_token_losses(logits, repeats)[:, 24:].mean().item()   # predictions of tokens 25 onwards

clean = second_copy_loss(model(repeats))
ablated = second_copy_loss(model.run_with_hooks(repeats, fwd_hooks=[("blocks.3.hook_resid_post",
                                                                     make_ablate_hook(sae3, induction_latent))]))
first_copy = next_token_losses(model(repeats), repeats)[:, :23].mean().item()
print(f"loss on the second copy: clean {clean:.2f}, latent {induction_latent} ablated {ablated:.2f} "
      f"(first copy, which no head can predict: {first_copy:.2f})")

# %% [markdown]
# **Steering** adds a latent's direction everywhere, α W_dec[i], whether it fired or not. The code latent's direction, added to Shakespeare at layer 2, should move the next-token predictions towards code. `features.output_tokens` reads which tokens the direction pushes directly; the run says what the last two layers make of it, measured as the probability the model puts on tokens that appear in the code sample and nowhere in the prose sample.
#
# **Predict, then run.** The residual stream's norm at layer 2 is printed first. How large must α be, compared with it, before the predictions move noticeably towards code?
#
# <details><summary>Answer (after running the next cell)</summary>Comparable with the norm. A step of 8, a fifth of it, barely moves the code-only mass; 32 multiplies it several times over. The rest of the residual stream still says "Shakespeare", and the direction has to outvote it. Steering strengths are always relative to the stream they are added to.</details>

# %%
up, _ = features.output_tokens(model, sae2, code_latent, k=8)
print("the code latent's direction raises, directly:", [model.tokenizer.decode([t]) for t in up])
prose = domain_tokens["prose"][:4]
code_only = torch.tensor(sorted(set(domain_tokens["code"].flatten().tolist()) - set(domain_tokens["prose"].flatten().tolist())))
base = model(prose)[:, 1:].softmax(-1)[..., code_only].sum(-1).mean()
print(f"residual stream norm at layer 2 on this prose: {model.run_with_cache(prose, names_filter=hook)[1][hook].norm(dim=-1).mean():.0f}")
for alpha in (8.0, 16.0, 32.0):
    steered = features.run_with_edit(model, sae2, prose, hook, code_latent, mode="steer", value=alpha)
    mass = steered[:, 1:].softmax(-1)[..., code_only].sum(-1).mean()
    print(f"steered by {alpha:4.0f}: probability on the {len(code_only)} tokens seen in code but never in this prose: "
          f"{base:.3f} -> {mass:.3f}")

# %% [markdown]
# ## 7. What an SAE misses, and where to go next
#
# - **The error term.** The shipped SAEs leave a few per cent of the variance unexplained, and the loss recovered shows the model notices. Every conclusion drawn from latents alone is about the SAE's model of phi4-tiny, not phi4-tiny; notebook 12 keeps the error in view as explicit nodes.
# - **Dead and dense latents.** A few per cent of latents never fire on the validation split; training longer, AuxK, and better initialisation reduce that.
# - **Which layer?** An SAE on the residual stream sees everything written so far. A *transcoder*, which reads an MLP's input and predicts its output, explains the MLP's computation instead; notebook 12 builds attribution graphs from them.
#
# **Bonus.**
# 1. `benchmarks/sae_train.py` trains phi4lab's SAE and eai-sparsify's on the same activations for the same budget and prints time, FVU, L0 and dead fraction side by side. Run it, and read how sparsify's trainer differs.
# 2. Sweep k for TopK (8, 16, 32, 64) on the activations above and plot FVU against L0: the sparsity–fidelity frontier.
# 3. Clamp the prose latent to a large value on code (`mode="clamp"`) and look at what the model predicts.
