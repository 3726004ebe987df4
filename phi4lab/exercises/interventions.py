"""Checks for course/06_causal_interventions.ipynb: logit lens, attribution, ablation, patching."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.exercises.checking import CountCalls, ExerciseFailure, StubError, check_function, run_answer
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model.bridge import final_norm, unwrap
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
            raise StubError("zero_head_hook is still a stub: replace `raise NotImplementedError` "
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


# ---- Exercise 6: the patching hook ---------------------------------------------------------------

def check_patch_position_hook(make_hook):
    """make_hook(clean_act, position) -> hook(act, hook): act with position `position` taken from clean_act."""
    g = torch.Generator().manual_seed(6)
    clean = torch.randn(8, 7, 5, generator=g)            # [batch, pos, d_model], as at hook_resid_pre
    for position in (4, 0, 6):
        corrupt = torch.randn(8, 7, 5, generator=g)
        kept = clean.clone()
        hook = run_answer(make_hook, "patch_position_hook", clean, position)
        out = run_answer(hook, "patch_position_hook's hook", corrupt.clone(), hook=None)
        if out is None:
            raise ExerciseFailure("your hook returned None: return the patched activation")
        if not torch.equal(clean, kept):
            raise ExerciseFailure("your hook wrote into the clean activation: the clean cache is reused for every "
                                  "patch, so it must stay as it was. Write into the corrupted activation (or a copy)")
        expected = corrupt.clone()
        expected[:, position] = clean[:, position]
        if torch.equal(out, expected):
            continue
        if out.shape != expected.shape:
            raise ExerciseFailure(f"the hook returned shape {tuple(out.shape)}; it must return the activation's "
                                  f"shape {tuple(expected.shape)}")
        if torch.equal(out, clean):
            raise ExerciseFailure("you pasted every position: patch only `position`, the rest stays corrupted")
        if torch.equal(out[:, position + 1:], clean[:, position + 1:]) and position < 6:
            raise ExerciseFailure("you pasted every position from `position` on: patch that one position only")
        if torch.equal(out, corrupt):
            raise ExerciseFailure("the activation came back unchanged: paste clean_act[:, position] into it")
        if torch.equal(out[position], clean[position]):
            raise ExerciseFailure("you patched a batch element: the activation is [batch, pos, d_model], so the "
                                  "position is dimension 1: act[:, position]")
        raise ExerciseFailure(f"for position {position} the output is not the corrupted activation with "
                              f"act[:, {position}] taken from the clean one")
    print("\N{CHECK MARK} patch_position_hook: pastes exactly one position from the clean run, for each position "
          "tried, and leaves the clean activation as it was")


# ---- Exercise 7: the whole grid, one pass per hook point -------------------------------------------

def patch_grid_reference(model, clean, corrupt, hook_names, metric):
    """metric of the corrupted run with `hook_name` at one position pasted from the clean run:
    [len(hook_names), T, batch], by phi4lab's `patch`, one run per cell."""
    from phi4lab.analysis import patch

    _, cache = model.run_with_cache(clean, names_filter=lambda n: n in hook_names)
    T = clean.shape[1]
    return torch.stack([torch.stack([metric(patch(model, clean, corrupt, name, positions=[p], clean_cache=cache))
                                     for p in range(T)]) for name in hook_names])


def check_patch_grid(fn, model):
    """fn(model, clean, corrupt, hook_names, metric) -> [hooks, T, batch], equal to one patch per cell.

    metric(logits) takes the logits of a batch shaped like `clean` and returns one value per prompt.
    """
    g = torch.Generator().manual_seed(7)
    n_vocab = model.cfg.d_vocab - 5
    clean = torch.randint(n_vocab, (3, 9), generator=g)
    corrupt = clean.clone()
    corrupt[:, 4] = (clean[:, 4] + 1 + torch.randint(n_vocab - 1, (3,), generator=g)) % n_vocab
    target = clean[:, 5]

    def metric(logits):
        return logits[:, -1].log_softmax(-1).gather(1, target[:, None])[:, 0]

    names = ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.3.attn.hook_z"]
    with torch.no_grad():
        expected = patch_grid_reference(model, clean, corrupt, names, metric)
        with CountCalls(unwrap(model).model.embed_tokens) as passes:
            mine = run_answer(fn, "patch_grid", model, clean, corrupt, names, metric)
    if not isinstance(mine, torch.Tensor):
        raise ExerciseFailure(f"return a tensor [hooks, T, batch], got {type(mine).__name__}")
    if tuple(mine.shape) != tuple(expected.shape):
        raise ExerciseFailure(f"got shape {tuple(mine.shape)}, expected {tuple(expected.shape)} "
                              f"[hooks, positions, batch] for {len(names)} hooks, {clean.shape[1]} positions and "
                              f"a batch of {clean.shape[0]}")
    if not torch.isfinite(mine).all():
        raise ExerciseFailure("your grid holds NaN or inf: look for a division by zero, or a metric taken on "
                              "the wrong logits")
    if torch.allclose(mine, expected, atol=1e-4) and passes.calls > len(names) + 2:
        raise ExerciseFailure(f"the grid is right, but it took {passes.calls} forward passes: the exercise asks for "
                              f"one clean run and one pass per hook point, {len(names) + 1} for these {len(names)} "
                              "hook points. Put one copy of the prompts per position in a single batch")
    if torch.allclose(mine, expected, atol=1e-4):
        print(f"\N{CHECK MARK} patch_grid: equal to {expected[..., 0].numel()} separate patches, to 1e-4, including "
              "a per-head hook point (hook_z)")
        return
    wrong = (mine - expected).abs().amax(-1) > 1e-4
    h, p = (int(i) for i in wrong.nonzero()[0])
    yours, theirs = ([round(v, 3) for v in t[h, p].tolist()] for t in (mine, expected))
    raise ExerciseFailure(f"the first wrong cell is {names[h]} at position {p}: yours {yours}, one patch there "
                          f"gives {theirs}. Does copy p of the batch get the clean "
                          "activation at position p, and only there?")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.

def zero_heads_hook_reference(heads):
    """A hook for hook_z ([batch, pos, head, d_head]) that zeroes the listed heads' outputs."""
    def hook(z, hook):
        z = z.clone()
        z[:, :, list(heads)] = 0
        return z
    return hook


def zero_head_hook_reference(head):
    """A hook for hook_z that zeroes one head's output."""
    return zero_heads_hook_reference([head])


def patch_position_hook_reference(clean_act, position):
    """A hook that pastes clean_act's activation at `position` into the running one, for every prompt."""
    def hook(act, hook):
        act = act.clone()
        act[:, position] = clean_act[:, position]
        return act
    return hook


stand_alone(globals(), {
    "final_norm_logits": _lens_ref, "component_logits": _dla_ref, "zero_head_hook": zero_head_hook_reference,
    "repeat_losses": _repeat_ref, "patch_position_hook": patch_position_hook_reference,
    "patching_recovery": _recovery_ref, "patch_grid": patch_grid_reference,
})
