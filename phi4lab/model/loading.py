"""One entry point for every Phi-4-architecture model: `phi4lab.load`.

It returns a TransformerLens `TransformerBridge`: the Hugging Face `Phi3ForCausalLM`
itself, wrapped so that every activation has a stable hook name
(`blocks.3.attn.hook_pattern`, `blocks.3.hook_resid_post`, ...) and `run_with_cache`,
`run_with_hooks`, `to_tokens` and friends work as in TransformerLens. Weights are
not "processed" (no folded norms, no centred unembedding), so logits are Hugging
Face's logits; attention is forced to the eager implementation so that the
attention pattern exists to be hooked.

Three kinds of model load through it:

* `load("microsoft/phi-4", revision=...)`: the real 14.7B model from the Hugging Face
  hub or a local HF cache. Its config is read first (a few KB) and a memory pre-flight
  refuses a model that cannot fit before a single weight is read. Any other
  Phi-3-architecture repository loads by its id the same way (`microsoft/Phi-4-reasoning`,
  `microsoft/Phi-4-mini-instruct`, a community fine-tune), with its own tokenizer and
  chat template; the commit loaded is kept as ``model.revision``.
* `load("path/to/dir")`: any local Phi-3-architecture checkpoint, from safetensors
  only. Pickle files (`pytorch_model.bin`) can run arbitrary code when loaded, so
  they are refused. The file's tensor names and shapes are checked against the
  config before anything is allocated.
* `load(config=phi4lab.config.scaled(...), seed=0)`: a randomly initialised twin
  with Phi-4's architecture, for tests and exercises. Same seed, same weights.

`load()` with no arguments, or `load("phi4-tiny")`, loads the small *trained* twin
that ships in `data/phi4-tiny/`.

Every kind runs one pipeline (`resolve`, then `materialise`): the source is resolved to a
small `Source` (its config, a label, the advice to give when it does not fit), the memory
pre-flight runs from that config, and only then are weights fetched, checked and built.

Tokenization follows Hugging Face's Phi-4 tokenizer: no BOS is prepended by
default (`model.cfg.default_prepend_bos` is False). See phi4lab.model.tokenizer.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from transformers import Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from phi4lab.model import config as phi4config
from phi4lab.model.bridge import TransformerBridge, bridge, hf_state_dict, is_bridge, unwrap
from phi4lab.model.integrity import check_sha256
from phi4lab.model.memory import preflight
from phi4lab.model.tokenizer import VOCAB_SIZE, phi4_tokenizer
from phi4lab.paths import DATA_DIR

HUB_PHI4 = "microsoft/phi-4"
TINY = "phi4-tiny"
# The shipped phi4-tiny, byte for byte (issue: corrupted weights used to load silently). A deliberate
# rebuild into data/phi4-tiny changes these: `sha256sum data/phi4-tiny/{model.safetensors,config.json,
# tokenizer.json}` gives the new values.
TINY_SHA256 = {
    "model.safetensors": "6e8163a2dc945fd4251d3b1783fcf3d0349dad501d2afc86f29a40168e9dcdb0",
    "config.json": "dbbe527d58f9525562bc1bfc7e2c0e8a9cacb5efe330018f86809cfec78cb793",
    "tokenizer.json": "7320447bfaa7d12e160064ca47c4fd399bd51853900814281790fd9e647e870e",
}
KNOWN_MODELS = {
    HUB_PHI4: "the real 14.7B Phi-4, from the Hugging Face hub or a local HF cache (needs ~30 GB in bf16)",
    "microsoft/Phi-4-reasoning": "Phi-4 fine-tuned to reason step by step (same shape, its own chat template)",
    "microsoft/Phi-4-reasoning-plus": "Phi-4-reasoning with further reinforcement learning (same shape)",
    "microsoft/Phi-4-mini-instruct": "the 3.8B Phi-4-mini (partial rotary, tied embeddings, a 200K vocabulary)",
    TINY: "the small trained Phi-4-architecture twin shipped in data/phi4-tiny/ (runs on a laptop CPU)",
}
# A Hugging Face repository id: owner/name (https://huggingface.co/docs/hub/repositories).
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class UnknownModelError(ValueError):
    """The name is neither a known model nor an existing directory."""


class CheckpointError(ValueError):
    """A local checkpoint is missing, corrupt, unsafe, or not a Phi-3-architecture model."""


class WeightsNotFoundError(FileNotFoundError):
    """The model is known but its weights are not on this machine and cannot be downloaded."""


def load(
    name_or_path: str | os.PathLike | None = None,
    *,
    config: Phi3Config | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    seed: int = 0,
    device_map: str | dict | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
    memory_budget_bytes: int | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> TransformerBridge:
    """Load a Phi-4-architecture model as a TransformerLens TransformerBridge.

    Args:
        name_or_path: "phi4-tiny" (the default), "microsoft/phi-4", or a local directory.
        config: build a randomly initialised model from this config instead (see
            phi4lab.config.scaled); mutually exclusive with name_or_path.
        dtype: parameter dtype. fp32 is the right default on a CPU; bf16 for Phi-4 on a GPU.
        device: where to put the model. Ignored when device_map is given.
        revision: a hub commit, branch or tag to pin for "microsoft/phi-4". Either way the
            commit loaded is printed and kept as ``model.revision``.
        seed: seed for the random initialisation of a config-built model. On a GPU the
            weights are drawn there, from its random stream: the same seed gives other
            weights than on the CPU.
        device_map: passed to Hugging Face / accelerate to spread a checkpoint over several
            devices: "auto", or an explicit {module name: device} map such as
            {"model.layers.0": 0, ..., "lm_head": 1}. On a machine with GPUs, "auto" uses the
            GPUs only: TransformerLens 4.3's bridge refuses a model split between a GPU and the
            CPU or disk, so such a map is refused here, before anything loads. On a CPU-only
            machine the CPU and disk (offload_folder) can share a model. Hooks, caches and
            cache plans work on the split model (a plan is checked per device).
        tokenizer: override the tokenizer (needed for a random model whose vocabulary
            is not Phi-4's 100,352 ids).
        memory_budget_bytes: refuse models whose weights exceed this; defaults to a safe
            share of the device's free memory (with a device_map: of all the devices it may use).
        max_memory: with device_map, accelerate's per-device budget, e.g. {0: "70GiB", 1: "70GiB",
            "cpu": "100GiB"}; the weights must fit in its sum.
        offload_folder: with device_map, where accelerate may put what fits on no device ("disk"
            in the map). Nothing is refused for size then: the disk holds the rest, slowly.
    """
    source = resolve(name_or_path, config=config, revision=revision, seed=seed)
    return materialise(source, dtype=dtype, device=device, device_map=device_map, tokenizer=tokenizer,
                       memory_budget_bytes=memory_budget_bytes, max_memory=max_memory,
                       offload_folder=offload_folder)


# --------------------------------------------------------------------------------------
# One pipeline: resolve a source to a small description, check it fits, then build it
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from, known before a single weight is read.

    Resolving costs at most a config file (a few KB, from the hub for Phi-4); everything
    a memory pre-flight needs is here, so a model that cannot fit is refused before its
    weights are downloaded, validated or allocated.
    """

    config: Phi3Config
    label: str                          # names the model in messages: "phi4-tiny", a path, a repo
    advice: str                         # what to try when it does not fit
    folder: Path | None = None          # a checkpoint folder; None builds random weights
    seed: int = 0                       # for random weights
    repo: str | None = None             # a hub repository whose weights are still to be fetched
    revision: str | None = None         # the hub revision asked for (None follows `main`)

    @property
    def what(self) -> str:
        if self.folder is None and self.repo is None:
            return f"a random {phi4config.describe(self.config)} model"
        return f"{self.label} ({phi4config.count_parameters(self.config):,} parameters)"


