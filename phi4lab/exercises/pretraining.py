"""Checks for course/04_pretraining.ipynb: the pieces of a training loop."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from phi4lab.exercises.checking import ExerciseFailure, StubError, check_function, diagnose, run_answer
from phi4lab.exercises.standalone import stand_alone
from phi4lab.training.loop import lm_loss
from phi4lab.training.optim import lr_at


def _logit_cases():
    g = torch.Generator().manual_seed(0)
    cases = []
    for b, t, v in ((2, 5, 7), (1, 9, 11), (3, 4, 50)):
        cases.append((torch.randn(b, t, v, generator=g), torch.randint(0, v, (b, t), generator=g)))
    return cases


# ---- Exercise 1: the next-token loss ----------------------------------------------------

LOSS_MISTAKES = {
    "no shift: position t must predict token t+1 (drop the last logit and the first token)":
        lambda lg, tk: F.cross_entropy(lg.flatten(0, 1), tk.flatten()),
    "shifted the wrong way: use logits[:, :-1] with tokens[:, 1:]":
        lambda lg, tk: F.cross_entropy(lg[:, 1:].flatten(0, 1), tk[:, :-1].flatten()),
    "you summed the losses: the training loss is the mean over predicted positions":
        lambda lg, tk: F.cross_entropy(lg[:, :-1].flatten(0, 1), tk[:, 1:].flatten(), reduction="sum"),
}


def check_next_token_loss(fn):
    check_function(fn, lm_loss, _logit_cases(), name="next_token_loss", mistakes=LOSS_MISTAKES, rtol=1e-5, atol=1e-6)


# ---- Exercise 2: warm-up and cosine decay -------------------------------------------------

def _lr_ref(step, peak, warmup, total, min_ratio):
    return lr_at(step, peak=peak, warmup=warmup, total=total, schedule="cosine", min_ratio=min_ratio)


LR_MISTAKES = {
    "warm-up starts at 0: with step counted from 0, use (step + 1) / warmup so the first step learns":
        lambda s, p, w, t, m: p * s / w if s < w else _lr_ref(s, p, w, t, m),
    "you decay to 0: the cosine ends at peak * min_ratio":
        lambda s, p, w, t, m: _lr_ref(s, p, w, t, 0.0),
}


def check_lr_schedule(fn):
    cases = [(s, 1e-3, 10, 100, 0.1) for s in (0, 4, 9, 10, 30, 55, 80, 99)]
    cases += [(s, 3e-4, 100, 1000, 0.0) for s in (0, 50, 500, 999)]
    check_function(fn, _lr_ref, cases, name="lr_schedule", mistakes=LR_MISTAKES, rtol=1e-9, atol=1e-15)


# ---- Exercise 3: gradient clipping by global norm --------------------------------------------

def _clip_ref(grads, max_norm):
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (total.item() + 1e-6))
    return torch.cat([(g * scale).flatten() for g in grads])


def _per_tensor(grads, max_norm):
    return torch.cat([(g * min(1.0, max_norm / (g.norm().item() + 1e-6))).flatten() for g in grads])


def _always(grads, max_norm):
    total = torch.sqrt(sum((g ** 2).sum() for g in grads))
    return torch.cat([(g * max_norm / total).flatten() for g in grads])


def check_clip_gradients(fn):
    g = torch.Generator().manual_seed(1)
    cases = []
    for scale, max_norm in ((1.0, 1.0), (10.0, 1.0), (0.01, 1.0), (3.0, 0.5)):
        grads = [torch.randn(4, 3, generator=g) * scale, torch.randn(5, generator=g) * scale * 3]
        cases.append((grads, max_norm))

    def flat(grads, max_norm):
        out = fn([x.clone() for x in grads], max_norm)
        return torch.cat([x.flatten() for x in out])

    check_function(flat, _clip_ref, cases, name="clip_gradients", rtol=1e-5, atol=1e-7,
                   mistakes={"you clipped each tensor by its own norm: clip by the *global* norm of all "
                             "gradients together, so their directions relative to each other are kept":
                             _per_tensor,
                             "you always rescale to max_norm: only scale down when the norm is larger":
                             _always})


# ---- Exercise 4: one training step ------------------------------------------------------------

def check_train_step(fn, make_model):
    """fn(model, optimizer, tokens) -> float loss. Two calls must equal two reference steps."""
    torch.manual_seed(0)
    base = make_model()
    ref, yours = copy.deepcopy(base), copy.deepcopy(base)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt_yours = torch.optim.SGD(yours.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(2)
    vocab = base.config.vocab_size
    for call in range(2):
        tokens = torch.randint(0, vocab, (2, 12), generator=g)
        loss_ref = lm_loss(ref(tokens).logits, tokens)
        loss_ref.backward()
        opt_ref.step()
        opt_ref.zero_grad()
        try:
            loss = fn(yours, opt_yours, tokens)
        except NotImplementedError:
            raise StubError("train_step is still a stub: replace `raise NotImplementedError` with your code") from None
        if not isinstance(loss, float) or not math.isclose(loss, loss_ref.item(), rel_tol=1e-5):
            raise ExerciseFailure(f"train_step, call {call + 1}: return the loss as a Python float (loss.item()); "
                                  f"got {loss!r}, expected {loss_ref.item():.6f}")
        for (name, p), q in zip(ref.named_parameters(), yours.parameters()):
            problem = diagnose(q.detach(), p.detach(), rtol=1e-5, atol=1e-6)
            if problem:
                hint = ("the weights did not move: call optimizer.step() after loss.backward()"
                        if torch.equal(q, base.state_dict()[name]) else
                        "gradients leaked from the previous call: call optimizer.zero_grad() every step"
                        if call == 1 else problem)
                raise ExerciseFailure(f"train_step, call {call + 1}, parameter {name}: {hint}")
    print("\N{CHECK MARK} train_step: two steps match the reference loop")


# ---- Exercise 5: the LAMB trust ratio ----------------------------------------------------------

def _trust_ref(w, update):
    wn, un = w.norm(), update.norm()
    return (wn / un) if (wn > 0 and un > 0) else torch.tensor(1.0)


TRUST_MISTAKES = {
    "upside down: trust = ||w|| / ||update||, so big weights get big steps":
        lambda w, u: (u.norm() / w.norm()) if (w.norm() > 0 and u.norm() > 0) else torch.tensor(1.0),
}


def check_trust_ratio(fn):
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(4, 4, generator=g) * s, torch.randn(4, 4, generator=g)) for s in (0.1, 1.0, 5.0)]
    cases += [(torch.zeros(3), torch.ones(3)), (torch.ones(3), torch.zeros(3))]
    check_function(fn, _trust_ref, cases, name="trust_ratio", mistakes=TRUST_MISTAKES, rtol=1e-5, atol=1e-7)


# ---- Gradient accumulation --------------------------------------------------------------

def _grads(model):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def full_batch_gradients(model, tokens):
    """The gradient of the mean next-token loss over the whole batch: what accumulation must reproduce."""
    model.zero_grad()
    lm_loss(model(tokens).logits, tokens).backward()
    return _grads(model)


def _accumulate(model, tokens, sizes, weight):
    model.zero_grad()
    for chunk, w in zip(tokens.split(sizes), weight(sizes)):
        (lm_loss(model(chunk).logits, chunk) * w).backward()
    return _grads(model)


ACCUMULATION_MISTAKES = {
    "each micro-batch's loss is a mean over its own tokens: scale it by its share of the batch "
    "(1 / number of micro-batches when they are equal), or the sum is that many times the big batch's gradient":
        lambda m, t, s: _accumulate(m, t, s, lambda sizes: [1.0] * len(sizes)),
    "the micro-batches differ in size: weight each by its share of the rows (size / batch), "
    "not equally, so every row counts once":
        lambda m, t, s: _accumulate(m, t, s, lambda sizes: [1 / len(sizes)] * len(sizes)),
}


def check_accumulated_gradients(fn, make_model):
    """fn(model, tokens, sizes) -> list of gradients, one per parameter, equal to the full batch's."""
    g = torch.Generator().manual_seed(5)
    cases = [((8, 12), [2, 2, 2, 2]), ((6, 10), [4, 2]), ((5, 9), [1, 3, 1])]
    for (batch, seq), sizes in cases:
        model = make_model()
        tokens = torch.randint(0, 97, (batch, seq), generator=g)
        expected = full_batch_gradients(model, tokens)
        model.zero_grad()
        mine = run_answer(fn, "accumulated_gradients", model, tokens, sizes)
        if not isinstance(mine, (list, tuple)) or len(mine) != len(expected):
            raise ExerciseFailure(f"return one gradient per parameter, a list of {len(expected)} tensors "
                                  "(p.grad for p in model.parameters())")
        wrong = {msg: f(model, tokens, sizes) for msg, f in ACCUMULATION_MISTAKES.items()}
        for i, (a, e) in enumerate(zip(mine, expected)):
            if not isinstance(a, torch.Tensor) or a.shape != e.shape or not torch.allclose(a, e, rtol=1e-4, atol=1e-6):
                for msg, w in wrong.items():
                    if all(isinstance(x, torch.Tensor) and x.shape == y.shape and torch.allclose(x, y, rtol=1e-4,
                           atol=1e-6) for x, y in zip(mine, w)):
                        raise ExerciseFailure(f"accumulated_gradients with micro-batches {sizes}: {msg}")
                problem = diagnose(a, e, rtol=1e-4, atol=1e-6)
                raise ExerciseFailure(f"accumulated_gradients with micro-batches {sizes}: parameter {i} "
                                      f"differs from the full batch's gradient: {problem}")
    print(f"\N{CHECK MARK} accumulated_gradients: equal to the full batch's gradient for {len(cases)} splittings, "
          "equal and unequal")


