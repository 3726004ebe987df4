"""Notebook 04's checks: each passes its reference and names each listed mistake."""

import math

import pytest
import torch
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import pretraining as pretraining_ex
from phi4lab.model import config as C
from phi4lab.model.loading import random_hf_model


def small_model():
    return random_hf_model(C.scaled(d_model=64, n_layers=2, n_kv_heads=1, vocab_size=97), seed=0)


def _rows_share(model, tokens, sizes):
    return pretraining_ex._accumulate(model, tokens, sizes, lambda s: [n / sum(s) for n in s])


def _sliding(model, tokens, max_length, stride):
    windows = pretraining_ex._window_losses(model, tokens, max_length, stride)
    return math.exp(sum(w[-n:].sum().item() for w, n in windows) / sum(n for _, n in windows))


@pytest.mark.slow
def test_pretraining_checks_pass_their_references(capsys):
    pretraining_ex.check_accumulated_gradients(_rows_share, small_model)
    pretraining_ex.check_sliding_perplexity(_sliding, small_model)
    pretraining_ex.check_lamb_step(pretraining_ex._lamb_variant)
    pretraining_ex.check_trust_ratio(pretraining_ex._trust_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 4


@pytest.mark.slow
@pytest.mark.parametrize("check, message, wrong", mistake_cases([
    (lambda fn: pretraining_ex.check_accumulated_gradients(fn, small_model), pretraining_ex.ACCUMULATION_MISTAKES),
    (lambda fn: pretraining_ex.check_sliding_perplexity(fn, small_model), pretraining_ex.PERPLEXITY_MISTAKES),
    (pretraining_ex.check_lamb_step, pretraining_ex.LAMB_MISTAKES),
]))
def test_each_listed_mistake_is_named(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_the_lamb_reference_is_phi4labs_optimizer_over_several_steps():
    """Three steps of the hand-written update, state carried over, equal the optimizer's three steps."""
    from phi4lab.training.optim import LAMB
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, 4, generator=g)
    grads = [torch.randn(5, 4, generator=g) for _ in range(3)]
    p = torch.nn.Parameter(w0.clone())
    opt = LAMB([p], lr=0.01, weight_decay=0.1)
    w, m, v = w0.clone(), torch.zeros(5, 4), torch.zeros(5, 4)
    for step, grad in enumerate(grads, 1):
        p.grad = grad.clone()
        opt.step()
        w, m, v = pretraining_ex._lamb_variant(w, grad, m, v, step, 0.01, (0.9, 0.999), 1e-6, 0.1)
    assert torch.allclose(w, p.detach(), rtol=1e-5, atol=1e-7)


def test_a_gradient_list_of_the_wrong_length_is_named():
    with pytest.raises(ExerciseFailure, match="one gradient per parameter"):
        pretraining_ex.check_accumulated_gradients(lambda m, t, s: [torch.zeros(1)], small_model)
