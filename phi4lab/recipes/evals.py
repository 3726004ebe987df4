"""The recipe for the evaluation tasks that ship in ``data/evals/``: benchmarks phi4-tiny can partly do.

``phi4lab build-evals`` (or ``python -m phi4lab.recipes.evals``) rebuilds the JSONL files from the
course corpus's **validation** split (documents phi4-tiny never trained on), with a fixed seed:

* ``shakespeare_cloze``: multiple choice. Two lines of verse and a third without its last word; the
  choices are that word and three last words of other lines (``acc``, ``acc_norm``).
* ``stdlib_calls``: multiple choice. Up to eight lines of a standard-library file and the start of a
  line up to a function call; the choices are the called name and three other names the same file
  calls (no space before the choice: the YAML's ``target_delimiter`` is empty).
* ``stdlib_recall``: extractive. A passage of four lines of code, and as the question the start of
  one of its last three lines (its indentation and first two words, which begin no other line of the
  passage); the answer is the rest of that line. Asked with the passage (grounded: copying is enough,
  which phi4-tiny's induction heads do) and without it (``stdlib_recall_closed_book``). Why code:
  phi4-tiny copies a repeated line of code often, a repeated line of verse almost never (its
  Shakespeare prior wins over the copy; notebook 13 measures both).
* ``perplexity_prose``, ``perplexity_code``: passages for perplexity per domain (lm-eval's
  ``loglikelihood_rolling``).

One validation play is left out: All's Well That Ends Well. The corpus keeps its modern Gutenberg
edition in validation and its First Folio edition in training (the near-duplicate step did not pair
them: old spelling changes most shingles), so its lines are not unseen text, and the n-gram check
below would not notice (the same old spelling breaks the n-grams). Macbeth's Folio edition was dropped
as a near-duplicate, so Macbeth is held out for real. ``SAME_PLAY_IN_TRAINING`` names the pair, and a
test checks it against the corpus.

Then the benchmark is decontaminated **against phi4-tiny's training split** with Phi-4's check
(``phi4lab.evaluation.decontamination``): an item whose text shares a 13-gram with a training
document, or whose 7-gram overlap ratio reaches the partial threshold, is dropped before sampling.
That is what Phi-4's authors did the other way round (they cleaned the training data of benchmark
items), and it is why the planted-contamination experiment of notebook 13 can demand that the
detector finds the planted items *and no others*.

``evaluation.harness.SHIPPED_TASKS`` pins each file's sha256; a test rebuilds them bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from phi4lab.evaluation.decontamination import Decontaminator
from phi4lab.paths import DATA_DIR

OUT_DIR = DATA_DIR / "evals"
SEED = 0
ITEMS = {"shakespeare_cloze": 120, "stdlib_calls": 120, "stdlib_recall": 80,
         "perplexity_prose": 12, "perplexity_code": 12}
SAME_PLAY_IN_TRAINING = {"prose/alls_well_that_ends_well_gut": "prose/all_is_well_that_ends_well_gut_f"}
FRONT_MATTER = 80             # a play's first lines: title, cast list, notes (not verse)
PASSAGE_CHARS = 1200          # perplexity passages: whole lines up to about this many characters

_LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z][a-z']{2,})([^\w\s]*)$")
_CALL = re.compile(r"(?<![\w.])(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w{3,})\(")
_TWO_WORDS = re.compile(r"\s*\S+\s+\S+")
_KEYWORDS = {"print", "self", "super", "isinstance", "len", "str", "int", "list", "dict", "tuple", "range"}


def _verse(line: str) -> bool:
    """A line of verse or prose speech: not blank, not a speaker heading or a stage direction."""
    s = line.strip()
    return bool(s) and not s.isupper() and not s.startswith("[") and len(s.split()) >= 4


def _region(index: int, task: str) -> bool:
    # Code files serve two tasks: calls and recall items come from alternating 40-line stretches,
    # so no line serves both.
    return (index // 40) % 2 == (0 if task == "calls" else 1)


def cloze_candidates(docs) -> list[dict]:
    out = []
    for doc in docs:
        lines = doc.text.split("\n")
        for i in range(FRONT_MATTER, len(lines)):
            if not all(_verse(x) for x in lines[i - 2:i + 1]):
                continue
            m = _LAST_WORD.match(lines[i].strip())
            if not m or len(lines[i].split()) < 6:
                continue
            out.append({"doc": doc.name, "line": i, "prefix": "\n".join(lines[i - 2:i] + [m.group(1)]),
                        "word": m.group(2), "text": "\n".join(lines[i - 2:i + 1])})
    return out


def recall_candidates(docs) -> list[dict]:
    """Four-line passages of code; the question is the start of one line (unique in the passage)."""
    out = []
    for doc in docs:
        lines = doc.text.split("\n")
        for i in range(0, len(lines) - 3, 4):
            block = lines[i:i + 4]
            if not _region(i, "recall") or not all(len(x.split()) >= 3 and not x.lstrip().startswith("#")
                                                   for x in block):
                continue
            # the cue must begin no other line of the passage, or the copy it asks for is ambiguous
            which = [j for j in range(1, 4)
                     if not any(block[o].startswith(_cue(block[j])) for o in range(4) if o != j)]
            if which:
                out.append({"doc": doc.name, "line": i, "passage": "\n".join(block), "which": which,
                            "text": "\n".join(block)})
    return out


def _cue(line: str) -> str:
    """A line's indentation and first two words, as they stand in the line: the question of a recall item."""
    m = _TWO_WORDS.match(line)
    return m.group(0) if m else line


