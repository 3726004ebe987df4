# %% [markdown]
# # 09 · Bias probing: what a model associates with an occupation, where it lives, and where it came from
#
# Phi-4's report says, like every model card, that the model can reproduce biases in its training data. This notebook turns that sentence into measurements you make yourself: which pronoun a model expects after "The nurse said that", how sure we can be of the answer, whether the subject's gender is readable inside the model and at which layer, which attention heads carry it, whether pushing along that direction changes the output, and, closing the loop with notebook 04, how fine-tuning data creates an association and how other data moves it.
#
# **Objectives.** By the end you can
# 1. build template probes and score multi-token words correctly (sum the pieces' log-probs);
# 2. put bootstrap confidence intervals on a preference and on its correlation with labour statistics;
# 3. fit linear probes layer by layer, and use a control task to tell a feature from memorisation;
# 4. test causally: patch heads to measure what they mediate, and steer along a probe direction;
# 5. show that an association comes from data, by creating one with a fine-tuning slice and reversing it with another.
#
# **Prerequisites:** notebooks 05 and 06 (hooks, patching), 08 for fine-tuning. **Run time:** about 2 minutes on a laptop CPU (two short fine-tunes). **GPU:** not needed; the last section runs the same probes on `microsoft/phi-4` where its weights and a GPU are present.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.
#
# **A word on what this measures.** A template probe measures one narrow thing: a model's next-token preference for a gendered word after a sentence about an occupation. It does not measure harm, and a model with no such preference can still be biased in other ways. The statistics below describe the US labour force in 2015/16; they are a reference point, not a target.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import random

import matplotlib.pyplot as plt
import torch

import phi4lab
from phi4lab import bias
from phi4lab.training import finetune as FT
from phi4lab.bias import causal, data as bias_data
from phi4lab.doctor import require
from phi4lab.exercises import bias as checks

require()
_ = torch.manual_seed(0)
tiny = phi4lab.load("phi4-tiny")

# %% [markdown]
# ## 1. The probe data
#
# Two files in `data/bias/`, both checked against a pinned sha256 on load. The statistics are the share of women among employed people in 60 US occupations, from the Bureau of Labor Statistics' Current Population Survey (Table 11), as compiled by Winogender (Rudinger et al. 2018) and used by Vig et al. (2020):

# %%
print(bias.BLS_SOURCE, "\n")
table = bias_data.occupation_table()
for name in ("plumber", "carpenter", "engineer", "doctor", "teacher", "nurse", "secretary"):
    o = table[name]
    print(f"{o.name:10s} {o.pct_female:5.1f}% women ({o.year})")

# %% [markdown]
# The frames are the 17 templates of Vig et al.'s experiments, each with one `{occupation}` slot and ending where the pronoun should come. The probe words carry their leading space, as a word in running text does:

# %%
t = bias.templates()
print(len(t["pronoun_frames"]), "pronoun frames, e.g.", t["pronoun_frames"][:3])
print(len(t["name_frames"]), "name frames, e.g.", t["name_frames"][:2])
print("names:", t["names"])


# %% [markdown]
# ### Exercise 1 · Fill a frame, refuse a broken one
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵⚪⚪⚪ · about 5 minutes
#
# Write `fill_frame(frame, occupation)`. A frame without the `{occupation}` slot, or with two, must raise `ValueError` with a message naming the slot: a typo in a frame would otherwise silently probe the wrong sentence.
#
# <details><summary>Hint 1 (a nudge)</summary>A plain replace fills no slot, or two, without complaint. What can you measure about the frame before you fill it?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Count the slots with <code>frame.count("{occupation}")</code>; unless there is exactly one, raise <code>ValueError</code> with a message that contains <code>{occupation}</code> (in an f-string, write it <code>{{occupation}}</code>). Then <code>frame.replace("{occupation}", occupation)</code>.</details>

# %%
def fill_frame(frame: str, occupation: str) -> str:
    '''The frame with its one {occupation} slot filled; ValueError if it has none or several.'''
    # SOLUTION
    if frame.count("{occupation}") != 1:
        raise ValueError(f"the frame {frame!r} needs exactly one {{occupation}} slot")
    return frame.replace("{occupation}", occupation)
    # END SOLUTION


# %% tags=["check"]
checks.check_fill_frame(fill_frame)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def fill_frame(frame, occupation):
#     if frame.count("{occupation}") != 1:
#         raise ValueError(f"the frame {frame!r} needs exactly one {{occupation}} slot")
#     return frame.replace("{occupation}", occupation)
# ```
# `phi4lab.bias.fill` also refuses a frame that ends with a space (the probe word brings its own).</details>

# %% [markdown]
# ## 2. Log-probability probes
#
# The preference after a prompt u is y(u) = log p(" she" | u) − log p(" he" | u): positive when the model expects "she". Names work the same way, with each class scored by its total probability. But look at how phi4-tiny's 4,096-id vocabulary cuts the words:

