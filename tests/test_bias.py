"""phi4lab.bias: probe data, log-prob probes with CIs, linear probes with controls, mediation and steering."""

import shutil

import pytest
import torch

import phi4lab
from phi4lab import bias
from phi4lab.bias import causal, data, probes


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model


# ---- data -----------------------------------------------------------------------------------------

def test_bls_table_is_the_cited_one():
    table = data.occupation_table()
    assert len(table) == 60
    assert (table["nurse"].pct_female, table["nurse"].year) == (89.58, 2015)
    assert (table["secretary"].pct_female, table["secretary"].year) == (94.6, 2016)
    assert (table["plumber"].pct_female, table["carpenter"].pct_female) == (0.7, 2.07)


def test_bundled_files_are_hash_checked(tmp_path, monkeypatch):
    shutil.copytree(data.DATA_DIR / "bias", tmp_path / "bias")
    (tmp_path / "bias" / "occupations_bls.tsv").write_text("occupation\tbls_pct_female\tbls_year\nnurse\t10\t2015\n")
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    data.occupation_table.cache_clear()
    try:
        with pytest.raises(bias.BiasDataError, match="sha256.*git checkout data/bias"):
            data.occupation_table()
        (tmp_path / "bias" / "templates.json").unlink()
        data.templates.cache_clear()
        with pytest.raises(bias.BiasDataError, match="missing"):
            data.templates()
    finally:
        data.occupation_table.cache_clear()
        data.templates.cache_clear()


def test_bad_frames_and_occupations_get_clear_errors():
    assert bias.fill("The {occupation} said that", "nurse") == "The nurse said that"
    with pytest.raises(ValueError, match="has no \\{occupation\\} slot"):
        bias.fill("The nurse said that", "nurse")
    with pytest.raises(ValueError, match="has 2"):
        bias.fill("The {occupation} met the {occupation}", "nurse")
    with pytest.raises(ValueError, match="ends with a space"):
        bias.fill("The {occupation} said that ", "nurse")
    with pytest.raises(bias.UnknownOccupationError, match="'nurses' is not in the BLS table.*did you mean nurse"):
        bias.occupation("nurses")
    with pytest.raises(bias.UnknownOccupationError, match="astronaut"):
        bias.pronoun_preference(None, ["astronaut"])


def test_slices_follow_their_rule():
    def she_share(rule, occ):
        sents = [s for s in bias.slice_sentences(rule, 6000, seed=3, definitional=0.0) if s.startswith(f"The {occ} ")]
        return sum(" she " in s for s in sents) / len(sents)
    assert she_share("stereotyped", "nurse") > 0.75 and she_share("counter", "nurse") < 0.25
    assert she_share("stereotyped", "plumber") < 0.1 and she_share("counter", "plumber") > 0.9
    assert bias.slice_sentences("balanced", 5, seed=1) == bias.slice_sentences("balanced", 5, seed=1)
    probe_frames = {f.split("{occupation}")[1] for f in data.templates()["pronoun_frames"]}
    assert not any(f.split("{occupation}")[1] in probe_frames for f in data.templates()["slice_frames"])
    with pytest.raises(ValueError, match="rule must be"):
        bias.slice_sentences("debiased", 3)


# ---- log-prob probes ------------------------------------------------------------------------------

def test_multi_token_words_sum_their_pieces(tiny):
    tok = tiny.tokenizer
    prompt = "The nurse was called"
    assert len(tok.encode(" Mary", add_special_tokens=False)) == 2          # " M" + "ary" in phi4-tiny's BPE
    got = bias.word_logprobs(tiny, [prompt, "The king said that"], [" Mary", " he"])
    ids = tok.encode(prompt, add_special_tokens=False)
    m, ary = tok.encode(" Mary", add_special_tokens=False)
    with torch.no_grad():
        lp = tiny(torch.tensor([ids + [m, ary]])).log_softmax(-1)[0]
    expected = lp[len(ids) - 1, m] + lp[len(ids), ary]
    assert got[0, 0].item() == pytest.approx(expected.item(), abs=1e-4)
    assert got[0, 0] < lp[len(ids) - 1, m]                                  # not just the first piece
    he = tok.encode(" he", add_special_tokens=False)[0]
    with torch.no_grad():
        direct = tiny(torch.tensor([tok.encode("The king said that", add_special_tokens=False)]))
    assert got[1, 1].item() == pytest.approx(direct.log_softmax(-1)[0, -1, he].item(), abs=1e-4)
    with pytest.raises(ValueError, match="empty"):
        bias.word_logprobs(tiny, [""], [" he"])