# ---- Sliding-window perplexity ------------------------------------------------------------

def _window_losses(model, tokens, max_length, stride):
    """(per-window token losses, how many of each window's losses are new)."""
    out, prev_end = [], 0
    for begin in range(0, tokens.numel(), stride):
        end = min(begin + max_length, tokens.numel())
        window = tokens[begin:end][None]
        logits = model(window).logits[0]
        losses = F.cross_entropy(logits[:-1].float(), window[0, 1:], reduction="none")
        out.append((losses, min(end - prev_end, losses.numel())))
        prev_end = end
        if end == tokens.numel():
            break
    return out


PERPLEXITY_MISTAKES = {
    "score each token once: with stride < max_length the windows overlap, and a window's first "
    "max_length - stride predictions were already scored by the window before":
        lambda m, t, L, s: math.exp(torch.cat([w for w, _ in _window_losses(m, t, L, s)]).mean().item()),
    "average over tokens, not over windows: windows differ in how many new tokens they score (the last is "
    "often short), so sum the losses and divide by the number of tokens scored":
        lambda m, t, L, s: math.exp(sum(w[-n:].mean().item() for w, n in _window_losses(m, t, L, s))
                                    / len(_window_losses(m, t, L, s))),
    "perplexity is exp(mean loss), not the mean loss":
        lambda m, t, L, s: (lambda ws: sum(w[-n:].sum().item() for w, n in ws) / sum(n for _, n in ws))(
            _window_losses(m, t, L, s)),
}


