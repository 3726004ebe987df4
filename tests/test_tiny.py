"""phi4-tiny: the recipe's pieces, and the shipped model's shape and structure."""

import json
from pathlib import Path

import pytest
import torch

from phi4lab.analysis import heads
from phi4lab.recipes import tiny
from phi4lab.recipes.corpus import Document

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "phi4-tiny"


def test_tiny_config_keeps_phi4_ratios():
    cfg = tiny.tiny_config()
    assert cfg.num_hidden_layers >= 4
    assert cfg.num_attention_heads == 4 * cfg.num_key_value_heads
    assert cfg.rope_parameters["rope_theta"] == 250_000 and cfg.hidden_act == "silu"
    assert cfg.intermediate_size == round(3.5 * cfg.hidden_size)
    assert cfg.tie_word_embeddings is False and cfg.max_position_embeddings >= 256
    assert cfg.eos_token_id == cfg.vocab_size - 2 and cfg.bos_token_id == cfg.vocab_size - 5


def test_trained_tokenizer_has_specials_last_and_round_trips():
    text = "def hello(name):\n    return f'Hello, {name}!'  # grüße, 世界 🙂\n" * 20
    tok = tiny.train_tokenizer([text, "To be, or not to be: that is the question."], vocab_size=300)
    assert len(tok) == 300
    assert [tok.convert_ids_to_tokens(i) for i in range(295, 300)] == tiny.TINY_SPECIALS
    for sample in (text, "never seen: ñ ß ✓ 42", "<|im_start|>user<|im_sep|>hi<|im_end|>"):
        ids = tok(sample, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == sample
    assert tok("<|im_end|>", add_special_tokens=False)["input_ids"] == [298]


def test_mixture_sampler_is_deterministic_and_follows_the_mixture():
    streams = {"prose": torch.arange(10_000) % 300, "code": 300 + torch.arange(10_000) % 300}
    sampler = tiny.MixtureSampler(streams, n_ordinary=1000, batch_size=16, seq_len=64, seed=0)
    assert torch.equal(sampler(7), sampler(7)) and not torch.equal(sampler(7), sampler(8))
    rows = torch.cat([sampler(i) for i in range(100)])
    is_prose = (rows < 300).all(1)
    is_code = ((rows >= 300) & (rows < 600)).all(1)
    synthetic = ~(is_prose | is_code)
    for share, mask in ((tiny.MIXTURE["prose"], is_prose), (tiny.MIXTURE["code"], is_code),
                        (tiny.MIXTURE["synthetic"], synthetic)):
        assert abs(mask.float().mean().item() - share) < 0.05
    # sources_of replays each row's source without the streams (notebook 03 counts the build's rows so)
    replayed = torch.cat([tiny.MixtureSampler({}, 0, 16, 64, seed=0).sources_of(i) for i in range(100)])
    observed = torch.where(is_prose, 0, torch.where(is_code, 1, 2))
    assert list(tiny.MIXTURE) == ["prose", "code", "synthetic"] and torch.equal(replayed, observed)
    # synthetic rows repeat with a period in the configured range
    row = rows[synthetic.nonzero()[0, 0]]
    period = next(k for k in range(*tiny.SYNTHETIC_SEGMENT, ) if torch.equal(row[k:], row[:-k]))
    assert tiny.SYNTHETIC_SEGMENT[0] <= period <= tiny.SYNTHETIC_SEGMENT[1]


def test_token_stream_separates_documents():
    with pytest.raises(ValueError, match="only supports"):
        tiny.train_tokenizer(["alpha beta gamma " * 50], vocab_size=300)
    tok = tiny.train_tokenizer(["alpha beta gamma " * 50], vocab_size=270)
    docs = [Document("prose/a", "prose", "alpha beta"), Document("prose/b", "prose", "gamma"),
            Document("code/c.py", "code", "x = 1")]
    stream = tiny.token_stream(tok, docs, "prose")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert (stream == eot).sum() == 2 and stream[-1] == eot
    assert tok.decode(stream.tolist()) == "alpha beta<|endoftext|>gamma<|endoftext|>"


# ------------------------------------------------------------------ the shipped model

def test_shipped_files_are_small_and_complete():
    names = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "training_log.json",
            "corpus_manifest.json"} <= names
    total = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert total <= 20 * 2**20, f"{total / 2**20:.1f} MiB"
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)


