"""phi4lab: an interpretability workbench and course built around Microsoft's Phi-4.

    import phi4lab
    model = phi4lab.load(config=phi4lab.config.scaled())   # a random Phi-4-shaped twin
    logits, cache = model.run_with_cache("The quick brown fox")

See README.md for the course map.
"""

from phi4lab.model import config
from phi4lab.model.loading import (
    CheckpointError,
    UnknownModelError,
    WeightsNotFoundError,
    load,
    save,
    wrap,
)
from phi4lab.model.memory import InsufficientMemoryError
from phi4lab.model.nnsight_lens import nnsight

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "InsufficientMemoryError",
    "UnknownModelError",
    "WeightsNotFoundError",
    "config",
    "load",
    "nnsight",
    "save",
    "wrap",
]
