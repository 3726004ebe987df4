"""The one place that knows how TransformerLens wraps a Hugging Face model.

phi4lab hands out TransformerLens ``TransformerBridge`` objects: the Hugging Face
``Phi3ForCausalLM`` runs unchanged inside, and the bridge adds hook points,
``run_with_cache`` and ``to_tokens``. Some jobs need the model underneath (its
config, its final norm, its parameters under Hugging Face's names), and some
functions accept either kind. Every such question is answered here, so that a change
in TransformerLens' internals (``original_model``, the ``._original_component``
segment in parameter names, the tokenizer's BOS handshake) is fixed in one file;
``tests/test_layers.py`` checks that no other module reaches into them.
"""

from __future__ import annotations

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import Phi3ForCausalLM, PreTrainedTokenizerFast

from phi4lab.model.memory import accelerate_device
from phi4lab.model.tokenizer import check_text

# The segment a bridge inserts into the name of every wrapped module's parameters.
_WRAPPER_SEGMENT = "._original_component"


def is_bridge(model) -> bool:
    """Whether `model` is a TransformerLens bridge (else, a Hugging Face model or something else)."""
    return isinstance(model, TransformerBridge)


def unwrap(model) -> torch.nn.Module:
    """The Hugging Face model: the one inside a bridge, or `model` itself."""
    return model.original_model if is_bridge(model) else model


def hf_config(model):
    """The Hugging Face config of a bridge or of a Hugging Face model."""
    return unwrap(model).config


def hf_param_name(name: str) -> str:
    """A parameter's name as Hugging Face spells it, from its name as seen through a bridge."""
    return name.replace(_WRAPPER_SEGMENT, "")


def final_norm(model) -> torch.nn.Module:
    """The final RMSNorm (before the unembedding) of a bridge or a Hugging Face Phi-3 model."""
    return unwrap(model).model.norm


def final_norm_weight(model) -> torch.Tensor:
    """The final RMSNorm's learned scale, detached."""
    return final_norm(model).weight.detach()


def logits_of(model, tokens: torch.Tensor) -> torch.Tensor:
    """Logits from a TransformerLens bridge (returns a tensor) or a Hugging Face model (returns .logits)."""
    out = model(tokens)
    return out if torch.is_tensor(out) else out.logits


def execution_device(model, layer: int | None = None, *, part: str = "layer") -> torch.device:
    """Where a part of a (possibly split) model computes, so where its activations live.

    part: "layer" (decoder block `layer`), "embed" (the embedding), or "unembed" (the final norm
    and lm_head). A model split by accelerate (``device_map=``) carries an ``AlignDevicesHook`` on
    each placed module that names its execution device, also for weights offloaded to disk
    (whose parameters sit on the meta device); otherwise it is where the parameters are.
    """
    hf = unwrap(model)
    module = {"layer": lambda: hf.model.layers[layer], "embed": lambda: hf.model.embed_tokens,
              "unembed": lambda: hf.lm_head}[part]()
    for m in module.modules():
        hook = getattr(m, "_hf_hook", None)
        where = getattr(hook, "execution_device", None)
        if where is not None:
            return accelerate_device(where)
    device = next(module.parameters()).device
    return torch.device("cpu") if device.type == "meta" else device


def is_split(model) -> bool:
    """Whether accelerate placed the model's modules over several devices or offloaded some (device_map=)."""
    targets = {str(v) for v in (getattr(unwrap(model), "hf_device_map", None) or {}).values()}
    return len(targets) > 1 or "disk" in targets


def hf_buffers(model) -> dict[str, torch.Tensor]:
    """The Hugging Face model's buffers under Hugging Face's names (RoPE's inv_freq, ...), as the bridge holds them."""
    return {hf_param_name(name): b for name, b in unwrap(model).named_buffers()}


