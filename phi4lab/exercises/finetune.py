"""Checks for course/08_finetuning.ipynb: LoRA counts and merging, attention change, adapter patching, label masks."""

from __future__ import annotations

import torch

from phi4lab.exercises.checking import ExerciseFailure, check_function, run_answer
from phi4lab.exercises.standalone import stand_alone

# ---- Exercise 1: what LoRA trains ---------------------------------------------------------------------------

LORA_COUNT_MISTAKES = {
    "A is [r, in] and B is [out, r]: r * (in + out) numbers, not r * in * out":
        lambda i, o, r: r * i * o,
    "that is the full layer (in * out); LoRA trains only its two thin factors, r * (in + out)":
        lambda i, o, r: i * o,
    "count each factor once: A has r * in numbers, B has out * r":
        lambda i, o, r: 2 * r * (i + o),
}


def check_lora_parameters(fn):
    cases = [(192, 288, 8), (5120, 7680, 8), (5120, 35840, 16), (17920, 5120, 4)]
    check_function(lambda i, o, r: torch.tensor(float(fn(i, o, r))), lambda i, o, r: torch.tensor(float(r * (i + o))),
                   cases, name="lora_parameters", rtol=0, atol=0,
                   mistakes={k: (lambda f: lambda i, o, r: torch.tensor(float(f(i, o, r))))(v)
                             for k, v in LORA_COUNT_MISTAKES.items()})


# ---- Exercise 2: merging an adapter by hand ---------------------------------------------------------------

def _merge_ref(W, A, B, alpha, r):
    return W + (alpha / r) * (B @ A)


MERGE_MISTAKES = {
    "scale the update by alpha / r (peft's `scaling`)": lambda W, A, B, a, r: W + B @ A,
    "the scale is alpha / r, not r / alpha": lambda W, A, B, a, r: W + (r / a) * (B @ A),
    "the update adds to W: W + (alpha / r) B A": lambda W, A, B, a, r: (a / r) * (B @ A),
}


