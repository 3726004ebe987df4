"""How good is an SAE? Reconstruction, sparsity, dead latents, and what the model loses when it reads the SAE.

* **FVU**, the fraction of variance unexplained: sum ||x - x_hat||^2 over sum ||x - mean||^2. 0 is a
  perfect reconstruction, 1 no better than the mean.
* **L0**: how many latents fire per input (exactly k for a TopK SAE, unless some are zero).
* **Dead and dense latents**: never firing on the evaluation set, or firing on more than a tenth
  of it. Dead latents are wasted capacity; dense ones are rarely interpretable.
* **Loss recovered** (the test that matters): splice the SAE into the model, so that the layer after
  the hook reads x_hat instead of x, and compare the next-token loss with the clean model's and
  with the loss when the activation is zeroed instead. ``(zero - spliced) / (zero - clean)``: 1 means
  the model loses nothing by reading the SAE, 0 means it might as well read zeros.

A **transcoder** is measured the same way against what it predicts: FVU of the MLP's output, and the
loss when the MLP's output is replaced by the transcoder's prediction (from the MLP's real input) or
zeroed. ``transcoder_hooks`` names the pair of hook points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from phi4lab.dictionaries.sae import SparseAutoencoder, Transcoder
from phi4lab.model.guards import check_hook, check_tokens
from phi4lab.training.loop import next_token_losses


@dataclass
class SAEReport:
    fvu: float
    l0: float
    dead: float                 # share of latents that never fire on the evaluation activations
    dense: float                # share that fire on more than 10% of them
    clean_loss: float | None = None
    spliced_loss: float | None = None
    zero_loss: float | None = None

    @property
    def loss_recovered(self) -> float | None:
        if self.clean_loss is None:
            return None
        return (self.zero_loss - self.spliced_loss) / (self.zero_loss - self.clean_loss)


@torch.no_grad()
def reconstruction(sae: SparseAutoencoder, activations: torch.Tensor, batch_size: int = 4096,
                   targets: torch.Tensor | None = None) -> SAEReport:
    """FVU, L0, dead and dense shares of `sae` on activations [n, d_in] (a transcoder: against `targets`)."""
    x_all = activations.float()
    y_all = x_all if targets is None else targets.float()
    mean = y_all.mean(0)
    err = total = 0.0
    fires = torch.zeros(sae.d_sae)
    l0 = 0.0
    for start in range(0, len(x_all), batch_size):
        x, y = x_all[start:start + batch_size], y_all[start:start + batch_size]
        x_hat, z = sae(x)
        err += (y - x_hat).pow(2).sum().item()
        total += (y - mean).pow(2).sum().item()
        on = z > 0
        fires += on.sum(0)
        l0 += on.sum().item()
    n = len(x_all)
    return SAEReport(fvu=err / total, l0=l0 / n, dead=(fires == 0).float().mean().item(),
                     dense=(fires > 0.1 * n).float().mean().item())


def splice_hook(sae: SparseAutoencoder):
    """A hook that replaces an activation by its SAE reconstruction (positions 1 onwards; see below)."""
    def hook(act, hook):
        out = act.clone()
        out[:, 1:] = sae(act[:, 1:].float())[0].to(act.dtype)   # position 0 is not what the SAE learned from
        return out
    return hook


def transcoder_hooks(layer: int) -> tuple[str, str]:
    """(what a layer's transcoder reads, what it writes): the MLP's normalised input and its output."""
    return f"blocks.{layer}.mlp.hook_in", f"blocks.{layer}.hook_mlp_out"


def splice_hooks(sae: SparseAutoencoder, hook_name: str, input_hook: str | None = None) -> list:
    """The forward hooks that make the model read `sae`'s output at `hook_name` (positions 1 onwards).

    An SAE reconstructs the activation from itself; a transcoder (``input_hook`` given) predicts it
    from `input_hook`'s activation, which the first hook keeps for the second.
    """
    if input_hook is None:
        return [(hook_name, splice_hook(sae))]
    seen = {}

    def keep(act, hook):
        seen["x"] = act
        return act

    def replace(act, hook):
        out = act.clone()
        out[:, 1:] = sae(seen.pop("x")[:, 1:].float())[0].to(act.dtype)
        return out
    return [(input_hook, keep), (hook_name, replace)]


@torch.no_grad()
def loss_recovered(model, sae: SparseAutoencoder, tokens: torch.Tensor, hook_name: str,
                   batch_size: int = 16, input_hook: str | None = None) -> tuple[float, float, float]:
    """(clean, spliced, zero-ablated) mean next-token loss on `tokens` [n, T], positions 1 onwards.

    The SAE replaces `hook_name`'s activation from position 1 on (position 0 is left as it is, since
    the SAE was trained without it), and the zero ablation zeroes the same positions. For a transcoder,
    `input_hook` is what it reads (``transcoder_hooks(layer)`` gives both names).
    """
    tokens = check_tokens(model, tokens)
    check_hook(model, hook_name)
    if isinstance(sae, Transcoder) and input_hook is None:
        raise ValueError("a transcoder predicts `hook_name` from another hook point: give input_hook "
                         "(phi4lab.dictionaries.evaluate.transcoder_hooks(layer) names both)")
    if input_hook is not None:
        check_hook(model, input_hook)

    def zero(act, hook):
        out = act.clone()
        out[:, 1:] = 0
        return out

    sums = torch.zeros(3)
    count = 0
    device = next(model.parameters()).device
    for start in range(0, len(tokens), batch_size):
        batch = tokens[start:start + batch_size].to(device)
        for i, hooks in enumerate(([], splice_hooks(sae, hook_name, input_hook), [(hook_name, zero)])):
            logits = model.run_with_hooks(batch, fwd_hooks=hooks)
            sums[i] += next_token_losses(logits, batch)[:, 1:].sum().item()   # predictions made from positions 1+
        count += batch.shape[0] * (batch.shape[1] - 2)
    clean, spliced, zeroed = (sums / count).tolist()
    return clean, spliced, zeroed


def evaluate(model, sae: SparseAutoencoder, activations: torch.Tensor, tokens: torch.Tensor, hook_name: str, *,
             targets: torch.Tensor | None = None, input_hook: str | None = None) -> SAEReport:
    """reconstruction() on `activations` (and `targets`), and loss_recovered() on `tokens`, in one report."""
    report = reconstruction(sae, activations, targets=targets)
    report.clean_loss, report.spliced_loss, report.zero_loss = loss_recovered(model, sae, tokens, hook_name,
                                                                              input_hook=input_hook)
    return report
