"""Checks for course/06_causal_interventions.ipynb: logit lens, attribution, ablation, patching."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.model.bridge import final_norm
from phi4lab.scratch.architecture import rms_norm

# ---- Exercise 1: the logit lens by hand --------------------------------------------------------

def _lens_ref(resid, weight, eps, W_U):
    return rms_norm(resid.float(), weight, eps) @ W_U


LENS_MISTAKES = {
    "epsilon goes inside the square root: x / sqrt(mean(x^2) + eps)":
        lambda r, w, e, U: (r / (r.pow(2).mean(-1, keepdim=True).sqrt() + e) * w) @ U,
    "RMSNorm does not subtract the mean (that is LayerNorm): divide by the root mean square only":
        lambda r, w, e, U: (((r - r.mean(-1, keepdim=True)) * torch.rsqrt((r - r.mean(-1, keepdim=True))
                                                                           .pow(2).mean(-1, keepdim=True) + e)) * w) @ U,
    "you forgot the norm's learned weight (multiply after normalising)":
        lambda r, w, e, U: (r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + e)) @ U,
    "you skipped the norm: the unembedding expects a normalised residual stream":
        lambda r, w, e, U: r @ U,
    "the mean is over the model dimension (the last one), not over positions":
        lambda r, w, e, U: (r * torch.rsqrt(r.pow(2).mean(-2, keepdim=True) + e) * w) @ U,
}


def check_final_norm_logits(fn, model=None, cache=None):
    g = torch.Generator().manual_seed(0)
    cases = []
    # the last case is a tiny residual, where epsilon is no longer negligible
    for b, t, d, v, size in ((1, 4, 8, 11, 3.0), (2, 5, 16, 7, 1.0), (1, 3, 8, 5, 3e-3)):
        cases.append((torch.randn(b, t, d, generator=g) * size, torch.rand(d, generator=g) + 0.5, 1e-5,
                      torch.randn(d, v, generator=g)))
    check_function(fn, _lens_ref, cases, name="final_norm_logits", mistakes=LENS_MISTAKES, rtol=1e-4, atol=1e-4)
    if model is not None:
        last = get_act_name("resid_post", model.cfg.n_layers - 1)
        norm = final_norm(model)
        mine = fn(cache[last], norm.weight.detach(), norm.variance_epsilon, model.W_U.detach())
        if not torch.allclose(mine, cache["unembed.hook_out"], atol=1e-3, rtol=1e-3):
            raise ExerciseFailure("final_norm_logits passes the unit cases but, on the last layer's residual "
                                  "stream, does not give the model's logits")
        print("\N{CHECK MARK} applied to the last layer's residual stream, it gives the model's logits")


# ---- Exercise 2: direct logit attribution --------------------------------------------------------

def _dla_ref(parts, scale, weight, W_U, answer):
    return (parts / scale * weight) @ W_U[:, answer]


DLA_MISTAKES = {
    "normalise every component by the *final residual's* RMS (`scale`), not by its own: only a shared "
    "scale keeps the attribution additive, so that the parts sum to the logit":
        lambda p, s, w, U, a: (p * torch.rsqrt(p.pow(2).mean(-1, keepdim=True) + 1e-5) * w) @ U[:, a],
    "you forgot the final norm's learned weight":
        lambda p, s, w, U, a: (p / s) @ U[:, a],
    "divide by the scale, don't multiply (`scale` is the RMS of the final residual)":
        lambda p, s, w, U, a: (p * s * w) @ U[:, a],
    "you forgot to divide by the final norm's scale":
        lambda p, s, w, U, a: (p * w) @ U[:, a],
}


def check_component_logits(fn):
    g = torch.Generator().manual_seed(1)
    cases = []
    for c, d, v in ((3, 8, 11), (6, 16, 5)):
        parts = torch.randn(c, d, generator=g)
        scale = parts.sum(0).pow(2).mean().sqrt() + 0.0
        cases.append((parts, scale, torch.rand(d, generator=g) + 0.5, torch.randn(d, v, generator=g), int(v // 2)))
    check_function(fn, _dla_ref, cases, name="component_logits", mistakes=DLA_MISTAKES, rtol=1e-4, atol=1e-5)


# ---- Exercise 3: a zero-ablation hook -----------------------------------------------------------

def check_zero_head_hook(make_hook):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 5, 4, 3, generator=g)             # [batch, pos, head, d_head], as at hook_z
    for head in (0, 2, 3):
        hook = make_hook(head)
        try:
            out = hook(z.clone(), hook=None)
        except NotImplementedError:
            raise NotImplementedError("zero_head_hook is still a stub: replace `raise NotImplementedError` "
                                      "with your code") from None
        if out is None:
            raise ExerciseFailure("your hook returned None: return the (modified) activation")
        expected = z.clone()
        expected[:, :, head] = 0
        if torch.equal(out, expected):
            continue
        if torch.equal(out[head], torch.zeros_like(out[head])) and out.shape == z.shape:
            raise ExerciseFailure("you zeroed a batch element: hook_z is [batch, pos, head, d_head], "
                                  "so the head is dimension 2: z[:, :, head] = 0")
        if torch.equal(out[:, head], torch.zeros_like(out[:, head])):
            raise ExerciseFailure("you zeroed a position: hook_z is [batch, pos, head, d_head], "
                                  "so the head is dimension 2: z[:, :, head] = 0")
        if torch.equal(out, torch.zeros_like(out)):
            raise ExerciseFailure("you zeroed every head: only `head` should be removed")
        raise ExerciseFailure(f"for head {head} the output is not z with z[:, :, {head}] set to 0")
    print("\N{CHECK MARK} zero_head_hook: removes exactly one head, for each head tried")


# ---- Exercise 4: in-context loss on a repeated sequence ------------------------------------------

def _repeat_ref(losses, period):
    first = losses[:, : period - 1].mean()
    second = losses[:, period: 2 * period - 1].mean()
    return torch.stack([first, second])


REPEAT_MISTAKES = {
    "position period - 1 predicts the *first* token of the second copy, which nothing before it "
    "announces: start the second copy's predictions at position period":
        lambda l, p: torch.stack([l[:, : p - 1].mean(), l[:, p - 1: 2 * p - 1].mean()]),
    "losses[:, t] is the loss of predicting token t + 1; the first copy's predictions are positions "
    "0 .. period - 2":
        lambda l, p: torch.stack([l[:, :p].mean(), l[:, p: 2 * p - 1].mean()]),
    "return [first, second], in that order":
        lambda l, p: torch.stack([l[:, p: 2 * p - 1].mean(), l[:, : p - 1].mean()]),
}


def check_repeat_losses(fn):
    g = torch.Generator().manual_seed(3)
    cases = [(torch.rand(3, 2 * p - 1, generator=g) * 5, p) for p in (5, 8, 13)]
    check_function(fn, _repeat_ref, cases, name="repeat_losses", mistakes=REPEAT_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Exercise 5: how much does a patch restore? ----------------------------------------------

def _recovery_ref(patched, clean, corrupt):
    return (patched - corrupt) / (clean - corrupt)


def check_patching_recovery(fn):
    cases = [(torch.tensor([0.0, 1.0, 2.5, -1.0]), torch.tensor(2.0), torch.tensor(-1.0)),
             (torch.tensor([[3.0, 4.0], [5.0, 6.0]]), torch.tensor(6.0), torch.tensor(4.0)),
             (torch.tensor([-2.0, -8.0]), torch.tensor(-8.0), torch.tensor(-2.0))]
    check_function(fn, _recovery_ref, cases, name="patching_recovery", rtol=1e-6, atol=1e-6, mistakes={
        "that is the fraction still missing: measure from the corrupted baseline, (patched - corrupt) / "
        "(clean - corrupt), so 0 means 'no better than corrupted' and 1 'as good as clean'":
            lambda p, c, r: (c - p) / (c - r),
        "divide by the clean-corrupt gap, so that 1 means fully restored":
            lambda p, c, r: p - r,
        "that is the fraction relative to clean alone (patched / clean); compare with both ends":
            lambda p, c, r: p / c,
    })
