# %% [markdown]
# # 13 · Evaluation: benchmark scores, contamination, and grounded answers
#
# Most of what is claimed about a model is a number on a benchmark. Phi-4's technical report (Abdin et al. 2024, arXiv:2412.08905) is a table of them: MMLU, GPQA, MATH, HumanEval, SimpleQA. This notebook asks what such a number is made of, how sure it is, what makes it wrong, and what happens inside a model when it answers.
#
# **Objectives.** By the end you can
# 1. score a multiple-choice benchmark by hand, and get exactly the numbers of EleutherAI's lm-evaluation-harness (`lm-eval`, the harness behind most published tables);
# 2. put a standard error on a score, and say when two models cannot be ranked;
# 3. implement Phi-4's decontamination check, and measure what planted contamination does to a score;
# 4. compare closed-book with grounded and retrieved answers, and trade wrong answers for abstentions;
# 5. find the heads that copy a grounded answer from the context, and remove them;
# 6. measure how far automatic metrics agree with hand labels.
#
# **Prerequisites:** notebooks 04 (induction heads) and 08 (fine-tuning). **Run time:** about two minutes on a laptop CPU (one short fine-tune). **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import matplotlib.pyplot as plt
import torch

import phi4lab
from phi4lab.analysis.stats import bootstrap
from phi4lab.doctor import require
from phi4lab.evaluation import contamination, decontamination, grounding, harness, judgments, scoring
from phi4lab.exercises import evaluation as checks
from phi4lab.recipes.corpus import build_corpus
from phi4lab.training import finetune

require()
_ = torch.manual_seed(0)
torch.set_grad_enabled(False)      # the fine-tune turns gradients on where it needs them
model = phi4lab.load("phi4-tiny")
tok = model.tokenizer
for name in harness.SHIPPED_TASKS:
    print(f"{name:26s} {len(harness.items(name)):4d} items  ({harness.SHIPPED_TASKS[name][2]})")

# %% [markdown]
# These are the course's own benchmarks, in `data/evals/`: phi4-tiny cannot do MMLU, so we wrote tasks it can partly do, from the corpus's **validation** split (text phi4-tiny never trained on; the recipe leaves out *All's Well That Ends Well*, whose First Folio edition is in the training split, in an old spelling that would hide it from the n-gram check of section 4). `shakespeare_cloze` asks for the last word of a line of verse; `stdlib_calls` asks which function a line of standard-library code calls; `stdlib_recall` gives four lines of code and the start of one of them, and asks for the rest of the line, with and without the passage. `phi4lab build-evals` rebuilds them, and every file is pinned by its sha256.
#
# ## 1. Scoring a multiple-choice item
#
# A language model does not pick an option. A harness asks how likely each option is as the continuation of the question, and takes the likeliest. For choice $c$ with tokens $c_1 \dots c_n$ after context $x$:
#
# $$\log p(c \mid x) = \sum_{i=1}^{n} \log p(c_i \mid x, c_{<i}).$$
#
# **acc** takes the choice with the largest sum. That favours short choices (every extra token multiplies in another probability below 1), so lm-eval also reports **acc_norm**, the sum divided by the choice's length *in characters*.

# %%
cloze = harness.items("shakespeare_cloze")
item = cloze[1]
print(item.context, "___")
scored = scoring.score_choices(model, item.context, item.choices, item.answer)
for k, (choice, ll) in enumerate(zip(item.choices, scored.loglikelihoods)):
    mark = "  <- right" if k == item.answer else ""
    print(f"  {choice!r:12} log p = {ll:7.2f}   per character {ll / len(choice):6.2f}{mark}")
print(f"acc picks {item.choices[scored.pred]!r}, acc_norm picks {item.choices[scored.pred_norm]!r}")


# %% [markdown]
# ### Exercise 1 · A continuation's log-likelihood
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `continuation_loglikelihood(model, context, continuation)`: the summed log-probability of the continuation's tokens. The one subtlety is which tokens are the continuation's. lm-eval tokenizes context and continuation **together** and takes the tokens after the context's own, because a word's first token usually carries the space before it; and it first moves any trailing spaces of the context to the front of the continuation.
#
# <details><summary>Hint 1 (a nudge)</summary>If the context ends with a space, where does that space go before tokenizing? Once you have the ids of the whole text, which of them are the continuation's, and which row of the logits gives each one's probability?</details>
# <details><summary>Hint 2 (the idea)</summary>Move the context's trailing spaces to the front of the continuation. Tokenize context + continuation together; the continuation's tokens are the ones after as many tokens as the context alone has. The logits at position t predict token t + 1, so token t's log-probability is in row t − 1 of the log-softmax; sum them over the continuation's tokens.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>With <code>tok = model.tokenizer</code>, <code>whole = tok.encode(context + continuation)</code>; the continuation's tokens are <code>whole[len(tok.encode(context)):]</code>; token t's log-probability is <code>torch.log_softmax(logits, -1)[t - 1, whole[t]]</code>. Return a <code>float</code>.</details>