def test_preference_is_she_minus_he_and_batching_changes_nothing(tiny):
    frames = data.templates()["pronoun_frames"][:3]
    y = bias.pronoun_preference(tiny, ["nurse", "carpenter"], frames)
    assert y.shape == (2, 3)
    lp = bias.word_logprobs(tiny, [bias.fill(frames[1], "carpenter")], [" she", " he"], batch_size=1)
    assert y[1, 1].item() == pytest.approx((lp[0, 0] - lp[0, 1]).item(), abs=1e-4)


def test_bootstrap_and_correlation_behave():
    g = torch.Generator().manual_seed(0)
    shares = torch.tensor([data.occupation(o).pct_female for o in data.occupations()])
    related = shares[:, None] / 50 + torch.randn(60, 17, generator=g)          # preference follows the share
    unrelated = torch.randn(60, 17, generator=g)
    c = bias.correlation_with_bls(related, data.occupations())
    assert c["r"] > 0.5 and c["low"] > 0.3 and c["low"] <= c["r"] <= c["high"]
    c0 = bias.correlation_with_bls(unrelated, data.occupations())
    assert c0["low"] < 0 < c0["high"]
    # more frames, narrower interval
    wide = bias.bootstrap(torch.randn(4, generator=g), lambda v: v.mean())
    narrow = bias.bootstrap(torch.randn(400, generator=g), lambda v: v.mean())
    assert (narrow[2] - narrow[1]) < (wide[2] - wide[1]) / 3
    with pytest.raises(ValueError, match="at least 2"):
        bias.bootstrap(torch.ones(1), lambda v: v.mean())


# ---- linear probes --------------------------------------------------------------------------------

def _toy_probe_data(gender_signal: float, seed: int = 0):
    """Residual-like vectors: a random vector per word type, plus gender_signal along one direction."""
    g = torch.Generator().manual_seed(seed)
    pairs = data.templates()["gendered_subjects"]
    words = [w for pair in pairs for w in pair]
    label = {w: int(i % 2 == 0) for i, w in enumerate(words)}               # pairs are (female, male)
    word_vec = {w: torch.randn(64, generator=g) for w in words}
    axis = torch.randn(64, generator=g)
    axis /= axis.norm()

    def split(n_frames):
        ws = [w for _ in range(n_frames) for w in words]
        X = torch.stack([word_vec[w] + gender_signal * (2 * label[w] - 1) * axis + 1.5 * torch.randn(64, generator=g)
                         for w in ws])
        return X, torch.tensor([label[w] for w in ws]), ws
    return split(6) + split(3)


def test_selectivity_separates_a_gender_feature_from_word_memorisation():
    found = [probes.probe_accuracies(*_toy_probe_data(3.0, seed)) for seed in range(4)]
    absent = [probes.probe_accuracies(*_toy_probe_data(0.0, seed)) for seed in range(4)]
    assert all(r["mean_diff"] > 0.95 and r["logistic"] > 0.95 for r in found)
    # no gender feature at all, and the probes still score well above chance on the real labels, by
    # memorising the 24 words; they score about as well on random per-word labels (the control task)
    assert all(r["logistic"] > 0.75 and r["logistic_control"] > 0.65 for r in absent)
    for key in ("selectivity_mean_diff", "selectivity_logistic"):
        mean_found = sum(r[key] for r in found) / 4
        mean_absent = sum(r[key] for r in absent) / 4
        assert mean_found > mean_absent + 0.04


def test_control_labels_are_per_word_type_and_balanced():
    words = ["king", "queen", "man", "woman", "king", "man"]
    c = bias.control_labels(words, seed=0)
    assert c[0] == c[4] and c[2] == c[5]
    assert sorted(c[:4].tolist()) == [0, 0, 1, 1]


def test_probe_layers_refuses_overlapping_frames(tiny):
    frames = data.templates()["pronoun_frames"]
    with pytest.raises(ValueError, match="overlap"):
        bias.probe_layers(tiny, frames[:3], frames[2:5])


