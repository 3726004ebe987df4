"""Notebook 08's checks: each passes its reference and names each listed mistake."""

import pytest
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import finetune as finetune_ex

TABLE = [(finetune_ex.check_lora_parameters, finetune_ex.LORA_COUNT_MISTAKES),
         (finetune_ex.check_merge, finetune_ex.MERGE_MISTAKES),
         (finetune_ex.check_attention_change, finetune_ex.TV_MISTAKES),
         (finetune_ex.check_fraction_explained, finetune_ex.FRACTION_MISTAKES),
         (finetune_ex.check_assistant_labels, finetune_ex.LABEL_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_finetune_checks_pass_their_references(capsys):
    finetune_ex.check_lora_parameters(lambda i, o, r: r * (i + o))
    finetune_ex.check_merge(finetune_ex._merge_ref)
    finetune_ex.check_attention_change(finetune_ex._tv_ref)
    finetune_ex.check_fraction_explained(lambda b, f, p: (b - p) / (b - f))
    finetune_ex.check_assistant_labels(finetune_ex._labels_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 5
