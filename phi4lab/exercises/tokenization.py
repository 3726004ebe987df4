"""Checks for course/02_tokenization.ipynb: BPE by hand, digits, and the chat template."""

from __future__ import annotations

import re
from collections import Counter

from phi4lab.exercises.checking import ExerciseFailure, check_function, run_answer
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model.tokenizer import phi4_tokenizer
from phi4lab.scratch import bpe

SAMPLES = ["aaabdaaabac", "hello hello world", "the cat sat on the mat", "ab", "a", "", "ééé 日本日本"]


def _ids(text):
    return list(text.encode("utf-8"))


# ---- Exercise 1: count pairs -----------------------------------------------------------

def _count_ref(ids):
    return dict(bpe.pair_counts(ids))


COUNT_MISTAKES = {
    "you counted each distinct pair once: count every occurrence":
        lambda ids: {p: 1 for p in zip(ids, ids[1:])},
    "you paired every element with the one two places on (zip(ids, ids[2:]))":
        lambda ids: dict(Counter(zip(ids, ids[2:]))),
}


def check_count_pairs(fn):
    cases = [(_ids(t),) for t in SAMPLES]
    check_function(lambda ids: dict(fn(ids)), _count_ref, cases, name="count_pairs", mistakes=COUNT_MISTAKES)


# ---- Exercise 2: merge ------------------------------------------------------------------

def _right_to_left(ids, pair, new_id):
    return bpe.merge(ids[::-1], pair[::-1], new_id)[::-1]


MERGE_MISTAKES = {
    "you merged only the first occurrence: replace every one": lambda ids, pair, new_id: (
        ids[:k] + [new_id] + ids[k + 2:] if (k := next((i for i in range(len(ids) - 1)
                                                      if (ids[i], ids[i + 1]) == pair), None)) is not None else ids),
    "you merged from the right: scan left to right, so [5, 5, 5] with (5, 5) gives [new, 5]": _right_to_left,
}


def check_merge(fn):
    cases = [([1, 2, 3, 1, 2], (1, 2), 9), ([5, 5, 5, 5, 5], (5, 5), 7), ([1, 1, 2, 1, 2, 2], (1, 2), 4),
             ([3], (3, 3), 8), ([], (1, 2), 3), ([7, 7, 8], (7, 8), 9)]
    check_function(lambda ids, p, n: fn(list(ids), p, n), bpe.merge, cases, name="merge", mistakes=MERGE_MISTAKES)


# ---- Exercise 3: the naive training loop ---------------------------------------------------

def naive_train(text: str, n_merges: int) -> dict[tuple[int, int], int]:
    """The textbook loop (minbpe's BasicTokenizer): recount the whole sequence after every merge."""
    ids = list(text.encode("utf-8"))
    merges = {}
    for k in range(n_merges):
        counts = bpe.pair_counts(ids)
        if not counts:
            break
        pair = max(counts, key=counts.get)      # ties: the pair seen first in the text
        merges[pair] = 256 + k
        ids = bpe.merge(ids, pair, 256 + k)
    return merges


def check_train(fn):
    cases = [("aaabdaaabac", 3), ("hello hello hello world world", 6), ("ab" * 20 + "ba" * 5, 4),
             ("to be or not to be that is the question", 10)]

    def as_dict(text, n):
        return dict(fn(text, n))

    check_function(as_dict, naive_train, cases, name="train", mistakes={
        "your merge ids are off: the first merge gets id 256, the next 257, ...":
            lambda t, n: {p: i - 1 for p, i in naive_train(t, n).items()},
        "you counted pairs once and never recounted: counts change after every merge":
            lambda t, n: _count_once(t, n),
    })


def _count_once(text, n):
    ids = list(text.encode("utf-8"))
    counts = bpe.pair_counts(ids)
    return {p: 256 + k for k, (p, _) in enumerate(counts.most_common(n))}


# ---- Exercise 4: encode -----------------------------------------------------------------

