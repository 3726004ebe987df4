"""Every tool at Phi-4's full size: a model with Phi-4's exact config and random weights, on a GPU.

Real Phi-4 weights cannot be downloaded on the course machines, but a model with the same
config exercises every shape, memory figure and speed the real one would: 40 layers,
d_model 5,120, 40 query heads over 10 KV heads, d_mlp 17,920, 100,352 tokens,
14,659,507,200 parameters, 29.3 GB in bf16. The weights are built directly on the device,
in bf16 (phi4lab.load does this for any device but the CPU), never as a 58.6 GB fp32 copy
in host memory.

What it measures, one ``key=value`` line each:

* weights: bytes held against ``config.weight_bytes`` (on CUDA, ``torch.cuda.memory_allocated``);
* the cache planner: a residual-only plan and a full plan at two prompt lengths, the bytes
  the returned cache holds against the plan's prediction, and on CUDA the measured peak
  (``torch.cuda.max_memory_allocated``) against weights + ``cache_plan.forward_bytes``;
  a plan over its budget must be refused before anything is allocated;
* forward throughput (tokens/s) at two batch sizes and prompt lengths: raw Hugging Face
  with sdpa and with eager attention, then the bridge without a cache, with a planned
  residual cache and with a full cache (a plan that does not fit is reported as refused);
* one attention view of every head of a layer at the longer length (page bytes, seconds);
* the batched activation-patching sweeps and attribution patching on a short prompt (seconds);
* one LoRA training step at rank 8 (on CUDA, the step's peak memory, less what else the
  device holds, chiefly the bridge's own weights, against the trainer's pre-flight estimate,
  ``training_memory_bytes``, which should not be below it);
* ``bias.report`` end to end (seconds, and peak memory on CUDA). Its head mediation patches
  each of Phi-4's 1,600 heads over every prompt pair, thousands of full-size forward passes,
  so at full size it runs only with ``--bias on``.

Peaks are CUDA's allocator figures; on a CPU there is no such counter and they print ``n/a``.

    python benchmarks/fullsize.py --device cuda                 # Phi-4's config, bf16, on a GPU (29 GB of weights)
    python benchmarks/fullsize.py --config scaled --device cpu  # the same steps on a small twin (tests run this)

The last line repeats the headline figures.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

import phi4lab
from phi4lab.analysis import sweep
from phi4lab.analysis.cache_plan import forward_bytes, plan_cache, run_with_plan
from phi4lab.model import config as phi4config
from phi4lab.model.loading import random_hf_model
from phi4lab.model.memory import InsufficientMemoryError

SIZES = {   # config name -> prompt lengths, batch sizes, patching prompt length, LoRA batch x length,
            # occupations in the bias report (None: all 60)
    "phi4": dict(seqs=(512, 2048), batches=(1, 8), patch_seq=64, lora=(1, 512), occupations=None),
    "scaled": dict(seqs=(32, 128), batches=(1, 2), patch_seq=16, lora=(2, 32), occupations=12),
}


def build_config(name: str):
    if name == "phi4":
        return phi4config.PHI4
    # Phi-4's vocabulary (so the tokenizer and the bias probes work) and enough context for the lengths.
    return phi4config.scaled(d_model=128, n_layers=2, max_position_embeddings=1024)


class Memory:
    """Allocator figures on CUDA; None on a CPU, which keeps no such count."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated(self):
        return torch.cuda.memory_allocated(self.device) if self.cuda else None

    def reset_peak(self):
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self):
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def emit(**pairs) -> None:
    print(" ".join(f"{k}={fmt(v)}" for k, v in pairs.items()), flush=True)


def ratio(a, b):
    return None if a is None or b is None else a / b


def held_bytes(tensors) -> int:
    """Bytes of the distinct memory behind `tensors`, counted by storage.

    An alias (the same tensor under two hook names) counts once, and so does a view: the
    bridge exposes Q, K and V as views into the fused ``qkv_proj`` weight, and the gate as
    one into ``gate_up_proj``, each listed as a parameter of its own.
    """
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def timed(fn, mem: Memory, rounds: int) -> float:
    """Best wall time of `rounds` calls, after one warm-up."""
    fn()
    mem.sync()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        mem.sync()
        best = min(best, time.perf_counter() - t0)
    return best


def random_tokens(batch: int, seq: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50_000, (batch, seq), generator=g).to(device)


def resid_only(name: str) -> bool:
    return name.endswith("hook_resid_post")


