"""Notebook 05's checks: each passes its reference and names each listed mistake."""

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.analysis import heads
from phi4lab.exercises import attention as attention_ex

TABLE = [(attention_ex.check_pattern_cache_bytes, attention_ex.PATTERN_MISTAKES),
         (attention_ex.check_attention_pattern, attention_ex.ATTENTION_MISTAKES),
         (attention_ex.check_previous_token_score, attention_ex.PREV_MISTAKES),
         (attention_ex.check_induction_score, attention_ex.INDUCTION_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_attention_checks_pass_their_references(capsys):
    attention_ex.check_pattern_cache_bytes(attention_ex._pattern_bytes_ref)
    attention_ex.check_attention_pattern(attention_ex._pattern_ref)
    attention_ex.check_previous_token_score(heads.previous_token_scores)
    attention_ex.check_induction_score(heads.induction_scores)
    attention_ex.check_kv_head_of(attention_ex._kv_ref)
    attention_ex.check_js_divergence(attention_ex._js_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 8    # 6 checks, 2 with a planted-model line


def test_natural_induction_and_within_across_checks(capsys):
    attention_ex.check_natural_induction_score(attention_ex.natural_induction_reference)
    attention_ex.check_within_across(attention_ex._within_across_reference)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 3


@pytest.mark.parametrize("check, message, wrong", mistake_cases([
    (attention_ex.check_natural_induction_score, attention_ex.INDUCTION_TEXT_MISTAKES),
    (attention_ex.check_within_across, attention_ex.WITHIN_MISTAKES),
]))
def test_each_new_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_within_across_is_heads_within_and_across_groups():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 8, 10, 10, generator=g).tril()
    p = p / p.sum(-1, keepdim=True)
    ours = attention_ex._within_across_reference(heads.head_pair_divergence(p), 2)
    theirs = heads.within_and_across_groups(p, 2)
    assert all(torch.allclose(a, b) for a, b in zip(ours, theirs))
