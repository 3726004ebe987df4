# %% [markdown]
# # 04 · Pretraining: the loop, the optimizers, and an induction head forming
#
# Pretraining is one idea repeated billions of times: predict the next token, measure how wrong you were, nudge every weight to be a little less wrong. Phi-4 did it for about 10T tokens on 1,920 H100 GPUs for 21 days. You will build the same loop, run it on your CPU for a few seconds, and then study the result of running it for longer: **phi4-tiny**, the Phi-4-architecture twin that ships with the course.
#
# **Objectives.** By the end you can
# 1. write the four lines of a training step and the loss they minimise;
# 2. explain warm-up and decay, gradient clipping and accumulation, and mixed precision;
# 3. compare AdamW with the trust-ratio optimizers LAMB and LARS;
# 4. read phi4-tiny's training log, where its induction heads form, and watch the same phase change in a 2-layer model, but not in a 1-layer one.
#
# **Prerequisites:** notebooks 00 and 03. **Run time:** about 2 minutes on a laptop CPU. **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import phi4lab
from phi4lab.model import config as C
from phi4lab.recipes import corpus
from phi4lab.recipes import tiny
from phi4lab.training import loop as T
from phi4lab.doctor import require
from phi4lab.viz.figures import use_static_fallbacks
from phi4lab.exercises import pretraining as checks

require()
use_static_fallbacks()   # each plotly figure also keeps a PNG copy, for viewers without plotly's JavaScript
_ = torch.manual_seed(0)
DATA = Path(phi4lab.__file__).parents[1] / "data"


# %% [markdown]
# ## 1. The loss
#
# A language model outputs, at every position *t*, a score (logit) for every token of the vocabulary. Softmax turns the scores into a probability distribution over the **next** token, and the loss is the average negative log-probability the model gave to the token that actually came next: the **cross-entropy**. A model that knows nothing spreads its bets evenly and scores log(vocabulary size): 8.32 nats for phi4-tiny's 4,096 tokens.

# %% [markdown]
# ### Exercise 1 · The next-token loss
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `next_token_loss(logits, tokens)` for logits `[batch, seq, vocab]` and tokens `[batch, seq]`: the mean cross-entropy of predicting `tokens[:, t+1]` from `logits[:, t]`. Upcast the logits to fp32 first.
#
# <details><summary>Hint 1 (a nudge)</summary>The logits at position t predict the token at t + 1. Which position then has nothing to predict, and which token is never predicted?</details>
# <details><summary>Hint 2 (the idea)</summary>Shift by one: the logits of every position but the last, against the tokens of every position but the first. F.cross_entropy wants the scores as [N, vocab] and the targets as [N], so merge the batch and sequence dimensions of both; its default reduction is already the mean.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>logits[:, :-1].float()</code> against <code>tokens[:, 1:]</code>; <code>.flatten(0, 1)</code> on the logits and <code>.flatten()</code> on the tokens give <code>F.cross_entropy</code> its shapes.</details>

# %%
def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    '''Mean cross-entropy of predicting token t+1 from the logits at position t.'''
    # SOLUTION
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), tokens[:, 1:].flatten())
    # END SOLUTION


# %% tags=["check"]
checks.check_next_token_loss(next_token_loss)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def next_token_loss(logits, tokens):
#     return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), tokens[:, 1:].flatten())
# ```
# Hugging Face's `model(x, labels=x).loss` does the same shift inside the model.
# </details>

# %% [markdown]
# ## 2. One step
#
# Forward, loss, backward, update, and clear the gradients for the next step: PyTorch *adds* each new gradient to `.grad`, which is what makes gradient accumulation possible and forgetting `zero_grad` a classic bug.

# %% [markdown]
# ### Exercise 2 · A training step
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵🔵 · about 10 minutes
#
# Write `train_step(model, optimizer, tokens)`: one optimisation step of a Hugging Face model on a batch of tokens, with the loss of `phi4lab.training.loop.lm_loss` (the reference version of your function), leaving no gradients behind for the next step; return the loss as a Python float. The check runs two steps and compares the weights with a reference loop's.
#
# <details><summary>Hint 1 (a nudge)</summary>Four things happen in a step, in a fixed order. Which one, forgotten, makes the second step use the first step's gradients too?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>model(tokens).logits</code>; the loss; <code>loss.backward()</code>, <code>optimizer.step()</code>, <code>optimizer.zero_grad()</code>; return <code>loss.item()</code>.</details>

# %%
def train_step(model, optimizer, tokens: torch.Tensor) -> float:
    '''One optimizer step on one batch; returns the loss before the step.'''
    # SOLUTION
    loss = T.lm_loss(model(tokens).logits, tokens)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()
    # END SOLUTION


