"""Tokens per second: phi4lab.training.loop against a plain PyTorch loop, same model, batch and data.

The plain loop is the irreducible core (forward, loss, backward, AdamW step).
phi4lab.training.loop adds the schedule, clipping, accelerate, logging and a progress
bar; this measures what they cost. Rounds alternate between the two loops so
that drift in machine load hits both alike; the best round of each is kept.

    python benchmarks/train_throughput.py [--steps 30] [--rounds 3]

Last line: key=value pairs, e.g. `phi4lab_tok_s=... plain_tok_s=... ratio=...`.
"""

import argparse
import time

import torch

from phi4lab.model.loading import random_hf_model
from phi4lab.recipes.tiny import tiny_config
from phi4lab.training.loop import TrainConfig, lm_loss, train


def plain_loop(model, get_batch, steps, lr):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    for i in range(steps):
        x = get_batch(i)
        loss = lm_loss(model(x).logits, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    cfg = tiny_config()
    fixed = torch.randint(0, cfg.vocab_size, (64, args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    get_batch = lambda i: fixed[i % 64]
    tokens = args.steps * args.batch * args.seq
    best = {"phi4lab": float("inf"), "plain": float("inf")}
    for r in range(args.rounds):
        for name in ("plain", "phi4lab"):
            model = random_hf_model(cfg, seed=0)
            t0 = time.perf_counter()
            if name == "plain":
                plain_loop(model, get_batch, args.steps, 1e-3)
            else:
                train(model, get_batch, TrainConfig(steps=args.steps, lr=1e-3, warmup_steps=5, log_every=10,
                                                    progress=True))
            seconds = time.perf_counter() - t0
            best[name] = min(best[name], seconds)
            print(f"round {r + 1} {name:>8}: {tokens / seconds:9.0f} tokens/s ({seconds:.2f} s)", flush=True)
    phi, plain = tokens / best["phi4lab"], tokens / best["plain"]
    print(f"model={sum(p.numel() for p in model.parameters())} batch={args.batch} seq={args.seq} "
          f"steps={args.steps} threads={torch.get_num_threads()}")
    print(f"phi4lab_tok_s={phi:.0f} plain_tok_s={plain:.0f} ratio={phi / plain:.3f}")


if __name__ == "__main__":
    main()
