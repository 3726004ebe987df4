"""Checks for course/13_evaluation.ipynb: scoring by hand, standard errors, decontamination,
abstention, agreement, and the ablation hook."""

from __future__ import annotations

import math
import operator

import torch

from phi4lab.evaluation import decontamination, scoring
from phi4lab.exercises.checking import ExerciseFailure, check_function
from phi4lab.exercises.interventions import zero_heads_hook_reference
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model.bridge import logits_of

# ---- Exercise 1: a continuation's log-likelihood -------------------------------------------------------

CONTINUATIONS = [("To be, or not to be, that is the", " question"),
                 ("    def close(self):\n        self.", "_closed = True"),
                 ("Once more unto the breach, dear friends, ", "once more"),
                 ("import os\nimport", " sys")]


def _ll_ref(model, context, continuation):
    return float(scoring.continuation_logprobs(model, context, continuation)[0].sum())


def _ll_separately(model, context, continuation):
    tok = model.tokenizer
    ctx, cont = tok.encode(context), tok.encode(continuation)
    logits = logits_of(model, torch.tensor([ctx + cont]))[0, len(ctx) - 1:-1]
    return float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont)[:, None]).sum())


def _ll_off_by_one(model, context, continuation):
    ctx, cont = scoring.encode_pair(model.tokenizer, context, continuation)
    logits = logits_of(model, torch.tensor([ctx + cont]))[0, len(ctx):]
    return float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont)[:, None]).sum())


def _ll_no_space_move(model, context, continuation):
    tok = model.tokenizer
    whole, n = tok.encode(context + continuation), len(tok.encode(context))
    cont = whole[n:]
    logits = logits_of(model, torch.tensor([whole]))[0, n - 1:-1]
    return float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(cont)[:, None]).sum())


LL_MISTAKES = {
    "tokenize context + continuation together and take the tokens after the context's own: the "
    "continuation tokenized alone starts differently (a word's first token carries its space)": _ll_separately,
    "the logits at position t predict token t + 1: read the continuation's log-probabilities from the "
    "positions just *before* each of its tokens": _ll_off_by_one,
    "move the context's trailing spaces to the continuation before tokenizing (lm-eval does; a "
    "space at the end of the context is tokenized on its own otherwise)": _ll_no_space_move,
}


def check_loglikelihood(fn, model):
    with torch.no_grad():
        check_function(lambda c, x: fn(model, c, x), lambda c, x: _ll_ref(model, c, x), CONTINUATIONS,
                       name="continuation_loglikelihood", rtol=1e-5, atol=1e-4,
                       mistakes={m: _bind(f, model) for m, f in LL_MISTAKES.items()})


def _bind(f, model):
    return lambda c, x: f(model, c, x)


# ---- Exercise 2: acc and acc_norm, exactly as lm-eval ---------------------------------------------------

TIE = 1e-4          # log-likelihoods closer than this are a tie: either pick passes


def check_acc_norm(fn, model, items, lm_eval_samples, delimiter: str, task: str):
    """Every item: the learner's (pred, pred_norm) against the choices lm-eval's acc and acc_norm rewarded."""
    if len(items) != len(lm_eval_samples):
        raise ValueError("items and samples differ in number")
    wrong = []
    with torch.no_grad():
        for item, sample in zip(items, lm_eval_samples):
            got = fn(model, item.context, item.choices, delimiter)
            try:
                got = tuple(operator.index(g) for g in got)
                assert len(got) == 2 and all(0 <= g < len(item.choices) for g in got)
            except (TypeError, AssertionError):
                raise ExerciseFailure(f"score_item must return two choice indices (pred, pred_norm), each in "
                                      f"0..{len(item.choices) - 1}; got {got!r} on {item.id}") from None
            lls = [r[0] for r in sample["filtered_resps"]]
            norm = [ll / len(c) for ll, c in zip(lls, item.choices)]
            want = (max(range(len(lls)), key=lambda i: lls[i]), max(range(len(lls)), key=lambda i: norm[i]))
            # a near-tie may go either way between your unbatched sums and lm-eval's batched ones
            tied = (abs(lls[got[0]] - lls[want[0]]) < TIE, abs(norm[got[1]] - norm[want[1]]) < TIE)
            if not all(g == w or t for g, w, t in zip(got, want, tied)):
                wrong.append((item, got, want, lls))
    if wrong:
        item, got, want, lls = wrong[0]
        by_tokens = max(range(len(lls)), key=lambda i: lls[i] / len(model.tokenizer.encode(delimiter + item.choices[i])))
        with_delim = max(range(len(lls)), key=lambda i: lls[i] / len(delimiter + item.choices[i]))
        hint = ""
        if got[1] == by_tokens != want[1]:
            hint = " acc_norm divides by the choice's length in characters, not tokens."
        elif got[1] == with_delim != want[1]:
            hint = " the length is the choice's own (lm-eval counts len(choice), without the delimiter)."
        elif got[0] != want[0]:
            hint = (f" even acc differs: is the delimiter {delimiter!r} between context and choice? lm-eval's "
                    f"log-likelihoods were {[round(x, 3) for x in lls]}")
        raise ExerciseFailure(f"{len(wrong)} of {len(items)} {task} items differ from lm-eval; the first, "
                              f"{item.id}: yours {got}, lm-eval {want}.{hint}")
    print(f"\N{CHECK MARK} score_item: acc and acc_norm equal lm-eval's on all {len(items)} {task} items")


