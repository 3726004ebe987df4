"""Notebook 06's checks: each passes its reference and names each listed mistake."""

import pytest
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import interventions as interventions_ex

TABLE = [(interventions_ex.check_final_norm_logits, interventions_ex.LENS_MISTAKES),
         (interventions_ex.check_component_logits, interventions_ex.DLA_MISTAKES),
         (interventions_ex.check_repeat_losses, interventions_ex.REPEAT_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_intervention_checks_pass_their_references(capsys):
    interventions_ex.check_final_norm_logits(interventions_ex._lens_ref)
    interventions_ex.check_component_logits(interventions_ex._dla_ref)
    interventions_ex.check_repeat_losses(interventions_ex._repeat_ref)
    interventions_ex.check_patching_recovery(interventions_ex._recovery_ref)

    def zero_head_hook(head):
        def hook(z, hook):
            z[:, :, head] = 0
            return z
        return hook
    interventions_ex.check_zero_head_hook(zero_head_hook)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 5
