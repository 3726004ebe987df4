"""The course map's numbers, read from the notebooks themselves.

How many exercises a notebook has, how hard they are and how many "predict, then run"
questions it asks are facts about its cells, so they are counted from the cells, never
typed by hand. The conventions counted (CONTRIBUTING.md describes them for authors):

* an **exercise** is a markdown heading ``### Exercise N · Title`` followed, in the same
  cell, by ``> Difficulty: 🔴🔴⚪⚪⚪ · Importance: 🔵🔵🔵⚪⚪``; its code cell holds a
  ``# SOLUTION`` block (phi4lab.exercises.student turns it into a stub);
* a **predict, then run** question is a markdown cell that contains ``**Predict, then run.**``;
  its answer hides in ``<details><summary>Answer ...``, in the same cell or in a markdown cell
  after the code that shows the outcome, before the next question.

``phi4lab course-map`` writes the table between the two markers in README.md;
tests/test_course_map.py fails when the README's table is not the one the notebooks give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

EXERCISE = re.compile(r"^###\s+Exercise\s+(?P<number>\d+)\s*·\s*(?P<title>.+?)\s*$", re.M)
MARKS = re.compile(r"Difficulty:\s*(?P<difficulty>[🔴⚪]{5})\s*·\s*Importance:\s*(?P<importance>[🔵⚪]{5})")
PREDICT = "**Predict, then run.**"
ANSWER = re.compile(r"<details>\s*<summary>\s*Answer", re.I)
BEGIN, END = "<!-- course-map: begin (written by `phi4lab course-map`) -->", "<!-- course-map: end -->"


class CourseMapError(ValueError):
    """A notebook breaks the conventions the course map counts by."""


@dataclass
class Exercise:
    number: int
    title: str
    difficulty: int
    importance: int


@dataclass
class NotebookMap:
    name: str
    exercises: list[Exercise] = field(default_factory=list)
    questions: int = 0

    def by_difficulty(self) -> list[int]:
        """How many exercises at difficulty 1, 2, 3, 4 and 5."""
        return [sum(e.difficulty == d for e in self.exercises) for d in range(1, 6)]


def _unanswered(name: str, cell: int) -> str:
    return (f"{name}, cell {cell}: a predict-then-run question without its hidden answer (<details><summary>Answer "
            "...</summary> ... </details>, in the same markdown cell or one after it, before the next question)")


def read_notebook(path: Path) -> NotebookMap:
    """Count one notebook's exercises (with their marks) and predict-then-run questions."""
    nb = nbformat.read(path, as_version=4)
    out = NotebookMap(Path(path).name)
    waiting = []                 # cells of the questions whose answers have not come yet, in order
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        headings = list(EXERCISE.finditer(cell.source))
        for k, heading in enumerate(headings):
            end = headings[k + 1].start() if k + 1 < len(headings) else len(cell.source)
            marks = MARKS.search(cell.source, heading.end(), end)      # this exercise's marks, not the next one's
            if not marks:
                raise CourseMapError(f"{out.name}, cell {index}: exercise {heading['number']} has no "
                                     "'> Difficulty: 🔴... · Importance: 🔵...' line after its heading")
            out.exercises.append(Exercise(int(heading["number"]), heading["title"],
                                          marks["difficulty"].count("🔴"), marks["importance"].count("🔵")))
        # Questions and answers in the order they appear: each answer settles the oldest open question.
        events = sorted([(m.start(), "question") for m in re.finditer(re.escape(PREDICT), cell.source)]
                        + [(m.start(), "answer") for m in ANSWER.finditer(cell.source)])
        for _, kind in events:
            if kind == "question":
                if waiting:
                    raise CourseMapError(_unanswered(out.name, waiting[0]))
                out.questions += 1
                waiting.append(index)
            elif waiting:
                waiting.pop(0)
    if waiting:
        raise CourseMapError(_unanswered(out.name, waiting[0]))
    numbers = [e.number for e in out.exercises]
    if numbers != list(range(1, len(numbers) + 1)):
        raise CourseMapError(f"{out.name}: exercises are numbered {numbers}; number them 1, 2, 3 ... in order")
    return out


def read_course(course_dir: Path) -> list[NotebookMap]:
    return [read_notebook(p) for p in sorted(Path(course_dir).glob("[0-9][0-9]_*.ipynb"))]


def table(maps: list[NotebookMap]) -> str:
    """The course map's markdown table: one row a notebook, then totals."""
    rows = ["| notebook | exercises | by difficulty 1 / 2 / 3 / 4 / 5 | predict, then run |",
            "|---|---:|---|---:|"]

    def row(label, exercises, spread, questions):
        rows.append(f"| {label} | {exercises} | {' / '.join(map(str, spread))} | {questions} |")

    for m in maps:
        row(f"`{m.name}`", len(m.exercises), m.by_difficulty(), m.questions)
    for label, chosen in (("00–09", [m for m in maps if m.name[:2] < "10"]), ("whole course", maps)):
        spread = [sum(m.by_difficulty()[d] for m in chosen) for d in range(5)]
        row(f"**{label}**", sum(len(m.exercises) for m in chosen), spread, sum(m.questions for m in chosen))
    return "\n".join(rows)


def replace_in_readme(readme: str, new_table: str) -> str:
    """`readme` with the text between the course-map markers replaced by `new_table`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise CourseMapError(f"README.md has no course-map markers; put {BEGIN!r} and {END!r} where the table goes")
    return readme[:start + len(BEGIN)] + "\n" + new_table + "\n" + readme[end:]