def call_candidates(docs) -> list[dict]:
    out = []
    for doc in docs:
        lines = doc.text.split("\n")
        called = sorted({m.group(1) for line in lines for m in _CALL.finditer(line)} - _KEYWORDS)
        if len(called) < 8:                               # too few names to draw three distractors from
            continue
        for i, line in enumerate(lines):
            if i < 4 or not _region(i, "calls") or line.lstrip().startswith(("#", "def ", "class ", "@")):
                continue
            hits = [m for m in _CALL.finditer(line) if m.group(1) not in _KEYWORDS]
            if not hits:
                continue
            m = hits[-1]
            start = max(0, i - 8)
            prefix = "\n".join(lines[start:i] + [line[:m.start(1)]])
            out.append({"doc": doc.name, "line": i, "prefix": prefix, "name": m.group(1), "pool": called,
                        "text": "\n".join(lines[start:i + 1])})
    return out


def _clean(candidates: list[dict], train_docs) -> list[dict]:
    """Drop every candidate that Phi-4's check finds in the training split (partial or contaminated)."""
    check = Decontaminator({str(k): c["text"] for k, c in enumerate(candidates)})
    check.scan(d.text for d in train_docs)
    return [c for c, v in zip(candidates, check.verdicts()) if v.status == "clean"]


def _choices(answer: str, pool: list[str], rng: random.Random) -> tuple[list[str], int]:
    others = sorted({w for w in pool if w.lower() != answer.lower()})
    choices = rng.sample(others, 3)
    position = rng.randrange(4)
    choices.insert(position, answer)
    return choices, position


def _multiple_choice(prefix: str, candidates, key: str, pool, n: int, keep, rng: random.Random) -> list[dict]:
    """n items: candidates in a seeded order, each given three distractors, kept if they tokenize cleanly."""
    order = list(range(len(candidates)))
    rng.shuffle(order)
    taken, used = [], {}
    for k in order:
        c = candidates[k]
        if any(abs(c["line"] - j) < 12 for j in used.get(c["doc"], [])):
            continue
        choices, answer = _choices(c[key], pool(c), rng)
        if not keep(c["prefix"], choices):
            continue
        used.setdefault(c["doc"], []).append(c["line"])
        taken.append((c["doc"], c["line"], c["prefix"], choices, answer))
        if len(taken) == n:
            break
    else:
        raise RuntimeError(f"only {len(taken)} usable {prefix} candidates, need {n}")
    return [{"id": f"{prefix}-{k:03d}", "context": ctx, "choices": choices, "answer": answer}
            for k, (_, _, ctx, choices, answer) in enumerate(sorted(taken, key=lambda t: (t[0], t[1])))]