# %%
def continuation_loglikelihood(model, context, continuation):
    '''log p(continuation | context), tokenized the way lm-eval tokenizes it. Returns a float.'''
    # SOLUTION
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = model.tokenizer.encode(context + continuation)
    n = len(model.tokenizer.encode(context))
    logprobs = torch.log_softmax(model(torch.tensor([whole]))[0].float(), -1)
    return float(sum(logprobs[t - 1, whole[t]] for t in range(n, len(whole))))
    # END SOLUTION


# %% tags=["check"]
checks.check_loglikelihood(continuation_loglikelihood, model)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def continuation_loglikelihood(model, context, continuation):
#     spaces = len(context) - len(context.rstrip())
#     if spaces:
#         context, continuation = context[:-spaces], context[-spaces:] + continuation
#     whole = model.tokenizer.encode(context + continuation)
#     n = len(model.tokenizer.encode(context))
#     logprobs = torch.log_softmax(model(torch.tensor([whole]))[0].float(), -1)
#     return float(sum(logprobs[t - 1, whole[t]] for t in range(n, len(whole))))
# ```
# </details>

# %% [markdown]
# ## 2. The harness
#
# lm-eval splits the work in two. A **model** answers three kinds of request: `loglikelihood` (how likely is this continuation?), `loglikelihood_rolling` (how likely is this whole text?) and `generate_until`. Its `HFLM` serves them from any Hugging Face causal LM, here the `Phi3ForCausalLM` inside the phi4lab model (the same weights, no copy). A **task** is a YAML file: where the items are, Jinja templates that turn an item into a prompt, the request it makes and the metrics. This is the cloze task's:

# %%
print((harness.TASK_DIR / "shakespeare_cloze.yaml").read_text())

# %% [markdown]
# `target_delimiter` is the text between context and choice: a space for words, nothing for `stdlib_calls`, whose context ends where the called name begins. `harness.evaluate` runs lm-eval's `simple_evaluate` on shipped tasks, offline, and keeps every item's requests and responses:
#
# **Predict, then run.** On `stdlib_calls` the four choices are function names of very different lengths. Will acc_norm be above or below acc there? And on the cloze?
#
# <details><summary>Answer (after running the next cell)</summary>On `stdlib_calls`, above: acc penalises every extra token, so it leans towards short names whatever the context says, and dividing by the length takes that lean away. On the cloze, slightly below: where length was not what misled acc, dividing by it can hand an item to a long wrong word. Normalisation is a convention with a direction, not a free improvement, which is why papers say which one they report.</details>

# %%
# NBVAL_IGNORE_OUTPUT
run = harness.evaluate(model, ["shakespeare_cloze", "stdlib_calls"])     # lm-eval's progress bars

# %%
print(harness.table(run))


# %% [markdown]
# ### Exercise 2 · acc and acc_norm, exactly as lm-eval
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵🔵🔵 · about 20 minutes
#
# Write `score_item(model, context, choices, delimiter)` returning `(pred, pred_norm)`: the index acc picks and the index acc_norm picks. The check runs it on every cloze item and compares with the choices lm-eval rewarded above. Matching a harness *exactly* is a lesson in conventions: the delimiter goes between context and choice, the length is the choice's own in characters, and ties go to the first choice (as `numpy.argmax` breaks them).
#
# <details><summary>Hint 1 (a nudge)</summary>What number does acc compare across the choices, and what does acc_norm divide it by? Which function you have already written gives that number?</details>
# <details><summary>Hint 2 (the idea)</summary>Score each choice with your continuation_loglikelihood, the continuation being the delimiter followed by the choice. acc picks the largest log-likelihood; acc_norm the largest log-likelihood divided by the choice's own length in characters (the delimiter not counted). On a tie, both pick the earlier choice.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>lls = [continuation_loglikelihood(model, context, delimiter + c) for c in choices]</code>; <code>max(range(len(lls)), key=lambda i: lls[i] / len(choices[i]))</code> returns the first of equal maxima.</details>

# %%
def score_item(model, context, choices, delimiter=" "):
    '''(index acc picks, index acc_norm picks) for one multiple-choice item.'''
    # SOLUTION
    lls = [continuation_loglikelihood(model, context, delimiter + c) for c in choices]
    pred = max(range(len(lls)), key=lambda i: lls[i])
    pred_norm = max(range(len(lls)), key=lambda i: lls[i] / len(choices[i]))
    return pred, pred_norm
    # END SOLUTION


# %% tags=["check"]
samples = {name: sorted(run["samples"][f"phi4lab_{name}"], key=lambda s: s["doc_id"])
           for name in ("shakespeare_cloze", "stdlib_calls")}
checks.check_acc_norm(score_item, model, cloze, samples["shakespeare_cloze"], " ", "shakespeare_cloze")


# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def score_item(model, context, choices, delimiter=" "):
#     lls = [continuation_loglikelihood(model, context, delimiter + c) for c in choices]
#     pred = max(range(len(lls)), key=lambda i: lls[i])
#     pred_norm = max(range(len(lls)), key=lambda i: lls[i] / len(choices[i]))
#     return pred, pred_norm
# ```
# </details>

# %% [markdown]
# phi4lab's own scorer (`evaluation.scoring`) does the same, and the course's tests hold it equal to lm-eval on every shipped task: acc and acc_norm on every item, perplexity per domain, and every generated answer. One difference matters when you compare with published numbers: lm-eval reports acc_norm by characters; some papers normalise by tokens, which favours a different choice when two tokenizers split the words differently.
#
# ## 3. How sure is a score?
#
# A benchmark score is a mean over items, so it has a standard error: the standard deviation of the per-item scores over √n. lm-eval reports it next to every mean (the ± column above).
#
# ### Exercise 3 · The standard error
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 5 minutes
#
# Write `standard_error(scores)` for a 1-D tensor of per-item scores, as lm-eval computes it (the *sample* standard deviation).
#
# <details><summary>Hint 1 (a nudge)</summary>The sample standard deviation divides by n − 1, not n: which does torch.std use by default? And by what is the standard deviation divided to give the error of the mean?</details>
# <details><summary>Hint 2 (nearly the answer)</summary><code>scores.std()</code> is already the sample standard deviation; divide it by √n, the square root of the number of items, and return a <code>float</code>.</details>

# %%
def standard_error(scores):
    '''The standard error of the mean of per-item scores.'''
    # SOLUTION
    return float(scores.std() / len(scores) ** 0.5)
    # END SOLUTION


# %% tags=["check"]
checks.check_standard_error(standard_error)
### BEGIN HIDDEN TESTS
checks.held_out(standard_error, [(torch.tensor([0.0, 1.0] * 7 + [1.0], dtype=torch.float64),), (torch.linspace(0, 1, 9, dtype=torch.float64),)],
                rtol=1e-9, atol=1e-12)
### END HIDDEN TESTS

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def standard_error(scores):
#     return float(scores.std() / len(scores) ** 0.5)     # torch's std divides by n - 1
# ```
# </details>

# %% [markdown]
# For a score near 0.6 the error shrinks only as 1/√n:

# %%
for n in (40, 120, 1_000, 10_000):
    se = (0.6 * 0.4 / (n - 1)) ** 0.5
    print(f"{n:6,d} items: standard error {se:.3f}, a 95% interval of ±{1.96 * se:.3f}")

# %% [markdown]
# On a 40-item benchmark a score near 0.6 is uncertain by ±0.154, and two models whose scores differ by less than that cannot be ranked on it. Two models are compared best on the **same** items (a paired difference: each item's score under one model minus under the other), since the items' difficulty then cancels. Section 5 does this for one model before and after a fine-tune.
#
# Perplexity, the other number everyone reports, needs no choices: lm-eval scores a whole text in windows of the model's context and reports word perplexity, byte perplexity and bits per byte. Word perplexity and bits per byte count words and bytes of the text itself, so they compare models with different tokenizers (bits per byte is the base-2 logarithm of byte perplexity); a perplexity per *token* would not, since a token is a different amount of text in each tokenizer.

# %%
for domain in ("prose", "code"):
    texts = [it.text for it in harness.items(f"perplexity_{domain}")]
    p = scoring.perplexities(model, texts)
    print(f"{domain:5s}: {p['bits_per_byte']:.3f} bits per byte, byte perplexity {p['byte_perplexity']:.3f}, "
          f"word perplexity {p['word_perplexity']:,.0f}")


# %% [markdown]
# ## 4. Contamination, found the way Phi-4's authors found it
#
# If benchmark items are in the training data, a score measures memory. Phi-4's report (appendix B.1) decontaminated the training data against about 20 benchmarks with a **hybrid n-gram** check, over words:
#
# 1. an item that shares any **13-gram** with a training document is contaminated, unless the 13-gram is on an allowlist of ubiquitous ones (multiple-choice boilerplate);
# 2. otherwise, per document, count the item's **7-grams** the document also has, and divide by the smaller of the two 7-gram counts; the largest ratio over the documents is compared with two thresholds, *partial* and *contaminated*. The report's worked example flags an item at a ratio of 0.395; it does not publish its thresholds, so phi4lab's (0.2 and 0.5) are settings.
#
# ### Exercise 4 · The hybrid check for one item
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵🔵🔵 · about 25 minutes
#
# Write `verdict(item, documents, allowlist, partial, contaminated)` returning `(status, ratio)`: status `"clean"`, `"partial"` or `"contaminated"`, and the largest 7-gram ratio. Use `decontamination.words(text)` for the words (lowercased, punctuation dropped), and sets of n-grams (tuples of words).
#
# <details><summary>Hint 1 (a nudge)</summary>Two tests, one on 13-grams and one on 7-grams: what does each compare, and which verdict wins when they disagree? What operation on sets counts the n-grams an item and a document share?</details>
# <details><summary>Hint 2 (the idea)</summary>Write one helper: the set of tuples of n consecutive words of a text. The allowlist's 13-grams come out of the item's 13-grams before the test; any that remain and that a document also has is a hit. For each document the 7-gram ratio is the number of shared 7-grams over the smaller of the two 7-gram counts (0 when either is empty); keep the largest. A 13-gram hit is contaminated even if the ratio is small; otherwise compare the ratio with <code>contaminated</code>, then with <code>partial</code> (a ratio equal to a threshold reaches it).</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>grams = lambda ws, n: {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}</code> on <code>decontamination.words(text)</code>; the ratio for one document is <code>len(item7 & doc7) / min(len(item7), len(doc7))</code>.</details>

