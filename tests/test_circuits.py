"""Circuits from the weights and path patching: the planted model (answers known), phi4-tiny, TransformerLens."""

import pytest
import torch

from phi4lab.analysis import circuits, planted, sweep
from phi4lab.analysis.lens import direct_logit_attribution
from phi4lab.analysis.path_patching import path_patch, path_patch_senders

ORDINARY = torch.arange(planted.N_TOKENS)


@pytest.fixture(scope="module")
def planted_model():
    return planted.planted_model()


@pytest.fixture(scope="module")
def induction_pair():
    """Repeated segments; the corrupted copy changes the first copy's last token, so that no key
    says "the token before me was the query's token" and induction has nothing to find."""
    clean = planted.repeated_prompt(period=8, repeats=2, batch=4, seed=0)
    corrupt = clean.clone()
    for b in range(len(clean)):
        corrupt[b, 8] = next(t for t in range(planted.N_TOKENS) if t not in clean[b].tolist())
    return clean, corrupt, sweep.logit_difference(clean[:, 9], corrupt[:, 8])


# ------------------------------------------------------------------ the planted model: answers known

def test_planted_qk_offset_profile_finds_the_previous_token_head(planted_model):
    prev = circuits.qk_by_offset(planted_model, *planted.PLANTED["previous_token"], max_offset=8)
    assert prev.argmax() == 1, prev                       # one token back, from the rotation alone
    dup = circuits.qk_by_offset(planted_model, *planted.PLANTED["duplicate_token"], max_offset=8)
    assert prev[1] - prev[[0, 2, 3]].max() > 1.0 and (dup.max() - dup.min()) < prev[1] - prev[[0, 2, 3]].max()


def test_planted_duplicate_token_head_matches_content_at_any_offset(planted_model):
    for offset in (1, 5):
        qk = circuits.qk_circuit(planted_model, *planted.PLANTED["duplicate_token"], offset=offset)
        ordinary = (qk.A[ORDINARY] @ qk.B[:, ORDINARY])
        assert torch.equal(ordinary.argmax(-1), ORDINARY)        # each token's query finds its own token's key


def test_planted_induction_head_copies_and_the_others_do_not(planted_model):
    ov = circuits.ov_circuit(planted_model, *planted.PLANTED["induction"], token_ids=ORDINARY)
    assert circuits.copying_score(ov) > 0.99 and circuits.self_top_fraction(ov) == 1.0
    # the previous-token head writes into a subspace the unembedding does not read
    prev = circuits.ov_circuit(planted_model, *planted.PLANTED["previous_token"], token_ids=ORDINARY)
    assert (prev.A @ prev.B).abs().max() < 1e-4


def test_planted_k_composition_is_the_circuit(planted_model):
    k = circuits.composition_scores(planted_model, "K")                           # [L, H, L, KV]
    assert k.shape == (2, 4, 2, 2)
    sender, (layer, head) = planted.PLANTED["previous_token"], planted.PLANTED["induction"]
    group = circuits.kv_group(planted_model, head)
    best = divmod(int(k[:, :, layer].flatten(0, 1).flatten().argmax()), k.shape[-1])
    assert best == (sender[0] * 4 + sender[1], group), k[:, :, layer]
    assert k[sender][layer, 1 - group] < 1e-6                                    # the other group reads none of it
    assert torch.equal(k[1], torch.zeros_like(k[1]))                              # no layer after the last
    assert not circuits.composition_scores(planted_model, "Q").isnan().any()      # silent heads: 0, not 0/0


def test_planted_path_patching_finds_the_path_and_only_it(planted_model, induction_pair):
    clean, corrupt, metric = induction_pair
    clean_value, corrupt_value = (metric(planted_model(t)[None, :, -1])[0] for t in (clean, corrupt))
    assert (clean_value - corrupt_value).min() > 10
    prev, (layer, head) = planted.PLANTED["previous_token"], planted.PLANTED["induction"]
    torch.testing.assert_close(path_patch(planted_model, clean, corrupt, [prev], [(layer, head, "k")], metric),
                               clean_value, atol=1e-4, rtol=0)
    for senders, receivers in (([prev], [(layer, head, "q")]), ([prev], [(layer, head, "v")]),
                               ([planted.PLANTED["sink"]], [(layer, head, "k")])):
        torch.testing.assert_close(path_patch(planted_model, clean, corrupt, senders, receivers, metric),
                                   corrupt_value, atol=1e-4, rtol=0)
    grid = path_patch_senders(planted_model, clean, corrupt, [(layer, head, "k")], metric).mean(-1)
    assert grid.shape == (1, 4) and grid.argmax() == prev[1]


