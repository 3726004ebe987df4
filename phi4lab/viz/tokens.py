"""The tokenizer explorer: see exactly how a tokenizer cuts your text.

Everything here renders to one self-contained HTML string (inline CSS, no
JavaScript, no CDN), so it shows the same in JupyterLab, in an exported
notebook and offline. ``explore()`` wraps it in ipywidgets for live typing.

A few details make the picture honest:

* **Spans follow graphemes.** A byte-level tokenizer may cut "é" (2 bytes) or
  "👍🏽" (8 bytes) between tokens. A span that ends mid-character cannot be
  drawn, so tokens are grouped until their boundary falls between two
  graphemes (user-perceived characters, regex ``\\X``); the hover text lists
  every id in the group.
* **Whitespace is visible** on request: · for a space, → for a tab, ↵ for a
  newline. Control characters always show as their Unicode "control
  picture" (␀ ␇ ...), never as raw bytes.
* **Nothing is lost on big or broken input.** A huge paste is counted in full
  but drawn only up to ``max_chars``, with a notice. Lone surrogates (which
  cannot be UTF-8 encoded) are replaced by U+FFFD, with a notice. Special-token
  strings typed by a user stay plain text unless ``allow_special=True``, in a
  chat's messages too. A linked model scores long text in windows of its
  context, each window's memory checked first.
* **Invisible characters show, and cannot rearrange the page.** Each span is a
  bidi isolate, so a right-to-left override (U+202E) acts only inside its own
  span, and it, or a span of zero-width characters, is drawn as its code point.
"""

from __future__ import annotations

import html
import math
import os
import unicodedata
from dataclasses import dataclass, field

import regex

from phi4lab.model.tokenizer import (
    bytes_to_unicode,
    chat_pieces,
    check_text,
    encode_chat,
    encode_text,
    replace_lone_surrogates,
)
from phi4lab.viz import assets

MAX_CHARS = 20_000
PALETTE = ["#fde2e4", "#e2ece9", "#dfe7fd", "#fff1c1", "#e8dff5", "#d7f0db", "#fce1c8", "#dbeffa"]
_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}


# ---------------------------------------------------------------- tokenizers, uniformly

def _display_name(name_or_path: str) -> str:
    """A tokenizer's name for a page a learner may share: a folder's name, never its absolute path."""
    text = str(name_or_path or "tokenizer")
    if os.sep in text or (os.altsep and os.altsep in text) or os.path.isdir(text):
        return os.path.basename(os.path.normpath(text)) or "tokenizer"
    return text


class Tok:
    """A tokenizer seen the same way whatever it is: text -> [(id, bytes)], plus a name."""

    def __init__(self, name: str, encode, token_bytes, vocab_size: int | None = None, special=lambda i: False):
        self.name, self._encode, self._bytes, self.vocab_size, self.is_special = name, encode, token_bytes, vocab_size, special

    def tokens(self, text: str, allow_special: bool = False) -> list[tuple[int, bytes]]:
        ids = self._encode(text, allow_special)
        return [(i, self._bytes(i)) for i in ids]

    # ---- adapters

    @classmethod
    def hf(cls, tokenizer, name: str | None = None) -> "Tok":
        """A Hugging Face byte-level BPE tokenizer (Phi-4's, phi4-tiny's)."""
        specials = {i for i in tokenizer.all_special_ids} | set(getattr(tokenizer, "added_tokens_decoder", {}))

        def token_bytes(i: int) -> bytes:
            piece = tokenizer.convert_ids_to_tokens(i)
            if i in specials or piece is None:
                return (piece or "").encode("utf-8")
            return bytes(_BYTE_OF_CHAR[c] for c in piece)

        return cls(name or _display_name(tokenizer.name_or_path), lambda t, a: encode_text(tokenizer, t, allow_special=a),
                   token_bytes, len(tokenizer), special=lambda i: i in specials)

    @classmethod
    def bytes_baseline(cls) -> "Tok":
        """One token per UTF-8 byte: what a model without a learned vocabulary would see."""
        return cls("bytes", lambda t, a: list(t.encode("utf-8")), lambda i: bytes([i]), 256)

    @classmethod
    def bpe(cls, model, name: str = "phi4lab.scratch.bpe") -> "Tok":
        """A phi4lab.scratch.bpe.BPE tokenizer."""
        inverse = {i: s for s, i in model.special_tokens.items()}
        return cls(name, lambda t, a: model.encode(t, allowed_special="all" if a else "none"),
                   lambda i: inverse[i].encode() if i in inverse else model.vocab[i], len(model),
                   special=lambda i: i in inverse)


