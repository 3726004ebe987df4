"""Memory pre-flight: refuse work that cannot fit *before* allocating anything.

Loading Phi-4 in fp32 needs 58.6 GB for the weights alone; a laptop has 8-32 GB.
Finding that out by watching the machine swap (or the kernel's OOM killer end the
Jupyter kernel, losing everything in it) is the worst way to learn it. So every
loader and cache in phi4lab first compares what it will need, computed by
arithmetic, with what the device has free, and stops with a message that says
both numbers and what to try instead.
"""

from __future__ import annotations

import psutil
import torch

# Leave room for activations, the Python process and the notebook itself.
DEFAULT_SAFE_SHARE = 0.8


class InsufficientMemoryError(MemoryError):
    """The request would not fit in the device's free memory. Nothing was allocated."""


def available_bytes(device: str | torch.device = "cpu") -> int:
    """Free memory on `device` right now: RAM for the CPU, free VRAM for a CUDA GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for, but this torch build sees no CUDA GPU")
        index = device.index or 0
        free, _total = torch.cuda.mem_get_info(index)
        # Memory PyTorch's caching allocator holds but no tensor uses is free to PyTorch, though not to the driver.
        cached = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
        return int(free + cached)
    # CPU (and Apple's unified memory) share system RAM.
    return int(psutil.virtual_memory().available)


def accelerate_device(target) -> torch.device:
    """A device as accelerate names it (0, "cuda:1", "cpu"): an int is a GPU index, "cuda" the first GPU.

    torch.device(0) would ask for an accelerator, and fails on a machine without one.
    """
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.device("cuda", target)
    device = torch.device(target)
    return torch.device("cuda", 0) if device == torch.device("cuda") else device


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as operating systems report memory."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def preflight(
    need_bytes: int,
    *,
    what: str,
    device: str | torch.device = "cpu",
    budget_bytes: int | None = None,
    advice: str = "",
) -> None:
    """Raise InsufficientMemoryError if `need_bytes` exceeds the budget.

    The budget defaults to DEFAULT_SAFE_SHARE of the device's free memory.
    """
    if budget_bytes is None:
        budget_bytes = int(DEFAULT_SAFE_SHARE * available_bytes(device))
    if need_bytes > budget_bytes:
        message = (
            f"{what} needs {human_bytes(need_bytes)}, but the budget on {device} is "
            f"{human_bytes(budget_bytes)} ({DEFAULT_SAFE_SHARE:.0%} of free memory unless you set one). "
            "Nothing was allocated."
        )
        if advice:
            message += " " + advice
        raise InsufficientMemoryError(message)
