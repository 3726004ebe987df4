"""phi4lab.config: Phi-4's numbers, and arithmetic that must equal real models."""

import pytest
import torch
from transformers import Phi3ForCausalLM

from phi4lab.model import config as C


def test_phi4_parameter_count_is_exact():
    assert C.count_parameters(C.PHI4) == 14_659_507_200


def test_phi4_count_matches_a_meta_device_model():
    with torch.device("meta"):
        model = Phi3ForCausalLM(C.PHI4)
    assert sum(p.numel() for p in model.parameters()) == C.count_parameters(C.PHI4)


def test_phi4_shape():
    cfg = C.PHI4
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (40, 5120, 17920)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, C.head_dim(cfg)) == (40, 10, 128)
    assert cfg.vocab_size == 100352 and cfg.max_position_embeddings == 16384
    assert cfg.rope_parameters["rope_theta"] == 250000
    assert cfg.rms_norm_eps == 1e-5 and cfg.tie_word_embeddings is False
    assert cfg.sliding_window is None


def test_phi4_bytes_and_flops():
    assert C.weight_bytes(C.PHI4, torch.bfloat16) == 29_319_014_400
    assert C.weight_bytes(C.PHI4, torch.float32) == 2 * 29_319_014_400
    assert C.kv_cache_bytes_per_token(C.PHI4, torch.bfloat16) == 204_800  # 200 KiB
    # all linear layers incl. lm_head, embedding lookup excluded
    assert C.forward_flops_per_token(C.PHI4) == 2 * 14_145_290_240
    assert C.forward_flops_per_token(C.PHI4, context=4096) - C.forward_flops_per_token(C.PHI4) == 4 * 40 * 5120 * 4096


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"d_model": 64, "n_layers": 3, "n_kv_heads": 1},
        {"num_attention_heads": 4, "num_key_value_heads": 4, "d_model": 32},
        {"hidden_size": 45, "head_dim": 8, "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 158},
        {"vocab_size": 1000, "tie_word_embeddings": True},
    ],
)
def test_small_counts_equal_instantiated_models(kwargs):
    cfg = C.scaled(**kwargs)
    model = Phi3ForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == C.count_parameters(cfg)
    kv = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith("qkv_proj"))
    hd = C.head_dim(cfg)
    assert kv == cfg.num_hidden_layers * cfg.hidden_size * hd * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads)


def test_scaled_keeps_phi4_ratios():
    cfg = C.scaled(d_model=256, n_layers=4, n_kv_heads=2)
    assert cfg.num_attention_heads == 4 * cfg.num_key_value_heads == 8
    assert cfg.intermediate_size == 3.5 * cfg.hidden_size
    assert cfg.rope_parameters["rope_theta"] == 250000 and cfg.rms_norm_eps == 1e-5
    assert cfg.tie_word_embeddings is False and cfg.hidden_act == "silu"
    assert cfg.vocab_size == C.PHI4.vocab_size


def test_scaled_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="divisible"):
        C.scaled(d_model=100, n_kv_heads=3)
    with pytest.raises(ValueError, match="even"):
        C.scaled(hidden_size=36, num_attention_heads=4, num_key_value_heads=1)
    with pytest.raises(TypeError, match="unknown field"):
        C.scaled(hidden=3)


def test_gqa_saves_kv_cache():
    no_gqa = C.scaled(d_model=128, num_attention_heads=8, num_key_value_heads=8)
    gqa = C.scaled(d_model=128, n_kv_heads=2)
    assert C.kv_cache_bytes_per_token(no_gqa) == 4 * C.kv_cache_bytes_per_token(gqa)
