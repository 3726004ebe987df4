"""Checks for course/11_sparse_autoencoders.ipynb: superposition, the SAE by hand, its training, and editing features."""

from __future__ import annotations

import torch

from phi4lab.dictionaries import toy, training
from phi4lab.dictionaries.features import edit_hook
from phi4lab.dictionaries.sae import SparseAutoencoder
from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.exercises.standalone import stand_alone


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- Exercise 1: feature norms and interference of a toy model ------------------------------------

def _norms_interference_ref(W):
    norms = W.norm(dim=0)
    unit = W / norms.clamp_min(1e-8)
    dots = (unit.T @ W).pow(2)
    return norms, dots.sum(-1) - dots.diagonal()


NORMS_MISTAKES = {
    "a feature's direction is a column of W ([m, n]: one column per feature): take norms over dim 0, the hidden one":
        lambda W: (W.norm(dim=1), _norms_interference_ref(W)[1]),
    "leave feature i itself out of its interference: sum over j != i (subtract the diagonal)":
        lambda W: (W.norm(dim=0), ((W / W.norm(dim=0).clamp_min(1e-8)).T @ W).pow(2).sum(-1)),
    "project onto feature i's unit direction: divide W_i by its norm before the dot product (W_i_hat . W_j)":
        lambda W: (W.norm(dim=0), (lambda d: d.sum(-1) - d.diagonal())((W.T @ W).pow(2))),
}


def check_norms_interference(fn):
    g = _generator(0)
    cases = [(torch.randn(2, 5, generator=g),), (torch.randn(1, 2, generator=g),), (torch.randn(20, 80, generator=g),)]
    check_function(fn, _norms_interference_ref, cases, name="norms_and_interference", rtol=1e-4, atol=1e-6,
                   mistakes=NORMS_MISTAKES)
    result = toy.train_toy(5, 2, 0.05, torch.ones(5), steps=300, seed=0)
    norms, inter = fn(result.model.W.detach()[0])
    if not (torch.allclose(norms, toy.feature_norms(result.model)[0], atol=1e-5)
            and torch.allclose(inter, toy.interference(result.model)[0], atol=1e-5)):
        raise ExerciseFailure("on a trained toy model your function differs from phi4lab.dictionaries.toy's "
                              "feature_norms and interference")
    print("\N{CHECK MARK} on a trained toy model it matches phi4lab.dictionaries.toy")


# ---- Exercise 2: the TopK activation ----------------------------------------------------------------

def _topk_ref(pre, k):
    values, indices = torch.relu(pre).topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, indices, values)


TOPK_MISTAKES = {
    "apply the ReLU: a latent whose pre-activation is negative stays off, even if it is among the k largest":
        lambda pre, k: (lambda v, i: torch.zeros_like(pre).scatter(-1, i, v))(*pre.topk(k, dim=-1)),
    "keep the k *largest* pre-activations, not the k largest in absolute value":
        lambda pre, k: (lambda i: torch.zeros_like(pre).scatter(-1, i, torch.relu(pre).gather(-1, i)))(
            pre.abs().topk(k, dim=-1).indices),
    "choose the k latents per input (along the last dimension), not per latent across the batch":
        lambda pre, k: (lambda i: torch.zeros_like(pre).scatter(0, i, torch.relu(pre).gather(0, i)))(
            pre.topk(min(k, pre.shape[0]), dim=0).indices),
}


def check_topk(fn):
    g = _generator(1)
    cases = [(torch.randn(6, 10, generator=g), 3), (torch.randn(4, 7, 32, generator=g), 5),
             (torch.randn(5, 12, generator=g) - 1.5, 4)]                     # mostly negative: fewer than k fire
    check_function(fn, _topk_ref, cases, name="topk_activation", mistakes=TOPK_MISTAKES)


# ---- Exercise 3: the SAE's forward pass -------------------------------------------------------------

def _sae_forward_ref(x, W_enc, b_enc, W_dec, b_dec, k):
    z = _topk_ref((x - b_dec) @ W_enc + b_enc, k)
    return z @ W_dec + b_dec, z