# %% tags=["check"]
from phi4lab.model.loading import random_hf_model

def small_model(vocab=4096, seed=0):
    return random_hf_model(C.scaled(d_model=64, n_layers=2, n_kv_heads=1, vocab_size=vocab), seed=seed)

checks.check_train_step(train_step, lambda: small_model(vocab=97))


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def train_step(model, optimizer, tokens):
#     loss = T.lm_loss(model(tokens).logits, tokens)
#     loss.backward()
#     optimizer.step()
#     optimizer.zero_grad()
#     return loss.item()
# ```
# </details>

# %% [markdown]
# ## 3. The learning-rate schedule
#
# A fresh network's gradients are large and badly aimed; a big step then can wreck it. So the learning rate **warms up** linearly from near 0, then **decays**, because late in training smaller steps settle into a better minimum. Phi-4 used "linear warm-up and decay" to a peak of 3e-4 with weight decay 0.1 (technical report, p. 7). Most small-model recipes, phi4-tiny's included, decay along a cosine to a floor.

# %% [markdown]
# ### Exercise 3 · Warm-up and cosine decay
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `lr_schedule(step, peak, warmup, total, min_ratio)` with `step` counted from 0: a linear warm-up over the first `warmup` steps whose first step already learns and whose last reaches `peak`, then a half cosine from `peak` at step `warmup` down to `peak * min_ratio` at step `total - 1`.
#
# <details><summary>Hint 1 (a nudge)</summary>With steps counted from 0, what fraction of the peak should step 0 get, so that step warmup − 1 gets all of it?</details>
# <details><summary>Hint 2 (the idea)</summary>Warm-up: peak · (step + 1) / warmup. After it, progress = (step − warmup) / (total − warmup − 1) runs from 0 to 1.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>floor + (peak − floor) · ½ · (1 + cos(π · progress)), with floor = peak · min_ratio.</details>

# %%
def lr_schedule(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    '''Linear warm-up to `peak`, then cosine decay to `peak * min_ratio` at the last step.'''
    # SOLUTION
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup - 1)
    floor = peak * min_ratio
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # END SOLUTION


# %% tags=["check"]
checks.check_lr_schedule(lr_schedule)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def lr_schedule(step, peak, warmup, total, min_ratio):
#     if step < warmup:
#         return peak * (step + 1) / warmup
#     progress = (step - warmup) / (total - warmup - 1)
#     floor = peak * min_ratio
#     return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
# ```
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
from phi4lab.training.optim import lr_at

steps = list(range(2000))
fig = go.Figure()
fig.add_scatter(x=steps, y=[lr_at(s, peak=2e-3, warmup=100, total=2000, schedule="cosine") for s in steps],
                name="cosine (phi4-tiny's mixture phase: peak 2e-3, 100 warm-up steps)")
fig.add_scatter(x=steps, y=[lr_at(s, peak=2e-3, warmup=100, total=2000, schedule="linear") for s in steps],
                name="linear (Phi-4's shape)")
fig.update_layout(title="Learning-rate schedules", xaxis_title="step", yaxis_title="learning rate", height=330)
fig.show()


# %% [markdown]
# ## 4. Clipping, accumulation, precision
#
# **Gradient clipping** bounds the *global* norm of all gradients together: if it exceeds `max_norm`, every gradient is scaled by the same factor, so the step keeps its direction but not its size. **Gradient accumulation** sums the gradients of several micro-batches before one step: the same update as one big batch, in the memory of a small one (phi4lab's tests check the equality).

# %% [markdown]
# ### Exercise 4 · Clip gradients by their global norm
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `clip_gradients(grads, max_norm)` for a list of gradient tensors: return them scaled, all by one factor, so that their global norm is at most `max_norm` (and unchanged when it already is), as `torch.nn.utils.clip_grad_norm_` does with its 1e-6 guard against a zero norm.
#
# <details><summary>Hint 1 (a nudge)</summary>"Global": one norm over every entry of every tensor, not one per tensor. Why must every tensor get the same factor?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>total = torch.sqrt(sum((g ** 2).sum() for g in grads))</code>; <code>scale = min(1.0, max_norm / (total + 1e-6))</code>.</details>

