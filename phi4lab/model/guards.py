"""Checks on what a caller hands a model, shared by every layer above: clear errors before any work.

An out-of-range layer or head, an unknown hook name, an empty prompt, one longer than
the context, float "ids" or ids outside the vocabulary each get a message that says
what to do, instead of an index error deep inside the model.
"""

from __future__ import annotations

import difflib

import torch


def check_tokens(model, tokens) -> torch.Tensor:
    """Token ids as [batch, seq], or a clear error: empty, longer than the context, not ids, or outside the vocabulary."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.numel() == 0 or tokens.shape[-1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be integer token ids, got {tokens.dtype}")
    limit = model.cfg.n_ctx
    if tokens.shape[-1] > limit:
        raise ValueError(f"the prompt has {tokens.shape[-1]} tokens; this model's context is {limit}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= model.cfg.d_vocab:
        raise ValueError(f"token ids must be in 0..{model.cfg.d_vocab - 1} for this model's vocabulary; "
                         f"these run from {low} to {high}")
    return tokens


def text_tokens(model, text, *, allow_special: bool = False, max_tokens: int | None = None) -> torch.Tensor:
    """[1, seq] token ids for a prompt a user typed, all of it or a clear refusal.

    Unlike TransformerLens' ``to_tokens``, which cuts a long prompt to the context
    without a word and parses typed "<|im_end|>" as a control token, this keeps
    typed special-token strings as text (unless allow_special=True), applies
    phi4lab's text rule (phi4lab.model.tokenizer.check_text), prepends BOS only where
    the model does by default, and refuses a prompt longer than `max_tokens`
    (default: the model's context) saying how long it is.
    """
    from phi4lab.model.tokenizer import check_text, encode_text

    check_text(text, "the prompt")
    if not text:
        raise ValueError("the prompt is empty: type some text to look at")
    ids = encode_text(model.tokenizer, text, allow_special=allow_special)
    if model.cfg.default_prepend_bos and model.tokenizer.bos_token_id is not None:
        ids = [model.tokenizer.bos_token_id] + ids
    limit = min(max_tokens or model.cfg.n_ctx, model.cfg.n_ctx)
    if len(ids) > limit:
        why = "this model's context" if limit == model.cfg.n_ctx else "max_tokens"
        raise ValueError(f"the prompt is {len(ids):,} tokens; {why} is {limit:,}. Shorten it, "
                         f"e.g. text[:{len(text) * limit // len(ids)}] keeps about {limit:,} tokens")
    return check_tokens(model, torch.tensor([ids]))


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
