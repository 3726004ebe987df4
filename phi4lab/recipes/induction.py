"""Watching an induction head form: a phase change you can run on a laptop.

Olsson et al. (2022) found that transformers learn in-context copying
abruptly: for a while the loss plateaus, then within a short window
"induction heads" appear and the model starts predicting repeated text from
its earlier occurrence. It needs two attention layers working together (a
previous-token head in layer 0 feeds an induction head in layer 1), so a
one-layer model never gets there.

The smallest setting that shows it on a CPU in minutes (after the public
repository carloslfu/induction-heads-from-scratch): an **attention-only**
transformer (no MLP, no norms: Elhage et al.'s "mathematical framework"
setting) with learned positions, trained on random tokens in which a
16-token segment is copied from a random earlier position to a random later
one. The only way to predict the second copy is to find the first one.

``induction_accuracy`` is next-token accuracy inside the second copy
(chance is 1/64). Run ``python -m phi4lab.recipes.induction`` to regenerate
``data/induction_runs.json``, the curves notebook 04 plots.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB, SEQ, SEGMENT = 64, 64, 16


class AttentionOnly(nn.Module):
    """Token + position embeddings, n causal attention layers added to the residual stream, unembed."""

    def __init__(self, n_layers: int, d_model: int = 64, n_heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(SEQ, d_model)
        self.layers = nn.ModuleList(nn.MultiheadAttention(d_model, n_heads, bias=False, batch_first=True)
                                    for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, VOCAB, bias=False)
        mask = torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), 1)   # True = may not attend
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor, return_patterns: bool = False):
        T = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(T, device=tokens.device))
        patterns = []
        for attn in self.layers:
            out, pattern = attn(x, x, x, attn_mask=self.mask[:T, :T], need_weights=return_patterns,
                                average_attn_weights=False)
            x = x + out
            patterns.append(pattern)
        logits = self.unembed(x)
        return (logits, patterns) if return_patterns else logits


def copy_task_batch(batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random tokens with one 16-token segment copied later. Returns (tokens, mask of 2nd-copy targets).

    Random offsets matter: with fixed positions a 1-layer model could learn
    "look 24 back" from positions alone and fake an induction head.
    """
    x = torch.randint(0, VOCAB, (batch, SEQ), generator=g)
    second = torch.zeros(batch, SEQ, dtype=torch.bool)
    for b in range(batch):
        src = int(torch.randint(0, SEGMENT, (1,), generator=g))
        dst = int(torch.randint(src + SEGMENT, SEQ - SEGMENT + 1, (1,), generator=g))
        x[b, dst:dst + SEGMENT] = x[b, src:src + SEGMENT]
        second[b, dst + 1:dst + SEGMENT] = True     # predictable from the first copy
    return x, second


@torch.no_grad()
def best_induction_head(model: nn.Module, seed: int = 0) -> tuple[str, float]:
    """phi4lab's induction detector on this model: 25 random tokens, repeated twice."""
    from phi4lab.analysis import heads
    tokens = heads.random_repeated_tokens(25, 2, 16, vocab=VOCAB, seed=seed)
    _, patterns = model(tokens, return_patterns=True)
    scores = heads.induction_scores(torch.stack(patterns), 25)
    (layer, head, score), = heads.top_heads(scores, 1)
    return f"L{layer}H{head}", round(score, 4)


@torch.no_grad()
def induction_accuracy(model: nn.Module, g: torch.Generator, batch: int = 256) -> float:
    x, second = copy_task_batch(batch, g)
    pred = model(x)[:, :-1].argmax(-1)
    hits = (pred == x[:, 1:]) & second[:, 1:]
    return hits.sum().item() / second[:, 1:].sum().item()


def run(n_layers: int, steps: int = 6000, seed: int = 0, eval_every: int = 250, progress: bool = True) -> list[dict]:
    """Train one model; return [{step, loss, induction_acc, seconds}] every eval_every steps."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model = AttentionOnly(n_layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.98))
    g = torch.Generator().manual_seed(seed)
    g_eval = torch.Generator().manual_seed(seed + 1)
    log, t0 = [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc=f"{n_layers}-layer", disable=not progress):
        x, _ = copy_task_batch(64, g)
        loss = F.cross_entropy(model(x)[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % eval_every == 0:
            model.eval()
            head, score = best_induction_head(model)
            log.append(dict(step=step, loss=round(loss.item(), 4),
                            induction_acc=round(induction_accuracy(model, g_eval), 4),
                            best_head=head, induction_score=score,
                            seconds=round(time.perf_counter() - t0, 1)))
            model.train()
    return log


def main(out: str = "data/induction_runs.json", steps: int = 6000) -> None:
    runs = {f"{n}-layer": run(n, steps) for n in (2, 1)}
    runs["meta"] = dict(steps=steps, torch=torch.__version__, threads=torch.get_num_threads(),
                        recipe="phi4lab.recipes.induction.run(n_layers, steps, seed=0)")
    Path(out).write_text(json.dumps(runs, indent=1))
    for name in ("2-layer", "1-layer"):
        print(name, runs[name][-1])


if __name__ == "__main__":
    main(*sys.argv[1:2])
