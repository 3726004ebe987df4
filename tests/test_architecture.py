"""Phi-4 from scratch against Hugging Face's Phi3ForCausalLM: each piece, then the whole model."""

import pytest
import torch
from transformers.models.phi3 import modeling_phi3

import phi4lab
from phi4lab.model import config as C
from phi4lab.model.loading import random_hf_model
from phi4lab.scratch import architecture as A

SHAPES = {
    "phi4-ratios": C.scaled(d_model=64, n_layers=2),
    "one-kv-head": C.scaled(d_model=64, n_layers=2, n_kv_heads=1),
    "kv-equals-q": C.scaled(d_model=64, n_layers=2, num_attention_heads=4, num_key_value_heads=4),
    "odd-width": C.scaled(hidden_size=45, head_dim=8, num_attention_heads=4, num_key_value_heads=1, intermediate_size=158),
}


def randomise_norms(model, seed=0):
    """A fresh model's norm weights are all 1, which would hide a forgotten weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model


def capture(model, module, tokens):
    """(args, kwargs, output) of one call of `module` during model(tokens)."""
    seen = {}

    def hook(mod, args, kwargs, out):
        seen.update(args=args, kwargs=kwargs, out=out)
    handle = module.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        model(tokens)
    handle.remove()
    return seen


@pytest.fixture(scope="module")
def hf():
    return randomise_norms(random_hf_model(SHAPES["phi4-ratios"], seed=1))


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 1000, (2, 11), generator=torch.Generator().manual_seed(0))


def test_rms_norm_matches_phi3_rms_norm(hf, tokens):
    norm = hf.model.layers[0].input_layernorm
    x = torch.randn(2, 5, 64) * 3
    torch.testing.assert_close(A.rms_norm(x, norm.weight, norm.variance_epsilon), norm(x))
    bf = x.bfloat16()
    torch.testing.assert_close(A.rms_norm(bf, norm.weight.bfloat16(), norm.variance_epsilon),
                               norm.to(torch.bfloat16)(bf))
    norm.float()


def test_rotary_angles_and_rotation_match(hf, tokens):
    T, hd = tokens.shape[1], C.head_dim(hf.config)
    x = torch.randn(2, 4, T, hd)
    cos_hf, sin_hf = hf.model.rotary_emb(x, torch.arange(T)[None])
    cos, sin = A.rotary_cos_sin(torch.arange(T), hd, 250_000)
    torch.testing.assert_close(cos, cos_hf[0])
    torch.testing.assert_close(sin, sin_hf[0])
    k = torch.randn(2, 4, T, hd)
    q_hf, k_hf = modeling_phi3.apply_rotary_pos_emb(x, k, cos_hf, sin_hf)
    torch.testing.assert_close(A.apply_rotary(x, cos, sin), q_hf)
    torch.testing.assert_close(A.apply_rotary(k, cos, sin), k_hf)


def test_mlp_matches_phi3_mlp(hf):
    mlp = hf.model.layers[1].mlp
    x = torch.randn(2, 5, 64)
    torch.testing.assert_close(A.gated_mlp(x, mlp.gate_up_proj.weight, mlp.down_proj.weight), mlp(x))


def test_attention_and_block_match_on_the_models_own_inputs(hf, tokens):
    cfg = hf.config
    layer = hf.model.layers[1]
    hd = C.head_dim(cfg)
    cos, sin = A.rotary_cos_sin(torch.arange(tokens.shape[1]), hd, 250_000)
    # the attention sub-layer, fed what the real model fed it
    seen = capture(hf, layer.self_attn, tokens)
    x = seen["kwargs"].get("hidden_states", seen["args"][0] if seen["args"] else None)
    ours = A.Attention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, hd)
    ours.load_state_dict({k: v for k, v in layer.self_attn.state_dict().items()})
    torch.testing.assert_close(ours(x, cos, sin), seen["out"][0], atol=1e-5, rtol=1e-4)
    # the whole block
    seen = capture(hf, layer, tokens)
    x = seen["kwargs"].get("hidden_states", seen["args"][0] if seen["args"] else None)
    block = A.Block(cfg)
    block.load_state_dict(layer.state_dict())
    out = seen["out"][0] if isinstance(seen["out"], tuple) else seen["out"]
    torch.testing.assert_close(block(x, cos, sin), out, atol=1e-5, rtol=1e-4)


def test_split_qkv_takes_q_then_k_then_v():
    H, KV, d = 4, 2, 3
    qkv = torch.arange((H + 2 * KV) * d, dtype=torch.float)[None, None].expand(1, 2, -1)
    q, k, v = A.split_qkv(qkv, H, KV, d)
    assert q.shape == (1, H, 2, d) and k.shape == v.shape == (1, KV, 2, d)
    assert q[0, 0, 0, 0] == 0 and k[0, 0, 0, 0] == H * d and v[0, 0, 0, 0] == (H + KV) * d


def test_repeat_kv_matches_hugging_face():
    x = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(A.repeat_kv(x, 4), modeling_phi3.repeat_kv(x, 4))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_whole_model_logits_match_hugging_face(name, tokens):
    hf = randomise_norms(random_hf_model(SHAPES[name], seed=2), seed=3)
    ours = A.Phi4.from_hf(hf)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf(tokens).logits, atol=1e-4, rtol=1e-4)


def test_using_runs_the_modules_with_other_pieces_and_restores_ours(hf, tokens):
    ours = A.Phi4.from_hf(hf)
    original = A.causal_attention
    calls = []

    def counting_attention(q, k, v):
        calls.append(q.shape)
        return original(q, k, v)

    def no_normalisation(x, weight, eps):
        return x * weight

    def failing_mlp(x, gate_up_weight, down_weight):
        raise RuntimeError("a learner's bug")

    with torch.no_grad():
        with A.using(causal_attention=counting_attention):
            same = ours(tokens)
        assert len(calls) == hf.config.num_hidden_layers    # one call per block: the model ran it
        torch.testing.assert_close(same, hf(tokens).logits, atol=1e-4, rtol=1e-4)
        with A.using(rms_norm=no_normalisation):
            broken = ours(tokens)
        assert not torch.allclose(broken, same, atol=1e-2)
        with pytest.raises(RuntimeError, match="learner's bug"), A.using(gated_mlp=failing_mlp):
            ours(tokens)
        assert A.causal_attention is original and A.gated_mlp.__module__ == A.__name__   # put back
        torch.testing.assert_close(ours(tokens), same)
    with pytest.raises(KeyError, match="no piece called softmax"):
        with A.using(softmax=torch.softmax):
            pass
    with pytest.raises(TypeError, match="rms_norm must be functions"):
        with A.using(rms_norm=1.0):
            pass


def test_trained_phi4_tiny_through_the_bridge():
    bridge = phi4lab.load("phi4-tiny")
    ours = A.Phi4.from_hf(bridge)
    x = torch.randint(0, 4000, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), bridge(x), atol=1e-4, rtol=1e-4)


def test_refuses_what_it_does_not_implement(tokens):
    cfg = C.scaled(d_model=64, n_layers=1)
    cfg.rope_parameters = dict(cfg.rope_parameters, rope_type="longrope")
    with pytest.raises(ValueError, match="LongRoPE"):
        A.Phi4(cfg)
    model = A.Phi4(C.scaled(d_model=64, n_layers=1))
    with pytest.raises(ValueError, match="exceed the context of 512"):
        model(torch.zeros(1, 513, dtype=torch.long))


def test_family_parameter_counts_match_the_published_configs():
    # counts computed from each model's config.json (reference: phi4-facts §5)
    expected = {"phi-3-mini-4k": 3_821_079_552, "phi-3-medium-4k": 13_960_238_080,
                "phi-4": 14_659_507_200, "phi-4-mini": 3_836_021_760}
    assert {name: C.count_parameters(cfg) for name, cfg in C.FAMILY.items()} == expected
    # Phi-4 is Phi-3-medium's shape with the bigger vocabulary: the whole difference is in the embeddings
    diff = C.count_parameters(C.FAMILY["phi-4"]) - C.count_parameters(C.FAMILY["phi-3-medium-4k"])
    assert diff == 2 * (100_352 - 32_064) * 5120


def test_partial_rotary_and_tied_embeddings_as_in_phi4_mini():
    """Phi-4-mini rotates 3/4 of each head (partial_rotary_factor 0.75) and ties its embeddings; a twin
    with those settings matches Hugging Face, and not when the whole head is rotated instead."""
    cfg = C.scaled(d_model=64, n_layers=2, partial_rotary_factor=0.75, tie_word_embeddings=True)
    assert C.rotary_dim(cfg) == 6 and C.head_dim(cfg) == 8
    assert C.rotary_dim(C.FAMILY["phi-4-mini"]) == 96 and C.rotary_dim(C.PHI4) == 128
    hf = random_hf_model(cfg, seed=3)
    ours = A.Phi4.from_hf(hf)
    x = torch.randint(0, 4000, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = hf(x).logits
        torch.testing.assert_close(ours(x), reference, atol=1e-4, rtol=1e-4)
        assert ours.lm_head.weight.data_ptr() != 0 and torch.equal(ours.lm_head.weight, ours.embed_tokens.weight)
        whole = C.scaled(d_model=64, n_layers=2, tie_word_embeddings=True)
        wrong = A.Phi4(whole)
        wrong.load_state_dict(ours.state_dict())
        assert (wrong(x) - reference).abs().max() > 1e-3, "rotating the whole head must differ"