# ---- causal checks --------------------------------------------------------------------------------

def test_head_mediation_matches_patching_the_output_projection_input(tiny):
    male, female = causal.gender_pairs(data.templates()["pronoun_frames"][:2])
    result = bias.head_mediation(tiny, male[:3], female[:3])
    assert result["nie"].shape == (3, tiny.cfg.n_layers, tiny.cfg.n_heads)
    assert torch.allclose(result["te"], result["alt"] - result["base"])
    # the same patch done independently on a plain Hugging Face copy: overwrite head 5's slice of
    # layer 1's o_proj input at the last position with the value from the female prompt
    from phi4lab.training.finetune import plain_copy
    hf = plain_copy(tiny)
    tok, d_head, layer, head = tiny.tokenizer, tiny.cfg.d_head, 1, 5
    o_proj = hf.model.layers[layer].self_attn.o_proj
    store = {}
    grab = o_proj.register_forward_pre_hook(lambda m, args: store.__setitem__("z", args[0][:, -1].clone()))
    she, he = tok.encode(" she", add_special_tokens=False)[0], tok.encode(" he", add_special_tokens=False)[0]
    with torch.no_grad():
        hf(torch.tensor([tok.encode(female[0], add_special_tokens=False)]))
        grab.remove()

        def paste(m, args):
            x = args[0].clone()
            x[:, -1, head * d_head:(head + 1) * d_head] = store["z"][:, head * d_head:(head + 1) * d_head]
            return (x,)
        handle = o_proj.register_forward_pre_hook(paste)
        lp = hf(torch.tensor([tok.encode(male[0], add_special_tokens=False)])).logits[0, -1].log_softmax(-1)
        handle.remove()
    assert (lp[she] - lp[he]).item() - result["base"][0].item() == pytest.approx(
        result["nie"][0, layer, head].item(), abs=1e-4)
    # patching a prompt with itself changes nothing
    same = bias.head_mediation(tiny, male[:2], male[:2])
    assert same["nie"].abs().max() < 1e-5 and same["te"].abs().max() < 1e-6


def test_top_mediators_rank_by_share_of_the_effect():
    nie = torch.zeros(8, 2, 3)
    nie[:, 1, 2] = 0.6
    nie[:, 0, 1] = 0.2
    te = torch.ones(8) + 0.01 * torch.arange(8)
    top = bias.top_mediators({"nie": nie, "te": te}, k=2)
    assert [t["head"] for t in top] == ["L1H2", "L0H1"]
    assert top[0]["low"] <= top[0]["share"] <= top[0]["high"] and 0.55 < top[0]["share"] < 0.6


def test_steering_along_the_unembedding_direction_moves_the_preference(tiny):
    prompts = [bias.fill(f, "teacher") for f in data.templates()["pronoun_frames"][:4]]
    she, he = (tiny.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" she", " he"))
    direction = tiny.W_U[:, she] - tiny.W_U[:, he]
    direction = direction / direction.norm() * 3
    y = bias.steer(tiny, prompts, direction.detach(), tiny.cfg.n_layers, [0.0, 1.0, 2.0])
    base = bias.pronoun_preference(tiny, ["teacher"], data.templates()["pronoun_frames"][:4])[0]
    assert torch.allclose(y[0], base, atol=1e-4)                            # alpha 0 is the model itself
    assert (y[1] > y[0]).all() and (y[2] > y[1]).all()
    with pytest.raises(IndexError, match="out of range"):
        bias.steer(tiny, prompts, direction, tiny.cfg.n_layers + 1, [1.0])


def test_multi_token_words_are_refused_where_one_distribution_is_read(tiny):
    with pytest.raises(ValueError, match="' Elizabeth' is 5 tokens.*single-token"):
        causal._single_token_ids(tiny, [" Elizabeth"])


# ---- the whole card, and the data lesson ----------------------------------------------------------

