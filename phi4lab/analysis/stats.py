"""Statistics over units (prompts, frames, occupations): bootstrap intervals and Pearson's r.

**Confidence intervals.** One frame is one way of asking; the answer depends on the
frame. The bootstrap resamples the units (frames, occupations, prompt pairs) with
replacement, recomputes the statistic, and reads the 2.5 and 97.5 percentiles: an
interval that says how much the result depends on which units we happened to have.
"""

from __future__ import annotations

import torch


def bootstrap(values: torch.Tensor, statistic, n: int = 2000, seed: int = 0, level: float = 0.95):
    """(estimate, low, high): `statistic` of values [..., k], with the last axis resampled n times.

    The last axis holds the units we resample: frames for a mean preference,
    occupations for a correlation, prompt pairs for a mediation share.
    """
    values = torch.as_tensor(values, dtype=torch.float64)
    if values.shape[-1] < 2:
        raise ValueError("the bootstrap needs at least 2 units (frames, occupations, pairs) to resample")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, values.shape[-1], (n, values.shape[-1]), generator=g)
    stats = torch.stack([torch.as_tensor(statistic(values[..., p]), dtype=torch.float64) for p in picks])
    tail = (1 - level) / 2
    low, high = torch.quantile(stats, torch.tensor([tail, 1 - tail], dtype=torch.float64), dim=0)
    return torch.as_tensor(statistic(values), dtype=torch.float64), low, high


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    return (x * y).sum() / (x.norm() * y.norm())
