"""Sparse autoencoders: the forward pass, training on data whose features are known, files, and evaluation."""

import json

import pytest
import torch

import phi4lab
from phi4lab.dictionaries import SparseAutoencoder, activations, evaluate, files, training
from phi4lab.model.config import scaled
from phi4lab.model.memory import InsufficientMemoryError


def exact_sae(d: int, kind: type = SparseAutoencoder) -> SparseAutoencoder:
    """A TopK SAE that reconstructs any x exactly: latents for +e_i and -e_i, k = d (x = relu(x) - relu(-x)).

    kind=Transcoder gives a transcoder that copies its input the same way."""
    sae = kind(d, 2 * d, k=d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.W_enc.copy_(torch.cat([eye, -eye]).T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def toy_features(n=20_000, d=32, n_features=64, per_sample=3, seed=0):
    """Activations built from known unit features, a few at a time, with positive magnitudes."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d, generator=g)
    features = features / features.norm(dim=-1, keepdim=True)
    which = torch.rand(n, n_features, generator=g).argsort(-1)[:, :per_sample]
    coeff = torch.zeros(n, n_features).scatter(1, which, torch.rand(n, per_sample, generator=g) + 0.5)
    return coeff @ features, features


def test_topk_fires_exactly_k_and_the_sparse_decode_is_the_dense_one():
    sae = SparseAutoencoder(16, 64, "topk", k=5, seed=1)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)                                   # every pre-activation positive: exactly k fire
    x = torch.randn(7, 3, 16)
    x_hat, z = sae(x)
    assert z.shape == (7, 3, 64) and ((z > 0).sum(-1) == 5).all()
    torch.testing.assert_close(x_hat, sae.decode(z))
    values, indices = sae.encode_topk(x)
    torch.testing.assert_close(sae.decode_topk(values, indices), x_hat)
    relu = SparseAutoencoder(16, 64, "relu")
    assert relu(x)[1].min() >= 0


def test_the_exact_sae_reconstructs_and_evaluates_perfectly():
    sae = exact_sae(8)
    x = torch.randn(100, 8)
    torch.testing.assert_close(sae(x)[0], x)
    report = evaluate.reconstruction(sae, x)
    assert report.fvu < 1e-10 and report.l0 <= 8 and report.dead == 0.0


def test_training_recovers_known_features():
    """On data made of 64 known directions, 3 at a time, the decoder should find the directions."""
    x, features = toy_features()
    sae, history = training.train_sae(x, training.SAEConfig(d_sae=128, k=3, epochs=4, batch_size=256, lr=3e-3,
                                                             dead_after=5_000), progress=False)
    assert history.fvu[-1] < history.fvu[0] / 3
    rows = sae.W_dec.detach()
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(128), atol=1e-5, rtol=0)     # on the sphere
    best = (features @ rows.T).amax(-1)                                                    # each feature's best match
    assert (best > 0.9).float().mean() > 0.9, best
    report = evaluate.reconstruction(sae, x)
    assert report.fvu < 0.1 and report.l0 <= 3


def test_training_is_seeded():
    x, _ = toy_features(n=2000)
    cfg = training.SAEConfig(d_sae=64, k=3, epochs=1, batch_size=256)
    a, _ = training.train_sae(x, cfg, progress=False)
    b, _ = training.train_sae(x, cfg, progress=False)
    assert torch.equal(a.W_dec, b.W_dec)


def test_bad_configurations_and_data_are_refused():
    with pytest.raises(ValueError, match="0 < k <= d_sae"):
        SparseAutoencoder(8, 16, "topk", k=17)
    with pytest.raises(ValueError, match="kind must be one of"):
        SparseAutoencoder(8, 16, "jumprelu")
    with pytest.raises(ValueError, match="NaN or infinity"):
        training.train_sae(torch.full((10, 4), float("nan")), training.SAEConfig(d_sae=8, k=2), progress=False)
    with pytest.raises(ValueError, match=r"\[n_samples, d_in\]"):
        training.train_sae(torch.zeros(10), training.SAEConfig(d_sae=8, k=2), progress=False)


def test_files_round_trip_and_refuse_what_does_not_match(tmp_path):
    sae = SparseAutoencoder(8, 32, "topk", k=4, seed=3)
    folder = files.save_sae(sae, tmp_path / "sae", hook_name="blocks.2.hook_resid_post", model_name="phi4-tiny",
                            trained_on_tokens=123)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 32 and cfg["architecture"] == "topk" and cfg["k"] == 4
    assert cfg["hook_layer"] == 2 and cfg["trained_on_tokens"] == 123
    back, _ = files.load_sae(folder)
    x = torch.randn(5, 8)
    torch.testing.assert_close(back(x)[0], sae(x)[0])
    with pytest.raises(files.SAEFileError, match="sha256"):
        files.load_sae(folder, sha256="0" * 64)
    cfg["d_sae"] = 64
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(files.SAEFileError, match=r"W_enc is \[8, 32\], the config says \[8, 64\]"):
        files.load_sae(folder)
    (folder / "cfg.json").write_text("[1, 2]")
    with pytest.raises(files.SAEFileError, match="not an object"):
        files.load_sae(folder)
    (folder / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 32}))
    with pytest.raises(files.SAEFileError, match="not a readable safetensors file"):
        files.load_sae(folder)
    with pytest.raises(files.SAEFileError, match="needs cfg.json and sae_weights.safetensors"):
        files.load_sae(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def small_model():
    return phi4lab.load(config=scaled(d_model=32, n_layers=2), seed=0)


def test_collect_reads_the_hook_and_refuses_what_cannot_fit(small_model):
    tokens = torch.randint(0, 1000, (5, 9), generator=torch.Generator().manual_seed(0))
    got = activations.collect(small_model, tokens, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                              batch_size=2, progress=False)
    _, cache = small_model.run_with_cache(tokens)
    torch.testing.assert_close(got["blocks.1.hook_resid_post"], cache["blocks.1.hook_resid_post"][:, 1:].reshape(-1, 32))
    with pytest.raises(InsufficientMemoryError, match="Nothing was allocated|activations"):
        activations.collect(small_model, tokens, "blocks.0.hook_resid_post", memory_budget_bytes=100, progress=False)
    with pytest.raises(KeyError):
        activations.collect(small_model, tokens, "blocks.0.hook_nothing", progress=False)


def test_loss_recovered_is_one_for_an_exact_sae_and_zero_ablation_costs(small_model):
    tokens = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(1))
    sae = exact_sae(32)
    clean, spliced, zeroed = evaluate.loss_recovered(small_model, sae, tokens, "blocks.0.hook_resid_post")
    assert abs(clean - spliced) < 1e-4 and zeroed != clean
    report = evaluate.evaluate(small_model, sae, torch.randn(50, 32), tokens, "blocks.0.hook_resid_post")
    assert abs(report.loss_recovered - 1) < 1e-3


@pytest.mark.slow
def test_the_toy_model_stores_more_features_than_dimensions_only_when_they_are_sparse():
    from phi4lab.dictionaries import toy

    importance = 0.9 ** torch.arange(5)
    result = toy.train_toy(5, 2, [1.0, 0.03], importance, steps=2000)
    norms, overlap = toy.feature_norms(result.model), toy.interference(result.model)
    dense, sparse = norms[0] > 0.5, norms[1] > 0.5
    assert dense.tolist() == [True, True, False, False, False]       # the 2 most important, like PCA
    assert (overlap[0, :2] < 0.05).all()                               # each with a direction of its own
    assert sparse.sum() > 2 and (overlap[1, sparse] > 0.5).all()       # more features than dimensions: overlapping
    corners = toy.phase_diagram([0.03, 1.0], [0.1, 10.0], steps=1500)  # rows: importance of feature 2; cols: density
    assert corners[0, 1] == toy.NOT_STORED and corners[1, 1] == toy.DEDICATED
    assert corners[0, 0] == toy.SUPERPOSITION and corners[1, 0] == toy.SUPERPOSITION
