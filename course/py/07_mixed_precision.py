# %% [markdown]
# # 07 · Mixed precision: formats, rounding, overflow, drift and loss scaling
#
# Phi-4's weights ship in bf16: 2 bytes per number instead of fp32's 4, 29.3 GB instead of 58.6. Training and serving large models in 16-bit formats halves memory and, on hardware built for it, multiplies speed. The price is paid in rounding and range. This notebook measures that price on phi4-tiny, shows the tricks that keep training stable (fp32 master weights, fp32 softmax and norms, loss scaling), and measures what 16 bits do to speed on the machine in front of you.
#
# **Objectives.** By the end you can
# 1. read a float format's range, precision and subnormals from its bits, and compute the gap between neighbouring numbers;
# 2. explain, and fix, what rounding does to a long sum, and why softmax and RMSNorm run in fp32;
# 3. measure how far a model drifts, layer by layer, when it runs in bf16 or fp16;
# 4. train with `torch.autocast` and with fp16 plus a `GradScaler`, and explain the loss scale's back-off and growth;
# 5. count the bytes per parameter of training, and say when 16 bits are faster and when they are not.
#
# **Prerequisites:** notebooks 01 and 04. **Run time:** about 30 seconds on a laptop CPU. **GPU:** not needed (the speed section reports whatever hardware runs it).
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import math
import time

import torch
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import phi4lab
from phi4lab.recipes import corpus
from phi4lab.training import precision as P
from phi4lab.model.config import scaled
from phi4lab.doctor import require
from phi4lab.viz.figures import use_static_fallbacks
from phi4lab.exercises import precision as checks

require()
use_static_fallbacks()   # each plotly figure also keeps a PNG copy, for viewers without plotly's JavaScript
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Formats
#
# A float stores a sign, an exponent and a mantissa. The exponent's bits set the range, the mantissa's bits the precision. `torch.finfo` knows them all:

# %%
print(f"{'dtype':14s} {'bits':>4s} {'exp':>3s} {'mant':>4s} {'max':>11s} {'eps':>10s} {'min normal':>11s} {'min subnormal':>13s}")
for r in P.format_table():
    print(f"{r['dtype']:14s} {r['bits']:4d} {r['exponent_bits']:3d} {r['mantissa_bits']:4d} {r['max']:11.4g} "
          f"{r['eps']:10.3g} {r['smallest_normal']:11.3g} {r['smallest_subnormal']:13.3g}")


# %% [markdown]
# Read the two 16-bit rows. **fp16** has fine steps (eps = 2⁻¹⁰ ≈ 0.001) but tops out at 65,504. **bf16** keeps fp32's 8 exponent bits, so its range is fp32's, but has only 7 mantissa bits: its steps are 8 times coarser than fp16's. Below the smallest normal number come the **subnormals**, which give up precision to reach closer to 0; below those, a number flushes to 0.

# %% [markdown]
# ### Exercise 1 · Exponent and mantissa bits
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `exponent_mantissa_bits(dtype)` returning `(exponent_bits, mantissa_bits)` for a floating-point dtype, read off `torch.finfo(dtype)` (which has no field for either).
#
# <details><summary>Hint 1 (a nudge)</summary>Which of finfo's fields is set by the mantissa alone? And how many bits does a float spend on its sign?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>epsilon is 2^(−mantissa bits), so mantissa = −log2(eps); the exponent has the bits that are left, <code>finfo.bits − 1 − mantissa</code>.</details>

# %%
def exponent_mantissa_bits(dtype: torch.dtype) -> tuple[int, int]:
    '''(exponent bits, stored mantissa bits) of a floating-point dtype.'''
    # SOLUTION
    f = torch.finfo(dtype)
    mantissa = round(-math.log2(f.eps))
    return f.bits - 1 - mantissa, mantissa
    # END SOLUTION


# %% tags=["check"]
checks.check_exponent_mantissa_bits(exponent_mantissa_bits)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def exponent_mantissa_bits(dtype):
#     f = torch.finfo(dtype)
#     mantissa = round(-math.log2(f.eps))
#     return f.bits - 1 - mantissa, mantissa
# ```
# </details>

