"""Notebook 13's checks: each passes its reference and names each listed mistake."""

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.evaluation import harness
from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import evaluation as evaluation_ex

TABLE = [(evaluation_ex.check_standard_error, evaluation_ex.SE_MISTAKES),
         (evaluation_ex.check_abstain, evaluation_ex.ABSTAIN_MISTAKES),
         (evaluation_ex.check_kappa, evaluation_ex.KAPPA_MISTAKES)]


@pytest.mark.parametrize("check, message, wrong", mistake_cases(TABLE))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


@pytest.mark.parametrize("message", list(evaluation_ex.LL_MISTAKES))
def test_each_loglikelihood_mistake_is_named(tiny_model, message):
    wrong = evaluation_ex.LL_MISTAKES[message]
    with pytest.raises(ExerciseFailure) as info:
        evaluation_ex.check_loglikelihood(wrong, tiny_model)
    assert message in str(info.value)


def test_checks_pass_their_references(tiny_model, capsys):
    evaluation_ex.check_loglikelihood(evaluation_ex._ll_ref, tiny_model)
    evaluation_ex.check_standard_error(evaluation_ex._se_ref)
    evaluation_ex.check_verdict(lambda item, docs, allow, p, c: evaluation_ex._verdict_ref(item, docs, allow, p, c))
    evaluation_ex.check_abstain(lambda c, k, t: tuple(evaluation_ex._abstain_ref(c, k, t).tolist()))
    evaluation_ex.check_kappa(evaluation_ex._kappa_ref)

    def hook_for(heads):
        def hook(z, hook):
            z = z.clone()
            z[:, :, heads] = 0
            return z
        return hook
    evaluation_ex.check_zero_heads_hook(hook_for, tiny_model)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 6


def test_the_verdict_check_names_the_probable_mistake():
    def no_allowlist(item, docs, allow, partial, contaminated):
        return evaluation_ex._verdict_ref(item, docs, [], partial, contaminated)
    with pytest.raises(ExerciseFailure, match="allowlist does not count"):
        evaluation_ex.check_verdict(no_allowlist)

    def item_count_only(item, docs, allow, partial, contaminated):
        from phi4lab.evaluation.decontamination import words
        grams = lambda t: {tuple(words(t)[i:i + 7]) for i in range(len(words(t)) - 6)}   # noqa: E731
        ratio = max(len(grams(item) & grams(d)) / max(1, len(grams(item))) for d in docs)
        status, _ = evaluation_ex._verdict_ref(item, docs, allow, partial, contaminated)
        return status, ratio
    with pytest.raises(ExerciseFailure, match="smaller"):
        evaluation_ex.check_verdict(item_count_only)


def test_the_hook_check_catches_the_wrong_axis(tiny_model):
    def wrong_axis(heads):
        def hook(z, hook):
            z = z.clone()
            z[:, heads] = 0               # positions, not heads
            return z
        return hook
    with pytest.raises(ExerciseFailure, match="head axis"):
        evaluation_ex.check_zero_heads_hook(wrong_axis, tiny_model)


def test_acc_norm_check_against_lm_eval_samples(tiny_model):
    """The acc_norm check on lm-eval-shaped samples: the reference passes; dividing by tokens is named."""
    from phi4lab.evaluation import scoring

    items = harness.items("stdlib_calls")[:30]
    samples = []
    with torch.no_grad():
        for it in items:
            lls = scoring.score_choices(tiny_model, it.context, it.choices, it.answer, "").loglikelihoods
            samples.append({"filtered_resps": [(ll, False) for ll in lls]})

    def reference(model, context, choices, delimiter):
        s = scoring.score_choices(model, context, choices, 0, delimiter)
        return s.pred, s.pred_norm

    def by_tokens(model, context, choices, delimiter):
        s = scoring.score_choices(model, context, choices, 0, delimiter)
        n = [len(model.tokenizer.encode(delimiter + c)) for c in choices]
        return s.pred, max(range(len(choices)), key=lambda i: s.loglikelihoods[i] / n[i])

    evaluation_ex.check_acc_norm(reference, tiny_model, items, samples, "", "stdlib_calls")
    with pytest.raises(ExerciseFailure, match="characters, not tokens"):
        evaluation_ex.check_acc_norm(by_tokens, tiny_model, items, samples, "", "stdlib_calls")
