"""phi4lab.training.precision: formats, rounding, overflow, refusals, drift and the loss scaler."""

import pytest
import torch

import phi4lab
from phi4lab.model.config import scaled
from phi4lab.training import precision as P


def test_format_table_reads_torch_finfo():
    rows = {r["dtype"]: r for r in P.format_table()}
    assert rows["float16"]["max"] == 65504 and rows["float16"]["eps"] == 2 ** -10
    assert (rows["float16"]["exponent_bits"], rows["float16"]["mantissa_bits"]) == (5, 10)
    assert (rows["bfloat16"]["exponent_bits"], rows["bfloat16"]["mantissa_bits"]) == (8, 7)
    assert rows["bfloat16"]["eps"] == 2 ** -7 and rows["bfloat16"]["smallest_normal"] == rows["float32"]["smallest_normal"]
    assert rows["float32"]["smallest_subnormal"] == 2.0 ** -149
    assert rows["float16"]["smallest_subnormal"] == 2.0 ** -24


def test_running_sums_stall_in_16_bits():
    # 10,000 x 0.01 = 100: fp32 gets close, fp16 stalls once 0.01 is below half a step of the sum
    assert P.running_sum(0.01, 10_000, torch.float32) == pytest.approx(100, abs=0.01)
    fp16, bf16 = P.running_sum(0.01, 10_000, torch.float16), P.running_sum(0.01, 10_000, torch.bfloat16)
    assert fp16 < 50 and bf16 < 10 and bf16 < fp16


def test_attention_scores_overflow_in_fp16_only():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 4, 128, generator=g) * 100, torch.randn(1, 4, 128, generator=g) * 100
    assert (q @ k.transpose(-1, -2)).abs().max() > 65504
    assert torch.isnan(P.softmax_of_scores(q, k, torch.float16)).any()
    for dt in (torch.float32, torch.bfloat16):
        out = P.softmax_of_scores(q, k, dt).float()
        assert torch.isfinite(out).all() and torch.allclose(out.sum(-1), torch.ones(1, 4), atol=1e-2)


def test_unsupported_precision_is_refused_with_a_clear_message():
    with pytest.raises(P.UnsupportedPrecisionError, match="autocast on cpu supports"):
        with P.autocast(torch.float8_e4m3fn):
            pass
    if not torch.cuda.is_available():
        with pytest.raises(P.UnsupportedPrecisionError, match="no CUDA GPU"):
            P.check_supported(torch.bfloat16, "cuda")
    with P.autocast(torch.bfloat16):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16


@pytest.fixture(scope="module")
def twin():
    return phi4lab.load(config=scaled(d_model=64, n_layers=2), seed=0)


def test_drift_is_zero_against_itself_and_small_but_real_in_16_bits(twin):
    tokens = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    same = P.drift(twin, P.as_dtype(twin, torch.float32), tokens)
    assert same["resid_rel_error"] == [0.0, 0.0] and same["logit_kl"] == pytest.approx(0, abs=1e-9)
    bf16 = P.drift(twin, P.as_dtype(twin, torch.bfloat16), tokens)
    fp16 = P.drift(twin, P.as_dtype(twin, torch.float16), tokens)
    for d in (bf16, fp16):
        assert len(d["resid_rel_error"]) == 2 and all(0 < e < 0.1 for e in d["resid_rel_error"])
        assert all(kl >= 0 for kl in d["pattern_kl"]) and 0 <= d["top1_flip_rate"] <= 1
    # bf16 keeps 8 significant bits, fp16 11: bf16's error is the larger
    assert bf16["resid_rel_error"][-1] > fp16["resid_rel_error"][-1]
    assert next(twin.parameters()).dtype == torch.float32          # the reference is untouched


def test_drift_refuses_models_of_different_shapes(twin):
    other = phi4lab.load(config=scaled(d_model=64, n_layers=1), seed=0)
    with pytest.raises(ValueError, match="different configs"):
        P.drift(twin, other, torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.slow
def test_grad_scaler_backs_off_on_overflow_and_grows_back():
    model = phi4lab.load(config=scaled(d_model=64, n_layers=1), seed=0)

    def batches(i):
        return torch.randint(0, 1000, (2, 8), generator=torch.Generator().manual_seed(i))
    trace = P.scaler_trace(model, batches, 10, overflow_steps=(2,), growth_interval=3)
    assert [t["skipped"] for t in trace] == [False, False, True] + [False] * 7
    assert trace[2]["next_scale"] == trace[2]["scale"] / 2            # backed off
    assert trace[5]["next_scale"] == trace[5]["scale"] * 2            # grew after 3 clean steps
    assert trace[8]["next_scale"] == trace[8]["scale"] * 2


def test_bytes_per_parameter_accounting():
    b = P.TRAINING_BYTES_PER_PARAMETER
    assert b["fp32 AdamW"] == 4 + 4 + 4 + 4
    assert b["mixed precision AdamW (Hugging Face accounting)"] == 6 + 4 + 8
