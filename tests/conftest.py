import os
import shutil

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


# Debian's Chromium (`apt install chromium`): Playwright's own browser download cannot work offline.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium under Playwright, for the tests that look at pages (they skip without it)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
