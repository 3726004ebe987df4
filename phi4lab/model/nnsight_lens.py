"""A second lens on the same weights: nnsight.

phi4lab's models are TransformerLens bridges: every activation has a hook name
(``blocks.3.hook_resid_pre``), and an experiment is a forward pass with hook functions
attached. nnsight (https://nnsight.net) takes the other road. It wraps the Hugging Face
model as it is, you address activations by module path (``lens.model.layers[3].input``,
``.output``, and ``.source`` for the values inside a module's forward function, such as
the fused QKV projection's output), and you write the experiment as ordinary PyTorch
inside ``with lens.trace(prompt):``.

That code does not run when Python reaches it. nnsight records it as an *intervention
graph*, runs the model once when the block closes, interleaves the recorded reads and
writes with the forward pass, and hands back only what was ``.save()``d. The deferral is
what makes an experiment portable to a model you cannot hold: on an nnsight model built
from the hub id of a model NDIF (the National Deep Inference Fabric) hosts, ``remote=True``
sends the graph to that shared service, where large open models stay loaded, and only
the saved values travel back (Fiotto-Kaufman et al., *NNsight and NDIF*, ICLR 2025,
https://arxiv.org/abs/2407.14561). The course machines have no network, so phi4lab runs
nnsight locally, on a model you hold.

Where it differs from the bridge: reads and writes must follow the order in which the
forward pass computes them (an ``OutOfOrderError`` otherwise); module paths are Hugging
Face's, so they change with the architecture, where hook names do not; and there is no
``ActivationCache``. tests/test_nnsight_lens.py runs one patching experiment both ways
and checks that the numbers are identical.

``nnsight(model)`` hands nnsight a plain ``Phi3ForCausalLM`` whose parameters *are* the
bridge's tensors: nothing is copied, so a full-size model is not held twice. (nnsight
cannot be given the bridge's own Hugging Face model, whose modules the bridge has
rewired for its hook points.)
"""

from __future__ import annotations

import copy

import torch
from transformers import Phi3ForCausalLM

from phi4lab.model.bridge import hf_buffers, hf_config, hf_state_dict, is_bridge, is_split


def shared_hf_model(model) -> Phi3ForCausalLM:
    """A plain Hugging Face Phi3ForCausalLM on the same parameter tensors as `model` (a bridge), no copy."""
    if not is_bridge(model):
        raise TypeError(f"shared_hf_model takes a phi4lab model (a TransformerBridge), got {type(model).__name__}")
    if is_split(model):
        raise ValueError("this model is split over devices or offloaded (device_map=); the nnsight lens needs it "
                         "whole on one device, where its tensors can be shared")
    cfg = copy.deepcopy(hf_config(model))
    cfg._attn_implementation = "eager"              # as the bridge runs it: the same numbers
    state = hf_state_dict(model)
    with torch.device("meta"):                      # shapes only: the tensors come from the bridge
        plain = Phi3ForCausalLM(cfg)
    plain.load_state_dict(state, assign=True, strict=not cfg.tie_word_embeddings)
    if cfg.tie_word_embeddings:
        plain.lm_head.weight = plain.model.embed_tokens.weight
    # RoPE's inverse frequencies are buffers outside the state dict: take the bridge's own, in whatever
    # dtype they were cast to, in place of the meta placeholders.
    theirs = hf_buffers(model)
    for name, _ in list(plain.named_buffers()):
        owner, _, attr = name.rpartition(".")
        plain.get_submodule(owner).register_buffer(attr, theirs[name], persistent=False)
    return plain.eval()


def nnsight(model):
    """An nnsight ``TransformersModel`` on `model`'s weights (shared, not copied), with its tokenizer.

        lens = phi4lab.nnsight(model)
        with lens.trace(tokens):
            resid = lens.model.layers[2].input.save()      # = blocks.2.hook_resid_pre
    """
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(shared_hf_model(model), tokenizer=model.tokenizer)