def test_path_patching_reaches_queries_keys_and_values_alike():
    """A positive control: on a random twin every kind of receiver input moves the metric."""
    import phi4lab
    from phi4lab.model.config import scaled

    model = phi4lab.load(config=scaled(d_model=64, n_layers=2), seed=0)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 1000, (2, 9), generator=g)
    corrupt = clean.clone()
    corrupt[:, 3] = (corrupt[:, 3] + 11) % 1000
    metric = sweep.logit_difference([5, 6], [7, 8])
    base = metric(model(corrupt)[None, :, -1])[0]
    senders = [(0, h) for h in range(model.cfg.n_heads)]
    for kind in "qkv":
        moved = path_patch(model, clean, corrupt, senders, [(1, 2, kind)], metric)
        still = path_patch(model, corrupt, corrupt, senders, [(1, 2, kind)], metric)   # nothing to paste
        assert (still - base).abs().max() < 1e-7 and (moved - base).abs().max() > 1e-5, kind


def test_path_patching_refuses_impossible_paths(planted_model, induction_pair):
    clean, corrupt, metric = induction_pair
    with pytest.raises(ValueError, match="not before the first receiver layer"):
        path_patch(planted_model, clean, corrupt, [(1, 0)], [(1, 3, "k")], metric)
    with pytest.raises(ValueError, match=r"\(layer, head, 'q' \| 'k' \| 'v'\)"):
        path_patch(planted_model, clean, corrupt, [(0, 0)], [(1, 3, "key")], metric)
    with pytest.raises(IndexError, match="head"):
        path_patch(planted_model, clean, corrupt, [(0, 9)], [(1, 3, "k")], metric)
    with pytest.raises(ValueError, match="same shape"):
        path_patch(planted_model, clean, corrupt[:, :5], [(0, 0)], [(1, 3, "k")], metric)


# ------------------------------------------------------------------ TransformerLens and the identities

@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_transformer_lens_convention_reproduces_all_composition_scores(tiny_model, kind):
    ours = circuits.composition_scores(tiny_model, kind, convention="transformer_lens")
    theirs = tiny_model.all_composition_scores(kind).scores
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    # phi4lab's own convention differs: norm weights folded in, and K/V per key/value group
    own = circuits.composition_scores(tiny_model, kind)
    assert own.shape[-1] == (tiny_model.cfg.n_heads if kind == "Q" else tiny_model.cfg.n_key_value_heads)


def test_head_dla_sums_to_each_layers_attention_term(tiny_model):
    tokens = torch.randint(10, 4000, (2, 20), generator=torch.Generator().manual_seed(0))
    answers = torch.tensor([[5, 6], [7, 8]])
    _, cache = tiny_model.run_with_cache(tokens)
    heads = circuits.head_dla(tiny_model, tokens, answers, cache=cache)              # [L, H, batch, answers]
    parts, labels = direct_logit_attribution(tiny_model, tokens, answers, cache=cache)
    for layer in range(tiny_model.cfg.n_layers):
        torch.testing.assert_close(heads[layer].sum(0), parts[labels.index(f"{layer}_attn_out")], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ phi4-tiny's real circuit

def test_phi4_tiny_previous_token_heads_prefer_offset_one_from_the_weights(tiny_model):
    peaks = [int(circuits.qk_by_offset(tiny_model, 2, h, max_offset=8).argmax()) for h in range(8)]
    assert peaks.count(1) >= 4, peaks


@pytest.mark.slow
def test_phi4_tiny_layer_3_heads_copy_what_they_read_not_the_raw_embedding(tiny_model):
    ids = torch.arange(10, 4091)
    effective = circuits.effective_embedding(tiny_model, 3, ids)
    for head in range(8):
        read = circuits.ov_circuit(tiny_model, 3, head, effective, ids)
        raw = circuits.ov_circuit(tiny_model, 3, head, token_ids=ids)
        assert circuits.copying_score(read) > 0.9 and circuits.self_top_fraction(read) > 0.3
        assert circuits.copying_score(raw) < 0        # W_E alone is not what layer 3 sees


def test_phi4_tiny_k_composition_runs_from_layer_2_into_layer_3(tiny_model):
    k = circuits.composition_scores(tiny_model, "K")                             # [L, H, L, KV]
    into_3 = k[:, :, 3].amax(-1)                                                  # [L, H]: best group per sender
    assert into_3[2].mean() > 2 * into_3[:2].mean(), into_3


def test_bad_arguments_are_named(tiny_model):
    with pytest.raises(ValueError, match="kind must be 'Q', 'K' or 'V'"):
        circuits.composition_scores(tiny_model, "O")
    with pytest.raises(ValueError, match="convention"):
        circuits.composition_scores(tiny_model, "K", convention="elhage")
    with pytest.raises(ValueError, match="offset counts keys back"):
        circuits.qk_circuit(tiny_model, 0, 0, offset=-1)
    with pytest.raises(ValueError, match="give token_ids too"):
        circuits.ov_circuit(tiny_model, 0, 0, embedding=torch.zeros(3, tiny_model.cfg.d_model))
    with pytest.raises(IndexError, match="head"):
        circuits.ov_circuit(tiny_model, 0, 8)
