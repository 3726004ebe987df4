"""Fine-tuning: all the weights, or a low-rank adapter (LoRA) through peft.

**Full fine-tuning** continues training every weight on new data. It adapts
best, costs the most (16 bytes per parameter with AdamW, notebook 07), and
forgets the most.

**LoRA** (Hu et al. 2021) freezes the model and learns, for chosen linear
layers W, a low-rank update: W x + (alpha / r) B A x, with A [r, in] and
B [out, r], B starting at zero so that training starts from the base model.
For a 5,120 x 7,680 layer at rank 8 that is 104,960 trainable numbers instead
of 39.3 million. After training, B A can be added into W (``merged``), and the
adapted model costs nothing extra to run.

**Phi-4's fused layers.** Phi-3-architecture models compute Q, K and V with one
linear layer (``qkv_proj``) and the MLP's gate and up with another
(``gate_up_proj``). A LoRA on ``qkv_proj`` is one A shared by Q, K and V, with
one B whose rows split into Q, K and V parts; "LoRA on Q and V only", the
recipe of the original paper, has no layer to attach to. peft 0.21 knows no
default targets for ``phi3``, so we name them: ``LORA_TARGETS``.

"What changed" helpers: ``lora_update_norms`` (the size of each B A), and
``enabled_layers`` (switch the adapter on in some layers only, to measure how
much of a behaviour change each layer's adapter explains).
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import torch

from phi4lab.model.bridge import hf_config, is_bridge, is_split

LORA_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]


def plain_copy(model):
    """A fresh Hugging Face Phi3ForCausalLM with `model`'s weights (from a phi4lab bridge or a HF model).

    A bridge rewires the HF modules it wraps (for its hook points), so peft must
    be given a clean copy, never the bridge's own modules.
    """
    if is_split(model):
        raise ValueError("this model is split over devices or offloaded (device_map=); fine-tuning here needs it "
                         "whole on one device")
    if not is_bridge(model):
        return copy.deepcopy(model)
    from transformers import Phi3ForCausalLM

    from phi4lab.model.loading import hf_state_dict
    cfg = copy.deepcopy(hf_config(model))
    cfg._attn_implementation = "eager"
    first = next(model.parameters())
    # Built where the original lives, in its dtype: a full-size model on a GPU is never copied
    # through host memory. The constructor's random weights are overwritten at once.
    with torch.device(first.device):
        fresh = Phi3ForCausalLM._from_config(cfg, dtype=first.dtype)
    fresh.load_state_dict(hf_state_dict(model), strict=not cfg.tie_word_embeddings)
    return fresh.eval()


def lora_model(model, r: int = 8, alpha: int = 16, dropout: float = 0.0, targets=LORA_TARGETS, seed: int = 0):
    """A peft LoRA model around a plain copy of `model` (a bridge or a Phi3ForCausalLM); the original is untouched."""
    from peft import LoraConfig, get_peft_model

    base = plain_copy(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        fused = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
                 "up_proj": "gate_up_proj"}
        hint = "; ".join(f"{t} is part of the fused {fused[t]}" for t in missing if t in fused)
        raise ValueError(f"no linear layer named {missing} in this model (it has {sorted(present & set(LORA_TARGETS))})"
                         + (f": {hint}, so target that (peft adapts whole modules, so a Q/V-only adapter needs the Q and V "
                            "rows of qkv_proj masked, or the layer unfused, neither of which phi4lab does)" if hint else ""))
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(base, config)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def lora_parameter_count(cfg, r: int, targets=LORA_TARGETS) -> int:
    """r x (in + out) for every targeted layer: what LoRA trains, from the config alone."""
    from phi4lab.model.config import head_dim
    d, hd = cfg.hidden_size, head_dim(cfg)
    shapes = {"qkv_proj": (d, (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * hd),
              "o_proj": (cfg.num_attention_heads * hd, d),
              "gate_up_proj": (d, 2 * cfg.intermediate_size),
              "down_proj": (cfg.intermediate_size, d)}
    return cfg.num_hidden_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)


def save_adapter(peft_model, path: str | os.PathLike) -> Path:
    """Write the adapter (safetensors and adapter_config.json only, a few hundred KB)."""
    path = Path(path)
    peft_model.save_pretrained(path, safe_serialization=True)
    return path


def load_adapter(model, path: str | os.PathLike):
    """A peft model: a copy of `model` with the adapter from `path` (safetensors only)."""
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_model.safetensors").exists():
        found = sorted(p.name for p in path.glob("*")) if path.exists() else "nothing (no such folder)"
        raise FileNotFoundError(f"no adapter_model.safetensors in {path} (found {found}); phi4lab loads "
                                "adapters from safetensors only")
    return PeftModel.from_pretrained(plain_copy(model), path)


def merged(peft_model):
    """A plain Phi3ForCausalLM with B A added into the weights (the peft model is left as it was)."""
    return copy.deepcopy(peft_model).merge_and_unload()


def _lora_layers(peft_model):
    from peft.tuners.lora import LoraLayer
    return [(name, m) for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)]


def lora_update_norms(peft_model, adapter: str = "default") -> dict[str, float]:
    """Frobenius norm of each layer's update (alpha / r) B A, by module name (``layers.3.mlp.down_proj``)."""
    out = {}
    for name, layer in _lora_layers(peft_model):
        A = layer.lora_A[adapter].weight
        B = layer.lora_B[adapter].weight
        delta = (B @ A) * layer.scaling[adapter]
        short = name.split("model.", 1)[-1].replace("model.", "")
        out[short] = delta.norm().item()
    return out