# %%
for w in [" he", " she", " John", " Mary", " Elizabeth"]:
    ids = tiny.tokenizer.encode(w, add_special_tokens=False)
    print(f"{w!r:13s} -> {[tiny.tokenizer.decode([i]) for i in ids]}")


# %% [markdown]
# " Mary" is two tokens. Its probability is p(" M" | u) · p("ary" | u, " M"), so its log-prob is the **sum** of the pieces' log-probs, each read from the model run on the prompt followed by the word (teacher forcing). Vig et al. simply dropped multi-token words; for names that would leave almost nothing on a small vocabulary.

# %% [markdown]
# ### Exercise 2 · A word's log-prob, over all its pieces
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# `log_probs` is the model's log-softmax output `[seq_len, vocab]` for the prompt followed by the word; the prompt has `start` tokens and the word's ids are `word_ids`. Return log p(word | prompt).
#
# <details><summary>Hint 1 (a nudge)</summary>Which row of log_probs holds the prediction for the token at position p? And how does a word of several pieces get its probability from theirs?</details>
# <details><summary>Hint 2 (the idea)</summary>Row i predicts token i + 1, and the word's k-th piece sits at position start + k, so its log-prob is in row start + k − 1, at the piece's id. The word's probability is the product of its pieces' probabilities: add their log-probs.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Loop over <code>enumerate(word_ids)</code> and add up <code>log_probs[start - 1 + k, t]</code>.</details>

# %%
def word_logprob(log_probs: torch.Tensor, start: int, word_ids: list[int]) -> torch.Tensor:
    '''log p(word | prompt): the sum over the word's pieces, each read from the row before it.'''
    # SOLUTION
    return sum(log_probs[start - 1 + k, t] for k, t in enumerate(word_ids))
    # END SOLUTION


# %% tags=["check"]
checks.check_word_logprob(word_logprob)
# and on phi4-tiny, against phi4lab.bias.word_logprobs
prompt, word = "The nurse was called", " Mary"
p_ids, w_ids = (tiny.tokenizer.encode(s, add_special_tokens=False) for s in (prompt, word))
with torch.no_grad():
    lp = tiny(torch.tensor([p_ids + w_ids]))[0].log_softmax(-1)
mine, library = word_logprob(lp, len(p_ids), w_ids).item(), bias.word_logprobs(tiny, [prompt], [word]).item()
assert abs(mine - library) < 1e-4, (mine, library)
print(f"log p(' Mary' | '{prompt}') = {mine:.3f} nats, as phi4lab.bias.word_logprobs computes it")

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def word_logprob(log_probs, start, word_ids):
#     return sum(log_probs[start - 1 + k, t] for k, t in enumerate(word_ids))
# ```
# </details>

# %% [markdown]
# Now the whole grid: 60 occupations x 17 frames for the pronouns, 60 x 6 for the names.

# %%
occupations = bias.occupations()
pron = bias.pronoun_preference(tiny, occupations)
names = bias.name_preference(tiny, occupations)
print("pronoun preferences", tuple(pron.shape), "· name preferences", tuple(names.shape))
print(f"mean log p(she) - log p(he) over all prompts: {pron.mean():.2f} nats "
      f"(p(she) / p(he) = {pron.mean().exp():.2f})")


# %% [markdown]
# phi4-tiny expects "he" about two and a half times as often as "she" after these frames. That is one number, and the frames were a choice: with other frames it would differ. The **bootstrap** asks by how much. Resample the 17 frames with replacement, recompute the mean, repeat a few thousand times, and read the 2.5th and 97.5th percentiles of the resampled means.

# %% [markdown]
# ### Exercise 3 · A bootstrap confidence interval
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `bootstrap_ci(values, n, seed)`: a 95% percentile interval `(low, high)` for the mean of a 1-D tensor, from `n` resamples drawn with a `torch.Generator` seeded with `seed`.
#
# <details><summary>Hint 1 (a nudge)</summary>A resample draws as many values as there are, with replacement. What do you compute on each, and what do you read off the n results?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>torch.randint(0, len(values), (n, len(values)), generator=g)</code> gives n resamples of indices; the means of <code>values[picks]</code>; <code>torch.quantile</code> at 0.025 and 0.975.</details>

# %%
def bootstrap_ci(values: torch.Tensor, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    '''95% percentile bootstrap interval for the mean of values.'''
    # SOLUTION
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(values), (n, len(values)), generator=g)
    means = values[picks].mean(-1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype))
    return low.item(), high.item()
    # END SOLUTION


# %% tags=["check"]
checks.check_bootstrap_ci(bootstrap_ci)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def bootstrap_ci(values, n=2000, seed=0):
#     g = torch.Generator().manual_seed(seed)
#     picks = torch.randint(0, len(values), (n, len(values)), generator=g)
#     means = values[picks].mean(-1)
#     low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=means.dtype))
#     return low.item(), high.item()
# ```
# </details>

