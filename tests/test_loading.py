"""phi4lab.load: HF parity, the three model kinds, and every bad input refused cleanly."""

import json
import re
import shutil

import pytest
import torch
from transformers import Phi3ForCausalLM

import phi4lab
from phi4lab.model import config as C
from phi4lab.model import loading
from phi4lab.model.tokenizer import phi4_tokenizer

PARITY_CONFIGS = {
    "phi4-ratios": C.scaled(d_model=64, n_layers=2, n_kv_heads=2),
    "one-kv-head": C.scaled(d_model=64, n_layers=2, n_kv_heads=1),
    "kv-equals-q": C.scaled(d_model=64, n_layers=2, num_attention_heads=4, num_key_value_heads=4),
    "odd-width": C.scaled(hidden_size=45, head_dim=8, num_attention_heads=4, num_key_value_heads=1, intermediate_size=158),
}


def save_checkpoint(cfg, path, seed=0):
    loading.random_hf_model(cfg, seed).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_checkpoint(PARITY_CONFIGS["phi4-ratios"], tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_bridge_logits_match_hugging_face(name, tmp_path):
    path = save_checkpoint(PARITY_CONFIGS[name], tmp_path, seed=1)
    bridge = phi4lab.load(path)
    reference = Phi3ForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    tokens = torch.randint(0, 100_000, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(tokens).logits
        got = bridge(tokens)
    assert got.shape == expected.shape == (2, 17, 100352)
    assert (got - expected).abs().max().item() < 1e-4
    # the cache holds what a TransformerLens user expects, with GQA shapes
    _, cache = bridge.run_with_cache(tokens[:1], names_filter=lambda n: n.startswith("blocks.0.attn.hook_"))
    cfg = PARITY_CONFIGS[name]
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, cfg.num_attention_heads, 17, 17)
    assert cache["blocks.0.attn.hook_k"].shape == (1, 17, cfg.num_key_value_heads, C.head_dim(cfg))


@pytest.mark.slow
def test_random_twins_are_seeded():
    cfg = C.scaled(d_model=32, n_layers=1, n_kv_heads=1)
    a, b, c = (phi4lab.load(config=cfg, seed=s) for s in (0, 0, 1))
    wa, wb, wc = (m.original_model.model.layers[0].self_attn.qkv_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    state = torch.random.get_rng_state()
    phi4lab.load(config=cfg, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "loading must not disturb the caller's RNG"


def test_no_bos_by_default_like_hugging_face(tiny_dir):
    model = phi4lab.load(tiny_dir)
    hf = phi4_tokenizer()
    assert model.cfg.default_prepend_bos is False
    assert model.to_tokens("Hello World").tolist() == [hf("Hello World")["input_ids"]] == [[9906, 4435]]
    assert model.to_tokens("Hello World", prepend_bos=True).tolist() == [[100257, 9906, 4435]]
    assert model.tokenizer("Hello World")["input_ids"] == [9906, 4435]
    assert model.tokenizer.eos_token_id == 100265 and model.tokenizer.pad_token_id == 100349


def test_local_tokenizer_files_are_used(tmp_path):
    cfg = C.scaled(d_model=32, n_layers=1, n_kv_heads=1, vocab_size=512)
    save_checkpoint(cfg, tmp_path)
    with pytest.raises(phi4lab.CheckpointError, match="no tokenizer.json"):
        phi4lab.load(tmp_path)
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0} | {f"w{i}": i for i in range(1, 512)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", bos_token="w1").save_pretrained(tmp_path)
    model = phi4lab.load(tmp_path)
    assert model.to_tokens("w5 w7").tolist() == [[5, 7]]


def test_device_map_is_passed_through(tiny_dir, monkeypatch):
    seen = {}
    original = Phi3ForCausalLM.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        seen.update(kwargs)
        return original(cls, path, **kwargs)

    monkeypatch.setattr(Phi3ForCausalLM, "from_pretrained", classmethod(spy))
    model = phi4lab.load(tiny_dir, device_map={"": "cpu"})
    assert seen["device_map"] == {"": "cpu"} and seen["use_safetensors"] is True
    assert seen["trust_remote_code"] is False and seen["attn_implementation"] == "eager"
    assert model.cfg.device in ("cpu", torch.device("cpu"))


def test_unknown_name_lists_valid_names():
    with pytest.raises(phi4lab.UnknownModelError) as err:
        phi4lab.load("microsoft/phi-5")
    message = str(err.value)
    assert "'microsoft/phi-4'" in message and "'phi4-tiny'" in message and "Did you mean 'microsoft/phi-4'" in message


def test_name_and_config_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        phi4lab.load("phi4-tiny", config=C.scaled())
    with pytest.raises(TypeError, match="Phi3Config"):
        phi4lab.load(config={"hidden_size": 8})


def test_pickle_checkpoints_are_refused(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "config.json", tmp_path)
    torch.save(Phi3ForCausalLM.from_pretrained(tiny_dir).state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(phi4lab.CheckpointError, match="pickle"):
        phi4lab.load(tmp_path)


def test_truncated_safetensors_is_refused(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "config.json", tmp_path)
    data = (tiny_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:100])
    with pytest.raises(phi4lab.CheckpointError, match="safetensors"):
        phi4lab.load(tmp_path)


def test_missing_weights_are_refused(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "config.json", tmp_path)
    with pytest.raises(phi4lab.CheckpointError, match="no \\*.safetensors"):
        phi4lab.load(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(phi4lab.CheckpointError, match="no config.json"):
        phi4lab.load(tmp_path)


def test_weights_that_disagree_with_config_are_refused(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path)
    raw = json.loads((tiny_dir / "config.json").read_text())
    raw["intermediate_size"] = 100
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(phi4lab.CheckpointError, match="shape mismatch"):
        phi4lab.load(tmp_path)


def _with_config(tiny_dir, tmp_path, **changes):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path)
    raw = json.loads((tiny_dir / "config.json").read_text())
    raw.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path


@pytest.mark.parametrize("layers", [10**6, 10**8])
def test_a_huge_config_is_refused_from_its_arithmetic_before_anything_is_built(tiny_dir, tmp_path, layers, monkeypatch):
    # Building even empty (meta-device) layers for such a config took minutes and gigabytes;
    # the refusal must come from the pre-flight, before any module exists.
    built = []
    monkeypatch.setattr(loading, "Phi3ForCausalLM", lambda *a, **k: built.append(1) or pytest.fail("a model was built"))
    with pytest.raises(phi4lab.InsufficientMemoryError, match="Nothing was allocated"):
        phi4lab.load(_with_config(tiny_dir, tmp_path, num_hidden_layers=layers))
    assert not built


@pytest.mark.parametrize("changes, message", [
    (dict(num_hidden_layers=0), "num_hidden_layers = 0"),
    (dict(num_hidden_layers=-3), "num_hidden_layers = -3"),
    (dict(hidden_size=64.5), "hidden_size"),
    (dict(vocab_size="4096"), "vocab_size"),
    (dict(num_attention_heads=8, num_key_value_heads=3), "not a multiple of num_key_value_heads"),
    (dict(max_position_embeddings=10**12), "max_position_embeddings = 1,000,000,000,000 is longer"),
])
def test_impossible_sizes_are_refused_with_the_file_named(tiny_dir, tmp_path, changes, message):
    with pytest.raises(phi4lab.CheckpointError, match="config.json") as info:
        phi4lab.load(_with_config(tiny_dir, tmp_path, **changes))
    assert message in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"[1, 2, 3]", "config.json holds a JSON list, not an object"),
    (b'{"model_type": "phi3\xff\xfe"}', "config.json is not UTF-8 text (byte 20 is 0xff)"),
    (b'"phi3"', "config.json holds a JSON str"),
])
def test_a_malformed_config_file_is_refused_with_the_file_named(tiny_dir, tmp_path, content, message):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path)
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(phi4lab.CheckpointError, match=re.escape(message)):
        phi4lab.load(tmp_path)


