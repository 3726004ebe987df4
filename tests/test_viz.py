"""Attention views: exact round trip through the page's PNGs, offline pages, GQA grouping, static fallbacks."""

import base64
import re

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from phi4lab.analysis import heads  # noqa: E402
from phi4lab.viz import attention as viz  # noqa: E402
from phi4lab.viz import png  # noqa: E402


def causal_softmax(L=2, H=8, T=12, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(L, H, T, T, generator=g) * scale
    return logits.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_quantisation_error_is_within_half_a_level_and_the_mask_is_its_own_code():
    p = causal_softmax(1, 1, 40)[0, 0]
    codes = png.quantise(p)
    assert (codes[torch.ones(40, 40, dtype=torch.bool).triu(1)] == png.MASKED).all()
    assert (codes[torch.ones(40, 40, dtype=torch.bool).tril()] <= png.LEVELS).all()
    assert (png.dequantise(codes) - p).abs().max() <= 0.5 / png.LEVELS + 1e-7


def test_palette_colours_are_unique_so_hover_can_read_weights_back():
    for contrast in ("sqrt", "linear"):
        colours = png.palette(contrast)
        assert len(colours) == 256 and len(set(colours)) == 256
    with pytest.raises(ValueError, match="contrast"):
        png.palette("log")


def test_the_page_holds_every_head_and_its_weights_read_back_within_1_over_255():
    p = causal_softmax(2, 8, 30)
    view = viz.attention_heads(p, None, layer=1, n_kv_heads=2)
    images = pngs(view.html())
    assert len(images) == 8
    for h, data in enumerate(images):
        back = png.dequantise(png.decode_png(data))
        assert (back - p[1, h]).abs().max() <= 1 / 255


def test_pages_are_self_contained():
    page = viz.attention_head(causal_softmax(1, 2, 10), [f"t{i}" for i in range(10)], 0, 1).html()
    assert "http://" not in page and "https://" not in page          # no CDN, no fetch
    assert "<script src" not in page
    assert page.count("<img") == 1 and "t9" in page                  # labels shown on a short prompt


def test_long_prompt_all_heads_view_stays_small():
    # The benchmark's size goal (3 MB for 512 tokens x 32 heads) on a hard, noisy pattern.
    # Bytes are deterministic, unlike time, so this one belongs in a test.
    p = causal_softmax(1, 32, 512, seed=1)
    view = viz.attention_heads(p, None, 0, n_kv_heads=8)
    assert view.payload_bytes < 3_000_000
    assert "<div" in view.html() and view.html().count("<img") == 32


def test_gqa_grouping_frames_each_kv_group_and_measures_divergence():
    T = 10
    p = causal_softmax(1, 4, T)
    p[0, 1] = p[0, 0]                                  # group 0: two identical heads
    eye = torch.eye(T)
    p[0, 2] = eye                                      # group 1: one head looks at itself...
    p[0, 3] = 0
    p[0, 3, :, 0] = 1                                  # ...the other at the first token
    div = heads.kv_group_divergence(p, 2)
    assert div[0, 0] == pytest.approx(0.0, abs=1e-6)
    # rows differ everywhere except query 0 (both look at token 0): 1 bit on T-1 of T rows
    assert div[0, 1] == pytest.approx((T - 1) / T, abs=1e-5)
    page = viz.attention_heads(p, None, 0, n_kv_heads=2).html()
    assert page.count('class="group"') == 2 and "divergence 1.00 bits" not in page
    assert "KV head 1: heads 2-3, divergence 0.90 bits" in page
    assert 'class="gqa"' in page                                         # the toggle
    assert 'class="gqa"' not in viz.attention_heads(p, None, 0).html()   # nothing to group


def test_overview_marks_group_boundaries_and_shows_values():
    scores = torch.tensor([[0.1, 0.2, 0.9, 0.0], [0.3, 0.0, 0.0, 0.5]])
    page = viz.head_overview(scores, n_kv_heads=2, score_name="induction").html()
    assert page.count('class="gsep"') == 3                 # header + 2 layers, at head 2
    assert 'title="L0H2 induction 0.900"' in page


def test_static_fallbacks(tmp_path):
    p = causal_softmax(2, 4, 8)
    views = [viz.attention_head(p, None, 1, 3), viz.attention_heads(p, None, 0, n_kv_heads=2),
             viz.head_overview(p.mean((-1, -2)), n_kv_heads=2)]
    for i, v in enumerate(views):
        fig = v.figure()
        assert len(fig.axes[0].images) == 1
        v.save(tmp_path / f"v{i}.png")
        v.save(tmp_path / f"v{i}.svg")
        v.save(tmp_path / f"v{i}.html")
        assert (tmp_path / f"v{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (tmp_path / f"v{i}.svg").read_bytes()[:500]
        assert (tmp_path / f"v{i}.html").read_text().startswith("<!doctype html>")
    assert len(views[1].figure().axes) == 4          # one panel per head
    with pytest.raises(ValueError, match=".html, .png or .svg"):
        views[0].save(tmp_path / "v.pdf")


def test_bad_inputs_get_clear_errors():
    p = causal_softmax(2, 4, 6)
    with pytest.raises(IndexError, match="layer 2 is out of range.*0..1"):
        viz.attention_head(p, None, 2, 0)
    with pytest.raises(IndexError, match="head 4 is out of range.*0..3"):
        viz.attention_head(p, None, 0, 4)
    with pytest.raises(ValueError, match="5 token labels for a 6-token pattern"):
        viz.attention_head(p, list("abcde"), 0, 0)
    with pytest.raises(ValueError, match="batch of 2 prompts"):
        viz.patterns_from(torch.stack([p, p], 1))
    with pytest.raises(ValueError, match="cannot share 3 key/value heads"):
        viz.attention_heads(p, None, 0, n_kv_heads=3)
    with pytest.raises(ValueError, match="empty"):
        viz.patterns_from(torch.zeros(1, 1, 0, 0))
    with pytest.raises(IndexError, match="query 6 is out of range"):
        viz.token_view(p, list("abcdef"), 0, 0, 6)
    with pytest.raises(KeyError, match="no attention patterns"):
        viz.patterns_from({"blocks.0.hook_resid_post": torch.zeros(1)})


def test_explorer_widget_redraws_from_one_forward_pass():
    import phi4lab
    model = phi4lab.load(config=phi4lab.config.scaled(d_model=64), seed=0)
    box = viz.explore(model, "one two three two three")
    view, grouped = box.children[0].children
    layer, head, query = box.children[1].children
    assert layer.max == 1 and head.max == 7 and query.max == query.value
    assert head.disabled and query.disabled                  # the layer view needs neither
    view.value = "token"
    assert not head.disabled and not query.disabled
    with pytest.raises(ValueError, match="empty"):
        viz.explore(model, "")
    with pytest.raises(ValueError, match="at most 4"):
        viz.explore(model, "one two three two three", max_tokens=4)


def test_token_view_shades_by_attention_and_greys_the_future():
    p = torch.zeros(1, 1, 3, 3)
    p[0, 0] = torch.tensor([[1, 0, 0], [0.25, 0.75, 0], [0.5, 0.25, 0.25]])
    page = viz.token_view(p, ["a", "b", "c"], 0, 0, 1)
    assert 'title="key 1: 0.750"' in page and 'title="key 2: 0.000"' in page
    assert page.count("color:#aaa") == 1                      # only the future token is greyed


HOSTILE = ["</SCRIPT/><svg/onload=window.__pwned=1>", "\"><img src=x onerror=window.__pwned=1>",
           "</script><script>window.__pwned=1</script>", "&lt;b&gt;", "\u2028\u2029"]


def hostile_views():
    """Every attention view, with hostile strings wherever text reaches the page."""
    p = causal_softmax(L=1, H=2, T=len(HOSTILE))[:, None].squeeze(1)
    labels = list(HOSTILE)
    return [viz.attention_head(p, labels, 0, 0), viz.attention_heads(p, labels, 0, n_kv_heads=1),
            viz.head_overview(torch.rand(2, 4), n_kv_heads=2, score_name=HOSTILE[1], vmax=1.0)]


def test_hostile_labels_stay_text_in_every_view():
    for view in hostile_views():
        page = view.html()
        # our one script, closed once; no tag or attribute from the labels
        assert page.count("<script>") == 1 and page.lower().count("</script") == 1
        assert "<svg" not in page and "<img src=x" not in page
        body = page[page.index("<script>") + len("<script>"):page.lower().index("</script")]
        assert "</" not in body and "<svg" not in body.lower()


def test_script_json_round_trips_and_never_closes_a_script():
    import json
    for s in HOSTILE:
        text = viz.script_json([s, {"k": s}])
        assert json.loads(text) == [s, {"k": s}]
        assert "<" not in text and ">" not in text and "&" not in text


def test_views_take_a_model_with_its_text_or_tokens():
    import phi4lab
    model = phi4lab.load("phi4-tiny")
    text = "To be, or not to be"
    ids = model.to_tokens(text)
    expected = viz.patterns_from(model, ids)
    for given in (text, ids, ids[0]):
        head = viz.attention_head(model, given, 3, 3)
        grid = viz.attention_heads(model, given, 2, n_kv_heads=2)
        assert head.tokens == grid.tokens == viz._labels(model.to_str_tokens(ids[0]), ids.shape[-1])
        assert pngs(head.html()) == pngs(viz.attention_head(expected, model.to_str_tokens(ids[0]), 3, 3).html())
    with pytest.raises(ValueError, match="give the text or the token ids"):
        viz.attention_head(model, None)
    with pytest.raises(ValueError, match="empty"):
        viz.attention_heads(model, "")
    with pytest.raises(ValueError, match="batch of 2"):
        viz.attention_head(model, torch.cat([ids, ids]))


def test_the_views_style_and_script_ship_in_the_wheel(tmp_path):
    """The CSS and JS are package data: a wheel (what `pip install phi4lab` gets) must carry them."""
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    from phi4lab.viz import assets

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(root)], check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("phi4lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for asset in ("attention.css", "attention.js", "tokens.css"):
        assert f"phi4lab/viz/assets/{asset}" in names, f"{asset} is missing from the wheel: check package-data"
    page = viz.attention_head(causal_softmax(L=1, H=2, T=4), [str(i) for i in range(4)]).html()
    assert assets.read("attention.css") in page and "%(" not in page   # inlined, the template filled in


class _HostileTokenizer:
    """Every token decodes to one of the hostile strings."""

    def decode(self, ids):
        return HOSTILE[int(ids[0]) % len(HOSTILE)]


def hostile_feature_pages():
    """A feature dashboard and a feature index whose every token label is hostile."""
    import phi4lab
    from phi4lab.dictionaries import SparseAutoencoder, features
    from phi4lab.model.config import scaled
    from phi4lab.viz import features as feature_views

    model = phi4lab.load(config=scaled(d_model=32, n_layers=1), seed=0)
    sae = SparseAutoencoder(32, 64, "topk", k=4, seed=0)
    tokens = torch.randint(0, 1000, (6, 12), generator=torch.Generator().manual_seed(0))
    latents = features.latent_activations(model, sae, tokens, "blocks.0.hook_resid_post")
    live = int((latents > 0).flatten(0, 1).sum(0).argmax())
    hostile = _HostileTokenizer()
    return [feature_views.feature_dashboard(model, sae, latents, tokens, live, name=HOSTILE[0], tokenizer=hostile),
            feature_views.feature_index(model, sae, latents, tokens, which=list(range(10)), name=HOSTILE[1],
                                        tokenizer=hostile)]


def hostile_graph_page():
    """An attribution graph page of a small random model and random transcoders, every token label hostile."""
    import phi4lab
    from phi4lab.dictionaries.graphs import attribute
    from phi4lab.dictionaries.sae import Transcoder
    from phi4lab.model.config import scaled
    from phi4lab.viz.graphs import graph_view

    model = phi4lab.load(config=scaled(d_model=32, n_layers=2), seed=0)
    transcoders = {layer: Transcoder(32, 64, 32, k=4, seed=layer) for layer in range(2)}
    graph = attribute(model, transcoders, torch.arange(5) * 7 + 3)
    return graph_view(graph, _HostileTokenizer(), node_threshold=1.0, edge_threshold=1.0, title=HOSTILE[2])


def test_hostile_token_labels_stay_text_in_the_graph_page():
    page = hostile_graph_page().html()
    assert page.count("<script>") == 1 and page.lower().count("</script") == 1
    lowered = page.lower()
    assert "<img" not in lowered and "<svg/" not in lowered and "&lt;img·src=x·onerror" in page
    assert "http://" not in page and "https://" not in page


def test_invisible_characters_do_not_end_the_graph_svg():
    """visible() marks a zero-width space or a bidi override with an HTML <span>; inside an SVG that tag
    would close the SVG early. The graph page writes them as plain text there."""
    import phi4lab
    from phi4lab.dictionaries.graphs import attribute
    from phi4lab.dictionaries.sae import Transcoder
    from phi4lab.model.config import scaled
    from phi4lab.viz.graphs import graph_view

    class Invisible:
        def decode(self, ids):
            return ["\u200b", "a\u202eb", "\u2066x"][int(ids[0]) % 3]

    model = phi4lab.load(config=scaled(d_model=32, n_layers=2), seed=0)
    transcoders = {layer: Transcoder(32, 64, 32, k=4, seed=layer) for layer in range(2)}
    page = graph_view(attribute(model, transcoders, torch.arange(6) * 5 + 1), Invisible(),
                      node_threshold=1.0, edge_threshold=1.0).html()
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "<span" not in svg and "[U+200B]" in svg and "[U+202E]" in svg
    assert svg.count("data-node=") == page.count("data-node=")           # every node is inside the SVG
    assert '<span class="inv">[U+200B]</span>' in page[page.index("</svg>"):]   # the table keeps the styling


def test_hostile_token_labels_stay_text_in_feature_pages():
    dashboard, index = hostile_feature_pages()
    for view, scripts in ((dashboard, 0), (index, 1)):
        page = view.html()
        assert page.count("<script>") == scripts and page.lower().count("</script") == scripts
        lowered = page.lower()
        assert "<img" not in lowered and "<svg/" not in lowered and "&lt;img·src=x·onerror" in page   # shown, escaped, spaces as ·
        assert "http://" not in page and "https://" not in page                # nothing fetched from anywhere


def test_within_and_across_groups_divergence_on_known_patterns():
    T = 10
    p = causal_softmax(1, 4, T)
    p[0, 1] = p[0, 0]                                  # group 0: two identical heads
    p[0, 2] = torch.eye(T)                             # group 1: one head looks at itself...
    p[0, 3] = 0
    p[0, 3, :, 0] = 1                                  # ...the other at the first token
    pairs = heads.head_pair_divergence(p)
    assert pairs.shape == (1, 4, 4) and torch.allclose(pairs, pairs.transpose(1, 2))
    assert torch.allclose(pairs[0].diagonal(), torch.zeros(4), atol=1e-6)
    # the pairs inside each group equal kv_group_divergence's, and the averages split by group
    assert torch.allclose(torch.stack([pairs[0, 0, 1], pairs[0, 2, 3]]), heads.kv_group_divergence(p, 2)[0], atol=1e-6)
    within, across = heads.within_and_across_groups(p, 2)
    assert within[0] == pytest.approx((pairs[0, 0, 1] + pairs[0, 2, 3]).item() / 2, abs=1e-6)
    assert across[0] == pytest.approx(pairs[0, :2, 2:].mean().item(), abs=1e-6)
    with pytest.raises(ValueError, match="at least two heads per group"):
        heads.within_and_across_groups(p, 4)