def phi4() -> Tok:
    from phi4lab.model.tokenizer import phi4_tokenizer
    return Tok.hf(phi4_tokenizer(), "Phi-4 (cl100k)")


# ---------------------------------------------------------------- spans

@dataclass
class Span:
    start: int                 # character offsets into the (cleaned) text
    end: int
    text: str
    ids: list[int]
    pieces: list[bytes]
    special: bool = False
    loss: float | None = None  # mean per-token loss, when a model is linked
    norm: float | None = None  # mean embedding norm of its ids

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.pieces)


@dataclass
class Tokenized:
    """What the explorer knows about one text under one tokenizer."""
    tokenizer: str
    text: str                  # the text as tokenized (after cleaning), perhaps truncated
    spans: list[Span]
    n_tokens: int              # over the FULL text, even when it was truncated for display
    n_chars: int
    notices: list[str] = field(default_factory=list)

    @property
    def chars_per_token(self) -> float:
        return self.n_chars / self.n_tokens if self.n_tokens else 0.0

    def boundaries(self) -> set[int]:
        return {s.end for s in self.spans}


def clean(text: str) -> tuple[str, list[str]]:
    """The text rule of phi4lab.model.tokenizer, repaired rather than refused: lone surrogates become U+FFFD, with a notice."""
    check_text("" if isinstance(text, str) else text)      # a non-str is still a TypeError
    fixed, n = replace_lone_surrogates(text)      # surrogate pairs are joined into their character silently
    if not n:
        return fixed, []
    return fixed, [f"{n} lone surrogate code point(s) cannot be encoded as UTF-8 and were replaced by U+FFFD"]


def grapheme_ends(text: str) -> set[int]:
    """Byte offsets (in UTF-8) at which a grapheme cluster ends."""
    ends, pos = set(), 0
    for g in regex.findall(r"\X", text):
        pos += len(g.encode("utf-8"))
        ends.add(pos)
    return ends


def tokenize(tok: Tok, text: str, allow_special: bool = False, max_chars: int = MAX_CHARS) -> Tokenized:
    """Tokenize, then group tokens into grapheme-aligned spans for display."""
    text, notices = clean(text)
    full_count = len(tok.tokens(text, allow_special)) if len(text) > max_chars else None
    shown = text
    if len(text) > max_chars:
        shown = text[:max_chars]
        notices.append(f"showing the first {max_chars:,} of {len(text):,} characters; "
                       f"the counts below are for the whole text")
    tokens = tok.tokens(shown, allow_special)
    data = shown.encode("utf-8")
    ends = grapheme_ends(shown)
    char_at = _byte_to_char(shown)      # byte offset -> character offset, to cut the text at span ends

    spans, group, start_byte, pos = [], [], 0, 0
    for tid, piece in tokens:
        group.append((tid, piece))
        if data[pos:pos + len(piece)] != piece:
            # Phi-4's <|dummy_*|> tokens swallow the spaces around them (lstrip/rstrip): skip the
            # swallowed whitespace, which then shows inside this token's span.
            found = data.find(piece, pos)
            if found >= 0 and not data[pos:found].strip():
                pos = found
        pos += len(piece)
        if pos in ends or pos >= len(data):
            s, e = char_at.get(start_byte, 0), char_at.get(pos, len(shown))
            spans.append(Span(s, e, shown[s:e], [t for t, _ in group], [p for _, p in group],
                              special=any(tok.is_special(t) for t, _ in group)))
            group, start_byte = [], pos
    if group:                                   # trailing bytes that never reached a boundary
        s = char_at.get(start_byte, len(shown))
        spans.append(Span(s, len(shown), shown[s:], [t for t, _ in group], [p for _, p in group]))
    n_tokens = full_count if full_count is not None else len(tokens)
    return Tokenized(tok.name, shown, spans, n_tokens, len(text), notices)


def _byte_to_char(text: str) -> dict[int, int]:
    out, b = {0: 0}, 0
    for i, ch in enumerate(text, 1):
        b += len(ch.encode("utf-8"))
        out[b] = i
    return out


# ---------------------------------------------------------------- rendering

CSS = "\n<style>" + assets.read("tokens.css") + "</style>\n"

CONTROL_PICTURES = {i: chr(0x2400 + i) for i in range(32)} | {0x7F: "\u2421"}