# %%
def verdict(item, documents, allowlist, partial, contaminated):
    '''Phi-4's hybrid n-gram verdict for one benchmark item: (status, largest 7-gram ratio).'''
    # SOLUTION
    def grams(text, n):
        ws = decontamination.words(text)
        return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}
    allowed = set().union(*(grams(a, 13) for a in allowlist)) if allowlist else set()
    item13, item7 = grams(item, 13) - allowed, grams(item, 7)
    hit, ratio = False, 0.0
    for doc in documents:
        hit = hit or bool(item13 & grams(doc, 13))
        doc7 = grams(doc, 7)
        if item7 and doc7:
            ratio = max(ratio, len(item7 & doc7) / min(len(item7), len(doc7)))
    if hit or ratio >= contaminated:
        return "contaminated", ratio
    return ("partial" if ratio >= partial else "clean"), ratio
    # END SOLUTION


# %% tags=["check"]
checks.check_verdict(verdict)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def verdict(item, documents, allowlist, partial, contaminated):
#     def grams(text, n):
#         ws = decontamination.words(text)
#         return {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}
#     allowed = set().union(*(grams(a, 13) for a in allowlist)) if allowlist else set()
#     item13, item7 = grams(item, 13) - allowed, grams(item, 7)
#     hit, ratio = False, 0.0
#     for doc in documents:
#         hit = hit or bool(item13 & grams(doc, 13))
#         doc7 = grams(doc, 7)
#         if item7 and doc7:
#             ratio = max(ratio, len(item7 & doc7) / min(len(item7), len(doc7)))
#     if hit or ratio >= contaminated:
#         return "contaminated", ratio
#     return ("partial" if ratio >= partial else "clean"), ratio
# ```
# </details>

# %% [markdown]
# Sets of word tuples are fine for one item. For a benchmark against a corpus, `decontamination.Decontaminator` indexes the items' n-grams as sorted arrays of 64-bit hashes, in memory it checks before building, and streams the corpus through them one document at a time (`benchmarks/decontam.py` times it on the whole training corpus). The shipped tasks were built this way: the recipe dropped every candidate item the check flagged against phi4-tiny's training split. Checking the result:

# %%
corpus = build_corpus(progress=False)
train_texts = [d.text for d in corpus.train]
benchmark = {it.id: contamination.item_text(it) for it in cloze}
benchmark.update({it.id: contamination.item_text(it, "") for it in harness.items("stdlib_calls")})
benchmark.update({it.id: it.context for it in harness.items("stdlib_recall")})      # the passages
found = decontamination.decontaminate(benchmark, train_texts)
statuses = [v.status for v in found]
print(f"{len(train_texts)} training documents, {len(benchmark)} items: "
      f"{statuses.count('clean')} clean, {statuses.count('partial')} partial, {statuses.count('contaminated')} contaminated")

# %% [markdown]
# **What n-grams miss.** The report itself warns that a rephrased item shares few exact n-grams. Here is a cloze item, rephrased by hand, against the original. MinHash (datasketch, the library the corpus's near-duplicate step uses) estimates the Jaccard similarity of the two texts' sets of character 5-grams, which survives a change of a few words; an unrelated item gives the baseline:

# %%
original = contamination.item_text(cloze[1])
rephrased = ('And munched, and munched, and munched: "Give me," said I:\n"Away with you, witch!" the rump-fed '
             'ronyon cries.\nHer husband has gone to Aleppo, master of the Tiger')
print(original, "\n---\n" + rephrased)
v = decontamination.decontaminate({"item": original}, [rephrased])[0]
print(f"hybrid n-gram check: {v.status} (13-gram hit: {v.thirteen_gram}, 7-gram ratio {v.ratio:.2f})")
print(f"character 5-gram Jaccard {decontamination.jaccard(original, rephrased):.2f}, "
      f"MinHash estimate {decontamination.minhash_similarity(original, rephrased):.2f}")
unrelated = contamination.item_text(cloze[2])
print(f"against an unrelated item: Jaccard {decontamination.jaccard(original, unrelated):.2f}, "
      f"MinHash {decontamination.minhash_similarity(original, unrelated):.2f}")

