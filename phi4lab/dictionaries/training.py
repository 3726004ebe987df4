"""Training a sparse autoencoder: reconstruct, keep the decoder on the sphere, revive dead latents.

The loop, step by step (Gao et al. 2024, https://arxiv.org/abs/2406.04093, sections 2 and A):

1. **Start where the data is.** ``b_dec`` starts at the mean activation, so the SAE's first job is
   the deviations from it, and the encoder starts as the decoder's transpose.
2. **Loss.** The reconstruction error, divided by the data's variance about its mean: the batch's
   *fraction of variance unexplained* (FVU), a number that means the same on any layer or model.
   A ReLU SAE adds lambda * sum_i z_i ||W_dec[i]||, the L1 penalty that makes it sparse.
3. **Dead latents.** A latent that has not fired for ``dead_after`` samples is dead: no gradient
   reaches it through the TopK. The auxiliary loss (AuxK) asks the k_aux most active dead latents
   to reconstruct what the live ones missed, scaled by ``aux_coef``; that gives them gradient, and
   many come back to life.
4. **The decoder stays on the unit sphere**: the gradient's component along each row is removed
   before the step, and the rows are renormalised after it.

**Transcoders** train in the same loop: give ``targets`` (e.g. an MLP's outputs for the MLP inputs
given as ``activations``), and the loss becomes the FVU of the targets; ``b_dec``, now an output bias,
starts at the targets' mean.

The trainer is deliberately small. ``benchmarks/sae_train.py`` runs it against ``eai-sparsify``,
the production trainer it is checked against, on the same activations and budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from phi4lab.dictionaries.sae import SparseAutoencoder, Transcoder


@dataclass
class SAEConfig:
    d_sae: int
    kind: str = "topk"
    k: int | None = 32                 # TopK: latents per input
    l1: float = 0.0                    # ReLU: the L1 coefficient lambda
    lr: float = 2e-3
    batch_size: int = 1024
    epochs: float = 1.0                # passes over the activations
    dead_after: int = 200_000          # samples without firing before a latent counts as dead
    aux_k: int | None = None           # AuxK: dead latents asked to reconstruct the error (default d_in // 2)
    aux_coef: float = 1 / 32
    decay_from: float = 0.8            # the learning rate decays linearly to 0 over the last 20% of steps
    seed: int = 0


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    fvu: list[float] = field(default_factory=list)
    l0: list[float] = field(default_factory=list)
    dead: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _lr_factor(step: int, total: int, decay_from: float) -> float:
    start = int(total * decay_from)
    return 1.0 if step < start else max(0.0, (total - step) / max(1, total - start))


def aux_loss(sae: SparseAutoencoder, x: torch.Tensor, error: torch.Tensor, dead: torch.Tensor, aux_k: int,
             variance: torch.Tensor) -> torch.Tensor:
    """AuxK: how well the `aux_k` most active *dead* latents reconstruct what the live ones missed.

    x [batch, d_in], error [batch, d_out] (target minus reconstruction), dead [d_sae] (bool). Only dead
    latents compete in this TopK, so the gradient reaches exactly them; the error is detached, so the
    live latents are not asked to make their own mistakes easier to fix. Normalised like the FVU.
    """
    pre = sae.pre_activations(x).masked_fill(~dead, float("-inf"))
    top = pre.topk(min(aux_k, int(dead.sum())), dim=-1)
    revived = torch.nn.functional.embedding_bag(top.indices, sae.W_dec, per_sample_weights=torch.relu(top.values),
                                                mode="sum")
    return (error.detach() - revived).pow(2).sum(-1).mean() / variance


@torch.enable_grad()             # a notebook may have turned gradients off globally; training needs them
def train_sae(activations: torch.Tensor, config: SAEConfig, *, targets: torch.Tensor | None = None,
              progress: bool = True, log_every: int = 50) -> tuple[SparseAutoencoder, History]:
    """Train an SAE on activations [n, d_in] (e.g. from phi4lab.dictionaries.activations.collect).

    With targets [n, d_out], a Transcoder that predicts targets[i] from activations[i] instead.
    """
    if activations.ndim != 2 or activations.shape[0] < 2:
        raise ValueError(f"activations must be [n_samples, d_in] with at least 2 samples, got {list(activations.shape)}")
    if targets is not None and (targets.ndim != 2 or targets.shape[0] != activations.shape[0]):
        raise ValueError(f"targets must be [n_samples, d_out] with one row per activation ({activations.shape[0]}), "
                         f"got {list(targets.shape)}")
    for name, t in (("activations", activations), ("targets", targets)):
        if t is not None and not torch.isfinite(t).all():
            raise ValueError(f"the {name} hold NaN or infinity: collect them again (or in fp32)")
    x_all = activations.float()
    y_all = x_all if targets is None else targets.float()
    n, d_in = x_all.shape
    if targets is None:
        sae = SparseAutoencoder(d_in, config.d_sae, config.kind, config.k, seed=config.seed)
    else:
        sae = Transcoder(d_in, config.d_sae, y_all.shape[1], config.kind, config.k, seed=config.seed)
    with torch.no_grad():
        mean = y_all.mean(0)
        sae.b_dec.copy_(mean)
        variance = (y_all - mean).pow(2).sum(-1).mean()                 # per sample, about the mean
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr)
    steps = max(1, int(math.ceil(config.epochs * n / config.batch_size)))
    g = torch.Generator().manual_seed(config.seed)
    order, at = torch.randperm(n, generator=g), 0
    last_fired = torch.zeros(config.d_sae, dtype=torch.long)           # the sample count when each latent last fired
    seen = 0
    aux_k = config.aux_k or y_all.shape[1] // 2
    history = History()
    what = "SAE" if targets is None else "transcoder"
    bar = tqdm(range(steps), desc=f"training a {config.kind} {what} ({config.d_sae:,} latents)", disable=not progress)
    for step in bar:
        if at + config.batch_size > n:                               # the pass is over: a new order
            order, at = torch.randperm(n, generator=g), 0
        rows = order[at:at + config.batch_size]
        x, y = x_all[rows], y_all[rows]
        at += config.batch_size
        for group in opt.param_groups:
            group["lr"] = config.lr * _lr_factor(step, steps, config.decay_from)
        if config.kind == "topk":          # k values and their indices: no dense [batch, d_sae] tensor at all
            values, indices = sae.encode_topk(x)
            x_hat = sae.decode_topk(values, indices)
            fired = torch.zeros(config.d_sae, dtype=torch.bool).index_fill_(0, indices[values > 0], True)
            l0 = (values > 0).sum(-1).float().mean()
        else:
            x_hat, z = sae(x)
            fired, l0 = (z > 0).any(0), (z > 0).sum(-1).float().mean()
        error = y - x_hat
        loss = fvu = error.pow(2).sum(-1).mean() / variance
        if config.kind == "relu":
            loss = loss + config.l1 * (z * sae.W_dec.norm(dim=-1)).sum(-1).mean() / variance.sqrt()
        seen += len(x)
        last_fired[fired] = seen
        dead = (seen - last_fired) >= config.dead_after
        if config.kind == "topk" and dead.any():
            loss = loss + config.aux_coef * aux_loss(sae, x, error, dead, aux_k, variance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_gradient()
        opt.step()
        sae.normalize_decoder()
        if step % log_every == 0 or step == steps - 1:
            history.step.append(step)
            history.fvu.append(fvu.item())
            history.l0.append(l0.item())
            history.dead.append(dead.float().mean().item())
            bar.set_postfix(fvu=f"{history.fvu[-1]:.3f}", l0=f"{history.l0[-1]:.0f}", dead=f"{history.dead[-1]:.0%}")
    return sae.eval(), history
