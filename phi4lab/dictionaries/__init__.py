"""Sparse dictionaries: sparse autoencoders trained on a model's activations, and what they find.

- ``sae``: the SparseAutoencoder module (TopK, and ReLU + L1), written to be read, and the Transcoder
  (one activation in, another out: an MLP's input to its output).
- ``activations``: collecting a hook point's activations over token batches, memory checked first.
- ``training``: the training loop (decoder on the unit sphere, dead latents revived by an auxiliary loss).
- ``files``: SAELens's file format (``cfg.json`` + ``sae_weights.safetensors``), hash-checked on load.
- ``evaluate``: FVU, L0, dead and dense latents, and the loss recovered when the SAE is spliced in.
- ``toy``: Elhage et al. 2022's toy model of superposition, where the features are known, and its phase diagram.
- ``features``: reading latents on prompts; ablating, clamping and steering them with hooks; their output
  tokens and their direct share of a logit. (The dashboards are drawn by ``phi4lab.viz.features``.)
- ``graphs``: attribution graphs through transcoders (frozen attention and norms, error nodes, direct
  effects by backward passes, pruning, replacement and completeness scores); drawn by ``phi4lab.viz.graphs``.
"""

from phi4lab.dictionaries.sae import SparseAutoencoder, Transcoder

__all__ = ["SparseAutoencoder", "Transcoder"]
