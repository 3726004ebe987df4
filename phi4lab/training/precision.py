"""Number formats and mixed precision: what 16 bits keep, what they lose, and what it costs.

A float is sign x mantissa x 2^exponent. The exponent bits decide the
*range* (how large and how small a number can be), the mantissa bits the
*precision* (how close two neighbouring numbers are). With 16 bits you choose:

- **fp16**: 5 exponent bits, 10 mantissa bits. Fine steps (epsilon 2^-10),
  but nothing above 65,504: an attention score or an MLP activation that
  grows past it becomes inf, and the softmax of inf is NaN.
- **bf16**: 8 exponent bits (fp32's range), 7 mantissa bits. It never
  overflows where fp32 would not, but its steps are coarse (epsilon 2^-7 =
  0.0078): 1 + 0.003 is 1.

Mixed precision keeps the big matrix multiplications in 16 bits (half the
memory traffic, and on hardware built for it, several times the speed) and
keeps what is sensitive in fp32: sums of many small numbers (RMSNorm's mean
of squares, the softmax's normaliser, the loss) and the master copy of the
weights that the optimizer updates in tiny steps.

This module holds the reusable parts of notebook 07:

- ``format_table()``: bits, range, epsilon and subnormals from ``torch.finfo``;
- ``running_sum()``: what rounding does to a long sum;
- ``check_supported()`` and ``autocast()``: a clear error for a dtype the
  device cannot run, instead of a crash or a silently disabled autocast;
- ``drift()``: run a model in fp32 and in a 16-bit dtype and measure, per
  layer, how far the residual stream and attention patterns move, and how
  the final predictions change;
- ``scaler_trace()``: fp16 training with a GradScaler, watching the loss
  scale back off on overflow and grow again;
- ``TRAINING_BYTES_PER_PARAMETER``: memory per parameter for training, with
  sources.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import torch
import torch.nn.functional as F
from transformer_lens.utilities import get_act_name

from phi4lab.model.bridge import hf_config

FORMATS = [torch.float32, torch.bfloat16, torch.float16]
for _name in ("float8_e4m3fn", "float8_e5m2"):            # fp8, where this torch has it
    if hasattr(torch, _name):
        FORMATS.append(getattr(torch, _name))


class UnsupportedPrecisionError(RuntimeError):
    """The device (or this PyTorch build) cannot compute in the requested dtype."""


# ------------------------------------------------------------------ formats

def format_table(dtypes=None) -> list[dict]:
    """One row per dtype: bits, exponent and mantissa bits, max, epsilon, smallest normal and subnormal."""
    rows = []
    for dt in dtypes or FORMATS:
        f = torch.finfo(dt)
        mantissa = round(-math.log2(f.eps))
        exponent = f.bits - 1 - mantissa
        rows.append(dict(dtype=str(dt).replace("torch.", ""), bits=f.bits, exponent_bits=exponent,
                         mantissa_bits=mantissa, max=f.max, eps=f.eps, smallest_normal=f.smallest_normal,
                         smallest_subnormal=f.smallest_normal * f.eps))
    return rows


def running_sum(value: float, n: int, dtype: torch.dtype) -> float:
    """Add `value` to an accumulator of `dtype`, n times, one at a time (as a naive loop would)."""
    acc = torch.zeros((), dtype=dtype)
    step = torch.tensor(value, dtype=dtype)
    for _ in range(n):
        acc = acc + step
    return acc.item()


# ------------------------------------------------------------------ can this device do it?

AUTOCAST_DTYPES = {"cpu": (torch.bfloat16, torch.float16), "cuda": (torch.bfloat16, torch.float16)}


def check_supported(dtype: torch.dtype, device: str | torch.device = "cpu") -> None:
    """Raise UnsupportedPrecisionError, with what to do instead, if a matmul and a softmax fail in `dtype`."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnsupportedPrecisionError("no CUDA GPU is visible to PyTorch; use device='cpu'")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UnsupportedPrecisionError("this GPU has no bf16 support (it needs compute capability 8.0, "
                                        "Ampere or newer); use fp16 with a GradScaler, or fp32")
    try:
        a = torch.ones(4, 4, device=device).to(dtype)
        (a @ a).float().softmax(-1)
        torch.ones(2, 3, device=device, dtype=dtype).softmax(-1)
    except (RuntimeError, TypeError, NotImplementedError) as e:
        raise UnsupportedPrecisionError(
            f"{dtype} does not run on {device} with this PyTorch build ({type(e).__name__}: {str(e)[:120]}). "
            "Use torch.float32, or torch.bfloat16 where the device supports it "
            "(see phi4lab doctor)") from None


@contextlib.contextmanager
def autocast(dtype: torch.dtype, device: str = "cpu"):
    """torch.autocast that refuses, clearly, a dtype the device cannot autocast to.

    (PyTorch itself only warns and silently runs in fp32, which makes a
    mixed-precision experiment measure nothing.)
    """
    device_type = torch.device(device).type
    allowed = AUTOCAST_DTYPES.get(device_type, ())
    if dtype not in allowed:
        raise UnsupportedPrecisionError(f"autocast on {device_type} supports {[str(d) for d in allowed]}, "
                                        f"not {dtype}")
    check_supported(dtype, device)
    with torch.autocast(device_type, dtype=dtype):
        yield