SAE_FORWARD_MISTAKES = {
    "subtract b_dec before encoding: the encoder reads x - b_dec, the deviation from the decoder's bias":
        lambda x, We, be, Wd, bd, k: (lambda z: (z @ Wd + bd, z))(_topk_ref(x @ We + be, k)),
    "add b_dec back after decoding: x_hat = z @ W_dec + b_dec":
        lambda x, We, be, Wd, bd, k: (lambda z: (z @ Wd, z))(_topk_ref((x - bd) @ We + be, k)),
    "decode with W_dec [d_sae, d_in] (z @ W_dec), not with the encoder's transpose":
        lambda x, We, be, Wd, bd, k: (lambda z: (z @ We.T + bd, z))(_topk_ref((x - bd) @ We + be, k)),
}


def check_sae_forward(fn, sae: SparseAutoencoder | None = None, activations: torch.Tensor | None = None):
    g = _generator(2)
    cases = []
    for n, d, m, k in ((5, 4, 12, 3), (16, 32, 96, 8)):
        cases.append((torch.randn(n, d, generator=g), torch.randn(d, m, generator=g), torch.randn(m, generator=g) * 0.1,
                      torch.randn(m, d, generator=g), torch.randn(d, generator=g), k))
    check_function(fn, _sae_forward_ref, cases, name="sae_forward", rtol=1e-4, atol=1e-5,
                   mistakes=SAE_FORWARD_MISTAKES)
    if sae is not None and activations is not None:
        x = activations[:256]
        mine = fn(x, sae.W_enc.detach(), sae.b_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach(), sae.k)
        ref = sae(x)
        if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(mine, ref)):
            raise ExerciseFailure("on the shipped SAE and real activations, yours differs from SparseAutoencoder.forward")
        print("\N{CHECK MARK} on the shipped SAE and real activations it matches SparseAutoencoder.forward")


# ---- Exercise 4: the fraction of variance unexplained ------------------------------------------------

