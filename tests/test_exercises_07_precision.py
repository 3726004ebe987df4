"""Notebook 07's checks: the references pass; typical wrong versions get their specific message."""

import functools
import math
import re

import pytest
import torch

from phi4lab.exercises import ExerciseFailure
from phi4lab.exercises import precision as precision_ex


def _mistakes():
    return [
        (precision_ex.check_exponent_mantissa_bits,
         lambda dt: (torch.finfo(dt).bits - round(-math.log2(torch.finfo(dt).eps)), round(-math.log2(torch.finfo(dt).eps))),
         "sign takes one bit"),
        (precision_ex.check_gap_above, lambda x, dt: torch.finfo(dt).eps, "the gap grows"),
        (precision_ex.check_kahan_sum, lambda v: functools.reduce(lambda a, b: a + b, v), "naive running sum"),
        (precision_ex.check_stable_softmax, lambda x: x.exp() / x.exp().sum(-1, keepdim=True), "subtract each row's max"),
        (precision_ex.check_logit_kl, lambda r, o: precision_ex._kl_ref(o, r), "arguments are swapped"),
        (precision_ex.check_update_scale, lambda s, f, c, g: (s * 2, 0) if f else precision_ex._scale_ref(s, f, c, g),
         "*halves*"),
        (precision_ex.check_training_bytes, lambda n, s: n * 12, "two fp32 states"),
    ]


@pytest.mark.parametrize("index", range(len(_mistakes())))
def test_each_typical_mistake_gets_its_message(index):
    check, wrong, words = _mistakes()[index]
    with pytest.raises(ExerciseFailure, match=re.escape(words)):
        check(wrong)


def test_precision_checks_pass_the_reference(capsys):
    def kahan(values):
        total, carry = torch.zeros((), dtype=values.dtype), torch.zeros((), dtype=values.dtype)
        for v in values:
            y = v - carry
            t = total + y
            carry = (t - total) - y
            total = t
        return total
    precision_ex.check_exponent_mantissa_bits(precision_ex._bits_ref)
    precision_ex.check_gap_above(lambda x, dt: torch.finfo(dt).eps * 2 ** math.floor(math.log2(x)))
    precision_ex.check_kahan_sum(kahan)
    precision_ex.check_stable_softmax(lambda x: torch.softmax(x, -1))
    precision_ex.check_logit_kl(precision_ex._kl_ref)
    precision_ex.check_update_scale(precision_ex._scale_ref)
    precision_ex.check_training_bytes(precision_ex._train_ref)
    assert capsys.readouterr().out.count("\N{CHECK MARK}") == 7


def _nearest_even(x):
    bits = x.view(torch.int32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(torch.int16).view(torch.bfloat16)
    return torch.where(x.isnan(), torch.tensor(float("nan"), dtype=torch.bfloat16), rounded)


def test_bf16_rounding_by_bits_is_pytorchs_and_each_slip_is_named(capsys):
    precision_ex.check_to_bfloat16(_nearest_even)
    assert "bit for bit" in capsys.readouterr().out
    for message, wrong in precision_ex.BF16_MISTAKES.items():
        with pytest.raises(ExerciseFailure) as info:
            precision_ex.check_to_bfloat16(wrong)
        assert message in str(info.value)
    with pytest.raises(ExerciseFailure, match="return a torch.bfloat16 tensor"):
        precision_ex.check_to_bfloat16(lambda x: x.half())


def test_a_half_up_rounding_that_keeps_nans_is_told_about_ties():
    with pytest.raises(ExerciseFailure, match="goes to the \\*even\\* neighbour"):
        precision_ex.check_to_bfloat16(precision_ex._half_up)
