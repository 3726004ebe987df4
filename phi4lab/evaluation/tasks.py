"""Evaluation tasks as JSONL files, read strictly: every item checked, every problem named by file, line and field.

A task file holds one JSON object per line. Two kinds:

* **multiple choice**: ``{"id": ..., "context": ..., "choices": [...], "answer": <index>}``, scored by the
  log-likelihood of each choice after the context (``phi4lab.evaluation.scoring``);
* **extractive** (question answering): ``{"id": ..., "context": ..., "question": ..., "answers": [...]}``,
  scored by exact match and token F1 against any of the answers;
* **text** (perplexity): ``{"id": ..., "text": ...}``, scored by its log-likelihood.

A benchmark with a malformed item is worse than no benchmark: a skipped line silently changes the
denominator, a duplicated id double-counts an item. So nothing is skipped. The first problem stops
the load with an error that says where it is, and what to fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("multiple_choice", "extractive", "text")
_FIELDS = {"multiple_choice": ("id", "context", "choices", "answer"),
           "extractive": ("id", "context", "question", "answers"),
           "text": ("id", "text")}


class TaskFileError(ValueError):
    """A task file that cannot be scored as it is."""


@dataclass
class Item:
    id: str
    context: str
    choices: list[str] = field(default_factory=list)       # multiple choice
    answer: int | None = None
    question: str = ""                                      # extractive
    answers: list[str] = field(default_factory=list)
    text: str = ""                                          # text (perplexity)


def _non_empty_strings(value, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise TaskFileError(f"{where}: {what} must be a non-empty list of strings, got {json.dumps(value)[:80]}")
    bad = [i for i, v in enumerate(value) if not isinstance(v, str) or not v.strip()]
    if bad:
        raise TaskFileError(f"{where}: {what}[{bad[0]}] must be a non-empty string, got {json.dumps(value[bad[0]])[:80]}")
    return value


def load_task(path: str | os.PathLike, kind: str) -> list[Item]:
    """The items of a JSONL task file of the given kind, or a TaskFileError naming the file, line and field."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such task file") from None
    except UnicodeDecodeError as err:
        raise TaskFileError(f"{path}: not UTF-8 text ({err})") from None
    items, seen = [], {}
    for number, line in enumerate(lines, 1):
        where = f"{path}, line {number}"
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskFileError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(raw, dict):
            raise TaskFileError(f"{where}: each line must be a JSON object, got a {type(raw).__name__}")
        missing = [f for f in _FIELDS[kind] if f not in raw]
        if missing:
            raise TaskFileError(f"{where}: missing field {missing[0]!r} (a {kind} item needs {', '.join(_FIELDS[kind])})")
        item_id = raw["id"]
        if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or str(item_id).strip() == "":
            raise TaskFileError(f"{where}: field 'id' must be a non-empty string or an integer")
        item_id = str(item_id)
        if item_id in seen:
            raise TaskFileError(f"{where}: duplicated id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = number
        if kind == "text":
            if not isinstance(raw["text"], str) or not raw["text"].strip():
                raise TaskFileError(f"{where}: field 'text' must be a non-empty string")
            items.append(Item(item_id, "", text=raw["text"]))
            continue
        if not isinstance(raw["context"], str):
            raise TaskFileError(f"{where}: field 'context' must be a string")
        if kind == "multiple_choice":
            choices = _non_empty_strings(raw["choices"], "field 'choices'", where)
            answer = raw["answer"]
            if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
                raise TaskFileError(f"{where}: field 'answer' must be the index of the right choice, "
                                    f"an integer in 0..{len(choices) - 1}, got {json.dumps(answer)}")
            items.append(Item(item_id, raw["context"], choices=choices, answer=answer))
        else:
            if not isinstance(raw["question"], str) or not raw["question"].strip():
                raise TaskFileError(f"{where}: field 'question' must be a non-empty string")
            answers = _non_empty_strings(raw["answers"], "field 'answers'", where)
            items.append(Item(item_id, raw["context"], question=raw["question"], answers=answers))
    if not items:
        raise TaskFileError(f"{path}: no items (the file is empty)")
    return items
