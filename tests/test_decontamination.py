"""Phi-4's decontamination check: equal to a plain set-based reading of the algorithm, and finding exactly the
items planted in a corpus (whole copies, partial overlaps), not the clean ones and not the allowlisted boilerplate."""

import random

import pytest

from phi4lab.evaluation import decontamination as decon
from phi4lab.model.memory import InsufficientMemoryError


def brute_force(items, documents, partial=0.2, contaminated=0.5, allowlist=()):
    """The appendix's algorithm with Python sets of word tuples: no hashing, no index."""
    def grams(text, n):
        w = decon.words(text)
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    allowed = set().union(*[grams(a, 13) for a in allowlist]) if allowlist else set()
    out = {}
    for key, text in items.items():
        long, short = grams(text, 13) - allowed, grams(text, 7)
        hit = next((d for d, doc in enumerate(documents) if long & grams(doc, 13)), None)
        ratios = [len(short & grams(doc, 7)) / min(len(short), len(grams(doc, 7)))
                  for doc in documents if short and grams(doc, 7)]
        ratio = max(ratios, default=0.0)
        status = "contaminated" if hit is not None or ratio >= contaminated else "partial" if ratio >= partial else "clean"
        out[key] = (status, ratio, hit is not None)
    return out


def random_text(rng, n, vocab):
    return " ".join(rng.choice(vocab) for _ in range(n))


@pytest.fixture(scope="module")
def planted():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    documents = [random_text(rng, 300, vocab) for _ in range(40)]
    items = {f"clean{i}": random_text(rng, 40, vocab) for i in range(20)}
    words = documents[3].split()
    items["copied"] = "Question: " + " ".join(words[50:80]).upper() + "?!"          # case and punctuation differ
    items["thirteen"] = random_text(rng, 20, vocab) + " " + " ".join(words[100:113]) + " " + random_text(rng, 20, vocab)
    d7 = documents[9].split()
    # a third of the item's 7-grams from document 9, in separate 7-word runs, no 13-gram shared
    pieces = [" ".join(d7[i * 20:i * 20 + 9]) for i in range(4)]
    items["partial"] = " ".join(f"{p} {random_text(rng, 6, vocab)}" for p in pieces)
    boiler = "answer with the letter of the option that best completes the sentence below please"
    for i in range(5):
        items[f"boiler{i}"] = random_text(rng, 60, vocab) + " " + boiler
    # a long unrelated document that quotes the instruction once: 8 shared 7-grams of an item's 68 (0.12)
    documents.append(random_text(rng, 200, vocab) + " the instruction reads: " + boiler)
    return items, documents, boiler


def test_equals_the_set_based_reading(planted):
    items, documents, boiler = planted
    got = {v.item: (v.status, v.ratio, v.thirteen_gram) for v in decon.decontaminate(items, documents, allowlist=[boiler])}
    want = brute_force(items, documents, allowlist=[boiler])
    assert got.keys() == want.keys()
    for key in want:
        assert got[key][0] == want[key][0] and got[key][2] == want[key][2], key
        assert abs(got[key][1] - want[key][1]) < 1e-12, key


def test_finds_exactly_the_planted_items(planted):
    items, documents, boiler = planted
    verdicts = {v.item: v for v in decon.decontaminate(items, documents, allowlist=decon.allowlist_from(items, 0.1))}
    flagged = {k for k, v in verdicts.items() if v.status != "clean"}
    assert flagged == {"copied", "thirteen", "partial"}, {k: (v.status, round(v.ratio, 3)) for k, v in verdicts.items()}
    assert verdicts["copied"].status == "contaminated" and verdicts["copied"].document == 3
    assert verdicts["thirteen"].thirteen_gram and verdicts["thirteen"].document == 3
    assert verdicts["partial"].status == "partial" and not verdicts["partial"].thirteen_gram
    assert verdicts["partial"].document == 9 and 0.2 <= verdicts["partial"].ratio < 0.5
    # without the allowlist, the boilerplate 13-grams flag every item that carries it
    loose = {v.item: v.status for v in decon.decontaminate(items, documents)}
    assert all(loose[f"boiler{i}"] == "contaminated" for i in range(5))


def test_the_corpus_streams_and_the_index_is_refused_before_it_is_built(planted):
    items, documents, _ = planted
    one = decon.Decontaminator(items).scan(documents[:20]).scan(documents[20:], start=20).verdicts()
    assert one == decon.decontaminate(items, documents)
    with pytest.raises(InsufficientMemoryError, match="n-gram index of 28 benchmark items"):
        decon.Decontaminator(items, memory_budget_bytes=1000)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least one benchmark item"):
        decon.Decontaminator({})
    with pytest.raises(ValueError, match="partial <= contaminated"):
        decon.Decontaminator({"a": "x y z"}, partial=0.6, contaminated=0.5)
    with pytest.raises(TypeError, match=r"strings; not for \['b'\]"):
        decon.Decontaminator({"a": "x", "b": None})
    # an item too short for any 7-gram is clean, with ratio 0, and nothing breaks
    (v,) = decon.decontaminate({"short": "two words"}, ["two words and more words here to read"])
    assert v.status == "clean" and v.ratio == 0.0 and v.document is None
