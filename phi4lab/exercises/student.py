"""Write each notebook once; generate the student edition from it.

The committed notebooks are the instructor edition: exercises solved, outputs
shown. Inside an exercise cell the solution sits between two marker lines:

    def kv_cache_bytes(cfg):
        \"\"\"Bytes of K and V cached per token ...\"\"\"
        # SOLUTION
        return 2 * cfg.num_hidden_layers * ...
        # END SOLUTION

`make_student` replaces each marked block with `raise NotImplementedError`, at the
marker's indentation, and keeps everything else (signature, docstring, hints).
Markdown cells tagged `solution` (worked solutions behind <details>) are dropped,
and the sentences that tell a reader where the solutions are (``EDITION_NOTES``)
are rewritten to say the student edition has none.
An exercise left as a stub does not stop the notebook (phi4lab.exercises.standalone).
Outputs of exercise cells and of `check` cells are cleared, so the student edition
shows no answers, and execution counts are reset. The lines that only tell the test
runner something (``# NBVAL_IGNORE_OUTPUT`` and the like) are dropped: they are
plumbing, not lessons. So are a check's held-out cases (nbgrader's hidden tests).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from phi4lab.exercises.checking import STUB_MESSAGE

START = re.compile(r"^(?P<indent>\s*)# SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
STUB = f'raise NotImplementedError("{STUB_MESSAGE}")'
# nbval's cell markers (the first line of a cell whose output nbval does not compare, and its kin).
PLUMBING = re.compile(r"^\s*# NBVAL_[A-Z_]+\s*$")
# A check cell's held-out cases sit between nbgrader's hidden-test markers: nbgrader drops them from a
# release and puts them back to grade; the student edition drops them too.
HIDDEN = re.compile(r"^### BEGIN HIDDEN TESTS\s*$.*?^### END HIDDEN TESTS\s*$\n?", re.M | re.S)
# Instructor-edition sentence -> what the student edition says instead.
EDITION_NOTES = {
    "Hints and solutions sit behind the ▶ arrows.":
        "Hints sit behind the ▶ arrows; the worked solutions are in the instructor's edition, not in this one. "
        "Once you have tried an exercise and run its check, `checks.reveal(\"name\")` prints phi4lab's reference "
        "for it. Skip an exercise and the notebook still runs: its check says it is not written yet, and the cells "
        "after it use phi4lab's reference in its place.",
}


class MarkerError(ValueError):
    """Unbalanced or nested SOLUTION markers."""


def strip_solutions(source: str) -> tuple[str, int]:
    """Replace every SOLUTION block in `source` by a stub; return (new source, number of blocks)."""
    out, inside, blocks = [], False, 0
    for number, line in enumerate(source.splitlines(), 1):
        start, end = START.match(line), END.match(line)
        if start:
            if inside:
                raise MarkerError(f"line {number}: SOLUTION inside another SOLUTION block")
            inside, blocks = True, blocks + 1
            out.append(start.group("indent") + STUB)
        elif end:
            if not inside:
                raise MarkerError(f"line {number}: END SOLUTION without SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError("a SOLUTION block is never closed")
    return "\n".join(out), blocks


def tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def make_student(nb: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, int]:
    """The student edition of a notebook, and how many exercises it has."""
    nb = copy.deepcopy(nb)
    cells, exercises = [], 0
    for cell in nb.cells:
        if "solution" in tags(cell):
            continue
        if cell.cell_type == "markdown":
            for instructor, student in EDITION_NOTES.items():
                cell.source = cell.source.replace(instructor, student)
        if cell.cell_type == "code":
            cell.source = "\n".join(line for line in cell.source.splitlines() if not PLUMBING.match(line))
            cell.source = HIDDEN.sub("", cell.source).rstrip("\n")
            cell.source, blocks = strip_solutions(cell.source)
            exercises += bool(blocks)    # one exercise per stub cell, however many functions it holds
            if blocks or "check" in tags(cell):
                cell.outputs = []
            cell.execution_count = None
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = None
        cells.append(cell)
    nb.cells = cells
    return nb, exercises


def build_student_edition(course_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write the student edition of every notebook in `course_dir`; return exercises per notebook."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for path in sorted(Path(course_dir).glob("*.ipynb")):
        student, n = make_student(nbformat.read(path, as_version=4))
        nbformat.write(student, out_dir / path.name)
        counts[path.name] = n
    return counts