def _fvu_ref(x, x_hat):
    return (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()


FVU_MISTAKES = {
    "the variance is about the mean: divide by sum ||x - mean(x)||^2, not sum ||x||^2":
        lambda x, x_hat: (x - x_hat).pow(2).sum() / x.pow(2).sum(),
    "one ratio of two sums over the whole set, not the mean of per-sample ratios":
        lambda x, x_hat: ((x - x_hat).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean(),
    "the error is squared: sum ||x - x_hat||^2, not sum ||x - x_hat||":
        lambda x, x_hat: (x - x_hat).norm(dim=-1).sum() / (x - x.mean(0)).pow(2).sum(),
}


def check_fvu(fn):
    g = _generator(3)
    cases = []
    for n, d in ((10, 3), (200, 16)):
        x = torch.randn(n, d, generator=g) + 3.0
        cases.append((x, x + 0.3 * torch.randn(n, d, generator=g)))
    x = torch.randn(50, 8, generator=g)
    cases.append((x, x.mean(0).expand(50, 8).clone()))                    # the mean: FVU exactly 1
    check_function(fn, _fvu_ref, cases, name="fvu", rtol=1e-5, atol=1e-7, mistakes=FVU_MISTAKES)


# ---- Exercise 5: shrinkage ---------------------------------------------------------------------------

def _shrinkage_ref(x, x_hat):
    return (x_hat * x).sum() / (x_hat * x_hat).sum()


SHRINKAGE_MISTAKES = {
    "the factor that best rescales x_hat towards x is (x_hat . x) / (x_hat . x_hat); (x_hat . x) / (x . x) "
    "rescales x towards x_hat instead":
        lambda x, x_hat: (x_hat * x).sum() / (x * x).sum(),
    "one factor for the whole set (sums over everything), not the mean of per-sample factors":
        lambda x, x_hat: ((x_hat * x).sum(-1) / (x_hat * x_hat).sum(-1)).mean(),
}


def check_shrinkage(fn):
    g = _generator(4)
    cases = []
    for scale in (0.5, 1.0, 0.8):
        x = torch.randn(64, 8, generator=g)
        cases.append((x, scale * x + 0.1 * torch.randn(64, 8, generator=g)))
    check_function(fn, _shrinkage_ref, cases, name="shrinkage", rtol=1e-5, atol=1e-7, mistakes=SHRINKAGE_MISTAKES)


# ---- Exercise 6: the sparse gradient of the TopK encoder ----------------------------------------------

def _encoder_grad_ref(x_c, indices, values, grad_values, d_sae):
    g = grad_values * (values > 0)
    out = torch.zeros(d_sae, x_c.shape[-1], dtype=x_c.dtype)
    out.index_add_(0, indices.flatten(), (g[..., None] * x_c[:, None]).reshape(-1, x_c.shape[-1]))
    return out.T


ENCODER_GRAD_MISTAKES = {
    "where the ReLU cut (a kept value of 0), no gradient flows: multiply grad_values by (values > 0)":
        lambda x_c, i, v, gv, d: _encoder_grad_ref(x_c, i, torch.ones_like(v), gv, d),
    "the gradient of W_enc is [d_in, d_sae]: column j collects x_c[n] * g[n, slot] for every (n, slot) "
    "that chose latent j; yours is its transpose":
        lambda x_c, i, v, gv, d: _encoder_grad_ref(x_c, i, v, gv, d).T,
    "a latent chosen by several inputs gets the sum of their contributions: accumulate (index_add_), "
    "do not overwrite":
        lambda x_c, i, v, gv, d: (lambda g: torch.zeros(d, x_c.shape[-1], dtype=x_c.dtype).index_copy_(
            0, i.flatten(), (g[..., None] * x_c[:, None]).reshape(-1, x_c.shape[-1])).T)(gv * (v > 0)),
}


def _encoder_case(n, d_in, d_sae, k, g):
    x_c = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    W_enc = torch.randn(d_in, d_sae, generator=g, dtype=torch.float64)
    b_enc = torch.randn(d_sae, generator=g, dtype=torch.float64) - 1.0
    values, indices = torch.relu(x_c @ W_enc + b_enc).topk(k, dim=-1)
    return x_c, indices, values, torch.randn(n, k, generator=g, dtype=torch.float64), d_sae, W_enc, b_enc


def check_encoder_grad(fn):
    g = _generator(5)
    raw = [_encoder_case(4, 3, 10, 3, g), _encoder_case(64, 16, 40, 8, g), _encoder_case(32, 8, 64, 16, g)]
    check_function(fn, _encoder_grad_ref, [case[:5] for case in raw], name="encoder_grad", rtol=1e-8, atol=1e-10,
                   mistakes=ENCODER_GRAD_MISTAKES)
    # and against autograd on the dense computation, the ground truth
    x_c, indices, values, grad_values, d_sae, W_enc, b_enc = raw[1]
    W = W_enc.clone().requires_grad_(True)
    with torch.enable_grad():
        kept = torch.relu(x_c @ W + b_enc).gather(-1, indices)
        (kept * grad_values).sum().backward()
    if not torch.allclose(fn(x_c, indices, values, grad_values, d_sae), W.grad, atol=1e-9):
        raise ExerciseFailure("yours differs from autograd's gradient of the dense TopK encoder")
    print("\N{CHECK MARK} it equals autograd's gradient of the dense encoder, at k/d_sae of the work")


# ---- Exercise 7: AuxK, the loss that revives dead latents ----------------------------------------------

def _aux_ref(pre, error, dead, W_dec, aux_k, variance):
    top = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)
    revived = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values)) @ W_dec
    return (error - revived).pow(2).sum(-1).mean() / variance


AUX_MISTAKES = {
    "only dead latents compete: set the live ones' pre-activations to -inf before the top-k":
        lambda pre, e, dead, W, k, v: (lambda top: (e - torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(
            top.values)) @ W).pow(2).sum(-1).mean() / v)(pre.topk(min(k, int(dead.sum())), dim=-1)),
    "the dead latents reconstruct the *error* (what the live ones missed), not x":
        lambda pre, e, dead, W, k, v: _aux_ref(pre, torch.zeros_like(e), dead, W, k, v),
    "normalise like the FVU: divide the mean squared error by the variance":
        lambda pre, e, dead, W, k, v: _aux_ref(pre, e, dead, W, k, v) * v,
    "apply the ReLU to the chosen pre-activations: a dead latent that would not fire contributes nothing":
        lambda pre, e, dead, W, k, v: (lambda top: (e - torch.zeros_like(pre).scatter(-1, top.indices, top.values)
                                                    @ W).pow(2).sum(-1).mean() / v)(
            pre.masked_fill(~dead, float("-inf")).topk(min(k, int(dead.sum())), dim=-1)),
}