def naive_encode(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = bpe.merge(ids, pair, merges[pair])
    return ids


def _encode_in_dict_order_by_frequency(text, merges):
    ids = list(text.encode("utf-8"))
    for pair, new in sorted(merges.items(), key=lambda kv: -kv[1]):      # latest merges first
        ids = bpe.merge(ids, pair, new)
    return ids


def check_encode(fn):
    corpus = "the cat sat on the mat; the cat ate the rat. " * 4
    merges = naive_train(corpus, 20)
    cases = [(t, merges) for t in ("the cat", "the rat sat", "a mat", "", "théâtre")]
    check_function(lambda t, m: list(fn(t, m)), naive_encode, cases, name="encode", mistakes={
        "you applied the newest merges first: the merge learned earliest (lowest id) must win":
            _encode_in_dict_order_by_frequency,
        "you returned the raw bytes: apply the merges": lambda t, m: list(t.encode("utf-8")),
    })


# ---- Exercise 5: decode -----------------------------------------------------------------

def _vocab(merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for (a, b), i in sorted(merges.items(), key=lambda kv: kv[1]):
        vocab[i] = vocab[a] + vocab[b]
    return vocab


def _decode_ref(ids, vocab):
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def check_decode(fn):
    merges = naive_train("héllo wörld héllo", 6)
    vocab = _vocab(merges)
    cut_emoji = list("🙂".encode())[:2]
    cases = [(naive_encode("héllo wörld", merges), vocab), ([], vocab), (cut_emoji, vocab),
             (list("日本".encode()), vocab)]
    try:
        check_function(fn, _decode_ref, cases, name="decode", mistakes={
            "you decoded each token on its own: a character can span tokens, so join the bytes first":
                lambda ids, v: "".join(v[i].decode("utf-8", errors="replace") for i in ids),
        })
    except UnicodeDecodeError:
        raise ExerciseFailure("decode: a token sequence can end in the middle of a character; "
                              "decode with errors='replace'") from None


# ---- Exercise 6: digit groups -------------------------------------------------------------

def _digits_ref(number: str) -> list[str]:
    return re.findall(r"\d{1,3}", number)


def check_digit_groups(fn):
    cases = [("7",), ("42",), ("123",), ("1234",), ("1234567",), ("12345678901",), ("2026",)]
    check_function(fn, _digits_ref, cases, name="digit_groups", mistakes={
        "you grouped from the right, like thousands separators: cl100k cuts from the LEFT, 3 at a time":
            lambda s: [s[max(0, i - 3):i] for i in range(len(s), 0, -3)][::-1],
    })


# ---- Exercise 7: the chat template by hand ------------------------------------------------

def _chat_ref(messages, add_generation_prompt):
    return phi4_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _original(messages, add_generation_prompt):
    return phi4_tokenizer("original").apply_chat_template(messages, tokenize=False)


def check_chat(fn):
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ]
    cases = [(c, g) for c in convs for g in (False, True)]
    check_function(fn, _chat_ref, cases, name="phi4_chat", mistakes={
        "that is the ORIGINAL December 2024 template: it appended the assistant header after every user "
        "turn; the fixed one adds it only when add_generation_prompt is True": _original,
        "no newlines: Phi-4's template puts the turns right next to each other":
            lambda m, g: _chat_ref(m, g).replace("<|im_end|>", "<|im_end|>\n"),
    })




# ---- Updating the pair counts after a merge, without recounting -------------------------------
# The fast trainer's second idea: one count table for the whole corpus, and after each merge only the
# chunks that contain the merged pair are touched. The check hands over a table that also holds other
# chunks' pairs (and one pair no chunk here has): an update must leave them as they are.

def _expected_after_merge(ids, counts, pair, new_id, weight):
    merged = bpe.merge(ids, pair, new_id)
    out = Counter(counts)
    out.subtract({p: c * weight for p, c in bpe.pair_counts(ids).items()})
    out.update({p: c * weight for p, c in bpe.pair_counts(merged).items()})
    return merged, {p: c for p, c in out.items() if c > 0}


def merge_update_reference(ids, counts, pair, new_id, weight=1):
    """Merge `pair` in `ids` (a chunk occurring `weight` times) and update `counts` in place; return the new ids."""
    merged, after = _expected_after_merge(ids, counts, pair, new_id, weight)
    counts.clear()
    counts.update(after)
    return merged


def check_merge_update(fn):
    """fn(ids, counts, pair, new_id, weight) -> merged ids, with counts updated in place."""
    others = Counter({(1, 2): 4, (2, 9): 4, (250, 251): 3})        # pairs of other chunks in the same table
    cases = [([1, 2, 3, 1, 2], (1, 2), 300, 1), ([5, 5, 5, 5, 5], (5, 5), 301, 2), ([1, 1, 2, 1, 2, 2], (1, 2), 302, 3),
             ([7, 8, 7, 8, 7, 8], (7, 8), 303, 1), ([4, 6, 4, 6], (6, 4), 304, 5), ([3], (3, 3), 305, 2)]
    for ids, pair, new_id, weight in cases:
        counts = Counter(others)
        counts.update({p: c * weight for p, c in bpe.pair_counts(ids).items()})
        before = Counter(counts)
        expected_ids, expected = _expected_after_merge(ids, before, pair, new_id, weight)
        call = f"merge_update({ids}, counts, {pair}, {new_id}, weight={weight})"
        mine = run_answer(fn, "merge_update", list(ids), counts, pair, new_id, weight)
        if mine != expected_ids:
            raise ExerciseFailure(f"{call} returned {mine}, expected the merged ids {expected_ids}")
        got = {p: c for p, c in counts.items() if c != 0}
        if got == expected:
            continue
        if got == {p: c * weight for p, c in bpe.pair_counts(expected_ids).items()}:
            raise ExerciseFailure(f"{call}: you recounted the chunk from scratch, and the table lost every other "
                                  "chunk's pairs. Subtract this chunk's old pairs and add its new ones, nothing else")
        if pair in others and got.get(pair, 0) == 0 and expected.get(pair, 0) > 0:
            raise ExerciseFailure(f"{call}: you deleted the merged pair's entry, but other chunks still hold "
                                  f"{pair} {expected[pair]} times; subtract this chunk's occurrences only")
        if weight > 1 and got == _expected_after_merge(ids, before, pair, new_id, 1)[1]:
            raise ExerciseFailure(f"{call}: the chunk occurs {weight} times: each pair it gains or loses counts "
                                  f"{weight} times")
        wrong = sorted(set(got) | set(expected), key=lambda p: (got.get(p, 0) == expected.get(p, 0), p))[0]
        raise ExerciseFailure(f"{call}: after the merge the table holds {wrong} {got.get(wrong, 0)} times, expected "
                              f"{expected.get(wrong, 0)}. In ... x a b y ..., merging (a, b) removes (x, a), (a, b) "
                              "and (b, y) and adds (x, new) and (new, y); in a run like a a a, count what the merge "
                              "really leaves")
    print(f"\N{CHECK MARK} merge_update: the merged ids and the updated table are right in all {len(cases)} cases, "
          "other chunks' pairs left as they were")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {"count_pairs": _count_ref, "decode": _decode_ref, "digit_groups": _digits_ref,
                        "phi4_chat": _chat_ref, "merge_update": merge_update_reference})
