"""Checks for course/03_data_curation.ipynb: dedup, MinHash LSH and quality rules.

References are phi4lab.recipes.corpus's own functions, or the formulas they rest on.
"""

from __future__ import annotations

import functools
import re

from phi4lab.exercises.checking import check_function
from phi4lab.exercises.standalone import stand_alone
from phi4lab.recipes import corpus as data

TEXTS = [
    "The Quality of  Mercy is NOT strained;\nit droppeth as the gentle rain.",
    "def f(x):\n    return x + 1  # add one",
    "   Enter   HAMLET.   ",
    "Ay, madam, it is common. 'Tis so; 'tis, 'tis!",
    "",
]


# ---- Exercise 1: normalise ------------------------------------------------------------

NORMALISE_MISTAKES = {
    "case still matters: lower-case the text first": lambda t: " ".join(re.sub(r"[^\w\s]", " ", t).split()),
    "punctuation still matters: replace every non-word, non-space character by a space":
        lambda t: " ".join(t.lower().split()),
    "whitespace still matters: split on whitespace and join with single spaces":
        lambda t: re.sub(r"[^\w\s]", " ", t.lower()),
    "punctuation was deleted, not replaced by a space, so words on either side merge":
        lambda t: " ".join(re.sub(r"[^\w\s]", "", t.lower()).split()),
}


def check_normalise(fn):
    check_function(fn, data.normalise, [(t,) for t in TEXTS], name="normalise", mistakes=NORMALISE_MISTAKES)


# ---- Exercise 2: shingles and Jaccard ------------------------------------------------------

def _shingles_ref(text, n):
    words = data.normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


SHINGLE_MISTAKES = {
    "off by one: a text of W words has W - n + 1 shingles of n words (range(len(words) - n + 1))":
        lambda t, n: {" ".join(data.normalise(t).split()[i:i + n]) for i in range(len(data.normalise(t).split()) - n)},
    "these are character n-grams: shingle the list of *words* (normalise, then split)":
        lambda t, n: {data.normalise(t)[i:i + n] for i in range(len(data.normalise(t)) - n + 1)},
    "you did not normalise first, so 'Mercy' and 'mercy' count as different words":
        lambda t, n: {" ".join(t.split()[i:i + n]) for i in range(max(len(t.split()) - n + 1, 1))},
}


def check_shingles(fn):
    cases = [(t, n) for t in TEXTS[:4] for n in (1, 2, 3)]
    check_function(fn, _shingles_ref, cases, name="shingles", mistakes=SHINGLE_MISTAKES)


def _jaccard_ref(a, b):
    return len(a & b) / len(a | b) if a | b else 1.0


JACCARD_MISTAKES = {
    "you divided by the size of the smaller set (that is the overlap coefficient, not Jaccard)":
        lambda a, b: len(a & b) / min(len(a), len(b)) if a and b else 1.0,
    "you divided by len(a) + len(b), which counts the shared shingles twice: use the union":
        lambda a, b: len(a & b) / (len(a) + len(b)) if a or b else 1.0,
}


def check_jaccard(fn):
    sets = [({"a", "b", "c"}, {"b", "c", "d"}), ({"x"}, {"x"}), ({"a", "b"}, {"c"}),
            ({"a", "b", "c", "d"}, {"a"}), (set(), set())]
    check_function(fn, _jaccard_ref, sets, name="jaccard", mistakes=JACCARD_MISTAKES, rtol=1e-9, atol=1e-12)


# ---- Exercise 3: the LSH S-curve ----------------------------------------------------------

def _lsh_ref(s, bands, rows):
    return 1 - (1 - s**rows) ** bands


LSH_MISTAKES = {
    "bands and rows are swapped: each band is `rows` hashes that must ALL agree (s**rows), "
    "and any of the `bands` bands may match": lambda s, b, r: 1 - (1 - s**b) ** r,
    "that is the chance that one given band matches; a pair is a candidate if ANY band matches":
        lambda s, b, r: s**r,
    "that is the chance that NO band matches: subtract it from 1": lambda s, b, r: (1 - s**r) ** b,
}


def check_lsh_probability(fn):
    cases = [(s, b, r) for s in (0.1, 0.3, 0.5, 0.8, 0.95) for b, r in ((9, 13), (25, 5), (14, 8))]
    check_function(fn, _lsh_ref, cases, name="lsh_candidate_probability", mistakes=LSH_MISTAKES, rtol=1e-9, atol=1e-12)


# ---- Exercise 4: a Gopher rule -------------------------------------------------------------

def _stop_ref(text):
    words = [w for w in text.split() if re.search(r"\w", w)]
    return len({w.lower().strip(".,;:!?'\"()") for w in words} & data.GOPHER_STOP_WORDS) >= 2


STOP_MISTAKES = {
    "you counted occurrences: the rule asks for at least 2 *different* stop words (use a set)":
        lambda t: sum(w.lower().strip(".,;:!?'\"()") in data.GOPHER_STOP_WORDS for w in t.split()) >= 2,
    "case matters in your version: 'The' should count as 'the'":
        lambda t: len({w.strip(".,;:!?'\"()") for w in t.split()} & data.GOPHER_STOP_WORDS) >= 2,
}


def check_passes_stop_word_rule(fn):
    texts = ["The cat and the hat.", "the the the the", "To be, or not to be", "x = f(y) + g(z)",
             "With THAT said: HAVE fun.", "of", "And so, to bed."]
    check_function(fn, _stop_ref, [(t,) for t in texts], name="passes_stop_word_rule", mistakes=STOP_MISTAKES)


