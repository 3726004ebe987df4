"""Notebook 01's checks: the reference pieces pass; typical wrong versions get their specific message."""

import re

import pytest
import torch
import torch.nn.functional as F
from exercise_cases import assert_mistake_named, mistake_cases

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import architecture as architecture_ex
from phi4lab.scratch import architecture as scratch


def _mistakes():
    lin = F.linear
    return [
        (architecture_ex.check_rms_norm,
         lambda x, w, e: w * (x / (x.pow(2).mean(-1, keepdim=True).sqrt() + e)), "inside the square root"),
        (architecture_ex.check_rms_norm, lambda x, w, e: scratch.rms_norm(x, torch.ones_like(w), e), "learned weight"),
        (architecture_ex.check_apply_rotary, lambda x, c, s: x * c - scratch.rotate_half(x) * s, "wrong way"),
        (architecture_ex.check_split_qkv, lambda qkv, H, KV, d: scratch.split_qkv(torch.cat(
            [qkv[..., KV * d:KV * d + H * d], qkv[..., :KV * d], qkv[..., KV * d + H * d:]], -1), H, KV, d), "Q first"),
        (architecture_ex.check_repeat_kv, lambda x, n: x.repeat(1, n, 1, 1), "repeat_interleave"),
        (architecture_ex.check_causal_attention, architecture_ex._attention_variant(scale=False), "sqrt(d_head)"),
        (architecture_ex.check_causal_attention, architecture_ex._attention_variant(mask_diag=True), "attend to itself"),
        (architecture_ex.check_gated_mlp,
         lambda x, gu, dn: lin(F.silu(lin(x, gu).chunk(2, -1)[1]) * lin(x, gu).chunk(2, -1)[0], dn), "gate first"),
        (architecture_ex.check_block, lambda x, layer, c, s: layer.post_attention_layernorm(
            (h := layer.input_layernorm(x + layer.self_attn(x, c, s))) + layer.mlp(h)), "pre-norm"),
        (architecture_ex.check_forward, lambda m, t: m.lm_head(architecture_ex._run_blocks(m, t)), "final norm"),
    ]


@pytest.mark.parametrize("index", range(len(_mistakes())))
def test_each_typical_mistake_gets_its_message(index):
    check, wrong, words = _mistakes()[index]
    with pytest.raises(ExerciseFailure, match=re.escape(words)):
        check(wrong)


def test_architecture_checks_pass_the_reference(capsys):
    for check, ref in ((architecture_ex.check_rms_norm, scratch.rms_norm),
                       (architecture_ex.check_rotary_cos_sin, scratch.rotary_cos_sin),
                       (architecture_ex.check_apply_rotary, scratch.apply_rotary),
                       (architecture_ex.check_split_qkv, scratch.split_qkv),
                       (architecture_ex.check_repeat_kv, scratch.repeat_kv),
                       (architecture_ex.check_causal_attention, scratch.causal_attention),
                       (architecture_ex.check_gated_mlp, scratch.gated_mlp),
                       (architecture_ex.check_block, lambda x, layer, c, s: layer(x, c, s)),
                       (architecture_ex.check_forward, lambda m, t: m(t))):
        check(ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 13


# ---- sampling, the KV cache and generation ----------------------------------------------------


def test_generation_checks_pass_the_reference(capsys):
    architecture_ex.check_sampling_probs(architecture_ex.sampling_probs_reference)
    architecture_ex.check_cached_attention(architecture_ex.cached_attention_reference)
    architecture_ex.check_generate(architecture_ex.generate_reference)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 3


@pytest.mark.parametrize("check, message, wrong", mistake_cases([
    (architecture_ex.check_sampling_probs, architecture_ex.SAMPLING_MISTAKES),
    (architecture_ex.check_cached_attention, architecture_ex.CACHE_MISTAKES),
]))
def test_each_generation_mistake_gets_its_message(check, message, wrong):
    assert_mistake_named(check, message, wrong)


def test_the_sampling_reference_is_huggingface_generate():
    """The reference distribution, sampled with the same seed, gives generate's tokens (not only our own loop's)."""
    from phi4lab.model import config as C
    from phi4lab.model.loading import random_hf_model
    hf = random_hf_model(C.scaled(d_model=64, n_layers=1), seed=3)
    prompt = torch.tensor([[5, 17, 300, 2]])
    with torch.no_grad():
        theirs = architecture_ex.hf_generate(hf, prompt, 15, 0.9, 30, 0.85, seed=4)
        torch.manual_seed(4)
        ids = prompt
        for _ in range(15):
            probs = architecture_ex.sampling_probs_reference(hf(ids).logits[:, -1], 0.9, 30, 0.85)
            ids = torch.cat([ids, torch.multinomial(probs, 1)], 1)
    assert torch.equal(ids, theirs)
    # and the filters really filter: top_k=30 leaves 30 tokens at most, top_p=0.85 fewer
    probs = architecture_ex.sampling_probs_reference(torch.randn(1, 1000), 1.0, 30, 0.85)
    assert 1 <= int((probs > 0).sum()) <= 30 and torch.isclose(probs.sum(), torch.tensor(1.0))


def test_the_cache_checks_catch_expanded_heads_and_a_wrong_sampler():
    with pytest.raises(ExerciseFailure, match="not their copies for each query head"):
        architecture_ex.check_cached_attention(architecture_ex._variant(cache_expanded=True))

    def greedy(model, prompt, n, t, k, p, use_cache):
        ids = prompt
        for _ in range(n):
            ids = torch.cat([ids, model(ids)[:, -1:].argmax(-1)], 1)
        return ids

    with pytest.raises(ExerciseFailure, match="took the most likely token"):
        architecture_ex.check_generate(greedy)

    def extra_draw(model, prompt, n, t, k, p, use_cache):
        torch.rand(1)
        return architecture_ex.generate_reference(model, prompt, n, t, k, p, use_cache)

    with pytest.raises(ExerciseFailure, match="differs from Hugging Face's generate with the same seed"):
        architecture_ex.check_generate(extra_draw)


def test_generation_checks_read_what_the_model_was_run_on():
    """A generator that ignores use_cache, or a cached attention that masks a query's own key, is caught."""
    def never_cached(model, prompt, n, t, k, p, use_cache):
        return architecture_ex.generate_reference(model, prompt, n, t, k, p, use_cache=False)

    with pytest.raises(ExerciseFailure, match="with use_cache=True it should read the prompt once"):
        architecture_ex.check_generate(never_cached)
    with pytest.raises(ExerciseFailure, match="NaN or inf"):
        architecture_ex.check_cached_attention(_hides_the_diagonal)


def _hides_the_diagonal(attn, x, past, theta):
    out, cache = architecture_ex.cached_attention_reference(attn, x, past, theta)
    T_past = 0 if past is None else past[0].shape[2]
    if T_past == 0:                       # a prefill whose first query sees nothing: a row of NaN
        out = out.clone()
        out[:, 0] = float("nan")
    return out, cache