# %% [markdown]
# ### Exercise 2 · The gap above a number
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Between 1 and 2 a format's numbers are eps apart; between 2 and 4, 2·eps apart; between 1,024 and 2,048, 1,024·eps. Write `gap_above(x, dtype)`: the distance from a positive normal number `x` to the next representable number.
#
# <details><summary>Hint 1 (a nudge)</summary>Which power of two is x between? The gap doubles at each one.</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>torch.finfo(dtype).eps * 2 ** math.floor(math.log2(x))</code></details>

# %%
def gap_above(x: float, dtype: torch.dtype) -> float:
    '''Distance from x (positive, normal, representable) to the next number of the format.'''
    # SOLUTION
    return torch.finfo(dtype).eps * 2 ** math.floor(math.log2(x))
    # END SOLUTION


# %% tags=["check"]
checks.check_gap_above(gap_above)
for dt in (torch.float32, torch.bfloat16, torch.float16):
    print(f"{str(dt):15s} gap above 1: {gap_above(1.0, dt):.2e}   above 1,000: {gap_above(1000.0, dt):.3g}   "
          f"1 + 0.003 = {(torch.tensor(1.0, dtype=dt) + 0.003).item():.6f}")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def gap_above(x, dtype):
#     return torch.finfo(dtype).eps * 2 ** math.floor(math.log2(x))
# ```
# </details>

# %% [markdown]
# bf16 is simply the top half of an fp32 number: the same sign, the same 8 exponent bits, the first 7 of the 23 mantissa bits. Converting fp32 to bf16 drops the low 16 bits, and rounds.
#
# ### Exercise 3 · Round fp32 to bf16 by hand
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵⚪⚪⚪ · about 25 minutes
#
# Write `to_bfloat16(x)` for an fp32 tensor, working on its bits (`x.view(torch.int32)`), and return a `torch.bfloat16` tensor (`.view(torch.bfloat16)` on 16-bit integers). It must equal PyTorch's `x.to(torch.bfloat16)` bit for bit, which rounds to the *nearest* bf16 number, breaks exact ties towards the neighbour whose last kept bit is 0 ("round half to even", IEEE 754's default), and keeps a NaN a NaN.
#
# <details><summary>Hint 1 (a nudge)</summary>Rounding to nearest is adding half a step and truncating. What is half a step, in the dropped 16 bits? And what does "to even" add to that?</details>
# <details><summary>Hint 2 (the idea)</summary>Add 0x7FFF plus the lowest kept bit, <code>(bits >> 16) & 1</code>, then shift right by 16: a tie rounds up only when the kept part is odd. The carry can run into the exponent, which is right (1.9999 rounds to 2.0, and the largest numbers to infinity) except for a NaN, whose payload can carry it to infinity: replace NaNs at the end.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>bits = x.view(torch.int32)</code>; <code>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(torch.int16).view(torch.bfloat16)</code>; then <code>torch.where(x.isnan(), nan, that)</code>.</details>

