"""phi4-tiny: a Phi-4-architecture model trained on this course's own corpus.

The recipe, end to end (``phi4lab build-tiny`` runs it in fp32 on an idle 2-core
CPU; see ``wall_seconds`` in data/phi4-tiny/metrics.json for the measured time):

1. Curate the corpus (phi4lab.recipes.corpus): Shakespeare and Python's standard library.
2. Train a byte-level BPE tokenizer on it with Hugging Face ``tokenizers``,
   with Phi-4's pre-tokenization regex and byte alphabet, 4,096 ids, and
   Phi-4's chat specials at the end of the vocabulary (as in Phi-4, where
   they follow the 100,256 BPE ids).
3. Build the token streams and the **mixture**. Each training row is drawn
   from one source: Shakespeare, Python, or a *synthetic* slice of random
   token segments repeated to fill the row. Natural text at this scale does
   not teach induction within a CPU budget (a 10-minute char-level run on the
   stdlib formed no induction head); Phi-4's own
   mixture is 40% synthetic. Ours is ``MIXTURE`` below.
4. **A short synthetic warm-up with tied embeddings** comes first, because a
   30% synthetic slice alone did not trigger the induction phase change in
   2,400 steps (best induction score 0.07). Copying a random token needs the
   unembedding row of a token to match what the model reads for it, for every
   one of the 4,091 ordinary tokens. With untied, randomly initialised
   embeddings that match has to be learned token by token; while the
   unembedding *is* the embedding, it holds for all tokens at once, and one
   generic "copy" map serves them all. So the warm-up trains on synthetic rows
   only (48 x 64 tokens a step) with ``lm_head.weight`` tied to
   ``embed_tokens.weight``; then the two are untied (the unembedding starts as
   a copy) and the mixture phase trains them separately, as in Phi-4.
   Measured on this CPU in the pilot behind this recipe (same model and rows):
   tied, the copying loss on synthetic rows fell from 8.3 to 0.8 nats by step
   1,100; untied, it was still 7.7. In the shipped build the best induction
   score went from 0.05 at step 750 to 0.99 at step 1,250 of the warm-up, and
   stayed above 0.95 through the mixture phase (data/phi4-tiny/training_log.json).
5. Train (phi4lab.training.loop) a Phi-4-shaped model: 4 layers, 8 query heads over 2
   KV heads, RoPE theta 250,000, RMSNorm, gated SiLU MLP at 3.5x, untied
   embeddings, context 512 (trained on 256-token rows).
6. Measure what formed with phi4lab's own head detectors, and per-domain
   validation perplexity; save the weights, tokenizer, training log and
   metrics to ``data/phi4-tiny``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from phi4lab.model import config as phi4config
from phi4lab.model.tokenizer import BOS, CHAT_TEMPLATES, EOS, HF_PATTERN, PAD
from phi4lab.recipes import corpus as corpus_data

TINY_VOCAB = 4096
# Phi-4's named specials that a chat model needs, and its fixed PAD token.
TINY_SPECIALS = [BOS, "<|im_start|>", "<|im_sep|>", EOS, PAD]
SEQ_LEN = 256
# Fractions of training rows per source. See the module docstring for the synthetic slice.
MIXTURE = {"prose": 0.35, "code": 0.35, "synthetic": 0.3}
SYNTHETIC_SEGMENT = (8, 30)   # length range of the repeated random segment
# The tied, synthetic-only warm-up (module docstring, step 4): steps, rows per step, row length.
WARMUP = dict(steps=1500, batch_size=48, seq_len=64)


def tiny_config(vocab_size: int = TINY_VOCAB):
    """phi4-tiny's shape: Phi-4's ratios at d_model 192 (about 3.5 M parameters)."""
    return phi4config.scaled(
        d_model=192, n_layers=4, n_kv_heads=2, vocab_size=vocab_size,
        bos_token_id=vocab_size - len(TINY_SPECIALS) + TINY_SPECIALS.index(BOS),
        eos_token_id=vocab_size - len(TINY_SPECIALS) + TINY_SPECIALS.index(EOS),
        pad_token_id=vocab_size - len(TINY_SPECIALS) + TINY_SPECIALS.index(PAD),
    )


# ------------------------------------------------------------------ tokenizer

def train_tokenizer(texts, vocab_size: int = TINY_VOCAB):
    """A byte-level BPE with Phi-4's regex, trained by the Rust ``tokenizers`` library.

    The specials are added after training so they take the last ids, as in Phi-4.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(fuse_unk=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HF_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TINY_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),   # all 256 bytes, seen or not
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(TINY_SPECIALS)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"the training text only supports {tok.get_vocab_size()} tokens, not {vocab_size}: "
                         "give it more (and more varied) text, or ask for a smaller vocabulary")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=512, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATES["fixed"]
    return fast