_ADVICE_RANDOM = "Use a smaller config (phi4lab.config.scaled(d_model=..., n_layers=...))."
_ADVICE_LOCAL = "Try dtype=torch.bfloat16 on a GPU, or a machine with more memory."
_ADVICE_HUB = ("Load it in bf16 (dtype=torch.bfloat16) on a GPU that holds the weights with room to spare "
               "(Phi-4: 29.3 GB, so 32 GB or more), or spread it with device_map='auto' over several.")


def resolve(name_or_path=None, *, config: Phi3Config | None = None, revision: str | None = None,
            seed: int = 0) -> Source:
    """Turn what `load` was given into a `Source`, with a clear error for anything unknown."""
    if config is not None:
        if name_or_path is not None:
            raise ValueError("pass either name_or_path or config=, not both")
        if not isinstance(config, Phi3Config):
            raise TypeError("config must be a transformers.Phi3Config (see phi4lab.config.scaled), "
                            f"got {type(config).__name__}")
        return Source(config, label=f"phi4lab-random-seed{seed}", advice=_ADVICE_RANDOM, seed=seed)
    name = TINY if name_or_path is None else os.fspath(name_or_path)
    if name == TINY:
        return _tiny_source()
    if name in KNOWN_MODELS:
        return _hub_source(name, revision)
    path = Path(name).expanduser()
    if path.is_dir():
        return Source(read_config(path), label=str(path), advice=_ADVICE_LOCAL, folder=path)
    if _REPO_ID.fullmatch(name):
        return _hub_source(name, revision)
    close = difflib.get_close_matches(name, list(KNOWN_MODELS), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = "; ".join(f"{k!r}: {v}" for k, v in KNOWN_MODELS.items())
    raise UnknownModelError(
        f"unknown model {name!r} (and no such directory).{hint} Valid names: {listing}. "
        "Or pass the id of a Phi-3-architecture repository in the local Hugging Face cache (owner/name), "
        "the path of a local checkpoint, or config=phi4lab.config.scaled(...)."
    )


def materialise(source: Source, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                device_map=None, tokenizer: PreTrainedTokenizerFast | None = None,
                memory_budget_bytes: int | None = None, max_memory: dict | None = None,
                offload_folder=None) -> TransformerBridge:
    """Pre-flight, fetch, validate, build and bridge: the same steps, in this order, for every source."""
    cfg = source.config
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise ValueError("max_memory= and offload_folder= place a model with device_map=; pass device_map='auto' too")
    if device_map is not None and source.folder is None and source.repo is None:
        raise ValueError("device_map= places a checkpoint's weights; a random model is built on one device= "
                         "(save it with phi4lab.save and load that folder to split it)")
    if device_map is not None:
        _refuse_mixed_placement(device_map, max_memory)
        if device_map == "auto" and max_memory is None and torch.cuda.is_available():
            max_memory = _gpu_memory()                  # GPUs only: the bridge cannot mix in the CPU
    # 1. Memory, from the config's arithmetic alone. With a device_map, the devices it may use
    #    together must hold the weights.
    where, budget = device, memory_budget_bytes
    if device_map is not None:
        where, placed_budget = _placement_budget(max_memory, offload_folder)
        budget = memory_budget_bytes if memory_budget_bytes is not None else placed_budget
    preflight(phi4config.weight_bytes(cfg, dtype), what=f"{source.what} in {dtype}", device=where,
              budget_bytes=budget, advice=source.advice)
    # 2. The weights' folder: a hub download happens only now, once the model is known to fit.
    folder = _fetch(source) if source.repo is not None else source.folder
    # 3. Build. Loading must not consume the caller's random stream (notebooks seed once at the top),
    #    so the one fork is here, around everything that may draw from it.
    with _fork_rng(device):
        if folder is None:
            torch.manual_seed(source.seed)
            model = _random_weights(cfg, device=device, dtype=dtype)
            tokenizer = tokenizer or _tokenizer_for(cfg, None)
            name = source.label
        else:
            validate_checkpoint(folder, cfg)     # names and shapes, from the files' headers
            if tokenizer is None and source.repo == HUB_PHI4:
                tokenizer = phi4_tokenizer()     # Phi-4's, exactly (see phi4lab.model.tokenizer)
            tokenizer = tokenizer or _tokenizer_for(cfg, folder)
            model = _from_pretrained(folder, cfg, dtype, device, device_map, max_memory, offload_folder)
            name = str(folder)
        model = bridge(model, tokenizer, name)     # the bridge draws from the stream too
    if source.repo is not None:
        _record_revision(model, source, folder)
    return model


def _tiny_source() -> Source:
    path = DATA_DIR / TINY
    if not (path / "config.json").exists():
        raise WeightsNotFoundError(
            f"phi4-tiny is not in {path}. It ships with the repository in data/phi4-tiny; if that folder "
            "is gone, restore it from git, or rebuild it with `phi4lab build-tiny --out data/phi4-tiny` "
            "(about an hour on 2 CPU cores). Meanwhile, a random twin works: "
            "phi4lab.load(config=phi4lab.config.scaled())."
        )
    for file, expected in TINY_SHA256.items():
        check_sha256(path / file, expected, CheckpointError, "the phi4-tiny that ships with phi4lab",
                     "restore data/phi4-tiny from git (git checkout -- data/phi4-tiny), or, if you rebuilt it on "
                     "purpose, update TINY_SHA256 in phi4lab/model/loading.py")
    return Source(read_config(path), label=TINY, advice=_ADVICE_LOCAL, folder=path)


# --------------------------------------------------------------------------------------
# Random twins
# --------------------------------------------------------------------------------------


def random_hf_model(cfg: Phi3Config, seed: int = 0, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Phi3ForCausalLM:
    """A seeded, randomly initialised `Phi3ForCausalLM` with eager attention, in eval mode.

    On a device other than the CPU it is built there, in `dtype` (see _random_weights).
    """
    with _fork_rng(device):                  # seed locally; leave the caller's stream alone
        torch.manual_seed(seed)
        return _random_weights(cfg, device=device, dtype=dtype)


def _random_weights(cfg: Phi3Config, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Phi3ForCausalLM:
    """Weights drawn from the current random stream (the caller seeds and forks it).

    On the CPU the model is drawn in fp32 and then cast, so a seed gives the same weights
    in every dtype. On an accelerator it is built there, in `dtype`, from the start: a
    full-size Phi-4 never passes through host memory (58.6 GB in fp32), and a seed gives
    the accelerator's random stream, not the CPU's.
    """
    cfg = copy.deepcopy(cfg)
    cfg._attn_implementation = "eager"
    if torch.device(device).type == "cpu":
        return Phi3ForCausalLM(cfg).eval().to(dtype)
    with torch.device(device):
        return Phi3ForCausalLM._from_config(cfg, dtype=dtype).eval()


# --------------------------------------------------------------------------------------
# Local checkpoints
# --------------------------------------------------------------------------------------


def read_config(path: Path) -> Phi3Config:
    """Read and validate `config.json` of a local checkpoint directory."""
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{path} has no config.json; is it a Hugging Face checkpoint directory?")
    _check_inside(path, cfg_file)
    try:
        raw = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{cfg_file} is not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}); "
                              "a config.json is JSON in UTF-8: is the file damaged, or not a config?") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_file} holds a JSON {type(raw).__name__}, not an object of settings "
                              '({"model_type": "phi3", "hidden_size": ..., ...})')
    archs = raw.get("architectures") or []
    if not isinstance(archs, list):
        archs = [str(archs)]
    if raw.get("model_type") != "phi3" or (archs and "Phi3ForCausalLM" not in archs):
        found = ", ".join(archs) or raw.get("model_type") or "unknown"
        raise CheckpointError(
            f"{path} holds a {found} model (model_type {raw.get('model_type')!r}); phi4lab loads "
            "Phi-3-architecture checkpoints (Phi3ForCausalLM, model_type 'phi3'), as Phi-4 is."
        )
    try:
        cfg = Phi3Config.from_pretrained(path)
    except (ValueError, TypeError, ZeroDivisionError, KeyError, StrictDataclassError) as err:
        raise CheckpointError(f"{cfg_file} has values Phi3Config cannot take: {err}") from None
    check_config_sizes(cfg, str(cfg_file))
    return cfg


