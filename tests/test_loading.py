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


def phi4lab_error(name):
    with pytest.raises(Exception) as err:
        phi4lab.load(name)
    return err.value


def test_unknown_name_lists_valid_names(hf_cache):
    for name in ("microsoft/phi-5", "phi-4"):          # a repository id not in the cache, and a bare name
        with pytest.raises(phi4lab.UnknownModelError) as err:
            phi4lab.load(name)
        message = str(err.value)
        assert "'microsoft/phi-4'" in message and "'phi4-tiny'" in message and "Did you mean '" in message
    assert "Did you mean 'microsoft/phi-4'" in str(phi4lab_error("microsoft/phi-5"))


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


def fake_snapshot(cache, files_from=None, config=None, repo="microsoft/phi-4", commit="0" * 40, ref="main"):
    """A snapshot laid out as huggingface_hub lays out its cache: refs/<branch> names the commit folder."""
    owner, name = repo.split("/")
    root = cache / f"models--{owner}--{name}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "refs").mkdir(exist_ok=True)
    if ref is not None:
        (root / "refs" / ref).write_text(commit)
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


def test_random_full_size_phi4_is_built_on_its_device_in_its_dtype():
    """On an accelerator the random weights are made there, in the asked dtype: a full-size Phi-4 never
    passes through host memory as 58.6 GB of fp32. The meta device (shapes, no memory) stands in for a GPU."""
    model = loading.random_hf_model(phi4lab.config.PHI4, device="meta", dtype=torch.bfloat16)
    tensors = list(model.parameters()) + list(model.buffers())
    assert {t.device.type for t in tensors} == {"meta"}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in model.parameters()) == phi4lab.config.count_parameters(phi4lab.config.PHI4)
    assert model.config._attn_implementation == "eager"


# ---- any Phi-3-architecture repository in the cache, by its id ----


def word_tokenizer(words):
    """A tokenizer of its own (not Phi-4's): one id per word, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<|end|>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|end|>")
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    return tok


def test_phi4_mini_loads_by_id_with_its_own_tokenizer(hf_cache, tmp_path):
    """Phi-4-mini's settings on a tiny twin: partial rotary 0.75, tied embeddings, a vocabulary not Phi-4's."""
    cfg = C.scaled(d_model=64, n_layers=2, vocab_size=300, partial_rotary_factor=0.75, tie_word_embeddings=True)
    snap = fake_snapshot(hf_cache, repo="microsoft/Phi-4-mini-instruct")
    loading.random_hf_model(cfg, seed=5).save_pretrained(snap)
    word_tokenizer(["the", "cat", "sat", "on", "mat"]).save_pretrained(snap)
    model = phi4lab.load("microsoft/Phi-4-mini-instruct")
    assert model.revision == "0" * 40
    assert model.to_tokens("the cat sat").tolist() == [[2, 3, 4]], "its own tokenizer, not Phi-4's"
    assert "<|user|>hi<|end|>" == model.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                                       tokenize=False)
    reference = Phi3ForCausalLM.from_pretrained(snap, attn_implementation="eager").eval()
    tokens = torch.randint(0, 300, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens).logits, atol=1e-4, rtol=1e-4)
    from phi4lab.scratch.architecture import Phi4
    with torch.no_grad():
        torch.testing.assert_close(Phi4.from_hf(model)(tokens), reference(tokens).logits, atol=1e-4, rtol=1e-4)


def test_a_pinned_revision_loads_that_commit_and_its_chat_template(hf_cache, tiny_dir, capsys):
    """Phi-4-reasoning shares Phi-4's shape and ships its own chat template; revision= picks the commit."""
    repo, old, new = "microsoft/Phi-4-reasoning", "1" * 40, "2" * 40
    phi4_tokenizer().save_pretrained(fake_snapshot(hf_cache, files_from=tiny_dir, repo=repo, commit=old, ref=None))
    latest = fake_snapshot(hf_cache, files_from=tiny_dir, repo=repo, commit=new)
    tok = phi4_tokenizer()
    tok.chat_template = "{% for m in messages %}<think>{{ m['content'] }}{% endfor %}"
    tok.save_pretrained(latest)
    tip = phi4lab.load(repo)
    pinned = phi4lab.load(repo, revision=old)
    assert (tip.revision, pinned.revision) == (new, old)
    assert f"{repo} at commit {old} (revision={old!r})" in capsys.readouterr().out
    chat = [{"role": "user", "content": "2+2?"}]
    assert tip.tokenizer.apply_chat_template(chat, tokenize=False) == "<think>2+2?"
    assert pinned.tokenizer.chat_template != tip.tokenizer.chat_template