# %%
def to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    '''fp32 -> bf16 by bit manipulation: round to nearest, ties to even, NaN stays NaN.'''
    # SOLUTION
    bits = x.view(torch.int32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(torch.int16).view(torch.bfloat16)
    return torch.where(x.isnan(), torch.tensor(float("nan"), dtype=torch.bfloat16), rounded)
    # END SOLUTION


# %% tags=["check"]
checks.check_to_bfloat16(to_bfloat16)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def to_bfloat16(x):
#     bits = x.view(torch.int32)
#     rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(torch.int16).view(torch.bfloat16)
#     return torch.where(x.isnan(), torch.tensor(float("nan"), dtype=torch.bfloat16), rounded)
# ```
#
# Why round half to even? Always rounding ties up biases every sum of many rounded numbers upwards; to even, ties go up half the time and down half the time.
# </details>

# %% [markdown]
# A tie, by hand: 1 + 2⁻⁸ lies exactly halfway between the bf16 neighbours 1 and 1 + 2⁻⁷, and 1 + 3 · 2⁻⁸ halfway between 1 + 2⁻⁷ and 1 + 2 · 2⁻⁷:

# %%
for value in (1 + 2**-8, 1 + 3 * 2**-8):
    x = torch.tensor([value])
    print(f"{value:.8f} -> yours {to_bfloat16(x).item():.8f}, PyTorch's {x.to(torch.bfloat16).item():.8f}")

# %% [markdown]
# ## 2. What rounding does to a sum
#
# Adding a small number to a large one rounds the result to the large one's grid.
#
# **Predict, then run.** Add 0.01 to a running sum ten thousand times, in fp32, fp16 and bf16. The exact answer is 100. What will each format give?
#
# <details><summary>Answer (after running the next cell)</summary>fp32 gives 100.0030, close. fp16 stalls at 32: once the sum reaches 32 the gap above it is 2⁻⁵ ≈ 0.031, 0.01 is less than half a gap, and every addition rounds back to 32. bf16, with 3 fewer mantissa bits, stalls far earlier, at 4. Neither 16-bit sum is off by a little: each is off by most of the answer.</details>

# %%
for dt in (torch.float32, torch.float16, torch.bfloat16):
    print(f"{str(dt):15s} 10,000 x 0.01 = {P.running_sum(0.01, 10_000, dt):9.4f}")


# %% [markdown]
# That is why RMSNorm's mean of squares, the softmax's normaliser and the loss are computed in fp32 even when the model runs in 16 bits: each is a sum of thousands of terms. Hugging Face's Phi-3 code upcasts both itself (`Phi3RMSNorm` casts to fp32; the eager attention's softmax uses `dtype=torch.float32`). A classic fix for sums you cannot upcast is **compensated summation**.

# %% [markdown]
# ### Exercise 4 · Kahan summation
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 15 minutes
#
# Kahan's algorithm carries the part of each addition that rounding lost, and feeds it back into the next one. Write `kahan_sum(values)`, a sum of a 1-D tensor computed entirely in `values.dtype` (no upcasting: the point is to sum well in 16 bits), that keeps a running correction of what rounding lost.
#
# <details><summary>Hint 1 (a nudge)</summary>Adding a term y to the running sum s gives a rounded result t. How can you recover the part of y that did not make it into t, using only additions and subtractions in the same precision?</details>
# <details><summary>Hint 2 (the idea)</summary><code>(t - s)</code> is the part of y that was added; <code>(t - s) - y</code> is minus the part that was lost. Keep it in c, and subtract it from the next term before adding.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>
#
# ```
# s = 0; c = 0
# for v in values:
#     y = v - c          # the new term, corrected by what was lost last time
#     t = s + y          # the rounded sum
#     c = (t - s) - y    # what rounding just lost (exactly, in this precision)
#     s = t
# ```
# </details>

# %%
def kahan_sum(values: torch.Tensor) -> torch.Tensor:
    '''Compensated sum of a 1-D tensor, computed in its own dtype.'''
    # SOLUTION
    s = torch.zeros((), dtype=values.dtype)
    c = torch.zeros((), dtype=values.dtype)
    for v in values:
        y = v - c
        t = s + y
        c = (t - s) - y
        s = t
    return s
    # END SOLUTION


# %% tags=["check"]
checks.check_kahan_sum(kahan_sum)
print("fp16, 5,000 x 0.01:", kahan_sum(torch.full((5000,), 0.01, dtype=torch.float16)).item())

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def kahan_sum(values):
#     s = torch.zeros((), dtype=values.dtype)
#     c = torch.zeros((), dtype=values.dtype)
#     for v in values:
#         y = v - c
#         t = s + y
#         c = (t - s) - y
#         s = t
#     return s
# ```
# </details>

# %% [markdown]
# ## 3. Overflow: attention scores in fp16
#
# An attention score is a dot product of a query and a key: a sum of 128 products in Phi-4. Large activations make it large, and fp16 stops at 65,504. One inf in a row of scores, and the softmax of that row is NaN, which spreads to everything downstream. GPT-2 hit exactly this under fp16 autocast (huggingface/transformers#24638).
#
# **Predict, then run.** The next cell scales random queries and keys up until the largest score is well past 65,504, and computes one attention pattern in each format. Which formats give a usable pattern?
#
# <details><summary>Answer (after running the next cell)</summary>fp32 and bf16, and they agree: bf16's range is fp32's, so its scores are coarse but finite. fp16 gives a row of NaN: an overflowed score is inf, and the softmax subtracts the row's maximum, inf, from it: inf − inf is NaN.</details>

# %%
g = torch.Generator().manual_seed(0)
q, k = torch.randn(1, 4, 128, generator=g) * 100, torch.randn(1, 4, 128, generator=g) * 100
print(f"largest score |q.k|: {(q @ k.transpose(-1, -2)).abs().max():,.0f}")
for dt in (torch.float32, torch.bfloat16, torch.float16):
    out = P.softmax_of_scores(q, k, dt)
    print(f"{str(dt):15s} first row of the pattern: {[round(v, 3) for v in out[0, 0].float().tolist()]}")


# %% [markdown]
# ### Exercise 5 · A softmax that cannot overflow
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Even with finite inputs, `exp(x)` overflows fp16 for x > 11.1. Write `stable_softmax(x)` over the last dimension, in `x`'s dtype, that gives the true softmax for any finite input, however large.
#
# <details><summary>Hint 1 (a nudge)</summary>softmax(x) = softmax(x − c) for any constant c. Which c makes every exponent safe?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Subtract each row's maximum first: every exponent is then ≤ 0 and every exp ≤ 1; then exp and divide by the row's sum.</details>

# %%
def stable_softmax(x: torch.Tensor) -> torch.Tensor:
    '''Softmax over the last dimension that cannot overflow.'''
    # SOLUTION
    z = x - x.max(dim=-1, keepdim=True).values
    e = z.exp()
    return e / e.sum(dim=-1, keepdim=True)
    # END SOLUTION


# %% tags=["check"]
checks.check_stable_softmax(stable_softmax)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def stable_softmax(x):
#     z = x - x.max(dim=-1, keepdim=True).values
#     e = z.exp()
#     return e / e.sum(dim=-1, keepdim=True)
# ```
#
# `torch.softmax` does this internally. It cannot help once a *score* is already inf, which is why fp16 attention needs its inputs kept in range (or the scores computed in fp32).
# </details>

# %% [markdown]
# ## 4. Inference drift: phi4-tiny in 16 bits
#
# Run phi4-tiny in fp32, bf16 and fp16 on the same Shakespeare and compare, layer by layer: the residual stream's relative error, the KL divergence of the attention patterns, and at the output the KL of the next-token distributions and how often the top prediction changes. `phi4lab.training.precision.drift` does it with the hooks of notebook 05.

# %% [markdown]
# ### Exercise 6 · KL divergence of the next-token distributions
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `logit_kl(ref_logits, other_logits)`: the mean over positions of KL(p_ref ‖ p_other), with p = softmax(logits) over the last dimension. Compute it from `log_softmax`, in float64.
#
# <details><summary>Hint 1 (a nudge)</summary>Why compute from log-probabilities rather than probabilities? Think of a probability that underflows to 0.</details>
# <details><summary>Hint 2 (nearly the answer)</summary>KL(p ‖ q) = Σ p · (log p − log q), over the vocabulary, then the mean over positions.</details>

# %%
def logit_kl(ref_logits: torch.Tensor, other_logits: torch.Tensor) -> torch.Tensor:
    '''Mean KL(softmax(ref) || softmax(other)) over all positions.'''
    # SOLUTION
    lp = ref_logits.double().log_softmax(-1)
    lq = other_logits.double().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1).mean()
    # END SOLUTION


