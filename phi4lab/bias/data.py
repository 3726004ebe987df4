"""Probe data: sentence frames, probe words, and the statistics they are compared with.

A *template probe* fills a frame such as "The {occupation} said that" with an
occupation and asks which word the model expects next: " he" or " she". Across
many frames and occupations this measures the associations the model learned,
without anyone having to write (and argue about) stereotype sentences.

Everything here is data the project authored or numbers with a public source,
kept in ``data/bias/`` and checked against pinned hashes:

- ``templates.json``: 17 pronoun frames (those of Vig et al. 2020's neuron
  experiments), 6 name frames with 6 female and 6 male names, 12 pairs of
  gendered nouns (woman/man, queen/king, ...) for the linear probes and the
  mediation experiment, and the frames and endings of the fine-tuning slices.
- ``occupations_bls.tsv``: for 60 occupations, the share of women among
  employed people in the US, from the Bureau of Labor Statistics' Current
  Population Survey, Table 11 ("Employed persons by detailed occupation, sex,
  race, and Hispanic or Latino ethnicity", https://www.bls.gov/cps/cpsaat11.htm),
  annual averages of 2015 or 2016 as compiled by Winogender (Rudinger et al.
  2018) and used by Vig et al. 2020.

Why not CrowS-Pairs or StereoSet? Their licence is share-alike (CC BY-SA 4.0),
the CrowS-Pairs authors ask that it not be used for training, and the
authors warn about unreliable pairs. Where you have them, score
each pair with ``word_logprobs``-style sums over the whole sentence.
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import random
from dataclasses import dataclass

from phi4lab.model.integrity import check_sha256
from phi4lab.paths import DATA_DIR

SLOT = "{occupation}"
TEMPLATES_SHA256 = "33627b879d571e0c2c5255c626282fac90453b40f75922f1ee6af8b157d957d3"
OCCUPATIONS_SHA256 = "51328a3cf6933df6730adfce7080052fa90d3891c42c28e64a4d7b217794b6be"
BLS_SOURCE = ("US Bureau of Labor Statistics, Current Population Survey, Table 11 (women, percent of total "
              "employed), annual averages 2015/2016, https://www.bls.gov/cps/cpsaat11.htm; as compiled in "
              "Winogender's occupation statistics (Rudinger et al. 2018)")


class BiasDataError(RuntimeError):
    """A bundled probe file is missing or not the one phi4lab was written against."""


class UnknownOccupationError(KeyError):
    def __str__(self):                      # KeyError would print the message with quotes around it
        return self.args[0]


@dataclass(frozen=True)
class Occupation:
    name: str
    pct_female: float      # women, percent of employed (BLS CPS Table 11)
    year: int              # the annual average the number comes from


def _checked(name: str, sha: str):
    path = DATA_DIR / "bias" / name
    if not path.exists():
        raise BiasDataError(f"{path} is missing; it ships with phi4lab in data/bias/ (set PHI4LAB_DATA if you "
                            "moved the data folder)")
    check_sha256(path, sha, BiasDataError, f"the {name} phi4lab ships",
                 "restore it with `git checkout data/bias`")
    return path


@functools.cache
def templates() -> dict:
    """The frames and word lists of templates.json (hash-checked)."""
    return json.loads(_checked("templates.json", TEMPLATES_SHA256).read_text())


@functools.cache
def occupation_table() -> dict[str, Occupation]:
    """The 60 occupations with their BLS share of women and its year (hash-checked)."""
    with open(_checked("occupations_bls.tsv", OCCUPATIONS_SHA256), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["occupation"]: Occupation(r["occupation"], float(r["bls_pct_female"]), int(r["bls_year"]))
            for r in rows}


def occupations() -> list[str]:
    return list(occupation_table())


def occupation(name: str) -> Occupation:
    """One occupation's statistics; an occupation not in the table is refused with the closest ones."""
    table = occupation_table()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3)
        raise UnknownOccupationError(
            f"{name!r} is not in the BLS table phi4lab ships ({len(table)} occupations"
            + (f"; did you mean {', '.join(close)}?" if close else "; see phi4lab.bias.occupations()")
            + "). Without a statistic it cannot be compared; probe it with phi4lab.bias.preference instead.")
    return table[name]


def check_frame(frame: str) -> str:
    """A frame must contain the slot exactly once, and end where the probe word should come."""
    if not isinstance(frame, str):
        raise TypeError(f"a frame is a str, got {type(frame).__name__}")
    count = frame.count(SLOT)
    if count != 1:
        what = "has no" if count == 0 else f"has {count}"
        raise ValueError(f"the frame {frame!r} {what} {SLOT} slot; a frame needs exactly one, for example "
                         "'The {occupation} said that'")
    if frame.endswith(" "):
        raise ValueError(f"the frame {frame!r} ends with a space: leave it off, the probe words carry their "
                         "own leading space (' he'), as the tokenizer sees them in running text")
    return frame


def fill(frame: str, occupation: str) -> str:
    return check_frame(frame).replace(SLOT, occupation)


def slice_sentences(rule: str, n: int, seed: int = 0, definitional: float = 0.25) -> list[str]:
    """n training sentences "The {occupation} {frame} {pronoun} {ending}" from the slice frames.

    rule picks the pronoun for an occupation with BLS share p of women:
    "stereotyped" says "she" with probability p, "counter" with probability 1 - p,
    "balanced" with probability 1/2. A fraction `definitional` of the sentences
    use a gendered noun (queen ... she) instead, always with the agreeing pronoun.
    The slice frames are disjoint from the probe frames, so a probe measures
    what generalised, not what was memorised.
    """
    if rule not in ("stereotyped", "counter", "balanced"):
        raise ValueError(f"rule must be 'stereotyped', 'counter' or 'balanced', not {rule!r}")
    t, table = templates(), occupation_table()
    rng = random.Random(seed)
    names = list(table)
    out = []
    for _ in range(n):
        frame, ending = rng.choice(t["slice_frames"]), rng.choice(t["slice_endings"])
        if rng.random() < definitional:
            female, male = rng.choice(t["gendered_subjects"])
            subject, is_female = (female, True) if rng.random() < 0.5 else (male, False)
        else:
            subject = rng.choice(names)
            p = {"stereotyped": table[subject].pct_female / 100, "counter": 1 - table[subject].pct_female / 100,
                 "balanced": 0.5}[rule]
            is_female = rng.random() < p
        out.append(f"{fill(frame, subject)} {'she' if is_female else 'he'} {ending}")
    return out
