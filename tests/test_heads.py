"""Head detectors: planted heads rank first; bridge and Hugging Face patterns agree."""

import pytest
import torch

import phi4lab
from phi4lab.analysis import heads
from phi4lab.model.config import scaled

P = 10  # period of the repeated sequence


def uniform_causal(L=3, B=2, H=4, T=2 * P):
    causal = torch.tril(torch.ones(T, T))
    return (causal / causal.sum(-1, keepdim=True)).expand(L, B, H, T, T).clone()


def plant(patterns, layer, head, offset):
    T = patterns.shape[-1]
    target = torch.zeros(T, T)
    for q in range(T):
        target[q, max(q - offset, 0) if q >= offset else 0] = 1.0
    patterns[layer, :, head] = target
    return patterns


def test_planted_previous_token_head_ranks_first():
    pat = plant(uniform_causal(), 2, 1, offset=1)
    (layer, head, score), second = heads.top_heads(heads.previous_token_scores(pat), 2)
    assert (layer, head) == (2, 1) and score == pytest.approx(1.0)
    assert second[2] < 0.6


def test_planted_induction_head_ranks_first_and_scores_one():
    pat = plant(uniform_causal(), 1, 3, offset=P - 1)
    scores = heads.induction_scores(pat, P)
    (layer, head, score), = heads.top_heads(scores, 1)
    assert (layer, head) == (1, 3) and score == pytest.approx(1.0)
    # the same head is not a duplicate-token head (it looks one position further)
    assert heads.duplicate_token_scores(pat, P)[1, 3] == pytest.approx(0.0)


def test_induction_score_counts_every_query_of_the_second_copy():
    # Olsson et al. 2022 score every query of the repeated copy, q = P included: query P repeats
    # token 0, so its target is key 1. An independent loop over (layer, batch, head, query).
    g = torch.Generator().manual_seed(3)
    L, B, H, T = 2, 3, 4, 2 * P
    x = torch.randn(L, B, H, T, T, generator=g) * 3
    pat = x.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    expected = torch.zeros(L, H)
    for l in range(L):
        for h in range(H):
            expected[l, h] = sum(pat[l, b, h, q, q - P + 1] for b in range(B) for q in range(P, T)) / (B * (T - P))
    torch.testing.assert_close(heads.induction_scores(pat, P), expected, rtol=1e-5, atol=1e-6)
    # A head that attends to key 1 from query P only is an induction head at that query.
    pat = uniform_causal()
    pat[0, :, 0, P] = 0.0
    pat[0, :, 0, P, 1] = 1.0
    assert heads.induction_scores(pat, P)[0, 0] > heads.induction_scores(uniform_causal(), P)[0, 0]


def test_planted_duplicate_and_sink_heads():
    pat = plant(uniform_causal(), 0, 0, offset=P)
    assert heads.top_heads(heads.duplicate_token_scores(pat, P), 1)[0][:2] == (0, 0)
    pat = uniform_causal()
    pat[2, :, 2] = 0
    pat[2, :, 2, :, 0] = 1
    assert heads.top_heads(heads.sink_scores(pat), 1)[0][:2] == (2, 2)


def test_group_by_kv_head():
    scores = torch.arange(2 * 8.0).reshape(2, 8)
    grouped = heads.by_kv_group(scores, 2)
    assert grouped.shape == (2, 2, 4) and grouped[1, 1, 0] == scores[1, 4]


def test_patterns_from_bridge_and_hugging_face_agree():
    from phi4lab.model.loading import random_hf_model
    cfg = scaled(d_model=64, n_layers=2)
    hf = random_hf_model(cfg, seed=3).eval()
    bridge = phi4lab.load(config=cfg, seed=3)
    tokens = heads.random_repeated_tokens(8, 2, 2, vocab=1000, seed=0)
    a = heads.attention_patterns(hf, tokens)
    b = heads.attention_patterns(bridge, tokens)
    assert a.shape == (2, 2, 8, 16, 16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5, rtol=0)


def test_random_repeated_tokens_respects_exclusions():
    x = heads.random_repeated_tokens(25, 3, 4, vocab=30, exclude={0, 1, 2}, seed=0)
    assert x.shape == (4, 75) and x.min() >= 3 and x.max() < 30
    assert torch.equal(x[:, :25], x[:, 25:50]) and torch.equal(x[:, :25], x[:, 50:])


# ------------------------------------------------------------------ heads planted in the weights

@pytest.fixture(scope="module")
def planted_model():
    from phi4lab.analysis import planted
    return planted.planted_model()


@pytest.mark.parametrize("job", ["previous_token", "sink", "duplicate_token", "induction"])
def test_each_detector_ranks_the_head_planted_in_the_weights_first(planted_model, job):
    from phi4lab.analysis import planted
    period = 8
    pat = heads.attention_patterns(planted_model, planted.repeated_prompt(period, 2, 4))
    scores = {"previous_token": heads.previous_token_scores(pat),
              "sink": heads.sink_scores(pat),
              "duplicate_token": heads.duplicate_token_scores(pat, period, prefix=1),     # BOS comes first
              "induction": heads.induction_scores(pat, period, prefix=1)}[job]
    (layer, head, score), (_, _, runner_up) = heads.top_heads(scores, 2)
    assert (layer, head) == planted.PLANTED[job]
    # a clear winner, not a tie broken by luck (the duplicate head also attends to itself: ~0.4)
    assert score > 0.35 and score > 2.5 * runner_up


def test_the_prefix_moves_the_second_copy(planted_model):
    # With BOS first, the planted induction head is perfect on the second copy's queries (from
    # period + 1); counting query `period`, which is still in the first copy, would cost it 1/period.
    from phi4lab.analysis import planted
    period = 8
    pat = heads.attention_patterns(planted_model, planted.repeated_prompt(period, 2, 4))
    layer, head = planted.PLANTED["induction"]
    with_bos = heads.induction_scores(pat, period, prefix=1)[layer, head]
    assert with_bos > 0.99
    assert heads.induction_scores(pat, period)[layer, head] < with_bos - 0.05
    # and slicing the BOS off gives the prefix-free score
    torch.testing.assert_close(heads.induction_scores(pat[..., 1:, 1:], period), heads.induction_scores(pat, period, prefix=1))


def test_the_planted_induction_circuit_predicts_repeats_and_needs_both_heads(planted_model):
    from phi4lab.analysis import ablate_heads, next_token_losses, planted
    period = 8
    x = planted.repeated_prompt(period, 2, 4, seed=1)
    second = slice(period + 1, None)        # targets in the second copy (after BOS and the first copy)
    clean = next_token_losses(planted_model(x), x)[:, second].mean()
    assert clean < 0.01
    for heads_out in ([planted.PLANTED["induction"]], [planted.PLANTED["previous_token"]]):
        ablated = next_token_losses(ablate_heads(planted_model, x, heads_out), x)[:, second].mean()
        assert ablated > 2.0, heads_out
    # the sink and duplicate heads write nothing: ablating them changes nothing
    idle = [planted.PLANTED["sink"], planted.PLANTED["duplicate_token"]]
    torch.testing.assert_close(ablate_heads(planted_model, x, idle), planted_model(x))