def check_aux_loss(fn):
    g = _generator(6)
    cases = []
    for n, d, m, k, n_dead in ((6, 4, 16, 2, 5), (32, 8, 64, 4, 20), (16, 8, 32, 8, 3)):
        dead = torch.zeros(m, dtype=torch.bool)
        dead[torch.randperm(m, generator=g)[:n_dead]] = True
        cases.append((torch.randn(n, m, generator=g), torch.randn(n, d, generator=g), dead,
                      torch.randn(m, d, generator=g), k, torch.tensor(2.5)))
    check_function(fn, _aux_ref, cases, name="aux_loss", rtol=1e-4, atol=1e-6, mistakes=AUX_MISTAKES)
    sae = SparseAutoencoder(8, 32, k=4, seed=0)
    x, error, dead = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g), torch.rand(32, generator=g) < 0.4
    with torch.no_grad():
        ref = training.aux_loss(sae, x, error, dead, 4, torch.tensor(2.0))
        mine = fn(sae.pre_activations(x), error, dead, sae.W_dec, 4, torch.tensor(2.0))
    if not torch.allclose(mine, ref, rtol=1e-4):
        raise ExerciseFailure(f"on an SAE yours gives {mine.item():.5g}, phi4lab.dictionaries.training.aux_loss "
                              f"{ref.item():.5g}")
    print("\N{CHECK MARK} it matches phi4lab.dictionaries.training.aux_loss")


# ---- Exercise 8: ablate one latent, keep everything else ---------------------------------------------

def _ablate_ref(sae, latent):
    return edit_hook(sae, [latent], mode="ablate")


def check_ablate_hook(fn, sae: SparseAutoencoder, activations: torch.Tensor):
    x = activations[:512].reshape(8, 64, -1).clone()
    z = sae.encode(x)
    latent = int((z > 0).flatten(0, 1).sum(0).argmax())                  # one that often fires
    hook = fn(sae, latent)
    if not callable(hook):
        raise ExerciseFailure(f"make_ablate_hook must return a hook (a function of (activation, hook)), got {type(hook).__name__}")
    before = x.clone()
    out = hook(x, None)
    if not torch.equal(x, before):
        raise ExerciseFailure("your hook changed the activation in place: return a new tensor (x = x - ..., not x -= ...)")
    expected = _ablate_ref(sae, latent)(before, None)
    if out.shape != expected.shape:
        raise ExerciseFailure(f"wrong shape: got {tuple(out.shape)}, expected {tuple(expected.shape)}")
    if torch.allclose(out, expected, atol=1e-4):
        print(f"\N{CHECK MARK} make_ablate_hook: latent {latent} removed, the rest of the activation (error included) kept")
        return
    recon = sae(before)[0]
    if torch.allclose(out, recon - z[..., latent:latent + 1] * sae.W_dec[latent], atol=1e-4):
        raise ExerciseFailure("you returned the reconstruction minus the latent: that also throws away the SAE's "
                              "error (x - x_hat), which the model uses. Subtract the latent's part from x itself")
    if torch.allclose(out, before - sae.W_dec[latent], atol=1e-4):
        raise ExerciseFailure("scale the direction by the latent's value at each position: x - z_i W_dec[i]; "
                              "where the latent is off (z_i = 0), nothing changes")
    raise ExerciseFailure(f"values differ from x - z_i W_dec[i] by up to {(out - expected).abs().max():.3g}")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {
    "norms_and_interference": _norms_interference_ref, "topk_activation": _topk_ref, "sae_forward": _sae_forward_ref,
    "fvu": _fvu_ref, "shrinkage": _shrinkage_ref, "encoder_grad": _encoder_grad_ref, "aux_loss": _aux_ref,
    "make_ablate_hook": _ablate_ref,
})
