"""Head detectors: which attention heads do a recognisable job?

An attention head's *pattern* says, for every query position, how it splits
its attention over the key positions (each row sums to 1). Some jobs leave an
unmistakable pattern:

- **Previous-token heads** attend from position i to i-1. They let the next
  layer know "what came just before me", the first half of an induction circuit.
- **Duplicate-token heads** attend from a token to earlier copies of itself.
- **Induction heads** attend from a token to the token *after* its earlier
  copy: in "... Harry Potter ... Harry", the second "Harry" looks at
  "Potter", and copying it predicts the continuation. On a random sequence
  repeated twice, a perfect induction head puts all its attention, for every
  query in the second copy, on the key one position after the query's earlier
  occurrence (Olsson et al. 2022).
- **Sink heads** park their attention on the first token when they have
  nothing better to do.

Each score is the mean attention on the target entries, so 1 is a perfect
head and 0 one that never looks there. Scores are restricted to the query
positions where a target exists (the second copy, for induction), so a
perfect induction head scores near 1, not 0.5 as with TransformerLens'
``detect_head`` "mul" score on a twice-repeated sequence.

Scores come back as a [n_layers, n_heads] tensor of *query* heads. Phi-4
shares each key/value head among 4 query heads (grouped-query attention);
``phi4lab.analysis.heads.by_kv_group`` reshapes the scores so the heads that
share K and V sit together.
"""

from __future__ import annotations

import itertools
import math

import torch

from phi4lab.model.bridge import is_bridge


def attention_patterns(model, tokens: torch.Tensor) -> torch.Tensor:
    """Attention patterns of every layer: [n_layers, batch, n_heads, query, key].

    Accepts a phi4lab/TransformerLens bridge (uses its ``hook_pattern`` hook
    points) or a Hugging Face causal LM loaded with eager attention.
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
    with torch.no_grad():
        if is_bridge(model):
            _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("attn.hook_pattern"))
            return cache.stack_activation("pattern")          # TransformerLens' ActivationCache, layer 0 first
        impl = getattr(model.config, "_attn_implementation", "eager")
        if impl != "eager":
            raise ValueError(f"attention weights need attn_implementation='eager', this model uses {impl!r}")
        device = next(model.parameters()).device
        out = model(tokens.to(device), output_attentions=True)
        return torch.stack(out.attentions).float().cpu()


def random_repeated_tokens(n_tokens: int = 25, repeats: int = 2, batch: int = 8, *, vocab: int,
                           exclude: set[int] | frozenset = frozenset(), seed: int = 0) -> torch.Tensor:
    """[batch, n_tokens * repeats] ids: a random segment repeated, drawn from ids not in `exclude`."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([i for i in range(vocab) if i not in exclude])
    segment = allowed[torch.randint(len(allowed), (batch, n_tokens), generator=g)]
    return segment.repeat(1, repeats)


def _mean_diagonal(patterns: torch.Tensor, offset: int, first_query: int) -> torch.Tensor:
    # patterns [L, B, H, Q, K]; entries (q, q - offset) for q >= first_query.
    q = torch.arange(first_query, patterns.shape[-2])
    return patterns[..., q, q - offset].mean(dim=(1, 3))