def check_merge(fn):
    g = torch.Generator().manual_seed(0)
    cases = []
    for out, inp, r, alpha in ((6, 4, 2, 4), (12, 8, 4, 16), (5, 9, 1, 2)):
        cases.append((torch.randn(out, inp, generator=g), torch.randn(r, inp, generator=g),
                      torch.randn(out, r, generator=g), alpha, r))
    check_function(fn, _merge_ref, cases, name="merge", mistakes=MERGE_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Exercise 3: how much a head's attention changed -------------------------------------------------------

def _tv_ref(p, q):
    return 0.5 * (p - q).abs().sum(-1).mean(dim=(0, 2))


TV_MISTAKES = {
    "total variation is *half* the L1 distance, so that it lies between 0 and 1":
        lambda p, q: (p - q).abs().sum(-1).mean(dim=(0, 2)),
    "average over the batch and the query positions too: one number per head":
        lambda p, q: 0.5 * (p - q).abs().sum(-1).mean(0).sum(-1),
}


def check_attention_change(fn):
    g = torch.Generator().manual_seed(1)
    cases = []
    for b, h, t in ((2, 3, 5), (1, 4, 7)):
        mask = torch.ones(t, t).tril().bool()
        p = torch.randn(b, h, t, t, generator=g).masked_fill(~mask, -torch.inf).softmax(-1)
        q = torch.randn(b, h, t, t, generator=g).masked_fill(~mask, -torch.inf).softmax(-1)
        cases.append((p, q))
    check_function(fn, _tv_ref, cases, name="attention_change", mistakes=TV_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Exercise 4: the share of a change that one layer's adapter explains ------------------------------------

FRACTION_MISTAKES = {
    "measure the gain from the base: (base - partial) / (base - full)":
        lambda b, f, p: (f - p) / (b - f),
    "the fraction is of the *improvement* (base - full), not of the loss itself":
        lambda b, f, p: (b - p) / b,
}


def check_fraction_explained(fn):
    cases = [(3.0, 2.0, 2.5), (4.2, 3.1, 3.0), (2.0, 1.5, 2.1)]
    check_function(lambda b, f, p: torch.tensor(float(fn(b, f, p)), dtype=torch.float64),
                   lambda b, f, p: torch.tensor((b - p) / (b - f), dtype=torch.float64), cases,
                   name="fraction_explained", rtol=1e-9, atol=1e-12,
                   mistakes={k: (lambda m: lambda b, f, p: torch.tensor(float(m(b, f, p)), dtype=torch.float64))(v)
                             for k, v in FRACTION_MISTAKES.items()})


# ---- Exercise 5: train on the assistant's tokens only -----------------------------------------------------

def _labels_ref(ids, header, end):
    labels = [-100] * len(ids)
    inside = False
    for i, t in enumerate(ids):
        if inside:
            labels[i] = t
            inside = t != end
        elif i + 1 >= len(header) and ids[i + 1 - len(header):i + 1] == header:
            inside = True
    return labels


def _labels_with_header(ids, header, end):
    labels = _labels_ref(ids, header, end)
    for i in range(len(ids) - len(header) + 1):
        if ids[i:i + len(header)] == header:
            labels[i:i + len(header)] = header
    return labels


def _labels_without_end(ids, header, end):
    return [-100 if t == end else t for t in _labels_ref(ids, header, end)]


LABEL_MISTAKES = {
    "keep <|im_end|> in the labels: it is how the model learns to stop (mask it, and generation runs on)":
        _labels_without_end,
    "the header <|im_start|>assistant<|im_sep|> is the prompt's, not the answer's: mask it":
        _labels_with_header,
    "mask everything that is not the assistant's answer (the system and user turns are given, not predicted)":
        lambda ids, h, e: list(ids),
}


def check_assistant_labels(fn):
    S, P, E, A1, A2, U = 90, 91, 92, 7, 6, 8     # <|im_start|>, <|im_sep|>, <|im_end|>, "assist" "ant", "user"
    header = [S, A1, A2, P]
    one = [S, U, P, 11, 12, E] + header + [21, 22, 23, E]
    two = one + [S, U, P, 13, E] + header + [24, E]
    system = [S, 9, P, 30, 31, E] + one
    cases = [(x, header, E) for x in (one, two, system)]
    check_function(lambda *c: torch.tensor(fn(*c)), lambda *c: torch.tensor(_labels_ref(*c)), cases,
                   name="assistant_labels", rtol=0, atol=0,
                   mistakes={k: (lambda m: lambda *c: torch.tensor(m(*c)))(v) for k, v in LABEL_MISTAKES.items()})


# ---- A LoRA layer, by hand ------------------------------------------------------------------------------

def lora_forward_reference(x, W, A, B, alpha, r):
    """The output of a linear layer W with a LoRA adapter (A [r, in], B [out, r]) on input x [..., in]."""
    return x @ W.T + (alpha / r) * ((x @ A.T) @ B.T)


LORA_FORWARD_MISTAKES = {
    "scale the adapter's output by alpha / r (peft's `scaling`)": lambda x, W, A, B, a, r: x @ W.T + (x @ A.T) @ B.T,
    "the adapter *adds* to the frozen layer's output: x W^T + (alpha / r) x A^T B^T":
        lambda x, W, A, B, a, r: (a / r) * ((x @ A.T) @ B.T),
    "the scale is alpha / r, not r / alpha": lambda x, W, A, B, a, r: x @ W.T + (r / a) * ((x @ A.T) @ B.T),
}


def check_lora_forward(fn):
    g = torch.Generator().manual_seed(3)
    cases = []
    for shape, out, inp, r, alpha in (((2, 5), 6, 5, 2, 4), ((3, 4, 8), 12, 8, 4, 16), ((7, 9), 5, 9, 1, 2)):
        cases.append((torch.randn(*shape, generator=g), torch.randn(out, inp, generator=g),
                      torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g), alpha, r))
    check_function(fn, lora_forward_reference, cases, name="lora_forward", mistakes=LORA_FORWARD_MISTAKES,
                   rtol=1e-5, atol=1e-5)


# ---- A sequence's log-probability ----------------------------------------------------------------------

def sequence_logprobs_reference(logits, labels):
    """[batch]: the sum of log p(label_t | tokens before t) over the positions whose label is not -100."""
    logp = logits[:, :-1].float().log_softmax(-1)
    target = labels[:, 1:]
    mask = target != -100
    picked = logp.gather(-1, target.clamp_min(0)[..., None])[..., 0]
    return (picked * mask).sum(-1)


SEQUENCE_MISTAKES = {
    "logits at position t predict the token at t + 1: compare logits[:, :-1] with labels[:, 1:]":
        lambda lg, lb: (lg.float().log_softmax(-1).gather(-1, lb.clamp_min(0)[..., None])[..., 0]
                        * (lb != -100)).sum(-1),
    "sum the log-probabilities over the answer's tokens: an answer's probability is the product of its "
    "tokens' probabilities, so its log-probability is their sum, not their mean": lambda lg, lb: sequence_logprobs_reference(lg, lb) / (lb[:, 1:] != -100).sum(-1),
    "take log-probabilities (log_softmax), not raw logits":
        lambda lg, lb: (lg[:, :-1].float().gather(-1, lb[:, 1:].clamp_min(0)[..., None])[..., 0]
                        * (lb[:, 1:] != -100)).sum(-1),
}


def check_sequence_logprobs(fn):
    g = torch.Generator().manual_seed(4)
    cases = []
    for b, t, v in ((2, 6, 11), (3, 9, 7)):
        logits = torch.randn(b, t, v, generator=g) * 2
        labels = torch.randint(0, v, (b, t), generator=g)
        labels[:, : t // 2] = -100                      # the prompt is not scored
        labels[0, -1] = -100                            # padding at the end of one row
        cases.append((logits, labels))
    check_function(fn, sequence_logprobs_reference, cases, name="sequence_logprobs", mistakes=SEQUENCE_MISTAKES,
                   rtol=1e-5, atol=1e-5)


# ---- The DPO loss ----------------------------------------------------------------------------------------
# Rafailov et al. 2023, "Direct Preference Optimization", eq. 7: the policy's log-ratio to the frozen
# reference on the chosen answer, minus the same on the rejected one, times beta, through -log sigmoid.

def dpo_loss_reference(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


DPO_MISTAKES = {
    "measure each answer against the frozen reference model: the reward is beta * (log pi(y|x) - log pi_ref(y|x)); "
    "without it DPO is unanchored and drifts anywhere that widens the gap":
        lambda pc, pr, rc, rr, b: -torch.nn.functional.logsigmoid(b * (pc - pr)).mean(),
    "the chosen answer's reward minus the rejected one's, not the other way round":
        lambda pc, pr, rc, rr, b: dpo_loss_reference(pr, pc, rr, rc, b),
    "the loss is -log sigmoid(beta * margin): the negative log-likelihood that the chosen answer wins":
        lambda pc, pr, rc, rr, b: -torch.sigmoid(b * ((pc - rc) - (pr - rr))).mean(),
    "beta scales the margin inside the sigmoid; outside it only rescales the loss":
        lambda pc, pr, rc, rr, b: -b * torch.nn.functional.logsigmoid((pc - rc) - (pr - rr)).mean(),
    "average over the pairs (mean), so the loss does not grow with the batch":
        lambda pc, pr, rc, rr, b: -torch.nn.functional.logsigmoid(b * ((pc - rc) - (pr - rr))).sum(),
}


def check_dpo_loss(fn):
    g = torch.Generator().manual_seed(5)
    cases = []
    for n, beta in ((4, 0.1), (7, 0.5), (3, 1.0)):
        cases.append(tuple(-torch.rand(n, generator=g) * 20 for _ in range(4)) + (beta,))
    check_function(fn, dpo_loss_reference, cases, name="dpo_loss", mistakes=DPO_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Pivotal Token Search ---------------------------------------------------------------------------------
# Phi-4 technical report, section 4.3: estimate p(success | prefix); bisect the answer while a segment
# changes it by at least p_gap; single tokens that do are pivotal. Here p(success) is exact and the
# split is at the middle token (the report splits where the cumulative log-probability reaches half).

def pivotal_tokens_reference(p_success, tokens, p_gap):
    """Positions of the pivotal tokens of `tokens`, found by recursive bisection, in order."""
    return _bisect(p_success, tokens, p_gap)


def _bisect(p_success, tokens, p_gap, *, prefix_kept=True):
    """The reference; with prefix_kept=False, the mistake of measuring every segment after the empty prefix."""
    found = []

    def subdivide(start, end):                  # the segment tokens[start:end], after the prefix tokens[:start]
        before = list(tokens[:start]) if prefix_kept else []
        change = abs(p_success(before + list(tokens[start:end])) - p_success(before))
        if change < p_gap:
            return
        if end - start == 1:
            found.append(start)
            return
        middle = (start + end) // 2
        subdivide(start, middle)
        subdivide(middle, end)

    subdivide(0, len(tokens))
    return found


def _every_big_step(p_success, tokens, p_gap):
    return [i for i in range(len(tokens)) if abs(p_success(tokens[:i + 1]) - p_success(tokens[:i])) >= p_gap]


def _right_half_from_empty_prefix(p_success, tokens, p_gap):
    return _bisect(p_success, tokens, p_gap, prefix_kept=False)


PIVOTAL_MISTAKES = {
    "measure a segment after everything before it: the right half's prefix is the prefix *plus the left half*, "
    "not the empty prefix": _right_half_from_empty_prefix,
}


def toy_success(tokens, length: int = 12, need: int = 7, stay: float = 0.8) -> float:
    """Exact p(success | prefix) for the toy of notebook 08: a policy writes `length` bits, repeating its last
    bit with probability `stay` (the first is a coin flip); success is at least `need` ones."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def p(remaining, ones, last):
        if remaining == 0:
            return float(ones >= need)
        if last is None:
            return 0.5 * p(remaining - 1, ones + 1, 1) + 0.5 * p(remaining - 1, ones, 0)
        same = p(remaining - 1, ones + last, last)
        other = p(remaining - 1, ones + 1 - last, 1 - last)
        return stay * same + (1 - stay) * other

    tokens = list(tokens)
    return p(length - len(tokens), sum(tokens), tokens[-1] if tokens else None)


def check_pivotal_tokens(fn):
    """fn(p_success, tokens, p_gap) -> positions; compared with the bisection on toy answers with exact p."""
    cases = [([1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0], 0.2), ([0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1], 0.15),
             ([1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0], 0.2), ([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 0.1)]
    for tokens, gap in cases:
        mine = run_answer(fn, "pivotal_tokens", toy_success, list(tokens), gap)
        expected = pivotal_tokens_reference(toy_success, tokens, gap)
        if not isinstance(mine, (list, tuple)) or list(mine) != expected:
            for message, wrong in PIVOTAL_MISTAKES.items():
                if isinstance(mine, (list, tuple)) and list(mine) == wrong(toy_success, tokens, gap):
                    raise ExerciseFailure(f"pivotal_tokens({tokens}, p_gap={gap}): {message}")
            every = _every_big_step(toy_success, tokens, gap)
            if isinstance(mine, (list, tuple)) and list(mine) == every and every != expected:
                raise ExerciseFailure(f"pivotal_tokens({tokens}, p_gap={gap}) returned every token that moves "
                                      f"p(success) by {gap} or more, {every}: right, but that is the exhaustive scan. "
                                      "Bisect: look inside a segment only if the whole segment moves p(success) by "
                                      "p_gap or more")
            raise ExerciseFailure(f"pivotal_tokens({tokens}, p_gap={gap}) returned {mine!r}, expected {expected} "
                                  "(positions, in order)")
    print(f"\N{CHECK MARK} pivotal_tokens: the bisection's pivotal tokens on {len(cases)} toy answers")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.

def fraction_explained_reference(base, full, partial):
    """The share of the full fine-tune's loss improvement that the partial one reaches."""
    return (base - partial) / (base - full)


stand_alone(globals(), {
    "merge": _merge_ref, "attention_change": _tv_ref, "fraction_explained": fraction_explained_reference,
    "assistant_labels": _labels_ref, "lora_forward": lora_forward_reference,
    "sequence_logprobs": sequence_logprobs_reference, "dpo_loss": dpo_loss_reference,
    "pivotal_tokens": pivotal_tokens_reference,
})
