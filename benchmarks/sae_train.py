"""SAE training: phi4lab.dictionaries.training against eai-sparsify, on the same activations and budget.

Both train a TopK SAE (3,072 latents, k = 32) on the same activations of phi4-tiny's residual
stream after layer 2, with the same batches in the same order, for the same number of steps:

* phi4lab: ``train_sae`` (Adam, decoder on the unit sphere, AuxK for dead latents);
* sparsify: its ``SparseCoder`` (fused TopK encoder, sparse decoder) and the optimiser its
  ``Trainer`` uses by default (sign-SGD in a schedule-free wrapper, its own learning rate),
  stepped as ``Trainer.fit`` steps it for ``loss_fn="fvu"``: b_dec at the data mean, the gradient
  along the decoder rows removed, AuxK on latents that have not fired for ``dead_after`` samples.

Then both are evaluated the same way, on validation windows neither saw: FVU, L0, dead latents,
and the loss recovered when spliced into phi4-tiny (phi4lab.dictionaries.evaluate).

    python benchmarks/sae_train.py [--windows 2048] [--epochs 1]

Last line: ``phi4lab_s=... sparsify_s=... time_ratio=... phi4lab_fvu=... sparsify_fvu=...``.
"""

import argparse
import time

import torch

import phi4lab
from phi4lab.dictionaries import SparseAutoencoder, activations, evaluate, training
from phi4lab.recipes import saes

HOOK = "blocks.2.hook_resid_post"


def train_sparsify(x_all: torch.Tensor, cfg: training.SAEConfig) -> SparseAutoencoder:
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    n, d_in = x_all.shape
    torch.manual_seed(cfg.seed)
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=cfg.d_sae, k=cfg.k))
    coder.b_dec.data = x_all.mean(0)
    opt = ScheduleFreeWrapper(SignSGD([dict(params=coder.parameters(), lr=5e-3 / (cfg.d_sae / 2**14) ** 0.5)]),
                              momentum=0.95)
    opt.train()
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long)
    steps = int(cfg.epochs * n // cfg.batch_size)
    g = torch.Generator().manual_seed(cfg.seed)
    order, at = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if at + cfg.batch_size > n:
            order, at = torch.randperm(n, generator=g), 0
        x = x_all[order[at:at + cfg.batch_size]]
        at += cfg.batch_size
        out = coder(x, dead_mask=since_fired > cfg.dead_after)
        (out.fvu + cfg.aux_coef * out.auxk_loss).backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
            fired[out.latent_indices.flatten()] = True
            since_fired += len(x)
            since_fired[fired] = 0
    opt.eval()                                   # schedule-free: evaluate at the averaged weights
    sae = SparseAutoencoder(d_in, cfg.d_sae, "topk", cfg.k)
    with torch.no_grad():                        # the same function in phi4lab's layout (relu then top-k = top-k then relu)
        sae.W_enc.copy_(coder.encoder.weight.T)
        sae.b_enc.copy_(coder.encoder.bias)
        sae.W_dec.copy_(coder.W_dec)
        sae.b_dec.copy_(coder.b_dec)
    return sae.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=2048, help="training windows of 128 tokens")
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    model = phi4lab.load("phi4-tiny")
    train_tokens, val_tokens = saes.corpus_windows(model)
    train_tokens = train_tokens[:args.windows]
    x = activations.collect(model, train_tokens, HOOK, progress=False)
    val_x = activations.collect(model, val_tokens, HOOK, progress=False)
    cfg = training.SAEConfig(**{**vars(saes.CONFIG), "epochs": args.epochs})
    results = {}
    for name in ("phi4lab", "sparsify"):
        t0 = time.perf_counter()
        sae = training.train_sae(x, cfg, progress=False)[0] if name == "phi4lab" else train_sparsify(x, cfg)
        seconds = time.perf_counter() - t0
        report = evaluate.evaluate(model, sae, val_x, val_tokens, HOOK)
        results[name] = (seconds, report)
        print(f"{name:>8}: {seconds:6.1f} s  FVU {report.fvu:.3f}  L0 {report.l0:.1f}  dead {report.dead:.1%}  "
              f"loss recovered {report.loss_recovered:.1%}", flush=True)
    print(f"activations={len(x)} d_sae={cfg.d_sae} k={cfg.k} batch={cfg.batch_size} epochs={cfg.epochs} "
          f"threads={torch.get_num_threads()}")
    (ps, pr), (ss, sr) = results["phi4lab"], results["sparsify"]
    print(f"phi4lab_s={ps:.1f} sparsify_s={ss:.1f} time_ratio={ps / ss:.2f} phi4lab_fvu={pr.fvu:.3f} "
          f"sparsify_fvu={sr.fvu:.3f}")


if __name__ == "__main__":
    main()