# %% tags=["check"]
checks.check_logit_kl(logit_kl)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def logit_kl(ref_logits, other_logits):
#     lp = ref_logits.double().log_softmax(-1)
#     lq = other_logits.double().log_softmax(-1)
#     return (lp.exp() * (lp - lq)).sum(-1).mean()
# ```
# </details>

# %% [markdown]
# **Predict, then run.** bf16 keeps 7 mantissa bits, fp16 10. Run phi4-tiny in each: at the last layer, how many times larger will bf16's error in the residual stream be than fp16's: about 3, about 8, or about 1,000? And will the error grow or shrink with depth?
#
# <details><summary>Answer (after running the next two cells)</summary>About 8, which is 2³: each missing mantissa bit doubles the rounding step. And in bf16 it grows with depth (the cell checks it): each layer adds its own rounding to what it inherited. The paragraph after the plots says what that means for the model's output.</details>

# %%
# NBVAL_IGNORE_OUTPUT
# (16-bit kernels differ between CPUs, so the last digits of these numbers do too)
model = phi4lab.load("phi4-tiny")
text = corpus.shakespeare_documents()[2].text[10_000:14_000]
tokens = model.to_tokens(text)[:, :256]
results = {}
with torch.no_grad():
    ref_logits = model(tokens)
    for dt in (torch.bfloat16, torch.float16):
        low = P.as_dtype(model, dt)
        results[str(dt).replace("torch.", "")] = P.drift(model, low, tokens)
        print(f"{str(dt):15s} your logit KL {logit_kl(ref_logits, low(tokens)).item():.2e}  (library: "
              f"{results[str(dt).replace('torch.', '')]['logit_kl']:.2e})")