def test_shipped_model_loads_with_its_tokenizer_and_predicts_text(tiny_model):
    model = tiny_model
    assert model.cfg.n_layers >= 4 and model.cfg.d_vocab == tiny.TINY_VOCAB
    assert model.tokenizer.convert_ids_to_tokens(tiny.TINY_VOCAB - 2) == "<|im_end|>"
    text = "    def __init__(self, name):\n        self.name = name\n"
    tokens = model.to_tokens(text)
    loss = model(tokens, return_type="loss").item()
    assert loss < 3.0, f"a trained model should predict simple Python well, got loss {loss:.2f}"


def _fresh_scores(model):
    """Measured fresh with phi4lab's detectors, on other random tokens and text than training used."""
    n_ordinary = tiny.TINY_VOCAB - len(tiny.TINY_SPECIALS)
    rep = heads.random_repeated_tokens(25, 2, 8, vocab=n_ordinary, seed=12345)
    induction = heads.induction_scores(heads.attention_patterns(model, rep), 25)
    prose = model.to_tokens("ROMEO. But soft, what light through yonder window breaks? It is the east, "
                            "and Juliet is the sun. Arise, fair sun, and kill the envious moon, who is "
                            "already sick and pale with grief.")
    previous = heads.previous_token_scores(heads.attention_patterns(model, prose))
    return induction, previous


@pytest.fixture(scope="module")
def fresh_scores(tiny_model):
    return _fresh_scores(tiny_model)


def test_shipped_model_has_a_previous_token_head(fresh_scores):
    _, previous = fresh_scores
    assert previous.max() >= 0.4, heads.top_heads(previous, 3)


def test_shipped_induction_score_matches_its_metrics(fresh_scores):
    induction, _ = fresh_scores
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert abs(induction.max().item() - metrics["final"]["induction_score"]) < 0.05


def test_shipped_model_has_an_induction_head(fresh_scores):
    induction, _ = fresh_scores
    assert induction.max() >= 0.4, heads.top_heads(induction, 3)


def test_shipped_model_copies_in_context_through_its_induction_heads(tiny_model, fresh_scores):
    """The heads are not just a pattern: the model copies, and ablating them removes the copying.

    Layer 3 holds several induction heads, so the copying survives losing half of them
    and is gone only when all are ablated.
    """
    from phi4lab.analysis.interventions import ablate_heads
    from phi4lab.training.loop import next_token_losses
    model = tiny_model
    induction, _ = fresh_scores
    ranked = [(layer, head) for layer, head, s in heads.top_heads(induction, induction.numel()) if s >= 0.4]
    assert len(ranked) >= 2, ranked
    n_ordinary = tiny.TINY_VOCAB - len(tiny.TINY_SPECIALS)
    x = heads.random_repeated_tokens(25, 2, 8, vocab=n_ordinary, seed=777)

    def copies(ablated=()):
        losses = next_token_losses(ablate_heads(model, x, list(ablated)), x)
        return losses[:, :24].mean().item(), losses[:, 25:49].mean().item()   # first copy, second copy

    first, second = copies()
    assert first > 7.0 and second < 1.0, (first, second)
    assert copies(ranked[: len(ranked) // 2])[1] < 2.0, "half of the induction heads should still copy"
    assert copies(ranked)[1] > first - 1.0, "with every induction head ablated, the copying should be gone"


def test_tie_and_untie_embeddings():
    model = _small_random_model()
    tiny.tie_embeddings(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    tiny.untie_embeddings(model)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    torch.testing.assert_close(model.lm_head.weight, model.model.embed_tokens.weight)
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight), "untied means separate storage"


def _small_random_model():
    from phi4lab.model.config import scaled
    from phi4lab.model.loading import random_hf_model
    return random_hf_model(scaled(d_model=32, n_layers=1, n_kv_heads=1, vocab_size=64), seed=0)


def test_shipped_metrics_agree_with_the_log(tiny_model):
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    log = json.loads((SHIPPED / "training_log.json").read_text())
    assert metrics["final"] == log[-1]
    assert metrics["final"]["prev_token_score"] >= 0.4
    # the warm-up comes first, tied; the mixture continues its step count
    phases = [r["phase"] for r in log]
    assert phases[0] == "warm-up" and phases[-1] == "mixture" and phases == sorted(phases, key=("warm-up", "mixture").index)
    assert metrics["warmup"]["tied_embeddings"] and metrics["warmup"]["steps"] == max(
        r["step"] for r in log if r["phase"] == "warm-up")
    assert [r["step"] for r in log] == sorted({r["step"] for r in log})
    assert metrics["final"]["step"] == metrics["warmup"]["steps"] + metrics["mixture_steps"]
    from phi4lab.model.bridge import hf_state_dict
    assert metrics["parameters"] == sum(t.numel() for t in hf_state_dict(tiny_model).values())
