"""phi4lab.nnsight: nnsight on the bridge's own weights, and one patching experiment written both ways.

The trace bodies live in this file because nnsight reads a ``with`` block's source to run it.
"""

import pytest
import torch

import phi4lab
from phi4lab.analysis.interventions import patch
from phi4lab.model import config as C
from phi4lab.model.nnsight_lens import shared_hf_model


@pytest.fixture(scope="module")
def tiny():
    return phi4lab.load("phi4-tiny")


def prompts(model):
    """Repeated random tokens (phi4-tiny copies them), and the same with one earlier token changed."""
    g = torch.Generator().manual_seed(0)
    half = torch.randint(100, 4000, (3, 6), generator=g)
    clean = torch.cat([half, half], dim=1)
    corrupt = clean.clone()
    corrupt[:, 2] = (corrupt[:, 2] + 7) % 4000
    return clean, corrupt


def test_the_lens_holds_the_bridge_s_own_tensors(tiny):
    plain = shared_hf_model(tiny)
    theirs = {t.data_ptr() for t in tiny.parameters()}
    assert all(p.data_ptr() in theirs for p in plain.parameters()), "a copy, not the same weights"
    clean, _ = prompts(tiny)
    lens = phi4lab.nnsight(tiny)
    with torch.no_grad(), lens.trace(clean):
        logits = lens.lm_head.output.save()
    assert torch.equal(logits, tiny(clean))


def nnsight_resid_pre_patch(lens, clean, corrupt, layer, position):
    """The corrupted run with the residual stream entering `layer` at `position` taken from the clean run."""
    with lens.trace(clean):
        source = lens.model.layers[layer].input.save()
    with lens.trace(corrupt):
        lens.model.layers[layer].input[:, position] = source[:, position]
        logits = lens.lm_head.output.save()
    return logits


def test_patching_written_both_ways_gives_identical_numbers(tiny):
    clean, corrupt = prompts(tiny)
    lens = phi4lab.nnsight(tiny)
    moved = 0.0
    with torch.no_grad():
        for layer in range(tiny.cfg.n_layers):
            for position in (1, 2, 8, clean.shape[1] - 1):
                ours = patch(tiny, clean, corrupt, f"blocks.{layer}.hook_resid_pre", positions=[position])
                theirs = nnsight_resid_pre_patch(lens, clean, corrupt, layer, position)
                assert torch.equal(ours, theirs), (layer, position)
                moved = max(moved, (ours - tiny(corrupt)).abs().max().item())
    assert moved > 1.0, "the patches must change the output, or equality proves nothing"


def test_partial_rotary_and_tied_embeddings_through_the_lens():
    model = phi4lab.load(config=C.scaled(d_model=64, n_layers=2, partial_rotary_factor=0.75, tie_word_embeddings=True),
                         seed=1)
    lens = phi4lab.nnsight(model)
    x = torch.randint(0, 4000, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), lens.trace(x):
        logits = lens.lm_head.output.save()
    assert torch.equal(logits, model(x))


def test_a_plain_hugging_face_model_is_refused_clearly():
    from phi4lab.model.loading import random_hf_model
    with pytest.raises(TypeError, match="TransformerBridge"):
        phi4lab.nnsight(random_hf_model(C.scaled(d_model=32, n_layers=1)))


def test_a_bf16_model_keeps_its_own_rotary_buffers_through_the_lens():
    model = phi4lab.load(config=C.scaled(d_model=64, n_layers=2), dtype=torch.bfloat16, seed=2)
    plain = shared_hf_model(model)
    assert plain.model.rotary_emb.inv_freq.dtype == torch.bfloat16, "the bridge's buffer, as it was cast"
    x = torch.randint(0, 4000, (1, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(plain(x).logits, model(x))


def test_a_split_model_is_refused(tmp_path):
    path = tmp_path / "ckpt"
    phi4lab.save(phi4lab.load(config=C.scaled(d_model=32, n_layers=2), seed=0), path)
    placed = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    split = phi4lab.load(path, device_map=placed, offload_folder=tmp_path / "offload")
    with pytest.raises(ValueError, match="split over devices"):
        phi4lab.nnsight(split)
