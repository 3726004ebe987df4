"""Planted contamination: put benchmark items into fine-tuning data on purpose, and measure the damage.

The experiment behind every decontamination section (Phi-4's report, appendix B.1, arXiv:2412.08905):
if test items leak into training, the model's score on those items rises for reasons that have
nothing to do with skill. To see how much, we do it deliberately and keep the control:

1. split a benchmark's items into *planted* and *clean* (seeded);
2. fine-tune on ordinary training text with the planted items' text mixed in (question and the
   right answer, as a leaked copy of a benchmark would read);
3. score every item before and after: the **inflation** is the change on planted items minus the
   change on clean ones (the clean items absorb whatever fine-tuning alone does), with a
   bootstrap interval that resamples the two groups separately;
4. run the detector (``decontamination.Decontaminator``) over the fine-tuning data: it must flag
   exactly the planted items.
"""

from __future__ import annotations

import random

import torch

from phi4lab.evaluation.tasks import Item


def item_text(item: Item, delimiter: str = " ") -> str:
    """A multiple-choice item as a leaked copy reads: its context, then the right choice."""
    return item.context + delimiter + item.choices[item.answer]


def plant(items: list[Item], n: int, seed: int = 0) -> set[str]:
    """The ids of n items chosen at random (seeded) to leak into training."""
    if not 0 < n < len(items):
        raise ValueError(f"plant between 1 and {len(items) - 1} of the {len(items)} items, not {n}")
    return set(random.Random(seed).sample([it.id for it in items], n))


def mixture(background: list[str], leaked: list[str], copies: int = 4, seed: int = 0) -> list[str]:
    """Fine-tuning documents: the background texts and `copies` copies of each leaked text, shuffled."""
    docs = list(background) + [t for t in leaked for _ in range(copies)]
    random.Random(seed).shuffle(docs)
    return docs


def _two_group_bootstrap(a: torch.Tensor, b: torch.Tensor, n: int, seed: int, level: float):
    g = torch.Generator().manual_seed(seed)
    ia = torch.randint(0, len(a), (n, len(a)), generator=g)
    ib = torch.randint(0, len(b), (n, len(b)), generator=g)
    stats = a[ia].mean(1) - b[ib].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(stats, torch.tensor([tail, 1 - tail], dtype=stats.dtype))
    return float(a.mean() - b.mean()), float(low), float(high)


def inflation(before: list[float], after: list[float], ids: list[str], planted: set[str], *,
              n: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Per-item scores before and after fine-tuning (acc, or a log-likelihood) -> the change on planted
    and on clean items, and the inflation (planted change minus clean change) with its interval."""
    if not len(before) == len(after) == len(ids):
        raise ValueError(f"before, after and ids differ in length: {len(before)}, {len(after)}, {len(ids)}")
    delta = torch.tensor(after, dtype=torch.float64) - torch.tensor(before, dtype=torch.float64)
    mask = torch.tensor([i in planted for i in ids])
    if mask.all() or not mask.any():
        raise ValueError("need both planted and clean items")
    def mean(x, m):
        return float(torch.tensor(x, dtype=torch.float64)[m].mean())
    estimate, low, high = _two_group_bootstrap(delta[mask], delta[~mask], n, seed, level)
    return {"planted_before": mean(before, mask), "planted_after": mean(after, mask),
            "clean_before": mean(before, ~mask), "clean_after": mean(after, ~mask),
            "inflation": estimate, "low": low, "high": high}
