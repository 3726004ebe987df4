"""Grounded against closed-book answers: retrieval, abstention, and the heads that copy.

A model answers a question from what it memorised (closed book) or from a passage put in its
context (grounded, "retrieval-augmented" when a retriever picks the passage). Three tools:

* ``Retriever``: TF-IDF (scikit-learn's ``TfidfVectorizer``) over passages, cosine similarity, top k.
  Identifiers count as words, so ``self._closed`` is one term, which is what code search wants.
* ``answer_all``: greedy answers with a confidence each (mean log-probability per generated token),
  grounded or not, optionally with forward hooks (an ablation).
* ``abstention``: answer only when the confidence reaches a threshold, else say nothing. SimpleQA
  (Wei et al. 2024, arXiv:2411.04368) reports exactly these three shares: correct, incorrect,
  not attempted; Phi-4's report shows its post-training moving answers from incorrect to not attempted.

And the mechanism: ``induction_heads`` finds the heads that attend from a repeated token to the token
after its earlier copy (``analysis.heads``), and ``analysis.interventions.ablation_hooks`` removes them,
so that the same questions can be asked of a model that can no longer copy from its context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phi4lab.evaluation.scoring import greedy


class Retriever:
    """TF-IDF retrieval over a fixed list of passages."""

    def __init__(self, passages: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not passages or not all(isinstance(p, str) and p.strip() for p in passages):
            raise ValueError("give a non-empty list of non-empty passages")
        self.passages = list(passages)
        self.vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z_][A-Za-z0-9_.]*|\d+", lowercase=False,
                                          sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform(self.passages)

    def search(self, query: str, k: int = 1) -> list[tuple[int, float]]:
        """The k best passages for the query: [(index, cosine similarity)], best first (ties: lower index)."""
        if not 1 <= k <= len(self.passages):
            raise ValueError(f"k must be in 1..{len(self.passages)}, got {k}")
        scores = (self.matrix @ self.vectorizer.transform([query]).T).toarray()[:, 0]
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]
        return [(i, float(scores[i])) for i in order]


@dataclass
class Answer:
    text: str
    confidence: float        # mean log-probability per generated token
    correct: bool


def answer_all(model, items, contexts: list[str] | None = None, fwd_hooks=(), max_new_tokens: int = 32,
               progress: bool = False) -> list[Answer]:
    """Greedy answers to extractive items: prompt = context + newline + question, or the question
    alone when ``contexts`` is None (closed book). Correct = exactly the reference, after stripping."""
    from tqdm.auto import tqdm

    if contexts is not None and len(contexts) != len(items):
        raise ValueError(f"{len(contexts)} contexts for {len(items)} items")
    out = []
    for k, item in enumerate(tqdm(items, desc="answering", disable=not progress)):
        prompt = item.question if contexts is None else f"{contexts[k]}\n{item.question}"
        text, confidence = greedy(model, prompt, max_new_tokens=max_new_tokens, fwd_hooks=fwd_hooks)
        out.append(Answer(text.strip(), confidence, text.strip() in item.answers))
    return out


def abstention(answers: list[Answer], threshold: float) -> dict[str, float]:
    """Shares of correct, incorrect and not attempted when answers below `threshold` are withheld,
    and the accuracy on the attempted ones (SimpleQA's "correct given attempted")."""
    if not answers:
        raise ValueError("no answers")
    attempted = [a for a in answers if a.confidence >= threshold]
    n = len(answers)
    correct = sum(a.correct for a in attempted)
    return {"correct": correct / n, "incorrect": (len(attempted) - correct) / n,
            "not_attempted": 1 - len(attempted) / n,
            "correct_given_attempted": correct / len(attempted) if attempted else float("nan")}


def induction_score_table(model, seq_len: int = 40, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """[n_layers, n_heads] induction scores on a random segment of ordinary tokens repeated once
    (``analysis.heads``: attention from each token of the second copy to the token after its first copy)."""
    from phi4lab.analysis.heads import attention_patterns, induction_scores, random_repeated_tokens

    special = set(model.tokenizer.all_special_ids) | set(model.tokenizer.added_tokens_decoder)
    tokens = random_repeated_tokens(seq_len, 2, batch, vocab=model.cfg.d_vocab, exclude=special, seed=seed)
    return induction_scores(attention_patterns(model, tokens), period=seq_len)


def induction_heads(model, threshold: float = 0.4, **kwargs) -> list[tuple[int, int]]:
    """Heads whose induction score reaches `threshold`, strongest first."""
    scores = induction_score_table(model, **kwargs)
    found = [(int(layer), int(head)) for layer, head in (scores >= threshold).nonzero().tolist()]
    return sorted(found, key=lambda lh: -float(scores[lh]))