# The sizes a Phi-3-architecture config.json must state as positive integers. They are checked,
# and the weights' bytes counted, from the config's arithmetic alone: nothing is built before that,
# not even on the meta device (building 100,000 empty layers takes minutes and gigabytes).
CONFIG_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings")
# The longest context phi4lab accepts: 2**21 tokens, 16 times Phi-3's longest (131,072).
MAX_CONTEXT = 2**21


def check_config_sizes(cfg: Phi3Config, where: str) -> None:
    """Refuse sizes no model can have (zero, negative, fractional, absurdly long contexts) with the file named."""
    problems = []
    for name in CONFIG_SIZES:
        value = getattr(cfg, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(f"{name} = {value!r} (must be a positive integer)")
    if not problems:
        heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
        if heads % kv:
            problems.append(f"num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv}")
        explicit = getattr(cfg, "head_dim", None)
        if explicit is None and cfg.hidden_size % heads:
            problems.append(f"hidden_size = {cfg.hidden_size} is not a multiple of num_attention_heads = {heads}")
        elif explicit is not None and (isinstance(explicit, bool) or not isinstance(explicit, int) or explicit <= 0):
            problems.append(f"head_dim = {explicit!r} (must be a positive integer)")
        if cfg.max_position_embeddings > MAX_CONTEXT:
            problems.append(f"max_position_embeddings = {cfg.max_position_embeddings:,} is longer than phi4lab "
                            f"supports ({MAX_CONTEXT:,} tokens)")
    if problems:
        raise CheckpointError(f"{where} describes no model phi4lab can build: " + "; ".join(problems))


def _check_inside(folder: Path, file: Path) -> None:
    """Refuse a file of a checkpoint that resolves outside its folder (a symlink to /etc/passwd, say).

    One exception is the Hugging Face cache's own layout: a snapshot folder
    ``models--org--name/snapshots/<commit>/`` links each file to ``../../blobs/<hash>``.
    """
    real, home = file.resolve(), folder.resolve()
    allowed = [home]
    if folder.parent.name == "snapshots":
        allowed.append(folder.parent.parent.resolve() / "blobs")
    if not any(real == a or a in real.parents for a in allowed):
        raise CheckpointError(f"{file} points outside {folder} (to {real}); phi4lab reads a checkpoint's files "
                              "from its own folder only. Copy the file in if you trust it.")


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def _safetensors_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if files:
        for file in files:
            _check_inside(path, file)
        return files
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickles:
        raise CheckpointError(
            f"{path} holds only pickle weights ({', '.join(pickles)}). Loading a pickle can run arbitrary "
            "code, so phi4lab loads safetensors only. Convert it where you trust the file: "
            "Phi3ForCausalLM.from_pretrained(dir).save_pretrained(new_dir)."
        )
    raise CheckpointError(f"{path} has no *.safetensors weight file")


def validate_checkpoint(path: Path, cfg: Phi3Config) -> None:
    """Check every tensor's name and shape against the config, reading headers only."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Phi3ForCausalLM(cfg).state_dict().items()}
    found: dict[str, tuple[int, ...]] = {}
    for file in _safetensors_files(path):
        try:
            with safe_open(file, framework="pt") as f:
                not_float = {}
                for key in f.keys():
                    piece = f.get_slice(key)
                    found[key] = tuple(piece.get_shape())
                    if piece.get_dtype() not in _FLOAT_DTYPES:
                        not_float[key] = piece.get_dtype()
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file} is not a readable safetensors file ({err}); it may be truncated or corrupt") from None
        if not_float:
            key = next(iter(not_float))
            raise CheckpointError(
                f"{file} holds {len(not_float)} tensor(s) that are not floating point, e.g. {key} "
                f"({not_float[key]}). Loading would silently cast them to floats, and quantised weights "
                "need their scales to mean anything; phi4lab loads fp32, fp16 and bf16 weights. Dequantise "
                "the checkpoint where it was made.")
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        found.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatch(es), e.g. {k}: file {found[k]} vs config {expected[k]}")
    if problems:
        raise CheckpointError(f"{path} does not match its config.json: " + "; ".join(problems))


def _tokenizer_for(cfg: Phi3Config, path: Path | None) -> PreTrainedTokenizerFast:
    if path is not None and (path / "tokenizer.json").exists():
        files = [path / f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                    "chat_template.jinja") if (path / f).exists()]
        for file in files:
            _check_inside(path, file)
        try:
            return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
        except Exception as err:       # the tokenizers and transformers libraries raise many kinds
            raise CheckpointError(f"the tokenizer in {path} ({', '.join(f.name for f in files)}) cannot be "
                                  f"read: {type(err).__name__}: {str(err)[:200]}. Restore the files, or pass "
                                  "tokenizer= explicitly") from None
    if cfg.vocab_size == VOCAB_SIZE:
        return phi4_tokenizer()
    raise CheckpointError(
        f"no tokenizer.json found and the vocabulary ({cfg.vocab_size}) is not Phi-4's ({VOCAB_SIZE}); "
        "pass tokenizer= explicitly"
    )


def _fork_rng(device) -> object:
    """Fork the CPU's random stream, and a GPU's when the model is built there."""
    device = torch.device(device)
    gpus = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=gpus)


def _is_gpu(target) -> bool:
    return isinstance(target, int) and not isinstance(target, bool) or str(target).lower().startswith("cuda")


def _refuse_mixed_placement(device_map, max_memory) -> None:
    """TransformerLens 4.3 refuses to bridge a model split between a GPU and the CPU or disk: say so first."""
    targets = list(device_map.values()) if isinstance(device_map, dict) else []
    targets += list(max_memory or {})
    gpu = any(_is_gpu(t) for t in targets)
    offload = any(str(t).lower() in ("cpu", "disk") for t in targets)
    if gpu and offload:
        raise ValueError(
            "this placement mixes a GPU with the CPU or disk; TransformerLens 4.3's bridge refuses such a "
            "model after it has loaded, so it is refused now. Put every module on a GPU (device_map='auto' "
            "with max_memory naming GPUs only, or an all-GPU map), or, without a GPU, split between 'cpu' and "
            "'disk'.")


def _gpu_memory() -> dict:
    """accelerate's max_memory for "auto" over the GPUs alone: a safe share of each one's free memory."""
    from phi4lab.model.memory import DEFAULT_SAFE_SHARE, available_bytes
    return {i: int(DEFAULT_SAFE_SHARE * available_bytes(f"cuda:{i}")) for i in range(torch.cuda.device_count())}


def _placement_budget(max_memory: dict | None, offload_folder) -> tuple[str, int]:
    """(where, bytes) a device_map may fill: max_memory's sum, or the free memory of every GPU and the CPU."""
    from accelerate.utils import convert_file_size_to_int

    from phi4lab.model.memory import DEFAULT_SAFE_SHARE, available_bytes
    if offload_folder is not None:
        return "the devices and the offload folder", 2**63 - 1
    if max_memory:
        on = {str(k): v if isinstance(v, int) else convert_file_size_to_int(v) for k, v in max_memory.items()
              if str(k) != "disk"}
        return "max_memory's devices (" + ", ".join(on) + ")", sum(on.values())
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    return ", ".join(devices), int(DEFAULT_SAFE_SHARE * sum(available_bytes(d) for d in devices))


def _from_pretrained(folder: Path, cfg: Phi3Config, dtype, device, device_map, max_memory=None,
                     offload_folder=None) -> Phi3ForCausalLM:
    """Hugging Face's loader, held to safetensors, eager attention and no remote code."""
    kwargs = dict(dtype=dtype, attn_implementation="eager", use_safetensors=True, trust_remote_code=False)
    if device_map is not None:
        kwargs["device_map"] = device_map
        if max_memory is not None:
            kwargs["max_memory"] = max_memory
        if offload_folder is not None:
            kwargs["offload_folder"] = os.fspath(offload_folder)
    # Hugging Face's progress bar helps for 29 GB of shards, and is noise for a small model.
    quiet = phi4config.weight_bytes(cfg, dtype) < 2**30 and hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        model = Phi3ForCausalLM.from_pretrained(folder, **kwargs).eval()
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    return model if device_map is not None else model.to(device)


# --------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------

_GET_WEIGHTS = (
    "To get the weights{size}, on a machine with network access run\n"
    "    huggingface-cli download {repo}{rev}\n"
    "then copy the Hugging Face cache (~/.cache/huggingface) here, or pass the snapshot directory "
    "to phi4lab.load(path)."
)


def _get_weights(repo: str, revision: str | None) -> str:
    return _GET_WEIGHTS.format(repo=repo, rev=f" --revision {revision}" if revision else "",
                               size=" (about 29 GB)" if repo == HUB_PHI4 else "")


def cached_repos() -> list[str]:
    """The model repositories in the local Hugging Face cache (their ids), for messages and discovery."""
    from huggingface_hub import constants, scan_cache_dir

    try:
        info = scan_cache_dir(constants.HF_HUB_CACHE)       # read now: HF_HUB_CACHE may be set after import
    except Exception:        # no cache folder yet, or one that cannot be read: nothing cached
        return []
    return sorted(r.repo_id for r in info.repos if r.repo_type == "model")


def _not_cached(repo: str, revision: str | None, err: Exception) -> Exception:
    """Known but absent: WeightsNotFoundError. Neither known nor cached: UnknownModelError, with what is there."""
    cached = cached_repos()
    close = difflib.get_close_matches(repo, cached + list(KNOWN_MODELS), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close and close[0] != repo else ""
    have = f" The cache holds: {', '.join(cached)}." if cached else " The local cache holds no models."
    where = "" if revision is None else f" at revision {revision!r}"
    if repo in KNOWN_MODELS:
        return WeightsNotFoundError(
            f"{repo}{where} is not in the local Hugging Face cache and the hub is unreachable "
            f"({type(err).__name__}).{have} " + _get_weights(repo, revision))
    listing = "; ".join(f"{k!r}: {v}" for k, v in KNOWN_MODELS.items())
    return UnknownModelError(
        f"unknown model {repo!r}{where}: no such directory here, and not in the local Hugging Face cache "
        f"(the hub is unreachable: {type(err).__name__}).{hint}{have} Known names: {listing}. If it is a "
        "Phi-3-architecture repository, " + _get_weights(repo, revision)[0].lower() + _get_weights(repo, revision)[1:])


def _hub_source(repo: str, revision: str | None) -> Source:
    """A few KB first: the hub's config decides whether the weights can fit at all."""
    from huggingface_hub import hf_hub_download

    try:
        cfg_file = hf_hub_download(repo, "config.json", revision=revision)
    except Exception as err:  # offline, no cache entry, unreachable hub, bad revision, ...
        raise _not_cached(repo, revision, err) from None
    return Source(read_config(Path(cfg_file).parent), label=repo, advice=_ADVICE_HUB, repo=repo,
                  revision=revision)


def _fetch(source: Source) -> Path:
    """The hub snapshot with the weights (from the local cache, or downloaded)."""
    from huggingface_hub import snapshot_download

    try:
        # config, weights' index and shards, tokenizer files, and the chat template
        return Path(snapshot_download(source.repo, revision=source.revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"]))
    except Exception as err:
        raise WeightsNotFoundError(
            f"could not fetch the weights of {source.repo} ({type(err).__name__}). "
            + _get_weights(source.repo, source.revision)
        ) from None


def _record_revision(model: TransformerBridge, source: Source, snapshot: Path) -> None:
    """Keep and say the commit loaded.

    The hub's `main` moves when Microsoft updates the repository (the tokenizer fix of early
    2025 did). The snapshot folder is named by the commit it holds: record it, so a result can
    be reproduced with exactly these weights.
    """
    model.revision = snapshot.name
    how = ("the hub's moving `main`; pass revision=" + repr(snapshot.name) + " to load exactly these again"
           if source.revision is None else f"revision={source.revision!r}")
    print(f"{source.repo} at commit {snapshot.name} ({how})")


def save(model, path: str | os.PathLike, tokenizer: PreTrainedTokenizerFast | None = None) -> Path:
    """Save a model as a Hugging Face checkpoint folder.

    `model` is a model loaded by phi4lab (a TransformerBridge) or a plain
    `Phi3ForCausalLM`. Writes config.json, model.safetensors and the tokenizer
    files (the bridge's own, or `tokenizer`), so that `phi4lab.load(path)`
    (or `Phi3ForCausalLM.from_pretrained(path)`) gets it back.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = hf_state_dict(model) if is_bridge(model) else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    unwrap(model).config.save_pretrained(path)
    tokenizer = tokenizer or getattr(model, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------
# Wrapping in TransformerLens
# --------------------------------------------------------------------------------------


def wrap(model, tokenizer: PreTrainedTokenizerFast | None = None, name: str = "phi4lab-model") -> TransformerBridge:
    """A TransformerBridge (hooks, run_with_cache) around a Hugging Face Phi-3-architecture model you hold.

    For a model you fine-tuned or merged yourself (phi4lab.training.finetune returns plain
    Hugging Face models). The bridge rewires the modules it wraps for its hook
    points, so keep using the bridge, not the model, afterwards. A peft model is
    refused: merge it first (phi4lab.training.finetune.merged).
    """
    if hasattr(model, "peft_config"):
        raise TypeError("this is a peft model: wrap phi4lab.training.finetune.merged(model), the adapter added into a "
                        "plain copy of the weights")
    if not isinstance(model, Phi3ForCausalLM):
        raise TypeError(f"wrap takes a Hugging Face Phi3ForCausalLM, got {type(model).__name__}")
    if tokenizer is None:
        if model.config.vocab_size != VOCAB_SIZE:
            raise ValueError(f"this model has {model.config.vocab_size:,} token ids, not Phi-4's "
                             f"{VOCAB_SIZE:,}: pass its tokenizer (for phi4-tiny, model.tokenizer of the "
                             "bridge you started from)")
        tokenizer = phi4_tokenizer()
    return bridge(model.eval(), tokenizer, name)
