"""Notebook 03's check for choosing LSH bands: datasketch's choice passes, each slip is named."""

import pytest
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import curation as curation_ex


def test_the_search_written_out_gives_datasketchs_choice(capsys):
    curation_ex.check_choose_bands(lambda *case: curation_ex._bands_search(*case))
    assert "all 5 test cases pass" in capsys.readouterr().out
    # and the notebook's thresholds at 128 permutations
    for threshold, expected in ((0.2, (28, 2)), (0.5, (25, 5)), (0.8, (9, 13))):
        assert curation_ex._bands_search(threshold, 128, 0.5, 0.5) == expected


@pytest.mark.parametrize("check, message, wrong", mistake_cases([(curation_ex.check_choose_bands,
                                                                  curation_ex.BANDS_MISTAKES)]))
def test_each_slip_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_keep_follows_the_pipelines_rule_not_chains(capsys):
    curation_ex.check_keep(curation_ex.keep_reference)
    assert curation_ex.keep_reference(6, [(0, 3), (3, 5)]) == [0, 1, 2, 4, 5]          # 5 resembles only a dropped one
    assert curation_ex._connected_components(6, [(0, 3), (3, 5)]) == [0, 1, 2, 4]
    for message, wrong in curation_ex.KEEP_MISTAKES.items():
        assert_mistake_named(curation_ex.check_keep, message, wrong)


def test_keep_reproduces_near_duplicates_on_planted_documents():
    """corpus.near_duplicates keeps exactly what the rule keeps, given the pairs it would see."""
    from phi4lab.recipes import corpus
    words = [f"w{i}" for i in range(400)]
    base = " ".join(words)
    docs = [corpus.Document("prose/a", "prose", base),
            corpus.Document("prose/b", "prose", " ".join(words[:300] + [f"x{i}" for i in range(100)])),
            corpus.Document("prose/c", "prose", " ".join(words[200:] + [f"y{i}" for i in range(200)])),
            corpus.Document("prose/d", "prose", " ".join(f"z{i}" for i in range(400)))]
    reasons, _ = corpus.near_duplicates(docs, threshold=0.3)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)
             if corpus.minhash(docs[i].text, corpus.NUM_PERM).jaccard(corpus.minhash(docs[j].text, corpus.NUM_PERM)) >= 0.3]
    kept = curation_ex.keep_reference(4, pairs)
    assert [d.name for d in docs if d.name not in reasons] == [docs[i].name for i in kept]
