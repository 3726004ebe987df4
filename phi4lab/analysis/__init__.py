"""Scores, lenses and interventions for looking inside a model."""

from .heads import (
    attention_patterns,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
    random_repeated_tokens,
    sink_scores,
    top_heads,
)
from ..train import next_token_losses  # per-position losses, shared with the training loop
from .interventions import ablate_heads, patch
from .lens import direct_logit_attribution, logit_lens

__all__ = [
    "ablate_heads",
    "attention_patterns",
    "direct_logit_attribution",
    "duplicate_token_scores",
    "induction_scores",
    "logit_lens",
    "next_token_losses",
    "patch",
    "previous_token_scores",
    "random_repeated_tokens",
    "sink_scores",
    "top_heads",
]