for name, d in results.items():
    print(f"{name}: residual error by layer {[f'{e:.4f}' for e in d['resid_rel_error']]}, "
          f"top-1 flips {100 * d['top1_flip_rate']:.1f}% of {tokens.shape[1]} positions")

# %%
bf16, fp16 = results["bfloat16"], results["float16"]
print("error grows with depth (bf16):", all(a <= b * 1.05 for a, b in zip(bf16["resid_rel_error"], bf16["resid_rel_error"][1:])))
print("bf16 error above fp16's at every layer:", all(b > f for b, f in zip(bf16["resid_rel_error"], fp16["resid_rel_error"])))
ratio = bf16["resid_rel_error"][-1] / fp16["resid_rel_error"][-1]
# printed as a claim with a margin, not as digits: the last digits of a 16-bit run depend on the CPU's kernels
print(f"ratio at the last layer, bf16 / fp16, within a factor of 1.4 of 2**3 = 8: {abs(math.log2(ratio) - 3) < 0.5}")

# %%
# NBVAL_IGNORE_OUTPUT
fig = make_subplots(rows=1, cols=2, subplot_titles=("residual stream: relative error", "attention patterns: mean KL"))
for name, d in results.items():
    layers = list(range(len(d["resid_rel_error"])))
    fig.add_scatter(x=layers, y=d["resid_rel_error"], name=name, row=1, col=1)
    fig.add_scatter(x=layers, y=d["pattern_kl"], name=name + " ", row=1, col=2)
fig.update_xaxes(title_text="layer")
fig.update_yaxes(type="log")
fig.update_layout(height=330, title="phi4-tiny in 16 bits against fp32, 256 tokens of Shakespeare")
fig.show()

# %% [markdown]
# Both errors grow with depth overall: each layer adds its own rounding to what it inherited. bf16's error is about 8 times fp16's, as its 3 fewer mantissa bits predict (2³ = 8). On a model this small, few top-1 predictions change (the flip rates above); over Phi-4's 40 layers the errors have 10 times as many layers to compound.
#
# ## 5. Training in mixed precision
#
# **`torch.autocast`** runs selected operations (matmuls and linear layers) in the 16-bit dtype while the weights stay fp32. The optimizer updates the fp32 **master weights**: an update of 1e-4 to a weight of 1 would vanish in bf16, whose gap above 1 is 0.0078.

# %%
twin = phi4lab.load(config=scaled(d_model=64, n_layers=2), seed=0)
x = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
with P.autocast(torch.bfloat16):
    logits = twin(x)
print("inside autocast: logits", logits.dtype, "| weights", next(twin.parameters()).dtype)
print("a 1e-4 update to 1.0 in bf16:", (torch.tensor(1.0, dtype=torch.bfloat16) + 1e-4).item(),
      "| in fp32:", (torch.tensor(1.0) + 1e-4).item())
try:
    with P.autocast(torch.float8_e4m3fn):
        pass
except P.UnsupportedPrecisionError as e:
    print("refused:", e)


# %% [markdown]
# **fp16 needs a loss scale.** Small gradients underflow fp16 (its smallest subnormal is 6e−8). The `GradScaler` multiplies the loss by a large factor (65,536 by default) before the backward pass, so the gradients are large too, and divides them back before the update. If any gradient is inf or NaN, it skips the update and halves the scale; after `growth_interval` clean steps it doubles it again. Here we inject an overflow at steps 3 and 9:

