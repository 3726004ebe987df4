"""Checks for course/07_mixed_precision.ipynb: formats, rounding, overflow, drift, loss scaling, memory."""

from __future__ import annotations

import math

import torch

from phi4lab.exercises.checking import ExerciseFailure, StubError, check_function, run_answer
from phi4lab.exercises.standalone import stand_alone
from phi4lab.training.precision import TRAINING_BYTES_PER_PARAMETER

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


# ---- Exercise 1: exponent and mantissa bits ------------------------------------------------------

def _bits_ref(dtype):
    f = torch.finfo(dtype)
    mantissa = round(-math.log2(f.eps))
    return (f.bits - 1 - mantissa, mantissa)


def check_exponent_mantissa_bits(fn):
    cases = [(dt,) for dt in DTYPES + [getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)]]
    check_function(lambda dt: torch.tensor(fn(dt)), lambda dt: torch.tensor(_bits_ref(dt)), cases,
                   name="exponent_mantissa_bits", rtol=0, atol=0, mistakes={
                       "epsilon is 2^-mantissa_bits: mantissa = -log2(eps); the sign takes one bit too":
                           lambda dt: torch.tensor((torch.finfo(dt).bits - round(-math.log2(torch.finfo(dt).eps)),
                                                    round(-math.log2(torch.finfo(dt).eps)))),
                   })


# ---- Exercise 2: the gap between neighbouring numbers ----------------------------------------------

def _gap_ref(x, dtype):
    t = torch.tensor(x, dtype=dtype)
    return (torch.nextafter(t, torch.tensor(math.inf, dtype=dtype)) - t).float().item()


def check_gap_above(fn):
    cases = [(x, dt) for dt in DTYPES for x in (1.0, 3.0, 1000.0, 0.1, 65000.0 if dt != torch.float16 else 60000.0)]
    check_function(fn, _gap_ref, cases, name="gap_above", rtol=1e-6, atol=0, mistakes={
        "the gap grows with the number: eps is the gap at 1.0; at x it is eps * 2^floor(log2(x))":
            lambda x, dt: torch.finfo(dt).eps,
        "use the exponent of x, floor(log2(x)), not x itself (eps * x is only right at powers of 2)":
            lambda x, dt: torch.finfo(dt).eps * x,
    })


# ---- Exercise 3: compensated (Kahan) summation ------------------------------------------------------

def check_kahan_sum(fn):
    for value, n, dtype in ((0.01, 5000, torch.float16), (0.001, 3000, torch.bfloat16), (0.1, 2000, torch.float16)):
        try:
            got = float(fn(torch.full((n,), value, dtype=dtype)))
        except NotImplementedError:
            raise StubError("kahan_sum is still a stub: replace `raise NotImplementedError` "
                                      "with your code") from None
        exact = float(torch.tensor(value, dtype=dtype).double()) * n
        naive = torch.zeros((), dtype=dtype)
        for v in torch.full((n,), value, dtype=dtype):
            naive = naive + v
        step = _gap_ref(exact, dtype)
        if abs(got - exact) > step:
            if abs(got - naive.item()) < 1e-9:
                raise ExerciseFailure("your sum equals the naive running sum: keep the lost low-order part "
                                      "(c = (t - s) - y) and subtract it from the next term")
            raise ExerciseFailure(f"sum of {n} x {value} in {dtype}: got {got}, exact {exact:.4f} "
                                  f"(within one step of {dtype} there, {step}, is expected)")
    print("\N{CHECK MARK} kahan_sum: within one 16-bit step of the exact sum, where the naive sum stalls")


# ---- Exercise 4: a softmax that does not overflow ------------------------------------------------

def check_stable_softmax(fn):
    g = torch.Generator().manual_seed(0)
    cases = [((torch.randn(3, 7, generator=g) * 30).half(),), ((torch.randn(2, 5, generator=g) * 3).half(),),
             ((torch.randn(4, 6, generator=g) * 50).bfloat16(),)]

    def ref(x):
        return torch.softmax(x.float(), -1).to(x.dtype)
    try:
        out = fn(cases[0][0])
    except NotImplementedError:
        raise StubError("stable_softmax is still a stub: replace `raise NotImplementedError` "
                                  "with your code") from None
    if not torch.isfinite(out.float()).all():
        raise ExerciseFailure("NaN or inf: exp(x) overflows fp16 beyond x = 11.1 (e^11.1 > 65,504); "
                              "subtract each row's max before the exponential")
    check_function(fn, ref, cases, name="stable_softmax", rtol=1e-2, atol=2e-3, mistakes={
        "exp(x) overflows fp16 beyond x = 11.1 (e^11.1 > 65,504): subtract each row's max first":
            lambda x: (x.exp() / x.exp().sum(-1, keepdim=True)),
        "subtract the max of each row (dim=-1, keepdim=True), not of the whole tensor":
            lambda x: ((x - x.max()).exp() / (x - x.max()).exp().sum(-1, keepdim=True)),
    })


