"""Activation-patching sweeps, exact and fast: every layer x position, or every head, in a few batched runs.

A patching sweep asks, for every activation in a grid, "if only this one came from the
clean prompt, how much of the clean behaviour comes back?" The straightforward way,
TransformerLens' ``patching.get_act_patch_resid_pre``, runs the whole corrupted prompt once
per cell: n_layers x n_positions full forward passes for the residual stream. Most of that
work recomputes numbers that the patch cannot change:

* **Layers below the patch are untouched.** Patching the residual stream entering layer l
  changes nothing in layers 0 .. l-1, so the sweep starts at layer l from the corrupted
  run's cached residual.
* **Positions before the patch are untouched.** Attention is causal: position i reads only
  positions <= i. Patching position p leaves every position before p exactly as in the
  corrupted run, at every layer, and so also their keys and values. Those come from the
  corrupted run's cache (a KV cache, as in generation), and only the positions from the patch
  on are recomputed.
* **Many patches share one forward.** The patches of one layer, a chunk of positions at a
  time, run as one batch; per-call overhead (hooks, module calls) is paid once per batch.
  A batch recomputes from its *first* patch's position, so the chunk trades reuse for batching.

With chunk=1 the first two bound the work at about a quarter of the straightforward sweep's
(the sum over l and p of (L - l)(T - p), against L^2 T^2); the default chunk of 16 gives up some
of the position reuse for fewer, larger batches. The numbers are the same either way: the
forward here is the one of ``phi4lab.scratch.architecture`` (checked piece by piece against
Hugging Face), run on the model's own weights, and the tests compare every grid with
TransformerLens' to 1e-5.

The head sweep patches one head's output (``hook_z``) at every position; it reuses
everything below the head's layer and batches all heads of a layer together.

A metric here reads the last position's logits of every patched run at once:
``metric(logits)`` gets ``[n_patches, n_prompts, d_vocab]`` and returns
``[n_patches, n_prompts]``, one value per prompt, so that a sweep over a dataset of prompt
pairs keeps each pair's value for confidence intervals. ``logit_difference`` builds the
usual one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from phi4lab.analysis.stats import bootstrap
from phi4lab.model import config as phi4config
from phi4lab.model.bridge import hf_config, hf_state_dict
from phi4lab.model.guards import check_tokens
from phi4lab.scratch.architecture import (
    apply_partial_rotary,
    gated_mlp,
    repeat_kv,
    rms_norm,
    rope_parameters,
    rotary_cos_sin,
    split_qkv,
)


def logit_difference(correct, wrong):
    """A sweep metric: logit[correct] - logit[wrong] at the last position, per prompt.

    correct, wrong: one token id, or one per prompt (a list or tensor of length n_prompts).
    """
    def metric(logits: torch.Tensor) -> torch.Tensor:           # [n_patches, n_prompts, d_vocab]
        n = logits.shape[1]
        ids = [torch.as_tensor(i, device=logits.device).reshape(-1).expand(n) for i in (correct, wrong)]
        pick = lambda i: logits.gather(-1, i[None, :, None].expand(logits.shape[0], n, 1))[..., 0]  # noqa: E731
        return pick(ids[0]) - pick(ids[1])
    return metric


@dataclass
class _Run:
    """One unpatched run's cache: per layer, the residual entering it, its rotated keys, values and head outputs."""

    resid: list[torch.Tensor]     # L + 1 tensors [N, T, d]: resid_pre of each layer, then the final residual
    k: list[torch.Tensor]         # L tensors [N, KV, T, d_head], after the rotation
    v: list[torch.Tensor]         # L tensors [N, KV, T, d_head]
    z: list[torch.Tensor]         # L tensors [N, H, T, d_head]: each head's output before o_proj