# %% [markdown]
# ### Exercise 7 · The loss-scale rule
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Write `update_scale(scale, found_inf, clean_steps, growth_interval)` returning `(new_scale, new_clean_steps)`: one step of the `GradScaler` rule described above, where `clean_steps` counts the clean steps since the scale last changed and `found_inf` says whether this step overflowed.
#
# <details><summary>Hint 1 (a nudge)</summary>There are two cases, an overflow or a clean step. In which does the count go up, and when does it go back to zero? Does this step count towards growth_interval?</details>
# <details><summary>Hint 2 (the idea)</summary>On an overflow: halve the scale and reset the count to zero. On a clean step: add it to the count; if the count now reaches growth_interval, double the scale and reset the count, otherwise keep the scale and the new count.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Return <code>(scale * 0.5, 0)</code> at once when <code>found_inf</code>; otherwise <code>clean_steps += 1</code>, then compare it with <code>growth_interval</code>.</details>

# %%
def update_scale(scale: float, found_inf: bool, clean_steps: int, growth_interval: int) -> tuple[float, int]:
    '''One step of dynamic loss scaling (PyTorch's GradScaler rule, backoff 0.5 and growth 2).'''
    # SOLUTION
    if found_inf:
        return scale * 0.5, 0
    clean_steps += 1
    if clean_steps == growth_interval:
        return scale * 2.0, 0
    return scale, clean_steps
    # END SOLUTION


# %% tags=["check"]
checks.check_update_scale(update_scale)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def update_scale(scale, found_inf, clean_steps, growth_interval):
#     if found_inf:
#         return scale * 0.5, 0
#     clean_steps += 1
#     if clean_steps == growth_interval:
#         return scale * 2.0, 0
#     return scale, clean_steps
# ```
# </details>

# %%
def batches(step):
    return torch.randint(0, 1000, (4, 16), generator=torch.Generator().manual_seed(step))

trace = P.scaler_trace(twin, batches, steps=16, overflow_steps=(3, 9), growth_interval=4)
scale, clean = trace[0]["scale"], 0
for t in trace:
    predicted, clean = update_scale(scale, t["skipped"], clean, 4)
    assert predicted == t["next_scale"], "your rule and PyTorch's GradScaler disagree"
    scale = predicted
print("step  scale     skipped")
for t in trace:
    print(f"{t['step']:4d}  {t['scale']:8.0f}  {'yes (overflow)' if t['skipped'] else ''}")
print("your update_scale reproduces PyTorch's GradScaler at every step")

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure(go.Scatter(x=[t["step"] for t in trace], y=[t["scale"] for t in trace], mode="lines+markers",
                           line_shape="hv", name="loss scale"))
for s in (3, 9):
    fig.add_vline(x=s, line_dash="dot", annotation_text="overflow")
fig.update_layout(title="GradScaler: back off on overflow, grow after 4 clean steps", xaxis_title="step",
                  yaxis_title="scale", yaxis_type="log", height=300)
fig.show()

# %% [markdown]
# bf16 rarely needs a scaler: its range is fp32's, so gradients do not underflow where fp32's would not.
#
# ## 6. Memory per parameter
#
# Training with AdamW keeps, for every parameter, the weight, its gradient and two optimizer moments. Mixed precision adds a 16-bit copy of the weights to the fp32 master copy. Two common accountings (sources in `phi4lab/training/precision.py`):

# %%
for scheme, b in P.TRAINING_BYTES_PER_PARAMETER.items():
    print(f"{scheme:48s} {b:2d} bytes per parameter")


# %% [markdown]
# ### Exercise 8 · Memory to train
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `training_bytes(n_params, scheme)`: the bytes of weights, gradients and optimizer state (no activations) to train a model of `n_params` parameters, using `P.TRAINING_BYTES_PER_PARAMETER`.
#
# <details><summary>Hint 1 (a nudge)</summary>What does the table printed above give for each scheme: bytes for the whole model, or per parameter? Does it already include the gradients and the optimizer's moments?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Look up the scheme's bytes per parameter, <code>P.TRAINING_BYTES_PER_PARAMETER[scheme]</code>, and multiply by <code>n_params</code>.</details>

# %%
def training_bytes(n_params: int, scheme: str) -> int:
    '''Bytes of weights + gradients + AdamW state for training (activations excluded).'''
    # SOLUTION
    return n_params * P.TRAINING_BYTES_PER_PARAMETER[scheme]
    # END SOLUTION