# ---- Exercise 5: KL divergence between next-token distributions -----------------------------------

def _kl_ref(ref_logits, other_logits):
    p = ref_logits.double().log_softmax(-1)
    q = other_logits.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean()


def check_logit_kl(fn):
    g = torch.Generator().manual_seed(1)
    cases = [(torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)),
             (torch.randn(1, 3, 7, generator=g) * 4, torch.randn(1, 3, 7, generator=g))]
    a = torch.randn(1, 4, 9, generator=g)
    cases.append((a, a + 0.01 * torch.randn(1, 4, 9, generator=g)))
    check_function(fn, _kl_ref, cases, name="logit_kl", rtol=1e-4, atol=1e-7, mistakes={
        "KL(reference || other): weight by the *reference* probabilities (the arguments are swapped)":
            lambda r, o: _kl_ref(o, r),
        "compare log-probabilities (log_softmax), not raw logits: logits are only defined up to a constant":
            lambda r, o: (r.double().softmax(-1) * (r.double() - o.double())).sum(-1).mean(),
    })


# ---- Exercise 6: the loss-scale rule -----------------------------------------------------------

def _scale_ref(scale, found_inf, clean_steps, growth_interval):
    if found_inf:
        return scale * 0.5, 0
    clean_steps += 1
    if clean_steps == growth_interval:
        return scale * 2.0, 0
    return scale, clean_steps


def check_update_scale(fn):
    cases = [(65536.0, True, 3, 5), (65536.0, False, 3, 5), (65536.0, False, 4, 5), (1024.0, False, 0, 1),
             (2.0, True, 0, 2000), (8.0, False, 1998, 2000), (8.0, False, 1999, 2000)]
    check_function(lambda *a: torch.tensor(fn(*a), dtype=torch.float64),
                   lambda *a: torch.tensor(_scale_ref(*a), dtype=torch.float64), cases, name="update_scale",
                   rtol=0, atol=0, mistakes={
                       "after an overflow, reset the count of clean steps to 0":
                           lambda s, f, c, g: torch.tensor((s * 0.5, c) if f else _scale_ref(s, f, c, g),
                                                           dtype=torch.float64),
                       "on overflow the scale *halves* (backoff 0.5); it doubles only after growth_interval clean steps":
                           lambda s, f, c, g: torch.tensor((s * 2.0, 0) if f else _scale_ref(s, f, c, g),
                                                           dtype=torch.float64),
                       "grow when the clean-step count *reaches* growth_interval, counting this step":
                           lambda s, f, c, g: torch.tensor(
                               _scale_ref(s, f, c, g + 1) if not f else (s * 0.5, 0), dtype=torch.float64),
                   })


# ---- Exercise 7: memory to train ------------------------------------------------------------

def _train_ref(n_params, scheme):
    return n_params * TRAINING_BYTES_PER_PARAMETER[scheme]


def check_training_bytes(fn):
    cases = [(n, s) for n in (3_491_520, 14_659_507_200) for s in TRAINING_BYTES_PER_PARAMETER]
    check_function(fn, _train_ref, cases, name="training_bytes", rtol=0, atol=0, mistakes={
        "AdamW keeps two fp32 states per parameter (first and second moment): 8 bytes, not 4":
            lambda n, s: n * (TRAINING_BYTES_PER_PARAMETER[s] - 4),
        "count the gradients too (one per parameter)":
            lambda n, s: n * (TRAINING_BYTES_PER_PARAMETER[s] - (2 if "ZeRO" in s else 4)),
    })


# ---- Rounding fp32 to bf16 by hand --------------------------------------------------------------
# bf16 is the top 16 bits of an fp32 number. Converting keeps them, rounded to nearest with ties to
# even on the 16 bits dropped; a NaN stays a NaN. The reference is PyTorch's own conversion.

def _bits16(t):
    return t.view(torch.int16)


def _nan_kept(x, out):
    return torch.where(x.isnan(), torch.tensor(float("nan"), dtype=torch.bfloat16), out)


