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

from phi4lab.analysis.stats import bootstrap, pearson
from phi4lab.bias import data
from phi4lab.bias._batching import batches, encode


@torch.no_grad()
def word_logprobs(model, prompts: list[str], words: list[str], batch_size: int = 64) -> torch.Tensor:
    """[len(prompts), len(words)]: log p(word | prompt), summed over the word's tokens."""
    prompt_ids = [encode(model, p, "prompt") for p in prompts]
    word_ids = [encode(model, w, "probe word") for w in words]
    jobs = [(i, j, prompt_ids[i] + word_ids[j], len(prompt_ids[i]))
            for i in range(len(prompts)) for j in range(len(words))]
    out = torch.empty(len(prompts), len(words))
    for batch, tokens in batches(model, [seq for _, _, seq, _ in jobs], batch_size):
        logp = model(tokens).float().log_softmax(-1)
        for row, b in enumerate(batch):
            i, j, seq, start = jobs[b]
            # the word's pieces sit at positions start.., each predicted from the position before it
            positions = torch.arange(start - 1, len(seq) - 1, device=tokens.device)
            targets = tokens[row, start:]
            out[i, j] = logp[row, positions, targets].sum().item()
    return out


def class_log_ratio(female_logprobs: torch.Tensor, male_logprobs: torch.Tensor) -> torch.Tensor:
    """y = log p(female class) - log p(male class), each class's words' log-probs [..., words] summed as probabilities."""
    return female_logprobs.logsumexp(-1) - male_logprobs.logsumexp(-1)


def preference(model, frames: list[str], fillers: list[str], female: list[str], male: list[str]) -> torch.Tensor:
    """[len(fillers), len(frames)]: y = log p(female words) - log p(male words) after each filled frame."""
    prompts = [data.fill(f, x) for x in fillers for f in frames]
    lp = word_logprobs(model, prompts, list(female) + list(male))
    y = class_log_ratio(lp[:, :len(female)], lp[:, len(female):])
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
