"""Checks for course/10_circuits.ipynb: circuits from the weights, path patching, attribution patching."""

from __future__ import annotations

import torch

from phi4lab.analysis import circuits, planted
from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.exercises.standalone import stand_alone
from phi4lab.scratch.architecture import rotary_cos_sin, rotate_half


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- Exercise 1: each head's direct contribution to one logit -------------------------------------

def _head_dla_ref(z, W_O, scale, weight, u):
    return torch.einsum("hd,hdm->hm", z, W_O) / scale * weight @ u


HEAD_DLA_MISTAKES = {
    "divide by the final residual's RMS (scale): the final norm acts on the whole residual, once":
        lambda z, W_O, s, w, u: torch.einsum("hd,hdm->hm", z, W_O) * w @ u,
    "multiply by the final norm's weight: phi4lab keeps it out of W_U (weights are not folded)":
        lambda z, W_O, s, w, u: torch.einsum("hd,hdm->hm", z, W_O) / s @ u,
    "each head has its own slice of W_O: W_O[h] maps head h's z to the residual stream, not the sum of all slices":
        lambda z, W_O, s, w, u: torch.einsum("hd,gdm->hm", z, W_O) / s * w @ u,
}


def check_head_dla(fn, model=None):
    g = _generator(0)
    cases = []
    for H, dh, d in ((4, 3, 8), (8, 24, 192)):
        cases.append((torch.randn(H, dh, generator=g), torch.randn(H, dh, d, generator=g),
                      torch.rand((), generator=g) + 0.5, torch.rand(d, generator=g) + 0.5, torch.randn(d, generator=g)))
    check_function(fn, _head_dla_ref, cases, name="head_dla", rtol=1e-4, atol=1e-5, mistakes=HEAD_DLA_MISTAKES)
    if model is not None:
        tokens = torch.randint(10, 4000, (1, 16), generator=_generator(1))
        _, cache = model.run_with_cache(tokens)
        answer, layer = 7, model.cfg.n_layers - 1
        ref = circuits.head_dla(model, tokens, [answer], cache=cache)[layer, :, 0, 0]
        from phi4lab.model.bridge import final_norm_weight
        mine = fn(cache[f"blocks.{layer}.attn.hook_z"][0, -1], model.blocks[layer].attn.W_O.detach(),
                  cache["ln_final.hook_scale"][0, -1, 0], final_norm_weight(model).detach(), model.W_U[:, answer].detach())
        if not torch.allclose(mine, ref, rtol=1e-3, atol=1e-4):
            raise ExerciseFailure("on phi4-tiny's last layer your head_dla differs from phi4lab.analysis.circuits.head_dla "
                                  f"by up to {(mine - ref).abs().max():.3g}")
        print("\N{CHECK MARK} on phi4-tiny's last layer it matches phi4lab.analysis.circuits.head_dla")


# ---- Exercise 2: the copying score from the thin factors -------------------------------------------

def _copying_ref(A, B):
    eig = torch.linalg.eigvals(B @ A)
    return eig.sum().real / eig.abs().sum()


COPYING_MISTAKES = {
    "the score is sum(eigenvalues) / sum(|eigenvalues|): with |.| on top too it is always 1":
        lambda A, B: torch.tensor(1.0),
    "the eigenvalues can be complex: sum them, take the real part, and divide by the sum of their absolute "
    "values (|a + bi|), not of their real parts":
        lambda A, B: (lambda e: e.sum().real / e.real.abs().sum())(torch.linalg.eigvals(B @ A)),
}


def check_copying_score(fn):
    g = _generator(2)
    cases = []
    for n, r in ((6, 2), (50, 8), (200, 24)):
        A, B = torch.randn(n, r, generator=g, dtype=torch.float64), torch.randn(r, n, generator=g, dtype=torch.float64)
        cases.append((A, B))
    Q = torch.linalg.qr(torch.randn(40, 5, generator=g, dtype=torch.float64))[0]
    cases += [(Q, Q.T * 3), (Q, -Q.T)]                      # a pure copier (1) and a pure suppressor (-1)
    check_function(fn, _copying_ref, cases, name="copying_score", rtol=1e-6, atol=1e-8, mistakes=COPYING_MISTAKES)


# ---- Exercise 3: how often is a token's own logit the top one? -------------------------------------

def _self_top_ref(A, B, chunk):
    return (A @ B).argmax(-1).eq(torch.arange(A.shape[0])).double().mean().item()


SELF_TOP_MISTAKES = {
    "compare each row's argmax over the *columns* (the logits it writes) with the row's own index; "
    "argmax over dim 0 asks a different question":
        lambda A, B, c: (A @ B).argmax(0).eq(torch.arange(A.shape[0])).double().mean().item(),
    "count the rows whose top logit is their own token, out of all rows (a fraction between 0 and 1)":
        lambda A, B, c: (A @ B).argmax(-1).eq(torch.arange(A.shape[0])).sum().item(),
}


