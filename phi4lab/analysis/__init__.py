"""Scores, lenses and interventions for looking inside a model."""

from phi4lab.analysis.heads import (
    attention_patterns,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
    random_repeated_tokens,
    sink_scores,
    top_heads,
)
from phi4lab.analysis.interventions import ablate_heads, patch, patch_heads_at
from phi4lab.analysis.lens import direct_logit_attribution, logit_lens
from phi4lab.training.loop import next_token_losses  # per-position losses, shared with the training loop

__all__ = [
    "ablate_heads",
    "attention_patterns",
    "direct_logit_attribution",
    "duplicate_token_scores",
    "induction_scores",
    "logit_lens",
    "next_token_losses",
    "patch",
    "patch_heads_at",
    "previous_token_scores",
    "random_repeated_tokens",
    "sink_scores",
    "top_heads",
]
