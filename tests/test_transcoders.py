"""Transcoders: an MLP's input -> its output, trained, stored, spliced in; and the shipped four measured again.

The shipped-file tests measure what the build recorded in each cfg.json on the validation split
(neither phi4-tiny nor the transcoders saw it): FVU of the MLP's output, L0, dead latents and the
loss recovered when the transcoder's prediction replaces the MLP.
"""

import json

import pytest
import torch
from test_dictionaries import exact_sae

import phi4lab
from phi4lab.dictionaries import activations, evaluate, files, training
from phi4lab.dictionaries.sae import SparseAutoencoder, Transcoder
from phi4lab.model.config import scaled


def known_map(n=20_000, d_in=32, d_out=16, n_features=48, per_sample=3, seed=0):
    """Inputs made of known input directions, 3 at a time; targets the same coefficients on other directions."""
    g = torch.Generator().manual_seed(seed)
    reads = torch.nn.functional.normalize(torch.randn(n_features, d_in, generator=g), dim=-1)
    writes = torch.nn.functional.normalize(torch.randn(n_features, d_out, generator=g), dim=-1)
    which = torch.rand(n, n_features, generator=g).argsort(-1)[:, :per_sample]
    coeff = torch.zeros(n, n_features).scatter(1, which, torch.rand(n, per_sample, generator=g) + 0.5)
    return coeff @ reads, coeff @ writes, writes


def test_a_transcoder_learns_a_sparse_map_between_two_spaces():
    x, y, writes = known_map()
    tc, history = training.train_sae(x, training.SAEConfig(d_sae=96, k=3, epochs=8, batch_size=256, lr=3e-3,
                                                            dead_after=5_000), targets=y, progress=False)
    assert isinstance(tc, Transcoder) and tc.W_dec.shape == (96, 16) and tc.b_dec.shape == (16,)
    report = evaluate.reconstruction(tc, x, targets=y)
    assert report.fvu < 0.1 and report.l0 <= 3, report           # 0.06 measured
    # its decoder found the output directions (an SAE of x could not: they live in another space)
    best = (writes @ tc.W_dec.detach().T).amax(-1)
    assert (best > 0.9).float().mean() > 0.9, best               # 96% measured
    # the same inputs as an SAE's target would be a different, worse job for this decoder
    assert evaluate.reconstruction(tc, x, targets=x[:, :16]).fvu > 0.5


def test_a_transcoder_does_not_centre_its_input_by_its_output_bias():
    tc = Transcoder(4, 8, 3, k=2, seed=0)
    with torch.no_grad():
        tc.b_dec.fill_(5.0)
    x = torch.randn(6, 4)
    torch.testing.assert_close(tc.pre_activations(x), x @ tc.W_enc + tc.b_enc)
    sae = SparseAutoencoder(4, 8, k=2)
    with torch.no_grad():
        sae.b_dec.fill_(5.0)
    torch.testing.assert_close(sae.pre_activations(x), (x - 5.0) @ sae.W_enc + sae.b_enc)


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match="one row per activation"):
        training.train_sae(torch.randn(10, 4), training.SAEConfig(d_sae=8, k=2), targets=torch.randn(9, 4),
                           progress=False)
    with pytest.raises(ValueError, match="targets hold NaN"):
        training.train_sae(torch.randn(10, 4), training.SAEConfig(d_sae=8, k=2),
                           targets=torch.full((10, 4), float("inf")), progress=False)


def test_transcoder_files_round_trip_in_float16(tmp_path):
    tc = Transcoder(8, 32, 6, k=4, seed=3)
    with pytest.raises(ValueError, match="hook_name_out"):
        files.save_sae(tc, tmp_path / "x", hook_name="blocks.0.mlp.hook_in", model_name="m")
    folder = files.save_sae(tc, tmp_path / "tc", hook_name="blocks.0.mlp.hook_in",
                            hook_name_out="blocks.0.hook_mlp_out", model_name="m", dtype=torch.float16)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_out"] == 6 and cfg["hook_name_out"] == "blocks.0.hook_mlp_out" and cfg["dtype"] == "float16"
    assert cfg["apply_b_dec_to_input"] is False and cfg["transcoder"] is True
    back, _ = files.load_sae(folder)
    assert isinstance(back, Transcoder) and back.W_dec.dtype == torch.float32
    torch.testing.assert_close(back.W_dec, tc.W_dec.detach().half().float())
    x = torch.randn(5, 8)
    assert back(x)[0].shape == (5, 6)


@pytest.fixture(scope="module")
def small_model():
    return phi4lab.load(config=scaled(d_model=32, n_layers=2), seed=0)


def test_splicing_a_transcoder_feeds_it_the_mlp_input(small_model):
    """A transcoder that copies its input (±e_i latents, k = d) makes the MLP's output equal its normalised
    input: the spliced loss must equal the loss of a run that writes mlp.hook_in into hook_mlp_out by hand."""
    tc = exact_sae(32, Transcoder)
    reads, writes = evaluate.transcoder_hooks(0)
    tokens = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="give input_hook"):
        evaluate.loss_recovered(small_model, tc, tokens, writes)
    clean, spliced, zeroed = evaluate.loss_recovered(small_model, tc, tokens, writes, input_hook=reads)
    seen = {}

    def keep(act, hook):
        seen["x"] = act

    def copy_in(act, hook):
        out = act.clone()
        out[:, 1:] = seen["x"][:, 1:]
        return out
    from phi4lab.training.loop import next_token_losses
    logits = small_model.run_with_hooks(tokens, fwd_hooks=[(reads, keep), (writes, copy_in)])
    by_hand = next_token_losses(logits, tokens)[:, 1:].mean().item()
    assert abs(spliced - by_hand) < 1e-5 and abs(spliced - clean) > 1e-3 and zeroed != clean


# ---------------------------------------------------------------------------- the shipped transcoders

@pytest.mark.slow
def test_shipped_transcoders_do_what_their_configs_say(tiny_model):
    from phi4lab.recipes import saes, transcoders

    _, val_tokens = saes.corpus_windows(tiny_model)
    hooks = [name for layer in transcoders.LAYERS for name in evaluate.transcoder_hooks(layer)]
    val = activations.collect(tiny_model, val_tokens, hooks, progress=False)
    for layer in transcoders.LAYERS:
        tc, cfg = files.shipped_transcoder(layer)
        reads, writes = evaluate.transcoder_hooks(layer)
        assert (cfg["hook_name"], cfg["hook_name_out"]) == (reads, writes)
        report = evaluate.evaluate(tiny_model, tc, val[reads], val_tokens, writes, targets=val[writes],
                                   input_hook=reads)
        # at build: FVU 0.050, 0.036, 0.115, 0.053; loss recovered 99.8%, 99.8%, 91.6%, 88.7%
        assert report.l0 <= 32 and report.fvu <= 0.15 and report.loss_recovered >= 0.85, (layer, report)
        assert abs(cfg["validation"]["fvu"] - report.fvu) < 2e-3
        assert abs(cfg["validation"]["loss_recovered"] - report.loss_recovered) < 2e-3
        assert abs(cfg["validation"]["dead"] - report.dead) < 2e-3


def test_every_layer_has_a_pinned_transcoder():
    from phi4lab.recipes import transcoders

    assert set(files.SHIPPED_TRANSCODERS) == set(transcoders.LAYERS)
    got = files.shipped_transcoders()
    assert sorted(got) == [0, 1, 2, 3] and all(isinstance(t, Transcoder) and t.k == 32 for t in got.values())
    with pytest.raises(KeyError, match="no transcoder ships for layer 4"):
        files.shipped_transcoder(4)