def token_stream(tokenizer, docs, domain: str) -> torch.Tensor:
    """One domain's documents as a single 1-D stream, each followed by <|endoftext|>."""
    eot = tokenizer.convert_tokens_to_ids(BOS)
    texts = [d.text for d in docs if d.domain == domain]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    flat = [t for doc in ids for t in doc + [eot]]
    return torch.tensor(flat, dtype=torch.int32)


# ------------------------------------------------------------------ mixture

def synthetic_row(g: torch.Generator, seq_len: int, n_ordinary: int) -> torch.Tensor:
    """A random segment of ordinary (non-special) token ids, repeated to fill a row."""
    lo, hi = SYNTHETIC_SEGMENT
    k = int(torch.randint(lo, hi + 1, (1,), generator=g))
    segment = torch.randint(0, n_ordinary, (k,), generator=g)
    return segment.repeat(seq_len // k + 1)[:seq_len]


class MixtureSampler:
    """get_batch(i) for phi4lab.training.loop: a pure function of i, so resumed runs see the same data."""

    def __init__(self, streams: dict[str, torch.Tensor], n_ordinary: int, batch_size: int = 16,
                 seq_len: int = SEQ_LEN, mixture: dict[str, float] = MIXTURE, seed: int = 0):
        self.streams, self.n_ordinary = streams, n_ordinary
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.sources = list(mixture)
        self.weights = torch.tensor([mixture[s] for s in self.sources], dtype=torch.float)

    def _generator(self, i: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + i)

    def sources_of(self, i: int) -> torch.Tensor:
        """[batch_size] indices into self.sources: where each row of batch i comes from.

        The first draw from batch i's generator, so it can be replayed without the streams
        (notebook 03 counts the shipped build's rows per source this way).
        """
        return torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self._generator(i))

    def __call__(self, i: int) -> torch.Tensor:
        g = self._generator(i)
        which = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g)
        rows = []
        for w in which.tolist():
            source = self.sources[w]
            if source == "synthetic":
                rows.append(synthetic_row(g, self.seq_len, self.n_ordinary))
            else:
                stream = self.streams[source]
                start = int(torch.randint(0, len(stream) - self.seq_len, (1,), generator=g))
                rows.append(stream[start:start + self.seq_len].long())
        return torch.stack(rows)


# ------------------------------------------------------------------ measuring

def measure_heads(model, n_ordinary: int, seed: int = 0, natural: torch.Tensor | None = None) -> dict:
    """Best induction and previous-token heads, measured with phi4lab.analysis."""
    from phi4lab.analysis import heads
    period = 25
    rep = heads.random_repeated_tokens(period, 2, 8, vocab=n_ordinary, seed=seed)
    pat = heads.attention_patterns(model, rep)
    ind = heads.induction_scores(pat, period)
    prev_source = natural if natural is not None else rep
    prev = heads.previous_token_scores(heads.attention_patterns(model, prev_source))
    (il, ih, iscore), = heads.top_heads(ind, 1)
    (pl, ph, pscore), = heads.top_heads(prev, 1)
    return dict(induction_score=round(iscore, 4), induction_head=f"L{il}H{ih}",
                prev_token_score=round(pscore, 4), prev_token_head=f"L{pl}H{ph}")


# ------------------------------------------------------------------ the whole recipe

def tie_embeddings(model) -> None:
    """Make the unembedding the same Parameter as the embedding (the warm-up's trick)."""
    model.lm_head.weight = model.model.embed_tokens.weight


def untie_embeddings(model) -> None:
    """Give the unembedding its own Parameter, starting as a copy of the embedding."""
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())


