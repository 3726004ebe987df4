"""Checks for course/09_bias_probing.ipynb: frames, subword log-probs, bootstrap, probes, control tasks, steering."""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.exercises.checking import CountCalls, ExerciseFailure, check_function, run_answer
from phi4lab.exercises.standalone import stand_alone
from phi4lab.model.bridge import unwrap

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


# ---- Every head of a layer mediating, in one forward pass -------------------------------------------

def layer_nie_reference(model, base, alt, layer, score):
    """[n_heads]: score(base with head h's last-position output from alt) - score(base), for every head h.

    base, alt: token ids [1, T_base], [1, T_alt] (lengths may differ); score(logits) -> [batch].
    """
    return _layer_nie(model, base, alt, layer, score)


def _layer_nie(model, base, alt, layer, score, *, position=-1, one_head_per_copy=True):
    """The reference, and (with other arguments) the mistakes the check names."""
    name = get_act_name("z", layer)
    _, cache = model.run_with_cache(alt, names_filter=lambda n: n == name)
    source = cache[name][0, position]                                  # [heads, d_head]
    H = source.shape[0]
    heads_ = torch.arange(H)

    def paste(z, hook):
        z = z.clone()
        if one_head_per_copy:
            z[heads_, position, heads_] = source                       # copy h: head h only
        else:
            z[:, position] = source
        return z
    patched = score(model.run_with_hooks(base.repeat(H, 1), fwd_hooks=[(name, paste)]))
    return patched - score(model(base))


def _first_position(model, base, alt, layer, score):
    return _layer_nie(model, base, alt, layer, score, position=0)


def _every_head(model, base, alt, layer, score):
    return _layer_nie(model, base, alt, layer, score, one_head_per_copy=False)


NIE_MISTAKES = {
    "the prompts may differ in length: take the alternative's head output at its *last* position and paste it at "
    "the base prompt's last position (index -1), where the next-token score is read": _first_position,
    "copy h of the batch gets head h only: pasting every head into every copy measures the whole layer, "
    "the same number H times": _every_head,
    "the indirect effect is the change from the base run: subtract score(base) from the patched score":
        lambda m, b, a, layer, s: layer_nie_reference(m, b, a, layer, s) + s(m(b)),
}


def check_layer_nie(fn, model):
    """fn(model, base, alt, layer, score) -> [n_heads], compared with bias.head_mediation on phi4-tiny."""
    from phi4lab.bias import causal

    female, male = causal.pronoun_ids(model)

    def score(logits):
        return causal._scores(logits, female, male)

    males, females = causal.gender_pairs()
    pairs = [(males[i], females[i]) for i in (0, 5, 11)]
    reference = causal.head_mediation(model, [m for m, _ in pairs], [f for _, f in pairs])["nie"]
    with torch.no_grad():
        for k, (m_text, f_text) in enumerate(pairs):
            base = torch.tensor([model.tokenizer.encode(m_text, add_special_tokens=False)])
            alt = torch.tensor([model.tokenizer.encode(f_text, add_special_tokens=False)])
            for layer in (0, model.cfg.n_layers - 1):
                with CountCalls(unwrap(model).model.embed_tokens) as passes:
                    mine = run_answer(fn, "layer_nie", model, base, alt, layer, score)
                expected = reference[k, layer]
                call = f"layer_nie on {m_text!r} -> {f_text!r}, layer {layer}"
                if not isinstance(mine, torch.Tensor) or mine.shape != expected.shape:
                    raise ExerciseFailure(f"{call}: return a tensor of {expected.shape[0]} numbers, one per head; got "
                                          f"{tuple(mine.shape) if isinstance(mine, torch.Tensor) else type(mine).__name__}")
                if torch.allclose(mine.float(), expected, atol=1e-4):
                    if passes.calls > 4:
                        raise ExerciseFailure(f"{call}: right, but in {passes.calls} forward passes; the exercise asks "
                                              "for one patched pass for all the heads (plus the alternative's and the "
                                              "base's own runs): put one copy of the base prompt per head in a batch")
                    continue
                for message, wrong in NIE_MISTAKES.items():
                    if torch.allclose(mine.float(), wrong(model, base, alt, layer, score).float(), atol=1e-4):
                        raise ExerciseFailure(f"{call}: {message}")
                h = int((mine.float() - expected).abs().argmax())
                raise ExerciseFailure(f"{call}: head {h} gives {mine[h].item():+.4f}, one patch gives "
                                      f"{expected[h].item():+.4f} (bias.head_mediation)")
    print(f"\N{CHECK MARK} layer_nie: every head of a layer in one pass, equal to bias.head_mediation's one patch per "
          f"head, on {len(pairs)} pairs, one of them of two prompts of different lengths")


