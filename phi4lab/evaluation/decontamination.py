"""Finding benchmark items in training data, the way Phi-4's authors did: 13-grams, then 7-gram overlap.

The Phi-4 technical report (Abdin et al. 2024, https://arxiv.org/abs/2412.08905, appendix B.1)
decontaminated its training data against about 20 benchmarks with a "hybrid n-gram algorithm":

1. **13-grams.** If a benchmark item shares any 13-gram (13 consecutive words) with a training
   document, it is contaminated, unless that 13-gram is on an *allowlist* of ubiquitous ones
   (multiple-choice boilerplate, licence headers) that would flag everything.
2. **7-gram overlap.** Otherwise, for each training document, count the item's 7-grams that the
   document contains, and divide by the smaller of the two 7-gram counts:
   ``overlap / min(#7-grams in the document, #7-grams in the item)``. The largest ratio over all
   documents is compared with two thresholds: above the lower one the item is *partially*
   contaminated, above the higher one contaminated. (The report's worked example flags an item at
   0.395; it does not publish its thresholds, so phi4lab's defaults below are settings, not facts.)

The report also says what this cannot catch: a rephrased item shares few exact n-grams.

**Bounded memory.** Only the benchmark side is indexed: every item's 13-grams and 7-grams, hashed to
64-bit integers and kept as sorted arrays, about 16 bytes per n-gram. The training corpus streams
through one document at a time, so its size costs time, not memory. The index's size is known
before it is built, and one that would not fit is refused then (``phi4lab.model.memory.preflight``).

**Words.** Text is lowercased and split into runs of letters and digits (``\\w+``), so punctuation and
whitespace differences do not hide a copy. Each word is hashed once (blake2b, the same on every
machine and every run), and an n-gram's hash is a polynomial in its words' hashes modulo 2**64.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from phi4lab.model.memory import preflight

WORD = re.compile(r"\w+")
_P = np.uint64(0x100000001B3)              # an odd 64-bit multiplier (FNV's prime)
_BYTES_PER_NGRAM = 16                       # a uint64 hash and an int64 item id


def words(text: str) -> list[str]:
    """The text's words, lowercased: runs of letters and digits."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return WORD.findall(text.lower())