class _Forward:
    """Phi-4's forward pass on a model's own weights, able to start at any layer and any position."""

    def __init__(self, model):
        cfg = hf_config(model)
        rope = rope_parameters(cfg)
        if rope.get("rope_type", "default") != "default":
            raise ValueError("the fast sweep implements the default rotary embedding (Phi-4's, whole or partial), "
                             f"not scaled variants such as LongRoPE (Phi-4-mini's); this config has {rope}. "
                             "analysis.patch works on any model")
        state = hf_state_dict(model)
        self.n_layers, self.H, self.KV = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
        self.d_head, self.eps = phi4config.head_dim(cfg), cfg.rms_norm_eps
        self.scale = self.d_head ** -0.5                              # as Hugging Face's eager attention
        self.embed = state["model.embed_tokens.weight"]
        self.unembed = state.get("lm_head.weight", self.embed)        # tied embeddings share the matrix
        self.final_norm = state["model.norm.weight"]
        self.layers = [{name: state[f"model.layers.{i}.{full}"] for name, full in (
            ("ln1", "input_layernorm.weight"), ("qkv", "self_attn.qkv_proj.weight"), ("o", "self_attn.o_proj.weight"),
            ("ln2", "post_attention_layernorm.weight"), ("gate_up", "mlp.gate_up_proj.weight"),
            ("down", "mlp.down_proj.weight"))} for i in range(self.n_layers)]
        self.theta, self.rotary_dim = rope["rope_theta"], phi4config.rotary_dim(cfg)
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self._cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None

    def cos_sin(self, T: int):
        if self._cos_sin is None or self._cos_sin[0].shape[0] < T:
            cos, sin = rotary_cos_sin(torch.arange(T, device=self.device), self.rotary_dim, self.theta)
            self._cos_sin = (cos.to(self.dtype), sin.to(self.dtype))
        return self._cos_sin[0][:T], self._cos_sin[1][:T]

    def attention(self, layer: int, x: torch.Tensor, start: int, past_k=None, past_v=None):
        """Head outputs z [B, H, S, d_head] of positions start .. start+S-1, and their new keys and values.

        past_k, past_v [B, KV, start, d_head]: the keys and values of the positions before `start`.
        """
        w = self.layers[layer]
        S = x.shape[1]
        q, k, v = split_qkv(F.linear(rms_norm(x, w["ln1"], self.eps), w["qkv"]), self.H, self.KV, self.d_head)
        cos, sin = self.cos_sin(start + S)
        q, k = apply_partial_rotary(q, cos[start:], sin[start:]), apply_partial_rotary(k, cos[start:], sin[start:])
        keys = k if not start else torch.cat([past_k, k], dim=2)
        values = v if not start else torch.cat([past_v, v], dim=2)
        rep = self.H // self.KV
        scores = q @ repeat_kv(keys, rep).transpose(-1, -2) * self.scale     # [B, H, S, start + S]
        future = torch.arange(start + S, device=x.device)[None, :] > torch.arange(start, start + S, device=x.device)[:, None]
        scores = scores.masked_fill(future, float("-inf"))
        pattern = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        return pattern @ repeat_kv(values, rep), k, v

    def rest_of_block(self, layer: int, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The block's output from its input x and its head outputs z: o_proj, residual, MLP, residual."""
        w = self.layers[layer]
        h = x + F.linear(rearrange(z, "b h s d -> b s (h d)"), w["o"])
        return h + gated_mlp(rms_norm(h, w["ln2"], self.eps), w["gate_up"], w["down"])

    def logits(self, x_last: torch.Tensor) -> torch.Tensor:
        return F.linear(rms_norm(x_last, self.final_norm, self.eps), self.unembed)

    def run(self, tokens: torch.Tensor) -> _Run:
        x = self.embed[tokens]
        run = _Run([x], [], [], [])
        for layer in range(self.n_layers):
            z, k, v = self.attention(layer, x, 0)
            x = self.rest_of_block(layer, x, z)
            run.resid.append(x)
            run.k.append(k)
            run.v.append(v)
            run.z.append(z)
        return run


def _tile(t: torch.Tensor, n: int) -> torch.Tensor:
    """[N, ...] -> [n * N, ...]: the prompts repeated once per patch in a batch (patch-major)."""
    return t.unsqueeze(0).expand(n, *t.shape).reshape(n * t.shape[0], *t.shape[1:])


def _pair(model, clean_tokens, corrupt_tokens) -> tuple[_Forward, torch.Tensor, torch.Tensor]:
    """The forward pass on the model's weights, and the checked clean and corrupted tokens on its device."""
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens), check_tokens(model, corrupt_tokens)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError(f"clean {tuple(clean_tokens.shape)} and corrupted {tuple(corrupt_tokens.shape)} prompts "
                         "must have the same shape: pair each clean prompt with a corrupted one of the same length")
    forward = _Forward(model)
    return forward, clean_tokens.to(forward.device), corrupt_tokens.to(forward.device)


def _prepare(model, clean_tokens, corrupt_tokens):
    forward, clean_tokens, corrupt_tokens = _pair(model, clean_tokens, corrupt_tokens)
    return forward, forward.run(clean_tokens), forward.run(corrupt_tokens)


def _apply(metric, logits: torch.Tensor, n_patches: int, n_prompts: int) -> torch.Tensor:
    values = metric(logits.reshape(n_patches, n_prompts, -1))
    if tuple(values.shape) != (n_patches, n_prompts):
        raise ValueError(f"the metric must return one value per patch and prompt, [{n_patches}, {n_prompts}], "
                         f"from logits [{n_patches}, {n_prompts}, d_vocab]; it returned {list(values.shape)}")
    return values