def hf_state_dict(model: TransformerBridge) -> dict[str, torch.Tensor]:
    """The Hugging Face `Phi3ForCausalLM` state dict of a bridged model.

    The bridge wraps each HF module in place, so every tensor appears under several
    names (`model.layers.0.self_attn._original_component.qkv_proj...`, `...attn.q...`).
    Dropping the wrapper segments and keeping the names HF expects recovers the original.
    """
    with torch.device("meta"):
        expected = Phi3ForCausalLM(model.original_model.config).state_dict()
    found: dict[str, torch.Tensor] = {}
    for key, tensor in model.original_model.state_dict().items():
        clean = hf_param_name(key)
        if clean in expected:
            found.setdefault(clean, tensor)
    if model.original_model.config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
        found.pop("lm_head.weight", None)
    missing = set(expected) - set(found)
    if missing:
        raise RuntimeError(f"could not recover HF tensors {sorted(missing)[:3]} from the bridge")
    return found


def bridge(model: Phi3ForCausalLM, tokenizer: PreTrainedTokenizerFast, name: str) -> TransformerBridge:
    """Wrap a Hugging Face Phi-3-architecture model in a TransformerBridge, as phi4lab's models are."""
    # TransformerLens wants a tokenizer that was created with add_bos_token=True and,
    # if it wasn't, reloads one from disk by name. Our tokenizer is built in memory and,
    # like Phi-4's, adds no BOS; so we tell TL it is BOS-aware for the boot, then record
    # the truth: TL detects that it does not prepend BOS, and we make "no BOS" the default.
    tokenizer.init_kwargs.setdefault("name_or_path", name)
    missing = object()
    before = tokenizer.init_kwargs.get("add_bos_token", missing)
    tokenizer.init_kwargs["add_bos_token"] = True
    try:
        bridge = TransformerBridge.boot_transformers(name, hf_model=model, tokenizer=tokenizer)
    finally:
        if before is missing:
            tokenizer.init_kwargs.pop("add_bos_token", None)
        else:
            tokenizer.init_kwargs["add_bos_token"] = before
    bridge.cfg.default_prepend_bos = False
    _pass_kv_cache(bridge)
    bridge.to_tokens = _TextRuleToTokens(bridge)
    bridge.revision = None                 # the hub commit, for models loaded from the hub
    bridge.eval()
    return bridge


def _pass_kv_cache(bridge: TransformerBridge) -> None:
    """Let the bridge's attention see Hugging Face's KV cache under its new name.

    transformers 5.24 hands each attention layer its KV cache as ``cache=``; TransformerLens 4.3's
    attention bridges look only for ``past_key_values=`` (or ``layer_past=``), find nothing, and
    attend over the new token alone. ``generate`` with its default ``use_cache=True`` then ignores
    the prompt after the first token, and silently writes text that has nothing to do with it
    (tests/test_bridge_generation.py). Until TransformerLens reads the new name, we pass it on.
    """
    # Patched on the classes, not the instances, so that copies of a model (plain_copy, peft) keep it.
    for cls in {type(m) for m in bridge.modules() if hasattr(m, "_update_kv_cache")}:
        update = cls._update_kv_cache
        if getattr(update, "_phi4lab_cache_name", False):
            continue

        def renamed(self, k, v, _update=update, **kwargs):
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return _update(self, k, v, **kwargs)
        renamed._phi4lab_cache_name = True
        cls._update_kv_cache = renamed


class _TextRuleToTokens:
    """The bridge's ``to_tokens`` (and so ``to_str_tokens``), with phi4lab's text rule applied first.

    TransformerLens' own method hands the text straight to the tokenizer, whose error
    for a lone surrogate names neither the character nor a fix. Everything else is
    TransformerLens' behaviour, unchanged. (An object holding the bridge rather than
    a closure, so that ``copy.deepcopy(model)`` gives a copy that tokenizes for itself.)
    """

    def __init__(self, bridge):
        self.bridge = bridge
        self.__doc__ = type(bridge).to_tokens.__doc__

    def __call__(self, input, *args, **kwargs):
        for text in [input] if isinstance(input, str) else input if isinstance(input, (list, tuple)) else []:
            check_text(text, "to_tokens' input")
        return type(self.bridge).to_tokens(self.bridge, input, *args, **kwargs)