# %% [markdown]
# ## 5. Planting contamination on purpose
#
# How much does a leak inflate a score? Plant a third of the cloze items (question and right answer, four copies each) into a slice of phi4-tiny's training text, fine-tune on it, and score every item before and after. The clean items are the control: whatever the fine-tune does to all items shows up there too, so the **inflation** is the planted items' change minus the clean items' change. The interval resamples the two groups separately.

# %%
planted = contamination.plant(cloze, 40, seed=0)
leaked = [contamination.item_text(it) for it in cloze if it.id in planted]
background = [d.text for d in corpus.train if d.domain == "prose"][:1]
docs = contamination.mixture(background, leaked, copies=4, seed=0)
stream = finetune.text_stream(tok, docs)
print(f"fine-tuning text: {len(stream):,} tokens, of which the leaked items are "
      f"{len(finetune.text_stream(tok, leaked)) * 4:,}")
with torch.enable_grad():
    tuned, _ = finetune.adapt(model, finetune.window_batches(stream, 16, 64, seed=0), steps=120,
                              method="full", lr=1e-3, progress=True)
tuned = phi4lab.wrap(tuned, tok, "phi4-tiny + leaked cloze items")

# %%
before = scoring.score_multiple_choice(model, cloze)["items"]
after = scoring.score_multiple_choice(tuned, cloze)["items"]
ids = [it.id for it in cloze]
acc = contamination.inflation([s.acc for s in before], [s.acc for s in after], ids, planted)
gold = contamination.inflation([s.loglikelihoods[s.answer] for s in before],
                               [s.loglikelihoods[s.answer] for s in after], ids, planted)
print(f"acc on planted items: {acc['planted_before']:.3f} -> {acc['planted_after']:.3f}")
print(f"acc on clean items:   {acc['clean_before']:.3f} -> {acc['clean_after']:.3f}")
print(f"inflation of acc: {acc['inflation']:+.3f} (95% interval {acc['low']:+.3f} to {acc['high']:+.3f})")
print(f"inflation of the right answer's log-likelihood: {gold['inflation']:+.2f} nats "
      f"({gold['low']:+.2f} to {gold['high']:+.2f})")

# %% [markdown]
# **Predict, then run.** The detector now scans the fine-tuning documents. Will it flag exactly the planted items, or also clean ones (the background is Shakespeare too)?
#
# <details><summary>Answer (after running the next cell)</summary>Exactly the planted ones. The shipped items were already checked clean against the whole training split (section 4), so the background, a play from that split, cannot match them; each leaked copy shares every one of its 13-grams with its item.</details>

# %%
flagged = {v.item for v in decontamination.decontaminate(benchmark, docs) if v.status != "clean"}
print(f"flagged {len(flagged)} items; exactly the planted ones: {flagged == planted}")

# %% [markdown]
# The clean items are also the paired comparison section 3 asked for: the same items under two models, phi4-tiny and its fine-tune. Did the fine-tune change phi4-tiny on the items it never saw leaked?

# %%
clean = torch.tensor([a.acc - b.acc for a, b, i in zip(after, before, ids) if i not in planted])
estimate, low, high = bootstrap(clean, lambda x: x.mean())
print(f"clean items, fine-tune minus phi4-tiny: {estimate:+.3f} (95% interval {low:+.3f} to {high:+.3f})")
alone = [torch.tensor([s.acc for s, i in zip(scores, ids) if i not in planted]) for scores in (before, after)]
print("each score alone: " + ", ".join(f"{x.mean():.3f} ± {1.96 * standard_error(x):.3f}" for x in alone))


# %% [markdown]
# Not measurably: the change is small and its interval includes zero, so on its clean items this benchmark cannot tell phi4-tiny from its fine-tune, while the planted items say the two differ enormously. A score that jumps on some items and stands still on the rest is the signature of a leak. Pairing helps even here: each item's difficulty cancels in its own difference, so the paired interval is narrower than either score's interval taken alone.

# %% [markdown]
# ## 6. Closed book, grounded, retrieved
#
# SimpleQA (Wei et al. 2024, arXiv:2411.04368) asks short factual questions with one right answer, and grades each reply correct, incorrect or *not attempted*. Phi-4 scores 3.0 on it, the lowest of the report's models, and the report shows why that is by design: post-training moved the base model's mostly incorrect answers to not attempted (from 6.8% correct, 3.2% not attempted and 90.0% incorrect for the base model to 3.0%, 81.1% and 15.8% for the final one, appendix A.1). A model that cannot know should say so.
#
# phi4-tiny knows few facts, but `stdlib_recall` lets us see the same trade. Each question is the start of a line of code. **Closed book**, the model has only the question; **grounded**, the four-line passage that contains the line comes first.
#
# **Predict, then run.** phi4-tiny's induction heads copy a repeated *random* token sequence almost perfectly (notebook 04). Will it copy a repeated passage of Shakespeare as well as a repeated passage of code?