def check_sliding_perplexity(fn, make_model):
    """fn(model, tokens, max_length, stride) -> float, equal to phi4lab.training.loop.perplexity's ppl."""
    from phi4lab.training.loop import perplexity

    g = torch.Generator().manual_seed(8)
    model = make_model().eval()
    cases = [(torch.randint(0, 97, (100,), generator=g), 32, 16), (torch.randint(0, 97, (75,), generator=g), 20, 20),
             (torch.randint(0, 97, (90,), generator=g), 40, 12)]
    with torch.no_grad():
        for tokens, max_length, stride in cases:
            expected = perplexity(model, tokens, max_length=max_length, stride=stride)["ppl"]
            mine = run_answer(fn, "sliding_perplexity", model, tokens, max_length, stride)
            mine = mine.item() if isinstance(mine, torch.Tensor) and mine.numel() == 1 else mine
            if not isinstance(mine, (int, float)):
                raise ExerciseFailure(f"return the perplexity as a number, got {type(mine).__name__}")
            if math.isclose(mine, expected, rel_tol=1e-4):
                continue
            call = f"sliding_perplexity(model, {tokens.numel()} tokens, max_length={max_length}, stride={stride})"
            for message, wrong in PERPLEXITY_MISTAKES.items():
                if math.isclose(mine, wrong(model, tokens, max_length, stride), rel_tol=1e-4):
                    raise ExerciseFailure(f"{call}: {message}")
            raise ExerciseFailure(f"{call} = {mine:.4g}, expected {expected:.4g}")
    print(f"\N{CHECK MARK} sliding_perplexity: equal to phi4lab's perplexity in {len(cases)} settings "
          "(overlapping windows, disjoint windows, a short last window)")


