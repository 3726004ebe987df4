"""The recipe for the SAEs that ship with phi4lab: phi4-tiny's residual stream after layers 2 and 3.

``phi4lab build-saes`` (or ``python -m phi4lab.recipes.saes``) rebuilds them into
``data/saes/phi4-tiny/<hook>/`` from nothing but the course corpus and phi4-tiny, in under three
minutes on 2 CPU cores (157 s and 170 s measured on the lab machine):

1. **Data**: windows of 128 tokens drawn by phi4-tiny's own training mixture (Shakespeare, Python,
   and rows of repeated random segments), from the training split, seeded. The SAEs see what the
   model was trained on, including the repeats that its induction heads work on.
2. **Activations** of both hook points, collected in the same forward passes (position 0 of each
   window left out; phi4lab.dictionaries.activations explains why).
3. **Training**: a TopK SAE per hook point, 16 latents per residual dimension (3,072), k = 32,
   two passes over the activations (phi4lab.dictionaries.training).
4. **Evaluation on the validation split**, which neither phi4-tiny nor the SAEs saw: FVU, L0,
   dead latents, and the loss recovered when each SAE is spliced into the model. The numbers go
   into each SAE's ``cfg.json``; tests/test_saes.py measures the shipped files again.

On one machine the build is deterministic (seeded data, initialisation and batches; two builds on
the lab machine gave the same bits), and
``phi4lab.dictionaries.files.SHIPPED`` pins the weights' sha256. Another CPU may sum in another order and change the last
bits; the quality bounds the tests check hold either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from phi4lab.dictionaries import activations, evaluate, files, training

HOOKS = ("blocks.2.hook_resid_post", "blocks.3.hook_resid_post")
SAE_DIR = files.SHIPPED_DIR
WINDOW = 128
TRAIN_WINDOWS = 4096              # 4,096 x 127 = 520,192 activations per hook point
VALIDATION_WINDOWS = 64
CONFIG = training.SAEConfig(d_sae=3072, kind="topk", k=32, lr=2e-3, batch_size=1024, epochs=2.0,
                            dead_after=200_000, seed=0)


def windows(streams: dict, n_windows: int, n_ordinary: int, seed: int) -> torch.Tensor:
    """[n_windows, WINDOW] rows drawn by phi4-tiny's training mixture from `streams` (prose, code)."""
    from phi4lab.recipes.tiny import MixtureSampler

    sampler = MixtureSampler(streams, n_ordinary, batch_size=64, seq_len=WINDOW, seed=seed)
    rows = torch.cat([sampler(i) for i in range((n_windows + 63) // 64)])
    return rows[:n_windows]


def corpus_windows(model, seed: int = 0, archive: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(training windows, validation windows) of the course corpus, tokenized by `model`'s tokenizer."""
    from phi4lab.recipes import corpus as corpus_data
    from phi4lab.recipes.tiny import TINY_SPECIALS, token_stream

    built = corpus_data.build_corpus(archive, progress=False)
    n_ordinary = model.cfg.d_vocab - len(TINY_SPECIALS)
    train = {dom: token_stream(model.tokenizer, built.train, dom) for dom in ("prose", "code")}
    val = {dom: token_stream(model.tokenizer, built.validation, dom) for dom in ("prose", "code")}
    return (windows(train, TRAIN_WINDOWS, n_ordinary, seed=1000 + seed),
            windows(val, VALIDATION_WINDOWS, n_ordinary, seed=2000 + seed))


def validation_record(report: evaluate.SAEReport) -> dict:
    """What a build writes into cfg.json about its dictionary on the validation split (rounded)."""
    return {"fvu": round(report.fvu, 4), "l0": round(report.l0, 2), "dead": round(report.dead, 4),
            "dense": round(report.dense, 4), "clean_loss": round(report.clean_loss, 4),
            "spliced_loss": round(report.spliced_loss, 4), "zero_loss": round(report.zero_loss, 4),
            "loss_recovered": round(report.loss_recovered, 4)}


def history_record(history: training.History) -> dict:
    """Every tenth logged step of the training curve, for cfg.json."""
    return {"step": history.step[::10], "fvu": [round(v, 4) for v in history.fvu[::10]]}


def build(out_dir: str | os.PathLike = SAE_DIR, *, archive: Path | None = None, progress: bool = True) -> dict:
    """Train, evaluate and write one SAE per hook in HOOKS; returns {hook: report}."""
    import phi4lab

    torch.manual_seed(0)
    model = phi4lab.load("phi4-tiny")
    train_tokens, val_tokens = corpus_windows(model, archive=archive)
    acts = activations.collect(model, train_tokens, list(HOOKS), progress=progress)
    val_acts = activations.collect(model, val_tokens, list(HOOKS), progress=progress)
    reports = {}
    for hook in HOOKS:
        sae, history = training.train_sae(acts[hook], CONFIG, progress=progress)
        report = evaluate.evaluate(model, sae, val_acts[hook], val_tokens, hook)
        reports[hook] = report
        files.save_sae(sae, Path(out_dir) / hook, hook_name=hook, model_name="phi4-tiny",
                       context_size=WINDOW, prepend_bos=False, trained_on_activations=len(acts[hook]),
                       training=dict(vars(CONFIG)),
                       validation=validation_record(report), history=history_record(history))
        if progress:
            print(f"{hook}: FVU {report.fvu:.3f}, L0 {report.l0:.1f}, dead {report.dead:.1%}, "
                  f"loss recovered {report.loss_recovered:.1%}")
    return reports


if __name__ == "__main__":
    build()