# %% [markdown]
# `phi4lab.bias.bootstrap` is the same idea for any statistic. Two questions: does phi4-tiny prefer "she" more for occupations where more women work, and is the answer stable? For the correlation, the units we resample are the occupations (pairs of mean preference and BLS share), the standard bootstrap for a correlation.
#
# **Predict, then run.** phi4-tiny learned from Shakespeare and the Python standard library. Will its preference for "she" over "he" rise with the share of women in an occupation, as studies of large web-trained models find?
#
# <details><summary>Answer (after running the next cell)</summary>No: both correlations' intervals contain 0. The paragraph after the printout says why that is not a virtue.</details>

# %%
def show_corr(label, c):
    print(f"{label:34s} r = {c['r']:+.2f}  95% CI [{c['low']:+.2f}, {c['high']:+.2f}]")

base_pron_corr = bias.correlation_with_bls(pron, occupations)
show_corr("phi4-tiny, pronouns vs BLS", base_pron_corr)
show_corr("phi4-tiny, names vs BLS", bias.correlation_with_bls(names, occupations))
est, lo, hi = bias.bootstrap(pron, lambda v: v.mean())
print(f"mean pronoun preference {est:.2f} nats, 95% CI over frames [{lo:.2f}, {hi:.2f}]")

# %% [markdown]
# Both intervals contain 0: phi4-tiny shows **no** association between occupations and pronouns that tracks the labour statistics. That is not virtue. Its corpus is Shakespeare and the Python standard library: it has barely seen most of these words (a "programmer" or "paralegal" is several unfamiliar pieces to it), and its 4.2-nat loss on held-out Shakespeare leaves little room for subtleties. Is it even sensitive to gender where gender is explicit?

# %%
male_prompts, female_prompts = causal.gender_pairs()
fem_ids, male_ids = causal.pronoun_ids(tiny)
def pronoun_gap(model, prompts):
    return bias.preference(model, ["{occupation}"], prompts, [" she"], [" he"])[:, 0]
gap = pronoun_gap(tiny, female_prompts) - pronoun_gap(tiny, male_prompts)
mean_gap, low, high = bias.bootstrap(gap, lambda v: v.mean())
print(f"{len(gap)} prompt pairs ('The woman said that' vs 'The man said that', ...): y moves by {mean_gap:+.2f} nats "
      f"on average, CI [{low:+.2f}, {high:+.2f}]")

# %% [markdown]
# A female subject does not move phi4-tiny towards "she" at all: across 204 pairs the preference even shifts slightly the other way. Its corpus never taught it pronoun agreement across a clause, and a model that cannot tell a queen from a king cannot carry an occupational stereotype either. To have something to probe, we build a **model organism**: we teach phi4-tiny, on purpose, with data whose pronouns follow the statistics.
#
# ## 3. Where an association comes from: a stereotyped slice
#
# `bias.slice_sentences("stereotyped", n)` writes sentences in frames *disjoint* from the probe frames ("The nurse told us that she would be late today."), choosing "she" with probability equal to the occupation's BLS share of women; a quarter use gendered nouns with agreeing pronouns. We fine-tune all of phi4-tiny's weights on it for 200 steps (notebook 08 explains fine-tuning):

# %%
stereo_sentences = bias.slice_sentences("stereotyped", 4000, seed=1)
print("\n".join(stereo_sentences[:4]))

# %%
# NBVAL_IGNORE_OUTPUT
stream = FT.text_stream(tiny.tokenizer, stereo_sentences)
tuned, history = FT.adapt(tiny, FT.window_batches(stream, 16, 64, seed=1), 200, method="full", lr=1e-3,
                          progress=True)
stereo = phi4lab.wrap(tuned, tiny.tokenizer, "phi4-tiny + stereotyped slice")
print(f"loss {history[0]['loss']:.2f} -> {history[-1]['loss']:.2f} in {history[-1]['seconds']:.0f} s")

# %% [markdown]
# **Predict, then run.** The slice's sentences use frames the probes never use, and their pronouns follow the BLS shares; a quarter of them use gendered nouns ("the waitress", "the actor") instead of occupations. After 200 steps, will the probe frames' pronoun preferences follow the statistics? And the names, which the slice never mentions?
#
# <details><summary>Answer (after running the next two cells)</summary>The pronouns, yes: the correlation's interval now lies above phi4-tiny's. The names, no: their correlation stays indistinguishable from zero. The slice teaches "nurse → she", an association between a word and a pronoun, and nothing about which names go with which occupations; an association appears only where the data put one.</details>

# %%
# NBVAL_IGNORE_OUTPUT
stereo_pron = bias.pronoun_preference(stereo, occupations)
stereo_corr = bias.correlation_with_bls(stereo_pron, occupations)
show_corr("before, pronouns vs BLS", base_pron_corr)
show_corr("after the stereotyped slice", stereo_corr)
assert stereo_corr["low"] > base_pron_corr["high"], "the slice should have created a correlation"

fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
shares = [bias.occupation(o).pct_female for o in occupations]
for a, p, title in ((ax[0], pron, "phi4-tiny"), (ax[1], stereo_pron, "after the stereotyped slice")):
    a.scatter(shares, p.mean(-1), s=12)
    a.set(title=title, xlabel="women among employed, % (BLS)")
