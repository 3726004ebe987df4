"""Cache planning: know what an activation cache will cost before you run it.

``run_with_cache`` keeps a copy of every activation it is asked for. On
phi4-tiny that is nothing; on Phi-4 a full cache of one 2,048-token prompt is
tens of gigabytes, and the usual way to find out is an out-of-memory crash
halfway through. A plan predicts the bytes of each hook point from the config
alone, so you can choose what to cache, and ``run_with_plan`` refuses a plan
that does not fit before anything is allocated.

How the plan knows the shapes: rather than hard-coding TransformerLens'
hook vocabulary (which grows between versions), phi4lab runs a *probe*, a
2-layer twin with deliberately distinct sizes (batch 2, 11 tokens, 9 query
heads over 3 KV heads of size 4, d_model 36, d_mlp 126, vocabulary 97), and
reads every hook's shape and dtype. Each size maps back to its name, so the
shapes hold for any Phi-3-architecture config. The probe also sees which hook
points are the *same tensor* under two names (``blocks.0.hook_resid_post`` is
``blocks.1.hook_resid_pre``), so aliases are counted once, as the memory is.

The cache itself is TransformerLens' ``ActivationCache``, with all its
utilities (``accumulated_resid``, ``decompose_resid``, ``logit_attrs`` ...).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

import torch

from phi4lab.model import config as phi4config
from phi4lab.model.bridge import unwrap
from phi4lab.model.memory import accelerate_device, human_bytes, preflight

# The probe's sizes, each distinct so that a shape can be read back symbolically.
PROBE = dict(batch=2, seq=11, n_heads=9, n_kv_heads=3, d_head=4, d_model=36, d_mlp=126, d_vocab=97)
_SYMBOL = {v: k for k, v in PROBE.items()}


def _sizes(cfg, seq: int, batch: int) -> dict[str, int]:
    return dict(batch=batch, seq=seq, n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads,
                d_head=phi4config.head_dim(cfg), d_model=cfg.hidden_size, d_mlp=cfg.intermediate_size,
                d_vocab=cfg.vocab_size)


@functools.lru_cache(maxsize=4)
def _probe(dtype: torch.dtype):
    """Run the probe twin once per dtype: {generic name: (symbolic shape, element bytes, storage id)}."""
    from phi4lab.model.bridge import bridge
    from phi4lab.model.loading import random_hf_model
    from phi4lab.model.tokenizer import phi4_tokenizer

    cfg = phi4config.scaled(d_model=PROBE["d_model"], n_layers=2, num_attention_heads=PROBE["n_heads"],
                            num_key_value_heads=PROBE["n_kv_heads"], vocab_size=PROBE["d_vocab"])
    cfg.intermediate_size = PROBE["d_mlp"]
    with torch.random.fork_rng(devices=[]):
        model = bridge(random_hf_model(cfg).to(dtype), phi4_tokenizer(), "phi4lab-cache-probe")
        tokens = torch.randint(0, PROBE["d_vocab"], (PROBE["batch"], PROBE["seq"]))
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
    out = {}
    for name, t in cache.items():
        shape = []
        for size in t.shape:
            if size == 1:
                shape.append(1)
            elif size in _SYMBOL:
                shape.append(_SYMBOL[size])
            else:
                raise RuntimeError(f"cache probe: {name} has a dimension {size} that matches no model size; "
                                   "TransformerLens may have changed its hooks")
        out[name] = (tuple(shape), t.element_size(), t.untyped_storage().data_ptr())
    return out


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" else None


def _rename(name: str, layer: int) -> str:
    return name if _layer(name) is None else f"blocks.{layer}." + name.split(".", 2)[2]


def hook_table(cfg, dtype: torch.dtype) -> tuple[dict[str, tuple], dict[str, str]]:
    """For a config: {hook name: (symbolic shape, element bytes)} and {hook name: storage group}.

    Two names in the same storage group are one tensor in memory. The probe
    has 2 layers; each of its storage groups generalises to L layers by kind:
    global only (embedding, final norm, unembedding); embedding -> layer 0;
    last layer -> final norm; inside one layer (every layer has one); and
    layer i's output = layer i+1's input; one tensor shared by all layers.
    """
    probe = _probe(dtype)
    last = cfg.num_hidden_layers - 1
    shapes, group = {}, {}
    members: dict[int, list[str]] = {}
    for name, (_, _, ptr) in probe.items():
        members.setdefault(ptr, []).append(name)
    for names in members.values():
        layers = sorted({_layer(n) for n in names} - {None})
        has_global = any(_layer(n) is None for n in names)
        if not layers:
            placements = [{}]                                     # names map to themselves
        elif has_global and layers == [0, 1]:                     # one tensor shared by every layer (RoPE's cos/sin)
            placements = [{0: i, 1: i} for i in range(last + 1)]
        elif has_global:
            placements = [{layers[0]: 0 if layers == [0] else last}]
        elif layers == [0, 1]:
            placements = [{0: i, 1: i + 1} for i in range(last)]
        else:
            placements = [{layers[0]: i} for i in range(last + 1)]
        for place in placements:
            real = [_rename(n, place.get(_layer(n))) for n in names]
            key = min(n for n in names if _layer(n) is None) if has_global else min(real)
            for probe_name, name in zip(names, real):
                shapes[name] = probe[probe_name][:2]
                group.setdefault(name, key)
    return shapes, group


@dataclass
class CachePlan:
    """What a cache will hold: bytes per hook point, and the total with aliases counted once."""
    seq_len: int
    batch: int
    dtype: torch.dtype
    bytes_per_hook: dict[str, int]
    total_bytes: int
    # The shape it was planned for (see _shape_of): a plan made for one model is refused on another.
    shape: tuple = ()

    @property
    def names(self) -> list[str]:
        return list(self.bytes_per_hook)

    def table(self, top: int = 10) -> str:
        rows = sorted(self.bytes_per_hook.items(), key=lambda kv: -kv[1])[:top]
        lines = [f"{len(self.bytes_per_hook)} hook points, batch {self.batch} x {self.seq_len} tokens, "
                 f"{self.dtype}: {human_bytes(self.total_bytes)} (aliases counted once)"]
        lines += [f"  {name:40s} {human_bytes(b):>10s}" for name, b in rows]
        return "\n".join(lines)


def _config_of(model_or_config):
    if hasattr(model_or_config, "num_hidden_layers"):
        return model_or_config, torch.float32
    model = unwrap(model_or_config)
    return model.config, next(model.parameters()).dtype


_SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size")


def _shape_of(cfg) -> tuple:
    return tuple((f, getattr(cfg, f, None)) for f in _SHAPE_FIELDS)


def _count(name: str, value, what: str) -> int:
    """A positive whole number, or a clear error: plans are made of counts."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number of {what}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}"
                         + (" (an empty prompt has nothing to cache)" if name == "seq_len" else ""))
    return value


