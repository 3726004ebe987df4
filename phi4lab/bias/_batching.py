"""Prompts to token batches, shared by the bias probes (private to phi4lab.bias).

Prompts are encoded as typed text (special-token strings stay text) and grouped by
length rather than padded: every prompt's last position is then its own last
token, which is where a next-word probe reads.
"""

from __future__ import annotations

import torch

from phi4lab.model.guards import check_tokens
from phi4lab.model.tokenizer import encode_text


def encode(model, text: str, what: str) -> list[int]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the {what} {text!r} is empty: give some text")
    return encode_text(model.tokenizer, text)


def batches(model, sequences: list[list[int]], batch_size: int):
    """(indices, tokens): the sequences grouped by length (no padding, so positions stay exact), in batches,
    each checked against the model's context and put on its device."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        groups.setdefault(len(s), []).append(i)
    device = next(model.parameters()).device
    for _, idx in sorted(groups.items()):
        for k in range(0, len(idx), batch_size):
            batch = idx[k:k + batch_size]
            yield batch, check_tokens(model, torch.tensor([sequences[b] for b in batch], device=device))