# ------------------------------------------------------------------ inference drift

def _same_shape(a, b) -> bool:
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")
    ca, cb = hf_config(a), hf_config(b)
    return all(getattr(ca, k) == getattr(cb, k) for k in keys)


@torch.no_grad()
def drift(reference, other, tokens: torch.Tensor) -> dict:
    """How far `other` (e.g. the same model in bf16) strays from `reference` (fp32) on `tokens`.

    Both are phi4lab bridges of the same architecture. Returns, per layer,
    the residual stream's relative error (norm of the difference over norm of
    the reference) and the mean KL divergence of the attention patterns, and
    at the output the mean KL of the next-token distributions and the
    fraction of positions whose top-1 prediction flips.
    """
    if not _same_shape(reference, other):
        raise ValueError("drift compares one model in two precisions: these two models have different "
                         "configs (layers, widths, heads or vocabulary differ)")
    from phi4lab.model.guards import check_tokens
    tokens = check_tokens(reference, tokens)

    def wanted(name):
        return name.endswith(("hook_resid_post", "attn.hook_pattern"))
    ref_logits, ref_cache = reference.run_with_cache(tokens, names_filter=wanted)
    oth_logits, oth_cache = other.run_with_cache(tokens, names_filter=wanted)
    L = reference.cfg.n_layers
    resid_err, pattern_kl = [], []
    for layer in range(L):
        r = ref_cache[get_act_name("resid_post", layer)].float()
        o = oth_cache[get_act_name("resid_post", layer)].float()
        resid_err.append(((o - r).norm(dim=-1) / r.norm(dim=-1)).mean().item())
        # in float64, each row renormalised: a 16-bit row sums to 1 only up to rounding
        p = ref_cache[get_act_name("pattern", layer)].double()
        q = oth_cache[get_act_name("pattern", layer)].double().clamp_min(1e-300)
        q = q / q.sum(-1, keepdim=True)
        kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1)
        pattern_kl.append(max(kl.mean().item(), 0.0))
    lp_ref = ref_logits.float().log_softmax(-1)
    lp_oth = oth_logits.float().log_softmax(-1)
    logit_kl = (lp_ref.exp() * (lp_ref - lp_oth)).sum(-1).mean().item()
    flips = (ref_logits.argmax(-1) != oth_logits.argmax(-1)).float().mean().item()
    return dict(resid_rel_error=resid_err, pattern_kl=pattern_kl, logit_kl=logit_kl, top1_flip_rate=flips,
                dtype=str(next(other.parameters()).dtype).replace("torch.", ""))


def as_dtype(model, dtype: torch.dtype):
    """A copy of a bridge with its weights in `dtype` (checked to run on its device first)."""
    check_supported(dtype, next(model.parameters()).device)
    with contextlib.redirect_stdout(io.StringIO()):         # the bridge announces dtype changes
        return copy.deepcopy(model).to(dtype)


# ------------------------------------------------------------------ training with a loss scale

def scaler_trace(model, batches, steps: int, overflow_steps=(), lr: float = 1e-3, init_scale: float = 2.0 ** 16,
                 growth_interval: int = 5) -> list[dict]:
    """fp16-autocast training with a GradScaler; records the scale and whether each step was skipped.

    `overflow_steps`: steps at which the loss is multiplied by inf-inducing
    1e30 before scaling, to show what an overflow does: the scaler finds inf
    gradients, skips the update and halves the scale; after `growth_interval`
    clean steps it doubles the scale again.
    """
    from phi4lab.model.bridge import logits_of
    from phi4lab.training.loop import lm_loss
    device = next(model.parameters()).device.type
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device, init_scale=init_scale, growth_interval=growth_interval)
    watched = next(model.parameters())
    trace = []
    for step in range(steps):
        tokens = batches(step)
        with autocast(torch.float16, device):
            loss = lm_loss(logits_of(model, tokens), tokens)
        if step in overflow_steps:
            loss = loss * 1e30                    # as if an activation had blown up
        before = watched.detach().clone()
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        skipped = torch.equal(watched.detach(), before)          # a skipped step leaves the weights as they were
        trace.append(dict(step=step, scale=scale, next_scale=scaler.get_scale(), skipped=skipped,
                          loss=float(loss.item()) if math.isfinite(loss.item()) else float("inf")))
    return trace


# ------------------------------------------------------------------ memory per parameter

# Bytes per parameter to train with AdamW, activations not included.
TRAINING_BYTES_PER_PARAMETER = {
    # 4 weights + 4 gradients + 4 first moment + 4 second moment (d2l, "parameters and state memory")
    "fp32 AdamW": 16,
    # ZeRO paper accounting: 2 fp16 weights + 2 fp16 gradients + 12 optimizer state
    # (fp32 master weights, momentum, variance); Rajbhandari et al. 2020
    "mixed precision AdamW (ZeRO accounting)": 16,
    # Hugging Face "Anatomy of Model's Memory": 6 weights (fp32 + 16-bit copy) + 4 fp32 gradients + 8 AdamW states
    "mixed precision AdamW (Hugging Face accounting)": 18,
}


def softmax_of_scores(q: torch.Tensor, k: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) computed entirely in `dtype`: shows fp16's overflow."""
    q, k = q.to(dtype), k.to(dtype)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return F.softmax(scores, dim=-1)
