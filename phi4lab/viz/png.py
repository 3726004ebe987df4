"""Attention weights as palette PNGs: the codec behind phi4lab's attention views.

A head's pattern is a [query, key] grid of weights in [0, 1]. Each weight is stored
as one byte, round(p * 254), and the causal mask (key after query) as 255; the bytes
are a palette PNG whose 256 colours are the colour map. The picture is then small
(zlib compresses the masked half and the near-zero weights to almost nothing), draws
without JavaScript, and still holds every weight: hover read-out and `decode_png`
recover it within 1 / 508.
"""

from __future__ import annotations

import io

import torch

LEVELS = 254          # weights are stored as round(p * LEVELS); the error is at most 1 / (2 * LEVELS)
MASKED = 255          # palette index of the causal mask (key after query)
_MASK_RGB = (232, 232, 232)


def quantise(pattern: torch.Tensor) -> torch.Tensor:
    """[Q, K] weights -> uint8 codes: round(p * 254), and 255 where key > query (the causal mask)."""
    codes = (pattern.clamp(0, 1) * LEVELS).round().to(torch.uint8)
    n_q, n_k = pattern.shape
    future = torch.ones(n_q, n_k, dtype=torch.bool).triu(1 + n_k - n_q)
    codes[future] = MASKED
    return codes


def dequantise(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes -> weights (the mask reads as 0)."""
    p = codes.float() / LEVELS
    p[codes == MASKED] = 0.0
    return p


def palette(contrast: str = "sqrt") -> list[tuple[int, int, int]]:
    """The 256-colour map: white (0) to dark blue (1), then the mask colour.

    contrast="sqrt" spreads the small weights apart (most attention weights
    are small); "linear" maps colour to weight directly. Only the colours
    change: the stored codes, and hover values, are linear either way.
    """
    import matplotlib

    if contrast not in ("sqrt", "linear"):
        raise ValueError(f"contrast must be 'sqrt' or 'linear', got {contrast!r}")
    cmap = matplotlib.colormaps["Blues"]
    colours = []
    for i in range(LEVELS + 1):
        x = i / LEVELS
        r, g, b, _ = cmap(0.03 + 0.97 * (x ** 0.5 if contrast == "sqrt" else x))
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    # Neighbouring weights can round to the same 8-bit colour. The hover
    # read-out maps a colour back to its index, so nudge repeats until each
    # colour is unique (a change of 1/255 in one channel: invisible).
    seen = {_MASK_RGB}
    for i, (r, g, b) in enumerate(colours):
        step = 0
        while (r, g, b) in seen:
            step += 1
            r, g = max(r - step % 2, 0), max(g - (step + 1) % 2, 0)
        colours[i] = (r, g, b)
        seen.add((r, g, b))
    return colours + [_MASK_RGB]


def png_bytes(codes: torch.Tensor, colours: list[tuple[int, int, int]]) -> bytes:
    """A palette PNG whose pixel (q, k) has palette index codes[q, k]."""
    from PIL import Image

    img = Image.fromarray(codes.numpy(), mode="L")
    img.putpalette([c for rgb in colours for c in rgb])      # an "L" image with a palette becomes "P"
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)    # measured: 2.6x faster than level 6 for 15% more bytes
    return buf.getvalue()


def decode_png(data: bytes) -> torch.Tensor:
    """The palette indices of a PNG made by png_bytes (to check the round trip)."""
    import numpy as np
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    if img.mode != "P":
        raise ValueError(f"not a palette PNG (mode {img.mode})")
    return torch.from_numpy(np.array(img))
