"""Checks for course/05_attention_and_hooks.ipynb: cache sizes, attention by hand, head detectors, GQA."""

from __future__ import annotations

import functools

import torch

from phi4lab.analysis import heads, planted
from phi4lab.analysis.cache_plan import plan_cache
from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model import config as phi4config
from phi4lab.scratch.architecture import rotate_half

# ---- Exercise 1: what caching the attention patterns costs -----------------------------------

def _pattern_bytes_ref(cfg, seq_len, batch, dtype):
    return plan_cache(cfg, seq_len, batch, names=lambda n: n.endswith("attn.hook_pattern"), dtype=dtype).total_bytes


def _bytes(dtype):
    return torch.tensor([], dtype=dtype).element_size()


PATTERN_MISTAKES = {
    "you used the key/value heads: every *query* head has its own pattern (GQA shares K and V, not patterns)":
        lambda c, t, b, d: c.num_hidden_layers * b * c.num_key_value_heads * t * t * _bytes(d),
    "a pattern is [query, key]: it grows with seq_len squared, not seq_len":
        lambda c, t, b, d: c.num_hidden_layers * b * c.num_attention_heads * t * _bytes(d),
    "the element size depends on the dtype (2 bytes in bf16, 4 in fp32)":
        lambda c, t, b, d: c.num_hidden_layers * b * c.num_attention_heads * t * t * 4,
    "don't forget the batch: one pattern per prompt":
        lambda c, t, b, d: c.num_hidden_layers * c.num_attention_heads * t * t * _bytes(d),
    "one pattern per layer: multiply by the number of layers":
        lambda c, t, b, d: b * c.num_attention_heads * t * t * _bytes(d),
}


def check_pattern_cache_bytes(fn):
    full = phi4config.PHI4
    cases = [(phi4config.scaled(d_model=64, n_layers=3), 17, 2, torch.float32),
             (phi4config.scaled(d_model=192, n_layers=4), 256, 1, torch.float32),
             (full, 512, 1, torch.bfloat16), (full, 2048, 1, torch.bfloat16), (full, 100, 3, torch.float16)]
    check_function(fn, _pattern_bytes_ref, cases, name="pattern_cache_bytes", mistakes=PATTERN_MISTAKES)


# ---- Exercise 2: an attention pattern by hand, with GQA -----------------------------------------

def rotate(x, cos, sin):
    """Rotary embedding, rotate-half style (given, not an exercise here; notebook 01 builds it)."""
    # x is [batch, seq, heads, d_head] as cached at hook_q/hook_k; cos/sin are [batch, seq, d_head]
    return x * cos[:, :, None] + rotate_half(x) * sin[:, :, None]