@torch.no_grad()
def resid_pre_sweep(model, clean_tokens, corrupt_tokens, metric, *, chunk: int = 16) -> torch.Tensor:
    """[n_layers, n_positions, n_prompts]: the metric with ``blocks.L.hook_resid_pre`` at one position from clean.

    Same numbers as TransformerLens' ``patching.get_act_patch_resid_pre`` (which averages over prompts:
    take ``.mean(-1)``), computed with the reuse described above. chunk: patches per batched run.
    """
    forward, clean, corrupt = _prepare(model, clean_tokens, corrupt_tokens)
    N, T = clean.resid[0].shape[:2]
    out = torch.empty(forward.n_layers, T, N)
    for layer in range(forward.n_layers):
        for start in range(0, T, chunk):
            positions = list(range(start, min(start + chunk, T)))
            c = len(positions)
            x = corrupt.resid[layer][:, start:].unsqueeze(0).repeat(c, 1, 1, 1)           # [c, N, S, d]
            for i, p in enumerate(positions):
                x[i, :, p - start] = clean.resid[layer][:, p]
            x = x.reshape(c * N, T - start, -1)
            for m in range(layer, forward.n_layers):
                past = (_tile(corrupt.k[m][:, :, :start], c), _tile(corrupt.v[m][:, :, :start], c)) if start else (None, None)
                z, _, _ = forward.attention(m, x, start, *past)
                x = forward.rest_of_block(m, x, z)
            out[layer, start:start + c] = _apply(metric, forward.logits(x[:, -1]), c, N).float().cpu()
    return out


@torch.no_grad()
def head_out_sweep(model, clean_tokens, corrupt_tokens, metric) -> torch.Tensor:
    """[n_layers, n_heads, n_prompts]: the metric with one head's output (``hook_z``, all positions) from clean.

    Same numbers as TransformerLens' ``patching.get_act_patch_attn_head_out_all_pos``
    (averaged over prompts there). All heads of a layer run as one batch.
    """
    forward, clean, corrupt = _prepare(model, clean_tokens, corrupt_tokens)
    N = clean.resid[0].shape[0]
    H = forward.H
    out = torch.empty(forward.n_layers, H, N)
    for layer in range(forward.n_layers):
        z = corrupt.z[layer].unsqueeze(0).repeat(H, 1, 1, 1, 1)                          # [H, N, H, T, d]
        for h in range(H):
            z[h, :, h] = clean.z[layer][:, h]
        x = forward.rest_of_block(layer, _tile(corrupt.resid[layer], H), z.reshape(H * N, *z.shape[2:]))
        for m in range(layer + 1, forward.n_layers):
            zm, _, _ = forward.attention(m, x, 0)
            x = forward.rest_of_block(m, x, zm)
        out[layer] = _apply(metric, forward.logits(x[:, -1]), H, N).float().cpu()
    return out


# ------------------------------------------------------------------ attribution patching

def attribution_patch(model, clean_tokens, corrupt_tokens, metric) -> dict[str, torch.Tensor]:
    """The gradient estimate of both sweeps from one clean run, one corrupted run and one backward pass.

    Attribution patching (Nanda 2023, https://www.neelnanda.io/mechanistic-interpretability/attribution-patching;
    Syed et al. 2023, https://arxiv.org/abs/2310.10348) replaces each patched run by a first-order Taylor
    step: patching activation a from corrupted to clean changes the metric by about
    ``(a_clean - a_corrupt) . d metric / d a``, with the gradient taken once, on the corrupted run.
    Returns the estimated *change* from the corrupted run's metric, per prompt:
    {"resid_pre": [n_layers, n_positions, n_prompts], "head_out": [n_layers, n_heads, n_prompts]},
    to compare with ``resid_pre_sweep`` and ``head_out_sweep`` minus the corrupted metric. The estimate is
    exact for a metric linear in the activation and fails where the model is far from linear between
    the two runs (a saturated softmax, an attention pattern that switches), which is what the comparison shows.
    """
    forward, clean_tokens, corrupt_tokens = _pair(model, clean_tokens, corrupt_tokens)
    clean = forward.run(clean_tokens)               # the corrupted run is the one below, with gradients
    resids, zs = [], []
    with torch.enable_grad():
        x = forward.embed[corrupt_tokens].detach().requires_grad_(True)
        for layer in range(forward.n_layers):
            resids.append(x)
            x.retain_grad()
            z, _, _ = forward.attention(layer, x, 0)
            z.retain_grad()
            zs.append(z)
            x = forward.rest_of_block(layer, x, z)
        values = _apply(metric, forward.logits(x[:, -1]), 1, corrupt_tokens.shape[0])
        values.sum().backward()                      # prompts are independent: one backward gives each its gradient
    with torch.no_grad():
        resid = torch.stack([((c - a) * a.grad).sum(-1).T for c, a in zip(clean.resid, resids)])   # [L, T, N]
        heads = torch.stack([((c - a) * a.grad).sum((-1, -2)).T for c, a in zip(clean.z, zs)])     # [L, H, N]
    return {"resid_pre": resid.float().cpu(), "head_out": heads.float().cpu()}


def interval(values: torch.Tensor, n: int = 1000, seed: int = 0, level: float = 0.95):
    """(mean, low, high) over the prompts (the last axis) of a sweep, by the percentile bootstrap.

    A sweep over a dataset of prompt pairs keeps one value per pair; the interval says how much the
    mean depends on which pairs we happened to have (phi4lab.analysis.stats.bootstrap).
    """
    return bootstrap(values, lambda v: v.mean(-1), n=n, seed=seed, level=level)