def previous_token_scores(patterns: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position to the one before it: [L, H]."""
    return _mean_diagonal(patterns, 1, 1)


def duplicate_token_scores(patterns: torch.Tensor, period: int, prefix: int = 0) -> torch.Tensor:
    """On a sequence repeated with `period`, attention to the same token one period back.

    prefix: tokens before the first copy (1 for a prompt that starts with BOS).
    """
    return _mean_diagonal(patterns, period, period + prefix)


def induction_scores(patterns: torch.Tensor, period: int, prefix: int = 0) -> torch.Tensor:
    """On a sequence repeated with `period`, attention to the token after the earlier copy.

    Query q (in a later copy) -> key q - period + 1, for every query of the
    later copies, q >= period, as Olsson et al. (2022) count them. The first
    query of the second copy, q = period, repeats token 0, so its target is
    key 1: a valid induction target like any other.

    prefix: tokens before the first copy. A prompt that starts with BOS (as
    ``analysis.planted.repeated_prompt`` does) has prefix=1: its second copy
    starts at period + 1, and query period is still in the first copy.
    """
    return _mean_diagonal(patterns, period - 1, period + prefix)


def sink_scores(patterns: torch.Tensor) -> torch.Tensor:
    """Mean attention paid to position 0 by queries after it: [L, H]."""
    return patterns[..., 1:, 0].mean(dim=(1, 3))


def by_kv_group(scores: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """[L, H] -> [L, n_kv_heads, H // n_kv_heads]: query heads grouped by shared K/V head."""
    L, H = scores.shape
    return scores.reshape(L, n_kv_heads, H // n_kv_heads)


def top_heads(scores: torch.Tensor, k: int = 3) -> list[tuple[int, int, float]]:
    """The k best (layer, head, score) triples, best first."""
    flat = scores.flatten()
    idx = flat.argsort(descending=True)[:k]
    H = scores.shape[1]
    return [(int(i) // H, int(i) % H, float(flat[i])) for i in idx]


# ---- grouped-query attention

def _one_prompt(patterns: torch.Tensor) -> torch.Tensor:
    """[n_layers, n_heads, query, key] on the CPU in fp32, refused with the fix when it is not that shape."""
    p = torch.as_tensor(patterns).detach().float().cpu()
    if p.ndim == 5 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim != 4:
        raise ValueError(f"expected patterns [layers, heads, query, key], got {tuple(p.shape)}; "
                         "phi4lab.viz.attention.patterns_from(model, tokens) gives them")
    return p.clamp_min(0)


def _entropy_bits(x: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(x, x).sum(-1) / math.log(2)        # xlogy: 0 * log 0 = 0, no clamping needed


def _js_bits(p: torch.Tensor, own: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Jensen-Shannon divergence of heads a and b (dim 1 of p), averaged over queries: [n_layers].

    JS(a, b) = H((a + b) / 2) - (H(a) + H(b)) / 2, with each head's own entropy `own` computed once.
    """
    return (_entropy_bits((p[:, a] + p[:, b]) / 2) - (own[:, a] + own[:, b]) / 2).mean(-1)


def _check_groups(n_heads: int, n_kv_heads: int) -> None:
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv_heads} key/value heads evenly")


def kv_group_divergence(patterns: torch.Tensor, n_kv_heads: int) -> torch.Tensor:
    """How differently the query heads that share a K/V head look: [n_layers, n_kv_heads], in bits.

    patterns: [n_layers, n_heads, query, key] for one prompt (or [n_layers, 1, n_heads, query, key]).

    For each pair of heads in a group, the Jensen-Shannon divergence between
    their attention rows, averaged over query positions and pairs. 0: the
    heads attend identically; 1: they never attend to the same tokens.
    """
    p = _one_prompt(patterns)
    L, H = p.shape[:2]
    _check_groups(H, n_kv_heads)
    per = H // n_kv_heads
    if per == 1:
        return torch.zeros(L, n_kv_heads)
    own = _entropy_bits(p)                                     # [L, H, Q]
    out = torch.zeros(L, n_kv_heads)
    pairs = list(itertools.combinations(range(per), 2))
    for g in range(n_kv_heads):                                # only the pairs inside each group
        for a, b in pairs:
            out[:, g] += _js_bits(p, own, g * per + a, g * per + b)
    return out / len(pairs)


def head_pair_divergence(patterns: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence between every two query heads of a layer: [n_layers, n_heads, n_heads], in bits.

    The baseline for kv_group_divergence: a divergence within a key/value group means
    something only beside the divergence between heads that share nothing.
    """
    p = _one_prompt(patterns)
    own = _entropy_bits(p)                                     # [L, H, Q]
    H = p.shape[1]
    out = torch.zeros(p.shape[0], H, H)
    # One pair at a time: all pairs at once would hold [L, H, H, Q, K] (tens of GB for Phi-4 at 512 tokens).
    for a, b in itertools.combinations(range(H), 2):
        out[:, a, b] = out[:, b, a] = _js_bits(p, own, a, b)
    return out


def group_means(pairs: torch.Tensor, n_kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From head_pair_divergence's [n_layers, H, H]: (mean over pairs sharing a K/V head, mean over pairs not).

    Query head h reads key/value head h // (n_heads / n_kv_heads), as in Hugging Face's repeat_kv.
    """
    H = pairs.shape[-1]
    _check_groups(H, n_kv_heads)
    group = torch.arange(H) // (H // n_kv_heads)
    same = (group[:, None] == group[None, :]) & ~torch.eye(H, dtype=torch.bool)
    other = group[:, None] != group[None, :]
    if not same.any() or not other.any():
        raise ValueError("within and across needs at least two heads per group and at least two groups")
    return pairs[:, same].mean(-1), pairs[:, other].mean(-1)


def within_and_across_groups(patterns: torch.Tensor, n_kv_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean divergence per layer between heads sharing a key/value head, and between heads of different ones.

    Returns (within [n_layers], across [n_layers]), in bits.
    """
    return group_means(head_pair_divergence(patterns), n_kv_heads)