def check_self_top_fraction(fn):
    g = _generator(3)
    cases = [(torch.randn(10, 3, generator=g), torch.randn(3, 10, generator=g), 4)]
    E = torch.randn(300, 16, generator=g)
    cases += [(E, E.T, 64), (E, -E.T, 7), (E, E.T + torch.randn(16, 300, generator=g) * 3, 100)]
    check_function(fn, _self_top_ref, cases, name="self_top_fraction", rtol=1e-9, atol=1e-9,
                   mistakes=SELF_TOP_MISTAKES)


# ---- Exercise 4: the previous-token offset, from the weights and the rotation ----------------------

def _offset_ref(q, k, theta, max_offset):
    cos, sin = rotary_cos_sin(torch.arange(max_offset + 1), q.shape[-1], theta)
    return (q * cos + rotate_half(q) * sin) @ k / q.shape[-1] ** 0.5


def _rotate_pairs(x, cos, sin):          # the GPT-J / interleaved layout: (0,1), (2,3), ... Phi-4 does not use it
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., : x.shape[-1] // 2], sin[..., : x.shape[-1] // 2]
    return torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)


OFFSET_MISTAKES = {
    "rotate the *query* by the offset and leave the key at 0: R_i q . R_j k = R_(i-j) q . k. Rotating the "
    "key by +r instead scores a key r tokens *ahead*":
        lambda q, k, t, m: (lambda c, s: q @ (k * c + rotate_half(k) * s).T / q.shape[-1] ** 0.5)(
            *rotary_cos_sin(torch.arange(m + 1), q.shape[-1], t)),
    "divide by sqrt(d_head), as attention does": lambda q, k, t, m: _offset_ref(q, k, t, m) * q.shape[-1] ** 0.5,
    "Phi-4 rotates half against half (dimension i with i + d/2, rotate_half), not neighbouring pairs":
        lambda q, k, t, m: (lambda c, s: _rotate_pairs(q, c, s) @ k / q.shape[-1] ** 0.5)(
            *rotary_cos_sin(torch.arange(m + 1), q.shape[-1], t)),
}


def check_qk_by_offset(fn, model=None):
    g = _generator(4)
    cases = [(torch.randn(8, generator=g), torch.randn(8, generator=g), 10_000.0, 5),
             (torch.randn(24, generator=g), torch.randn(24, generator=g), 250_000.0, 12)]
    check_function(fn, _offset_ref, cases, name="qk_by_offset", rtol=1e-4, atol=1e-5, mistakes=OFFSET_MISTAKES)
    m = planted.planted_model()
    layer, head = planted.PLANTED["previous_token"]
    w = circuits.folded(m, layer)
    base = circuits.mean_normed_embedding(m)
    q, k = base @ w["W_Q"][head], base @ w["W_K"][circuits.kv_group(m, head)]
    scores = fn(q, k, 250_000.0, 8)
    if int(torch.as_tensor(scores).argmax()) != 1:
        raise ExerciseFailure(f"on the planted previous-token head L{layer}H{head} your scores peak at offset "
                              f"{int(torch.as_tensor(scores).argmax())}, but the head was built to look one token back")
    print(f"\N{CHECK MARK} on the planted previous-token head L{layer}H{head} the scores peak at offset 1")


# ---- Exercise 5: K-composition into one key/value group, by hand -----------------------------------

def _k_comp_ref(W_V, W_O, W_K):
    return torch.linalg.matrix_norm(W_V @ W_O @ W_K) / (torch.linalg.matrix_norm(W_V @ W_O) * torch.linalg.matrix_norm(W_K))


K_COMP_MISTAKES = {
    "normalise by both maps: ||W_OV W_K|| / (||W_OV|| ||W_K||), where W_OV = W_V W_O":
        lambda V, O, K: torch.linalg.matrix_norm(V @ O @ K) / torch.linalg.matrix_norm(K),
    "the sender's norm is that of its whole OV map W_V W_O, not of W_V and W_O separately":
        lambda V, O, K: torch.linalg.matrix_norm(V @ O @ K) / (torch.linalg.matrix_norm(V) * torch.linalg.matrix_norm(O)
                                                                * torch.linalg.matrix_norm(K)),
    "use the Frobenius norm (torch.linalg.matrix_norm's default), not the largest singular value":
        lambda V, O, K: torch.linalg.matrix_norm(V @ O @ K, 2) / (torch.linalg.matrix_norm(V @ O, 2)
                                                                   * torch.linalg.matrix_norm(K, 2)),
}


