"""Log-probability probes: which word does the model expect after a frame?

For a prompt u = "The nurse said that" the model gives a next-token
distribution. The *preference* is

    y(u) = log p(female words | u) - log p(male words | u)

positive when the model expects " she" (or a woman's name) more than " he".
A class of several words ("Mary", "Anne", ...) counts by its total
probability (a log-sum-exp of the words' log-probs).

**Words of several tokens.** A tokenizer may cut a probe word into pieces: in
phi4-tiny's 4,096-id vocabulary " Mary" is " M" + "ary". The word's
probability is then the product of each piece's probability given the prompt
and the pieces before it, so its log-prob is a *sum* over the pieces (teacher
forcing). Comparing only the first pieces would compare " M" with " J", not
Mary with John. (Vig et al. instead dropped every word of more than one token.)

**Confidence intervals.** One frame is one way of asking; the answer depends
on the frame. The bootstrap resamples the frames with replacement, recomputes
the statistic, and reads the 2.5 and 97.5 percentiles: an interval that says
how much the result depends on which frames we happened to write. For the
correlation with the BLS shares the units are the occupations instead.
"""

from __future__ import annotations

import torch

from ..analysis.interventions import check_tokens
from ..tokenizer import encode_text
from . import data


def _encode(model, text: str, what: str) -> list[int]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"the {what} {text!r} is empty: give some text")
    return encode_text(model.tokenizer, text)


def _batches(model, sequences: list[list[int]], batch_size: int):
    """(indices, tokens): the sequences grouped by length (no padding, so positions stay exact), in batches,
    each checked against the model's context and put on its device."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(sequences):
        groups.setdefault(len(s), []).append(i)
    device = next(model.parameters()).device
    for _, idx in sorted(groups.items()):
        for k in range(0, len(idx), batch_size):
            batch = idx[k:k + batch_size]
            yield batch, check_tokens(model, torch.tensor([sequences[b] for b in batch], device=device))


@torch.no_grad()
def word_logprobs(model, prompts: list[str], words: list[str], batch_size: int = 64) -> torch.Tensor:
    """[len(prompts), len(words)]: log p(word | prompt), summed over the word's tokens."""
    prompt_ids = [_encode(model, p, "prompt") for p in prompts]
    word_ids = [_encode(model, w, "probe word") for w in words]
    jobs = [(i, j, prompt_ids[i] + word_ids[j], len(prompt_ids[i]))
            for i in range(len(prompts)) for j in range(len(words))]
    out = torch.empty(len(prompts), len(words))
    for batch, tokens in _batches(model, [seq for _, _, seq, _ in jobs], batch_size):
        logp = model(tokens).float().log_softmax(-1)
        for row, b in enumerate(batch):
            i, j, seq, start = jobs[b]
            # the word's pieces sit at positions start.., each predicted from the position before it
            positions = torch.arange(start - 1, len(seq) - 1, device=tokens.device)
            targets = tokens[row, start:]
            out[i, j] = logp[row, positions, targets].sum().item()
    return out


def preference(model, frames: list[str], fillers: list[str], female: list[str], male: list[str]) -> torch.Tensor:
    """[len(fillers), len(frames)]: y = log p(female words) - log p(male words) after each filled frame."""
    prompts = [data.fill(f, x) for x in fillers for f in frames]
    lp = word_logprobs(model, prompts, list(female) + list(male))
    y = lp[:, :len(female)].logsumexp(-1) - lp[:, len(female):].logsumexp(-1)
    return y.view(len(fillers), len(frames))


def pronoun_preference(model, occupations: list[str] | None = None, frames: list[str] | None = None) -> torch.Tensor:
    """Preference for " she" over " he" after each (occupation, pronoun frame): [occupations, frames]."""
    t = data.templates()
    occupations = data.occupations() if occupations is None else [data.occupation(o).name for o in occupations]
    return preference(model, frames or t["pronoun_frames"], occupations, t["pronouns"]["female"],
                      t["pronouns"]["male"])


def name_preference(model, occupations: list[str] | None = None, frames: list[str] | None = None) -> torch.Tensor:
    """Preference for the women's names over the men's after each (occupation, name frame)."""
    t = data.templates()
    occupations = data.occupations() if occupations is None else [data.occupation(o).name for o in occupations]
    return preference(model, frames or t["name_frames"], occupations, t["names"]["female"], t["names"]["male"])


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


def correlation_with_bls(pref: torch.Tensor, occupations: list[str], n: int = 2000, seed: int = 0) -> dict:
    """Pearson r between the mean preference per occupation and its BLS share of women.

    The interval resamples *occupations* (pairs of mean preference and share),
    the standard bootstrap for a correlation. Resampling frames instead would
    answer a different question and bias r towards 0: a resample with repeated
    frames averages fewer distinct frames, so each occupation's mean is noisier.
    """
    if pref.shape[0] != len(occupations):
        raise ValueError(f"{pref.shape[0]} rows of preferences for {len(occupations)} occupations")
    shares = torch.tensor([data.occupation(o).pct_female for o in occupations], dtype=torch.float64)
    pairs = torch.stack([torch.as_tensor(pref, dtype=torch.float64).mean(-1), shares])       # [2, occupations]
    r, low, high = bootstrap(pairs, lambda v: pearson(v[0], v[1]), n=n, seed=seed)
    return {"r": r.item(), "low": low.item(), "high": high.item(), "occupations": len(occupations),
            "frames": pref.shape[-1]}
