"""Bias probing: measure what a model associates with occupations, find where it lives, and test it causally.

- ``data``: frames, probe words and the BLS statistics (hash-checked files in data/bias/).
- ``preference``: log-probability probes with bootstrap CIs and the correlation with BLS shares.
- ``probes``: linear probes on the residual stream, layer by layer, with a control task.
- ``causal``: head mediation by patching, and steering along the probe direction.
- ``card``: all of it on one model, and the one-page figure.
- bootstrap intervals and Pearson's r for all of the above come from ``phi4lab.analysis.stats``.
"""

from phi4lab.analysis.stats import bootstrap, pearson
from phi4lab.bias.card import BiasReport, card, has_total_effect, report
from phi4lab.bias.causal import gender_pairs, head_mediation, steer, top_mediators
from phi4lab.bias.data import (
    BLS_SOURCE,
    BiasDataError,
    UnknownOccupationError,
    check_frame,
    fill,
    occupation,
    occupations,
    slice_sentences,
    templates,
)
from phi4lab.bias.preference import (
    correlation_with_bls,
    name_preference,
    preference,
    pronoun_preference,
    word_logprobs,
)
from phi4lab.bias.probes import (
    control_labels,
    diff_of_means,
    gendered_prompts,
    last_residuals,
    probe_accuracies,
    probe_layers,
)

__all__ = [
    "BLS_SOURCE", "BiasDataError", "BiasReport", "UnknownOccupationError", "bootstrap", "card", "check_frame",
    "has_total_effect",
    "control_labels", "correlation_with_bls", "diff_of_means", "fill", "gender_pairs", "gendered_prompts",
    "head_mediation", "last_residuals", "name_preference", "occupation", "occupations", "pearson", "preference",
    "probe_accuracies", "probe_layers", "pronoun_preference", "report", "slice_sentences", "steer", "templates", "top_mediators",
    "word_logprobs",
]
