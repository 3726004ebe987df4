"""SAEs on disk, in SAELens's format: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

SAELens (https://github.com/jbloomAus/SAELens) is where most public SAEs live, and its folder
layout is what Neuronpedia-style tools read: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec``
[d_sae, d_in], ``b_dec`` [d_in], and a config naming ``d_in``, ``d_sae``, ``hook_name`` and the
architecture (``k`` for TopK). phi4lab writes that, so that its SAEs load in SAELens once a release
supports TransformerLens 4, and reads it back with the same checks as a model checkpoint:
safetensors only, every tensor's name, shape and dtype against the config, and, for a shipped
SAE, the file's pinned sha256.

A **transcoder** is stored the same way, with three more settings: ``d_out``, ``hook_name_out`` (what
it predicts; ``hook_name`` is what it reads) and ``apply_b_dec_to_input: false`` (its ``b_dec`` is an
output bias). phi4-tiny's ship in float16, half the bytes; they load as float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from phi4lab.dictionaries.sae import SparseAutoencoder, Transcoder
from phi4lab.model.integrity import check_sha256
from phi4lab.paths import DATA_DIR

CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
# The SAEs that ship with phi4lab (phi4lab.recipes.saes builds them), and their weights' sha256.
SHIPPED_DIR = DATA_DIR / "saes" / "phi4-tiny"
SHIPPED: dict[str, str] = {
    "blocks.2.hook_resid_post": "bce945b3f3d764d9fef916520f17a6f081f507a8d25dc1ac338b74e979f765ff",
    "blocks.3.hook_resid_post": "9635d7fefe0858544f4eb36513e1d95455016f5447286e2ebeacfb1e77e55a01",
}
# The transcoders, one per layer (phi4lab.recipes.transcoders builds them), by layer.
TRANSCODER_DIR = DATA_DIR / "transcoders" / "phi4-tiny"
SHIPPED_TRANSCODERS: dict[int, str] = {
    0: "92c1ef21be62670649278ea051191f6efe9cae5161d1569ac4f9cc4edc69f598",
    1: "3f82a152c162c9de9e8d304e95536b2a6434c02ff85cfebac808bfa6630bb4c3",
    2: "53c9c60d60f91e618b4bf566a4f36b91d391e813c0b2d630c59cc1c3c76eedf9",
    3: "a96f7983384cb310dc4f693f43dac15ec93fc77f43bdf67ab7b7ef3f3db8bb44",
}


class SAEFileError(ValueError):
    """An SAE folder is missing, malformed, or does not match its config."""


def save_sae(sae: SparseAutoencoder, folder: str | os.PathLike, *, hook_name: str, model_name: str,
             hook_name_out: str | None = None, dtype: torch.dtype = torch.float32, **extra) -> Path:
    """Write `sae` as a SAELens folder; `extra` goes into cfg.json (e.g. how it was trained).

    A Transcoder needs `hook_name_out`, the hook point it predicts (`hook_name` is the one it reads).
    """
    if isinstance(sae, Transcoder) != (hook_name_out is not None):
        raise ValueError("give hook_name_out for a Transcoder (what it predicts), and only for one")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": str(dtype).removeprefix("torch."), "hook_name": hook_name,
           "hook_layer": int(hook_name.split(".")[1]) if hook_name.startswith("blocks.") else None,
           "model_name": model_name, "apply_b_dec_to_input": not isinstance(sae, Transcoder),
           "normalize_activations": "none", "architecture": "topk" if sae.kind == "topk" else "standard"}
    if hook_name_out is not None:
        cfg.update(d_out=sae.d_out, hook_name_out=hook_name_out, transcoder=True)
    if sae.kind == "topk":
        cfg["k"] = sae.k
        cfg["activation_fn_kwargs"] = {"k": sae.k}
    cfg.update(extra)
    tensors = {name: getattr(sae, name).detach().to("cpu", dtype).contiguous()
               for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def load_sae(folder: str | os.PathLike, *, sha256: str | None = None) -> tuple[SparseAutoencoder, dict]:
    """(sae, cfg) from a SAELens folder, refusing anything that does not match its config."""
    folder = Path(folder)
    cfg_file, weights = folder / CONFIG, folder / WEIGHTS
    if not cfg_file.exists() or not weights.exists():
        found = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else "no such folder"
        raise SAEFileError(f"{folder} is not an SAE folder: it needs {CONFIG} and {WEIGHTS} (found: {found or 'nothing'})")
    if sha256 is not None:
        check_sha256(weights, sha256, SAEFileError, f"the SAE in {folder}", "restore it from git, or rebuild it")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SAEFileError(f"{cfg_file} is not valid JSON in UTF-8: {err}") from None
    if not isinstance(cfg, dict):
        raise SAEFileError(f"{cfg_file} holds a JSON {type(cfg).__name__}, not an object of settings")
    arch = cfg.get("architecture")
    kinds = {"topk": "topk", "standard": "relu"}
    if arch not in kinds:
        raise SAEFileError(f"{cfg_file}: architecture {arch!r} is not one phi4lab reads ('topk' or 'standard')")
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    try:
        if cfg.get("transcoder"):
            sae = Transcoder(d_in, d_sae, cfg.get("d_out"), kinds[arch], k)
        else:
            sae = SparseAutoencoder(d_in, d_sae, kinds[arch], k)
    except ValueError as err:
        raise SAEFileError(f"{cfg_file} describes no SAE phi4lab can build: {err}") from None
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise SAEFileError(f"{weights} is not a readable safetensors file ({err}); it may be truncated") from None
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    problems = [f"missing {name}" for name in expected if name not in tensors]
    problems += [f"{name} is {list(tensors[name].shape)}, the config says {list(shape)}"
                 for name, shape in expected.items() if name in tensors and tuple(tensors[name].shape) != shape]
    problems += [f"{name} is {tensors[name].dtype}, not floating point" for name in expected
                 if name in tensors and not tensors[name].dtype.is_floating_point]
    if problems:
        raise SAEFileError(f"{weights} does not match {cfg_file}: " + "; ".join(problems))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(tensors[name])
    return sae.eval(), cfg


def shipped_sae(hook_name: str) -> tuple[SparseAutoencoder, dict]:
    """One of the SAEs that ship for phi4-tiny, hash-checked: e.g. shipped_sae("blocks.2.hook_resid_post")."""
    if hook_name not in SHIPPED:
        raise KeyError(f"no SAE ships for {hook_name!r}; phi4-tiny's are for {', '.join(SHIPPED) or 'nothing yet'}. "
                       "Train one with phi4lab.dictionaries.training.train_sae")
    folder = SHIPPED_DIR / hook_name
    if not folder.is_dir():
        raise SAEFileError(f"{folder} is missing: restore data/saes from git, or rebuild with `phi4lab build-saes`")
    return load_sae(folder, sha256=SHIPPED[hook_name])


def shipped_transcoder(layer: int) -> tuple[Transcoder, dict]:
    """phi4-tiny's transcoder for `layer`'s MLP, hash-checked: it reads ``blocks.{layer}.mlp.hook_in``
    (the MLP's normalised input) and predicts ``blocks.{layer}.hook_mlp_out``."""
    if layer not in SHIPPED_TRANSCODERS:
        raise KeyError(f"no transcoder ships for layer {layer!r}; phi4-tiny's are for layers "
                       f"{', '.join(map(str, SHIPPED_TRANSCODERS)) or 'none yet'}")
    folder = TRANSCODER_DIR / f"blocks.{layer}.hook_mlp_out"
    if not folder.is_dir():
        raise SAEFileError(f"{folder} is missing: restore data/transcoders from git, or rebuild with "
                           "`phi4lab build-transcoders`")
    return load_sae(folder, sha256=SHIPPED_TRANSCODERS[layer])


def shipped_transcoders() -> dict[int, Transcoder]:
    """All of phi4-tiny's transcoders, {layer: transcoder}: what an attribution graph needs."""
    return {layer: shipped_transcoder(layer)[0] for layer in SHIPPED_TRANSCODERS}