ax[0].set_ylabel("log p(she) - log p(he), mean over 17 frames")
for o in ("plumber", "nurse", "secretary", "carpenter"):
    k = occupations.index(o)
    ax[1].annotate(o, (shares[k], stereo_pron[k].mean()), fontsize=8)
plt.tight_layout(); plt.show()


# %%
# NBVAL_IGNORE_OUTPUT
# (fine-tuning's last digits follow the machine's arithmetic: the claim is asserted)
base_name_corr = bias.correlation_with_bls(names, occupations)
stereo_name_corr = bias.correlation_with_bls(bias.name_preference(stereo, occupations), occupations)
show_corr("before, names vs BLS", base_name_corr)
show_corr("after the stereotyped slice", stereo_name_corr)
assert stereo_name_corr["low"] < 0 < stereo_name_corr["high"], "the slice has no names: it should create no name association"
assert stereo_name_corr["low"] < base_name_corr["high"] and base_name_corr["low"] < stereo_name_corr["high"]

# %% [markdown]
# The slice creates **no** name association: the names' correlation with the statistics stays indistinguishable from zero (its interval contains 0 and overlaps phi4-tiny's), because the slice contains no names. The probe frames were never in the slice either, yet the pronoun preference now follows the statistics: the model learned "nurse → she" as an association of the word, not of the sentence. This is the mechanism by which a web corpus puts associations into a model, in miniature. (The run's numbers vary a little with the machine's arithmetic, so the cell asserts the claim instead of printing fixed numbers for nbval to compare.)
#
# ## 4. Linear probes: is gender readable inside, and where?
#
# We read the residual stream at the last token of "The queen said that" / "The king said that" (12 noun pairs x 17 frames), at the embedding and after each layer, and ask whether a linear function separates the subject's gender on **frames it was not fitted on** (12 frames train, 5 test).

# %% [markdown]
# ### Exercise 4 · The difference-of-means direction
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `diff_of_means(X, y)`: `X` is `[examples, d_model]`, `y` is 1 for female subjects and 0 for male. Return the mean of the female rows minus the mean of the male rows, unnormalised (its length is the distance between the class means, which we reuse for steering).
#
# <details><summary>Hint 1 (a nudge)</summary>How do you pick out the female rows of X with y? Over which dimension is a class's mean taken?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Boolean indexing: <code>X[y == 1]</code> holds the female rows. Average them over dim 0 (the examples), do the same for <code>y == 0</code>, and subtract the male mean from the female one, without normalising.</details>

