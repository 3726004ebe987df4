"""phi4lab.scratch.bpe: the primitives, training (matches Hugging Face's trainer), tiktoken parity, traces."""

import random

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from phi4lab.model.tokenizer import HF_PATTERN, bytes_to_unicode, cl100k_ranks, tiktoken_encoding
from phi4lab.scratch import bpe

TEXTS = [
    "Hello, world! It's 2026; the year's 12,345,678th second.",
    "Grüße aus München – naïve café, œuvre, Øresund.",
    "こんにちは世界。日本語のテキスト、カタカナとひらがな。",
    "नमस्ते दुनिया, यह हिंदी है।",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم",
    "emoji 🙂👍🏽🇫🇷 👨‍👩‍👧 ✓",
    "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\r\n    else:\n        return None\n",
    "digits 1 12 123 1234 12345 3.14159 1e-10 0x1F",
    "spaces    between\n\n\n   and \t\t tabs   \n",
    "   leading and trailing   ",
    "<|endoftext|> is text here, <|im_start|>user too",
    "",
]


def test_pair_counts_and_merge():
    assert bpe.pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert bpe.merge([5, 5, 5], (5, 5), 7) == [7, 5], "merges are left to right and never overlap"
    assert bpe.merge([], (1, 2), 3) == []


def _hf_merges(text, merges):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(HF_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=256 + merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    import json
    back = {c: b for b, c in bytes_to_unicode().items()}
    raw = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m if isinstance(m, list) else m.split(" ") for m in raw]
    return [(bytes(back[c] for c in a), bytes(back[c] for c in b)) for a, b in pairs]


def test_training_matches_hugging_face_merge_for_merge():
    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "θ", "ünï", "42", "1999"]
    text = " ".join(rng.choice(words) for _ in range(3000)) + "\n" + "\n".join(TEXTS)
    tok = bpe.BPE().train(text, 256 + 120)
    mine = [(tok.vocab[a], tok.vocab[b]) for (a, b), _ in sorted(tok.merges.items(), key=lambda kv: kv[1])]
    assert mine == _hf_merges(text, 120)


def test_trained_tokenizer_round_trips_and_compresses():
    text = "\n".join(TEXTS) * 20
    tok = bpe.BPE(special_tokens={"<|endoftext|>": 1000}).train(text, 400)
    for t in TEXTS:
        assert tok.decode(tok.encode(t)) == t
    assert len(tok.encode(text)) < 0.7 * len(text.encode())   # 144 merges already save >30%
    assert tok.encode("<|endoftext|>", allowed_special="all") == [1000]
    assert len(tok.encode("<|endoftext|>")) > 1, "specials are plain text unless allowed"
    with pytest.raises(ValueError, match="vocabulary"):
        tok.decode([5000])
    with pytest.raises(ValueError, match="at least 256"):
        bpe.BPE().train(text, 100)


def test_training_stops_when_nothing_is_left_to_merge():
    tok = bpe.BPE().train("ab ab ab", 300)
    assert len(tok.merges) < 44 and tok.decode(tok.encode("ab ab")) == "ab ab"


@pytest.fixture(scope="module")
def cl100k():
    return bpe.BPE.from_tiktoken(cl100k_ranks())


def test_cl100k_ranks_reproduce_tiktoken(cl100k):
    enc = tiktoken_encoding()
    for text in TEXTS:
        assert cl100k.encode_ordinary(text) == enc.encode_ordinary(text), text
        assert cl100k.decode(cl100k.encode_ordinary(text)) == text


def test_cl100k_parity_on_random_strings(cl100k):
    enc = tiktoken_encoding()
    rng = random.Random(1)
    alphabet = "aeiou xyzAZ09 \n\t.,!?'\"-_()[]{}#@€ßéü日本語🙂\u200d\r" + "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(50))
    for _ in range(500):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        assert cl100k.encode_ordinary(s) == enc.encode_ordinary(s), repr(s)


def test_merge_trace_replays_to_the_encoding(cl100k):
    steps = cl100k.trace(" tokenization")
    assert steps[0]["pieces"] == [bytes([b]) for b in b" tokenization"]
    assert b"".join(steps[-1]["pieces"]) == b" tokenization"
    final_ids = [cl100k.whole_tokens.get(p) for p in steps[-1]["pieces"]]
    assert final_ids == tiktoken_encoding().encode_ordinary(" tokenization")
    for before, after in zip(steps, steps[1:]):
        assert len(after["pieces"]) < len(before["pieces"])
        assert after["merged"][0] + after["merged"][1] in after["pieces"]
