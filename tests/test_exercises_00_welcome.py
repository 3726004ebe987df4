"""Notebook 00's checks: Phi-4 by the numbers."""

import pytest
import torch

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import welcome as welcome_ex
from phi4lab.model import config as C


def test_welcome_checks_pass_the_reference_and_catch_known_mistakes():
    welcome_ex.check_count_parameters(C.count_parameters)
    with pytest.raises(ExerciseFailure, match="grouped-query"):
        welcome_ex.check_count_parameters(welcome_ex._full_kv)
    with pytest.raises(ExerciseFailure, match="only K or only V"):
        welcome_ex.check_kv_cache_bytes_per_token(lambda cfg, b: C.kv_cache_bytes_per_token(cfg, torch.float32) // 8 * b)
    with pytest.raises(ExerciseFailure, match="multiply-adds"):
        welcome_ex.check_forward_flops_per_token(lambda cfg: C.forward_flops_per_token(cfg) // 2)

    def stub(cfg):
        raise NotImplementedError

    with pytest.raises(NotImplementedError, match="still a stub"):       # the check itself; the notebook's
        welcome_ex.check_count_parameters.__wrapped__(stub)               # reports it (test_standalone.py)


def test_sequences_that_fit_passes_the_reference_and_names_each_mistake():
    welcome_ex.check_sequences_that_fit(welcome_ex._sequences_reference)
    for message, wrong in welcome_ex.SEQUENCE_MISTAKES.items():
        with pytest.raises(ExerciseFailure) as info:
            welcome_ex.check_sequences_that_fit(wrong)
        assert message in str(info.value)
    # the arithmetic itself: Phi-4 in bf16 on an 80 GB GPU leaves room for 15 caches of 16K tokens
    assert welcome_ex._sequences_reference(C.PHI4, 80 * 10**9, 16384, 2) == (80 * 10**9 - 29_319_014_400) // (204_800 * 16384)


def test_attention_flops_passes_the_reference_and_names_each_mistake():
    welcome_ex.check_attention_flops_per_token(welcome_ex._attention_flops_reference)
    for message, wrong in welcome_ex.ATTENTION_FLOP_MISTAKES.items():
        with pytest.raises(ExerciseFailure) as info:
            welcome_ex.check_attention_flops_per_token(wrong)
        assert message in str(info.value)
    # Phi-4 at 4,096 tokens: 4 x 40 layers x 40 heads x 128 x 4,096
    assert welcome_ex._attention_flops_reference(C.PHI4, 4096) == 4 * 40 * 40 * 128 * 4096
