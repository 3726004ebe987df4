"""The tokenizer explorer: faithful spans, bad input, comparison, chat view, model link, widget."""

import pytest
import torch

import phi4lab
from phi4lab.model.config import scaled
from phi4lab.model.tokenizer import phi4_tokenizer, tiktoken_encoding
from phi4lab.viz import tokens as token_explorer


@pytest.fixture(scope="module")
def phi4():
    return token_explorer.phi4()


@pytest.mark.parametrize("text", ["naïve café", "👍🏽 👨‍👩‍👧 🇫🇷", "日本語のテキスト", "def f(x):\n\treturn x", "a  \n\n b"])
def test_spans_cover_the_text_exactly(phi4, text):
    t = token_explorer.tokenize(phi4, text)
    assert "".join(s.text for s in t.spans) == text
    assert b"".join(p for s in t.spans for p in s.pieces) == text.encode()
    assert [i for s in t.spans for i in s.ids] == tiktoken_encoding().encode_ordinary(text)


def test_a_character_split_across_tokens_is_one_span(phi4):
    t = token_explorer.tokenize(phi4, " 👍🏽")
    assert len(t.spans) == 1 and len(t.spans[0].ids) > 1
    assert "cut inside one character" in token_explorer.render(t)


def test_empty_text(phi4):
    t = token_explorer.tokenize(phi4, "")
    assert t.spans == [] and t.n_tokens == 0
    assert "empty text" in token_explorer.render(t)


def test_a_huge_paste_is_truncated_but_counted_in_full(phi4):
    text = ("The quick brown fox jumps over the lazy dog. " * 23_000)[:1_000_000]
    t = token_explorer.tokenize(phi4, text, max_chars=5_000)
    assert t.n_tokens == len(tiktoken_encoding().encode_ordinary(text))
    assert t.n_chars == 1_000_000 and len(t.text) == 5_000
    page = token_explorer.render(t)
    assert "showing the first 5,000 of 1,000,000 characters" in page
    assert len(page) < 400_000


def test_lone_surrogates_and_control_characters(phi4):
    t = token_explorer.tokenize(phi4, "a\ud800b\x07c\x00")
    assert "\ufffd" in t.text and any("surrogate" in n for n in t.notices)
    page = token_explorer.render(t)
    assert "\u2407" in page and "\u2400" in page       # control pictures for BEL and NUL
    assert "\x07" not in page and "\x00" not in page


def test_typed_special_strings_stay_text_unless_allowed(phi4):
    plain = token_explorer.tokenize(phi4, "<|im_end|>")
    assert len(plain.spans[0].ids) > 1 or len(plain.spans) > 1
    assert not any(s.special for s in plain.spans)
    allowed = token_explorer.tokenize(phi4, "<|im_end|>", allow_special=True)
    assert [s.ids for s in allowed.spans] == [[100265]] and allowed.spans[0].special


def test_whitespace_toggle_and_escaping(phi4):
    t = token_explorer.tokenize(phi4, "<script>x</script> \t y\n")
    shown = token_explorer.render(t, whitespace=True)
    body = shown.split("</style>")[1]
    assert "&lt;" in body and "&gt;" in body and "<script>" not in body
    assert "·" in shown and "→" in shown and "↵" in shown
    assert "·" not in token_explorer.render(t, whitespace=False).split("</style>")[1]


def test_compare_marks_cuts_that_differ(phi4):
    page, (a, b) = token_explorer.compare("tokenization 2026", [phi4, token_explorer.Tok.bytes_baseline()])
    assert a.n_tokens < b.n_tokens == len("tokenization 2026".encode())
    assert a.boundaries() < b.boundaries()
    assert "class=\"tok diff\"" in page
    _, (c, d) = token_explorer.compare("tokenization", [phi4, phi4])
    assert c.boundaries() == d.boundaries()


def test_chat_view_marks_roles_and_specials():
    tok = phi4_tokenizer()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}]
    page, text = token_explorer.chat_view(tok, messages)
    assert text == tok.apply_chat_template(messages, tokenize=False)
    for role in ("system", "user", "assistant"):
        assert f"role {role}" in page
    assert page.count('class="tok special role"') == 9     # 3 x (im_start, im_sep, im_end)


def test_linked_model_gives_per_token_losses_and_norms():
    model = phi4lab.load(config=scaled(d_model=32, n_layers=1), seed=0)
    t = token_explorer.tokenize(token_explorer.Tok.hf(model.tokenizer, "twin"), "Hello world, hello world")
    token_explorer.attach_model(t, model)
    assert t.spans[0].loss is None and all(s.loss is not None for s in t.spans[1:])
    ids = torch.tensor([[i for s in t.spans for i in s.ids]])
    direct = model(ids, return_type="loss", loss_per_token=True)[0]
    torch.testing.assert_close(torch.tensor([s.loss for s in t.spans[1:]]), direct, atol=1e-4, rtol=1e-4)
    assert t.spans[1].norm == pytest.approx(model.W_E[t.spans[1].ids[0]].norm().item(), rel=1e-5)
    assert "loss" in token_explorer.render(t)


def test_untrained_rows_stand_out():
    model = phi4lab.load(config=scaled(d_model=32, n_layers=1), seed=0)
    with torch.no_grad():
        model.W_E[1234] *= 20
    outliers = token_explorer.embedding_outliers(model, model.tokenizer)
    assert 1234 in outliers
    assert 100352 - 1 in outliers, "the last <|dummy_*|> id is listed"
    html = token_explorer.page("a <|dummy_87|> b", [token_explorer.Tok.hf(model.tokenizer, "twin")], allow_special=True, model=model)
    flagged = [part for part in html.split("<span ") if 'class="tok special flag"' in part]
    assert len(flagged) == 1 and "&lt;|dummy_87|&gt;" in flagged[0]
    swallowed = token_explorer.tokenize(token_explorer.Tok.hf(model.tokenizer, "twin"), "a <|dummy_87|> b", allow_special=True)
    assert "".join(s.text for s in swallowed.spans) == "a <|dummy_87|> b"    # spaces the dummy swallowed stay visible
    assert [s.text.strip() for s in swallowed.spans] == ["a", "<|dummy_87|>", "b"]


def test_widget_renders_html():
    widget = token_explorer.explore("hello 👍🏽", tokenizers=[token_explorer.phi4(), token_explorer.Tok.bytes_baseline()])
    box, toggles, out = widget.children
    assert "Phi-4 (cl100k)" in out.value and "<b>bytes</b>" in out.value
    box.value = "a new text"
    assert "a new text".split()[1] in out.value
    toggles.children[1].value = True          # show ids: detailed views instead of the comparison
    assert 'class="ids"' in out.value


def test_a_folder_tokenizer_is_named_not_located_and_the_colours_are_explained():
    from pathlib import Path
    folder = Path(phi4lab.__file__).resolve().parents[1] / "data" / "phi4-tiny"
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    assert tok.name_or_path == str(folder)                         # what Hugging Face records: the full path
    named = token_explorer.Tok.hf(tok)
    assert named.name == "phi4-tiny"
    page = token_explorer.page("To be, or not to be", [named])
    assert str(folder) not in page and str(folder.parent) not in page
    assert "colours alternate so that each token" in page
    with_model = token_explorer.render(token_explorer.attach_model(token_explorer.tokenize(named, "To be, or not to be"), phi4lab.load("phi4-tiny")))
    assert "colour: the linked model" in with_model and "white at 0 nats" in with_model
