"""Scoring an extractive answer: exact match and token F1, as SQuAD defines them.

Rajpurkar et al. 2016 (SQuAD, https://arxiv.org/abs/1606.05250) compare a predicted answer with each
reference answer after **normalising** both: lowercase, drop punctuation, drop the articles "a",
"an" and "the", collapse whitespace. Then

* **exact match** is 1 if the normalised strings are equal, else 0;
* **F1** treats each as a bag of words: precision = shared words / predicted words, recall = shared
  words / reference words, F1 their harmonic mean (0 if nothing is shared);

and an item's score is the best over its reference answers. Normalising first is what makes "The
Eiffel Tower." and "eiffel tower" the same answer.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize(text: str) -> str:
    """Lowercase, no punctuation, no articles, single spaces (SQuAD's normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: list[str]) -> float:
    """1.0 if the prediction equals any reference after normalisation, else 0.0."""
    _check(prediction, references)
    return float(any(normalize(prediction) == normalize(r) for r in references))


def f1(prediction: str, references: list[str]) -> float:
    """The best token F1 of the prediction against any reference."""
    _check(prediction, references)
    return max(_f1(normalize(prediction).split(), normalize(r).split()) for r in references)


def _f1(predicted: list[str], reference: list[str]) -> float:
    if not predicted or not reference:
        return float(predicted == reference)              # both empty: a match; one empty: nothing shared
    shared = sum((Counter(predicted) & Counter(reference)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(reference)
    return 2 * precision * recall / (precision + recall)


def _check(prediction, references) -> None:
    if not isinstance(prediction, str):
        raise TypeError(f"the prediction must be a string, got {type(prediction).__name__}")
    if not references or not all(isinstance(r, str) for r in references):
        raise ValueError("give at least one reference answer, each a string")
