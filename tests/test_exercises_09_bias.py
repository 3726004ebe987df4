"""Notebook 09's checks: each passes its reference and names each mistake, listed or not."""

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.bias import control_labels
from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import bias as bias_ex

TABLE = [(bias_ex.check_word_logprob, bias_ex.WORD_MISTAKES), (bias_ex.check_diff_of_means, bias_ex.DOM_MISTAKES),
         (bias_ex.check_steering_hook, bias_ex.STEER_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_bias_checks_without_a_reference_table_name_their_mistakes():
    def ci(level):
        def fn(values, n, seed):
            g = torch.Generator().manual_seed(seed)
            means = values[torch.randint(0, len(values), (n, len(values)), generator=g)].mean(-1)
            tail = (1 - level) / 2
            return torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
        return fn
    bias_ex.check_bootstrap_ci(ci(0.95))
    with pytest.raises(ExerciseFailure, match="97.5th percentiles"):
        bias_ex.check_bootstrap_ci(ci(0.90))
    with pytest.raises(ExerciseFailure, match="\\*with\\* replacement"):
        bias_ex.check_bootstrap_ci(lambda v, n, s: (v.mean(), v.mean()))
    with pytest.raises(ExerciseFailure, match="word \\*type\\*"):
        bias_ex.check_control_labels(lambda words, seed: torch.arange(len(words)) % 2)
    with pytest.raises(ExerciseFailure, match="different seeds"):
        fixed = {"aunt": 1, "king": 1, "man": 0, "queen": 0, "uncle": 1, "woman": 0}
        bias_ex.check_control_labels(lambda words, seed: torch.tensor([fixed[w] for w in words]))
    with pytest.raises(ExerciseFailure, match="no slot"):
        bias_ex.check_fill_frame(lambda frame, occupation: frame.replace("{occupation}", occupation))
    with pytest.raises(ExerciseFailure, match="in place"):
        def inplace(resid, direction, alpha):
            resid[:, -1] += alpha * direction
            return resid
        bias_ex.check_steering_hook(inplace)


def test_bias_checks_pass_their_references(capsys):
    def fill(frame, occupation):
        if frame.count("{occupation}") != 1:
            raise ValueError("needs exactly one {occupation} slot")
        return frame.replace("{occupation}", occupation)
    bias_ex.check_fill_frame(fill)
    bias_ex.check_word_logprob(bias_ex._word_ref)
    bias_ex.check_bootstrap_ci(lambda v, n, s: bias_ex._ci_ref(v, n, s).tolist())
    bias_ex.check_diff_of_means(bias_ex._dom_ref)
    bias_ex.check_control_labels(control_labels)
    bias_ex.check_steering_hook(bias_ex._steer_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 6


def test_layer_nie_check_passes_one_pass_per_layer_and_names_each_slip(tiny_model):
    bias_ex.check_layer_nie(bias_ex.layer_nie_reference, tiny_model)
    for message, wrong in bias_ex.NIE_MISTAKES.items():
        with pytest.raises(ExerciseFailure) as info:
            bias_ex.check_layer_nie(wrong, tiny_model)
        assert message in str(info.value)


def test_share_ci_wants_a_ratio_of_means_and_paired_resampling(capsys):
    bias_ex.check_share_ci(bias_ex.share_ci_reference)
    with pytest.raises(ExerciseFailure, match="times too wide"):
        bias_ex.check_share_ci(bias_ex._unpaired)
    with pytest.raises(ExerciseFailure, match="not the mean of the per-pair ratios"):
        bias_ex.check_share_ci(next(iter(bias_ex.SHARE_MISTAKES.values())))


def test_share_ci_refuses_another_interval_level():
    import torch as t

    def level(q):
        def fn(nie, te, n, seed):
            g = t.Generator().manual_seed(seed)
            picks = t.randint(0, len(te), (n, len(te)), generator=g)
            shares = nie[picks].mean(-1) / te[picks].mean(-1)
            low, high = t.quantile(shares.double(), t.tensor([q, 1 - q], dtype=t.float64))
            return (nie.mean() / te.mean()).item(), low.item(), high.item()
        return fn

    bias_ex.check_share_ci(level(0.025))
    for q in (0.05, 0.005):
        with pytest.raises(ExerciseFailure, match="2.5% and 97.5% quantiles"):
            bias_ex.check_share_ci(level(q))


@pytest.mark.slow
def test_layer_nie_one_patch_per_head_is_caught(tiny_model):
    from phi4lab.bias import causal

    def per_head(model, base, alt, layer, score):
        name = f"blocks.{layer}.attn.hook_z"
        _, cache = model.run_with_cache(alt, names_filter=lambda n: n == name)
        values = cache[name][:, -1]
        plain = score(model(base))
        return torch.stack([score(causal.patch_heads_at(model, base, layer, h, values[:, h])) - plain
                            for h in range(values.shape[1])])[:, 0]

    with pytest.raises(ExerciseFailure, match="forward passes"):
        bias_ex.check_layer_nie(per_head, tiny_model)