def test_a_repository_is_preflighted_from_its_config_before_weights(hf_cache):
    fake_snapshot(hf_cache, repo="someone/phi4-finetune", config=C.PHI4_CONFIG_JSON)     # a config, no weights
    with pytest.raises(phi4lab.InsufficientMemoryError, match="someone/phi4-finetune"):
        phi4lab.load("someone/phi4-finetune", memory_budget_bytes=24 * 2**30)


def test_a_missing_repository_names_what_the_cache_holds(hf_cache, tiny_dir):
    fake_snapshot(hf_cache, files_from=tiny_dir, repo="someone/phi4-finetune")
    with pytest.raises(phi4lab.UnknownModelError) as err:
        phi4lab.load("someone/phi4-finetuned")
    assert "Did you mean 'someone/phi4-finetune'" in str(err.value)
    assert "The cache holds: someone/phi4-finetune" in str(err.value)
    with pytest.raises(phi4lab.WeightsNotFoundError, match="huggingface-cli download microsoft/Phi-4-reasoning"):
        phi4lab.load("microsoft/Phi-4-reasoning")
    not_phi3 = dict(C.PHI4_CONFIG_JSON, model_type="llama", architectures=["LlamaForCausalLM"])
    fake_snapshot(hf_cache, repo="someone/llama", config=not_phi3)
    with pytest.raises(phi4lab.CheckpointError, match="LlamaForCausalLM"):
        phi4lab.load("someone/llama")


# ---- a model split over devices (device_map), on a CPU: part in memory, part offloaded to disk ----


def split_map(n_layers, on_disk):
    """An explicit accelerate map: the embedding and some blocks in memory, the other blocks and lm_head on disk."""
    placed = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "disk"}
    placed.update({f"model.layers.{i}": "disk" if i in on_disk else "cpu" for i in range(n_layers)})
    return placed


@pytest.fixture(scope="module")
def whole_and_split(tmp_path_factory):
    path = save_checkpoint(C.scaled(d_model=64, n_layers=4), tmp_path_factory.mktemp("split"), seed=2)
    offload = tmp_path_factory.mktemp("offload")
    return path, phi4lab.load(path), phi4lab.load(path, device_map=split_map(4, {2, 3}), offload_folder=offload)


def test_a_split_model_computes_what_the_whole_one_does(whole_and_split):
    _, whole, split = whole_and_split
    assert set(split.original_model.hf_device_map.values()) == {"cpu", "disk"}
    # Offloaded: the fused weights are on the meta device, read from disk as the block runs. (TransformerLens also
    # keeps its own split copies of Q, K, V, gate and up in memory; on a real split that costs RAM, see README.)
    fused = {n: p.device.type for n, p in split.original_model.model.layers[3].named_parameters()}
    assert fused["_original_component.self_attn.qkv._original_component.weight"] == "meta"
    assert fused["_original_component.mlp._original_component.gate_up_proj.weight"] == "meta"
    x = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(split(x), whole(x))
    from phi4lab.analysis.interventions import ablate_heads
    assert torch.equal(ablate_heads(split, x, [(1, 2), (3, 0)]), ablate_heads(whole, x, [(1, 2), (3, 0)]))