def test_checkpoint_files_that_point_outside_the_folder_are_refused(tiny_dir, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, ckpt)
    (ckpt / "tokenizer.json").unlink(missing_ok=True)
    (ckpt / "tokenizer.json").symlink_to(outside)
    with pytest.raises(phi4lab.CheckpointError, match=r"tokenizer.json points outside .*ckpt"):
        phi4lab.load(ckpt)
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "config.json").rename(tmp_path / "config.json")
    (ckpt / "config.json").symlink_to(tmp_path / "config.json")
    with pytest.raises(phi4lab.CheckpointError, match=r"config.json points outside"):
        phi4lab.load(ckpt)


def test_an_unreadable_tokenizer_is_refused_with_its_files_named(tiny_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, ckpt)
    (ckpt / "tokenizer.json").write_text('{"model": ')
    with pytest.raises(phi4lab.CheckpointError, match=r"the tokenizer in .*ckpt \(tokenizer.json.*cannot be read"):
        phi4lab.load(ckpt)


def test_integer_weights_are_refused_not_cast(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    shutil.copy(tiny_dir / "config.json", tmp_path)
    weights = load_file(tiny_dir / "model.safetensors")
    name = next(k for k in weights if "mlp" in k)
    weights[name] = weights[name].to(torch.int8)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(phi4lab.CheckpointError, match=rf"not floating point, e.g. {re.escape(name)} \(I8\)"):
        phi4lab.load(tmp_path)


def test_other_architectures_are_named(tiny_dir, tmp_path):
    shutil.copy(tiny_dir / "model.safetensors", tmp_path)
    raw = json.loads((tiny_dir / "config.json").read_text())
    raw.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(phi4lab.CheckpointError, match="LlamaForCausalLM"):
        phi4lab.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(phi4lab.CheckpointError, match="not valid JSON"):
        phi4lab.load(tmp_path)


def test_memory_preflight_refuses_before_allocating(tiny_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("weights were read although the model cannot fit")

    monkeypatch.setattr(Phi3ForCausalLM, "from_pretrained", boom)
    with pytest.raises(phi4lab.InsufficientMemoryError, match="Nothing was allocated"):
        phi4lab.load(tiny_dir, memory_budget_bytes=1000)
    with pytest.raises(phi4lab.InsufficientMemoryError):
        phi4lab.load(config=C.scaled(), memory_budget_bytes=1000)


def test_phi4_tiny_missing_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "DATA_DIR", tmp_path)
    with pytest.raises(phi4lab.WeightsNotFoundError, match="scaled"):
        phi4lab.load()


# ---- microsoft/phi-4 through a local Hugging Face cache (no network anywhere) ----


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def fake_snapshot(cache, files_from=None, config=None):
    commit = "0" * 40
    repo = cache / "models--microsoft--phi-4"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    if files_from is not None:
        for f in files_from.iterdir():
            shutil.copy(f, snap)
    if config is not None:
        (snap / "config.json").write_text(json.dumps(config))
    return snap


def test_phi4_offline_without_weights_explains_how_to_get_them(hf_cache):
    with pytest.raises(phi4lab.WeightsNotFoundError, match="huggingface-cli download microsoft/phi-4 --revision abc"):
        phi4lab.load("microsoft/phi-4", revision="abc")


def test_phi4_that_cannot_fit_is_refused_from_its_config(hf_cache):
    fake_snapshot(hf_cache, config=C.PHI4_CONFIG_JSON)
    with pytest.raises(phi4lab.InsufficientMemoryError, match="14,659,507,200 parameters"):
        phi4lab.load("microsoft/phi-4", memory_budget_bytes=24 * 2**30)


def test_phi4_loads_from_the_local_cache(hf_cache, tiny_dir, capsys):
    fake_snapshot(hf_cache, files_from=tiny_dir)
    model = phi4lab.load("microsoft/phi-4")
    # without revision= the hub's moving main is followed: the commit it resolved to is kept and said
    assert model.revision == "0" * 40
    assert f"microsoft/phi-4 at commit {'0' * 40} (the hub's moving `main`; pass revision='{'0' * 40}'" in capsys.readouterr().out
    assert phi4lab.load("phi4-tiny").revision is None
    reference = Phi3ForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    tokens = model.to_tokens("Phi-4 is a 14B model")
    with torch.no_grad():
        assert (model(tokens) - reference(tokens).logits).abs().max() < 1e-4


def test_save_and_load_round_trip(tmp_path):
    model = phi4lab.load(config=C.scaled(d_model=32, n_layers=2, n_kv_heads=1), seed=4)
    phi4lab.save(model, tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    again = phi4lab.load(tmp_path)
    reference = Phi3ForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    tokens = model.to_tokens("round trip")
    with torch.no_grad():
        assert torch.equal(again(tokens), model(tokens))
        assert (reference(tokens).logits - model(tokens)).abs().max() < 1e-4
    assert again.tokenizer("Hello World")["input_ids"] == [9906, 4435]
    assert again.tokenizer.eos_token == "<|im_end|>" and again.cfg.default_prepend_bos is False


def test_the_shipped_phi4_tiny_is_checked_byte_for_byte(tmp_path, monkeypatch):
    from phi4lab.model.integrity import sha256_file
    shipped = loading.DATA_DIR / loading.TINY
    assert {f: sha256_file(shipped / f) for f in loading.TINY_SHA256} == loading.TINY_SHA256
    copy = tmp_path / loading.TINY
    shutil.copytree(shipped, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01                     # one flipped bit in the middle of the weights
    (copy / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(loading, "DATA_DIR", tmp_path)
    with pytest.raises(phi4lab.CheckpointError, match=r"model.safetensors has sha256 .* restore data/phi4-tiny"):
        phi4lab.load("phi4-tiny")