# Format characters (Unicode category Cf) draw nothing: zero-width space U+200B, joiners,
# the BOM, soft hyphen, and the bidirectional controls. A bidi control is worse than
# invisible: U+202E (right-to-left override) reverses everything drawn after it. So
# every token span is isolated (CSS unicode-bidi: isolate, like <bdi>), a control can
# only act inside its own span, and these characters are drawn as a visible code.
BIDI_CONTROLS = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf"


def visible(text: str, whitespace: bool) -> str:
    """A span's text as HTML: escaped; whitespace, controls and invisible characters made visible.

    A joiner inside a visible cluster (the U+200D in a family emoji) is left to
    do its job; a bidi control, or a span made only of invisible characters,
    shows its code point, e.g. [U+200B].
    """
    only_invisible = bool(text) and all(_invisible(ch) for ch in text)
    out = []
    for ch in text:
        if whitespace and ch == " ":
            out.append("·")
        elif whitespace and ch == "\t":
            out.append("→\t")
        elif whitespace and ch == "\n":
            out.append("↵\n")
        elif ch == "\n" or ch == "\t":
            out.append(ch)
        elif ord(ch) in CONTROL_PICTURES:
            out.append(CONTROL_PICTURES[ord(ch)])
        elif ord(ch) in BIDI_CONTROLS or (only_invisible and _invisible(ch)):
            out.append(f"\x00[U+{ord(ch):04X}]\x00")   # marked, to be styled after escaping
        else:
            out.append(ch)
    escaped = html.escape("".join(out))
    return regex.sub(r"\x00(\[U\+[0-9A-F]{4,6}\])\x00", r'<span class="inv">\1</span>', escaped)


def _loss_colour(loss: float, top: float = 10.0) -> str:
    x = max(0.0, min(loss / top, 1.0))           # 0 nats: white, >= 10 nats: deep red
    return f"rgb(255,{int(255 - 180 * x)},{int(255 - 200 * x)})"


def render(t: Tokenized, *, whitespace: bool = False, show_ids: bool = False, byte_view: bool = False,
           diff: set[int] | None = None, flag_ids: set[int] = frozenset()) -> str:
    """HTML for one tokenized text: coloured spans, hover text with ids and bytes, and stats."""
    parts = []
    for k, s in enumerate(t.spans):
        colour = _loss_colour(s.loss) if s.loss is not None else PALETTE[k % len(PALETTE)]
        classes = ["tok"] + (["special"] if s.special else []) + (["flag"] if flag_ids & set(s.ids) else [])
        if diff is not None and (s.end in diff or s.start in diff):
            classes.append("diff")
        tip = [f"ids {s.ids}", "bytes " + " ".join(p.hex(" ") for p in s.pieces)]
        if len(s.ids) > 1:
            tip.append(f"{len(s.ids)} tokens cut inside one character: drawn as one span")
        if s.loss is not None:
            tip.append(f"loss {s.loss:.2f} nats")
        if s.norm is not None:
            tip.append(f"embedding norm {s.norm:.2f}")
        body = " ".join(p.hex() for p in s.pieces) + " " if byte_view else visible(s.text, whitespace)
        ids = f'<span class="ids">{",".join(map(str, s.ids))}</span>' if show_ids else ""
        parts.append(f'<span class="{" ".join(classes)}" style="background:{colour}" '
                     f'title="{html.escape(" | ".join(tip))}">{body}{ids}</span>')
    notices = "".join(f'<div class="notice">⚠ {html.escape(n)}</div>' for n in t.notices)
    if any(s.loss is not None for s in t.spans):
        legend = ("colour: the linked model's loss on each token, white at 0 nats to deep red at 10 or more "
                  "(the first token has no prediction); hover a token for its ids, bytes, loss and embedding norm")
    else:
        legend = "colours alternate so that each token's extent shows; hover a token for its ids and bytes"
    notices += f'<div class="legend" style="color:#666;font-size:90%">{html.escape(legend)}</div>'
    stats = (f'<div class="stats"><b>{html.escape(t.tokenizer)}</b>: {t.n_tokens:,} tokens, {t.n_chars:,} characters, '
             f'{t.chars_per_token:.2f} characters per token</div>')
    if not t.text:
        return CSS + f'<div class="p4x">{stats}<div class="notice">(empty text: nothing to tokenize)</div></div>'
    return CSS + f'<div class="p4x">{stats}{notices}<div>{"".join(parts)}</div></div>'