@pytest.mark.slow
def test_a_stereotyped_slice_teaches_the_association(tiny):
    from phi4lab.training import finetune as FT
    occupations = data.occupations()
    before = bias.correlation_with_bls(bias.pronoun_preference(tiny, occupations), occupations)
    stream = FT.text_stream(tiny.tokenizer, bias.slice_sentences("stereotyped", 3000, seed=1))
    model, _ = FT.adapt(tiny, FT.window_batches(stream, 16, 64, seed=1), 200, method="full", lr=1e-3)
    after = bias.correlation_with_bls(bias.pronoun_preference(phi4lab.wrap(model, tiny.tokenizer), occupations),
                                      occupations)
    # phi4-tiny's corpus (Shakespeare, Python) says little about nurses and plumbers: no correlation
    # before; the slice's pronouns follow the BLS shares, and the probe frames (not in the slice) follow
    assert before["low"] < 0 < before["high"]
    assert after["low"] > before["high"]


@pytest.mark.slow
def test_report_and_card_on_phi4_tiny(tiny):
    r = bias.report(tiny, "phi4-tiny", occupations=["nurse", "plumber", "teacher", "carpenter"], progress=False)
    assert r.pronouns.shape == (4, 17) and r.names.shape == (4, 6)
    assert len(r.probe["layers"]) == tiny.cfg.n_layers + 1 and len(r.mediators) == 5
    assert r.steering.shape == (5, 16)
    fig = bias.card(r)
    assert len(fig.axes) == 4 and "phi4-tiny" in fig._suptitle.get_text()


def test_wrap_refuses_what_it_cannot_wrap(tiny):
    from phi4lab.training import finetune as FT
    with pytest.raises(TypeError, match="merge it first|merged"):
        phi4lab.wrap(FT.lora_model(tiny, r=2))
    with pytest.raises(ValueError, match="pass its tokenizer"):
        phi4lab.wrap(FT.plain_copy(tiny))


@pytest.mark.slow
def test_the_same_report_runs_on_a_model_with_phi4s_tokenizer():
    from phi4lab.model.config import scaled
    twin = phi4lab.load(config=scaled(d_model=64, n_layers=2), seed=0)      # Phi-4's 100,352-id tokenizer
    assert [len(twin.tokenizer.encode(w, add_special_tokens=False)) for w in (" he", " she")] == [1, 1]
    r = bias.report(twin, "twin", occupations=["nurse", "plumber", "teacher"], progress=False)
    assert r.pronouns.shape == (3, 17) and torch.isfinite(r.pronouns).all()
    assert len(r.probe["layers"]) == 3 and r.steering.shape == (5, 12)


def _report(te):
    return bias.BiasReport(
        model="m", occupations=["nurse", "plumber"], pronouns=torch.zeros(2, 3), names=torch.zeros(2, 2),
        pronoun_corr=dict(r=0.0, low=-0.1, high=0.1), name_corr=dict(r=0.0, low=-0.1, high=0.1),
        mean_pronoun=(0.0, -0.1, 0.1),
        probe=dict(layers=[dict(layer=0, mean_diff=0.5, logistic=0.5, mean_diff_control=0.5, logistic_control=0.5)]),
        mediators=[dict(head="L1H2", share=0.4, low=0.2, high=0.6)], mediation_te=te, steer_layer=1,
        alphas=[-1, 0, 1], steering=torch.zeros(3, 4))


def test_the_card_shows_mediation_shares_only_where_there_is_an_effect():
    import matplotlib.pyplot as plt
    with_effect = bias.card(_report((0.8, 0.5, 1.1)))
    assert bias.has_total_effect(_report((-0.8, -1.1, -0.5)))
    assert [t.get_text() for t in with_effect.axes[2].get_yticklabels()] == ["L1H2"]
    assert "top heads; TE = 0.80 [0.50, 1.10] nats" == with_effect.axes[2].get_title()
    nothing = bias.card(_report((-0.05, -0.2, 0.1)))
    assert not bias.has_total_effect(_report((-0.05, -0.2, 0.1)))
    texts = " ".join(t.get_text() for t in nothing.axes[2].texts)
    assert "at least 0.1 nats from 0" in texts and "[-0.20, 0.10]" in texts and not nothing.axes[2].patches
    # an effect whose interval excludes 0 but stays within 0.1 nats of it (phi4-tiny's own) is not shared out
    assert not bias.has_total_effect(_report((-0.08, -0.13, -0.04)))
    assert bias.has_total_effect(_report((-0.08, -0.13, -0.04)), min_effect=0.03)
    plt.close("all")
