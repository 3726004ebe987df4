"""Notebook 06's checks: each passes its reference and names each listed mistake."""

import re

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import ExerciseFailure
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


def _paste_hook(clean_act, position):
    def hook(act, hook):
        act = act.clone()
        act[:, position] = clean_act[:, position]
        return act
    return hook


def _writes_into_clean(clean_act, position):
    def hook(act, hook):
        clean_act[:, :position] = act[:, :position]
        clean_act[:, position + 1:] = act[:, position + 1:]
        return clean_act
    return hook


@pytest.mark.parametrize("wrong, words", [
    (_writes_into_clean, "wrote into the clean activation"),
    (lambda c, p: (lambda a, hook: c.clone()), "pasted every position:"),
    (lambda c, p: (lambda a, hook: torch.cat([a[:, :p], c[:, p:]], 1)), "every position from `position` on"),
    (lambda c, p: (lambda a, hook: torch.cat([a[:p], c[p:p + 1], a[p + 1:]], 0)), "patched a batch element"),
    (lambda c, p: (lambda a, hook: a), "came back unchanged"),
    (lambda c, p: (lambda a, hook: None), "returned None"),
])
def test_the_patching_hook_check_names_each_mistake(wrong, words):
    interventions_ex.check_patch_position_hook(_paste_hook)
    with pytest.raises(ExerciseFailure, match=re.escape(words)):
        interventions_ex.check_patch_position_hook(wrong)


def _grid(model, clean, corrupt, hook_names, metric, order="position-major"):
    B, T = clean.shape
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n in hook_names)
    if order == "position-major":             # copy p * B + b: prompt b patched at position p
        batch, positions = corrupt.repeat(T, 1), torch.arange(T).repeat_interleave(B)
    else:                                     # prompt-major copies, read back as if position-major
        batch, positions = corrupt.repeat_interleave(T, 0), torch.arange(T).repeat(B)
    rows, grid = torch.arange(T * B), []
    for name in hook_names:
        act = cache[name]
        source = act.repeat(T, *[1] * (act.ndim - 1)) if order == "position-major" else act.repeat_interleave(T, 0)

        def paste(a, hook, source=source):
            a = a.clone()
            a[rows, positions] = source[rows, positions]
            return a
        logits = model.run_with_hooks(batch, fwd_hooks=[(name, paste)])
        grid.append(torch.stack([metric(chunk) for chunk in logits.split(B)]))
    return torch.stack(grid)


@pytest.mark.slow
def test_the_patch_grid_check_passes_one_pass_per_hook_and_fails_a_misordered_batch(tiny_model, capsys):
    interventions_ex.check_patch_grid(_grid, tiny_model)
    assert "27 separate patches" in capsys.readouterr().out
    with pytest.raises(ExerciseFailure, match="first wrong cell is blocks.0.hook_resid_pre at position 0"):
        interventions_ex.check_patch_grid(lambda *a: _grid(*a, order="prompt-major"), tiny_model)
    with pytest.raises(ExerciseFailure, match=r"expected \(3, 9, 3\)"):
        interventions_ex.check_patch_grid(lambda *a: _grid(*a).transpose(1, 2), tiny_model)


@pytest.mark.slow
def test_the_patch_grid_check_counts_forward_passes(tiny_model):
    def one_pass_per_cell(model, clean, corrupt, hook_names, metric):
        return interventions_ex.patch_grid_reference(model, clean, corrupt, hook_names, metric)

    with pytest.raises(ExerciseFailure, match="forward passes"):
        interventions_ex.check_patch_grid(one_pass_per_cell, tiny_model)
