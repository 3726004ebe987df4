"""Phi-4's decontamination check over the whole course training corpus: speed and peak memory.

The benchmark side: 200 passages of 60 words from the validation split (which the curation keeps
apart from the training split) and 20 planted ones, copied from training documents. The corpus
side: every training document, streamed once. Two implementations of the same algorithm run on
the same inputs, side by side:

* phi4lab: ``evaluation.decontamination`` (hashed n-grams in sorted numpy arrays, the items indexed,
  the documents streamed);
* sets: the same reading with Python sets of word tuples, the items indexed in a dict.

Both must give the same verdicts, and every planted item must be found. Held-out passages can be
flagged too, and on this corpus some are, rightly: the validation split shares text with the
training split where the curation could not see it (the stdlib's codec tables are generated from one
template; one play is in the corpus in two editions, one on each side of the split). The script
prints which documents they match. Peak memory is traced (tracemalloc, which numpy reports to) in a
second, untimed run of each.

    python benchmarks/decontam.py

Last line: ``words=... phi4lab_s=... sets_s=... speedup=... phi4lab_words_per_s=... phi4lab_peak_mb=...
sets_peak_mb=... planted_found=... heldout_flagged=...``.
"""

import random
import time
import tracemalloc

from phi4lab.evaluation import decontamination as decon
from phi4lab.recipes import corpus as corpus_data


def sets_check(items, documents, partial=0.2, contaminated=0.5):
    """The algorithm with Python sets of word tuples (no hashing), the items indexed in dicts."""
    long_index, short_index, short_count = {}, {}, {}
    for key, text in items.items():
        w = decon.words(text)
        for g in {tuple(w[i:i + 13]) for i in range(len(w) - 12)}:
            long_index.setdefault(g, []).append(key)
        grams = {tuple(w[i:i + 7]) for i in range(len(w) - 6)}
        short_count[key] = len(grams)
        for g in grams:
            short_index.setdefault(g, []).append(key)
    hit, best = {}, dict.fromkeys(items, 0.0)
    for number, doc in enumerate(documents):
        w = decon.words(doc)
        for g in {tuple(w[i:i + 13]) for i in range(len(w) - 12)}:
            for key in long_index.get(g, ()):
                hit.setdefault(key, number)
        grams = {tuple(w[i:i + 7]) for i in range(len(w) - 6)}
        counts = {}
        for g in grams:
            for key in short_index.get(g, ()):
                counts[key] = counts.get(key, 0) + 1
        for key, c in counts.items():
            best[key] = max(best[key], c / min(len(grams), short_count[key]))
    return {key: "contaminated" if key in hit or best[key] >= contaminated else
            "partial" if best[key] >= partial else "clean" for key in items}


def main():
    built = corpus_data.build_corpus(progress=False)
    train = [d.text for d in built.train]
    rng = random.Random(0)
    items = {}
    validation = [d for d in built.validation if len(decon.words(d.text)) > 200]
    source = {}
    for i in range(200):
        d = rng.choice(validation)
        w = d.text.split()
        start = rng.randrange(len(w) - 60)
        items[f"held-out {i}"] = " ".join(w[start:start + 60])
        source[f"held-out {i}"] = d.name
    planted = set()
    for i in range(20):
        doc = rng.randrange(len(train))
        w = train[doc].split()
        if len(w) < 80:
            continue
        start = rng.randrange(len(w) - 60)
        items[f"planted {i}"] = " ".join(w[start:start + 60])
        planted.add(f"planted {i}")
    n_words = sum(len(decon.words(t)) for t in train)

    t = time.perf_counter()
    verdicts = decon.decontaminate(items, train)
    phi4lab_s = time.perf_counter() - t
    mine = {v.item: v.status for v in verdicts}
    t = time.perf_counter()
    theirs = sets_check(items, train)
    sets_s = time.perf_counter() - t
    assert mine == theirs, {k: (mine[k], theirs[k]) for k in items if mine[k] != theirs[k]}

    peaks = []
    for run in (lambda: decon.decontaminate(items, train), lambda: sets_check(items, train)):
        tracemalloc.start()
        run()
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()

    flagged = {k for k, s in mine.items() if s != "clean"}
    print(f"{len(train)} training documents, {n_words:,} words; {len(items)} items ({len(planted)} planted)")
    print(f"phi4lab: {phi4lab_s:.2f} s ({n_words / phi4lab_s:,.0f} words/s), peak {peaks[0]:.1f} MB traced")
    print(f"sets:    {sets_s:.2f} s ({n_words / sets_s:,.0f} words/s), peak {peaks[1]:.1f} MB traced")
    print(f"same verdicts: True; flagged {len(flagged)}: planted found {len(flagged & planted)} of {len(planted)}, "
          f"held-out passages flagged {len(flagged - planted)}:")
    pairs = {}
    for v in verdicts:
        if v.item in flagged - planted:
            pair = (source[v.item], built.train[v.document].name)
            pairs[pair] = pairs.get(pair, 0) + 1
    for (held, match), count in sorted(pairs.items(), key=lambda kv: -kv[1]):
        print(f"  {count:2d} x {held} (validation) matches {match} (training)")
    print(f"words={n_words} phi4lab_s={phi4lab_s:.2f} sets_s={sets_s:.2f} speedup={sets_s / phi4lab_s:.2f} "
          f"phi4lab_words_per_s={n_words / phi4lab_s:.0f} phi4lab_peak_mb={peaks[0]:.1f} sets_peak_mb={peaks[1]:.1f} "
          f"planted_found={len(flagged & planted)}/{len(planted)} heldout_flagged={len(flagged - planted)}")


if __name__ == "__main__":
    main()
