"""Logit lens, direct logit attribution, ablation and patching: identities that must hold."""

import pytest
import torch

import phi4lab
from phi4lab.analysis import (
    ablate_heads,
    direct_logit_attribution,
    logit_lens,
    next_token_losses,
    patch,
    patch_heads_at,
)
from phi4lab.model.config import scaled


@pytest.fixture(scope="module")
def model():
    m = phi4lab.load(config=scaled(d_model=32, n_layers=2), seed=0)
    # A fresh model's RMSNorm weights are all 1, which hides any code that forgets them.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.original_model.named_parameters():     # names like model.norm._original_component.weight
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return m


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(0))


def test_logit_lens_ends_at_the_real_logits(model, tokens):
    lens, labels = logit_lens(model, tokens)
    assert lens.shape == (3, 2, 7, model.cfg.d_vocab) and labels[-1] == "final_post"
    torch.testing.assert_close(lens[-1], model(tokens), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(lens[0], lens[-1], atol=1e-2)
    # an intermediate layer: its own residual through the final RMSNorm (own scale, learned weight)
    _, cache = model.run_with_cache(tokens)
    resid = cache["blocks.1.hook_resid_pre"]
    norm = model.original_model.model.norm
    torch.testing.assert_close(lens[1], norm(resid) @ model.W_U, atol=1e-4, rtol=1e-4)


def test_direct_logit_attribution_sums_to_the_logit(model, tokens):
    answers = [5, 9]
    parts, labels = direct_logit_attribution(model, tokens, answers)
    assert parts.shape == (len(labels), 2, 1) and labels[0] == "embed"
    logits = model(tokens)[:, -1]
    expected = logits[torch.arange(2), torch.tensor(answers)]
    bias = model.b_U[torch.tensor(answers)]
    torch.testing.assert_close(parts.sum(0)[:, 0] + bias, expected, atol=1e-4, rtol=1e-4)


def test_ablation_changes_the_output_unless_the_head_writes_nothing(model, tokens):
    base = model(tokens)
    zeroed = ablate_heads(model, tokens, [(1, 3)])
    assert not torch.allclose(base, zeroed)
    # a head whose output projection columns are zero has nothing to ablate
    o = model.original_model.model.layers[0].self_attn.o_proj.weight
    head_dim = model.cfg.d_head
    saved = o[:, 2 * head_dim:3 * head_dim].clone()
    with torch.no_grad():
        o[:, 2 * head_dim:3 * head_dim] = 0
    try:
        torch.testing.assert_close(ablate_heads(model, tokens, [(0, 2)]), model(tokens))
    finally:
        with torch.no_grad():
            o[:, 2 * head_dim:3 * head_dim] = saved


def test_mean_ablation_differs_from_zero(model, tokens):
    assert not torch.allclose(ablate_heads(model, tokens, [(0, 1)], kind="mean"),
                              ablate_heads(model, tokens, [(0, 1)], kind="zero"))


def test_patching_identities(model, tokens):
    clean, corrupt = tokens, tokens.flip(-1)
    # patching the whole final residual restores the clean logits exactly
    restored = patch(model, clean, corrupt, "blocks.1.hook_resid_post")
    torch.testing.assert_close(restored, model(clean), atol=1e-5, rtol=1e-5)
    # patching a prompt with itself changes nothing
    torch.testing.assert_close(patch(model, clean, clean, "blocks.0.attn.hook_z", head=1), model(clean))
    # patching one position of the last layer's residual changes only that position's logits
    one = patch(model, clean, corrupt, "blocks.1.hook_resid_post", positions=[3])
    base = model(corrupt)
    torch.testing.assert_close(one[:, 3], model(clean)[:, 3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one[:, :3], base[:, :3])


def test_next_token_losses_match_the_mean(model, tokens):
    logits = model(tokens)
    per = next_token_losses(logits, tokens)
    assert per.shape == (2, 6)
    torch.testing.assert_close(per.mean(), model(tokens, return_type="loss"), atol=1e-5, rtol=1e-5)


def test_bad_inputs_get_clear_errors(model, tokens):
    with pytest.raises(IndexError, match="layers 0..1"):
        ablate_heads(model, tokens, [(2, 0)])
    with pytest.raises(IndexError, match="query heads 0..7"):
        ablate_heads(model, tokens, [(0, 8)])
    with pytest.raises(KeyError, match="blocks.0.attn.hook_z"):
        patch(model, tokens, tokens, "blocks.0.attn.hook_zz")
    with pytest.raises(ValueError, match="empty"):
        logit_lens(model, torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="context is 512"):
        logit_lens(model, torch.zeros(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        patch(model, tokens, tokens[:, :5], "blocks.0.hook_resid_pre")


@pytest.mark.parametrize("hook_name, kwargs, error, message", [
    ("blocks.0.attn.hook_z", dict(head=8), IndexError, r"query heads 0\.\.7"),
    ("blocks.0.attn.hook_z", dict(head=-1), IndexError, r"query heads 0\.\.7"),   # not head 7 in disguise
    ("blocks.0.attn.hook_k", dict(head=2), IndexError, r"key/value heads 0\.\.1"),
    ("blocks.0.attn.hook_v", dict(head=-1), IndexError, r"key/value heads 0\.\.1"),
    ("blocks.0.attn.hook_pattern", dict(head=8), IndexError, r"query heads 0\.\.7"),
    ("blocks.0.attn.hook_rot_k", dict(head=2), IndexError, r"key/value heads 0\.\.1"),
    ("blocks.0.hook_resid_pre", dict(head=0), ValueError, "no head axis"),
    ("blocks.0.hook_resid_pre", dict(positions=[7]), IndexError, r"positions \[7\].*0\.\.6"),
    ("blocks.0.hook_resid_pre", dict(positions=[-1]), IndexError, r"positions \[-1\]"),
    ("blocks.0.attn.hook_z", dict(positions=[0, 99], head=0), IndexError, r"positions \[99\]"),
    ("blocks.0.hook_resid_pre", dict(positions=[]), ValueError, "positions is empty"),
])
def test_patch_checks_head_and_positions_before_running(model, tokens, hook_name, kwargs, error, message):
    with pytest.raises(error, match=message):
        patch(model, tokens, tokens.flip(-1), hook_name, **kwargs)


def _by_hand(model, clean, corrupt, name, select):
    """An independent patch: copy the clean activation where select(act) says, in a hook of our own."""
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n == name)

    def hook(act, hook):
        act = act.clone()
        mask = select(act)
        act[mask] = cache[name][mask]
        return act
    return model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])


def test_patch_per_head_indexes_the_right_axis(model, tokens):
    clean, corrupt = tokens, tokens.flip(-1)
    base = model(corrupt)

    def kv_head_1(act):                    # hook_v is [batch, pos, kv_head, d_head]
        assert act.shape[2] == model.cfg.n_key_value_heads
        mask = torch.zeros_like(act, dtype=torch.bool)
        mask[:, :, 1] = True
        return mask

    def head_3_query_4(act):               # hook_pattern is [batch, head, query, key]
        assert act.shape[1] == model.cfg.n_heads and act.shape[2] == act.shape[3]
        mask = torch.zeros_like(act, dtype=torch.bool)
        mask[:, 3, 4] = True
        return mask

    one = patch(model, clean, corrupt, "blocks.0.attn.hook_v", head=1)
    torch.testing.assert_close(one, _by_hand(model, clean, corrupt, "blocks.0.attn.hook_v", kv_head_1))
    assert not torch.allclose(one, base)
    pat = patch(model, clean, corrupt, "blocks.0.attn.hook_pattern", positions=[4], head=3)
    torch.testing.assert_close(pat, _by_hand(model, clean, corrupt, "blocks.0.attn.hook_pattern", head_3_query_4))
    torch.testing.assert_close(pat[:, :4], base[:, :4])           # a later query changes nothing before it
    assert not torch.allclose(pat[:, 4], base[:, 4])
    with pytest.raises(TypeError, match=r"a list of positions, e.g. \[3\]"):
        patch(model, clean, corrupt, "blocks.0.hook_resid_pre", positions=3)


def test_patch_heads_at_is_patch_of_one_head_at_one_position(model, tokens):
    """The sweep primitive and the general patch agree where both apply, and differ from no patch."""
    clean, corrupt = tokens, tokens.flip(-1)
    _, cache = model.run_with_cache(clean, names_filter="blocks.1.attn.hook_z")
    values = cache["blocks.1.attn.hook_z"][:, -1, 2]                        # [batch, d_head]
    one = patch_heads_at(model, corrupt, 1, 2, values)                      # position -1: the last
    torch.testing.assert_close(one, patch(model, clean, corrupt, "blocks.1.attn.hook_z", positions=[6], head=2))
    base = model(corrupt)
    torch.testing.assert_close(one[:, :6], base[:, :6])                    # causal: earlier positions untouched
    assert not torch.allclose(one[:, 6], base[:, 6])
    at_3 = patch_heads_at(model, corrupt, 1, 2, values, position=3)
    torch.testing.assert_close(at_3, patch_heads_at(model, corrupt, 1, 2, values, position=-4))   # 7 tokens
    torch.testing.assert_close(at_3[:, :3], base[:, :3])
    assert not torch.allclose(at_3[:, 3], base[:, 3])
    with pytest.raises(ValueError, match=r"values must be \[batch, d_head\] = \[2, 4\]"):
        patch_heads_at(model, corrupt, 1, 2, values[0])
    with pytest.raises(IndexError, match="position 7 is out of range for prompts of 7 tokens"):
        patch_heads_at(model, corrupt, 1, 2, values, position=7)
    with pytest.raises(IndexError, match="head"):
        patch_heads_at(model, corrupt, 1, model.cfg.n_heads, values)


def test_patch_reuses_a_clean_cache(model, tokens):
    clean, corrupt = tokens, tokens.flip(-1)
    _, cache = model.run_with_cache(clean)
    for name, kwargs in (("blocks.1.hook_resid_pre", dict(positions=[2])), ("blocks.0.attn.hook_z", dict(head=3))):
        torch.testing.assert_close(patch(model, clean, corrupt, name, clean_cache=cache, **kwargs),
                                   patch(model, clean, corrupt, name, **kwargs))
    _, partial = model.run_with_cache(clean, names_filter="blocks.0.hook_resid_pre")
    with pytest.raises(KeyError, match="clean_cache has no 'blocks.1.hook_resid_pre'"):
        patch(model, clean, corrupt, "blocks.1.hook_resid_pre", clean_cache=partial)