def plan_cache(model_or_config, seq_len: int, batch: int = 1, names=None, dtype: torch.dtype | None = None) -> CachePlan:
    """Predict the bytes of caching `names` (a list, a filter function, or None for all) without running.

    Works for any Phi-3-architecture config, full-size Phi-4 included.
    """
    cfg, model_dtype = _config_of(model_or_config)
    dtype = dtype or model_dtype
    _count("seq_len", seq_len, "tokens")
    _count("batch", batch, "prompts")
    if isinstance(names, str):
        raise TypeError(f"names must be a list of hook names or a filter function; for one hook, pass [{names!r}]")
    if seq_len > cfg.max_position_embeddings:
        raise ValueError(f"seq_len {seq_len} exceeds the model's context of {cfg.max_position_embeddings} tokens")
    shapes, groups = hook_table(cfg, dtype)
    if names is None:
        chosen = list(shapes)
    elif callable(names):
        chosen = [n for n in shapes if names(n)]
    else:
        chosen = list(names)
        unknown = [n for n in chosen if n not in shapes]
        if unknown:
            hints = {n: difflib.get_close_matches(n, list(shapes), n=3) for n in unknown}
            detail = "; ".join(f"{n!r} (close: {', '.join(h) or 'none'})" for n, h in hints.items())
            raise KeyError(f"unknown hook name(s): {detail}")
    sizes = _sizes(cfg, seq_len, batch)
    per_hook, seen, total = {}, set(), 0
    for name in chosen:
        shape, elem = shapes[name]
        nbytes = elem
        for dim in shape:
            nbytes *= dim if dim == 1 else sizes[dim]
        per_hook[name] = nbytes
        if groups[name] not in seen:
            seen.add(groups[name])
            total += nbytes
    return CachePlan(seq_len, batch, dtype, per_hook, total, _shape_of(cfg))


_EMBED_SIDE = {"embed", "hook_embed", "rotary_emb"}        # hooks outside the blocks that run before them


