"""The activations an SAE learns from: one hook point, many tokens, with the memory checked before collecting.

An SAE wants hundreds of thousands of activation vectors or more. They are collected once,
batch by batch, and kept as one [n_tokens, d] tensor on the CPU (phi4-tiny's residual stream:
192 floats, 768 bytes a token in fp32, so a million tokens take 0.7 GiB). The total is known
before the first forward pass, so a request that cannot fit is refused then, with nothing
allocated (phi4lab.model.memory.preflight).

Position 0 is left out by default: with no BOS token, the first position of every window is a
token seen with no context, and its residual stream is atypical (notebook 05's attention sinks
sit there); an SAE would spend latents on it.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from phi4lab.model.guards import check_hook, check_tokens
from phi4lab.model.memory import preflight


@torch.no_grad()
def collect(model, tokens: torch.Tensor, hook_name: str | list[str], *, batch_size: int = 32, skip_first: bool = True,
            dtype: torch.dtype = torch.float32, progress: bool = True,
            memory_budget_bytes: int | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
    """[n_windows * n_positions, d]: `hook_name`'s activation at every position of every window of `tokens`.

    tokens: [n_windows, window] token ids. skip_first: drop position 0 of each window (see above).
    hook_name: one hook point, or a list of them, collected in the same forward passes (then a dict).
    """
    tokens = check_tokens(model, tokens)
    names = [hook_name] if isinstance(hook_name, str) else list(hook_name)
    if not names:
        raise ValueError("give at least one hook name")
    for name in names:
        check_hook(model, name)
    n, T = tokens.shape
    keep = slice(1, None) if skip_first else slice(None)
    positions = T - 1 if skip_first else T
    if positions < 1:
        raise ValueError("each window needs at least 2 tokens when skip_first=True (position 0 is left out)")
    _, probe = model.run_with_cache(tokens[:1, :2], names_filter=lambda name: name in names)
    widths = {name: probe[name].shape[-1] for name in names}
    need = n * positions * sum(widths.values()) * torch.tensor([], dtype=dtype).element_size()
    preflight(need, what=f"{n * positions:,} activations of {', '.join(names)} ({dtype})",
              budget_bytes=memory_budget_bytes,
              advice="Collect fewer tokens, or use dtype=torch.bfloat16 (half the memory).")
    out = {name: torch.empty(n, positions, d, dtype=dtype) for name, d in widths.items()}
    device = next(model.parameters()).device
    for start in tqdm(range(0, n, batch_size), desc=f"collecting {', '.join(names)}", disable=not progress, leave=False):
        batch = tokens[start:start + batch_size].to(device)
        _, cache = model.run_with_cache(batch, names_filter=lambda name: name in names)
        for name in names:
            out[name][start:start + len(batch)] = cache[name][:, keep].to("cpu", dtype)
    flat = {name: a.reshape(n * positions, -1) for name, a in out.items()}
    return flat[names[0]] if isinstance(hook_name, str) else flat
