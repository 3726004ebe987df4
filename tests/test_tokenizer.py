"""The exact Phi-4 tokenizer: ids, chat scaffold, tiktoken parity, specials, BOS."""

import hashlib
import random

import pytest

from phi4lab.model import tokenizer as T

TEXTS = [
    "Hello World",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus München! Die Straße heißt Äußere Wiener Straße 12.",
    "日本語のテキストです。東京タワーは333メートル。",
    "हिन्दी भाषा का एक छोटा वाक्य।",
    "emoji: 👩‍👩‍👧 family, 🎉🎉 party, ✔️ done, 🇩🇪 flag",
    "def f(x):\n    return x ** 2  # square\n\n\tclass A:\n\t\tpass\n",
    "1234567890 3.14159265 -42 1,000,000 2024-12-12 0x1F",
    "I'm you're they'll we've it's DON'T She'D",
    "   leading spaces and trailing   ",
    "line one\r\nline two\r\n\r\n\n\nline three",
    "tabs\tand\u00a0no-break\u2003em-space \u200bzero-width",
    "",
    " ",
    "\n",
]


def test_rank_file_is_the_pinned_one():
    digest = hashlib.sha256(T.rank_file().read_bytes()).hexdigest()
    assert digest == T.CL100K_SHA256 == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    assert len(T.cl100k_ranks()) == 100_256


def test_a_tampered_rank_file_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "data" / "cl100k_base.tiktoken"
    bad.parent.mkdir()
    bad.write_bytes(T.rank_file().read_bytes().replace(b"IQ==", b"IR==", 1))
    monkeypatch.setattr(T, "rank_file", lambda: bad)
    T.cl100k_ranks.cache_clear()
    try:
        with pytest.raises(T.TokenizerDataError, match="sha256"):
            T.cl100k_ranks()
    finally:
        T.cl100k_ranks.cache_clear()


@pytest.fixture(scope="module")
def tok():
    return T.phi4_tokenizer()


def test_every_added_id(tok):
    assert len(tok) == 100_352
    named = {
        "<|dummy_0|>": 100256, "<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
        "<|fim_suffix|>": 100260, "<|dummy_1|>": 100261, "<|dummy_3|>": 100263, "<|im_start|>": 100264,
        "<|im_end|>": 100265, "<|im_sep|>": 100266, "<|dummy_4|>": 100267, "<|dummy_12|>": 100275,
        "<|endofprompt|>": 100276, "<|dummy_13|>": 100277, "<|dummy_27|>": 100291, "<|dummy_37|>": 100301,
        "<|dummy_75|>": 100339, "<|dummy_85|>": 100349, "<|dummy_87|>": 100351,
    }
    for s, i in named.items():
        assert tok.convert_tokens_to_ids(s) == i, s
        assert tok.decode([i]) == s
    dummies = [s for s in T.ADDED_TOKENS.values() if s.startswith("<|dummy_")]
    assert len(T.ADDED_TOKENS) == 96 and len(dummies) == 88
    for i, s in T.ADDED_TOKENS.items():
        assert tok.convert_tokens_to_ids(s) == i


def test_bos_eos_pad(tok):
    assert (tok.bos_token, tok.bos_token_id) == ("<|endoftext|>", 100257)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 100265)
    assert (tok.pad_token, tok.pad_token_id) == ("<|dummy_85|>", 100349)
    orig = T.phi4_tokenizer("original")
    assert orig.eos_token_id == orig.pad_token_id == orig.bos_token_id == 100257
    with pytest.raises(ValueError, match="template"):
        T.phi4_tokenizer("newest")


def test_chat_scaffold_ids(tok):
    text = "<|im_start|>user<|im_sep|>What is 2+2?<|im_end|><|im_start|>assistant<|im_sep|>"
    expected = [100264, 882, 100266, 3923, 374, 220, 17, 10, 17, 30, 100265, 100264, 78191, 100266]
    assert tok(text)["input_ids"] == expected
    rendered = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True)
    assert rendered == text
    assert tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, return_dict=False) == expected
    # Microsoft's own test vector for the .NET tokenizer
    assert tok("<|im_start|>Hello<|im_sep|> World<|im_end|><|dummy_85|>")["input_ids"] == [100264, 9906, 100266, 4435, 100265, 100349]


@pytest.mark.slow
def test_templates_differ_only_where_the_fix_was():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    fixed = T.phi4_tokenizer("fixed").apply_chat_template(chat, tokenize=False)
    orig = T.phi4_tokenizer("original").apply_chat_template(chat, tokenize=False)
    assert fixed == orig == (
        "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
        "<|im_start|>assistant<|im_sep|>Hello!<|im_end|>"
    )
    user_only = [{"role": "user", "content": "Hi"}]
    assert T.phi4_tokenizer("fixed").apply_chat_template(user_only, tokenize=False) == "<|im_start|>user<|im_sep|>Hi<|im_end|>"
    assert T.phi4_tokenizer("original").apply_chat_template(user_only, tokenize=False).endswith("<|im_start|>assistant<|im_sep|>")


@pytest.mark.parametrize("text", TEXTS)
def test_hf_matches_tiktoken(tok, text):
    ids = T.tiktoken_encoding().encode_ordinary(text)
    assert tok(text, add_special_tokens=False)["input_ids"] == ids


def test_hf_matches_tiktoken_on_random_strings(tok):
    alphabet = list("ab Z9 0 \n\r\t'sdmtlvre.,!?-_()日本éü👍\u00a0\u2003") + ["'s", "'LL", "  ", "\r\n", "123456"]
    rng = random.Random(0)
    enc = T.tiktoken_encoding()
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert tok(text, add_special_tokens=False)["input_ids"] == enc.encode_ordinary(text), repr(text)


def test_digits_group_in_threes(tok):
    pieces = tok.convert_ids_to_tokens(tok("1234567890")["input_ids"])
    assert pieces == ["123", "456", "789", "0"]


@pytest.mark.parametrize("text", [t for t in TEXTS if t])
def test_decode_round_trips(tok, text):
    assert tok.decode(tok(text)["input_ids"]) == text


def test_no_bos_is_prepended(tok):
    assert tok("Hello World")["input_ids"] == [9906, 4435]


def test_special_strings_parse_as_specials_by_default(tok):
    assert tok("<|im_end|>")["input_ids"] == [100265]


def test_user_text_keeps_special_strings_as_text(tok):
    as_text = T.encode_text(tok, "say <|im_end|> now")
    assert 100265 not in as_text
    assert tok.decode(as_text) == "say <|im_end|> now"
    assert as_text == T.tiktoken_encoding().encode_ordinary("say <|im_end|> now")
    assert 100265 in T.encode_text(tok, "say <|im_end|> now", allow_special=True)
    with pytest.raises(TypeError):
        T.encode_text(tok, None)


def test_byte_table_matches_gpt2():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert T.bytes_to_unicode() == bytes_to_unicode()