def bytes_per_device(model, plan: CachePlan) -> dict[torch.device, int]:
    """The plan's bytes on each device of a model split over several (device_map=), aliases counted once.

    A hook's activation lives where its layer computes: blocks.L.* with block L, the embedding's hooks
    with the embedding, the rest (ln_final, unembed) with lm_head. One device holds it all otherwise.
    """
    from phi4lab.model.bridge import execution_device

    cfg, _ = _config_of(model)
    _, groups = hook_table(cfg, plan.dtype)
    per_device, seen = {}, set()
    for name, nbytes in plan.bytes_per_hook.items():
        if groups[name] in seen:
            continue
        seen.add(groups[name])
        layer = _layer(name)
        first = name.split(".")[0]
        part = "layer" if layer is not None else "embed" if first in _EMBED_SIDE else "unembed"
        device = execution_device(model, layer, part=part)
        per_device[device] = per_device.get(device, 0) + nbytes
    return per_device


def _per_device(budgets: dict) -> dict[torch.device, int]:
    """{0: n, "cuda:1": m, "cpu": k} -> {device: bytes}; an int key is a GPU index, as in accelerate's max_memory."""
    out = {}
    for key, value in budgets.items():
        try:
            out[accelerate_device(key)] = value
        except (RuntimeError, TypeError):
            raise ValueError(f"budget_bytes has a key {key!r} that names no device; use 0, 'cuda:1', 'cpu', ...") from None
    return out


def run_with_plan(model, tokens: torch.Tensor, plan: CachePlan, budget_bytes: int | dict | None = None):
    """Run the model caching exactly the plan's hook points, after checking the plan fits.

    Returns (logits, ActivationCache). Refuses, before allocating, if the plan's bytes on any
    device exceed its budget: by default a safe share of that device's free memory; an int is
    the budget of each device, a dict gives one per device ({"cuda:0": ..., "cuda:1": ...}).
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tuple(tokens.shape) != (plan.batch, plan.seq_len):
        raise ValueError(f"tokens have shape {tuple(tokens.shape)}, the plan is for "
                         f"({plan.batch}, {plan.seq_len}); make a plan for this input")
    cfg, _ = _config_of(model)
    if plan.shape and plan.shape != _shape_of(cfg):
        differ = [f"{f} {a} (plan) vs {b} (model)" for (f, a), (_, b) in zip(plan.shape, _shape_of(cfg)) if a != b]
        raise ValueError("this plan was made for another model: " + "; ".join(differ)
                         + ". Make a plan for this one: plan_cache(model, ...)")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
        raise ValueError(f"token ids must be in 0..{cfg.vocab_size - 1} for this model's vocabulary; "
                         f"these run from {int(tokens.min())} to {int(tokens.max())}")
    budgets = _per_device(budget_bytes) if isinstance(budget_bytes, dict) else None
    per_device = bytes_per_device(model, plan)
    for device, need in per_device.items():
        budget = budgets.get(device) if budgets is not None else budget_bytes
        share = f" ({human_bytes(need)} of it on {device})" if len(per_device) > 1 else ""
        preflight(need, what=f"an activation cache of {len(plan.names)} hook points{share}", device=device,
                  budget_bytes=budget,
                  advice="Cache fewer hook points, e.g. names=lambda n: n.endswith('hook_pattern'), "
                         "or fewer layers or tokens; plan_cache(...) shows what each one costs.")
    wanted = set(plan.names)
    return model.run_with_cache(tokens, names_filter=lambda n: n in wanted)


def forward_bytes(model_or_config, seq_len: int, batch: int = 1, names=None, dtype: torch.dtype | None = None) -> int:
    """A conservative estimate of what one forward pass allocates beyond the weights, in bytes.

    Three things dominate, and grow fastest with the prompt: one layer's attention
    scores and pattern, alive together ([batch, heads, seq, seq] each, quadratic in
    the length); the logits, twice in fp32 (the loss and log-softmax upcast them,
    [batch, seq, vocabulary]); and whatever is cached (`names`, as in plan_cache).
    """
    transient = plan_cache(model_or_config, seq_len, batch, dtype=dtype,
                           names=["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern"]).total_bytes
    cfg, _ = _config_of(model_or_config)
    logits = 2 * 4 * batch * seq_len * cfg.vocab_size
    cached = plan_cache(model_or_config, seq_len, batch, names=names, dtype=dtype).total_bytes if names else 0
    return transient + logits + cached


def check_forward_fits(model, seq_len: int, *, what: str, names=None, extra_bytes: int = 0,
                       budget_bytes: int | None = None) -> int:
    """Refuse, before running, a forward pass of `seq_len` tokens that would not fit in free memory."""
    need = forward_bytes(model, seq_len, names=names) + extra_bytes
    device = next(model.parameters()).device
    preflight(need, what=what, device=device, budget_bytes=budget_bytes,
              advice="Use a shorter text, or look at a part of it.")
    return need