# ---- A share and its interval -----------------------------------------------------------------------

def share_ci_reference(nie, te, n, seed):
    """(share, low, high): mean NIE / mean TE over pairs, with a 95% percentile bootstrap that resamples pairs."""
    from phi4lab.analysis.stats import bootstrap

    est, low, high = bootstrap(torch.stack([nie, te]), lambda v: v[0].mean(-1) / v[1].mean(-1), n=n, seed=seed)
    return torch.stack([torch.as_tensor(est), torch.as_tensor(low), torch.as_tensor(high)]).double()


def _unpaired(nie, te, n, seed):
    g = torch.Generator().manual_seed(seed)
    k = len(te)
    a = torch.randint(0, k, (n, k), generator=g)
    b = torch.randint(0, k, (n, k), generator=g)
    ratios = nie[a].mean(-1) / te[b].mean(-1)
    low, high = torch.quantile(ratios.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    return torch.stack([nie.mean() / te.mean(), low, high]).double()


SHARE_MISTAKES = {
    "a share is mean(NIE) / mean(TE), not the mean of the per-pair ratios, which explode where a pair's TE is "
    "near zero": lambda nie, te, n, seed: torch.cat([(nie / te).mean()[None].double(),
                                                      share_ci_reference(nie, te, n, seed)[1:]]),
}


def check_share_ci(fn):
    """fn(nie [pairs], te [pairs], n, seed) -> (share, low, high); the interval checked for pairing, not digits."""
    g = torch.Generator().manual_seed(12)
    for pairs in (40, 25):
        te = torch.rand(pairs, generator=g) + 0.05
        nie = te * 0.3 + torch.randn(pairs, generator=g) * 0.05      # a head that carries about 30%, pair by pair
        out = run_answer(fn, "share_ci", nie.clone(), te.clone(), 2000, 0)
        share, low, high = (float(v) for v in out)
        expected = share_ci_reference(nie, te, 2000, 0)
        if abs(share - float(expected[0])) > 1e-6:
            if abs(share - float((nie / te).mean())) < 1e-6:
                raise ExerciseFailure(f"share_ci with {pairs} pairs: {next(iter(SHARE_MISTAKES))}")
            raise ExerciseFailure(f"share_ci with {pairs} pairs: the share is {share:.4f}, expected "
                                  f"mean(NIE) / mean(TE) = {float(expected[0]):.4f}")
        if not low <= share <= high:
            raise ExerciseFailure(f"share_ci with {pairs} pairs: the interval [{low:.3f}, {high:.3f}] does not "
                                  f"contain the share {share:.3f}")
        paired = float(expected[2] - expected[1])
        unpaired = _unpaired(nie, te, 2000, 0)
        width = high - low
        exact = abs(low - float(expected[1])) < 1e-6 and abs(high - float(expected[2])) < 1e-6
        if exact:
            continue
        if width > 2 * paired and abs(width - float(unpaired[2] - unpaired[1])) < 0.5 * width:
            raise ExerciseFailure(f"share_ci with {pairs} pairs: the interval is {width / paired:.1f} times too wide. "
                                  "Resample whole pairs: the same indices for NIE and TE, since a pair's NIE "
                                  "and TE move together")
        if not 0.9 * paired < width < 1.1 * paired:
            raise ExerciseFailure(f"share_ci with {pairs} pairs: the interval [{low:.3f}, {high:.3f}] is "
                                  f"{width / paired:.2f} times as wide as a paired 95% percentile bootstrap's "
                                  f"[{float(expected[1]):.3f}, {float(expected[2]):.3f}]: a 95% interval reads the "
                                  "2.5% and 97.5% quantiles of the resampled shares")
        if not (abs(low - float(expected[1])) < 0.25 * paired and abs(high - float(expected[2])) < 0.25 * paired):
            raise ExerciseFailure(f"share_ci with {pairs} pairs: the interval [{low:.3f}, {high:.3f}] is far from a "
                                  f"paired percentile bootstrap's [{float(expected[1]):.3f}, {float(expected[2]):.3f}]")
    print("\N{CHECK MARK} share_ci: the share of the mean effect, with a paired bootstrap interval")


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.
stand_alone(globals(), {
    "word_logprob": _word_ref, "bootstrap_ci": _ci_ref, "diff_of_means": _dom_ref, "add_direction": _steer_ref,
    "layer_nie": layer_nie_reference, "share_ci": share_ci_reference,
})