def compare(text: str, tokenizers: list[Tok], *, whitespace: bool = True, allow_special: bool = False,
            max_chars: int = MAX_CHARS) -> tuple[str, list[Tokenized]]:
    """Side by side: the same text under several tokenizers. Cuts not shared by all are underlined."""
    results = [tokenize(t, text, allow_special, max_chars) for t in tokenizers]
    common = set.intersection(*(r.boundaries() for r in results)) if results else set()
    rows = []
    for r in results:
        differ = r.boundaries() - common
        body = render(r, whitespace=whitespace, diff=differ).replace(CSS, "")
        rows.append(f"<tr><td>{body}<div class='stats'>{len(differ)} cut(s) not shared by all</div></td></tr>")
    return CSS + f"<div class='p4x'><table>{''.join(rows)}</table></div>", results


# ---------------------------------------------------------------- chat view

ROLE_COLOURS = {"system": "#8e44ad", "user": "#2471a3", "assistant": "#1e8449"}


def chat_view(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> tuple[str, str]:
    """Render a conversation with the tokenizer's chat template; role spans underlined, specials boxed.

    The ids shown are phi4lab.model.tokenizer.encode_chat's: the template's special tokens
    are specials, and what each message *typed* stays text, even "<|im_end|>".
    A notice names each message that types a special-token string, which
    ``apply_chat_template(..., tokenize=True)`` would turn into a control token.
    Returns (html, the templated text).
    """
    pieces = chat_pieces(tokenizer, messages, add_generation_prompt)
    text = "".join(p for p, _ in pieces)
    ids = encode_chat(tokenizer, messages, add_generation_prompt)
    base = Tok.hf(tokenizer, "chat")
    t = tokenize(Tok("chat", lambda _text, _allow: ids, base._bytes, base.vocab_size, base.is_special), text,
                 max_chars=max(MAX_CHARS, len(text)))
    specials = sorted(getattr(tokenizer, "added_tokens_encoder", {}), key=len, reverse=True)
    for k, m in enumerate(messages):
        typed = [sp for sp in specials if sp in m["content"]]
        if typed:
            t.notices.append(f"message {k} ({m['role']}) types {', '.join(typed[:3])}: shown and encoded as "
                             "text; apply_chat_template(..., tokenize=True) would make it a control token")
    # the role of each span: the last special "<|im_start|>" + ROLE seen before it
    role, html_parts, expect_role = None, [], False
    for k, s in enumerate(t.spans):
        if s.special and s.text == "<|im_start|>":
            expect_role = True
        elif expect_role and s.text.strip() in ROLE_COLOURS:
            role, expect_role = s.text.strip(), False
        colour = ROLE_COLOURS.get(role, "#999")
        cls = "tok special" if s.special else "tok"
        html_parts.append(f'<span class="{cls} role" style="border-bottom-color:{colour};background:'
                          f'{PALETTE[k % len(PALETTE)]}" title="{html.escape(f"ids {s.ids} | role {role}")}">'
                          f"{visible(s.text, False)}</span>")
        if s.special and s.text == "<|im_end|>":
            role = None
    legend = " ".join(f'<span style="border-bottom:3px solid {c}">{r}</span>' for r, c in ROLE_COLOURS.items())
    stats = f'<div class="stats">{t.n_tokens} tokens · roles: {legend} · special tokens boxed in red</div>'
    notices = "".join(f'<div class="notice">⚠ {html.escape(n)}</div>' for n in t.notices)
    return CSS + f'<div class="p4x">{stats}{notices}<div>{"".join(html_parts)}</div></div>', text


# ---------------------------------------------------------------- linked to a model

def attach_model(t: Tokenized, model) -> Tokenized:
    """Colour spans by per-token loss under `model` and record each span's embedding norm.

    The loss of token i is -log p(token i | tokens before it); the first token
    has no prediction and gets none. Works with a phi4lab/TransformerLens model.
    A text longer than the model's context is scored in consecutive windows of
    the context's length (each window's first token then has no prediction), and
    each window's memory is checked before it runs: a pasted book neither runs
    past the positions the model was trained on nor exhausts the machine. What
    could not be scored is said in a notice; the page itself always draws.
    """
    import torch

    from phi4lab.analysis.cache_plan import check_forward_fits
    from phi4lab.model.bridge import logits_of
    from phi4lab.model.memory import InsufficientMemoryError
    from phi4lab.training.loop import next_token_losses

    ids = [i for s in t.spans for i in s.ids]
    if not ids:
        return t
    window = getattr(getattr(model, "cfg", None), "n_ctx", None) or model.config.max_position_embeddings
    window = min(window, len(ids))
    try:
        check_forward_fits(model, window, what=f"scoring a {window:,}-token window")
    except InsufficientMemoryError as e:
        t.notices.append(f"not coloured by loss: {e}")
        return t
    if len(ids) > window:
        t.notices.append(f"{len(ids):,} tokens is more than the model's context of {window:,}: losses are "
                         f"computed in {math.ceil(len(ids) / window)} windows of up to {window:,} tokens, "
                         "each starting without the text before it")
    losses = []
    with torch.no_grad():
        for start in range(0, len(ids), window):
            tokens = torch.tensor([ids[start:start + window]])
            losses += [math.nan] + next_token_losses(logits_of(model, tokens), tokens)[0].tolist()
        norms = model.W_E[torch.tensor(ids)].norm(dim=-1).tolist()
    k = 0
    for s in t.spans:
        n = len(s.ids)
        span_losses = [x for x in losses[k:k + n] if not math.isnan(x)]
        s.loss = sum(span_losses) / len(span_losses) if span_losses else None
        s.norm = sum(norms[k:k + n]) / n
        k += n
    return t


def embedding_outliers(model, tokenizer=None, z: float = 3.0) -> dict[int, float]:
    """Ids whose embedding norm is far from typical (|z-score| > z): untrained rows stand out.

    Rows never seen in training (Phi-4's <|dummy_*|> ids, or special tokens a
    small model never met) keep their initial norm while trained rows drift.
    With a tokenizer, every <|dummy_*|> id is included too.
    """
    norms = model.W_E.norm(dim=-1).detach()
    mean, std = norms.mean(), norms.std()
    out = {int(i): float(norms[i]) for i in ((norms - mean).abs() > z * std).nonzero().flatten()}
    if tokenizer is not None:
        for i in getattr(tokenizer, "added_tokens_decoder", {}):
            if str(tokenizer.convert_ids_to_tokens(i)).startswith("<|dummy") and i < len(norms):
                out[int(i)] = float(norms[i])
    return out


# ---------------------------------------------------------------- the widget

def page(text: str, tokenizers: list[Tok], *, whitespace: bool = True, show_ids: bool = False,
         byte_view: bool = False, allow_special: bool = False, model=None, max_chars: int = MAX_CHARS,
         flags: set[int] | None = None) -> str:
    """The explorer's HTML for a text: a comparison of several tokenizers, or detailed views of each.

    flags: ids to outline as suspicious; by default, with a model, its embedding outliers.
    """
    if len(tokenizers) > 1 and not (show_ids or byte_view or model is not None):
        return compare(text, tokenizers, whitespace=whitespace, allow_special=allow_special, max_chars=max_chars)[0]
    views = []
    # with a model, ids whose embedding norm is an outlier (untrained rows, dummies) get a dashed outline
    if flags is None:
        flags = set(embedding_outliers(model, getattr(model, "tokenizer", None))) if model is not None else set()
    for tok in tokenizers:
        t = tokenize(tok, text, allow_special, max_chars)
        if model is not None:
            attach_model(t, model)
        views.append(render(t, whitespace=whitespace, show_ids=show_ids, byte_view=byte_view, flag_ids=flags))
    return "".join(views)


def explore(text: str = "Phi-4 cuts text into tokens: 1234567, naïve, 👍🏽!", tokenizers: list[Tok] | None = None,
            model=None):
    """An ipywidgets explorer: type text, toggle whitespace, ids, bytes and specials, compare tokenizers.

    The page is an ``ipywidgets.HTML`` whose value is the self-contained HTML of ``page()``.
    """
    import ipywidgets as w

    tokenizers = tokenizers or [phi4(), Tok.bytes_baseline()]
    box = w.Textarea(value=text, layout=w.Layout(width="100%", height="90px"), continuous_update=False)
    ws = w.Checkbox(value=True, description="show whitespace")
    ids = w.Checkbox(value=False, description="show ids")
    byte_view = w.Checkbox(value=False, description="byte view")
    specials = w.Checkbox(value=False, description="parse special tokens")
    out = w.HTML()
    # the model does not change while the widget lives: find its outlier rows once, not per keystroke
    flags = set(embedding_outliers(model, getattr(model, "tokenizer", None))) if model is not None else set()

    def redraw(*_):
        out.value = page(box.value, tokenizers, whitespace=ws.value, show_ids=ids.value,
                         byte_view=byte_view.value, allow_special=specials.value, model=model, flags=flags)

    for control in (box, ws, ids, byte_view, specials):
        control.observe(redraw, names="value")
    redraw()
    return w.VBox([box, w.HBox([ws, ids, byte_view, specials]), out])
