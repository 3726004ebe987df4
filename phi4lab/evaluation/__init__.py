"""Evaluation: scoring models on benchmarks, and checking training data for benchmark contamination.

- ``decontamination``: Phi-4's hybrid n-gram check (13-grams, then the 7-gram overlap ratio), with
  the benchmark side indexed in bounded memory and the corpus streamed through it.
- ``tasks``: task files (JSONL, multiple choice or extractive) read strictly, every problem named by file,
  line and field.
- ``answers``: exact match and token F1 for extractive answers, as SQuAD defines them.
"""
