"""Cache planning: exact shapes and bytes from the config, refusals before allocating."""

import pytest
import torch

import phi4lab
from phi4lab.analysis.cache_plan import plan_cache, run_with_plan
from phi4lab.model import config as C
from phi4lab.model.memory import InsufficientMemoryError


def measured_bytes(cache) -> int:
    """Bytes the cache really holds: each storage once, however many names point at it."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in cache.values()}
    return sum(storages.values())


@pytest.mark.parametrize("cfg", [
    C.scaled(d_model=32, n_layers=1),
    C.scaled(d_model=48, n_layers=3, n_kv_heads=1),
    C.scaled(d_model=64, n_layers=4, num_attention_heads=4, num_key_value_heads=4, vocab_size=500),
], ids=["1-layer", "3-layer-gqa", "4-layer-mha"])
@pytest.mark.parametrize("seq, batch", [(5, 1), (17, 3)])
def test_plan_matches_the_real_cache(cfg, seq, batch):
    model = phi4lab.load(config=cfg, seed=0, tokenizer=phi4lab.model.tokenizer.phi4_tokenizer())
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq))
    plan = plan_cache(model, seq, batch)
    _, cache = run_with_plan(model, tokens, plan)
    assert set(plan.names) == set(cache.keys())
    for name in plan.names:
        assert plan.bytes_per_hook[name] == cache[name].nbytes, name
    assert plan.total_bytes == measured_bytes(cache)


def test_a_partial_plan_caches_only_what_it_names():
    cfg = C.scaled(d_model=32, n_layers=2)
    model = phi4lab.load(config=cfg, seed=0)
    plan = plan_cache(model, 9, names=lambda n: n.endswith("hook_pattern"))
    assert plan.names == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    assert plan.total_bytes == 2 * 1 * cfg.num_attention_heads * 9 * 9 * 4
    _, cache = run_with_plan(model, torch.zeros(1, 9, dtype=torch.long), plan)
    assert sorted(cache.keys()) == plan.names
    assert measured_bytes(cache) == plan.total_bytes


def test_bf16_plan_matches_a_bf16_model():
    """Most activations halve in bf16, but not all: RMSNorm normalises in fp32, and the probe sees it."""
    cfg = C.scaled(d_model=32, n_layers=2)
    model = phi4lab.load(config=cfg, seed=0, dtype=torch.bfloat16)
    plan = plan_cache(model, 12)
    assert plan.dtype == torch.bfloat16
    _, cache = run_with_plan(model, torch.zeros(1, 12, dtype=torch.long), plan)
    assert plan.total_bytes == measured_bytes(cache)
    fp32 = plan_cache(cfg, 12)
    assert plan.bytes_per_hook["blocks.0.attn.hook_pattern"] * 2 == fp32.bytes_per_hook["blocks.0.attn.hook_pattern"]
    assert plan.bytes_per_hook["blocks.0.ln1.hook_normalized"] == fp32.bytes_per_hook["blocks.0.ln1.hook_normalized"]


def test_full_size_phi4_numbers():
    pattern = lambda n: n.endswith("hook_pattern")
    one = plan_cache(C.PHI4, 2048, names=pattern, dtype=torch.bfloat16)
    assert one.total_bytes == 40 * 40 * 2048 * 2048 * 2           # layers x heads x seq^2 x bf16
    full = plan_cache(C.PHI4, 2048, dtype=torch.bfloat16)
    assert full.total_bytes > one.total_bytes > 10 * 2**30
    assert plan_cache(C.PHI4, 512, dtype=torch.bfloat16).total_bytes < full.total_bytes / 4


def test_refuses_before_allocating():
    model = phi4lab.load(config=C.scaled(d_model=32, n_layers=2), seed=0)
    plan = plan_cache(model, 8)
    with pytest.raises(InsufficientMemoryError, match="hook_pattern"):
        run_with_plan(model, torch.zeros(1, 8, dtype=torch.long), plan, budget_bytes=1000)


def test_bad_requests():
    cfg = C.scaled(d_model=32, n_layers=2)
    with pytest.raises(KeyError, match="blocks.0.attn.hook_pattern"):
        plan_cache(cfg, 8, names=["blocks.0.attn.hook_patern"])
    with pytest.raises(ValueError, match="context of 512"):
        plan_cache(cfg, 513)
    with pytest.raises(ValueError, match="empty prompt"):
        plan_cache(cfg, 0)
    model = phi4lab.load(config=cfg, seed=0)
    with pytest.raises(ValueError, match="make a plan"):
        run_with_plan(model, torch.zeros(1, 9, dtype=torch.long), plan_cache(model, 8))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(seq_len=8, batch=-3), ValueError, "batch must be at least 1, got -3"),
    (dict(seq_len=8, batch=0), ValueError, "batch must be at least 1, got 0"),
    (dict(seq_len=8.5), TypeError, "seq_len must be a whole number of tokens, got 8.5"),
    (dict(seq_len=8, batch=True), TypeError, "batch must be a whole number"),
    (dict(seq_len=8, names="blocks.0.attn.hook_pattern"), TypeError, r"for one hook, pass \['blocks.0.attn"),
])
def test_impossible_plans_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        plan_cache(C.scaled(d_model=32, n_layers=2), **kwargs)


def test_a_plan_runs_only_on_the_model_it_was_made_for_and_only_on_its_vocabulary():
    small = phi4lab.load(config=C.scaled(d_model=32, n_layers=2), seed=0)
    other = phi4lab.load(config=C.scaled(d_model=32, n_layers=3), seed=0)
    plan = plan_cache(small, 8)
    with pytest.raises(ValueError, match="made for another model: num_hidden_layers 2 \\(plan\\) vs 3 \\(model\\)"):
        run_with_plan(other, torch.zeros(1, 8, dtype=torch.long), plan)
    vocab = small.cfg.d_vocab
    with pytest.raises(ValueError, match=f"token ids must be in 0..{vocab - 1}.*to {vocab}"):
        run_with_plan(small, torch.full((1, 8), vocab), plan)
    with pytest.raises(TypeError, match="integer ids"):
        run_with_plan(small, torch.zeros(1, 8), plan)
    logits, cache = run_with_plan(small, torch.zeros(1, 8, dtype=torch.long), plan)     # the right model still runs
    assert logits.shape[:2] == (1, 8)