# ---- Exercise 5: epochs from a mixture ------------------------------------------------------

def _epochs_ref(fraction, total_tokens, unique_tokens):
    return fraction * total_tokens / unique_tokens


EPOCH_MISTAKES = {
    "upside down: epochs = tokens drawn from the source / unique tokens in it":
        lambda f, t, u: u / (f * t),
    "you forgot the source's share of the mixture": lambda f, t, u: t / u,
}


def check_epochs(fn):
    # Phi-4's table: 10T tokens; web 15% of 1.3T unique, synthetic 40% of 290B, code 20% of 820B
    cases = [(0.15, 10e12, 1.3e12), (0.40, 10e12, 290e9), (0.20, 10e12, 820e9), (0.5, 4e6, 2e6)]
    check_function(fn, _epochs_ref, cases, name="epochs", mistakes=EPOCH_MISTAKES, rtol=1e-9, atol=1e-12)


# ---- Choosing the bands and rows for a threshold -----------------------------------------------
# datasketch's MinHashLSH(threshold, num_perm, weights) picks (b, r) by minimising a weighted sum of
# two areas under the S-curve: the candidate probability below the threshold (false positives) and
# the miss probability above it (false negatives), over every b and every r with b * r <= num_perm.

def _s_curve(s, b, r):
    return 1 - (1 - s ** r) ** b


def _miss(s, b, r):
    return 1 - _s_curve(s, b, r)


def _bands_search(threshold, num_perm, fp_weight, fn_weight, *, miss=True, exact=False):
    from scipy.integrate import quad

    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        rows = [num_perm // b] if exact else range(1, num_perm // b + 1)
        for r in rows:
            if exact and b * r != num_perm:
                continue
            fp = quad(_s_curve, 0.0, threshold, args=(b, r))[0]
            fn = quad(_miss if miss else _s_curve, threshold, 1.0, args=(b, r))[0]
            error = fp * fp_weight + fn * fn_weight
            if error < best_error:
                best, best_error = (b, r), error
    return best


def choose_bands_reference(threshold, num_perm, fp_weight, fn_weight):
    """(bands, rows) as datasketch's MinHashLSH chooses them."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(fp_weight, fn_weight))
    return lsh.b, lsh.r


BANDS_MISTAKES = {
    "a false negative is a pair *above* the threshold that is *not* a candidate: integrate 1 - P(candidate) "
    "from the threshold to 1": lambda t, n, fp, fn: _bands_search(t, n, fp, fn, miss=False),
    "b * r may be less than num_perm (some permutations unused): try every r up to num_perm // b, not only "
    "divisors": lambda t, n, fp, fn: _bands_search(t, n, fp, fn, exact=True),
    "the first weight is for false positives, the second for false negatives":
        lambda t, n, fp, fn: _bands_search(t, n, fn, fp),
}


def check_choose_bands(fn):
    cases = [(0.5, 64, 0.5, 0.5), (0.2, 64, 0.5, 0.5), (0.8, 64, 0.5, 0.5), (0.5, 64, 0.2, 0.8), (0.7, 48, 0.9, 0.1)]
    check_function(functools.wraps(fn)(lambda *c: tuple(int(v) for v in fn(*c))), choose_bands_reference, cases,
                   name="choose_bands",
                   mistakes=BANDS_MISTAKES)


# ---- From candidate pairs to what to keep ---------------------------------------------------------
# corpus.near_duplicates streams the documents in order and keeps a document unless it is a near-duplicate
# of one already *kept*. Similarity is not transitive, so the rule matters: 0 ~ 3 and 3 ~ 5 with 0 and 5
# unlike drops 3 and keeps 5. Clustering by connected components (union-find, as some large pipelines do)
# would drop 5 through a document it never resembled.

def keep_reference(n_docs, pairs):
    """Sorted indices kept: in order, a document is kept unless a near-duplicate pair links it to a kept one."""
    partners = {}
    for a, b in pairs:
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    kept = []
    for i in range(n_docs):
        if not partners.get(i, set()) & set(kept):
            kept.append(i)
    return kept


def _connected_components(n_docs, pairs):
    parent = list(range(n_docs))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return sorted({root(i) for i in range(n_docs)})


KEEP_MISTAKES = {
    "a document is dropped only for resembling a document that is *kept*: with 0 ~ 3 and 3 ~ 5 (0 and 5 unlike), "
    "3 goes and 5 stays. Following chains (connected components) drops 5 through a document it never resembled":
        _connected_components,
}


def check_keep(fn):
    """fn(n_docs, pairs) -> sorted indices of the documents kept."""
    cases = [(6, [(0, 3), (3, 5)]), (7, [(1, 2), (2, 4), (5, 6)]), (5, []), (8, [(6, 2), (2, 7), (0, 1), (1, 7)]),
             (9, [(8, 7), (7, 6), (6, 5), (3, 4)]), (4, [(0, 1), (2, 3), (1, 2)])]
    check_function(functools.wraps(fn)(lambda n, p: [int(i) for i in fn(n, [tuple(x) for x in p])]), keep_reference, cases,
                   name="keep", mistakes=KEEP_MISTAKES)


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {
    "normalise": data.normalise, "shingles": _shingles_ref, "jaccard": _jaccard_ref,
    "lsh_candidate_probability": _lsh_ref, "passes_stop_word_rule": _stop_ref, "epochs": _epochs_ref,
    "choose_bands": choose_bands_reference, "keep": keep_reference,
})
