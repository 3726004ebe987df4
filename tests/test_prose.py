"""The guard against stale prose: every number a learner reads is one the notebook computed.

nbval compares a notebook's outputs with the stored ones, never its prose, so a
retrained model can leave an explanation wrong while every cell still passes.
This test reads each markdown cell, finds the numbers in it, and asks of each
one: does it appear in an output of the same notebook, at the precision the
prose gives it ("0.97" matches a printed 0.9663, "67" a printed 66.95, "12.8M"
a printed 12,800,000)? Or is it a setting the notebook's own code states (a
literal such as ``steps=150``)? Or is it a published fact, listed with its
public source in ``course/cited_facts.json``? A number that is none of these
fails the test, with the cell and the sentence it stands in.

What it does not read as a claim, and why:
- text in backticks, code blocks, HTML tags and links (names and code, not claims);
- digits inside names: Phi-4, L3H3, bf16, cl100k, arXiv ids, <|dummy_85|>, "16-bit";
- section and exercise numbers, "notebook 04", "§2", "Table 11", "chapter 3";
- years (1950-2029 written without a comma), used in citations;
- the exercise headers' time estimates ("> Difficulty ... about 10 minutes") and
  the "**Run time:**" line: those are the machine's business (see conftest.py,
  which times every notebook under nbval).
Numbers are compared by absolute value: the prose says "falls by 0.3" where the
output prints -0.3. A number after "about", "around", "roughly", "≈" may be 5% off.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

COURSE = Path(__file__).resolve().parents[1] / "course"
NOTEBOOKS = sorted(COURSE.glob("[0-9][0-9]_*.ipynb"))
CITED = json.loads((COURSE / "cited_facts.json").read_text())

SCALE = {"K": 1e3, "k": 1e3, "thousand": 1e3, "M": 1e6, "million": 1e6, "B": 1e9, "billion": 1e9,
         "T": 1e12, "trillion": 1e12, "G": 1e9}
NUMBER = re.compile(
    r"(?P<sign>[-−+])?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-−+]?\d+)?)"
    r"(?P<pct>\s?%)?(?:(?P<scale>[KkMBTG])\b|[\s-](?P<word>thousand|million|billion|trillion)\b)?")
# Stripped from prose before numbers are read (see the module docstring).
NOT_CLAIMS = [
    r"```.*?```", r"`[^`]*`", r"<[^>]+>", r"\]\([^)]*\)", r"https?://\S+", r"arXiv:\s?\S+",
    r"^#+\s*\d+(?:\.\d+)*\.?", r"^>\s*Difficulty.*$", r"\*\*Run time:?\*\*[^.]*\.(?:[^.]*minutes?[^.]*\.)?",
    r"(?i)(?:\b(?:notebook|exercise|section|table|figure|fig\.|chapter|appendix|part|p\.|eq\.?)|§)\s*\d+(?:\.\d+)*",
    r"(?i)\b(?:notebooks|exercises|sections|tables|figures|chapters|pp\.)\s*\d+(?![.,]\d)"
    r"(?:\s*(?:,|and|or|to|–|-)\s*\d+(?![.,]\d))*",
    r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)\s+(?:19|20)\d\d\b",
    # a year, unless a word follows it as a count's unit would ("2000 steps" is a claim)
    r"\b(?:19[5-9]\d|20[0-2]\d)[a-z]?\b(?![,.]\d)(?!\s+(?!(?:and|or|to|the|with|in|on|for|as|by)\b)[a-z])",
    r"(?<![\w.-])[A-Za-z_]+[-.]?\d[\w.-]*", r"(?<![\w.-])\d+[A-Za-z_]+\d\w*", r"\b\d+-bit\b",  # Phi-4, L3H3, fp16, 3.5B-style ids
]
NOT_CLAIMS = [re.compile(p, re.S | re.M) for p in NOT_CLAIMS]


def _value(m: re.Match) -> tuple[float, float]:
    """(value, half-width of the printed precision) of a number match, scale applied."""
    text = m["num"].replace(",", "")
    scale = SCALE.get(m["scale"] or m["word"] or "", 1.0)
    if "e" in text.lower():
        mantissa, _, exp = text.lower().replace("−", "-").partition("e")
        decimals = len(mantissa.partition(".")[2])
        return float(mantissa) * 10 ** int(exp) * scale, 0.5 * 10 ** (int(exp) - decimals) * scale
    decimals = len(text.partition(".")[2])
    return float(text) * scale, 0.5 * 10 ** -decimals * scale


def _inside_a_word(text: str, m: re.Match) -> bool:
    # "x2" or "v1.5" is a name; "1-in-40,000" and "−0.08" are numbers (a sign is not a letter)
    if m["sign"]:
        return False
    before = text[max(0, m.start() - 1):m.start()]
    return bool(before) and (before.isalnum() or before in "_.")


def numbers_in(text: str) -> list[tuple[float, float, bool]]:
    """(value, precision, is_percent) for every number in text."""
    out = []
    for m in NUMBER.finditer(text):
        if _inside_a_word(text, m):
            continue
        value, precision = _value(m)
        out.append((abs(value), precision, bool(m["pct"])))
    return out


# "about 1,500" claims less than "1,500": it matches a printed 1,536 (within 5%).
APPROXIMATE = re.compile(r"(?:\babout|\baround|\broughly|\bnearly|\balmost|≈|~)\s*$", re.I)


def claims(markdown: str) -> list[tuple[str, float, float, bool]]:
    """(the number as written, value, precision, is_percent) for the claims in a markdown cell."""
    text = markdown
    for pattern in NOT_CLAIMS:
        text = pattern.sub(" ", text)
    out = []
    for m in NUMBER.finditer(text):
        if _inside_a_word(text, m):
            continue
        value, precision = _value(m)
        if APPROXIMATE.search(text[max(0, m.start() - 12):m.start()]):
            precision = max(precision, 0.05 * abs(value))
        out.append((m.group(0).strip(), abs(value), precision, bool(m["pct"])))
    return out


def _outputs_text(cell) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if "text" in o:
            parts.append("".join(o["text"]))
        data = o.get("data", {})
        if "text/plain" in data:
            parts.append("".join(data["text/plain"]))
        if o.get("output_type") == "error":
            parts.append(o.get("evalue", ""))
    return "\n".join(parts)


def evidence(nb: dict) -> list[tuple[float, float, bool]]:
    """Every number the notebook printed, and every literal its code states."""
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            found += numbers_in(_outputs_text(cell))
            found += numbers_in("".join(cell["source"]))
    return found


def cited(notebook: str) -> list[tuple[float, float, bool]]:
    entries = CITED.get(notebook, []) + CITED["every notebook"]
    return [v for e in entries for v in numbers_in(e["number"])]


def supported(value: float, precision: float, pct: bool, pool) -> bool:
    tol = precision * (1 + 1e-9) + 1e-12
    for v, _, v_pct in pool:
        candidates = (v, v * 100) if pct and not v_pct else (v,)
        if any(abs(c - value) <= tol for c in candidates):
            return True
    return False


def unsupported(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    pool = evidence(nb) + cited(path.name)
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        for written, value, precision, pct in claims(source):
            if not supported(value, precision, pct, pool):
                at = source.find(written)
                context = source[max(0, at - 60):at + len(written) + 40].replace("\n", " ")
                problems.append(f"cell {i}: {written!r} in \u2026{context}\u2026")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_prose_is_computed_or_cited(path):
    problems = unsupported(path)
    assert not problems, (
        f"{path.name}: {len(problems)} numbers in the prose appear in no output of the notebook, in no literal "
        "of its code, and not in course/cited_facts.json. Re-read the text against the outputs, or cite the "
        "public source:\n  " + "\n  ".join(problems))


def test_cited_facts_have_public_sources_and_are_used():
    names = {p.name for p in NOTEBOOKS} | {"every notebook", "_about"}
    assert set(CITED) <= names, f"unknown notebooks in cited_facts.json: {sorted(set(CITED) - names)}"
    # the claims of each notebook's markdown, read cell by cell as the main test reads them
    prose = {p.name: [c for cell in json.loads(p.read_text())["cells"] if cell["cell_type"] == "markdown"
                      for c in claims("".join(cell["source"]))] for p in NOTEBOOKS}
    every = [c for found in prose.values() for c in found]
    for notebook, entries in CITED.items():
        if notebook == "_about":
            continue
        for e in entries:
            assert e.get("fact") and e.get("source"), f"{notebook}: {e} needs a fact and a source"
            assert not re.search(r"phi4-facts|methods notes|methods\.md|shared/|course's", e["source"]), (
                f"{notebook}: {e['number']} cites a file the learner does not have: {e['source']!r}")
            values = [(v, p, pct) for _, v, p, pct in (every if notebook == "every notebook" else prose[notebook])]
            found = numbers_in(e["number"])
            assert len(found) == 1, f"{notebook}: cite one number per entry, not {e['number']!r}"
            (v, p, pct), = found
            assert any(abs(v - w) <= max(p, q) * (1 + 1e-9) for w, q, _ in values), (
                f"{notebook}: the cited {e['number']!r} ({e['fact']}) appears in no prose any more; remove it")


def test_the_guard_reads_numbers_as_a_learner_would():
    # a stale figure fails, a rounded one passes, names and citations are not claims
    text = "The best head scores 0.97 (Olsson et al. 2022, §3), in Phi-4 and L3H3; 12.8M tokens; 55% synthetic."
    written = [w for w, *_ in claims(text)]
    assert written == ["0.97", "12.8M", "55%"]
    pool = numbers_in("best 0.9663 of 12,800,000 tokens, share 0.554")
    assert all(supported(v, p, pct, pool) for _, v, p, pct in claims(text))
    assert not supported(*claims("1-in-40,000")[-1][1:], numbers_in("P = 1.43e-06"))
    assert [w for w, *_ in claims("See notebook 04 and exercises 3 and 4; `hook_z` at 1e-4.")] == ["1e-4"]
    (_, v, p, pct), = claims("past about 1,500 tokens")
    assert supported(v, p, pct, numbers_in("from 1,536 tokens on")) and not supported(v, p, pct, numbers_in("1,600"))
    (_, v, p, pct), = claims("past 1,500 tokens")
    assert not supported(v, p, pct, numbers_in("from 1,536 tokens on"))
    # a scale letter only right after the digits; one number after a singular reference; counts are not years
    assert [(w, v) for w, v, *_ in claims("10 K/V heads, 12.8M tokens")] == [("10", 10.0), ("12.8M", 12.8e6)]
    assert [w for w, *_ in claims("In section 3, 16 pairs agree (report, p. 7 and 40% synthetic)")] == ["16", "40%"]
    assert [w for w, *_ in claims("trained for 2000 steps (Broder 1997; December 2024)")] == ["2000"]
    assert [w for w, *_ in claims("the figures 0.94 and 0.96")] == ["0.94", "0.96"]