def build(out_dir: str | os.PathLike, steps: int = 2000, batch_size: int = 16, lr: float = 2e-3,
          seed: int = 0, archive=None, work_dir: str | os.PathLike | None = None,
          warmup_steps: int = WARMUP["steps"]) -> dict:
    """Run the recipe and write phi4-tiny to out_dir. Returns the final metrics.

    Two calls of phi4lab.training.loop, each with its own checkpoint folder under
    work_dir, so an interrupted build resumes in whichever phase it stopped.
    """
    from phi4lab.model.loading import random_hf_model, save
    from phi4lab.training.loop import TrainConfig, perplexity, train

    t_start = time.time()
    out_dir = Path(out_dir)
    work = Path(work_dir) if work_dir else corpus_data.cache_dir() / "phi4-tiny-run"
    corpus = corpus_data.build_corpus(archive)
    tokenizer = train_tokenizer([d.text for d in corpus.train])
    n_ordinary = TINY_VOCAB - len(TINY_SPECIALS)
    streams = {dom: token_stream(tokenizer, corpus.train, dom) for dom in ("prose", "code")}
    val = {dom: token_stream(tokenizer, corpus.validation, dom) for dom in ("prose", "code")}
    print({k: len(v) for k, v in streams.items()}, "train tokens;", {k: len(v) for k, v in val.items()}, "validation")

    model = random_hf_model(tiny_config(), seed=seed)
    natural_probe = val["prose"][: 8 * 128].long().reshape(8, 128)

    def evaluate(m):
        out = {f"val_{dom}_{k}": round(v, 4) for dom in val
               for k, v in perplexity(m, val[dom], max_length=SEQ_LEN, stride=SEQ_LEN, max_tokens=16_384).items()
               if k in ("loss", "ppl")}
        out.update(measure_heads(m, n_ordinary, natural=natural_probe))
        return out

    # Settings both phases share; each phase adds its own schedule, logging cadence and folder.
    common = dict(lr=lr, warmup_steps=100, weight_decay=0.1, grad_clip=1.0, log_every=25, seed=seed)
    history = []
    if warmup_steps:
        # Phase 1: synthetic rows only, unembedding tied to embedding (module docstring, step 4).
        tie_embeddings(model)
        warm = MixtureSampler(streams, n_ordinary, WARMUP["batch_size"], WARMUP["seq_len"],
                              mixture={"synthetic": 1.0}, seed=seed)
        cfg = TrainConfig(steps=warmup_steps, schedule="constant", eval_every=250, checkpoint_every=250,
                          out_dir=str(work / "warmup"), **common,
                          extra=dict(phase="warm-up", tied_embeddings=True, **WARMUP))
        history = [dict(r, phase="warm-up") for r in train(model, warm, cfg, evaluate)]
        untie_embeddings(model)
    # Phase 2: the mixture, embeddings untied as in Phi-4.
    cfg = TrainConfig(steps=steps, schedule="cosine", eval_every=200, checkpoint_every=200,
                      out_dir=str(work / "mixture"), **common,
                      extra=dict(phase="mixture", mixture=MIXTURE, batch_size=batch_size, seq_len=SEQ_LEN))
    offset = {k: history[-1][k] if history else 0 for k in ("step", "tokens", "seconds")}
    mixture = train(model, MixtureSampler(streams, n_ordinary, batch_size, SEQ_LEN, seed=seed), cfg, evaluate)
    # One timeline: the mixture's steps, tokens and seconds continue the warm-up's.
    history += [dict(r, phase="mixture", **{k: round(r[k] + offset[k], 3) if k == "seconds" else r[k] + offset[k]
                                             for k in offset}) for r in mixture]
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    final = history[-1]
    # Write the shipped folder atomically: build next to it, then swap in.
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    save(model, tmp, tokenizer)
    metrics = dict(final=final, seed=seed, parameters=sum(p.numel() for p in model.parameters()),
                   wall_seconds=round(time.time() - t_start, 1), corpus_sha256=corpus_data.corpus_sha256(corpus),
                   warmup=dict(WARMUP, steps=warmup_steps, tied_embeddings=True, mixture={"synthetic": 1.0}),
                   mixture=MIXTURE, mixture_steps=steps, batch_size=batch_size, seq_len=SEQ_LEN,
                   synthetic_segment=list(SYNTHETIC_SEGMENT), tokens={k: len(v) for k, v in streams.items()},
                   torch=torch.__version__)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (tmp / "training_log.json").write_text(json.dumps(history, indent=1))
    corpus_data.write_manifest(corpus, tmp / "corpus_manifest.json")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return metrics