def _pattern_variant(scale=True, mask=True, rope=True, tile=False):
    """The reference pattern, or (with a flag off) one of the mistakes it diagnoses."""
    def f(q, k, cos, sin):
        if rope:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        group = q.shape[2] // k.shape[2]
        k = k.repeat(1, 1, group, 1) if tile else k.repeat_interleave(group, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / (q.shape[-1] ** 0.5 if scale else 1)
        if mask:
            T = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        return scores.softmax(-1)
    return f


_pattern_ref = _pattern_variant()


ATTENTION_MISTAKES = {
    "query head h shares key/value head h // (n_heads // n_kv_heads): use repeat_interleave, not repeat "
    "(repeat tiles the KV heads 0,1,0,1,... instead of 0,0,...,1,1,...)": _pattern_variant(tile=True),
    "divide the scores by sqrt(d_head) before the softmax": _pattern_variant(scale=False),
    "no causal mask: a query may only attend to itself and earlier keys (fill key > query with -inf)":
        _pattern_variant(mask=False),
    "rotate q and k with `rotate` first: the position information is in the rotation": _pattern_variant(rope=False),
}


def check_attention_pattern(fn, model=None, cache=None, layer: int = 1):
    g = torch.Generator().manual_seed(0)
    cases = []
    for b, t, h, kv, d in ((1, 5, 4, 2, 8), (2, 7, 8, 2, 6), (1, 6, 6, 3, 4)):
        cos = torch.randn(b, t, d, generator=g).cos()
        sin = (1 - cos ** 2).sqrt()
        cases.append((torch.randn(b, t, h, d, generator=g), torch.randn(b, t, kv, d, generator=g), cos, sin))
    check_function(fn, _pattern_ref, cases, name="attention_pattern", mistakes=ATTENTION_MISTAKES,
                   rtol=1e-4, atol=1e-6)
    if cache is not None:
        a = f"blocks.{layer}.attn."
        mine = fn(cache[a + "hook_q"], cache[a + "hook_k"], cache[a + "hook_cos"], cache[a + "hook_sin"])
        if not torch.allclose(mine, cache[a + "hook_pattern"], atol=1e-5):
            raise ExerciseFailure("attention_pattern passes the unit cases but differs from the model's own "
                                  f"{a}hook_pattern: check the head order of your output ([batch, head, query, key])")
        print(f"\N{CHECK MARK} and it reproduces the model's {a}hook_pattern")


# ---- Exercises 3 and 4: head detectors -----------------------------------------------------------

def _patterns_cases():
    g = torch.Generator().manual_seed(1)
    out = []
    for L, B, H, T in ((2, 2, 4, 12), (3, 1, 8, 20)):
        x = torch.randn(L, B, H, T, T, generator=g) * 2
        x = x.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        out.append((x,))
    return out


PREV_MISTAKES = {
    "start at query 1: query 0 has no previous token (and always attends to itself with weight 1)":
        lambda p: p.diagonal(offset=-1, dim1=-2, dim2=-1).sum(-1).div(p.shape[-1]).mean(1),
    "the diagonal below the main one is offset=-1 (keys one position before the query); "
    "offset=+1 is the future, which the mask makes 0":
        lambda p: p.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(1, -1)),
    "that is the self-attention diagonal (offset 0), not the previous token":
        lambda p: p.diagonal(offset=0, dim1=-2, dim2=-1).mean(dim=(1, -1)),
}


def check_previous_token_score(fn):
    check_function(fn, heads.previous_token_scores, _patterns_cases(), name="previous_token_score",
                   mistakes=PREV_MISTAKES, rtol=1e-5, atol=1e-6)
    _check_on_planted(fn, "previous_token", lambda f, p, period: f(p))


def _ind_cases():
    return [(p, period) for (p,), period in zip(_patterns_cases(), (6, 10))]


INDUCTION_MISTAKES = {
    "that is the duplicate-token head: an induction head attends to the token *after* the earlier copy, "
    "key q - period + 1": lambda p, n: heads.duplicate_token_scores(p, n),
    "average only over queries in the second copy (q >= period): earlier queries have no earlier copy":
        lambda p, n: p.diagonal(offset=-(n - 1), dim1=-2, dim2=-1).mean(dim=(1, -1)),
    "start at q = period, not period + 1: the second copy's first query repeats token 0, and its "
    "target, key 1, is an induction target like any other":
        lambda p, n: p[..., torch.arange(n + 1, p.shape[-1]), torch.arange(n + 1, p.shape[-1]) - n + 1].mean((1, 3)),
    "the key one *before* the earlier copy (q - period - 1) is off by two: it is q - period + 1":
        lambda p, n: p[..., torch.arange(n, p.shape[-1]), torch.arange(n, p.shape[-1]) - n - 1].mean((1, 3)),
}


def check_induction_score(fn):
    check_function(fn, heads.induction_scores, _ind_cases(), name="induction_score",
                   mistakes=INDUCTION_MISTAKES, rtol=1e-5, atol=1e-6)
    _check_on_planted(fn, "induction", lambda f, p, period: f(p, period))


def _check_on_planted(fn, job, call):
    """The known-answer test: phi4lab's planted-weights model has this head at PLANTED[job]."""
    model = planted.planted_model()
    period = 8
    # The planted prompt starts with BOS; without it, the copies start at 0 and period, as the exercise assumes.
    pat = heads.attention_patterns(model, planted.repeated_prompt(period, 2, 4))[..., 1:, 1:]
    (layer, head, score), = heads.top_heads(call(fn, pat, period), 1)
    if (layer, head) != planted.PLANTED[job]:
        raise ExerciseFailure(f"on the planted model your detector ranks L{layer}H{head} first, but the "
                              f"{job.replace('_', '-')} head was planted at L{planted.PLANTED[job][0]}H"
                              f"{planted.PLANTED[job][1]}")
    print(f"\N{CHECK MARK} on the planted model it finds the hand-made head L{layer}H{head} (score {score:.2f})")


