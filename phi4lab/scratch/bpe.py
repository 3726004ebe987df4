"""Byte-level BPE from scratch: train, encode, decode, and replay the merges.

Byte-pair encoding (Sennrich et al. 2016, after Gage 1994) builds a vocabulary
bottom-up. Start from the 256 byte values, so any text at all can be written
down. Then, again and again, find the pair of adjacent tokens that occurs most
often and give it a new id: "t" + "h" becomes "th", later "th" + "e" becomes
"the". After N merges the vocabulary has 256 + N tokens, and frequent words
are single tokens while rare ones fall apart into pieces.

Two refinements make it GPT-4's (cl100k_base) and hence Phi-4's tokenizer:

1. **Pre-tokenization.** A regex first cuts the text into chunks (words with
   their leading space, runs of up to 3 digits, punctuation, whitespace), and
   merges never cross a chunk boundary. So " dog" and "dog." never become one
   token with the period.
2. **Special tokens** such as ``<|endoftext|>`` are matched before anything
   else and map straight to reserved ids.

Encoding replays the merges: inside each chunk, repeatedly merge the adjacent
pair that was *learned earliest* (lowest merged id), until no adjacent pair
was ever learned. Loading tiktoken's cl100k ranks (``from_tiktoken``) gives an
encoder that reproduces tiktoken's output exactly.

**Why this trainer is fast.** The textbook loop (minbpe's) recounts every pair
in the whole text after each merge: O(text) per merge. Here, two ideas:

* count over **unique chunks weighted by frequency**: " the" appears 8,000
  times but is stored and counted once, with weight 8,000;
* update the counts **incrementally**: a merge only changes the chunks that
  contain the merged pair, so we keep an index pair -> chunks, subtract the
  old pairs of just those chunks and add their new ones, and find the next
  best pair with a heap instead of a scan.

Ties (two pairs with the same count) need a rule too, or two trainers on the
same text disagree. We use Hugging Face ``tokenizers``' rule (the smallest pair
wins, with bytes ordered by their printable stand-in characters), so the
merges match the Rust trainer's; ``benchmarks/bpe_train.py`` checks it.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict

import regex

from phi4lab.model.tokenizer import CL100K_PATTERN

# ---------------------------------------------------------------- the two primitives

def pair_counts(ids: list[int], counts: Counter | None = None, weight: int = 1) -> Counter:
    """Count adjacent pairs in a list of ids (adding `weight` per occurrence to `counts`)."""
    counts = Counter() if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair` in `ids`, left to right, by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# Ties: among pairs with the same count, the smallest pair wins, comparing ids the way
# Hugging Face `tokenizers` numbers them: the 256 bytes in the order of their printable
# stand-in characters (GPT-2's byte-to-unicode table; "!" first, the space's "Ġ" late),
# then merged tokens in the order they were learned. With this rule our merges match the
# Rust trainer's one for one (benchmarks/bpe_train.py checks it).
def _byte_order() -> list[int]:
    from phi4lab.model.tokenizer import bytes_to_unicode
    table = bytes_to_unicode()
    order = sorted(range(256), key=lambda b: table[b])
    position = [0] * 256
    for rank, b in enumerate(order):
        position[b] = rank
    return position


_BYTE_ORDER = _byte_order()


def _tie_break_key(pair: tuple[int, int]) -> tuple[int, int]:
    return tuple(_BYTE_ORDER[i] if i < 256 else i for i in pair)


# ---------------------------------------------------------------- the tokenizer

class BPE:
    """A byte-level BPE tokenizer with regex pre-tokenization and special tokens.

    merges: (left id, right id) -> merged id; a merged id's value is its priority
    (smaller = learned earlier = applied first).
    vocab: id -> the bytes it stands for.
    """

    def __init__(self, pattern: str = CL100K_PATTERN, special_tokens: dict[str, int] | None = None):
        self.pattern = pattern
        self.compiled = regex.compile(pattern)
        self.merges: dict[tuple[int, int], int] = {}
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.byte_ids: list[int] = list(range(256))     # the id of each single byte
        self.whole_tokens: dict[bytes, int] | None = None  # tiktoken's shortcut, see from_tiktoken
        self._cache: dict[bytes, list[int]] = {}

    # -------------------------------------------------------- training

    def chunk_counts(self, text: str) -> Counter:
        """Pre-tokenize and count: {chunk bytes: how often it occurs}."""
        return Counter(m.encode("utf-8", "surrogatepass") for m in self.compiled.findall(text))

    def train(self, text: str, vocab_size: int, verbose: bool = False) -> "BPE":
        """Learn vocab_size - 256 merges from text (fast: weighted unique chunks, incremental counts)."""
        if vocab_size < 256:
            raise ValueError(f"vocab_size must be at least 256 (the byte alphabet), got {vocab_size}")
        chunks = self.chunk_counts(text)
        words = [list(c) for c in chunks]                 # each unique chunk as a list of ids
        freq = list(chunks.values())                      # and how often it occurs

        # Count every pair once, weighted, and remember which words contain it.
        counts: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, ids in enumerate(words):
            pair_counts(ids, counts, weight=freq[w])
            for pair in zip(ids, ids[1:]):
                where[pair].add(w)
        # Max-heap of (-count, tie-break key, pair); entries go stale when counts change, and are skipped.
        key = _tie_break_key
        heap = [(-c, key(p), p) for p, c in counts.items()]
        heapq.heapify(heap)

        self.merges, self.vocab, self._cache = {}, {i: bytes([i]) for i in range(256)}, {}
        for new_id in range(256, vocab_size):
            best = None
            while heap:
                neg, _, pair = heapq.heappop(heap)
                if counts.get(pair, 0) == -neg and -neg > 0:
                    best = pair
                    break
            if best is None:                              # nothing left to merge
                break
            self.merges[best] = new_id
            self.vocab[new_id] = self.vocab[best[0]] + self.vocab[best[1]]
            if verbose:
                print(f"merge {new_id - 255}/{vocab_size - 256}: {self.vocab[best[0]]!r} + "
                      f"{self.vocab[best[1]]!r} -> {new_id} ({counts[best]} occurrences)")
            # Only the words containing `best` change: take their old pairs out, put the new ones in.
            changed = Counter()
            for w in where.pop(best):
                old = words[w]
                new = merge(old, best, new_id)
                if len(new) == len(old):
                    continue                              # stale index entry
                for pair in zip(old, old[1:]):
                    changed[pair] -= freq[w]
                for pair in zip(new, new[1:]):
                    changed[pair] += freq[w]
                    where[pair].add(w)
                words[w] = new
            for pair, delta in changed.items():
                if delta:
                    counts[pair] += delta
                    if counts[pair] > 0:
                        heapq.heappush(heap, (-counts[pair], key(pair), pair))
            counts.pop(best, None)
        return self

    # -------------------------------------------------------- encoding

    def _merge_steps(self, ids: list[int]):
        """Replay the merges on a chunk's ids, yielding (pair, new id, ids after) for each merge."""
        while len(ids) >= 2:
            # the adjacent pair learned earliest (lowest merged id) merges first
            pair = min(zip(ids, ids[1:]), key=lambda p: self.merges.get(p, float("inf")))
            if pair not in self.merges:
                return
            ids = merge(ids, pair, self.merges[pair])
            yield pair, self.merges[pair], ids

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        cached = self._cache.get(chunk)
        if cached is not None:
            return cached
        if self.whole_tokens is not None and chunk in self.whole_tokens:
            return [self.whole_tokens[chunk]]
        ids = [self.byte_ids[b] for b in chunk]
        for _, _, ids in self._merge_steps(ids):  # noqa: B007, B020  (the generator yields the ids after each merge)
            pass                                      # keep only the final ids
        if len(self._cache) < 100_000:
            self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as ordinary text."""
        out: list[int] = []
        for m in self.compiled.findall(text):
            out.extend(self._encode_chunk(m.encode("utf-8", "surrogatepass")))
        return out

    def encode(self, text: str, allowed_special: str | set = "none") -> list[int]:
        """Encode text. allowed_special: "none" (specials are plain text), "all", or a set of strings."""
        if allowed_special == "all":
            allowed = self.special_tokens
        elif allowed_special == "none":
            allowed = {}
        else:
            allowed = {s: self.special_tokens[s] for s in allowed_special}
        if not allowed:
            return self.encode_ordinary(text)
        split = "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        out: list[int] = []
        for part in regex.split(split, text):
            if part in allowed:
                out.append(allowed[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    def decode_bytes(self, ids: list[int]) -> bytes:
        inverse = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        try:
            return b"".join(inverse[i] if i in inverse else self.vocab[i] for i in ids)
        except KeyError as err:
            raise ValueError(f"id {err.args[0]} is not in this tokenizer's vocabulary of {len(self)}") from None

    def decode(self, ids: list[int]) -> str:
        """Ids back to text; bytes that are not valid UTF-8 on their own become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    # -------------------------------------------------------- a merge trace

    def trace(self, word: str) -> list[dict]:
        """Replay the merges that build `word` (one pre-token chunk), step by step.

        Returns one record per merge: which pair merged, into which id, and the
        pieces after it. The first record is the starting bytes.
        """
        ids = [self.byte_ids[b] for b in word.encode("utf-8", "surrogatepass")]
        steps = [dict(step=0, merged=None, new_id=None, pieces=[self.vocab[i] for i in ids])]
        for pair, new_id, ids in self._merge_steps(ids):  # noqa: B020  (each merge yields the new ids)
            steps.append(dict(step=len(steps), merged=(self.vocab[pair[0]], self.vocab[pair[1]]),
                              new_id=new_id, pieces=[self.vocab[i] for i in ids]))
        return steps

    # -------------------------------------------------------- loading tiktoken's ranks

    @classmethod
    def from_tiktoken(cls, ranks: dict[bytes, int], pattern: str = CL100K_PATTERN,
                      special_tokens: dict[str, int] | None = None) -> "BPE":
        """An encoder that reproduces tiktoken: every split of a token into two tokens is a merge.

        tiktoken merges, inside a chunk, the adjacent pair whose *concatenation*
        has the lowest rank, however the two parts came to be. Registering every
        (left, right) split of every token, with the token's rank as priority,
        makes our "lowest merged id first" rule choose exactly the same pair.
        Building it takes a few seconds for cl100k's 100k tokens.
        """
        bpe = cls(pattern, special_tokens)
        bpe.vocab = {rank: token for token, rank in ranks.items()}
        # cl100k does not number the bytes by value: "!" (0x21) has rank 0.
        bpe.byte_ids = [ranks[bytes([b])] for b in range(256)]
        # tiktoken emits a chunk that is itself a token whole, without merging.
        bpe.whole_tokens = ranks
        for token, rank in ranks.items():
            for cut in range(1, len(token)):
                left, right = ranks.get(token[:cut]), ranks.get(token[cut:])
                if left is not None and right is not None:
                    bpe.merges[(left, right)] = rank
        return bpe
