"""A sparse autoencoder, written to be read: TopK (the default) and ReLU + L1 (for the lesson on shrinkage).

**Why a dictionary.** A residual stream of d dimensions seems to represent far more than d
features, each a direction, most of them off on any one token: superposition (Elhage et al.
2022, "Toy Models of Superposition", https://transformer-circuits.pub/2022/toy_model/). A sparse
autoencoder (SAE) tries to recover those directions: it writes each activation x as a sparse,
non-negative combination of many more learned directions (the rows of ``W_dec``) than x has
dimensions,

    z     = f(W_enc^T (x - b_dec) + b_enc)        the latents, mostly zero
    x_hat = z @ W_dec + b_dec                     the reconstruction

and is trained to make x_hat close to x while few latents fire (Bricken et al. 2023, "Towards
Monosemanticity", https://transformer-circuits.pub/2023/monosemantic-features/).

**Two ways to be sparse.**

* **ReLU + L1**: f = ReLU, and the loss adds lambda * sum_i z_i * ||W_dec[i]||. The penalty
  works, but it also pulls every active latent towards zero: the reconstruction is
  systematically too small ("shrinkage"), and lambda trades sparsity against fidelity by hand.
* **TopK** (Gao et al. 2024, "Scaling and evaluating sparse autoencoders",
  https://arxiv.org/abs/2406.04093): f keeps the k largest pre-activations (after a ReLU) and zeros
  the rest. L0 is exactly k by construction, there is no penalty to shrink anything, and the
  loss is the reconstruction error alone. phi4lab's default, as in ``eai-sparsify``.

**Conventions**, those of SAELens's files (``phi4lab.dictionaries.files``): ``W_enc`` is
[d_in, d_sae], ``W_dec`` [d_sae, d_in], the decoder rows have unit norm (so a latent's value is the
size of its direction in x), and ``b_dec`` is subtracted before encoding.
"""

from __future__ import annotations

import torch
import torch.nn as nn

KINDS = ("topk", "relu")


class _TopKEncode(torch.autograd.Function):
    """The TopK encoder with a sparse backward pass.

    Forward: the k largest of ReLU(x_c @ W_enc + b_enc) per input, as (values, indices). Only those
    k entries reach the loss, so the gradient is nonzero in k of the d_sae columns per input. The
    backward pass uses that: it gathers k columns of W_enc for the input's gradient and scatters k
    outer products into W_enc's, k x d_in work per input where autograd's dense backward does
    d_sae x d_in twice (what eai-sparsify's fused encoder does too).
    """

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, k: int):
        pre = torch.relu(torch.addmm(b_enc, x_c.reshape(-1, x_c.shape[-1]), W_enc))
        values, indices = pre.topk(k, dim=-1, sorted=False)
        ctx.save_for_backward(x_c.reshape(-1, x_c.shape[-1]), W_enc, indices, values)
        ctx.shape = x_c.shape
        return values.reshape(*x_c.shape[:-1], k), indices.reshape(*x_c.shape[:-1], k)

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x_c, W_enc, indices, values = ctx.saved_tensors
        g = grad_values.reshape(-1, indices.shape[-1]) * (values > 0)       # the ReLU: no gradient where it cut
        grad_x = torch.nn.functional.embedding_bag(indices, W_enc.T, per_sample_weights=g, mode="sum")
        grad_W = torch.zeros_like(W_enc.T).index_add_(0, indices.flatten(), (g[..., None] * x_c[:, None]).reshape(-1, x_c.shape[-1])).T
        grad_b = torch.zeros(W_enc.shape[1], dtype=g.dtype, device=g.device).index_add_(0, indices.flatten(), g.flatten())
        return grad_x.reshape(ctx.shape), grad_W, grad_b, None


