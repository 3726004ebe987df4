"""Evaluation: scoring models on benchmarks, checking training data for contamination, and grounding.

- ``tasks``: task files (JSONL, multiple choice, extractive or text) read strictly, every problem named
  by file, line and field.
- ``scoring``: what a harness computes, by hand: acc, acc_norm, perplexity per domain, greedy answers,
  standard errors; equal to lm-evaluation-harness on every shipped task (tests/test_evaluation_harness.py).
- ``harness``: lm-eval's ``HFLM`` on a phi4lab model, and the shipped tasks of ``data/evals/``.
- ``answers``: exact match and token F1 for extractive answers, as SQuAD defines them.
- ``decontamination``: Phi-4's hybrid n-gram check (13-grams, then the 7-gram overlap ratio), with
  the benchmark side indexed in bounded memory and the corpus streamed through it; MinHash for what
  it misses.
- ``contamination``: planted-contamination experiments (the inflation, with its interval).
- ``grounding``: TF-IDF retrieval, answers with confidences, abstention, and the heads that copy.
- ``judgments``: hand labels against automatic metrics (Cohen's kappa, Spearman's rho).
"""
