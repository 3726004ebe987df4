"""phi4lab.training.finetune: LoRA on the fused Phi-3 layers, adapters saved and merged, full and LoRA training."""

import pytest
import torch

import phi4lab
from phi4lab.model.config import scaled
from phi4lab.training import finetune as FT


@pytest.fixture(scope="module")
def base():
    return phi4lab.load(config=scaled(d_model=64, n_layers=2), seed=0)


@pytest.fixture(scope="module")
def batches():
    # a 40-token phrase repeated: learnable in a few dozen steps
    phrase = torch.randint(0, 1000, (40,), generator=torch.Generator().manual_seed(0))
    stream = phrase.repeat(200)

    def get(i):
        starts = [(i * 13 + j * 29) % 4000 for j in range(8)]
        return torch.stack([stream[s:s + 32] for s in starts])
    return get


@pytest.fixture(scope="module")
def tuned(base, batches):
    return FT.adapt(base, batches, 40, method="lora", r=4)


def test_lora_trains_exactly_the_counted_parameters(base):
    model = FT.lora_model(base, r=4)
    trainable, total = FT.trainable_parameters(model)
    assert trainable == FT.lora_parameter_count(base.original_model.config, 4) == 8704
    assert total - trainable == sum(p.numel() for p in FT.plain_copy(base).parameters())
    # B starts at zero: the adapter changes nothing until trained
    assert all(v == 0 for v in FT.lora_update_norms(model).values())
    x = torch.randint(0, 1000, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, base(x))


def test_q_v_only_adapter_is_refused_with_the_reason(base):
    with pytest.raises(ValueError, match="fused qkv_proj.*Q/V-only adapter needs the Q and V rows of qkv_proj masked, or the layer unfused"):
        FT.lora_model(base, targets=["q_proj", "v_proj"])


@pytest.mark.slow
def test_training_lowers_the_loss_and_leaves_the_base_alone(base, batches, tuned):
    model, history = tuned
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    norms = FT.lora_update_norms(model)
    assert len(norms) == 2 * 4 and all(v > 0 for v in norms.values())
    full, full_history = FT.adapt(base, batches, 20, method="full")
    assert full_history[-1]["loss"] < full_history[0]["loss"]
    assert all(not p.requires_grad or p.grad is None for p in base.parameters())       # base untouched
    with pytest.raises(ValueError, match="'lora' or 'full'"):
        FT.adapt(base, batches, 1, method="qlora")


def test_merged_and_unmerged_logits_agree(base, tuned):
    model, _ = tuned
    x = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(FT.merged(model)(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(model(x).logits, base(x), atol=1e-3)        # the adapter does something


def test_adapter_round_trip_is_safetensors_only(base, tuned, tmp_path):
    model, _ = tuned
    FT.save_adapter(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert "adapter_model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    again = FT.load_adapter(base, tmp_path / "adapter")
    x = torch.randint(0, 1000, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits)
    with pytest.raises(FileNotFoundError, match="safetensors only"):
        FT.load_adapter(base, tmp_path)


def test_adapter_can_be_switched_on_layer_by_layer(base, tuned):
    model, _ = tuned
    x = torch.randint(0, 1000, (2, 12))
    with torch.no_grad():
        full = model(x).logits
        with FT.enabled_layers(model, []):
            torch.testing.assert_close(model(x).logits, base(x))
        with FT.enabled_layers(model, [0, 1]):
            torch.testing.assert_close(model(x).logits, full)
        with FT.enabled_layers(model, [1]):
            only_last = model(x).logits
        assert not torch.allclose(only_last, full) and not torch.allclose(only_last, base(x))
        torch.testing.assert_close(model(x).logits, full)                  # restored afterwards


def test_text_stream_and_window_batches(base):
    tok = base.tokenizer
    stream = FT.text_stream(tok, ["one two", "three"])
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    assert stream.tolist() == tok.encode("one two", add_special_tokens=False) + [eot] + \
        tok.encode("three", add_special_tokens=False) + [eot]
    # user text cannot smuggle in a control token
    assert eot not in FT.text_stream(tok, ["<|endoftext|>"])[:-1].tolist()
    long = torch.arange(500)
    get = FT.window_batches(long, batch_size=3, seq_len=20, seed=1)
    assert get(4).shape == (3, 20) and torch.equal(get(4), get(4)) and not torch.equal(get(4), get(5))
    assert torch.equal(get(4)[:, 1:] - get(4)[:, :-1], torch.ones(3, 19, dtype=torch.long))   # contiguous windows
    with pytest.raises(ValueError, match="fewer than one window"):
        FT.window_batches(torch.arange(10), seq_len=20)