def _truncate(x):
    return _nan_kept(x, (x.view(torch.int32) >> 16).to(torch.int16).view(torch.bfloat16))


def _half_up(x):
    return _nan_kept(x, ((x.view(torch.int32) + 0x8000) >> 16).to(torch.int16).view(torch.bfloat16))


def _nearest_even_no_nan(x):
    bits = x.view(torch.int32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).to(torch.int16).view(torch.bfloat16)


BF16_MISTAKES = {
    "you dropped the low 16 bits without rounding (truncation): round to the nearest bf16 number":
        _truncate,
    "a tie (the dropped bits exactly 0x8000) goes to the *even* neighbour, the one whose last kept bit is 0, "
    "not always up": _half_up,
    "a NaN must stay a NaN: adding the rounding bias to a NaN whose payload sits in the low bits carries into "
    "the exponent and makes it infinity. Test for NaN first": _nearest_even_no_nan,
}


def _bf16_cases():
    g = torch.Generator().manual_seed(7)
    special = torch.tensor([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001, 0xBF808000, 0x7F7FFFFF, 0x7F800001,
                            0xFFC00001, 0x7F800000, 0x80000000], dtype=torch.int64)
    # ties both ways, near-ties, the largest finite number, NaNs, infinity, -0. No subnormals: CPUs with
    # AVX-512 BF16 instructions may flush them to zero, and nbval runs on every CPU.
    special = special.to(torch.int32).view(torch.float32)
    return [(torch.randn(64, generator=g) * 100,), (torch.randn(5, 7, generator=g).exp() * 1e-30,), (special,)]


def check_to_bfloat16(fn):
    """fn(x fp32) -> bf16 tensor, bit for bit PyTorch's x.to(torch.bfloat16)."""
    for i, (x,) in enumerate(_bf16_cases()):
        mine = run_answer(fn, "to_bfloat16", x.clone())
        if not isinstance(mine, torch.Tensor) or mine.dtype != torch.bfloat16 or mine.shape != x.shape:
            what = f"a {mine.dtype} tensor of shape {tuple(mine.shape)}" if isinstance(mine, torch.Tensor) else type(mine).__name__
            raise ExerciseFailure(f"return a torch.bfloat16 tensor of x's shape {tuple(x.shape)}, got {what} "
                                  "(build it from 16-bit integers with .view(torch.bfloat16))")
        expected = x.to(torch.bfloat16)
        same = (_bits16(mine) == _bits16(expected)) | (mine.isnan() & expected.isnan())
        if bool(same.all()):
            continue
        for message, wrong in BF16_MISTAKES.items():
            w = wrong(x.clone())
            if bool(((_bits16(mine) == _bits16(w)) | (mine.isnan() & w.isnan())).all()):
                raise ExerciseFailure(f"to_bfloat16, test case {i + 1}: {message}")
        k = int((~same).flatten().nonzero()[0])
        raise ExerciseFailure(f"to_bfloat16, test case {i + 1}: fp32 bits {int(x.flatten()[k:k + 1].view(torch.int32)) & 0xFFFFFFFF:#010x} "
                              f"gave bf16 bits {int(_bits16(mine).flatten()[k]) & 0xFFFF:#06x}, PyTorch gives "
                              f"{int(_bits16(expected).flatten()[k]) & 0xFFFF:#06x}")
    print("\N{CHECK MARK} to_bfloat16: bit for bit PyTorch's conversion, ties, NaNs and infinities included")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.

def kahan_sum_reference(values):
    """Kahan's compensated sum, in the values' own dtype: each step keeps the part the addition lost."""
    s = torch.zeros((), dtype=values.dtype)
    c = torch.zeros((), dtype=values.dtype)
    for v in values:
        y = v - c
        t = s + y
        c = (t - s) - y
        s = t
    return s


def stable_softmax_reference(x):
    """Softmax over the last dimension, the row's max subtracted first so that exp cannot overflow."""
    e = (x - x.max(dim=-1, keepdim=True).values).exp()
    return e / e.sum(dim=-1, keepdim=True)


def to_bfloat16_reference(x):
    """PyTorch's own conversion, which the exercise rebuilds bit by bit."""
    return x.to(torch.bfloat16)


stand_alone(globals(), {
    "exponent_mantissa_bits": _bits_ref, "gap_above": _gap_ref, "logit_kl": _kl_ref, "update_scale": _scale_ref,
    "training_bytes": _train_ref, "to_bfloat16": to_bfloat16_reference, "kahan_sum": kahan_sum_reference,
    "stable_softmax": stable_softmax_reference,
})
