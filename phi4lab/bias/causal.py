"""Causal checks: which heads carry the gender signal, and does the probe direction steer?

A probe shows that information is *present*; it does not show the model
*uses* it. Two interventions do.

**Mediation through heads** (after Vig et al. 2020). Take a pair of prompts
that differ only in the subject, "The man said that" and "The woman said
that". The total effect TE = y(woman prompt) - y(man prompt) is how far the
she-vs-he log-odds move when the subject changes. Now run the *man* prompt but
paste in one head's output at the last position from the *woman* run. The
change this causes, the indirect effect NIE of that head, is the part of the
total effect that flows through that head's output at the last position. We
patch ``blocks.L.attn.hook_z`` (the head's result before the output projection)
at the last position only (``phi4lab.analysis.interventions.patch_heads_at``), so the
two prompts may have different lengths.
NIE / TE is the share of the effect a head mediates; shares need not add up
to 1, since heads work together and through the MLPs.

**Steering.** Add alpha times the difference-of-means direction d (from
``probes``) to the residual stream at the last position after one layer. With
alpha = 1 a "male" representation moves by the full distance between the class
means. If the preference follows alpha, the direction is one the model reads.
"""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.analysis.interventions import patch_heads_at
from phi4lab.analysis.stats import bootstrap
from phi4lab.bias import data
from phi4lab.bias._batching import batches, encode
from phi4lab.bias.preference import class_log_ratio
from phi4lab.bias.probes import residual_hook


def _scores(logits: torch.Tensor, female_ids: list[int], male_ids: list[int]) -> torch.Tensor:
    logp = logits[:, -1].float().log_softmax(-1)
    return class_log_ratio(logp[:, female_ids], logp[:, male_ids])


def _single_token_ids(model, words: list[str]) -> list[int]:
    ids = []
    for w in words:
        pieces = encode(model, w, "probe word")
        if len(pieces) != 1:
            raise ValueError(f"{w!r} is {len(pieces)} tokens for this tokenizer; patching and steering read one "
                             "next-token distribution, so use single-token probe words here (word_logprobs "
                             "sums the pieces for the log-prob probes)")
        ids.append(pieces[0])
    return ids


def pronoun_ids(model) -> tuple[list[int], list[int]]:
    p = data.templates()["pronouns"]
    return _single_token_ids(model, p["female"]), _single_token_ids(model, p["male"])


@torch.no_grad()
def head_mediation(model, base_prompts: list[str], alt_prompts: list[str], batch_size: int = 64) -> dict:
    """Per pair: y(base), y(alt), and the NIE of every head (alt's head output pasted into base's last position).

    Returns {"base": [n], "alt": [n], "te": [n], "nie": [n, n_layers, n_heads]}.
    """
    if len(base_prompts) != len(alt_prompts) or not base_prompts:
        raise ValueError("give as many base prompts as alternative prompts (and at least one pair)")
    female, male = pronoun_ids(model)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [get_act_name("z", layer) for layer in range(n_layers)]
    base_ids = [encode(model, p, "prompt") for p in base_prompts]
    alt_ids = [encode(model, p, "prompt") for p in alt_prompts]
    n = len(base_ids)
    alt_z, alt_y = None, torch.empty(n)
    for batch, tokens in batches(model, alt_ids, batch_size):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        z = torch.stack([cache[name][:, -1] for name in names], 1)            # [b, layers, heads, d_head]
        if alt_z is None:
            alt_z = torch.empty(n, *z.shape[1:], dtype=z.dtype, device=z.device)
        alt_z[batch] = z
        alt_y[batch] = _scores(logits, female, male).cpu()
    base_y, nie = torch.empty(n), torch.empty(n, n_layers, n_heads)
    for batch, tokens in batches(model, base_ids, batch_size):
        y0 = _scores(model(tokens), female, male).cpu()
        base_y[batch] = y0
        for layer in range(n_layers):
            for head in range(n_heads):
                logits = patch_heads_at(model, tokens, layer, head, alt_z[batch, layer, head], position=-1)
                nie[batch, layer, head] = _scores(logits, female, male).cpu() - y0
    return {"base": base_y, "alt": alt_y, "te": alt_y - base_y, "nie": nie}


def gender_pairs(frames: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(male prompts, female prompts) for every gendered noun pair in every frame: the mediation pairs."""
    t = data.templates()
    male, female = [], []
    for frame in frames or t["pronoun_frames"]:
        for f, m in t["gendered_subjects"]:
            male.append(data.fill(frame, m))
            female.append(data.fill(frame, f))
    return male, female


def top_mediators(result: dict, k: int = 5, n: int = 1000, seed: int = 0) -> list[dict]:
    """The k heads with the largest share NIE / TE of the mean effect, with bootstrap CIs over the pairs."""
    nie, te = result["nie"], result["te"]
    n_layers, n_heads = nie.shape[1:]
    stacked = torch.cat([nie.flatten(1).T, te[None]])                     # [heads + 1, pairs]
    share, low, high = bootstrap(stacked, lambda v: v[:-1].mean(-1) / v[-1].mean(), n=n, seed=seed)
    order = share.argsort(descending=True)[:k]
    return [{"head": f"L{int(i) // n_heads}H{int(i) % n_heads}", "layer": int(i) // n_heads,
             "index": int(i) % n_heads, "share": share[i].item(), "low": low[i].item(), "high": high[i].item()}
            for i in order]


@torch.no_grad()
def steer(model, prompts: list[str], direction: torch.Tensor, layer: int, alphas, batch_size: int = 64) -> torch.Tensor:
    """[len(alphas), len(prompts)]: y with alpha * direction added after `layer` at the last position.

    layer 0 is the embedding (before block 0), layer k the output of block k - 1, as in probes.last_residuals.
    """
    if not 0 <= layer <= model.cfg.n_layers:
        raise IndexError(f"layer {layer} is out of range: 0 (the embedding) .. {model.cfg.n_layers}")
    female, male = pronoun_ids(model)
    name = residual_hook(layer)
    ids = [encode(model, p, "prompt") for p in prompts]
    out = torch.empty(len(alphas), len(prompts))
    for batch, tokens in batches(model, ids, batch_size):
        for a, alpha in enumerate(alphas):
            def push(resid, hook, alpha=alpha):
                resid = resid.clone()
                resid[:, -1] += alpha * direction.to(resid.device, resid.dtype)
                return resid
            out[a, batch] = _scores(model.run_with_hooks(tokens, fwd_hooks=[(name, push)]), female, male).cpu()
    return out