# %% tags=["check"]
checks.check_training_bytes(training_bytes)
n_phi4 = phi4lab.config.count_parameters(phi4lab.config.PHI4)
for scheme in P.TRAINING_BYTES_PER_PARAMETER:
    print(f"Phi-4, {scheme:48s} {training_bytes(n_phi4, scheme) / 1e9:6.0f} GB")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def training_bytes(n_params, scheme):
#     return n_params * P.TRAINING_BYTES_PER_PARAMETER[scheme]
# ```
# </details>

# %% [markdown]
# Over 200 GB before a single activation: full fine-tuning of Phi-4 needs several 80 GB GPUs. Notebook 08 trains small adapters (LoRA) instead.
#
# ## 7. Speed is a property of hardware
#
# 16 bits halve the bytes moved, but the arithmetic is only faster where the hardware computes in 16 bits natively. NVIDIA's A100 datasheet ("NVIDIA A100 Tensor Core GPU", nvidia.com) lists 19.5 TFLOPS for fp32 and 312 TFLOPS for bf16 and fp16 on its Tensor Cores (dense), a 16x ratio. A CPU without native bf16 instructions (AVX2 only, like many laptops and lab machines) must convert each bf16 number to fp32 and back in software, so bf16 there can be many times *slower* than fp32, not faster. CPUs with AVX-512 BF16 or AMX instructions compute bf16 natively (Intel's and AMD's instruction-set manuals list them; `phi4lab doctor` says which this machine has).
#
# Measure this machine (the numbers below are whatever your hardware does; they are not checked):

# %%
# NBVAL_IGNORE_OUTPUT
from phi4lab.doctor import cpu_name, matmul_time_ratios, native_bf16
print(cpu_name(), "| native bf16 instructions:", native_bf16())
for dtype, ratio in matmul_time_ratios(n=512).items():
    print(f"512 x 512 matmul in {dtype}: {ratio:5.2f} x the fp32 time")

def step_ms(precision, repeats=3):
    m = phi4lab.load(config=scaled(d_model=64, n_layers=2), seed=0).original_model.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, 1000, (4, 64), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        ctx = P.autocast(torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = m(x, labels=x).loss
        loss.backward(); opt.step(); opt.zero_grad()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3
fp32_step, bf16_step = step_ms("fp32"), step_ms("bf16")
print(f"training step, 2-layer twin, batch 4 x 64: fp32 {fp32_step:.0f} ms, bf16 autocast {bf16_step:.0f} ms "
      f"({bf16_step / fp32_step:.1f} x)")

# %% [markdown]
# Whatever your numbers say, they say it about your hardware. On a GPU with bf16 Tensor Cores expect bf16 to win by a wide margin on large matmuls; on a CPU without native bf16, expect it to lose by a wide margin; with AVX-512 BF16 or AMX, expect it to win modestly. fp16 on a CPU is rarely fast. Always measure before choosing, and keep CI on whatever is fast on the CI machine.
#
# ## Recap
#
# * Exponent bits buy range, mantissa bits buy precision: fp16 is precise but stops at 65,504; bf16 has fp32's range and 8x coarser steps than fp16.
# * The gap above x is eps · 2^⌊log₂ x⌋; a long sum stalls once its terms fall below half a gap. Compute sums in fp32, or compensate them.
# * fp16 attention scores can overflow to inf, and softmax turns inf into NaN; subtract the max, and keep softmax and norms in fp32.
# * 16-bit inference drifts a little more at every layer; bf16 drifts more than fp16.
# * Mixed-precision training keeps fp32 master weights; fp16 adds a dynamic loss scale that backs off on overflow and grows after clean steps.
# * Training with AdamW costs 16 to 18 bytes per parameter before activations: over 200 GB for Phi-4.
# * Speed depends on hardware: measure.
#
# **Further reading.** Micikevicius et al. 2018, *Mixed Precision Training*; Kalamkar et al. 2019, *A Study of BFLOAT16 for Deep Learning Training*; PyTorch's *Automatic Mixed Precision* documentation; Rajbhandari et al. 2020, *ZeRO*; Hugging Face, *Anatomy of Model's Memory*; Goldberg 1991, *What Every Computer Scientist Should Know About Floating-Point Arithmetic*.