# %%
def copy_accuracy(texts):
    '''Share of the second copy's tokens that greedy prediction gets right, text repeated once.'''
    right = total = 0
    for text in texts:
        ids = tok.encode(text + "\n")
        logits = model(torch.tensor([ids + ids]))[0]
        right += int((logits[len(ids) - 1:-1].argmax(-1) == torch.tensor(ids)).sum())
        total += len(ids)
    return right / total


verse = [it.context for it in cloze[:40]]
code = [it.context for it in harness.items("stdlib_recall")[:40]]
print(f"second copy predicted right: verse {copy_accuracy(verse):.2f}, code {copy_accuracy(code):.2f}")

# %% [markdown]
# <details><summary>Answer</summary>No: it copies code much more often than verse. On a line of verse its knowledge of Shakespeare (what usually comes next) outvotes the copy; code repeats names and lines all the time, and the model learned to trust the copy there. That is why the grounded task is code.</details>

# %%
recall = harness.items("stdlib_recall")
closed = grounding.answer_all(model, recall)
grounded = grounding.answer_all(model, recall, [it.context for it in recall])
for label, answers in (("closed book", closed), ("grounded", grounded)):
    em = torch.tensor([float(a.correct) for a in answers], dtype=torch.float64)
    print(f"{label:12s} exact match {em.mean():.3f} ± {standard_error(em):.3f}")
for it, a in list(zip(recall, grounded))[5:8]:
    print(f"  {it.question.strip()!r:28} -> {a.text!r:22} (reference {it.answers[0]!r})")

# %% [markdown]
# A **retriever** puts the passage there without being told which it is. `grounding.Retriever` is TF-IDF over a pool of passages (scikit-learn's `TfidfVectorizer`, identifiers kept whole), cosine similarity, top k. The pool here is the task's own passages plus four-line blocks of the perplexity passages as distractors; the query is the question alone.

# %%
pool = [it.context for it in recall]
for it in harness.items("perplexity_code"):
    lines = it.text.split("\n")
    pool += ["\n".join(lines[k:k + 4]) for k in range(0, len(lines) - 3, 4)]
retriever = grounding.Retriever(pool)
top = [retriever.search(it.question, 3) for it in recall]
print(f"{len(pool)} passages; the right one first for {sum(t[0][0] == k for k, t in enumerate(top)) / len(recall):.3f} "
      f"of the questions, in the top 3 for {sum(k in [i for i, _ in t] for k, t in enumerate(top)) / len(recall):.3f}")
retrieved = grounding.answer_all(model, recall, [pool[t[0][0]] for t in top])
print(f"retrieved (top 1) exact match {sum(a.correct for a in retrieved) / len(recall):.3f}")


# %% [markdown]
# ### Exercise 5 · Abstention
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Every answer comes with a confidence, its mean log-probability per generated token. Write `abstain(confidences, correct, threshold)`: answer when the confidence is at least the threshold, else withhold; return the shares `(correct, incorrect, not_attempted)` of all questions, as SimpleQA reports them.
#
# <details><summary>Hint 1 (a nudge)</summary>Which questions are attempted? Of those, which count as correct and which as incorrect? And is each share a share of the attempted questions, or of all of them?</details>
# <details><summary>Hint 2 (the idea)</summary>A question is attempted when its confidence is at least the threshold (an answer exactly at the threshold is given). Correct: attempted and correct; incorrect: attempted and not correct; not attempted: the rest. Divide each count by the number of all questions, so that the three shares add up to one.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>attempted = confidences >= threshold</code>; <code>int((attempted & correct).sum())</code> counts the right answers; divide the counts by <code>len(confidences)</code>.</details>

# %%
def abstain(confidences, correct, threshold):
    '''(correct, incorrect, not attempted) shares when answers below `threshold` are withheld.'''
    # SOLUTION
    attempted = confidences >= threshold
    n = len(confidences)
    right = int((attempted & correct).sum())
    return right / n, (int(attempted.sum()) - right) / n, 1 - int(attempted.sum()) / n
    # END SOLUTION


# %% tags=["check"]
checks.check_abstain(abstain)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def abstain(confidences, correct, threshold):
#     attempted = confidences >= threshold
#     n = len(confidences)
#     right = int((attempted & correct).sum())
#     return right / n, (int(attempted.sum()) - right) / n, 1 - int(attempted.sum()) / n
# ```
# </details>

# %%
print("threshold   grounded: correct incorrect not-attempted   closed book: correct incorrect not-attempted")
for threshold in (-3.0, -1.5, -1.0, -0.5, -0.25):
    rows = []
    for answers in (grounded, closed):
        conf = torch.tensor([a.confidence for a in answers])
        right = torch.tensor([a.correct for a in answers])
        rows.append("  ".join(f"{share:6.3f}" for share in abstain(conf, right, threshold)))
    print(f"{threshold:8.2f}    {rows[0]}              {rows[1]}")