def _passages(docs, domain: str, n: int, rng: random.Random) -> list[dict]:
    chunks = []
    for doc in docs:
        if doc.domain != domain:
            continue
        lines, current = doc.text.split("\n"), []
        for line in lines:
            current.append(line)
            if sum(len(x) + 1 for x in current) >= PASSAGE_CHARS:
                text = "\n".join(current).strip("\n")         # keep the first line's indentation
                if text.strip():
                    chunks.append({"doc": doc.name, "text": text})
                current = []
    return [chunks[k] for k in sorted(rng.sample(range(len(chunks)), n))]


def splits_cleanly(tokenizer, context: str, continuation: str) -> bool:
    """Whether context + continuation tokenizes as the context's own tokens, then more.

    lm-eval (and ``evaluation.scoring``) find the continuation's tokens by counting off the context's.
    When the choice's first characters merge with the context's last into one token, that count takes
    part of the choice as context, or all of it (lm-eval then stops on an assertion). Such an item
    measures the tokenizer, not the model, so the recipe leaves it out."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ctx = tokenizer.encode(context)
    whole = tokenizer.encode(context + continuation)
    return len(whole) > len(ctx) and whole[:len(ctx)] == ctx


def _tokenizes(tokenizer, delimiter: str):
    def keep(c, choices):
        return all(splits_cleanly(tokenizer, c, delimiter + x) for x in choices)
    return keep


def build_items(corpus, tokenizer) -> dict[str, list[dict]]:
    """Every shipped task's items, {task: [item, ...]}, from a built corpus (recipes.corpus) and
    phi4-tiny's tokenizer (to keep only items whose choices split cleanly from the context)."""
    rng = random.Random(SEED)
    prose = [d for d in corpus.validation if d.domain == "prose" and d.name not in SAME_PLAY_IN_TRAINING]
    code = [d for d in corpus.validation if d.domain == "code"]
    tasks = {}

    cloze = _clean(cloze_candidates(prose), corpus.train)
    pool = sorted({c["word"] for c in cloze})
    tasks["shakespeare_cloze"] = _multiple_choice("cloze", cloze, "word", lambda c: pool,
                                                  ITEMS["shakespeare_cloze"], _tokenizes(tokenizer, " "), rng)
    calls = _clean(call_candidates(code), corpus.train)
    tasks["stdlib_calls"] = _multiple_choice("calls", calls, "name", lambda c: c["pool"],
                                             ITEMS["stdlib_calls"], _tokenizes(tokenizer, ""), rng)

    recall = _clean(recall_candidates(code), corpus.train)
    rng.shuffle(recall)
    tasks["stdlib_recall"] = []
    for k, c in enumerate(sorted(recall[:ITEMS["stdlib_recall"]], key=lambda c: (c["doc"], c["line"]))):
        lines = c["passage"].split("\n")
        line = lines[rng.choice(c["which"])]
        cue = _cue(line)
        tasks["stdlib_recall"].append({"id": f"recall-{k:03d}", "context": c["passage"], "question": cue,
                                       "answers": [line[len(cue):].strip()]})

    for domain, docs in (("prose", prose), ("code", code)):
        name = f"perplexity_{domain}"
        tasks[name] = [{"id": f"{domain}-{k:02d}", "domain": domain, "text": p["text"]}
                       for k, p in enumerate(_passages(docs, domain, ITEMS[name], rng))]
    return tasks


def write(tasks: dict[str, list[dict]], out_dir: str | os.PathLike = OUT_DIR) -> list[Path]:
    """One JSONL file per task (sorted keys, UTF-8, one item per line): byte-identical on rebuild."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, items in tasks.items():
        path = out_dir / f"{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n" for item in items),
                       encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


def build(out_dir: str | os.PathLike = OUT_DIR, *, archive: Path | None = None, progress: bool = True) -> list[Path]:
    import phi4lab
    from phi4lab.recipes.corpus import build_corpus

    tokenizer = phi4lab.load("phi4-tiny").tokenizer
    return write(build_items(build_corpus(archive, progress=progress), tokenizer), out_dir)


if __name__ == "__main__":
    for p in build():
        print(p)