def hf_throughput(cfg, dtype, device, sizes, mem, rounds):
    """Raw Hugging Face, before the bridge exists: sdpa and eager attention, same weights."""
    hf = random_hf_model(cfg, seed=0, device=device, dtype=dtype)
    out = {}
    for impl in ("sdpa", "eager"):
        hf.set_attn_implementation(impl)
        for b in sizes["batches"]:
            for s in sizes["seqs"]:
                tokens = random_tokens(b, s, device)
                with torch.no_grad():
                    sec = timed(lambda hf=hf, tokens=tokens: hf(tokens, use_cache=False).logits, mem, rounds)
                out[(impl, b, s)] = b * s / sec
                emit(step="throughput", kind=f"hf_{impl}", batch=b, seq=s, tokens_per_s=b * s / sec)
    del hf
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(SIZES), default="phi4")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on a CPU")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bias", choices=("auto", "on", "off"), default="auto",
                    help="bias.report: auto runs it on the scaled twin and leaves it out at full size")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    cfg, sizes, mem = build_config(args.config), SIZES[args.config], Memory(device)
    torch.set_grad_enabled(False)
    gpu = torch.cuda.get_device_name(device) if mem.cuda else "none"
    emit(config=args.config, device=device.type, gpu=gpu.replace(" ", "_"), dtype=str(dtype).removeprefix("torch."),
         params=phi4config.count_parameters(cfg), torch=torch.__version__)

    # ---- raw Hugging Face throughput (its own copy, freed before the bridge is built)
    hf = hf_throughput(cfg, dtype, device, sizes, mem, args.rounds)

    # ---- weights: what the device holds against the arithmetic
    mem.reset_peak()
    before = mem.allocated()
    t0 = time.perf_counter()
    model = phi4lab.load(config=cfg, dtype=dtype, device=device, seed=0)
    load_s = time.perf_counter() - t0
    predicted = phi4config.weight_bytes(cfg, dtype)
    params = held_bytes(p for p in model.parameters())
    allocated = None if before is None else mem.allocated() - before
    weights_ratio = ratio(allocated if allocated is not None else params, predicted)
    emit(step="weights", predicted_bytes=predicted, parameter_bytes=params, allocated_bytes=allocated,
         ratio=weights_ratio, load_s=load_s)

    # ---- the cache planner: prediction against what the cache holds, and against the peak
    cache_ratios = []
    for s in sizes["seqs"]:
        tokens = random_tokens(1, s, device)
        for kind, names in (("resid", resid_only), ("full", None)):
            plan = plan_cache(model, s, 1, names=names)
            mem.reset_peak()
            base = mem.allocated()
            try:
                _, cache = run_with_plan(model, tokens, plan)
            except InsufficientMemoryError:
                emit(step="cache_plan", plan=kind, seq=s, predicted_bytes=plan.total_bytes, refused=1)
                continue
            held = held_bytes(cache.values())
            peak = mem.peak()
            want_peak = None if base is None else base + forward_bytes(model, s, names=plan.names)
            cache_ratios.append(held / plan.total_bytes)
            emit(step="cache_plan", plan=kind, seq=s, hooks=len(plan.names), predicted_bytes=plan.total_bytes,
                 held_bytes=held, ratio=held / plan.total_bytes, peak_bytes=peak, predicted_peak_bytes=want_peak,
                 peak_ratio=ratio(peak, want_peak))
            del cache
    # Over budget: refused before anything is allocated.
    s = sizes["seqs"][-1]
    plan = plan_cache(model, s, 1)
    before = mem.allocated()
    try:
        run_with_plan(model, random_tokens(1, s, device), plan, budget_bytes=plan.total_bytes - 1)
        refused = 0
    except InsufficientMemoryError:
        refused = 1
    emit(step="cache_refusal", plan="full", seq=s, budget_bytes=plan.total_bytes - 1, refused=refused,
         allocated_delta_bytes=None if before is None else mem.allocated() - before)

    # ---- bridge throughput, against raw Hugging Face with eager attention (the bridge runs eager)
    bridge_ratio = None
    for b in sizes["batches"]:
        for s in sizes["seqs"]:
            tokens = random_tokens(b, s, device)
            runs = {"bridge": lambda tokens=tokens: model(tokens)}
            for kind, names in (("resid", resid_only), ("full", None)):
                plan = plan_cache(model, s, b, names=names)
                runs[f"bridge_{kind}_cache"] = lambda plan=plan, tokens=tokens: run_with_plan(model, tokens, plan)
            for kind, fn in runs.items():
                mem.reset_peak()                 # what earlier sizes left in the allocator's cache is released
                try:
                    sec = timed(fn, mem, args.rounds)
                except InsufficientMemoryError:
                    emit(step="throughput", kind=kind, batch=b, seq=s, refused=1)
                    continue
                tps = b * s / sec
                emit(step="throughput", kind=kind, batch=b, seq=s, tokens_per_s=tps,
                     vs_hf_eager=tps / hf[("eager", b, s)], vs_hf_sdpa=tps / hf[("sdpa", b, s)])
                if kind == "bridge" and (b, s) == (sizes["batches"][0], sizes["seqs"][-1]):
                    bridge_ratio = tps / hf[("eager", b, s)]
            gc.collect()

    # ---- one attention view: every head of a middle layer at the longer length
    from phi4lab.viz.attention import attention_heads
    s, layer = sizes["seqs"][-1], cfg.num_hidden_layers // 2
    tokens = random_tokens(1, s, device)
    t0 = time.perf_counter()
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    view = attention_heads(cache[name][0], model.to_str_tokens(tokens[0]), 0,
                           n_kv_heads=cfg.num_key_value_heads)
    page = view.payload_bytes
    emit(step="attention_view", layer=layer, heads=cfg.num_attention_heads, seq=s, page_bytes=page,
         seconds=time.perf_counter() - t0)
    del cache, view

    # ---- patching: the batched sweeps and attribution patching on one short prompt
    s = sizes["patch_seq"]
    clean = random_tokens(1, s, device, seed=1)
    corrupt = clean.clone()
    corrupt[:, : s // 2] = random_tokens(1, s // 2, device, seed=2)
    metric = sweep.logit_difference(int(clean[0, -1]), int(clean[0, -1]) + 1)     # the answer against its neighbour
    patch = {}
    for kind, fn in (("resid_pre_sweep", sweep.resid_pre_sweep), ("head_out_sweep", sweep.head_out_sweep),
                     ("attribution_patch", sweep.attribution_patch)):
        mem.reset_peak()
        t0 = time.perf_counter()
        fn(model, clean, corrupt, metric)
        mem.sync()
        patch[kind] = time.perf_counter() - t0
        emit(step="patching", kind=kind, seq=s, seconds=patch[kind], peak_bytes=mem.peak())
    model.zero_grad(set_to_none=True)

    # ---- one LoRA step at rank 8: the peak against the trainer's own estimate
    from phi4lab.training.finetune import lora_model, trainable_parameters
    from phi4lab.training.loop import TrainConfig, train, training_memory_bytes
    b, s = sizes["lora"]
    tuned = lora_model(model, r=8)
    batch = random_tokens(b, s, device, seed=3)
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    estimate = training_memory_bytes(tuned, b, s, precision)
    mem.reset_peak()
    base = mem.allocated()
    t0 = time.perf_counter()
    train(tuned, lambda i: batch, TrainConfig(steps=1, lr=1e-4, warmup_steps=1, log_every=1, precision=precision,
                                              progress=False))
    mem.sync()
    lora_s = time.perf_counter() - t0
    peak = mem.peak()
    trained, total = trainable_parameters(tuned)
    # The estimate covers the tuned copy and its training; the device also holds the bridge it was copied from.
    others = None if base is None else base - held_bytes(tuned.parameters())
    step_peak = None if peak is None else peak - others
    emit(step="lora_step", rank=8, batch=b, seq=s, trainable=trained, total=total, estimate_bytes=estimate,
         peak_bytes=peak, other_bytes=others, step_peak_bytes=step_peak,
         step_peak_over_estimate=ratio(step_peak, estimate), seconds=lora_s)
    del tuned
    gc.collect()

    # ---- the bias report, end to end
    bias_s = None
    if args.bias == "on" or args.bias == "auto" and args.config == "scaled":
        from phi4lab.bias import occupations, report
        chosen = occupations()[: sizes["occupations"]]
        mem.reset_peak()
        t0 = time.perf_counter()
        r = report(model, occupations=chosen, progress=False)
        mem.sync()
        bias_s = time.perf_counter() - t0
        emit(step="bias_report", seconds=bias_s, peak_bytes=mem.peak(), occupations=len(r.occupations),
             steer_layer=r.steer_layer)
    else:
        emit(step="bias_report", skipped=1, why="full-size_head_mediation_takes_thousands_of_forward_passes"
             if args.config == "phi4" else "asked")

    emit(config=args.config, device=device.type, weights_ratio=weights_ratio,
         cache_ratio_min=min(cache_ratios) if cache_ratios else None,
         cache_ratio_max=max(cache_ratios) if cache_ratios else None, refused_over_budget=refused,
         bridge_vs_hf_eager=bridge_ratio, head_out_sweep_s=patch["head_out_sweep"], lora_step_s=lora_s,
         bias_report_s=bias_s)


if __name__ == "__main__":
    main()