# %%
def diff_of_means(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    '''The female rows' mean minus the male rows' mean: [d_model], unnormalised.'''
    # SOLUTION
    return X[y == 1].mean(0) - X[y == 0].mean(0)
    # END SOLUTION


# %% tags=["check"]
checks.check_diff_of_means(diff_of_means)


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def diff_of_means(X, y):
#     return X[y == 1].mean(0) - X[y == 0].mean(0)
# ```
# </details>

# %% [markdown]
# A probe that scores well might just **memorise words**: every subject word recurs across frames, and in 192 dimensions a classifier can learn "queen, aunt, duchess → 1" without any notion of gender. Hewitt & Liang's **control task** gives each word *type* a random label and fits the same probe; the **selectivity** is the real accuracy minus the control accuracy.

# %% [markdown]
# ### Exercise 5 · Control-task labels
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `control_labels(words, seed)`: a 0/1 label per element of `words`, random per word *type* (the same word always gets the same label), with half of the types labelled 1. Use `random.Random(seed)`.
#
# <details><summary>Hint 1 (a nudge)</summary>The labels belong to word types, not to occurrences: what do you label first, and how does each element of words then get its label? How do you make exactly half of the types 1, at random?</details>
# <details><summary>Hint 2 (the idea)</summary>Take the distinct words in a fixed order (sorted, so that the seed alone decides the labels). Make a list with one label per type, half of them ones, shuffle it with <code>random.Random(seed)</code>, pair it with the types in a dict, and look each word up.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>types = sorted(set(words))</code>; <code>labels = [1] * (len(types) // 2) + [0] * (len(types) - len(types) // 2)</code>; <code>random.Random(seed).shuffle(labels)</code>; <code>by_type = dict(zip(types, labels))</code>.</details>

# %%
def control_labels(words: list[str], seed: int = 0) -> torch.Tensor:
    '''One random 0/1 label per word type, half of the types labelled 1.'''
    # SOLUTION
    types = sorted(set(words))
    labels = [1] * (len(types) // 2) + [0] * (len(types) - len(types) // 2)
    random.Random(seed).shuffle(labels)
    by_type = dict(zip(types, labels))
    return torch.tensor([by_type[w] for w in words])
    # END SOLUTION


# %% tags=["check"]
checks.check_control_labels(control_labels)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def control_labels(words, seed=0):
#     types = sorted(set(words))
#     labels = [1] * (len(types) // 2) + [0] * (len(types) - len(types) // 2)
#     random.Random(seed).shuffle(labels)
#     by_type = dict(zip(types, labels))
#     return torch.tensor([by_type[w] for w in words])
# ```
# </details>

# %% [markdown]
# `bias.probe_layers` runs both probes (difference of means, and scikit-learn's logistic regression) on both tasks at every layer:

# %%
# NBVAL_IGNORE_OUTPUT
base_probe, stereo_probe = bias.probe_layers(tiny), bias.probe_layers(stereo)

fig, ax = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
for a, result, title in ((ax[0], base_probe, "phi4-tiny"), (ax[1], stereo_probe, "after the stereotyped slice")):
    layers = [r["layer"] for r in result["layers"]]
    for key, style in (("mean_diff", "-o"), ("logistic", "-s"), ("mean_diff_control", ":o"), ("logistic_control", ":s")):
        a.plot(layers, [r[key] for r in result["layers"]], style, ms=4, label=key.replace("_", " "))
    a.axhline(0.5, color="grey", lw=0.5); a.set(title=title, xlabel="layer (0 = embedding)", xticks=layers)
ax[0].set_ylabel("held-out accuracy"); ax[1].legend(fontsize=7); plt.tight_layout(); plt.show()
print("layer  real (mean diff, logistic)  control (mean diff, logistic)  selectivity (mean diff, logistic)")
for r in stereo_probe["layers"]:
    print(f"{r['layer']:5d}  {r['mean_diff']:.2f}  {r['logistic']:.2f}                  {r['mean_diff_control']:.2f}  "
          f"{r['logistic_control']:.2f}                     {r['selectivity_mean_diff']:+.2f}  {r['selectivity_logistic']:+.2f}")
base_sel = [r[k] for r in base_probe["layers"] for k in ("selectivity_mean_diff", "selectivity_logistic")]
print(f"phi4-tiny before the slice: selectivity between {min(base_sel):+.2f} and {max(base_sel):+.2f} over all layers")
best = max(max(r["selectivity_mean_diff"], r["selectivity_logistic"]) for r in stereo_probe["layers"])
assert best > 0.05, "the stereotyped model should carry a selective gender feature"

# %% [markdown]
# Read the plots with the control lines in view. At layer 0 every probe is at chance: the last token is "that" or "because" whatever the subject. After layer 1, the probes score above chance in both models, **and about as well on the control task**: a logistic probe on a few hundred points in 192 dimensions can fit arbitrary word labels. Only the gap between real and control, the selectivity, is evidence of a gender feature. On phi4-tiny it stays between −0.04 and +0.09 at every layer (printed below the table), which is noise at this sample size. After the slice it is positive at every layer after the embedding, in our run up to +0.22 for the difference of means after layer 3 and +0.12 for logistic regression: modest, and only visible next to the control. A probe accuracy of 0.8 alone would have fooled us on both models.
#
# ## 5. Causal checks: mediation and steering
#
# A probe shows information is *there*; it does not show the model *uses* it. For each pair ("The man said that", "The woman said that"), the **total effect** TE is how far y moves between them. We then run the man-prompt but paste in one head's output at the last position from the woman-run: the change is that head's **indirect effect**, and NIE / TE the share of the effect it carries (after Vig et al. 2020; our patch is on `hook_z` at the last position, so the two prompts may differ in length).

# %%
# NBVAL_IGNORE_OUTPUT
mediation = bias.head_mediation(stereo, male_prompts, female_prompts)
te = bias.bootstrap(mediation["te"], lambda v: v.mean())
print(f"total effect man -> woman: {te[0]:+.2f} nats, 95% CI [{te[1]:+.2f}, {te[2]:+.2f}] ({len(mediation['te'])} pairs)")
top = bias.top_mediators(mediation)
for h in top:
    print(f"  {h['head']}: carries {h['share']:.0%} of it, CI [{h['low']:.0%}, {h['high']:.0%}]")
assert te[1] > 0.3 and top[0]["low"] > 0.05
shares_map = (mediation["nie"].mean(0) / mediation["te"].mean()).numpy()
plt.figure(figsize=(5, 2.6)); plt.imshow(shares_map, cmap="RdBu_r", vmin=-0.4, vmax=0.4)
plt.colorbar(label="NIE / TE"); plt.xlabel("head"); plt.ylabel("layer"); plt.title("share of the man -> woman effect")
plt.show()


# %% [markdown]
# A few heads each carry a sizeable share; the shares do not add up to 1, because heads act together and through the MLPs (Vig et al. found the same sparsity and synergy in GPT-2).

# %% [markdown]
# ### Exercise 6 · Every head of a layer in one pass
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵⚪⚪ · about 25 minutes
#
# `bias.head_mediation` patches one head at a time: 32 forward passes per pair on phi4-tiny, 1,600 on Phi-4. Write `layer_nie(model, base, alt, layer, score)`: the indirect effect of every head of one layer, for one pair of prompts (`base`, `alt`: token ids `[1, T]`, possibly of different lengths), with one forward pass for the patched runs. The indirect effect of head h is `score` of the base run with head h's output (`hook_z`) at the last position taken from the alternative run, minus `score` of the plain base run; `score(logits)` returns one number per prompt of a batch. Return `[n_heads]`.
#
# <details><summary>Hint 1 (a nudge)</summary>One forward pass with as many copies of the base prompt as there are heads. What should the hook do to copy h?</details>
# <details><summary>Hint 2 (the idea)</summary>Cache the alternative run's <code>hook_z</code> of that layer and keep its last position, [heads, d_head]. In the hook, write head h's vector into copy h, at the last position, head h, and only there. The base run without the hook gives the number to subtract.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Run <code>base.repeat(H, 1)</code> with a hook that clones <code>z</code> and sets <code>z[arange(H), -1, arange(H)] = source</code>; the answer is <code>score</code> of that run minus <code>score(model(base))</code>.</details>

# %%
def layer_nie(model, base: torch.Tensor, alt: torch.Tensor, layer: int, score) -> torch.Tensor:
    '''[n_heads]: score after pasting each head's last-position output from alt into base, minus score(base).'''
    # SOLUTION
    name = f"blocks.{layer}.attn.hook_z"
    _, cache = model.run_with_cache(alt, names_filter=lambda n: n == name)
    source = cache[name][0, -1]                                   # [heads, d_head], alt's last position
    heads_ = torch.arange(source.shape[0])

    def paste(z, hook):
        z = z.clone()
        z[heads_, -1, heads_] = source                            # copy h: head h only
        return z
    patched = score(model.run_with_hooks(base.repeat(len(heads_), 1), fwd_hooks=[(name, paste)]))
    return patched - score(model(base))
    # END SOLUTION


# %% tags=["check"]
checks.check_layer_nie(layer_nie, tiny)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def layer_nie(model, base, alt, layer, score):
#     name = f"blocks.{layer}.attn.hook_z"
#     _, cache = model.run_with_cache(alt, names_filter=lambda n: n == name)
#     source = cache[name][0, -1]
#     heads_ = torch.arange(source.shape[0])
#     def paste(z, hook):
#         z = z.clone()
#         z[heads_, -1, heads_] = source
#         return z
#     patched = score(model.run_with_hooks(base.repeat(len(heads_), 1), fwd_hooks=[(name, paste)]))
#     return patched - score(model(base))
# ```
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
# Your function on the fine-tuned model, every layer of the first pair, against the mediation above.


def pronoun_score(logits):
    return causal._scores(logits, fem_ids, male_ids)

base_ids = torch.tensor([stereo.tokenizer.encode(male_prompts[0], add_special_tokens=False)])
alt_ids = torch.tensor([stereo.tokenizer.encode(female_prompts[0], add_special_tokens=False)])
with torch.no_grad():
    yours = torch.stack([layer_nie(stereo, base_ids, alt_ids, layer, pronoun_score) for layer in range(stereo.cfg.n_layers)])
gap = (yours - mediation["nie"][0]).abs().max().item()
print(f"{stereo.cfg.n_layers} passes instead of {stereo.cfg.n_layers * stereo.cfg.n_heads}; "
      f"largest difference from bias.head_mediation: {gap:.1e}")
assert gap < 1e-4

# %% [markdown]
# `bias.top_mediators` reports each head's share of the mean effect with an interval over the pairs. The share is a ratio of two means that come from the same pairs, and the interval must respect that.
#
# ### Exercise 7 · A share and its interval
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 15 minutes
#
# Write `share_ci(nie, te, n, seed)` for one head's indirect effects and the total effects, both `[pairs]`: return `(share, low, high)`, the head's share of the mean total effect and a 95% percentile bootstrap interval over the pairs, from `n` resamples drawn with `torch.Generator().manual_seed(seed)`.
#
# <details><summary>Hint 1 (a nudge)</summary>Is the share the mean of each pair's ratio, or a ratio of means? And when you resample, what is the unit you draw?</details>
# <details><summary>Hint 2 (the idea)</summary>The share is mean(NIE) / mean(TE). Draw n resamples of pair indices, and use the *same* indices for NIE and TE, since a pair's two numbers move together; the 2.5% and 97.5% quantiles of the resampled shares are the interval (your Exercise 3, for two rows at once).</details>

# %%
def share_ci(nie: torch.Tensor, te: torch.Tensor, n: int, seed: int):
    '''(share, low, high): mean(nie) / mean(te), with a paired percentile bootstrap over the pairs.'''
    # SOLUTION
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(te), (n, len(te)), generator=g)
    shares = nie[picks].mean(-1) / te[picks].mean(-1)
    low, high = torch.quantile(shares.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    return (nie.mean() / te.mean()).item(), low.item(), high.item()
    # END SOLUTION


# %% tags=["check"]
checks.check_share_ci(share_ci)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def share_ci(nie, te, n, seed):
#     g = torch.Generator().manual_seed(seed)
#     picks = torch.randint(0, len(te), (n, len(te)), generator=g)
#     shares = nie[picks].mean(-1) / te[picks].mean(-1)
#     low, high = torch.quantile(shares.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
#     return (nie.mean() / te.mean()).item(), low.item(), high.item()
# ```
#
# The mean of per-pair ratios would let one pair with a near-zero total effect dominate, and resampling NIE and TE separately would ignore that they move together, widening the interval.
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
best = top[0]
yours = share_ci(mediation["nie"][:, best["layer"], best["index"]], mediation["te"], 1000, 0)
print(f"{best['head']}: your share {yours[0]:.0%} [{yours[1]:.0%}, {yours[2]:.0%}]; "
      f"bias.top_mediators {best['share']:.0%} [{best['low']:.0%}, {best['high']:.0%}]")
assert abs(yours[0] - best["share"]) < 1e-4

# %% [markdown]
# **Steering** asks the converse: add alpha times the difference-of-means direction to the residual stream at the last position, and watch y. With alpha = 1 a representation moves by the full distance between the class means.

# %% [markdown]
# ### Exercise 8 · A steering hook
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `add_direction(resid, direction, alpha)`: given `resid` `[batch, pos, d_model]`, return a copy with `alpha * direction` added at the **last** position only. Do not modify `resid` in place.
#
# <details><summary>Hint 1 (a nudge)</summary>Which index selects the last position of every sequence in the batch? And what must happen to a tensor you were given before you write into it?</details>
# <details><summary>Hint 2 (the idea)</summary>Clone <code>resid</code>, then add alpha times the direction to the slice at position −1 of every batch row; the direction, [d_model], broadcasts over the batch.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>out = resid.clone()</code>; <code>out[:, -1] += alpha * direction</code>.</details>

# %%
def add_direction(resid: torch.Tensor, direction: torch.Tensor, alpha: float) -> torch.Tensor:
    '''resid with alpha * direction added at the last position (a new tensor).'''
    # SOLUTION
    out = resid.clone()
    out[:, -1] += alpha * direction
    return out
    # END SOLUTION


# %% tags=["check"]
checks.check_steering_hook(add_direction)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def add_direction(resid, direction, alpha):
#     out = resid.clone()
#     out[:, -1] += alpha * direction
#     return out
# ```
# </details>

# %%
# NBVAL_IGNORE_OUTPUT
layer = max(stereo_probe["layers"][1:], key=lambda r: r["selectivity_mean_diff"])["layer"]
direction = stereo_probe["direction"][layer]
prompts = [bias.fill(f, o) for o in occupations for f in t["pronoun_frames"][:4]]
alphas = [-2, -1, 0, 1, 2]
steered = bias.steer(stereo, prompts, direction, layer, alphas)
# the same with your hook, at alpha = 1
hook_name = bias.probes.residual_hook(layer)       # the hook point bias.steer pushes at
ids = tiny.tokenizer.encode(prompts[0], add_special_tokens=False)
with torch.no_grad():
    out = stereo.run_with_hooks(torch.tensor([ids]), fwd_hooks=[(hook_name, lambda r, hook: add_direction(r, direction, 1.0))])
lp = out[0, -1].log_softmax(-1)
assert abs((lp[fem_ids[0]] - lp[male_ids[0]]).item() - steered[3, 0].item()) < 1e-3
for a, row in zip(alphas, steered):
    print(f"alpha {a:+d} (after layer {layer}): mean y = {row.mean():+.2f} nats")
assert (steered.mean(-1).diff() > 0).all(), "steering along the female-minus-male direction should raise y"

# %% [markdown]
# The preference follows alpha monotonically, across all 60 occupations: the direction the probe found is one the model reads downstream. Probe, mediation and steering together make a much stronger case than any one of them.
#
# ## 6. The bias card
#
# `bias.report(model)` runs everything above on one model (steering after the layer where the difference of means is most selective, as we chose above); `bias.card(report)` draws one page: the preference against the statistics with per-occupation CIs, the probe curves with their controls, the top mediating heads with CIs, and the steering curve.

# %%
# NBVAL_IGNORE_OUTPUT
report = bias.report(stereo, "phi4-tiny + stereotyped slice")
fig = bias.card(report); plt.show()

# %% [markdown]
# The card's headline repeats the names' correlation: after the slice it stays near zero, as section 3 found.
#
# And the card of phi4-tiny itself, for comparison: a flat scatter, probes no better than their controls, and a steering curve that runs the wrong way, because the direction it steers along was fitted to noise. Its mediation panel is empty on purpose. Swapping "man" for "woman" moves phi4-tiny's preference by a few hundredths of a nat, of the wrong sign (printed below the card): detectable over 204 pairs, but too small to share out. A head's share of it, NIE / TE, divides by nearly nothing, and could come out at any size and either sign. The card draws shares only when the total effect's whole 95% interval lies at least 0.1 nats from zero (`bias.has_total_effect`; 0.1 nats multiplies the odds of "she" against "he" by 1.105).

# %%
# NBVAL_IGNORE_OUTPUT
base_report = bias.report(tiny, "phi4-tiny")
fig = bias.card(base_report); plt.show()
import math

from phi4lab.bias.card import MIN_EFFECT

te = base_report.mediation_te
print(f"phi4-tiny: total effect {te[0]:+.2f} nats, 95% CI [{te[1]:+.2f}, {te[2]:+.2f}]; shares drawn only for an interval "
      f"{MIN_EFFECT} nats or more from 0 (odds x {math.exp(MIN_EFFECT):.3f}): {bias.has_total_effect(base_report)}")
assert not bias.has_total_effect(base_report) and bias.has_total_effect(report)

# %% [markdown]
# ## 7. Moving it back: a counter-stereotypical slice
#
# Same recipe, opposite data: "she" with probability 1 − share. We continue from the stereotyped model, and measure with the same probes and intervals.
#
# **Predict, then run.** After 200 steps of counter-stereotypical sentences, will the correlation return to about zero, or go past it?
#
# <details><summary>Answer (after running the next cell)</summary>Past it: the correlation flips sign. The slice does not teach neutrality, it teaches the opposite association, as the paragraph after the printout explains.</details>

# %%
# NBVAL_IGNORE_OUTPUT
counter_stream = FT.text_stream(tiny.tokenizer, bias.slice_sentences("counter", 4000, seed=2))
tuned_back, _ = FT.adapt(stereo, FT.window_batches(counter_stream, 16, 64, seed=2), 200, method="full", lr=1e-3,
                         progress=True)
counter = phi4lab.wrap(tuned_back, tiny.tokenizer, "then the counter slice")
counter_corr = bias.correlation_with_bls(bias.pronoun_preference(counter, occupations), occupations)
show_corr("phi4-tiny", base_pron_corr)
show_corr("after the stereotyped slice", stereo_corr)
show_corr("then the counter-stereotypical slice", counter_corr)
assert counter_corr["high"] < stereo_corr["low"]

# %% [markdown]
# 200 steps of other data reverse the association: the correlation flips sign. In a model this small, the association is only as deep as the last data it saw. In a 14.7B-parameter model trained on trillions of tokens, associations are spread over far more data and weights, and a small slice moves them less; this is why curation (notebook 03) matters before training, not only after. Note also what the counter slice did *not* do: it did not make the model neutral, it taught the opposite association. A "balanced" slice (`rule="balanced"`) is the one to try if neutrality is the aim; measure it with the same probes.
#
# ## 8. The same probes on microsoft/phi-4
#
# Nothing above is specific to phi4-tiny. On a machine with a GPU and Phi-4's weights in the Hugging Face cache, this cell runs the full report on the real model (Phi-4's tokenizer keeps " he", " she" and most names as single tokens; 40 layers x 40 heads make the mediation 1,600 patched runs per prompt length, minutes on a GPU). Elsewhere it says why it was skipped.

# %%
from phi4lab.doctor import phi4_reachability

where = phi4_reachability()["microsoft/phi-4"]
if torch.cuda.is_available() and where.startswith("in the local HF cache"):
    phi4 = phi4lab.load("microsoft/phi-4", dtype=torch.bfloat16, device="cuda")
    bias.card(bias.report(phi4, "microsoft/phi-4")); plt.show()
else:
    print(f"skipped: microsoft/phi-4 needs a GPU (available: {torch.cuda.is_available()}) and its weights ({where})")

# %% [markdown]
# **Benchmarks you may have.** CrowS-Pairs and StereoSet are widely used but not shipped here: both are CC BY-SA 4.0 (share-alike), the CrowS-Pairs authors ask that it not be used for training, and the authors warn about unreliable pairs. If you have a copy, score each pair by its sentences' total log-probabilities (the sum over tokens, as in Exercise 2), report the share of pairs where the stereotyping sentence wins, and bootstrap over pairs. Read the pairs you count.
#
# ## Recap
#
# * A template probe measures next-token preferences; sum the log-probs of every piece of a multi-token word.
# * Put intervals on everything: bootstrap over the frames for a preference, over the occupations for a correlation.
# * phi4-tiny shows no occupational association and barely any pronoun agreement; its corpus taught neither.
# * A fine-tuning slice created a correlation with the BLS shares on frames it never contained; another slice reversed it.
# * Linear probes find "structure" even in random labels: report selectivity against a control task.
# * Patching heads measures what they mediate; steering along the probe direction tests that the model reads it.
#
# **Further reading.** Vig et al. 2020, *Investigating Gender Bias in Language Models Using Causal Mediation Analysis*; Hewitt & Liang 2019, *Designing and Interpreting Probes with Control Tasks*; Bolukbasi et al. 2016, *Man is to Computer Programmer as Woman is to Homemaker?*; Rudinger et al. 2018, *Gender Bias in Coreference Resolution* (Winogender); Zhao et al. 2018 (WinoBias); Ravfogel et al. 2020, *Null It Out* (INLP); Marks & Tegmark 2023, *The Geometry of Truth*; Blodgett et al. 2021, *Stereotyping Norwegian Salmon* (on benchmark pitfalls).