class SparseAutoencoder(nn.Module):
    """x [..., d_in] -> latents [..., d_sae] -> reconstruction [..., d_in]."""

    def __init__(self, d_in: int, d_sae: int, kind: str = "topk", k: int | None = 32, seed: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not (isinstance(d_in, int) and isinstance(d_sae, int) and d_in > 0 and d_sae > 0):
            raise ValueError(f"d_in and d_sae must be positive integers, got {d_in!r} and {d_sae!r}")
        if kind == "topk" and not (isinstance(k, int) and 0 < k <= d_sae):
            raise ValueError(f"a TopK SAE needs 0 < k <= d_sae = {d_sae}, got k = {k!r}")
        self.d_in, self.d_sae, self.kind, self.k = d_in, d_sae, kind, k if kind == "topk" else None
        self.d_out = d_in
        g = torch.Generator().manual_seed(seed)
        # Decoder rows: random unit directions. The encoder starts as the decoder's transpose, so that
        # at step 0 each latent reads the direction it writes (Gao et al. 2024, section 2.4).
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.W_enc = nn.Parameter(W_dec.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    # ---------------------------------------------------------------- the forward pass

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads: x - b_dec (the SAE encodes deviations from its decoder bias)."""
        return x - self.b_dec

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.centre(x) @ self.W_enc + self.b_enc

    def encode_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A TopK SAE's latents as (values, indices), each [..., k]: the k that fire, and which they are."""
        if self.kind != "topk":
            raise ValueError("encode_topk is for TopK SAEs; use encode")
        return _TopKEncode.apply(self.centre(x), self.W_enc, self.b_enc, self.k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latents, dense [..., d_sae] with zeros where a latent is off."""
        if self.kind == "relu":
            return torch.relu(self.pre_activations(x))
        return self._dense(*self.encode_topk(x))

    def _dense(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(*values.shape[:-1], self.d_sae, dtype=values.dtype, device=values.device)
        return z.scatter(-1, indices, values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def decode_topk(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The reconstruction from k (value, index) pairs: k rows of W_dec, not all d_sae of them.

        ``embedding_bag`` gathers the k decoder rows of each input and sums them, weighted by the
        values: k x d_in work per input instead of d_sae x d_in (96x less for k = 32 of 3,072).
        """
        flat_v, flat_i = values.reshape(-1, self.k), indices.reshape(-1, self.k)
        out = torch.nn.functional.embedding_bag(flat_i, self.W_dec, per_sample_weights=flat_v, mode="sum")
        return out.reshape(*values.shape[:-1], self.d_out) + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, dense latents)."""
        if self.kind == "topk":
            values, indices = self.encode_topk(x)
            return self.decode_topk(values, indices), self._dense(values, indices)
        z = self.encode(x)
        return self.decode(z), z

    # ---------------------------------------------------------------- what training keeps true

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row to unit norm (the optimiser step moves them off the sphere)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of each decoder row's gradient along the row itself.

        With unit-norm rows, a step along the row would only change its length, which
        ``normalize_decoder`` undoes; removing it lets the optimiser spend its step on direction.
        """
        if self.W_dec.grad is None:
            return
        rows = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        self.W_dec.grad -= (self.W_dec.grad * rows).sum(-1, keepdim=True) * rows

    def extra_repr(self) -> str:
        out = f", d_out={self.d_out}" if isinstance(self, Transcoder) else ""
        return f"d_in={self.d_in}{out}, d_sae={self.d_sae}, kind={self.kind!r}" + (f", k={self.k}" if self.k else "")


class Transcoder(SparseAutoencoder):
    """A sparse dictionary that reads one activation and predicts another: an MLP's input -> its output.

    An SAE explains an activation by itself; a transcoder (Dunefsky, Chlenski and Nanda 2024,
    "Transcoders Find Interpretable LLM Feature Circuits", https://arxiv.org/abs/2406.11944) replaces
    a whole MLP by a wider, sparse one: ``y_hat = TopK(x @ W_enc + b_enc) @ W_dec + b_dec``, trained
    so that y_hat is close to what the MLP really wrote. Its latents are then the MLP's computation,
    and (unlike an MLP's dense neurons) few of them are on at a time, which is what lets an
    attribution graph (phi4lab.dictionaries.graphs) follow a prompt through the layers.

    Same parameters and training as the SAE; two differences: ``W_dec`` is [d_sae, d_out] and
    ``b_dec`` lives in the *output* space, so the input is not centred by it (``centre`` is the
    identity).
    """

    def __init__(self, d_in: int, d_sae: int, d_out: int | None = None, kind: str = "topk", k: int | None = 32,
                 seed: int = 0):
        super().__init__(d_in, d_sae, kind, k, seed)
        d_out = d_in if d_out is None else d_out
        if not (isinstance(d_out, int) and d_out > 0):
            raise ValueError(f"d_out must be a positive integer, got {d_out!r}")
        self.d_out = d_out
        if d_out != d_in:                  # a fresh decoder for the other space; the encoder stays as drawn
            g = torch.Generator().manual_seed(seed + 1)
            W_dec = torch.randn(d_sae, d_out, generator=g)
            self.W_dec = nn.Parameter(W_dec / W_dec.norm(dim=-1, keepdim=True))
            self.b_dec = nn.Parameter(torch.zeros(d_out))

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        return x
