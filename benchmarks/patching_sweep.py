"""Activation-patching sweeps: phi4lab.analysis.sweep against TransformerLens' patching, same model and prompts.

Two sweeps, each run by both libraries in the same process, alternating rounds so that drift
in machine load hits both alike (the best round of each is kept):

* the residual stream, every layer x position (``blocks.L.hook_resid_pre``):
  ``sweep.resid_pre_sweep`` against ``patching.get_act_patch_resid_pre``;
* every head's output at all positions (``blocks.L.attn.hook_z``):
  ``sweep.head_out_sweep`` against ``patching.get_act_patch_attn_head_out_all_pos``.

The model is a random Phi-4-shaped twin (8 layers, d_model 512, 8 query heads over 2 KV heads,
Phi-4's vocabulary); the clean prompt is 64 random tokens and the corrupted one changes its
first half. The metric is a logit difference at the last position. max_diff is the largest
difference between the two libraries' grids over both sweeps.

    python benchmarks/patching_sweep.py [--rounds 3] [--layers 8] [--d-model 512] [--seq 64] [--device cpu]

Last line: ``phi4lab_s=... tl_s=... speedup=... max_diff=...`` (both sweeps together).
"""

import argparse
import contextlib
import io
import time

import torch
from transformer_lens import patching

import phi4lab
from phi4lab.analysis import sweep
from phi4lab.model.config import scaled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = phi4lab.load(config=scaled(d_model=args.d_model, n_layers=args.layers), seed=0, device=args.device,
                         dtype=dtype)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50_000, (1, args.seq), generator=g)
    corrupt = clean.clone()
    corrupt[:, : args.seq // 2] = torch.randint(0, 50_000, (1, args.seq // 2), generator=g)
    clean, corrupt = clean.to(args.device), corrupt.to(args.device)
    correct, wrong = int(clean[0, -1]), int(corrupt[0, -1] + 1)
    metric = sweep.logit_difference(correct, wrong)

    def tl_metric(logits):                       # TransformerLens: full logits [batch, pos, vocab] -> scalar
        return metric(logits[None, :, -1].float())[0].mean()

    def run_tl():
        _, cache = model.run_with_cache(clean)
        with contextlib.redirect_stderr(io.StringIO()):             # its progress bars
            resid = patching.get_act_patch_resid_pre(model, corrupt, cache, tl_metric)
            heads = patching.get_act_patch_attn_head_out_all_pos(model, corrupt, cache, tl_metric)
        return resid.float().cpu(), heads.float().cpu()

    def run_ours():
        resid = sweep.resid_pre_sweep(model, clean, corrupt, metric).mean(-1)
        heads = sweep.head_out_sweep(model, clean, corrupt, metric).mean(-1)
        return resid, heads

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    best = {"tl": float("inf"), "phi4lab": float("inf")}
    grids = {}
    for r in range(args.rounds):
        for name, fn in (("tl", run_tl), ("phi4lab", run_ours)):
            sync()
            t0 = time.perf_counter()
            grids[name] = fn()
            sync()
            seconds = time.perf_counter() - t0
            best[name] = min(best[name], seconds)
            print(f"round {r + 1} {name:>8}: {seconds:.3f} s", flush=True)
    diff = max((a - b).abs().max().item() for a, b in zip(grids["tl"], grids["phi4lab"]))
    scale = max(g.abs().max().item() for g in grids["tl"])
    print(f"layers={args.layers} d_model={args.d_model} heads={model.cfg.n_heads} kv_heads={model.cfg.n_key_value_heads} "
          f"seq={args.seq} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
          f"largest |metric change|={scale:.3f}")
    print(f"phi4lab_s={best['phi4lab']:.3f} tl_s={best['tl']:.3f} speedup={best['tl'] / best['phi4lab']:.2f} "
          f"max_diff={diff:.2e}")


if __name__ == "__main__":
    main()
