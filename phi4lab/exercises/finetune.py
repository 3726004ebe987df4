"""Checks for course/08_finetuning.ipynb: LoRA counts and merging, attention change, adapter patching, label masks."""

from __future__ import annotations

import torch

from phi4lab.exercises.checking import check_function

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
