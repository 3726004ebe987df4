"""The all-heads attention view of a 512-token, 32-head pattern: page size, build time, error.

phi4lab.viz.attention embeds each head as a palette PNG of quantised weights. We build
the view of two [32, 512, 512] tensors and report the page's bytes, the build
time (best of N), and the largest error of the weights read back from the
page's PNGs:

- "tiny": real patterns, phi4-tiny's 4 layers x 8 heads on 512 tokens of
  Shakespeare, stacked as 32 heads (a trained model: sharp, sparse heads);
- "noisy": softmax of Gaussian logits x 3, a hard case for compression
  (every weight different, none near zero).

Side by side on the same tensors, if installed: CircuitsVis
``attention_heads`` (JSON numbers, a React bundle) and plotly
``px.imshow(facet_col=...)`` with plotly.js inlined (the offline way).

    python benchmarks/attention_view.py [--repeats 3] [--skip-plotly]

Last line: key=value pairs for the tiny tensor, e.g.
``phi4lab_mb=... phi4lab_s=... max_err=... circuitsvis_mb=... ...``.
"""

import argparse
import base64
import re
import time

import torch

import phi4lab
from phi4lab.recipes import corpus as data
from phi4lab.viz import attention as viz
from phi4lab.viz import png


def tiny_patterns(n: int = 512):
    model = phi4lab.load("phi4-tiny")
    plays = [d for d in data.shakespeare_documents() if d.name.endswith("_gut")]
    tokens = model.to_tokens(plays[0].text[:20_000])[:, :n]
    p = viz.patterns_from(model, tokens)                      # [4, 8, n, n]
    return p.reshape(1, -1, n, n), model.to_str_tokens(tokens[0])


def noisy_patterns(n: int = 512, heads: int = 32):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(heads, n, n, generator=g) * 3
    logits = logits.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return logits.softmax(-1)[None], [f"t{i}" for i in range(n)]


def best_of(repeats, fn):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def max_error_from_page(page: str, patterns: torch.Tensor) -> float:
    """Decode every PNG in the page and compare with the weights it shows."""
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == patterns.shape[1], f"{len(pngs)} images for {patterns.shape[1]} heads"
    err = 0.0
    for h, b64 in enumerate(pngs):
        back = png.dequantise(png.decode_png(base64.b64decode(b64)))
        err = max(err, (back - patterns[0, h]).abs().max().item())
    return err


def ours(p, labels, repeats):
    seconds, page = best_of(repeats, lambda: viz.attention_heads(p, labels, 0, n_kv_heads=8).html())
    return dict(mb=len(page.encode()) / 1e6, s=seconds, err=max_error_from_page(page, p))


def circuitsvis(p, labels, repeats):
    try:
        import circuitsvis as cv
    except ImportError:
        return None
    seconds, page = best_of(repeats, lambda: str(cv.attention.attention_heads(attention=p[0], tokens=labels)))
    return dict(mb=len(page.encode()) / 1e6, s=seconds)


def plotly_page(p, repeats):
    import plotly.express as px
    seconds, page = best_of(repeats, lambda: px.imshow(p[0].numpy(), facet_col=0, facet_col_wrap=8)
                            .to_html(include_plotlyjs=True, full_html=True))
    return dict(mb=len(page.encode()) / 1e6, s=seconds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-plotly", action="store_true")
    args = ap.parse_args()
    results = {}
    for name, (p, labels) in (("tiny", tiny_patterns()), ("noisy", noisy_patterns())):
        row = {"phi4lab": ours(p, labels, args.repeats), "circuitsvis": circuitsvis(p, labels, 1)}
        if not args.skip_plotly:
            row["plotly"] = plotly_page(p, 1)
        results[name] = row
        print(f"{name}: [{p.shape[1]} heads, {p.shape[2]} x {p.shape[3]}]")
        for tool, r in row.items():
            if r is None:
                print(f"  {tool:12s} not installed")
                continue
            extra = f"  max error {r['err']:.5f} (bound 1/255 = {1 / 255:.5f})" if "err" in r else ""
            print(f"  {tool:12s} {r['mb']:8.2f} MB  {r['s']:7.3f} s{extra}")
        for tool, r in row.items():
            if r is not None and tool != "phi4lab":
                print(f"  {tool} / phi4lab: {r['mb'] / row['phi4lab']['mb']:.0f}x the bytes, "
                      f"{r['s'] / row['phi4lab']['s']:.1f}x the time")
    t = results["tiny"]
    fields = [f"phi4lab_mb={t['phi4lab']['mb']:.3f}", f"phi4lab_s={t['phi4lab']['s']:.3f}",
              f"max_err={t['phi4lab']['err']:.5f}", f"noisy_mb={results['noisy']['phi4lab']['mb']:.3f}",
              f"noisy_s={results['noisy']['phi4lab']['s']:.3f}"]
    for tool in ("circuitsvis", "plotly"):
        r = t.get(tool)
        fields += [f"{tool}_mb={r['mb']:.3f}", f"{tool}_s={r['s']:.3f}"] if r else [f"{tool}=not_installed"]
    print(" ".join(fields))


if __name__ == "__main__":
    main()