# ---- Exercise 3: the standard error of a mean score -----------------------------------------------------

def _se_ref(scores):
    return scoring.mean_stderr(scores.tolist())[1]


SE_MISTAKES = {
    "use the sample standard deviation (divide by n - 1), as lm-eval does": lambda s: float(s.std(correction=0)) / math.sqrt(len(s)),
    "divide the standard deviation by √n: the error of a mean shrinks with the number of items": lambda s: float(s.std()),
    "divide by √n, not n": lambda s: float(s.std()) / len(s),
}


def check_standard_error(fn):
    g = torch.Generator().manual_seed(3)
    cases = [(torch.tensor([1.0, 0.0, 1.0, 1.0]),), ((torch.rand(40, generator=g) < 0.3).double(),),
             (torch.rand(120, generator=g, dtype=torch.float64),)]
    check_function(lambda s: float(fn(s)), _se_ref, cases, name="standard_error", rtol=1e-9, atol=1e-12,
                   mistakes=SE_MISTAKES)


# ---- Exercise 4: Phi-4's hybrid n-gram check, for one item ----------------------------------------------

def _verdict_ref(item, documents, allowlist, partial, contaminated):
    v = decontamination.decontaminate({"item": item}, documents, allowlist=allowlist, partial=partial,
                                      contaminated=contaminated)[0]
    return v.status, round(v.ratio, 9)


_BOILERPLATE = "answer the following question by choosing one of the four options given below"

# (item, training documents, allowlist, what a failure on this case most likely means)
VERDICT_CASES = [
    ("the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat today",
     ["the quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat today and more"], [],
     "a shared 13-gram makes the item contaminated, whatever the 7-gram ratio"),
    (_BOILERPLATE + " " + " ".join(f"item{k}" for k in range(30)),
     [_BOILERPLATE + " " + " ".join(f"doc{k}" for k in range(30))], [_BOILERPLATE],
     "a 13-gram on the allowlist does not count: skip it, and go on to the 7-gram ratio"),
    ("a b c d e f g h i j k l m n o p q r s t",
     ["x a b c d e f g y", "p q r s t u v w", "nothing here at all in this document of words"], [],
     "divide the overlap by the *smaller* of the two 7-gram counts (the item's or the document's), and keep "
     "the largest ratio over the documents"),
    ("Alpha beta, gamma delta epsilon zeta eta theta iota kappa!",
     ["ALPHA BETA GAMMA DELTA EPSILON ZETA ETA and other letters", "theta iota kappa lambda mu"], [],
     "compare words lowercased and without punctuation (decontamination.words), so that case and commas "
     "do not hide a copy"),
    ("short item text", ["short item text"], [],
     "an item shorter than 7 words has no 7-grams: its ratio is 0 and it is clean"),
    ("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12",
     ["w1 w2 w3 w4 w5 w6 w7 w8 z w9 w10 w11 w12 w1 w2 w3 w4 w5 w6 w7"], [],
     "count distinct 7-grams (sets), not every occurrence"),
]


def check_verdict(fn, partial: float = 0.2, contaminated: float = 0.5):
    for i, (item, docs, allow, hint) in enumerate(VERDICT_CASES):
        status, ratio = fn(item, docs, allow, partial, contaminated)
        got = (status, round(float(ratio), 9))
        want = _verdict_ref(item, docs, allow, partial, contaminated)
        if got != want:
            raise ExerciseFailure(f"verdict, test case {i + 1} of {len(VERDICT_CASES)} (item {item[:40]!r}...): "
                                  f"yours {got}, expected {want}. Probably: {hint}")
    print(f"\N{CHECK MARK} verdict: all {len(VERDICT_CASES)} test cases pass")