def test_cache_plans_are_checked_per_device_on_a_split_model(whole_and_split, monkeypatch):
    from phi4lab.analysis import cache_plan as P
    from phi4lab.model import bridge as B
    _, whole, split = whole_and_split
    x = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(1))
    plan = P.plan_cache(split, 12, 2)
    assert P.bytes_per_device(split, plan) == {torch.device("cpu"): plan.total_bytes}   # disk blocks run on the CPU
    _, got = P.run_with_plan(split, x, plan)
    _, expected = whole.run_with_cache(x)
    assert all(torch.equal(got[n], expected[n]) for n in plan.names)
    # Two GPUs, as accelerate would name them: blocks 0-1 and the embedding on cuda:0, blocks 2-3 and lm_head on cuda:1.
    def placed(model, layer=None, *, part="layer"):
        first = part == "embed" or part == "layer" and layer < 2
        return torch.device("cuda:0" if first else "cuda:1")
    monkeypatch.setattr(B, "execution_device", placed)
    per_device = P.bytes_per_device(split, plan)
    assert sum(per_device.values()) == plan.total_bytes
    later = sum(b for n, b in plan.bytes_per_hook.items() if n.startswith(("blocks.2.", "blocks.3.")))
    assert per_device[torch.device("cuda:1")] > later > 0
    budgets = {"cuda:0": per_device[torch.device("cuda:0")], "cuda:1": per_device[torch.device("cuda:1")] - 1}
    with pytest.raises(phi4lab.InsufficientMemoryError, match="on cuda:1"):
        P.run_with_plan(split, x, plan, budget_bytes=budgets)


def test_device_map_auto_is_preflighted_against_max_memory(whole_and_split):
    path, whole, _ = whole_and_split
    with pytest.raises(phi4lab.InsufficientMemoryError, match="max_memory's devices"):
        phi4lab.load(path, device_map="auto", max_memory={"cpu": "1MB"})
    model = phi4lab.load(path, device_map="auto", max_memory={"cpu": "1GiB"})
    x = torch.randint(0, 1000, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(x), whole(x))
    with pytest.raises(ValueError, match="device_map='auto' too"):
        phi4lab.load(path, max_memory={"cpu": "1GiB"})
    with pytest.raises(ValueError, match="random model"):
        phi4lab.load(config=C.scaled(), device_map="auto")


def test_a_placement_mixing_a_gpu_with_cpu_or_disk_is_refused_before_loading(whole_and_split):
    """TransformerLens 4.3 refuses such a model after it has loaded; phi4lab says so before reading a weight."""
    path, _, _ = whole_and_split
    mixed = dict(split_map(4, {3}), **{"model.layers.0": 0, "model.layers.1": 0})
    with pytest.raises(ValueError, match="mixes a GPU with the CPU or disk"):
        phi4lab.load(path, device_map=mixed)
    with pytest.raises(ValueError, match="mixes a GPU with the CPU or disk"):
        phi4lab.load(path, device_map="auto", max_memory={0: "20GiB", "cpu": "64GiB"})


def test_per_device_budgets_take_accelerate_s_keys(whole_and_split, monkeypatch):
    from phi4lab.analysis import cache_plan as P
    from phi4lab.model import bridge as B
    _, _, split = whole_and_split
    x = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(3))
    plan = P.plan_cache(split, 6, 1)
    monkeypatch.setattr(B, "execution_device", lambda model, layer=None, *, part="layer": torch.device("cuda", 1))
    with pytest.raises(phi4lab.InsufficientMemoryError, match="on cuda:1"):
        P.run_with_plan(split, x, plan, budget_bytes={1: plan.total_bytes - 1, "cuda:0": 2**40})
    with pytest.raises(ValueError, match="names no device"):
        P.run_with_plan(split, x, plan, budget_bytes={"gpu-one": 2**40})