def check_k_composition(fn, model=None):
    g = _generator(5)
    cases = []
    for d, dh in ((12, 3), (64, 8), (192, 24)):
        cases.append((torch.randn(d, dh, generator=g), torch.randn(dh, d, generator=g), torch.randn(d, dh, generator=g)))
    V = torch.randn(16, 4, generator=g)
    cases.append((V, V.T, V))                                  # the receiver reads exactly what the sender writes
    check_function(fn, _k_comp_ref, cases, name="k_composition", rtol=1e-4, atol=1e-6, mistakes=K_COMP_MISTAKES)
    if model is not None:
        scores = circuits.composition_scores(model, "K")
        s_layer, s_head, r_layer = 2, 4, 3
        group = circuits.kv_group(model, s_head)
        w_s, w_r = circuits.folded(model, s_layer), circuits.folded(model, r_layer)
        for r_group in range(model.cfg.n_key_value_heads):
            mine = fn(w_s["W_V"][group], w_s["W_O"][s_head], w_r["W_K"][r_group])
            if abs(float(mine) - float(scores[s_layer, s_head, r_layer, r_group])) > 1e-4:
                raise ExerciseFailure(f"on phi4-tiny, L{s_layer}H{s_head} into layer {r_layer}'s group {r_group}: yours "
                                      f"{float(mine):.4f}, phi4lab.analysis.circuits {float(scores[s_layer, s_head, r_layer, r_group]):.4f}")
        print(f"\N{CHECK MARK} on phi4-tiny it reproduces composition_scores for L{s_layer}H{s_head} into layer "
              f"{r_layer}'s key/value groups")


# ---- Exercise 6: path patching's freezing hook -----------------------------------------------------

def _freeze_ref(corrupt_z, clean_z, heads):
    def hook(z, hook):
        out = corrupt_z.clone()
        out[:, :, heads] = clean_z[:, :, heads]
        return out
    return hook


def check_freeze_hook(fn):
    g = _generator(6)
    for heads in ([1], [0, 3], []):
        corrupt, clean, live = (torch.randn(2, 5, 4, 3, generator=g) for _ in range(3))
        before = (corrupt.clone(), clean.clone())
        given = live.clone()
        out = fn(corrupt, clean, heads)(given, None)
        if out is None:                       # a hook may edit its input in place and return nothing
            out = given
        want = _freeze_ref(corrupt, clean, heads)(live, None)
        if not (torch.equal(corrupt, before[0]) and torch.equal(clean, before[1])):
            raise ExerciseFailure("your hook changed the cached corrupted or clean activations: copy before writing "
                                  "(corrupt_z.clone()), since the next forward pass needs them again")
        if torch.equal(out, live):
            raise ExerciseFailure("the hook returned the activation it was given: in path patching every head is "
                                  "frozen at its *corrupted* value, so start from corrupt_z, not z")
        if not torch.equal(out, want):
            wrong = [h for h in range(4) if not torch.equal(out[:, :, h], want[:, :, h])]
            raise ExerciseFailure(f"with senders {heads}: heads {wrong} are wrong. Senders take the clean output, "
                                  "every other head the corrupted one; the head axis of hook_z is axis 2")
    print("\N{CHECK MARK} freeze_hook: senders clean, every other head corrupted, caches untouched, in 3 cases")


# ---- Exercise 7: the attribution estimate ----------------------------------------------------------

def _attribution_ref(clean, corrupt, grad):
    return ((clean - corrupt) * grad).sum(-1)


ATTRIBUTION_MISTAKES = {
    "the step goes from the corrupted run toward the clean one: (clean - corrupt), not (corrupt - clean)":
        lambda c, r, g: ((r - c) * g).sum(-1),
    "it is a dot product over d_model: multiply elementwise, then sum the last axis":
        lambda c, r, g: (c - r) * g,
    "the gradient is taken where the step starts, on the corrupted run, and multiplies the *difference* of the "
    "activations, not the clean activation alone":
        lambda c, r, g: (c * g).sum(-1),
}


def check_attribution_estimate(fn):
    g = _generator(7)
    cases = [tuple(torch.randn(3, 5, generator=g) for _ in range(3)),
             tuple(torch.randn(4, 7, 16, generator=g) for _ in range(3))]
    check_function(fn, _attribution_ref, cases, name="attribution_estimate", rtol=1e-5, atol=1e-6,
                   mistakes=ATTRIBUTION_MISTAKES)


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {
    "head_dla": _head_dla_ref, "copying_score": _copying_ref, "self_top_fraction": _self_top_ref,
    "qk_by_offset": _offset_ref, "k_composition": _k_comp_ref, "attribution_estimate": _attribution_ref,
})