# ---- Exercise 5: abstention ---------------------------------------------------------------------------

def _abstain_ref(confidences, correct, threshold):
    attempted = confidences >= threshold
    n = len(confidences)
    right = int((attempted & correct).sum())
    return torch.tensor([right / n, (int(attempted.sum()) - right) / n, 1 - int(attempted.sum()) / n],
                        dtype=torch.float64)


def _abstain_strict(confidences, correct, threshold):
    return _abstain_ref(confidences, correct, threshold + 1e-9)


def _abstain_of_attempted(confidences, correct, threshold):
    shares = _abstain_ref(confidences, correct, threshold)
    attempted = 1 - shares[2]
    return torch.stack([shares[0] / attempted, shares[1] / attempted, shares[2]])


ABSTAIN_MISTAKES = {
    "attempt when the confidence is at least the threshold (>=), withhold below it": _abstain_strict,
    "all three shares are of *all* questions, so they sum to 1 (SimpleQA's convention)": _abstain_of_attempted,
}


def check_abstain(fn):
    g = torch.Generator().manual_seed(5)
    cases = []
    for n, t in ((10, -1.0), (80, -0.5), (33, -2.0)):
        conf = -torch.rand(n, generator=g, dtype=torch.float64) * 3
        conf[0] = t                                           # one answer exactly at the threshold
        cases.append((conf, torch.rand(n, generator=g) < 0.4, t))
    check_function(lambda c, k, t: torch.as_tensor(fn(c, k, t), dtype=torch.float64), _abstain_ref, cases,
                   name="abstain", rtol=1e-9, atol=1e-12, mistakes=ABSTAIN_MISTAKES)


# ---- Exercise 6: Cohen's kappa -------------------------------------------------------------------------

def _kappa_ref(a, b):
    from sklearn.metrics import cohen_kappa_score
    return float(cohen_kappa_score(a, b))


KAPPA_MISTAKES = {
    "kappa corrects the observed agreement for chance: (p_o - p_e) / (1 - p_e), with p_e the sum over "
    "labels of the product of the two raters' label shares": lambda a, b: sum(x == y for x, y in zip(a, b)) / len(a),
}


def check_kappa(fn):
    cases = [([1, 0, 1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 1, 1, 0]), ([1, 1, 1, 0], [1, 1, 0, 0]),
             ([0, 1, 0, 1, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0, 1, 1, 0, 1]), ([1, 0, 0, 0, 0], [0, 0, 0, 0, 0])]
    check_function(lambda a, b: float(fn(a, b)), _kappa_ref, cases, name="cohen_kappa", rtol=1e-9, atol=1e-12,
                   mistakes=KAPPA_MISTAKES)


# ---- Exercise 7: the ablation hook ---------------------------------------------------------------------

def check_zero_heads_hook(make_hook, model):
    """The learner's hook on blocks.L.attn.hook_z, against phi4lab's ablate_heads, on a prompt."""
    from transformer_lens.utilities import get_act_name

    from phi4lab.analysis.interventions import ablate_heads

    tokens = torch.tensor([model.tokenizer.encode("    def close(self):\n        self._closed = True\n    def close")])
    for layer, heads in ((3, [0, 7]), (2, [3]), (3, list(range(8)))):
        with torch.no_grad():
            want = ablate_heads(model, tokens, [(layer, h) for h in heads])
            got = model.run_with_hooks(tokens, fwd_hooks=[(get_act_name("z", layer), make_hook(heads))])
        if got is None or not torch.allclose(got, want, atol=1e-5):
            raise ExerciseFailure(f"zeroing heads {heads} of layer {layer}: the logits differ from ablate_heads'. "
                                  "hook_z is [batch, position, head, d_head]: zero the head axis (the third), "
                                  "and return the tensor")
    print("\N{CHECK MARK} zero_heads_hook: the logits equal phi4lab's ablate_heads on 3 head sets")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.

stand_alone(globals(), {
    "standard_error": _se_ref, "abstain": _abstain_ref, "cohen_kappa": _kappa_ref, "zero_heads_hook": zero_heads_hook_reference,
})