class _WordHasher:
    """Stable 64-bit hashes of words, each computed once (Python's own hash() changes every run)."""

    def __init__(self):
        self.cache: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache = self.cache
        out = np.empty(len(tokens), dtype=np.uint64)
        for i, w in enumerate(tokens):
            h = cache.get(w)
            if h is None:
                h = cache[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
            out[i] = h
        return out


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """[len - n + 1] hashes, one per n-gram: sum_j w[i + j] * P^(n - 1 - j), wrapping modulo 2**64."""
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = np.zeros(m, dtype=np.uint64)
        for j in range(n):
            h = h * _P + word_hashes[j:j + m]
    return h


@dataclass
class Verdict:
    """What the check found for one benchmark item."""

    item: str
    status: str                    # "clean", "partial" or "contaminated"
    ratio: float                   # the largest 7-gram overlap ratio over the documents
    document: int | None           # where: the document of the 13-gram hit, else of the largest ratio
    thirteen_gram: bool            # contaminated by a shared 13-gram (not on the allowlist)


class Decontaminator:
    """The items' n-gram index; feed it training documents with ``scan``, then read ``verdicts``."""

    def __init__(self, items: dict[str, str], *, allowlist: Iterable[str] = (), partial: float = 0.2,
                 contaminated: float = 0.5, long_n: int = 13, short_n: int = 7,
                 memory_budget_bytes: int | None = None):
        if not items:
            raise ValueError("give at least one benchmark item: {item id: text}")
        if not 0 < partial <= contaminated <= 1:
            raise ValueError(f"need 0 < partial <= contaminated <= 1, got partial={partial}, contaminated={contaminated}")
        if not 1 < short_n < long_n:
            raise ValueError(f"need 1 < short_n < long_n, got {short_n} and {long_n}")
        bad = [k for k, v in items.items() if not isinstance(v, str)]
        if bad:
            raise TypeError(f"item texts must be strings; not for {bad[:5]}")
        self.ids = list(items)
        self.partial, self.contaminated, self.long_n, self.short_n = partial, contaminated, long_n, short_n
        self._hash = _WordHasher()
        tokenized = [words(items[i]) for i in self.ids]
        n_grams = sum(max(0, len(t) - short_n + 1) + max(0, len(t) - long_n + 1) for t in tokenized)
        preflight(n_grams * _BYTES_PER_NGRAM * 2,             # the arrays, and a sort's temporary copy
                  what=f"the n-gram index of {len(items):,} benchmark items ({n_grams:,} n-grams)",
                  budget_bytes=memory_budget_bytes, advice="Check fewer items at a time.")
        allowed = set()
        for text in allowlist:
            allowed.update(ngram_hashes(self._hash(words(text)), long_n).tolist())
        self._allowed = np.array(sorted(allowed), dtype=np.uint64)
        long_keys, long_items, short_keys, short_items = [], [], [], []
        self.item_short = np.zeros(len(self.ids), dtype=np.int64)          # each item's distinct 7-grams
        for k, tokens in enumerate(tokenized):
            hashes = self._hash(tokens)
            long = np.unique(ngram_hashes(hashes, long_n))
            long = long[~np.isin(long, self._allowed)]
            short = np.unique(ngram_hashes(hashes, short_n))
            self.item_short[k] = len(short)
            long_keys.append(long)
            long_items.append(np.full(len(long), k))
            short_keys.append(short)
            short_items.append(np.full(len(short), k))
        self._long = _sorted_index(long_keys, long_items)
        self._short = _sorted_index(short_keys, short_items)
        self.best_ratio = np.zeros(len(self.ids))
        self.best_document = np.full(len(self.ids), -1)
        self.hit_document = np.full(len(self.ids), -1)
        self.documents = 0
        self.words_scanned = 0

    def scan(self, documents: Iterable[str], start: int = 0) -> Decontaminator:
        """Compare every document with every item (documents numbered from `start`)."""
        for number, text in enumerate(documents, start):
            tokens = words(text)
            self.words_scanned += len(tokens)
            self.documents += 1
            hashes = self._hash(tokens)
            long = np.unique(ngram_hashes(hashes, self.long_n))
            for k in _matches(self._long, long):
                if self.hit_document[k] < 0:
                    self.hit_document[k] = number
            short = np.unique(ngram_hashes(hashes, self.short_n))
            if len(short) == 0:
                continue
            hit_items = _matched_items(self._short, short)
            if len(hit_items) == 0:
                continue
            counts = np.bincount(hit_items, minlength=len(self.ids))
            touched = np.nonzero(counts)[0]
            ratios = counts[touched] / np.minimum(len(short), self.item_short[touched])
            better = ratios > self.best_ratio[touched]
            self.best_ratio[touched[better]] = ratios[better]
            self.best_document[touched[better]] = number
        return self

    def verdicts(self) -> list[Verdict]:
        out = []
        for k, item in enumerate(self.ids):
            ratio, hit = float(self.best_ratio[k]), int(self.hit_document[k])
            if hit >= 0 or ratio >= self.contaminated:
                status = "contaminated"
            elif ratio >= self.partial:
                status = "partial"
            else:
                status = "clean"
            where = hit if hit >= 0 else (int(self.best_document[k]) if self.best_document[k] >= 0 else None)
            out.append(Verdict(item, status, ratio, where, hit >= 0))
        return out


def _sorted_index(keys: list[np.ndarray], items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, item ids), sorted by hash: a posting list as two flat arrays."""
    if not keys:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    h, i = np.concatenate(keys).astype(np.uint64), np.concatenate(items).astype(np.int64)
    order = np.argsort(h, kind="stable")
    return h[order], i[order]


def _matched_items(index: tuple[np.ndarray, np.ndarray], query: np.ndarray) -> np.ndarray:
    """The item id of every (item n-gram, query n-gram) match: one entry per shared distinct n-gram per item."""
    hashes, items = index
    if len(hashes) == 0 or len(query) == 0:
        return np.empty(0, dtype=np.int64)
    lo = np.searchsorted(hashes, query, side="left")
    hi = np.searchsorted(hashes, query, side="right")
    hit = hi > lo
    if not hit.any():
        return np.empty(0, dtype=np.int64)
    lo, hi = lo[hit], hi[hit]
    lengths = hi - lo
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return items[np.arange(lengths.sum()) + starts]


def _matches(index, query) -> np.ndarray:
    return np.unique(_matched_items(index, query))


def decontaminate(items: dict[str, str], documents: Iterable[str], **settings) -> list[Verdict]:
    """Phi-4's check of every item in `items` {id: text} against every document: one Verdict per item."""
    return Decontaminator(items, **settings).scan(documents).verdicts()


def allowlist_from(items: dict[str, str], min_share: float = 0.1, n: int = 13) -> list[str]:
    """The n-grams (as text) found in at least `min_share` of the items: boilerplate, not content.

    A benchmark whose items all end "Answer with the letter of the correct option" would otherwise be
    flagged whole by any document that quotes the instruction once.
    """
    counts: dict[tuple, int] = {}
    for text in items.values():
        tokens = words(text)
        for gram in {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}:
            counts[gram] = counts.get(gram, 0) + 1
    need = max(2, int(np.ceil(min_share * len(items))))
    return [" ".join(g) for g, c in counts.items() if c >= need]


# ---- What n-grams miss: a rephrased item -----------------------------------------------------------------
# A paraphrase keeps the meaning and changes the words, so it shares few exact 13-grams or 7-grams.
# MinHash (Broder 1997) estimates the Jaccard similarity of two texts' shingle sets from a few hundred
# hashes; over *character* shingles, a paraphrase that keeps most words' spellings keeps much of its
# similarity. datasketch's MinHash is the library the course corpus's near-duplicate step uses too.

def shingles(text: str, n: int = 5) -> set[str]:
    """Character n-grams of the text's words, lowercased and joined by single spaces."""
    s = " ".join(words(text))
    return {s[i:i + n] for i in range(max(1, len(s) - n + 1))}


def jaccard(a: str, b: str, n: int = 5) -> float:
    """The exact Jaccard similarity of two texts' character-shingle sets."""
    x, y = shingles(a, n), shingles(b, n)
    return len(x & y) / len(x | y)


def minhash_similarity(a: str, b: str, n: int = 5, num_perm: int = 256, seed: int = 1) -> float:
    """datasketch's MinHash estimate of ``jaccard(a, b, n)`` (standard error about √(J(1-J)/num_perm))."""
    from datasketch import MinHash

    def signature(text):
        m = MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([s.encode("utf-8") for s in shingles(text, n)])
        return m
    return float(signature(a).jaccard(signature(b)))
