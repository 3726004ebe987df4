"""Notebook 08's checks: each passes its reference and names each listed mistake."""

import math

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import finetune as finetune_ex

TABLE = [(finetune_ex.check_lora_parameters, finetune_ex.LORA_COUNT_MISTAKES),
         (finetune_ex.check_merge, finetune_ex.MERGE_MISTAKES),
         (finetune_ex.check_attention_change, finetune_ex.TV_MISTAKES),
         (finetune_ex.check_fraction_explained, finetune_ex.FRACTION_MISTAKES),
         (finetune_ex.check_assistant_labels, finetune_ex.LABEL_MISTAKES),
         (finetune_ex.check_lora_forward, finetune_ex.LORA_FORWARD_MISTAKES),
         (finetune_ex.check_sequence_logprobs, finetune_ex.SEQUENCE_MISTAKES),
         (finetune_ex.check_dpo_loss, finetune_ex.DPO_MISTAKES),
         (finetune_ex.check_pivotal_tokens, finetune_ex.PIVOTAL_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_finetune_checks_pass_their_references(capsys):
    finetune_ex.check_lora_parameters(lambda i, o, r: r * (i + o))
    finetune_ex.check_merge(finetune_ex._merge_ref)
    finetune_ex.check_attention_change(finetune_ex._tv_ref)
    finetune_ex.check_fraction_explained(lambda b, f, p: (b - p) / (b - f))
    finetune_ex.check_assistant_labels(finetune_ex._labels_ref)
    finetune_ex.check_lora_forward(finetune_ex.lora_forward_reference)
    finetune_ex.check_sequence_logprobs(finetune_ex.sequence_logprobs_reference)
    finetune_ex.check_dpo_loss(finetune_ex.dpo_loss_reference)
    finetune_ex.check_pivotal_tokens(finetune_ex.pivotal_tokens_reference)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 9


def test_the_lora_reference_is_peft(tiny_model):
    """lora_forward_reference gives what peft's adapted layer computes, on one of phi4-tiny's fused layers."""
    from phi4lab.training import finetune as FT
    layer = FT.lora_model(tiny_model, r=4, alpha=8).base_model.model.model.layers[0].mlp.gate_up_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(generator=torch.Generator().manual_seed(0))
        x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(1))
        ours = finetune_ex.lora_forward_reference(x, layer.base_layer.weight, layer.lora_A["default"].weight,
                                                  layer.lora_B["default"].weight, 8, 4)
        assert torch.allclose(ours, layer(x), atol=1e-5)


def test_the_dpo_reference_is_the_papers_loss():
    """Equation 7 of Rafailov et al.: log 2 at the reference, and falling as the chosen answer's log-ratio grows."""
    zero = torch.zeros(5)
    assert finetune_ex.dpo_loss_reference(zero, zero, zero, zero, 0.1).item() == pytest.approx(math.log(2))
    better = finetune_ex.dpo_loss_reference(zero + 2, zero, zero, zero, 0.5).item()
    assert better == pytest.approx(math.log1p(math.exp(-1.0)))


def test_bisection_misses_cancelling_tokens_that_the_scan_finds():
    answer = [1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0]
    assert finetune_ex.pivotal_tokens_reference(finetune_ex.toy_success, answer, 0.2) == [3]
    assert finetune_ex._every_big_step(finetune_ex.toy_success, answer, 0.2) == [2, 3, 6, 8]
    # the toy's probabilities are exact: a finished answer succeeds or fails, the empty prefix is a fair mix
    assert finetune_ex.toy_success(answer) == 1.0 and finetune_ex.toy_success([0] * 12) == 0.0
    assert 0 < finetune_ex.toy_success([]) < 1


def test_a_pivotal_answer_that_returns_every_big_step_is_told_to_bisect():
    with pytest.raises(ExerciseFailure, match="that is the exhaustive scan"):
        finetune_ex.check_pivotal_tokens(finetune_ex._every_big_step)
