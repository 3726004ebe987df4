"""Ablation and activation patching: causal evidence, not just correlation.

A head detector says a head *looks* like an induction head. To show that it
*matters*, change it and measure:

- **Ablation** removes a head's output (its slice of ``hook_z``, the
  per-head attention result before the output projection) by zeroing it or
  replacing it with its mean over the batch and positions, then measures the
  change in loss.
- **Activation patching** runs a *corrupted* prompt but pastes in one
  activation from a *clean* run. If pasting that one activation restores the
  clean behaviour, the information that mattered passed through it.

Hooks are TransformerLens hook points, so any name from ``phi4lab.hooks``
works. Inputs are checked first: an out-of-range layer or head, an unknown
hook name, an empty prompt or one longer than the context each get a clear
error instead of an index error deep inside the model.
"""

from __future__ import annotations

import difflib

import torch


def check_tokens(model, tokens) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.numel() == 0 or tokens.shape[-1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    limit = model.cfg.n_ctx
    if tokens.shape[-1] > limit:
        raise ValueError(f"the prompt has {tokens.shape[-1]} tokens; this model's context is {limit}")
    return tokens


def check_head(model, layer: int, head: int) -> None:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if not 0 <= layer < n_layers:
        raise IndexError(f"layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
    if not 0 <= head < n_heads:
        raise IndexError(f"head {head} is out of range: this model has query heads 0..{n_heads - 1}")


def check_hook(model, name: str) -> None:
    names = list(model.hook_dict)
    if name not in model.hook_dict:
        close = difflib.get_close_matches(name, names, n=3)
        raise KeyError(f"unknown hook point {name!r}; close matches: {', '.join(close) or 'none'}")


@torch.no_grad()
def ablate_heads(model, tokens, heads: list[tuple[int, int]], kind: str = "zero") -> torch.Tensor:
    """Logits with the given (layer, head) outputs zeroed ("zero") or mean-ablated ("mean")."""
    tokens = check_tokens(model, tokens)
    if kind not in ("zero", "mean"):
        raise ValueError(f"kind must be 'zero' or 'mean', got {kind!r}")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        check_head(model, layer, head)
        by_layer.setdefault(layer, []).append(head)

    def make_hook(hs):
        def hook(z, hook):                        # z: [batch, pos, n_heads, d_head]
            z = z.clone()
            for h in hs:
                z[:, :, h] = 0 if kind == "zero" else z[:, :, h].mean(dim=(0, 1), keepdim=True)
            return z
        return hook

    fwd_hooks = [(f"blocks.{layer}.attn.hook_z", make_hook(hs)) for layer, hs in by_layer.items()]
    return model.run_with_hooks(tokens, fwd_hooks=fwd_hooks)


@torch.no_grad()
def patch(model, clean_tokens, corrupt_tokens, hook_name: str, positions: list[int] | None = None,
          head: int | None = None) -> torch.Tensor:
    """Run the corrupted prompt with `hook_name`'s activation taken from the clean run.

    positions: only these positions (default all); head: only this head (for
    per-head hooks such as ``blocks.L.attn.hook_z``). Returns the patched logits.
    """
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens), check_tokens(model, corrupt_tokens)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError(f"clean {tuple(clean_tokens.shape)} and corrupted {tuple(corrupt_tokens.shape)} "
                         "prompts must have the same shape")
    check_hook(model, hook_name)
    _, cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n == hook_name)
    clean = cache[hook_name]

    def hook(act, hook):
        act = act.clone()
        index = [slice(None), slice(None) if positions is None else list(positions)]
        if head is not None:
            index.append(head)
        act[tuple(index)] = clean[tuple(index)]
        return act

    return model.run_with_hooks(corrupt_tokens, fwd_hooks=[(hook_name, hook)])
