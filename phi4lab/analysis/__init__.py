"""Scores and lenses for looking inside a model: head detectors first."""

from .heads import (
    attention_patterns,
    duplicate_token_scores,
    induction_scores,
    previous_token_scores,
    random_repeated_tokens,
    sink_scores,
    top_heads,
)

__all__ = [
    "attention_patterns",
    "duplicate_token_scores",
    "induction_scores",
    "previous_token_scores",
    "random_repeated_tokens",
    "sink_scores",
    "top_heads",
]
