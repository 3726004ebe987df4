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
