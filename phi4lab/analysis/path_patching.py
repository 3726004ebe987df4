"""Path patching: does a sender head affect the output *through* a receiver head's queries, keys or values?

Activation patching asks whether an activation matters. Path patching (Wang et al. 2022,
"Interpretability in the Wild", https://arxiv.org/abs/2211.00593; Goldowsky-Dill et al. 2023)
asks whether one *path* matters: sender head -> receiver head's input. Composition scores
(``circuits.composition_scores``) say a path is possible from the weights; path patching tests
whether it carries the behaviour on real prompts. Three runs:

1. the clean and corrupted prompts, caching every head's output (``hook_z``);
2. the corrupted prompt again, with every head's output frozen at its corrupted value, except
   the senders', which get their clean values. The MLPs recompute, so the senders' change reaches
   later layers only directly and through MLPs, never through another head. Record the receivers'
   queries, keys or values (``hook_q``, ``hook_k``, ``hook_v``) in this run;
3. the corrupted prompt once more, with only those receiver inputs replaced by the recorded ones.
   The metric on this run measures the path sender -> receiver.

Grouped-query attention: a receiver's keys and values belong to its key/value group, shared with
the other query heads of the group, so patching the keys of head (l, h) patches them for the
whole group. That is the model's own structure, not a choice here; queries stay per head.
"""

from __future__ import annotations

import torch
from transformer_lens.utilities import get_act_name

from phi4lab.analysis.circuits import kv_group
from phi4lab.model.guards import check_head, check_tokens

_INPUTS = {"q": "q", "k": "k", "v": "v"}


def _check(model, clean_tokens, corrupt_tokens, senders, receivers):
    clean_tokens, corrupt_tokens = check_tokens(model, clean_tokens), check_tokens(model, corrupt_tokens)
    if clean_tokens.shape != corrupt_tokens.shape:
        raise ValueError(f"clean {tuple(clean_tokens.shape)} and corrupted {tuple(corrupt_tokens.shape)} prompts "
                         "must have the same shape")
    if not senders or not receivers:
        raise ValueError("give at least one sender head (layer, head) and one receiver (layer, head, 'q'|'k'|'v')")
    for layer, head in senders:
        check_head(model, layer, head)
    for receiver in receivers:
        if len(receiver) != 3 or receiver[2] not in _INPUTS:
            raise ValueError(f"a receiver is (layer, head, 'q' | 'k' | 'v'), got {receiver!r}")
        check_head(model, receiver[0], receiver[1])
    first_receiver = min(r[0] for r in receivers)
    late = [s for s in senders if s[0] >= first_receiver]
    if late:
        raise ValueError(f"senders {late} are not before the first receiver layer ({first_receiver}): a head can only "
                         "send to heads in later layers")
    return clean_tokens, corrupt_tokens


@torch.no_grad()
def path_patch(model, clean_tokens, corrupt_tokens, senders, receivers, metric) -> torch.Tensor:
    """The metric, per prompt [n_prompts], with the paths senders -> receivers taken from the clean run.

    senders: [(layer, head), ...]; receivers: [(layer, head, "q" | "k" | "v"), ...], in later layers.
    metric: as for ``sweep``, ``metric(logits)`` with logits [n_patches, n_prompts, d_vocab] of the last
    position, returning [n_patches, n_prompts] (here n_patches is 1).
    """
    clean_tokens, corrupt_tokens = _check(model, clean_tokens, corrupt_tokens, senders, receivers)
    return _path_patch(model, corrupt_tokens, *_head_outputs(model, clean_tokens, corrupt_tokens), senders, receivers,
                       metric)


def _head_outputs(model, clean_tokens, corrupt_tokens):
    """Run 1: every head's output (hook_z) on the clean and on the corrupted prompts."""
    z_names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    _, clean = model.run_with_cache(clean_tokens, names_filter=lambda n: n in z_names)
    _, corrupt = model.run_with_cache(corrupt_tokens, names_filter=lambda n: n in z_names)
    return clean, corrupt


def _path_patch(model, corrupt_tokens, clean, corrupt, senders, receivers, metric) -> torch.Tensor:
    """Runs 2 and 3 of path_patch, from run 1's caches (checked inputs)."""
    z_names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    by_layer: dict[int, list[int]] = {}
    for layer, head in senders:
        by_layer.setdefault(layer, []).append(head)

    def freeze(z, hook):                                    # every head at its corrupted output, senders at clean
        layer = int(hook.name.split(".")[1])                # hook.name is the bridge's own name for hook_z
        z = corrupt[z_names[layer]].clone()
        for head in by_layer.get(layer, []):
            z[:, :, head] = clean[z_names[layer]][:, :, head]
        return z

    # Run 2: record what the receivers read when only the senders' outputs are clean
    wanted = {get_act_name(_INPUTS[kind], layer) for layer, _, kind in receivers}
    recorded: dict[str, torch.Tensor] = {}

    def record(act, hook):
        recorded[hook.name] = act.clone()
        return act

    model.run_with_hooks(corrupt_tokens, fwd_hooks=[(n, freeze) for n in z_names] + [(n, record) for n in wanted])

    # Run 3: the corrupted prompt with only the receivers' inputs replaced
    def paste(layer, head, kind):
        index = head if kind == "q" else kv_group(model, head)

        def hook(act, hook):                                # [batch, pos, heads or kv heads, d_head]
            act = act.clone()
            act[:, :, index] = recorded[hook.name][:, :, index]
            return act
        return get_act_name(_INPUTS[kind], layer), hook

    logits = model.run_with_hooks(corrupt_tokens, fwd_hooks=[paste(*r) for r in receivers])
    values = metric(logits[None, :, -1])
    if tuple(values.shape) != (1, corrupt_tokens.shape[0]):
        raise ValueError(f"the metric must return [1, n_prompts] = [1, {corrupt_tokens.shape[0]}] from logits "
                         f"[1, n_prompts, d_vocab]; it returned {list(values.shape)}")
    return values[0]


@torch.no_grad()
def path_patch_senders(model, clean_tokens, corrupt_tokens, receivers, metric) -> torch.Tensor:
    """[n_layers_before, n_heads, n_prompts]: ``path_patch`` from each single head before the receivers."""
    first = min(r[0] for r in receivers) if receivers else 0
    if first == 0:
        raise ValueError("the receivers must be after layer 0, so that some head can send to them")
    clean_tokens, corrupt_tokens = _check(model, clean_tokens, corrupt_tokens, [(0, 0)], receivers)
    caches = _head_outputs(model, clean_tokens, corrupt_tokens)        # run 1 once, shared by every sender
    out = torch.empty(first, model.cfg.n_heads, clean_tokens.shape[0])
    for layer in range(first):
        for head in range(model.cfg.n_heads):
            out[layer, head] = _path_patch(model, corrupt_tokens, *caches, [(layer, head)], receivers, metric)
    return out
