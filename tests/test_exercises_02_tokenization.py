"""Notebook 02's checks for the counts update: the reference passes, recounting and the usual slips are named."""

from collections import Counter

import pytest

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import tokenization as tokenization_ex
from phi4lab.scratch import bpe


def _streaming(ids, counts, pair, new_id, weight=1):
    """One pass over the chunk, touching only the pairs around each merged occurrence."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            if out:
                counts[(out[-1], ids[i])] -= weight
                counts[(out[-1], new_id)] += weight
            counts[pair] -= weight
            if i + 2 < len(ids):
                counts[(ids[i + 1], ids[i + 2])] -= weight
                counts[(new_id, ids[i + 2])] += weight
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    for p in [p for p, c in counts.items() if c <= 0]:
        del counts[p]
    return out


def _recount(ids, counts, pair, new_id, weight=1):
    merged = bpe.merge(ids, pair, new_id)
    counts.clear()
    counts.update({p: c * weight for p, c in bpe.pair_counts(merged).items()})
    return merged


def _delete_pair(ids, counts, pair, new_id, weight=1):
    merged = tokenization_ex.merge_update_reference(ids, counts, pair, new_id, weight)
    counts.pop(pair, None)
    return merged


def _unweighted(ids, counts, pair, new_id, weight=1):
    return tokenization_ex.merge_update_reference(ids, counts, pair, new_id, 1)


def _merged_pair_only(ids, counts, pair, new_id, weight=1):
    counts[pair] -= bpe.pair_counts(ids)[pair] * weight
    return bpe.merge(ids, pair, new_id)


def test_the_reference_and_a_streaming_update_pass(capsys):
    tokenization_ex.check_merge_update(tokenization_ex.merge_update_reference)
    tokenization_ex.check_merge_update(_streaming)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 2


@pytest.mark.parametrize("wrong, words", [
    (_recount, "you recounted the chunk from scratch"),
    (_delete_pair, "you deleted the merged pair's entry"),
    (_unweighted, "the chunk occurs 2 times"),
    (_merged_pair_only, "merging (a, b) removes (x, a)"),
    (lambda ids, counts, pair, new_id, weight=1: ids, "expected the merged ids"),
])
def test_each_slip_is_named(wrong, words):
    with pytest.raises(ExerciseFailure, match=words.replace("(", r"\(").replace(")", r"\)")):
        tokenization_ex.check_merge_update(wrong)


def test_updating_equals_recounting_over_a_whole_training_run():
    """Twenty merges on counted chunks of real text, by updates only, leave the table a recount would give."""
    text = "the cat sat on the mat; the cat ate the rat. " * 20 + "ééé 日本日本 aaaa aaaa"
    chunk_counts = bpe.BPE().chunk_counts(text)
    chunks = {c: list(c) for c in chunk_counts}
    table = Counter()
    for c, ids in chunks.items():
        bpe.pair_counts(ids, table, weight=chunk_counts[c])
    for k in range(20):
        pair = max(table, key=table.get)
        for c in chunks:
            chunks[c] = tokenization_ex.merge_update_reference(chunks[c], table, pair, 256 + k, chunk_counts[c])
    recount = Counter()
    for c, ids in chunks.items():
        bpe.pair_counts(ids, recount, weight=chunk_counts[c])
    assert dict(table) == dict(+recount)


def test_a_count_driven_below_zero_is_caught():
    def negative(ids, counts, pair, new_id, weight=1):
        merged = tokenization_ex.merge_update_reference(ids, counts, pair, new_id, weight)
        counts[(249, 248)] -= 1                  # a pair no chunk has, now at -1
        return merged

    with pytest.raises(ExerciseFailure, match=r"\(249, 248\) -1 times"):
        tokenization_ex.check_merge_update(negative)
