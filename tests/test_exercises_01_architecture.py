"""Notebook 01's checks: the reference pieces pass; typical wrong versions get their specific message."""

import re

import pytest
import torch
import torch.nn.functional as F

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