# ---- A LAMB step ----------------------------------------------------------------------------

def lamb_step_reference(w, g, m, v, step, lr, betas, eps, weight_decay):
    """One step of phi4lab.training.optim.LAMB on one tensor: returns (new w, new m, new v)."""
    from phi4lab.training.optim import LAMB

    w = torch.nn.Parameter(w.clone())
    opt = LAMB([w], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if step > 1:     # the state after step - 1 steps
        opt.state[w] = dict(step=torch.tensor(float(step - 1)), exp_avg=m.clone(), exp_avg_sq=v.clone())
    w.grad = g.clone()
    opt.step()
    state = opt.state[w]
    return w.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone()


def _lamb_variant(w, g, m, v, t, lr, betas, eps, wd, *, correct=True, eps_inside=False, decay_after_trust=False,
                  no_trust=False):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = (m / (1 - b1**t), v / (1 - b2**t)) if correct else (m, v)
    adam = m_hat / ((v_hat + eps).sqrt() if eps_inside else (v_hat.sqrt() + eps))
    update = adam if decay_after_trust else adam + wd * w
    trust = w.norm() / update.norm() if (w.norm() > 0 and update.norm() > 0) else torch.tensor(1.0)
    if no_trust:
        trust = torch.tensor(1.0)
    step = trust * update + (wd * w if decay_after_trust else 0)
    return w - lr * step, m, v


LAMB_MISTAKES = {
    "correct the moments' bias: divide m by 1 - beta1^t and v by 1 - beta2^t (t counts from 1), as Adam does":
        lambda *a: _lamb_variant(*a, correct=False),
    "epsilon goes outside the square root: m_hat / (sqrt(v_hat) + eps)": lambda *a: _lamb_variant(*a, eps_inside=True),
    "add the weight decay to the Adam update *before* the trust ratio: the ratio is ||w|| / ||adam + wd * w||":
        lambda *a: _lamb_variant(*a, decay_after_trust=True),
    "that is AdamW: LAMB rescales the whole update by the trust ratio ||w|| / ||update||":
        lambda *a: _lamb_variant(*a, no_trust=True),
}


def check_lamb_step(fn):
    """fn(w, g, m, v, step, lr, betas, eps, weight_decay) -> (w, m, v), checked against phi4lab's LAMB."""
    g = torch.Generator().manual_seed(9)
    cases = []
    for shape, step, wd in (((6, 5), 1, 0.01), ((4, 8), 3, 0.1), ((7,), 10, 0.0), ((3, 3), 2, 0.1)):
        w = torch.randn(shape, generator=g, dtype=torch.float32)
        grad = torch.randn(shape, generator=g, dtype=torch.float32) * 0.1
        m = torch.randn(shape, generator=g, dtype=torch.float32) * 0.01 * (step > 1)
        v = torch.rand(shape, generator=g, dtype=torch.float32) * 1e-3 * (step > 1)
        cases.append((w, grad, m, v, step, 0.01, (0.9, 0.999), 1e-6, wd))
    zero = torch.zeros(4, 3, dtype=torch.float32)      # a zero-initialised tensor: trust 1
    cases.append((zero, torch.randn(4, 3, generator=g, dtype=torch.float32), zero, zero, 1, 0.01, (0.9, 0.999), 1e-6, 0.0))
    check_function(fn, lamb_step_reference, cases, name="lamb_step", mistakes=LAMB_MISTAKES, rtol=1e-5, atol=1e-8)


# ---- Standing alone ----------------------------------------------------------------------------------
# A stub is reported, not raised, and the notebook's later cells use these references in its place
# (phi4lab.exercises.standalone explains why). Each has the learner's function's signature.

def sliding_perplexity_reference(model, tokens, max_length, stride):
    """phi4lab.training.loop.perplexity's perplexity, with the exercise's signature."""
    from phi4lab.training.loop import perplexity

    return perplexity(model, tokens, max_length=max_length, stride=stride)["ppl"]


stand_alone(globals(), {
    "next_token_loss": lm_loss, "lr_schedule": _lr_ref, "clip_gradients": _clip_ref, "trust_ratio": _trust_ref,
    "sliding_perplexity": sliding_perplexity_reference, "lamb_step": lamb_step_reference,
})
