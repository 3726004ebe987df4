"""The fast patching sweeps: TransformerLens' numbers, exact identities, and clear errors."""

import contextlib
import io

import pytest
import torch
from transformer_lens import patching

import phi4lab
from phi4lab.analysis import patch, sweep
from phi4lab.model.config import scaled


def _random_norms(model, seed=1):
    """A fresh model's RMSNorm weights are all 1, which hides code that forgets them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.original_model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module", params=[dict(), dict(n_kv_heads=1), dict(num_attention_heads=4, num_key_value_heads=4),
                                        dict(partial_rotary_factor=0.75, tie_word_embeddings=True)],
            ids=["gqa", "one-kv-head", "no-gqa", "phi4-mini-rotary"])
def model(request):
    return _random_norms(phi4lab.load(config=scaled(d_model=64, n_layers=3, **request.param), seed=0))


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 1000, (2, 11), generator=g)
    corrupt = clean.clone()
    corrupt[:, 4] = (corrupt[:, 4] + 17) % 1000            # the prompts differ at position 4 only
    return clean, corrupt


METRIC = sweep.logit_difference([5, 9], [11, 13])           # one answer pair per prompt


def _tl(metric):
    return lambda logits: metric(logits[None, :, -1])[0].mean()


def _quiet(fn, *args):
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


def test_sweeps_match_transformer_lens(model, prompts):
    clean, corrupt = prompts
    _, cache = model.run_with_cache(clean)
    ours = sweep.resid_pre_sweep(model, clean, corrupt, METRIC, chunk=4)
    assert ours.shape == (3, 11, 2)
    theirs = _quiet(patching.get_act_patch_resid_pre, model, corrupt, cache, _tl(METRIC))
    torch.testing.assert_close(ours.mean(-1), theirs, atol=1e-5, rtol=0)
    assert theirs.abs().max() > 0.05, "the grid should not be trivially zero"
    heads = sweep.head_out_sweep(model, clean, corrupt, METRIC)
    assert heads.shape == (3, model.cfg.n_heads, 2)
    theirs = _quiet(patching.get_act_patch_attn_head_out_all_pos, model, corrupt, cache, _tl(METRIC))
    torch.testing.assert_close(heads.mean(-1), theirs, atol=1e-5, rtol=0)


def test_chunking_changes_nothing_and_cells_match_a_plain_patch(model, prompts):
    clean, corrupt = prompts
    grids = [sweep.resid_pre_sweep(model, clean, corrupt, METRIC, chunk=c) for c in (1, 3, 11)]
    for g in grids[1:]:
        torch.testing.assert_close(g, grids[0], atol=1e-5, rtol=0)
    for layer, pos in ((0, 4), (1, 7), (2, 10)):
        logits = patch(model, clean, corrupt, f"blocks.{layer}.hook_resid_pre", positions=[pos])
        torch.testing.assert_close(grids[0][layer, pos], METRIC(logits[None, :, -1])[0], atol=1e-5, rtol=0)


def test_identities_where_the_answer_is_known(model, prompts):
    clean, corrupt = prompts
    grid = sweep.resid_pre_sweep(model, clean, corrupt, METRIC)
    clean_value, corrupt_value = (METRIC(model(t)[None, :, -1])[0] for t in (clean, corrupt))
    # layer 0 is the embedding: the prompts agree everywhere but position 4, so patching any other
    # position pastes identical values, and patching position 4 makes the run the clean run
    for pos in range(11):
        expected = clean_value if pos == 4 else corrupt_value
        torch.testing.assert_close(grid[0, pos], expected, atol=1e-5, rtol=0)
    # before position 4 the residual streams agree at every layer: nothing to restore
    torch.testing.assert_close(grid[:, :4], corrupt_value.expand(3, 4, 2), atol=1e-5, rtol=0)
    # patching every head of a layer at once is the same as patching none when clean == corrupt
    same = sweep.head_out_sweep(model, corrupt, corrupt, METRIC)
    torch.testing.assert_close(same, corrupt_value.expand(*same.shape), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_on_phi4_tiny_the_copied_token_is_read_from_its_own_position_by_layer_3(tiny_model):
    """Repeated random tokens A B C D E F ... | A B C D E F; corrupt the token after F in the first copy
    and ask whether the model still predicts it after the second F."""
    g = torch.Generator().manual_seed(0)
    first = torch.randint(10, 4000, (4, 12), generator=g)
    clean = torch.cat([first, first[:, :6]], dim=1)
    corrupt = clean.clone()
    corrupt[:, 6] = torch.randint(10, 4000, (4,), generator=g)
    metric = sweep.logit_difference(clean[:, 6], corrupt[:, 6])
    clean_value, corrupt_value = (_metric_of(tiny_model, t, metric).mean() for t in (clean, corrupt))
    restored = lambda grid: (grid.mean(-1) - corrupt_value) / (clean_value - corrupt_value)   # noqa: E731
    # the residual stream: at every layer, only the corrupted position carries what is needed
    resid = restored(sweep.resid_pre_sweep(tiny_model, clean, corrupt, metric))
    assert (resid[:, 6] > 0.9).all() and (resid[:, torch.arange(18) != 6].abs() < 0.02).all(), resid
    # the heads: each of layer 3's eight heads moves part of the copy; layers 1 and 2 move none of it
    heads = sweep.head_out_sweep(tiny_model, clean, corrupt, metric)
    _, cache = tiny_model.run_with_cache(clean)
    theirs = _quiet(patching.get_act_patch_attn_head_out_all_pos, tiny_model, corrupt, cache, _tl(metric))
    torch.testing.assert_close(heads.mean(-1), theirs, atol=1e-4, rtol=0)
    share = restored(heads)
    assert share[3].min() > 0.05 and share[1:3].abs().max() < 0.02, share


def _metric_of(model, tokens, metric):
    return metric(model(tokens)[None, :, -1])[0]


def test_bad_input_is_refused_clearly(model, prompts):
    clean, corrupt = prompts
    with pytest.raises(ValueError, match="same shape"):
        sweep.resid_pre_sweep(model, clean, corrupt[:, :5], METRIC)
    with pytest.raises(ValueError, match=r"one value per patch and prompt, \[4, 2\]"):
        sweep.resid_pre_sweep(model, clean, corrupt, lambda logits: logits.sum(), chunk=4)
    with pytest.raises(ValueError, match="empty"):
        sweep.head_out_sweep(model, clean[:, :0], corrupt[:, :0], METRIC)


def _copy_pairs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(10, 4000, (n, 12), generator=g)
    clean = torch.cat([first, first[:, :6]], dim=1)
    corrupt = clean.clone()
    corrupt[:, 6] = torch.randint(10, 4000, (n,), generator=g)
    return clean, corrupt, sweep.logit_difference(clean[:, 6], corrupt[:, 6])


@pytest.mark.slow
def test_attribution_patching_is_transformer_lens_and_tracks_the_exact_sweep(tiny_model):
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch as tl_attribution

    clean, corrupt, metric = _copy_pairs(4)
    estimate = sweep.attribution_patch(tiny_model, clean, corrupt, metric)
    assert estimate["resid_pre"].shape == (4, 18, 4) and estimate["head_out"].shape == (4, 8, 4)
    # TransformerLens scores one pair at a time, per head and position; summed over positions it is ours
    for i in range(2):
        pair_metric = sweep.logit_difference(clean[i, 6], corrupt[i, 6])
        result = tl_attribution(tiny_model, clean[i:i + 1], corrupt[i:i + 1],
                                lambda logits, pair_metric=pair_metric: pair_metric(logits.reshape(-1, *logits.shape[-2:])[None, :, -1])[0].sum())
        theirs = torch.zeros(4, 8)
        for node, score in result.node_scores.items():
            if node.kind == "attn_head_out":
                theirs[node.layer, node.head] += score
        torch.testing.assert_close(estimate["head_out"][..., i], theirs, atol=1e-3, rtol=1e-3)
    # where the prompts agree the estimate is exactly 0; elsewhere it follows the exact sweep
    assert torch.equal(estimate["resid_pre"][0, torch.arange(18) != 6], torch.zeros(17, 4))
    corrupt_value = _metric_of(tiny_model, corrupt, metric).detach()
    exact = sweep.resid_pre_sweep(tiny_model, clean, corrupt, metric) - corrupt_value
    r = torch.corrcoef(torch.stack([estimate["resid_pre"].mean(-1).flatten(), exact.mean(-1).flatten()]))[0, 1]
    assert r > 0.95, r


@pytest.mark.slow
def test_intervals_over_prompt_pairs(tiny_model):
    clean, corrupt, metric = _copy_pairs(6)
    values = sweep.head_out_sweep(tiny_model, clean, corrupt, metric)              # [L, H, pairs]
    mean, low, high = sweep.interval(values, n=200)
    torch.testing.assert_close(mean, values.double().mean(-1))
    assert (low <= mean).all() and (mean <= high).all() and (high - low > 0).any()
    with pytest.raises(ValueError, match="at least 2 units"):
        sweep.interval(values[..., :1])
