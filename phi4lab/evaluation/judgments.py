"""Hand labels against automatic metrics: where does a metric agree with a reader?

``data/evals/judgments.jsonl`` holds phi4-tiny's grounded answers to the 80 ``stdlib_recall``
questions, each labelled by hand (1 = acceptable, 0 = not; the rubric is in data/README.md). Three
automatic metrics score the same answers: exact match, SQuAD's token F1 (``answers.f1``) and ROUGE-L
(Lin 2004, from Google's ``rouge-score``). Agreement is measured two ways:

* **Cohen's kappa** between the labels and a thresholded metric: agreement beyond chance,
  κ = (p_o - p_e) / (1 - p_e), where p_e is the agreement two raters with the same label rates
  would reach by luck (1 = perfect, 0 = chance);
* **Spearman's rank correlation** between the labels and the metric's raw scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from phi4lab.evaluation.answers import f1


@dataclass
class Judgment:
    id: str
    question: str
    reference: str
    answer: str
    label: int


def load(path: str | Path) -> list[Judgment]:
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        raw = json.loads(line)
        if raw.get("label") not in (0, 1):
            raise ValueError(f"{path}, line {number}: field 'label' must be 0 or 1")
        rows.append(Judgment(**{k: raw[k] for k in ("id", "question", "reference", "answer", "label")}))
    return rows


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure from rouge-score (its tokenizer lowercases and keeps only letters and digits)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure


def metrics(rows: list[Judgment]) -> dict[str, list[float]]:
    """Each automatic metric's score for every answer."""
    return {"exact_match": [float(r.answer.strip() == r.reference.strip()) for r in rows],
            "f1": [f1(r.answer, [r.reference]) for r in rows],
            "rouge_l": [rouge_l(r.answer, r.reference) for r in rows]}


def cohen_kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa of two raters' labels (any hashable labels)."""
    if len(a) != len(b) or not a:
        raise ValueError("two equally long, non-empty lists of labels")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    labels = set(a) | set(b)
    expected = sum((a.count(c) / n) * (b.count(c) / n) for c in labels)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def agreement(rows: list[Judgment], threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """Per metric: kappa with the labels (metric >= threshold counts as acceptable) and Spearman's rho."""
    from scipy.stats import spearmanr

    labels = [r.label for r in rows]
    out = {}
    for name, scores in metrics(rows).items():
        rho = spearmanr(labels, scores).statistic
        out[name] = {"kappa": cohen_kappa(labels, [int(s >= threshold) for s in scores]), "spearman": float(rho),
                     "disagreements": sum(int(s >= threshold) != y for s, y in zip(scores, labels))}
    return out
