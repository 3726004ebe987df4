"""Checks for course/09_bias_probing.ipynb: frames, subword log-probs, bootstrap, probes, control tasks, steering."""

from __future__ import annotations

import torch

from phi4lab.exercises.checking import ExerciseFailure, check_function

# ---- Exercise 1: filling a frame, refusing a frame without its slot --------------------------------


def check_fill_frame(fn):
    got = fn("The {occupation} said that", "nurse")
    if got != "The nurse said that":
        raise ExerciseFailure(f"fill_frame('The {{occupation}} said that', 'nurse') gave {got!r}, expected "
                              "'The nurse said that'")
    for bad, why in (("The nurse said that", "has no slot"), ("The {occupation} met the {occupation}", "has two")):
        try:
            fn(bad, "nurse")
        except ValueError as e:
            if "{occupation}" not in str(e):
                raise ExerciseFailure(f"the error for {bad!r} should name the missing slot {{occupation}}, so "
                                      f"the user knows what to fix; it says {str(e)!r}") from None
            continue
        except Exception as e:                       # noqa: BLE001 - we report whatever it was
            raise ExerciseFailure(f"a frame that {why} should raise ValueError, not {type(e).__name__}") from None
        raise ExerciseFailure(f"the frame {bad!r} {why} {{occupation}} slot, and fill_frame accepted it: "
                              "a probe built on it would silently measure the wrong sentence")
    print("\N{CHECK MARK} fill_frame fills the slot and refuses frames without exactly one")


# ---- Exercise 2: a word's log-prob, summed over its tokens ---------------------------------------------

def _word_ref(log_probs, start, word_ids):
    return sum(log_probs[start - 1 + k, t] for k, t in enumerate(word_ids))


WORD_MISTAKES = {
    "off by one: the piece at position start + k is predicted from position start + k - 1":
        lambda lp, s, w: sum(lp[min(s + k, lp.shape[0] - 1), t] for k, t in enumerate(w)),
    "you scored only the first piece: a word of several tokens needs all of them (sum their log-probs)":
        lambda lp, s, w: lp[s - 1, w[0]],
    "sum the pieces' log-probs (the probability of the word is their product), do not average them":
        lambda lp, s, w: sum(lp[s - 1 + k, t] for k, t in enumerate(w)) / len(w),
    "every piece must be read at its own position: the k-th piece from row start - 1 + k":
        lambda lp, s, w: sum(lp[s - 1, t] for t in w),
}


def check_word_logprob(fn):
    g = torch.Generator().manual_seed(0)
    cases = []
    for seq, vocab, start, word in ((6, 10, 4, [3, 7]), (9, 13, 5, [1, 1, 12, 4]), (4, 6, 3, [5])):
        cases.append((torch.randn(seq, vocab, generator=g).log_softmax(-1), start, word))
    check_function(fn, _word_ref, cases, name="word_logprob", mistakes=WORD_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Exercise 3: a bootstrap confidence interval ---------------------------------------------------------

def _ci_ref(values, n, seed):
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(values), (n, len(values)), generator=g)
    means = values[picks].mean(-1)
    return torch.quantile(means, torch.tensor([0.025, 0.975], dtype=values.dtype))


def check_bootstrap_ci(fn):
    g = torch.Generator().manual_seed(1)
    for values in (torch.randn(17, generator=g, dtype=torch.float64) + 1, torch.rand(40, generator=g,
                                                                                   dtype=torch.float64) * 3):
        low, high = (float(x) for x in fn(values, 4000, 0))
        ref_low, ref_high = (float(x) for x in _ci_ref(values, 20000, 123))
        width = ref_high - ref_low
        if high - low < 1e-9:
            raise ExerciseFailure("your interval has width 0: every resample is the whole sample. Resample "
                                  "*with* replacement (torch.randint), the same number of values as you have")
        if low > high:
            raise ExerciseFailure("return (low, high), low first")
        ratio = (high - low) / width
        if 0.75 < ratio < 0.92:
            raise ExerciseFailure(f"your interval is {ratio:.2f} times as wide as a 95% interval: read the 2.5th and "
                                  "97.5th percentiles (a 90% interval uses the 5th and 95th)")
        if ratio < 0.35:
            raise ExerciseFailure(f"your interval is {ratio:.2f} times as wide as it should be: resample the "
                                  "values, then take percentiles of the resamples' *means* (is that a "
                                  "standard error around the mean?)")
        if abs(low - ref_low) > 0.12 * width or abs(high - ref_high) > 0.12 * width:
            raise ExerciseFailure(f"expected about ({ref_low:.3f}, {ref_high:.3f}), got ({low:.3f}, {high:.3f}): "
                                  "resample indices with replacement, average each resample, take the 2.5th "
                                  "and 97.5th percentiles")
    print("\N{CHECK MARK} bootstrap_ci agrees with a 20,000-resample reference on both samples")


