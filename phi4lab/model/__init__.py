"""The library core: what a Phi-4-architecture model *is*, and getting one safely.

- ``config``: Phi-4's config, scaled twins, parameter, byte and FLOP arithmetic.
- ``tokenizer``: the exact Phi-4 tokenizer, built offline; the text rule; chat encoding.
- ``loading``: ``load``, ``save``, ``wrap``: safetensors only, checked before anything is built.
- ``memory``: the pre-flight that refuses work that cannot fit.
- ``integrity``: sha256 pins for shipped and downloaded files.

Nothing here imports from a higher layer (see CONTRIBUTING.md).
"""
