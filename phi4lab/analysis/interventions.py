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

Every patch here is one primitive, `paste`: a hook that writes given values into
an index of a copy of the activation. `patch` pastes any hook's activation from a
clean run; `patch_heads_at` pastes one head's output at one position (the step of
a head-by-head sweep, and of the bias mediation in ``phi4lab.bias.causal``).

Hooks are TransformerLens hook points, so any name from ``phi4lab.analysis.cache_plan``
works. Inputs are checked first: an out-of-range layer or head, an unknown
hook name, an empty prompt or one longer than the context each get a clear
error instead of an index error deep inside the model.
"""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.model.guards import check_head, check_hook, check_tokens


def ablation_hooks(model, heads: list[tuple[int, int]], kind: str = "zero") -> list:
    """TransformerLens forward hooks (on hook_z) that zero ("zero") or mean-ablate ("mean") the given
    (layer, head) outputs: for run_with_hooks, or for ``model.hooks(...)`` around any other run."""
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

    return [(get_act_name("z", layer), make_hook(hs)) for layer, hs in by_layer.items()]


@torch.no_grad()
def ablate_heads(model, tokens, heads: list[tuple[int, int]], kind: str = "zero") -> torch.Tensor:
    """Logits with the given (layer, head) outputs zeroed ("zero") or mean-ablated ("mean")."""
    tokens = check_tokens(model, tokens)
    return model.run_with_hooks(tokens, fwd_hooks=ablation_hooks(model, heads, kind))


# Per-head hook points and where their head axis sits. hook_q and hook_z have one slice per
# query head; hook_k and hook_v one per *key/value* head (Phi-4 shares each among 4 query heads);
# hook_pattern and hook_attn_scores are [batch, head, query, key], so their positions are queries.
# (The bridge's aliases attn.q.hook_out, attn.k.hook_out, ... name the same tensors.)
_HEAD_AXIS = {"attn.hook_q": ("query", 2), "attn.q.hook_out": ("query", 2), "attn.hook_rot_q": ("query", 2),
              "attn.hook_rot_k": ("key/value", 2),
              "attn.hook_z": ("query", 2), "attn.o.hook_in": ("query", 2),
              "attn.hook_k": ("key/value", 2), "attn.k.hook_out": ("key/value", 2),
              "attn.hook_v": ("key/value", 2), "attn.v.hook_out": ("key/value", 2),
              "attn.hook_pattern": ("query", 1), "attn.hook_attn_scores": ("query", 1)}


def _patch_index(model, hook_name: str, seq_len: int, positions, head) -> tuple:
    """The index into hook_name's activation that `patch` copies, checked before any run."""
    leaf = hook_name.split(".", 2)[-1] if hook_name.startswith("blocks.") else hook_name
    kind, head_axis = _HEAD_AXIS.get(leaf, (None, None))
    if positions is not None:
        if isinstance(positions, int) or not hasattr(positions, "__iter__"):
            raise TypeError(f"positions must be a list of positions, e.g. [{positions}], not {type(positions).__name__}")
        positions = [int(p) for p in positions]
        if not positions:
            raise ValueError("positions is empty: give at least one position, or None for all of them")
        bad = [p for p in positions if not 0 <= p < seq_len]
        if bad:
            raise IndexError(f"positions {bad} are out of range: these prompts have positions 0..{seq_len - 1}")
    index = [slice(None)] * 3
    pos_axis = 2 if head_axis == 1 else 1
    index[pos_axis] = slice(None) if positions is None else positions
    if head is not None:
        if kind is None:
            raise ValueError(f"{hook_name!r} has no head axis; head= applies to the per-head hooks "
                             f"blocks.L.({', '.join(sorted(_HEAD_AXIS))})")
        n = model.cfg.n_key_value_heads if kind == "key/value" else model.cfg.n_heads
        n = n or model.cfg.n_heads
        if not 0 <= head < n:
            raise IndexError(f"head {head} is out of range: {hook_name} has {kind} heads 0..{n - 1}")
        index[head_axis] = head
    return tuple(index)


def paste(index: tuple, values: torch.Tensor):
    """A hook that returns a copy of its activation with ``act[index] = values``.

    A copy, because TransformerLens hands the hook the tensor the model goes on to use,
    and the caller's cached values must not change under it either.
    """
    def hook(act, hook):
        act = act.clone()
        act[index] = values
        return act
    return hook


@torch.no_grad()
def patch_heads_at(model, tokens, layer: int, head: int, values: torch.Tensor, position: int = -1) -> torch.Tensor:
    """Logits of `tokens` with head (layer, head)'s output ``hook_z`` at `position` replaced by `values`.

    values: [batch, d_head], one head output per prompt (e.g. from another prompt's run).
    position: a position of these prompts; -1, the default, is the last one, which is
    where a next-token score reads and which lets prompts of different lengths be paired.
    """
    tokens = check_tokens(model, tokens)
    check_head(model, layer, head)
    if not -tokens.shape[-1] <= position < tokens.shape[-1]:
        raise IndexError(f"position {position} is out of range for prompts of {tokens.shape[-1]} tokens")
    want = (tokens.shape[0], model.cfg.d_head)
    if tuple(values.shape) != want:
        raise ValueError(f"values must be [batch, d_head] = {list(want)}, one head output per prompt; "
                         f"got {list(values.shape)}")
    index = (slice(None), position, head)                 # hook_z is [batch, pos, head, d_head]
    return model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("z", layer), paste(index, values))])


@torch.no_grad()
def patch(model, clean_tokens, corrupt_tokens, hook_name: str, positions: list[int] | None = None,
          head: int | None = None, clean_cache=None) -> torch.Tensor:
    """Run the corrupted prompt with `hook_name`'s activation taken from the clean run.

    positions: only these positions, a list of indices 0..T-1 (default all;
    negative indices are refused, not counted from the end); head: only this
    head (for per-head hooks such as ``blocks.L.attn.hook_z``; for ``hook_k`` and
    ``hook_v`` a key/value head). Both are checked before anything runs.
    clean_cache: an ActivationCache of the clean run holding `hook_name`, to reuse across calls
    instead of running the clean prompt again (for whole grids, ``phi4lab.analysis.sweep`` is faster).
    Returns the patched logits.
    """
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens), check_tokens(model, corrupt_tokens)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError(f"clean {tuple(clean_tokens.shape)} and corrupted {tuple(corrupt_tokens.shape)} "
                         "prompts must have the same shape")
    check_hook(model, hook_name)
    index = _patch_index(model, hook_name, clean_tokens.shape[-1], positions, head)
    if clean_cache is None:
        _, clean_cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n == hook_name)
    elif hook_name not in clean_cache.cache_dict:
        raise KeyError(f"clean_cache has no {hook_name!r}; cache it (names_filter) or leave clean_cache out")
    clean = clean_cache[hook_name]
    if clean.shape[0] != clean_tokens.shape[0]:
        raise ValueError(f"clean_cache holds {hook_name} for a batch of {clean.shape[0]}, these prompts are "
                         f"{clean_tokens.shape[0]}: cache the same clean prompts")
    return model.run_with_hooks(corrupt_tokens, fwd_hooks=[(hook_name, paste(index, clean[index]))])