# %%
def clip_gradients(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    '''Scale all gradients by one factor so that their global norm is at most max_norm.'''
    # SOLUTION
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    scale = min(1.0, max_norm / (total + 1e-6))
    return [g * scale for g in grads]
    # END SOLUTION


# %% tags=["check"]
checks.check_clip_gradients(clip_gradients)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def clip_gradients(grads, max_norm):
#     total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
#     scale = min(1.0, max_norm / (total + 1e-6))
#     return [g * scale for g in grads]
# ```
# This is what `torch.nn.utils.clip_grad_norm_` does in place.
# </details>

# %% [markdown]
# ### Exercise 5 · Gradient accumulation
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 15 minutes
#
# Phi-4 was trained with a global batch of 5,760 sequences; no GPU holds that many at once. Write `accumulated_gradients(model, tokens, sizes)`: split the batch `tokens` into micro-batches of `sizes` rows (`tokens.split(sizes)`), run forward and backward on each in turn, and return the gradients (`[p.grad for p in model.parameters()]`) that result. They must equal the gradient of `T.lm_loss(model(tokens).logits, tokens)` on the whole batch at once, also when the micro-batches differ in size. Start from zeroed gradients.
#
# <details><summary>Hint 1 (a nudge)</summary>A backward pass adds into the gradients that are already there. If each micro-batch's loss is a mean over its own rows, what does the sum of their gradients compute, and how does it differ from the gradient of the whole batch's mean?</details>
# <details><summary>Hint 2 (the idea)</summary>The big batch's loss is the mean over all rows, so it is a weighted sum of the micro-batches' mean losses, each weighted by its share of the rows. Scale each micro-batch's loss by that share before its backward pass.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>After <code>model.zero_grad()</code>, for each <code>chunk</code> of <code>tokens.split(sizes)</code>: <code>(T.lm_loss(model(chunk).logits, chunk) * len(chunk) / len(tokens)).backward()</code>.</details>

# %%
def accumulated_gradients(model, tokens: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    '''Gradients after backward passes on micro-batches of `sizes` rows: those of the whole batch.'''
    # SOLUTION
    model.zero_grad()
    for chunk in tokens.split(sizes):
        (T.lm_loss(model(chunk).logits, chunk) * (len(chunk) / len(tokens))).backward()
    return [p.grad for p in model.parameters()]
    # END SOLUTION


# %% tags=["check"]
checks.check_accumulated_gradients(accumulated_gradients, lambda: small_model(vocab=97))

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def accumulated_gradients(model, tokens, sizes):
#     model.zero_grad()
#     for chunk in tokens.split(sizes):
#         (T.lm_loss(model(chunk).logits, chunk) * (len(chunk) / len(tokens))).backward()
#     return [p.grad for p in model.parameters()]
# ```
#
# With equal micro-batches the share is 1 / (number of micro-batches), which is why training loops divide the loss by the accumulation steps. Weighting by rows is right here because every row has the same number of tokens; with padded rows of different lengths, weight by tokens.
# </details>

# %% [markdown]
# **Mixed precision** runs the matmuls in a 16-bit format while the weights stay fp32. bf16 keeps fp32's exponent range, so it needs nothing more; fp16 has a narrow range, so small gradients underflow to 0 unless the loss is first multiplied by a large **scale** (a `GradScaler`), which backs off when a step overflows. `phi4lab.training.loop` offers `precision="fp32" | "bf16" | "fp16"`. Whether 16-bit is *faster* is a property of your hardware, not of the format: on a CPU without native bf16 instructions it is many times slower. Measure it where you are:

# %%
# NBVAL_IGNORE_OUTPUT
batch = torch.randint(0, 4096, (8, 128), generator=torch.Generator().manual_seed(0))
for precision in ("fp32", "bf16"):
    model = small_model()
    t0 = time.perf_counter()
    T.train(model, lambda i: batch, T.TrainConfig(steps=8, warmup_steps=1, precision=precision, progress=False))
    print(f"{precision}: {(time.perf_counter() - t0) / 8 * 1000:6.0f} ms per step on this machine")
print("CPU capability:", torch.backends.cpu.get_cpu_capability())

# %% [markdown]
# ## 5. A real run, in seconds
#
# `phi4lab.training.loop.train(model, get_batch, config)` is the loop with all of the above, plus a progress bar, a JSON log, safetensors checkpoints with resume, a memory pre-flight, and Hugging Face `accelerate` so the same code runs under `accelerate launch` on several GPUs. `get_batch(i)` returns the *i*-th batch, a pure function of *i*, so an interrupted run that resumes sees exactly the batches it would have seen.
#
# We train a 2-layer, d_model 64 model on Python source from the standard library, tokenised with phi4-tiny's tokenizer, for 150 steps:

# %%
from transformers import PreTrainedTokenizerFast

tokenizer = PreTrainedTokenizerFast.from_pretrained(DATA / "phi4-tiny")
files = [d for d in corpus.stdlib_documents() if d.name.startswith(("code/json/", "code/email/", "code/asyncio/"))]
train_docs = [d for d in files if not corpus.is_validation(d.name)]
val_docs = [d for d in files if corpus.is_validation(d.name)]
# one stream per split, <|endoftext|> between files (the same helper built phi4-tiny's streams)
stream, val_stream = (tiny.token_stream(tokenizer, docs, "code").long() for docs in (train_docs, val_docs))
print(f"{len(train_docs)} training files: {len(stream):,} tokens; {len(val_docs)} validation files: {len(val_stream):,} tokens")

def get_batch(i, batch=8, seq=128):
    g = torch.Generator().manual_seed(i)
    starts = torch.randint(0, len(stream) - seq, (batch,), generator=g)
    return torch.stack([stream[s:s + seq] for s in starts])


# %%
# NBVAL_IGNORE_OUTPUT
from phi4lab.viz.training import LiveLossPlot

model = small_model()
before = T.perplexity(model, val_stream, max_length=128, stride=128)
cfg = T.TrainConfig(steps=150, lr=3e-3, warmup_steps=15, log_every=10, seed=0)
history = T.train(model, get_batch, cfg, callback=LiveLossPlot(every=5))
after = T.perplexity(model, val_stream, max_length=128, stride=128)
print(f"validation perplexity: {before['ppl']:,.0f} before, {after['ppl']:,.1f} after "
      f"({history[-1]['tokens']:,} tokens in {history[-1]['seconds']:.0f} s)")

# %%
print(f"loss went from {history[0]['loss']:.2f} (uniform guessing is {math.log(4096):.2f}) to {history[-1]['loss']:.2f}")
assert history[-1]["loss"] < history[0]["loss"] - 2, "the short run should learn something"


# %% [markdown]
# **Perplexity** is exp(mean loss): the number of tokens the model is "choosing between" on average. A stream longer than the model's context is scored in windows. Windows that start every `max_length` tokens give the first tokens of each window almost no context; windows that start every `stride < max_length` tokens overlap, and each token is scored in the first window where it is new, with at least `max_length − stride` tokens before it.
#
# ### Exercise 6 · Sliding-window perplexity
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 20 minutes
#
# Write `sliding_perplexity(model, tokens, max_length, stride)` for a 1-D token stream and a Hugging Face model: windows of up to `max_length` tokens starting at 0, `stride`, 2·`stride`, ... (the last one may be shorter, and the loop stops once a window reaches the end), every token scored at most once, in the first window that contains it as a *new* token (a window's first token has nothing before it in the window, so with windows side by side it goes unscored, as it does in `T.perplexity`). Return the perplexity as a float. The check compares it with `T.perplexity`.
#
# <details><summary>Hint 1 (a nudge)</summary>How many of a window's predictions are for tokens that no earlier window scored? Keep track of where the last window ended.</details>
# <details><summary>Hint 2 (the idea)</summary>A window [begin, end) gives end − begin − 1 predictions, of tokens begin + 1 … end − 1; the new ones are the last end − prev_end of them (all of them, for the first window). Sum the new tokens' losses over all windows and divide by how many were scored, then take exp.</details>

# %%
def sliding_perplexity(model, tokens: torch.Tensor, max_length: int, stride: int) -> float:
    '''exp(mean loss) over a stream, every token scored once, windows of max_length every stride tokens.'''
    # SOLUTION
    nll, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(tokens), stride):
        end = min(begin + max_length, len(tokens))
        window = tokens[begin:end][None]
        losses = F.cross_entropy(model(window).logits[0, :-1].float(), window[0, 1:], reduction="none")
        new = losses[-min(end - prev_end, len(losses)):]
        nll, count, prev_end = nll + new.sum().item(), count + len(new), end
        if end == len(tokens):
            break
    return math.exp(nll / count)
    # END SOLUTION


# %% tags=["check"]
checks.check_sliding_perplexity(sliding_perplexity, lambda: small_model(vocab=97))

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def sliding_perplexity(model, tokens, max_length, stride):
#     nll, count, prev_end = 0.0, 0, 0
#     for begin in range(0, len(tokens), stride):
#         end = min(begin + max_length, len(tokens))
#         window = tokens[begin:end][None]
#         losses = F.cross_entropy(model(window).logits[0, :-1].float(), window[0, 1:], reduction="none")
#         new = losses[-min(end - prev_end, len(losses)):]
#         nll, count, prev_end = nll + new.sum().item(), count + len(new), end
#         if end == len(tokens):
#             break
#     return math.exp(nll / count)
# ```
#
# The Hugging Face guide's version averaged each window's mean loss, which weighs a short last window as much as a full one; summing per token is exact.
# </details>

# %% [markdown]
# ## 6. Optimizers on the same budget
#
# AdamW gives each parameter its own step size. **LAMB** and **LARS** add a *layer-wise trust ratio*: each tensor's update is rescaled so its size is proportional to the size of that tensor's weights. They were invented for enormous batches (LAMB trained BERT at batch 64k); at CPU batch sizes they buy nothing, but the trust ratio is worth seeing.
#
# The two are easy to confuse, and differ in what the trust ratio rescales:
#
# | | base update | trust ratio | step |
# |---|---|---|---|
# | **LARS** (You et al. 2017) | the gradient plus weight decay, g + λw | η‖w‖ / (‖g‖ + λ‖w‖) | SGD with momentum on trust × (g + λw) |
# | **LAMB** (You et al. 2019) | Adam's bias-corrected m̂ / (√v̂ + ε), plus λw | ‖w‖ / ‖update‖ | w − lr × trust × update |
#
# LARS is SGD-momentum made layer-wise; LAMB is Adam made layer-wise. (η, LARS's trust coefficient, is small, which is why its nominal learning rate is large.)

# %% [markdown]
# ### Exercise 7 · The LAMB trust ratio
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `trust_ratio(w, update)`: the factor LAMB applies to a tensor's update so that the step's size is proportional to the weights' size, as the paragraph above describes; 1.0 when either norm is 0 (a zero-initialised tensor, or no gradient). Return a 0-d tensor.
#
# <details><summary>Hint 1 (a nudge)</summary>Which two norms does the ratio compare, and which goes on top?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>w.norm() / update.norm()</code>, guarded by <code>if w.norm() > 0 and update.norm() > 0</code>.</details>

# %%
def trust_ratio(w: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    '''||w|| / ||update||, or 1 if either is zero.'''
    # SOLUTION
    wn, un = w.norm(), update.norm()
    return wn / un if (wn > 0 and un > 0) else torch.tensor(1.0)
    # END SOLUTION


# %% tags=["check"]
checks.check_trust_ratio(trust_ratio)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def trust_ratio(w, update):
#     wn, un = w.norm(), update.norm()
#     return wn / un if (wn > 0 and un > 0) else torch.tensor(1.0)
# ```
# </details>

# %% [markdown]
# ### Exercise 8 · A LAMB step
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵⚪⚪ · about 25 minutes
#
# Write one LAMB step for one tensor, `lamb_step(w, g, m, v, step, lr, betas, eps, weight_decay)`: `w` the weights, `g` their gradient, `m` and `v` the first and second moments after `step − 1` steps (zeros before the first), `step` counting from 1. Return the new `(w, m, v)`, without changing the inputs. The check compares it with phi4lab's `LAMB` optimizer (`phi4lab.training.optim`), on tensors with and without weight decay, and on a zero-initialised tensor, whose trust ratio is 1.
#
# <details><summary>Hint 1 (a nudge)</summary>The table above has the recipe. Which quantities does Adam correct for their bias, and by what?</details>
# <details><summary>Hint 2 (the idea)</summary>Update the moments as Adam does; divide them by 1 − β₁^step and 1 − β₂^step; form Adam's update, add the weight decay term, then rescale the whole thing by your <code>trust_ratio</code> of the weights and that update.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>m = b1 * m + (1 - b1) * g</code>; <code>v = b2 * v + (1 - b2) * g * g</code>; <code>update = (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + eps) + weight_decay * w</code>; <code>w - lr * trust_ratio(w, update) * update</code>.</details>

# %%
def lamb_step(w, g, m, v, step: int, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
    '''One LAMB step on one tensor: returns (w, m, v) after it.'''
    # SOLUTION
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    update = (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + eps) + weight_decay * w
    return w - lr * trust_ratio(w, update) * update, m, v
    # END SOLUTION


# %% tags=["check"]
checks.check_lamb_step(lamb_step)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def lamb_step(w, g, m, v, step, lr, betas, eps, weight_decay):
#     b1, b2 = betas
#     m = b1 * m + (1 - b1) * g
#     v = b2 * v + (1 - b2) * g * g
#     update = (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + eps) + weight_decay * w
#     return w - lr * trust_ratio(w, update) * update, m, v
# ```
#
# Without the trust ratio this is AdamW (with the decay inside the update rather than applied separately, a difference of scaling only). With it, a tensor whose weights are small takes small steps, whatever its gradients say.
# </details>

# %% [markdown]
# **Predict, then run.** Three optimizers train the same model on the same batches for 80 steps, each at a learning rate picked for it. Which ends with the lowest training loss: AdamW, or one of the trust-ratio optimizers built for large batches?
#
# <details><summary>Answer (after running the next cell)</summary>AdamW (the cell asserts it). A trust ratio keeps each layer's step proportional to its weights, which is what stabilises training with batches of tens of thousands; at 8 sequences per batch, gradient noise dominates and the layer-wise rescaling has nothing to fix, while LARS also gives up Adam's per-parameter step sizes.</details>

# %%
# NBVAL_IGNORE_OUTPUT
runs, trust = {}, {}
for name, lr in (("adamw", 3e-3), ("lamb", 1e-2), ("lars", 2.0)):
    model = small_model()
    cfg = T.TrainConfig(steps=80, lr=lr, warmup_steps=8, optimizer=name, log_every=5, progress=False)
    runs[name] = T.train(model, get_batch, cfg)
    print(f"{name:5s} lr {lr:<6g} final loss {runs[name][-1]['loss']:.3f}")
assert min(runs, key=lambda n: runs[n][-1]["loss"]) == "adamw", "on this budget AdamW should end lowest"
fig = go.Figure()
for name, hist in runs.items():
    fig.add_scatter(x=[r["step"] for r in hist], y=[r["loss"] for r in hist], name=name)
fig.update_layout(title="Same model, same batches, 80 steps", xaxis_title="step", yaxis_title="training loss", height=330)
fig.show()

# %% [markdown]
# Each optimizer needs its own learning rate (LARS's update is ‖w‖ times a small trust coefficient, so its nominal rate is large); on a budget this small, with a learning rate per optimizer picked by a quick sweep, AdamW is the one to beat. The trust ratio itself is visible per tensor, in `optimizer.state[p]["trust_ratio"]` for phi4lab's `LAMB` and `LARS`.
#
# ## 7. phi4-tiny: the long run
#
# `phi4lab build-tiny` runs the recipe in `phi4lab/recipes/tiny.py`: the corpus of notebook 03, a 4,096-token BPE trained with Hugging Face `tokenizers` on Phi-4's regex, a 4-layer Phi-4-shaped model (8 query heads over 2 KV heads, RoPE θ 250,000, gated SiLU MLP 3.5x wide, untied embeddings), trained in two phases: a **warm-up** of 1,500 steps of 48 x 64 tokens of synthetic rows only, with the unembedding tied to the embedding, then 2,000 steps of 16 x 256 tokens of the mixture, with the two untied (section 8 explains why). Its log ships beside the weights:

# %%
metrics = json.loads((DATA / "phi4-tiny" / "metrics.json").read_text())
log = json.loads((DATA / "phi4-tiny" / "training_log.json").read_text())
final = metrics["final"]
print(f"{metrics['parameters']:,} parameters, {final['tokens'] / 1e6:.1f}M tokens, "
      f"{metrics['wall_seconds'] / 60:.0f} min on the machine that built it")
print(f"validation loss: prose {final['val_prose_loss']:.2f} (ppl {final['val_prose_ppl']:.1f}), "
      f"code {final['val_code_loss']:.2f} (ppl {final['val_code_ppl']:.1f})")
print(f"best induction head {final['induction_head']}: {final['induction_score']:.2f};  "
      f"best previous-token head {final['prev_token_head']}: {final['prev_token_score']:.2f}")
at = {r["step"]: r for r in log if "induction_score" in r}
print("warm-up, best induction / previous-token score at step",
      ", ".join(f"{s:,}: {at[s]['induction_score']:.2f} / {at[s]['prev_token_score']:.2f}" for s in (500, 750, 1000, 1250)))
print(f"mixture phase: best induction score between {min(r['induction_score'] for r in at.values() if r['phase'] == 'mixture'):.2f} "
      f"and {max(r['induction_score'] for r in at.values() if r['phase'] == 'mixture'):.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
evals = [r for r in log if "val_prose_loss" in r]
fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "head scores (phi4lab.analysis)"))
fig.add_scatter(x=[r["step"] for r in log], y=[r["loss"] for r in log], name="train", row=1, col=1)
for key, label in (("val_prose_loss", "validation: prose"), ("val_code_loss", "validation: code")):
    fig.add_scatter(x=[r["step"] for r in evals], y=[r[key] for r in evals], name=label, row=1, col=1)
for key, label in (("induction_score", "best induction head"), ("prev_token_score", "best previous-token head")):
    fig.add_scatter(x=[r["step"] for r in evals], y=[r[key] for r in evals], name=label, row=1, col=2)
warm_end = max(r["step"] for r in log if r["phase"] == "warm-up")
for col in (1, 2):
    fig.add_vline(x=warm_end, line_dash="dot", row=1, col=col)
fig.update_layout(height=360, title=f"phi4-tiny's training log (dotted: the tied, synthetic-only warm-up ends at step {warm_end})")
fig.show()

# %% [markdown]
# Read the right panel. Left of the dotted line is the warm-up, which sees only rows of repeated random tokens. For 750 steps the best induction score stays at or below 0.05; by step 1,250 it is 0.99 (the numbers are printed above). That is the phase change of section 8, over phi4-tiny's full alphabet of 4,091 ordinary tokens. The previous-token head, scored on Shakespeare, appears in the same window (0.04 at step 750, 0.72 at step 1,250), because the induction circuit is built on it. The validation losses get *worse* during the warm-up: the model has seen no prose or code yet, and a model that has just learned to copy bets on repeats. After the switch to the mixture and the untying, they fall to the values printed above, and the induction head stays above 0.95 to the end. (The log's scores before the last step were computed at build time by a detector that skipped the first query of the second copy; counting it, as Olsson et al. do and as `heads.induction_scores` now does, moves phi4-tiny's scores by about 0.01.) Now load the model and measure its heads yourself, with the same detectors:

# %%
from phi4lab.analysis import heads

t0 = time.perf_counter()
tiny_model = phi4lab.load("phi4-tiny")
load_seconds = time.perf_counter() - t0
n_ordinary = tiny_model.cfg.d_vocab - 5          # the 5 specials sit at the end of the vocabulary
repeated = heads.random_repeated_tokens(25, 2, 8, vocab=n_ordinary, seed=1)
patterns = heads.attention_patterns(tiny_model, repeated)
induction = heads.induction_scores(patterns, period=25)
previous = heads.previous_token_scores(heads.attention_patterns(tiny_model, val_stream[:512].reshape(4, 128)))
print(f"{n_ordinary:,} ordinary ids to draw random tokens from")
print("induction heads:      ", [(f"L{l}H{h}", round(s, 2)) for l, h, s in heads.top_heads(induction, 3)])
print("previous-token heads: ", [(f"L{l}H{h}", round(s, 2)) for l, h, s in heads.top_heads(previous, 3)])

# %%
# NBVAL_IGNORE_OUTPUT
print(f"phi4lab.load('phi4-tiny') took {load_seconds:.1f} s here")
fig = make_subplots(rows=1, cols=2, subplot_titles=("induction score", "previous-token score"))
fig.add_heatmap(z=induction.numpy(), coloraxis="coloraxis", row=1, col=1)
fig.add_heatmap(z=previous.numpy(), coloraxis="coloraxis", row=1, col=2)
fig.update_layout(height=300, coloraxis=dict(colorscale="Blues", cmin=0, cmax=1))
fig.update_xaxes(title_text="head")
fig.update_yaxes(title_text="layer", autorange="reversed")
fig.show()

# %% [markdown]
# An induction head is worth its keep only if it lowers the loss. Read phi4-tiny's loss token by token along the same random sequences, a segment of 25 tokens repeated once.
#
# **Predict, then run.** What will the loss look like along the first copy, at the first token of the second copy, and along the rest of the second copy?
#
# <details><summary>Answer (after running the next cell)</summary>High along the first copy: the tokens are random, so the model can only guess among its thousands of ordinary tokens (about ln 4,091 nats if it guessed uniformly; it does a little worse, since its guesses follow Shakespeare and code). Still high at the first token of the second copy: nothing says the segment is about to repeat. Then close to zero: from the second token of the second copy on, the induction heads find the earlier occurrence of the current token and copy what followed it.</details>

# %%
per_token = T.next_token_losses(tiny_model(repeated), repeated).mean(0)   # position t predicts token t + 1
print(f"mean loss over the first copy (tokens 2-25): {per_token[:24].mean():.2f} nats (ln {n_ordinary:,} = {math.log(n_ordinary):.2f}); "
      f"the second copy's first token: {per_token[24]:.2f}; the rest of the second copy: {per_token[25:].mean():.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
# (the numbers printed above, drawn)
fig = go.Figure(go.Scatter(x=list(range(2, 51)), y=per_token.tolist(), mode="lines+markers"))
fig.add_vline(x=26, line_dash="dot", annotation_text="second copy begins")
fig.update_layout(height=300, title="phi4-tiny's loss along a random 25-token segment repeated once (mean of 8)",
                  xaxis_title="token predicted (1-based)", yaxis_title="loss (nats)")
fig.show()

# %% [markdown]
# Your `sliding_perplexity` on phi4-tiny and held-out code: windows of 128 tokens, ever more overlapping.
#
# **Predict, then run.** Halve the stride from 128 (windows side by side) to 64, then to 32. Will the perplexity rise, fall or stay put? And by the same amount each time?
#
# <details><summary>Answer (after running the next cell)</summary>It falls, by less each time. With windows side by side, the first tokens of every window are predicted from little or no context; with stride 64 each token sees at least 128 − 64 tokens of context, with stride 32 at least 128 − 32. Extra context helps most when there is little of it. The price is compute: stride 32 runs four times as many windows.</details>

# %%
from phi4lab.model.bridge import unwrap

held_out = val_stream[:4096]
with torch.no_grad():
    for stride in (128, 64, 32):
        ppl = sliding_perplexity(unwrap(tiny_model), held_out, 128, stride)
        print(f"stride {stride:3d}: perplexity {ppl:.2f} on {len(held_out):,} held-out tokens of code")

# %% [markdown]
# To regenerate phi4-tiny from scratch: `phi4lab build-tiny --out build/phi4-tiny` (about 48 minutes on an idle 2-core CPU; it resumes from its last checkpoint if interrupted). `python -m phi4lab.recipes.induction` regenerates the curves below (about 5 minutes).
#
# ## 8. Watching an induction head form
#
# Why did phi4-tiny's induction head need synthetic data, and a warm-up? Olsson et al. (2022) found that in-context copying appears **abruptly**: the loss plateaus, then within a short window induction heads form. The circuit needs two layers: a previous-token head writes "the token before me was A" into each position, and an induction head in the next layer looks for the position whose previous token matches the current one. A one-layer model cannot compose heads that way.
#
# The smallest setting that shows it on a CPU (`phi4lab/recipes/induction.py`): attention-only models with 1 or 2 layers, trained on random tokens where a 16-token segment is copied to a random later position. The curves ship in `data/induction_runs.json`:

# %%
runs = json.loads((DATA / "induction_runs.json").read_text())
for name in ("2-layer", "1-layer"):
    first = next((r for r in runs[name] if r["induction_acc"] > 0.5), None)
    when = f"passes 50% at step {first['step']} ({first['seconds']:.0f} s)" if first else "never passes 50%"
    last = runs[name][-1]
    print(f"{name}: final accuracy {last['induction_acc']:.2f}, {when}; "
          f"best head {last['best_head']} scores {last['induction_score']:.2f} on phi4lab's induction detector")

# %%
# NBVAL_IGNORE_OUTPUT
fig = make_subplots(rows=1, cols=3, subplot_titles=("accuracy inside the repeated segment", "best induction-head score", "training loss"))
for name in ("2-layer", "1-layer"):
    steps = [r["step"] for r in runs[name]]
    fig.add_scatter(x=steps, y=[r["induction_acc"] for r in runs[name]], name=name, row=1, col=1)
    fig.add_scatter(x=steps, y=[r["induction_score"] for r in runs[name]], name=name + " head score", row=1, col=2)
    fig.add_scatter(x=steps, y=[r["loss"] for r in runs[name]], name=name + " loss", row=1, col=3)
fig.add_hline(y=1 / 64, line_dash="dot", annotation_text="chance", row=1, col=1)
fig.update_layout(height=340, title="The induction phase change (attention-only models, copy task)")
fig.show()

# %% [markdown]
# For a long plateau nothing seems to happen; then, within a few hundred steps, accuracy jumps and one head of layer 1 becomes an induction head. The 1-layer control never gets there.
#
# phi4-tiny's first recipe mixed its 30% synthetic rows in from the start, and within its budget it never left the plateau. This toy has 64 tokens; phi4-tiny's random rows draw from 4,091. To copy a token, the model must raise that token's logit, so the token's unembedding row has to line up with what the model read for it. With untied embeddings both start random, and the alignment is learned separately for each token, from the few rows that contain it. Tie the unembedding to the embedding and the alignment holds for every token at once: one generic copy map serves them all. In the pilots behind the recipe (the same model and rows), the copying loss on synthetic rows fell steeply when the two were tied and barely moved when they were not. So phi4-tiny warms up tied, on synthetic rows only, and then the two matrices are untied, as in Phi-4, for the mixture. The result has the circuit in textbook form: previous-token heads in layer 2 and induction heads across layer 3 (notebooks 05 and 06).
#
# ## Recap
#
# * The loss is next-token cross-entropy; a step is forward, loss, backward, update, zero.
# * Warm-up protects a fresh network; decay settles a trained one. Clipping bounds a step's size; accumulation buys a big batch in small memory.
# * 16-bit formats save memory everywhere but save time only on hardware built for them: measure.
# * LAMB and LARS rescale each tensor's step by a trust ratio; they matter at batch sizes far beyond a CPU.
# * Induction heads form abruptly after a plateau, need two layers, and need data that rewards copying. With a large vocabulary and untied embeddings the plateau is long: phi4-tiny got past it in a short synthetic warm-up with its unembedding tied to its embedding.
#
# **Further reading.** Karpathy, *nanoGPT* (`train.py`); Loshchilov and Hutter 2019, *Decoupled Weight Decay Regularization* (AdamW); You et al. 2019, *Large Batch Optimization for Deep Learning* (LAMB); Micikevicius et al. 2018, *Mixed Precision Training*; Olsson et al. 2022, *In-context Learning and Induction Heads*; Elhage et al. 2021, *A Mathematical Framework for Transformer Circuits*.