# %% [markdown]
# Raising the threshold turns incorrect answers into not attempted ones, and it turns some correct answers away too. Closed book there were few correct answers to keep, and at every threshold most of what the model still attempts is wrong. That is the report's trade in miniature: fewer wrong answers, at a cost in the "correct" column.
#
# ## 7. Which heads make a grounded answer?
#
# A grounded answer is copied: the question's last tokens match a line of the passage, and the model continues that line. That is the induction mechanism of notebook 04, so the candidates are phi4-tiny's induction heads:

# %%
scores = grounding.induction_score_table(model)
heads = grounding.induction_heads(model, threshold=0.4)
print("heads with induction score >= 0.4:", heads)
print("largest induction score per layer:", [round(float(x), 2) for x in scores.max(dim=1).values])


# %% [markdown]
# Every one of layer 3's eight heads is an induction head. Zero all eight (their `hook_z`) and ask the grounded questions again. As a control, zero the eight heads of layer 1, whose induction scores are near zero: the same number of heads, elsewhere.
#
# ### Exercise 6 · The ablation hook
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `zero_heads_hook(heads)`: a TransformerLens hook function for `blocks.L.attn.hook_z` (shape `[batch, position, head, d_head]`) that returns the activation with the given heads zeroed.
#
# <details><summary>Hint 1 (a nudge)</summary>zero_heads_hook returns a function, not a tensor. Which axis of hook_z indexes the heads? Should the hook write into the tensor it was given?</details>
# <details><summary>Hint 2 (the idea)</summary>The outer function remembers <code>heads</code> and returns an inner <code>hook(z, hook)</code>. The inner one copies <code>z</code>, sets the listed heads' slice along the head axis (the third) to zero, and returns the copy.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>Inside <code>hook</code>: <code>z = z.clone()</code>; <code>z[:, :, heads] = 0</code>; <code>return z</code>.</details>

# %%
def zero_heads_hook(heads):
    '''A hook for hook_z that zeroes the listed heads' outputs.'''
    # SOLUTION
    def hook(z, hook):
        z = z.clone()
        z[:, :, heads] = 0
        return z
    return hook
    # END SOLUTION


# %% tags=["check"]
checks.check_zero_heads_hook(zero_heads_hook, model)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def zero_heads_hook(heads):
#     def hook(z, hook):
#         z = z.clone()
#         z[:, :, heads] = 0
#         return z
#     return hook
# ```
# </details>

# %%
contexts = [it.context for it in recall]
base = torch.tensor([float(a.correct) for a in grounded], dtype=torch.float64)
for layer, why in ((3, "layer 3, all induction heads"), (1, "layer 1, the control")):
    hooks = [(f"blocks.{layer}.attn.hook_z", zero_heads_hook(list(range(8))))]
    ablated = grounding.answer_all(model, recall, contexts, fwd_hooks=hooks)
    em = torch.tensor([float(a.correct) for a in ablated], dtype=torch.float64)
    drop, low, high = bootstrap(base - em, lambda x: x.mean())
    lost = [(g, a) for g, a in zip(grounded, ablated) if g.correct and not a.correct]
    print(f"{why}: exact match {base.mean():.3f} -> {em.mean():.3f}, drop {drop:.3f} (95% interval {low:.3f} to {high:.3f}); "
          f"{len(lost)} right answers lost, their confidence {sum(g.confidence for g, _ in lost) / len(lost):.2f} -> "
          f"{sum(a.confidence for _, a in lost) / len(lost):.2f}; {sum(a.confidence < -1.0 for _, a in lost)} of them "
          f"now below a -1.0 threshold (before: {sum(g.confidence < -1.0 for g, _ in lost)})")
    if layer == 3:
        for g, a in lost[:3]:
            print(f"    {g.text!r} became {a.text!r}")


# %% [markdown]
# Read the two lines together. Without layer 3's induction heads most grounded answers are lost, and the lost answers turn into wrong ones with lower confidence: the model now guesses, and the last count says how many of those guesses a threshold of -1.0 would withhold. But zeroing layer 1, which has no induction heads, costs nearly as much. The copy needs more than the induction heads: they read keys that layer 2's previous-token heads wrote (notebook 04), from residual streams the earlier layers built. An ablation shows that a component is *needed*, not that it is where the computation happens; notebook 10's path patching and notebook 12's graphs are the tools for *where*.
#
# ## 8. Hand labels against automatic metrics
#
# Benchmarks with free-form answers need a grader. Exact match is strict; partial-credit metrics, SQuAD's token F1 and ROUGE-L (the longest common subsequence of words, from Google's `rouge-score`), forgive near misses. Are near misses right? `data/evals/judgments.jsonl` holds phi4-tiny's grounded answers to the 80 recall questions, each labelled by hand by one annotator (1 = the answer completes the line as the reference does: the same code up to whitespace, a trailing comment allowed to differ; the rubric is in `data/README.md`).
#
# ### Exercise 7 · Cohen's kappa
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 10 minutes
#
# Agreement between two raters counts for little when both say "0" to most items. Cohen's kappa corrects for chance: κ = (p_o − p_e) / (1 − p_e), with p_o the share of items on which they agree and p_e the agreement expected if each rated at random with their own label shares. Write `cohen_kappa(a, b)` for two lists of labels.
#
# <details><summary>Hint 1 (a nudge)</summary>If the two raters labelled at random, each with their own label shares, how likely would they be to agree on one label c? Over which labels do you then sum?</details>
# <details><summary>Hint 2 (the idea)</summary>p_o is the share of positions where a and b agree. p_e sums, over every label that either rater used, the product of rater a's share of that label and rater b's share of it.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>With <code>n = len(a)</code>, p_e is <code>sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))</code>; then (p_o − p_e) / (1 − p_e).</details>

