"""Checks for course/04_pretraining.ipynb: the pieces of a training loop."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from phi4lab.exercises.checking import ExerciseFailure, check_function, diagnose
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
            raise NotImplementedError("train_step is still a stub: replace `raise NotImplementedError` with your code") from None
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
