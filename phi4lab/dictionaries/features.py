"""Using an SAE's features: read them on prompts, splice, ablate, clamp and steer with hooks, attribute logits.

A latent is a direction in the residual stream (its decoder row) plus a detector for it (its
encoder column). Reading the detector on prompts says *when* a feature is on; editing the
activation along the direction says what the model *does* with it:

* **ablate**: remove a latent's contribution, x -> x - z_i W_dec[i];
* **clamp**: set it to a chosen value, x -> x + (value - z_i) W_dec[i];
* **steer**: add alpha times the direction everywhere, x -> x + alpha W_dec[i], whether or not the
  latent fired (the bias probes' steering of notebook 09, along a learned feature).

Each edit leaves the SAE's reconstruction error in place: only the latent's own part of x changes,
so an edit of a latent that is off changes nothing but steering. Hooks are TransformerLens hooks
for the hook point the SAE was trained on (``cfg["hook_name"]``).
"""

from __future__ import annotations

import torch

from phi4lab.dictionaries.sae import SparseAutoencoder
from phi4lab.model.bridge import final_norm_weight
from phi4lab.model.guards import check_hook, check_tokens


def _check_latents(sae: SparseAutoencoder, latents) -> list[int]:
    latents = [int(i) for i in ([latents] if isinstance(latents, int) else latents)]
    bad = [i for i in latents if not 0 <= i < sae.d_sae]
    if bad or not latents:
        raise IndexError(f"latents must be in 0..{sae.d_sae - 1} (and at least one), got {bad or latents}")
    return latents


@torch.no_grad()
def latent_activations(model, sae: SparseAutoencoder, tokens, hook_name: str) -> torch.Tensor:
    """[batch, pos, d_sae]: every latent at every position of `tokens`."""
    tokens = check_tokens(model, tokens)
    check_hook(model, hook_name)
    _, cache = model.run_with_cache(tokens, names_filter=hook_name)
    return sae.encode(cache[hook_name].float())


def edit_hook(sae: SparseAutoencoder, latents, *, mode: str, value: float = 0.0):
    """A hook that ablates ("ablate"), clamps to `value` ("clamp") or adds `value` times ("steer") the latents."""
    latents = _check_latents(sae, latents)
    if mode not in ("ablate", "clamp", "steer"):
        raise ValueError(f"mode must be 'ablate', 'clamp' or 'steer', got {mode!r}")
    directions = sae.W_dec.detach()[latents]                                    # [n, d_in], unit rows

    def hook(act, hook):
        x = act.float()
        if mode == "steer":
            change = torch.full((*x.shape[:-1], len(latents)), float(value), device=x.device)
        else:
            z = sae.encode(x)[..., latents]
            change = -z if mode == "ablate" else float(value) - z
        return (x + change @ directions.to(x.device)).to(act.dtype)
    return hook


@torch.no_grad()
def run_with_edit(model, sae: SparseAutoencoder, tokens, hook_name: str, latents, *, mode: str,
                  value: float = 0.0) -> torch.Tensor:
    """The model's logits with `edit_hook(sae, latents, mode=mode, value=value)` at `hook_name`."""
    tokens = check_tokens(model, tokens)
    check_hook(model, hook_name)
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, edit_hook(sae, latents, mode=mode, value=value))])


@torch.no_grad()
def output_tokens(model, sae: SparseAutoencoder, latent: int, k: int = 10) -> tuple[list[int], list[int]]:
    """(the k tokens a latent's direction raises most, the k it lowers most), read through the final
    norm's weight and the unembedding: what the feature says about the next token, directly."""
    (latent,) = _check_latents(sae, latent)
    logits = (sae.W_dec.detach()[latent] * final_norm_weight(model).detach()) @ model.W_U.detach()
    return logits.topk(k).indices.tolist(), (-logits).topk(k).indices.tolist()


@torch.no_grad()
def logit_attribution(model, sae: SparseAutoencoder, tokens, hook_name: str, token: int, pos: int = -1,
                      top: int = 10) -> list[tuple[int, float]]:
    """The latents at `pos` whose decoder directions push `token`'s logit most, directly.

    Each active latent writes z_i W_dec[i] into the residual stream; read through the final norm (its
    scale fixed from the real run, as in ``analysis.lens.direct_logit_attribution``) and the unembedding,
    that is z_i W_dec[i] . (w_final * W_U[:, token]) / scale. For the final residual stream
    (``blocks.{L-1}.hook_resid_post``) these are exact parts of the logit, with the SAE's error as the
    remainder; for an earlier hook point they are only the direct path, ignoring the layers after it.
    Returns [(latent, contribution)], largest first.
    """
    tokens = check_tokens(model, tokens)
    check_hook(model, hook_name)
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in (hook_name, "ln_final.hook_scale"))
    z = sae.encode(cache[hook_name][:, pos].float())                              # [batch, d_sae]
    scale = cache["ln_final.hook_scale"][:, pos]                                 # [batch, 1]
    direction = final_norm_weight(model).detach() * model.W_U.detach()[:, token]
    parts = (z * (sae.W_dec.detach() @ direction)) / scale                       # [batch, d_sae]
    mean = parts.mean(0)
    order = mean.abs().argsort(descending=True)[:top]
    return [(int(i), mean[i].item()) for i in order]
