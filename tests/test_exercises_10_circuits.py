"""Notebook 10's checks: each passes its reference and names each listed mistake."""

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import circuits as circuits_ex

TABLE = [(circuits_ex.check_head_dla, circuits_ex.HEAD_DLA_MISTAKES),
         (circuits_ex.check_copying_score, circuits_ex.COPYING_MISTAKES),
         (circuits_ex.check_self_top_fraction, circuits_ex.SELF_TOP_MISTAKES),
         (circuits_ex.check_qk_by_offset, circuits_ex.OFFSET_MISTAKES),
         (circuits_ex.check_k_composition, circuits_ex.K_COMP_MISTAKES),
         (circuits_ex.check_attribution_estimate, circuits_ex.ATTRIBUTION_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_circuit_checks_pass_their_references(tiny_model, capsys):
    circuits_ex.check_head_dla(circuits_ex._head_dla_ref, tiny_model)
    circuits_ex.check_copying_score(circuits_ex._copying_ref)
    circuits_ex.check_self_top_fraction(circuits_ex._self_top_ref)
    circuits_ex.check_qk_by_offset(circuits_ex._offset_ref)
    circuits_ex.check_k_composition(circuits_ex._k_comp_ref, tiny_model)
    circuits_ex.check_freeze_hook(circuits_ex._freeze_ref)
    circuits_ex.check_attribution_estimate(circuits_ex._attribution_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 10      # 7 checks, 3 with a model line


def test_the_freeze_hook_check_names_its_mistakes():
    def from_live(corrupt_z, clean_z, senders):
        return lambda z, hook: z

    def in_place(corrupt_z, clean_z, senders):
        def hook(z, hook):
            corrupt_z[:, :, senders] = clean_z[:, :, senders]
            return corrupt_z
        return hook

    def wrong_axis(corrupt_z, clean_z, senders):
        def hook(z, hook):
            out = corrupt_z.clone()
            out[:, senders] = clean_z[:, senders]
            return out
        return hook

    def in_place_on_z(corrupt_z, clean_z, senders):       # TransformerLens style: edit z, return nothing
        def hook(z, hook):
            z[:] = corrupt_z
            z[:, :, senders] = clean_z[:, :, senders]
        return hook
    circuits_ex.check_freeze_hook(in_place_on_z)

    for wrong, words in ((from_live, "start from corrupt_z"), (in_place, "changed the cached"),
                         (wrong_axis, "head axis of hook_z is axis 2")):
        with pytest.raises(ExerciseFailure, match=words):
            circuits_ex.check_freeze_hook(wrong)


def test_a_stub_is_called_a_stub():
    def stub(*args):
        raise NotImplementedError
    with pytest.raises(NotImplementedError, match="still a stub"):
        circuits_ex.check_copying_score.__wrapped__(stub)
    assert torch.is_tensor(circuits_ex._copying_ref(torch.eye(3), torch.eye(3)))