# ---- Exercise 4: the difference-of-means direction --------------------------------------------------------

def _dom_ref(X, y):
    return X[y == 1].mean(0) - X[y == 0].mean(0)


DOM_MISTAKES = {
    "the direction points from the male mean to the female mean: mean(X[y == 1]) - mean(X[y == 0])":
        lambda X, y: X[y == 0].mean(0) - X[y == 1].mean(0),
    "leave the direction unnormalised: its length is the distance between the class means, which steering uses":
        lambda X, y: torch.nn.functional.normalize(_dom_ref(X, y), dim=0),
    "average over the examples (dim 0), not over the model dimension":
        lambda X, y: X[y == 1].mean(1).sum() - X[y == 0].mean(1).sum(),
}


def check_diff_of_means(fn):
    g = torch.Generator().manual_seed(2)
    cases = []
    for n, d in ((10, 4), (31, 16)):
        y = torch.arange(n) % 2
        cases.append((torch.randn(n, d, generator=g) + y[:, None] * torch.randn(d, generator=g), y))
    check_function(fn, _dom_ref, cases, name="diff_of_means", mistakes=DOM_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Exercise 5: control labels ---------------------------------------------------------------------------

def check_control_labels(fn):
    words = ["king", "queen", "man", "woman", "king", "aunt", "man", "uncle", "queen", "aunt"]
    labels = torch.as_tensor(fn(words, 0))
    if labels.shape != (len(words),):
        raise ExerciseFailure(f"expected one label per word, shape ({len(words)},); got {tuple(labels.shape)}")
    by_type: dict[str, set] = {}
    for w, label in zip(words, labels.tolist()):
        by_type.setdefault(w, set()).add(label)
    split = [w for w, s in by_type.items() if len(s) > 1]
    if split:
        raise ExerciseFailure(f"{split[0]!r} got different labels in different sentences: a control task gives "
                              "every word *type* one random label, so a probe can score by memorising words, "
                              "which is what we want to measure")
    ones = sum(next(iter(s)) for s in by_type.values())
    if set(labels.tolist()) - {0, 1} or ones != len(by_type) // 2:
        raise ExerciseFailure(f"labels must be 0/1 with half of the {len(by_type)} word types labelled 1 (so that "
                              f"chance is 50%); got {ones} types labelled 1")
    if torch.equal(torch.as_tensor(fn(words, 0)), torch.as_tensor(fn(words, 1))) and \
            torch.equal(torch.as_tensor(fn(words, 1)), torch.as_tensor(fn(words, 2))):
        raise ExerciseFailure("different seeds give the same labels: shuffle with random.Random(seed)")
    print("\N{CHECK MARK} control_labels: one random label per word type, balanced, seeded")


# ---- Exercise 6: a steering hook ----------------------------------------------------------------------------

def _steer_ref(resid, direction, alpha):
    out = resid.clone()
    out[:, -1] += alpha * direction
    return out


STEER_MISTAKES = {
    "add the direction at the last position only (where the probe read it), not at every position":
        lambda r, d, a: r + a * d,
    "scale the direction by alpha":
        lambda r, d, a: _steer_ref(r, d, 1.0),
    "add it at the *last* position (index -1), not the first":
        lambda r, d, a: torch.cat([r[:, :1] + a * d, r[:, 1:]], 1),
}


def check_steering_hook(fn):
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(2, 5, 8, generator=g), torch.randn(8, generator=g), 1.5),
             (torch.randn(3, 4, 6, generator=g), torch.randn(6, generator=g), -2.0)]
    for resid, d, a in cases:
        before = resid.clone()
        fn(resid, d, a)
        if not torch.equal(resid, before):
            raise ExerciseFailure("your hook changed the activation it was given in place: clone it first, or "
                                  "the cached run you compare against changes too")
    check_function(fn, _steer_ref, cases, name="add_direction", mistakes=STEER_MISTAKES, rtol=1e-6, atol=1e-6)
