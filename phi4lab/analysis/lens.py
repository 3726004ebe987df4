"""The logit lens and direct logit attribution, on TransformerLens' ActivationCache.

The residual stream is a running sum: the embedding, plus what each attention
layer and each MLP writes into it. The final RMSNorm and the unembedding turn
the sum into logits. Two ways to read it:

- **Logit lens** (nostalgebraist 2020): apply the final norm and unembedding
  to the residual stream *after each layer*, as if the model stopped there.
  The answer often appears in middle layers and sharpens later.
- **Direct logit attribution**: split the final residual into its terms
  (embedding, each attention output, each MLP output), apply the final norm's
  scale (fixed from the real forward pass, so the split is exact), its learned
  weight, and the unembedding to each: how much did each component push the answer's logit?
  The terms sum to the answer's logit.

Both reuse TransformerLens' ``accumulated_resid`` and ``decompose_resid``;
phi4lab only adds the unembedding and the checks.
"""

from __future__ import annotations

import torch

from phi4lab.model.bridge import final_norm_weight
from phi4lab.model.guards import check_tokens


def _final_norm_weight(model) -> torch.Tensor:
    """The learned per-dimension scale of the final RMSNorm (Phi-3's ``model.norm.weight``)."""
    return final_norm_weight(model)


def _unembed(model, resid: torch.Tensor) -> torch.Tensor:
    out = resid @ model.W_U
    b = getattr(model, "b_U", None)
    return out + b if b is not None else out


@torch.no_grad()
def logit_lens(model, tokens: torch.Tensor, cache=None) -> tuple[torch.Tensor, list[str]]:
    """Logits read off the residual stream before each layer and after the last: [n_layers+1, batch, pos, vocab]."""
    tokens = check_tokens(model, tokens)
    if cache is None:
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_resid_pre", "hook_resid_post",
                                                                                    "ln_final.hook_scale")))
    resid, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    return _unembed(model, resid), labels


@torch.no_grad()
def direct_logit_attribution(model, tokens: torch.Tensor, answers: torch.Tensor | list[int], pos: int = -1,
                             cache=None) -> tuple[torch.Tensor, list[str]]:
    """Each component's direct contribution to each answer's logit at `pos`: [n_components, batch, n_answers].

    answers: one token id per prompt in the batch, or a [batch, n_answers] tensor.
    """
    tokens = check_tokens(model, tokens)
    answers = torch.as_tensor(answers).reshape(tokens.shape[0], -1)
    if cache is None:
        _, cache = model.run_with_cache(tokens)
    parts, labels = cache.decompose_resid(apply_ln=True, pos_slice=pos, return_labels=True)
    # parts: [n_components, batch, d_model] at one position, divided by the final norm's
    # cached scale. TransformerLens assumes the norm's weight was folded into W_U; our
    # weights are not processed (logits stay Hugging Face's), so multiply it in here.
    parts = parts * _final_norm_weight(model)
    directions = model.W_U[:, answers]                              # [d_model, batch, n_answers]
    return torch.einsum("cbd,dba->cba", parts, directions), labels
