"""Using SAE features: edits change exactly the latent's part, attribution adds up, dashboards are built."""

import pytest
import torch

import phi4lab
from phi4lab.dictionaries import SparseAutoencoder, features
from phi4lab.model.config import scaled
from phi4lab.viz import features as feature_views

HOOK = "blocks.1.hook_resid_post"           # the final residual stream of a 2-layer twin


@pytest.fixture(scope="module")
def setup():
    model = phi4lab.load(config=scaled(d_model=32, n_layers=2), seed=0)
    sae = SparseAutoencoder(32, 96, "topk", k=6, seed=1)
    tokens = torch.randint(0, 1000, (3, 10), generator=torch.Generator().manual_seed(0))
    return model, sae, tokens


def _edited(model, sae, tokens, latents, mode, value=0.0):
    _, cache = model.run_with_cache(tokens, names_filter=HOOK)
    x = cache[HOOK]
    return x, features.edit_hook(sae, latents, mode=mode, value=value)(x.clone(), None)


def test_edits_change_exactly_the_latents_part(setup):
    model, sae, tokens = setup
    x, _ = _edited(model, sae, tokens, 0, "steer", 0.0)
    z = sae.encode(x)
    on = int((z > 0).flatten(0, 1).sum(0).argmax())                 # a latent that fires somewhere
    off = int((z > 0).flatten(0, 1).sum(0).argmin())
    direction = sae.W_dec.detach()[on]
    _, ablated = _edited(model, sae, tokens, on, "ablate")
    torch.testing.assert_close(ablated, x - z[..., on, None] * direction)
    _, clamped = _edited(model, sae, tokens, on, "clamp", 5.0)
    torch.testing.assert_close(clamped, x + (5.0 - z[..., on, None]) * direction)
    _, steered = _edited(model, sae, tokens, off, "steer", 2.0)
    torch.testing.assert_close(steered, x + 2.0 * sae.W_dec.detach()[off])
    if (z[..., off] == 0).all():                                         # ablating a silent latent: no change
        torch.testing.assert_close(_edited(model, sae, tokens, off, "ablate")[1], x)
    logits = features.run_with_edit(model, sae, tokens, HOOK, on, mode="ablate")
    assert not torch.allclose(logits, model(tokens))


def test_logit_attribution_adds_up_at_the_final_residual(setup):
    model, sae, tokens = setup
    token = 7
    parts = dict(features.logit_attribution(model, sae, tokens, HOOK, token, pos=-1, top=sae.d_sae))
    _, cache = model.run_with_cache(tokens)
    x, scale = cache[HOOK][:, -1], cache["ln_final.hook_scale"][:, -1]
    w = model.original_model.model.norm.weight.detach()
    x_hat, _ = sae(x)
    rest = (((x - x_hat) + sae.b_dec.detach()) / scale * w) @ model.W_U[:, token]     # the error and b_dec's share
    logit = model(tokens)[:, -1, token]
    torch.testing.assert_close(torch.tensor(sum(parts.values())), (logit - rest).mean().detach(), atol=1e-4, rtol=1e-4)


def test_bad_arguments_are_named(setup):
    model, sae, tokens = setup
    with pytest.raises(IndexError, match=r"latents must be in 0\.\.95"):
        features.edit_hook(sae, 96, mode="ablate")
    with pytest.raises(ValueError, match="mode must be"):
        features.edit_hook(sae, 1, mode="zero")
    latents = features.latent_activations(model, sae, tokens, HOOK)
    with pytest.raises(ValueError, match="same windows"):
        feature_views.feature_dashboard(model, sae, latents, tokens[:2], 0)
    with pytest.raises(IndexError, match="out of range"):
        feature_views.feature_dashboard(model, sae, latents, tokens, 96)


@pytest.mark.slow
def test_dashboard_shows_the_top_contexts_in_order(tiny_model):
    from phi4lab.dictionaries import files
    sae, cfg = files.shipped_sae("blocks.3.hook_resid_post")
    g = torch.Generator().manual_seed(0)
    first = torch.randint(10, 4091, (8, 16), generator=g)
    tokens = torch.cat([first, first], 1)
    latents = features.latent_activations(tiny_model, sae, tokens, cfg["hook_name"])
    best = int((latents > 0).flatten(0, 1).sum(0).argmax())
    contexts = feature_views.top_contexts(latents, tokens, best, n=8)
    peaks = [c.values[c.peak] for c in contexts]
    assert peaks == sorted(peaks, reverse=True) and len({c.source[0] for c in contexts}) == len(contexts)
    page = feature_views.feature_dashboard(tiny_model, sae, latents, tokens, best).html()
    assert page.count('class="ctx"') == len(contexts) and "raises" in page and "<svg" in page