@contextlib.contextmanager
def enabled_layers(peft_model, layers):
    """Within the block, the adapter acts only in the given decoder layers (indices); elsewhere it is off."""
    layers = set(layers)
    switched = []
    for name, layer in _lora_layers(peft_model):
        index = int(name.split("layers.")[1].split(".")[0])
        if index not in layers:
            layer.enable_adapters(False)
            switched.append(layer)
    try:
        yield peft_model
    finally:
        for layer in switched:
            layer.enable_adapters(True)


def text_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """The texts as one 1-D token stream, each followed by <|endoftext|> (as phi4-tiny's corpus was)."""
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    ids = tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return torch.tensor([t for doc in ids for t in doc + [eot]], dtype=torch.long)


def window_batches(stream: torch.Tensor, batch_size: int = 16, seq_len: int = 64, seed: int = 0):
    """get_batch(i) for phi4lab.training.loop: random windows of the stream, a pure function of (seed, i)."""
    if len(stream) <= seq_len:
        raise ValueError(f"the stream has {len(stream)} tokens, fewer than one window of {seq_len}")

    def get_batch(i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=g)
        return torch.stack([stream[s:s + seq_len] for s in starts.tolist()])
    return get_batch


def adapt(model, get_batch, steps: int, method: str = "lora", lr: float | None = None, r: int = 8, alpha: int = 16,
          seed: int = 0, progress: bool = False):
    """Fine-tune a copy of `model` with phi4lab.training.loop: method "lora" (peft) or "full". Returns (model, history)."""
    from phi4lab.training.loop import TrainConfig, train

    if method == "lora":
        tuned = lora_model(model, r=r, alpha=alpha, seed=seed)
        lr = lr or 2e-3
    elif method == "full":
        tuned = plain_copy(model)
        for p in tuned.parameters():
            p.requires_grad_(True)
        lr = lr or 3e-4
    else:
        raise ValueError(f"method must be 'lora' or 'full', not {method!r}")
    tuned.train()
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 10), schedule="cosine", weight_decay=0.0,
                      log_every=max(1, steps // 10), seed=seed, progress=progress)
    history = train(tuned, get_batch, cfg)
    return tuned.eval(), history
