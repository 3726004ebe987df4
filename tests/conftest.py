import os

# Tests never touch the network: the hub is unreachable on lab machines and in CI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """phi4-tiny, loaded (and hash-checked) once per test session.

    Shared, so read-only: a test that changes weights, hooks or attributes for good loads its own.
    """
    import phi4lab
    return phi4lab.load("phi4-tiny")
