"""The recipe for the transcoders that ship with phi4lab: one per phi4-tiny MLP, all four layers.

``phi4lab build-transcoders`` (or ``python -m phi4lab.recipes.transcoders``) rebuilds them into
``data/transcoders/phi4-tiny/blocks.<layer>.hook_mlp_out/`` from the course corpus and phi4-tiny:

1. **Data**: the SAEs' windows (``phi4lab.recipes.saes.corpus_windows``: phi4-tiny's training
   mixture, 4,096 windows of 128 tokens, seeded).
2. **Pairs** per layer, collected in the same forward passes: what the MLP reads
   (``blocks.L.mlp.hook_in``, the normalised residual stream) and what it writes
   (``blocks.L.hook_mlp_out``).
3. **Training**: a TopK transcoder per layer, 8 latents per residual dimension (1,536), k = 32,
   two passes (the SAEs' loop, with targets: ``phi4lab.dictionaries.training``).
4. **Evaluation on the validation split**: FVU of the MLP's output, L0, dead latents, and the loss
   recovered when the transcoder's prediction replaces the MLP's output. The numbers go into each
   ``cfg.json``; tests/test_transcoders.py measures the shipped files again.

Why 1,536 and not the SAEs' 3,072: a trial on half the data found a third to a half of even 1,536
latents never firing (layer 0's MLP, mostly a lookup on the current token, needs the fewest), while
halving again to 768 cost FVU on both layers tried (0 and 3). The weights are stored in float16 (1.2 MB each).
Deterministic on one machine, like the SAEs; ``files.SHIPPED_TRANSCODERS`` pins the sha256.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from phi4lab.dictionaries import activations, evaluate, files, training
from phi4lab.recipes.saes import WINDOW, corpus_windows, history_record, validation_record

LAYERS = (0, 1, 2, 3)
OUT_DIR = files.TRANSCODER_DIR
CONFIG = training.SAEConfig(d_sae=1536, kind="topk", k=32, lr=2e-3, batch_size=1024, epochs=2.0,
                            dead_after=20_000, seed=0)


def build(out_dir: str | os.PathLike = OUT_DIR, *, archive: Path | None = None, progress: bool = True) -> dict:
    """Train, evaluate and write one transcoder per layer in LAYERS; returns {layer: report}."""
    import phi4lab

    torch.manual_seed(0)
    model = phi4lab.load("phi4-tiny")
    train_tokens, val_tokens = corpus_windows(model, archive=archive)
    hooks = [name for layer in LAYERS for name in evaluate.transcoder_hooks(layer)]
    acts = activations.collect(model, train_tokens, hooks, progress=progress)
    val_acts = activations.collect(model, val_tokens, hooks, progress=progress)
    reports = {}
    for layer in LAYERS:
        reads, writes = evaluate.transcoder_hooks(layer)
        transcoder, history = training.train_sae(acts[reads], CONFIG, targets=acts[writes], progress=progress)
        # evaluated as stored: the float16 weights, read back as float32
        transcoder = transcoder.to(torch.float16).float()
        report = evaluate.evaluate(model, transcoder, val_acts[reads], val_tokens, writes,
                                   targets=val_acts[writes], input_hook=reads)
        reports[layer] = report
        files.save_sae(transcoder, Path(out_dir) / writes, hook_name=reads, hook_name_out=writes,
                       model_name="phi4-tiny", dtype=torch.float16, context_size=WINDOW, prepend_bos=False,
                       trained_on_activations=len(acts[reads]), training=dict(vars(CONFIG)),
                       validation=validation_record(report), history=history_record(history))
        if progress:
            print(f"layer {layer}: FVU {report.fvu:.3f}, L0 {report.l0:.1f}, dead {report.dead:.1%}, "
                  f"loss recovered {report.loss_recovered:.1%}")
    return reports


if __name__ == "__main__":
    build()