# ---- Exercise 5: which key/value head does a query head use? -----------------------------------

def _kv_ref(head, n_heads, n_kv_heads):
    return head // (n_heads // n_kv_heads)


def check_kv_head_of(fn):
    cases = [(h, 8, 2) for h in range(8)] + [(h, 40, 10) for h in (0, 3, 4, 17, 39)] + [(5, 6, 6), (5, 6, 1)]
    check_function(fn, _kv_ref, cases, name="kv_head_of", mistakes={
        "query heads are grouped in contiguous blocks (0-3 share KV head 0 in Phi-4), not dealt round-robin: "
        "use integer division by the group size, not modulo": lambda h, n, kv: h % kv,
        "divide by the group size n_heads // n_kv_heads, not by n_kv_heads": lambda h, n, kv: h // kv,
    })


# ---- Exercise 6: Jensen-Shannon divergence --------------------------------------------------------

def _js_ref(p, q):
    m = (p + q) / 2

    def kl(a, b):
        return (torch.special.xlogy(a, a) - torch.special.xlogy(a, b)).sum(-1)
    return (kl(p, m) + kl(q, m)) / 2 / torch.log(torch.tensor(2.0, dtype=p.dtype))


def check_js_divergence(fn):
    g = torch.Generator().manual_seed(2)
    cases = []
    for shape in ((5,), (3, 7), (2, 4, 6)):
        p = torch.rand(*shape, generator=g).softmax(-1)
        q = torch.rand(*shape, generator=g).softmax(-1)
        cases.append((p, q))
    one_hot = torch.eye(4)
    cases += [(one_hot[0], one_hot[1]), (one_hot[2], one_hot[2])]     # disjoint: 1 bit; equal: 0
    check_function(fn, _js_ref, cases, name="js_divergence", rtol=1e-4, atol=1e-6, mistakes={
        "that is in nats: divide by ln 2 for bits (so disjoint distributions score exactly 1)":
            lambda p, q: _js_ref(p, q) * torch.log(torch.tensor(2.0)),
        "compare each distribution with the mixture m = (p + q) / 2, not with each other (that is KL, "
        "which is not symmetric and is infinite when q has zeros where p does not)":
            lambda p, q: (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(-1) / torch.log(torch.tensor(2.0)),
    })


# ---- An induction score on any text ------------------------------------------------------------
# On a repeated random sequence the target of each query is one known key. On real text, a token may
# have occurred several times before, or never: the targets of query q are the keys k < q whose
# previous token equals the token at q (the token *after* each earlier occurrence), and only queries
# with at least one target count.

def _targets(tokens):
    """[batch, query, key] bool: key k is a target of query q (1 <= k < q, tokens[k - 1] == tokens[q])."""
    T = tokens.shape[-1]
    earlier = torch.ones(T, T, dtype=torch.bool).tril(-1)                    # k < q
    earlier[:, 0] = False                                                     # k = 0 has no previous token
    prev = torch.cat([tokens.new_full(tokens.shape[:-1] + (1,), -1), tokens[..., :-1]], -1)   # token before k
    return (prev[..., None, :] == tokens[..., :, None]) & earlier


def natural_induction_reference(patterns, tokens, *, duplicate=False, mean_over_targets=False, every_query=False):
    """[layers, heads]: attention from each query to its induction targets, summed, averaged over queries with one."""
    if duplicate:             # the earlier occurrence itself, not the token after it
        T = tokens.shape[-1]
        targets = (tokens[..., None, :] == tokens[..., :, None]) & torch.ones(T, T, dtype=torch.bool).tril(-1)
    else:
        targets = _targets(tokens)
    mass = (patterns * targets[None, :, None]).sum(-1)                        # [layers, batch, heads, query]
    if mean_over_targets:
        mass = mass / targets.sum(-1).clamp_min(1)[None, :, None]
    has = targets.any(-1) if not every_query else torch.ones(targets.shape[:-1], dtype=torch.bool)
    weight = has[None, :, None].to(patterns.dtype)
    return (mass * weight).sum((1, 3)) / weight.sum((1, 3)).clamp_min(1)


INDUCTION_TEXT_MISTAKES = {
    "that is a duplicate-token head's target, the earlier occurrence itself: an induction head attends to the "
    "token *after* it (key k with tokens[k - 1] == tokens[q])":
        lambda p, t: natural_induction_reference(p, t, duplicate=True),
    "a token that occurred several times before has several targets, and an induction head may split its "
    "attention among them: sum the attention over all targets, do not average it":
        lambda p, t: natural_induction_reference(p, t, mean_over_targets=True),
    "average only over the queries that have at least one target: a query whose token never occurred before "
    "gives an induction head nothing to do": lambda p, t: natural_induction_reference(p, t, every_query=True),
}


def check_natural_induction_score(fn):
    """fn(patterns [layers, batch, heads, q, k], tokens [batch, T]) -> [layers, heads]."""
    g = torch.Generator().manual_seed(4)
    cases = []
    for layers, batch, heads_, T, vocab in ((2, 2, 3, 9, 4), (1, 3, 2, 12, 6), (3, 1, 4, 15, 5)):
        scores = torch.randn(layers, batch, heads_, T, T, generator=g) * 2
        patterns = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        cases.append((patterns, torch.randint(0, vocab, (batch, T), generator=g)))
    check_function(fn, natural_induction_reference, cases, name="natural_induction_score",
                   mistakes=INDUCTION_TEXT_MISTAKES, rtol=1e-5, atol=1e-6)
    # On a repeated sequence of distinct tokens it is phi4lab's induction score.
    period = 7
    tokens = torch.randperm(50, generator=g)[:period].repeat(2)[None]
    scores = torch.randn(1, 1, 2, 2 * period, 2 * period, generator=g)
    patterns = scores.masked_fill(~torch.ones(2 * period, 2 * period, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
    mine, theirs = fn(patterns, tokens), heads.induction_scores(patterns, period)
    if not torch.allclose(torch.as_tensor(mine).double(), theirs.double(), atol=1e-6):
        raise ExerciseFailure("on a repeated sequence of distinct tokens your score should equal "
                              "heads.induction_scores (one target per query of the second copy)")
    print("\N{CHECK MARK} natural_induction_score: right on random tokens with repeats, and equal to "
          "heads.induction_scores on a repeated sequence")


# ---- Within a group, and across groups --------------------------------------------------------

def _within_across_reference(pairs, n_kv_heads):
    return heads.group_means(pairs, n_kv_heads)


WITHIN_MISTAKES = {
    "leave out each head's divergence from itself (the diagonal, always 0): it is not a pair":
        lambda p, g: (lambda H: (torch.stack([l[(torch.arange(H)[:, None] // (H // g)) == (torch.arange(H)[None, :]
                                                                                           // (H // g))].mean()
                                              for l in p]), _within_across_reference(p, g)[1]))(p.shape[-1]),
    "query head h reads key/value head h // (n_heads / n_kv_heads): consecutive heads share, not every "
    "n_kv_heads-th one": lambda p, g: _within_across_reference(p[:, _interleaved(p.shape[-1], g)][
        :, :, _interleaved(p.shape[-1], g)], g),
}


def _interleaved(H, g):
    """An order of the heads that puts h, h + g, h + 2g, ... together (the wrong grouping, made consecutive)."""
    return torch.arange(H).reshape(H // g, g).T.flatten()


def check_within_across(fn):
    """fn(pairs [layers, H, H], n_kv_heads) -> (within [layers], across [layers])."""
    g = torch.Generator().manual_seed(9)
    cases = []
    for layers, H, kv in ((2, 8, 2), (3, 6, 3), (1, 12, 4)):
        a = torch.rand(layers, H, H, generator=g)
        pairs = (a + a.transpose(1, 2)) / 2
        pairs = pairs * (1 - torch.eye(H))
        cases.append((pairs, kv))
    check_function(functools.wraps(fn)(lambda p, k: tuple(fn(p, k))), _within_across_reference, cases, name="within_across",
                   mistakes=WITHIN_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {
    "pattern_cache_bytes": _pattern_bytes_ref, "previous_token_score": heads.previous_token_scores,
    "induction_score": heads.induction_scores, "natural_induction_score": natural_induction_reference,
    "kv_head_of": _kv_ref, "js_divergence": _js_ref, "within_across": _within_across_reference,
})
