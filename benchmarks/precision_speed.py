"""fp32 against bf16 and fp16 on this CPU: a matmul and a training step, side by side in one run.

Whether 16 bits are faster depends on the hardware: CPUs with AVX-512 BF16 or
AMX compute bf16 natively, AVX2-only CPUs emulate it (tens of times slower),
and fp16 on a CPU is rarely fast. This script measures, it does not assume.

    python benchmarks/precision_speed.py [--n 1024] [--repeats 5]

Training step: a Phi-4-architecture twin (4 layers, d_model 256, Phi-4's
vocabulary), AdamW, batch 8 x 128, under torch.autocast (bf16, fp16) or none
(fp32); best of `repeats` after one warm-up step. Last line: key=value pairs,
e.g. ``native_bf16=... matmul_bf16_ratio=... step_fp32_ms=... step_bf16_ratio=...``.
"""

import argparse
import time

import torch

import phi4lab
from phi4lab.doctor import cpu_name, native_bf16
from phi4lab.model.config import scaled
from phi4lab.training import precision as P


def best_ms(fn, repeats):
    fn()                                            # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def matmul_ms(dtype, n, repeats):
    a = torch.randn(n, n).to(dtype)
    return best_ms(lambda: a @ a, repeats)


def step_ms(dtype, repeats):
    model = phi4lab.load(config=scaled(d_model=256, n_layers=4), seed=0).original_model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 100_000, (8, 128), generator=torch.Generator().manual_seed(0))

    def step():
        ctx = P.autocast(dtype) if dtype != torch.float32 else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return best_ms(step, repeats)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, native bf16: {native_bf16()}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    mm = {k: matmul_ms(dt, args.n, args.repeats) for k, dt in dtypes.items()}
    st = {k: step_ms(dt, max(1, args.repeats // 2)) for k, dt in dtypes.items()}
    for k in dtypes:
        print(f"{k}: {args.n}x{args.n} matmul {mm[k]:9.2f} ms ({mm[k] / mm['fp32']:6.2f} x fp32) | "
              f"training step {st[k]:9.1f} ms ({st[k] / st['fp32']:6.2f} x fp32)")
    print(f"native_bf16={native_bf16()} matmul_fp32_ms={mm['fp32']:.2f} matmul_bf16_ratio={mm['bf16'] / mm['fp32']:.2f} "
          f"matmul_fp16_ratio={mm['fp16'] / mm['fp32']:.2f} step_fp32_ms={st['fp32']:.1f} "
          f"step_bf16_ratio={st['bf16'] / st['fp32']:.2f} step_fp16_ratio={st['fp16'] / st['fp32']:.2f}")


if __name__ == "__main__":
    main()