# %%
def cohen_kappa(a, b):
    '''Cohen's kappa of two raters' labels.'''
    # SOLUTION
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    expected = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
    return (observed - expected) / (1 - expected)
    # END SOLUTION


# %% tags=["check"]
checks.check_kappa(cohen_kappa)
### BEGIN HIDDEN TESTS
checks.held_out(cohen_kappa, [([2, 0, 1, 2, 2, 0, 1], [2, 0, 2, 2, 1, 0, 1]), ([0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0])],
                rtol=1e-9, atol=1e-12)
### END HIDDEN TESTS

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def cohen_kappa(a, b):
#     n = len(a)
#     observed = sum(x == y for x, y in zip(a, b)) / n
#     expected = sum((a.count(c) / n) * (b.count(c) / n) for c in set(a) | set(b))
#     return (observed - expected) / (1 - expected)
# ```
# </details>

# %%
rows = harness.shipped_judgments()
labels = [r.label for r in rows]
print(f"{len(rows)} answers, {sum(labels)} labelled right")
for metric, stats in judgments.agreement(rows, threshold=0.5).items():
    print(f"{metric:12s} kappa with the labels {stats['kappa']:.3f}, Spearman {stats['spearman']:.3f}, "
          f"{stats['disagreements']} disagreements (metric >= 0.5 counted as right)")
scores = judgments.metrics(rows)
SHOWN = ("recall-002", "recall-021", "recall-032", "recall-052")
print("\nwhere ROUGE-L and the label disagree (four of them):")
for r, rouge in zip(rows, scores["rouge_l"]):
    if (rouge >= 0.5) != bool(r.label) and r.id in SHOWN:
        print(f"  reference {r.reference!r:24} answer {r.answer!r:24} ROUGE-L {rouge:.2f}  label {r.label}")

# %%
# NBVAL_IGNORE_OUTPUT
fig, ax = plt.subplots(figsize=(6, 2.6))
for k, metric in enumerate(("exact_match", "f1", "rouge_l")):
    x = torch.tensor(labels, dtype=torch.float) + 0.25 * (k - 1)
    ax.scatter(x, scores[metric], s=14, alpha=0.6, label=metric)
ax.set_xticks([0, 1], ["labelled wrong", "labelled right"]); ax.set_ylabel("metric")
ax.legend(fontsize=8); ax.set_title("automatic metrics against the hand labels, 80 answers", fontsize=9)
plt.tight_layout(); plt.show()

# %% [markdown]
# On code, a near miss is a different program: a different status code or hex value shares most words with the reference and means something else, so the partial-credit metrics agree with the labels less than exact match does. Exact match disagrees with the labels once, where the code is right and only the trailing comment differs. ROUGE-L's tokenizer keeps only letters and digits, so it cannot see an operator or a bracket at all. On prose answers the balance shifts (a paraphrase can be right), which is why benchmarks like SimpleQA grade with a model or a person instead.
#
# ## Summary
#
# - A multiple-choice score is an argmax over log-likelihoods; acc and acc_norm differ in one division, and matching a harness means matching its conventions (joint tokenization, the delimiter, characters not tokens).
# - A score has a standard error of about √(p(1−p)/n); compare models on the same items.
# - Phi-4's decontamination is a 13-gram test and a 7-gram ratio; it finds verbatim leaks exactly and misses paraphrases, which MinHash over character shingles still sees.
# - A planted leak inflates the planted items' score, and only theirs.
# - Grounding makes phi4-tiny's answers right by copying; abstention trades wrong answers for silence; removing layer 3's induction heads removes most grounded answers, and removing layer 1 nearly as many.
#
# **Bonus.**
# 1. Label the judgments yourself, without looking at the file's labels, and compute κ between your labels and the shipped ones.
# 2. Plant the `stdlib_calls` items instead (`contamination.item_text(item, "")`). Is the inflation larger or smaller than on the cloze?
# 3. Make `verdict` return the allowlist's effect: how many items would be contaminated with an empty allowlist, on a benchmark whose items all start with the same instruction?
