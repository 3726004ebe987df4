"""The checking machinery every exercise uses: diagnoses, tolerances, and answers that try to cheat."""

import pytest
import torch

from phi4lab.exercises import ExerciseFailure, check_function, diagnose
from phi4lab.exercises import architecture as architecture_ex
from phi4lab.exercises import curation as curation_ex
from phi4lab.exercises import welcome as welcome_ex
from phi4lab.scratch import architecture as scratch


def rms_norm(x, eps=1e-5):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_diagnoses_name_the_likely_mistake():
    x = torch.randn(4, 8, dtype=torch.float64) * 1e-3
    outside = lambda x: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + 1e-5)  # noqa: E731
    mistakes = {"is your epsilon inside the square root?": outside}
    with pytest.raises(ExerciseFailure, match="epsilon inside the square root"):
        check_function(outside, rms_norm, [(x,)], mistakes=mistakes)
    assert diagnose(rms_norm(x).T, rms_norm(x)).startswith("wrong shape") and "transposed" in diagnose(rms_norm(x).T, rms_norm(x))
    assert "constant factor" in diagnose(2 * rms_norm(x), rms_norm(x))
    assert "wrong sign" in diagnose(-rms_norm(x), rms_norm(x))
    assert "NaN" in diagnose(torch.full((4, 8), float("nan")), rms_norm(x))
    assert "expected a tensor" in diagnose([1, 2], rms_norm(x))
    assert "largest difference" in diagnose(rms_norm(x) + torch.eye(4, 8), rms_norm(x))
    assert diagnose(rms_norm(x), rms_norm(x)) is None


def test_an_answer_that_writes_into_its_input_fails_and_is_told_so():
    # a wrong answer that zeroes its input used to pass: the reference then saw the zeroed tensor
    with pytest.raises(ExerciseFailure, match=r"changed its input in place \(argument 1\)"):
        architecture_ex.check_apply_rotary(lambda x, c, s: (x.zero_(), torch.zeros_like(x))[1])

    # a right answer computed in place is told what it did, and the caller's tensors are untouched
    def in_place(x, cos, sin):
        rotated = scratch.apply_rotary(x, cos, sin)
        return x.copy_(rotated)
    with pytest.raises(ExerciseFailure, match="the result is right, but your function changed its input"):
        architecture_ex.check_apply_rotary(in_place)
    case = torch.ones(3)
    check_function(lambda x: x * 2, lambda x: x * 2, [(case,)], name="double")
    assert torch.equal(case, torch.ones(3))


def test_tolerance_follows_dtype():
    y = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    rounded_early = y.bfloat16() * 3  # one extra bf16 rounding: ~0.4% relative error
    assert diagnose(rounded_early, (y * 3).bfloat16()) is None  # fine for a bf16 answer
    assert diagnose(rounded_early.float(), y * 3) is not None  # far too large for fp32


class _AlwaysEqual:
    """An answer whose == says True to anything: it must never pass a check."""
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


def test_checks_refuse_answers_that_only_claim_equality():
    import numpy as np

    for check in (architecture_ex.check_repeat_kv, architecture_ex.check_causal_attention,
                  curation_ex.check_normalise, welcome_ex.check_count_parameters):
        with pytest.raises(ExerciseFailure):
            check(lambda *args: _AlwaysEqual())
    # a numpy array or True gets a diagnosis, not "Boolean value of Tensor ... is ambiguous"
    with pytest.raises(ExerciseFailure, match="numpy ndarray"):
        architecture_ex.check_repeat_kv(lambda x, n: np.asarray(x.repeat_interleave(n, 1)))
    with pytest.raises(ExerciseFailure, match="got bool True"):
        architecture_ex.check_repeat_kv(lambda x, n: True)
    # containers are compared element by element, with the reference's equality
    assert diagnose([torch.ones(2), "a"], [torch.ones(2), "a"]) is None
    assert diagnose([torch.ones(2), _AlwaysEqual()], [torch.ones(2), "a"]) is not None


def test_a_huge_wrong_shaped_answer_is_diagnosed_without_copying_it():
    # A tensor on the meta device has a shape but no data: any conversion or value check
    # on it raises. The old checker converted the answer to float64 (3 GB for a big one)
    # before looking at its shape.
    huge = torch.empty(1024, 1024, 1024, device="meta")
    assert diagnose(huge, torch.zeros(3, 4)).startswith("wrong shape: got (1024, 1024, 1024), expected (3, 4)")


def test_a_wrong_dtype_is_named():
    x = torch.randn(4, 8, dtype=torch.float64)
    message = diagnose(rms_norm(x).half(), rms_norm(x))
    assert "torch.float16" in message and "torch.float64" in message


def test_a_not_implemented_error_inside_the_answer_is_not_called_a_stub(capsys):
    def stub(x, n):
        raise NotImplementedError

    def uses_something_unimplemented(x, n):
        def helper():
            raise NotImplementedError("aten::foo is not implemented for 'Half'")
        return helper()

    architecture_ex.check_repeat_kv(stub)             # a stub is reported on stderr (phi4lab.exercises.standalone)
    assert "stub is not written yet" in capsys.readouterr().err
    with pytest.raises(NotImplementedError, match="still a stub"):
        architecture_ex.check_repeat_kv.__wrapped__(stub)
    with pytest.raises(ExerciseFailure, match="not the stub's own raise") as info:
        architecture_ex.check_repeat_kv(uses_something_unimplemented)
    assert "aten::foo" in str(info.value)
