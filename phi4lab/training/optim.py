"""Optimizers and learning-rate schedules for phi4lab.training.loop.

AdamW is the workhorse of LLM pretraining: Adam's per-parameter step size
(first moment m over the root of the second moment v) plus weight decay
applied straight to the weights ("decoupled"), not through the gradient.
PyTorch's ``torch.optim.AdamW`` does it; we use it as is.

LARS and LAMB add one idea on top: a **layer-wise trust ratio**. Each weight
tensor's step is rescaled so that its size is proportional to the size of the
weights themselves, ``||w|| / ||update||``. That keeps every layer learning at
a similar *relative* rate, which is what lets them use enormous batches (LAMB
trained BERT with batch 64k). At the small batches of a CPU they buy nothing;
we write them out in a few lines because the trust ratio is the lesson, and
each optimizer records it per tensor in ``state["trust_ratio"]`` so you can
plot it.

Formulas (You et al. 2017, arXiv:1708.03888; You et al. 2019, arXiv:1904.00962;
as implemented in timm):

    LARS:  trust = eta * ||w|| / (||g|| + wd * ||w|| + eps)   (1 if ||w|| or ||g|| is 0)
           v <- mu * v + trust * (g + wd * w);   w <- w - lr * v
    LAMB:  m, v as in Adam with bias correction; u = m_hat / (sqrt(v_hat) + eps) + wd * w
           trust = ||w|| / ||u||                               (1 if ||w|| or ||u|| is 0)
           w <- w - lr * trust * u

Which timm settings these equal: ``timm.optim.Lars`` with its defaults
(``trust_clip=False``, ``always_adapt=False``: a tensor without weight decay,
such as a norm weight, gets trust 1), and ``timm.optim.Lamb`` with
``always_adapt=True`` (the trust ratio applies to every tensor, decayed or not),
``max_grad_norm=None`` (timm clips the global gradient norm to 1.0 by default;
here clipping is phi4lab.training.loop's ``grad_clip``, done before the step) and
``trust_clip=False``, with bias correction on.

Schedules: Phi-4 was pretrained with "linear warm-up and decay" to a peak
learning rate of 3e-4 (technical report, p. 7). ``lr_at`` gives that and the
cosine decay most small-model recipes use.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, *, peak: float, warmup: int, total: int, schedule: str = "cosine",
          min_ratio: float = 0.1) -> float:
    """Learning rate at `step` (0-based): linear warm-up, then linear or cosine decay to peak*min_ratio."""
    if schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {schedule!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return peak
    progress = min((step - warmup) / max(total - warmup - 1, 1), 1.0)
    floor = peak * min_ratio
    if schedule == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _trust(numerator: torch.Tensor, denominator: torch.Tensor, w_norm: torch.Tensor,
           step_norm: torch.Tensor) -> torch.Tensor:
    # A zero norm of the weights (a fresh zero-initialised tensor) or of the step (no gradient)
    # means "no adaptation": trust 1, as in timm. The test is on the two norms themselves, not on
    # the ratio's terms: LARS's denominator ||g|| + wd ||w|| stays positive for a zero gradient.
    ok = (w_norm > 0) & (step_norm > 0)
    return torch.where(ok, numerator / denominator.clamp_min(1e-30), torch.ones_like(numerator))


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You, Gitman and Ginsburg, 2017)."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            wd = group["weight_decay"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                state = self.state[w]
                trust = torch.ones((), device=w.device)
                if wd != 0:     # as in timm: no decay (norms, biases) means no adaptation either
                    w_norm, g_norm = w.norm(), g.norm()
                    trust = _trust(group["trust_coefficient"] * w_norm, g_norm + wd * w_norm + group["eps"],
                                   w_norm, g_norm)
                    g = g.add(w, alpha=wd)
                state["trust_ratio"] = trust
                g = g * trust
                buf = state.setdefault("momentum_buffer", torch.zeros_like(w))
                buf.mul_(group["momentum"]).add_(g)
                w.add_(buf, alpha=-group["lr"])
        return loss


class LAMB(torch.optim.Optimizer):
    """Adam's update, rescaled per tensor by ||w|| / ||update|| (You et al., 2019)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad
                state = self.state[w]
                if not state:
                    state["step"] = torch.zeros(())
                    state["exp_avg"] = torch.zeros_like(w)
                    state["exp_avg_sq"] = torch.zeros_like(w)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + group["eps"])
                if group["weight_decay"] != 0:
                    update = update.add(w, alpha=group["weight_decay"])
                w_norm, u_norm = w.norm(), update.norm()
                trust = _trust(w_norm, u_norm, w_norm, u_norm)
                state["trust_ratio"] = trust
                w.add_(update * trust, alpha=-group["lr"])
        return loss


OPTIMIZERS = ("adamw", "lamb", "lars")


def make_optimizer(model: torch.nn.Module, name: str = "adamw", *, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.Optimizer:
    """Build an optimizer with two parameter groups: matrices decay, norms and biases do not.

    Decaying a norm's gain towards 0 would fight the normalisation; decaying
    embeddings and projections is the regulariser we want.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "lamb":
        return LAMB(groups, lr=lr, betas=betas)
    if name == "lars":
        return LARS(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
