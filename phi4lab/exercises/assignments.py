"""nbgrader assignments from the instructor notebooks: release, collect and grade the course.

University labs hand out, collect and grade notebooks with nbgrader. Its *source* notebooks
carry the solutions between delimiters, its cells carry metadata (which cell is a solution,
which is a graded test and for how many points), and ``nbgrader generate_assignment`` writes
the release that students fetch. phi4lab's notebooks already say all of that in their own
vocabulary, so `build_assignments` translates instead of asking anyone to re-author:

* an exercise's ``# SOLUTION`` ... ``# END SOLUTION`` block is nbgrader's solution region
  (``nbgrader_config.py`` gives nbgrader these delimiters and phi4lab's stub line, so the
  release has the same stubs as ``make student``) and its cell a solution cell;
* an exercise's check cell (tagged ``check``) is a graded, read-only test cell worth the
  exercise's difficulty in points (🔴🔴🔴⚪⚪ is 3): harder exercises weigh more;
* worked-solution markdown (tagged ``solution``) and nbval's markers are left out, as in the
  student edition, and a read-only first cell turns `standalone.reveal` off.

A check passes with no error and nothing on stderr; an unwritten stub writes "not written yet" to
stderr (phi4lab.exercises.standalone) and a wrong answer raises, so nbgrader scores both 0, while
the notebook still runs to the end.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat

from phi4lab.exercises.coursemap import EXERCISE, MARKS
from phi4lab.exercises.student import EDITION_NOTES, PLUMBING, START, tags

COURSE_ID = "phi4lab"
KERNEL = {"name": "phi4lab", "display_name": "Python 3 (phi4lab)", "language": "python"}
GRADED_NOTE = "Hints sit behind the ▶ arrows; this is a graded assignment, so it shows no worked solutions."
SETUP_SOURCE = ("# A graded assignment: phi4lab's checks run as usual, and reveal() shows no solutions.\n"
                "from phi4lab.exercises import standalone\n"
                "standalone.REVEAL = False")

CONFIG = '''\
"""nbgrader's configuration for the phi4lab course (written by `phi4lab assignments`)."""
import os

c = get_config()  # noqa: F821 (nbgrader defines it)
c.CourseDirectory.course_id = "{course_id}"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# The exchange where releases and submissions meet; a shared folder on a lab server.
c.Exchange.root = os.environ.get("PHI4LAB_EXCHANGE", "/srv/nbgrader/exchange")
# phi4lab's own solution markers and stub (nbgrader spells it "delimeter").
c.ClearSolutions.begin_solution_delimeter = "# SOLUTION"
c.ClearSolutions.end_solution_delimeter = "# END SOLUTION"
c.ClearSolutions.code_stub = {{"python": {stub!r}}}
# The autograder runs every notebook top to bottom in phi4lab's kernel; the slowest cell
# (notebook 08's fine-tunes) takes minutes on a slow CPU.
c.Execute.timeout = 1800
'''


class AssignmentError(ValueError):
    """A notebook breaks the conventions the assignments are built from."""


def _points(nb: nbformat.NotebookNode, name: str) -> list[int]:
    """Each exercise's difficulty, in order: its points."""
    points = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        headings = list(EXERCISE.finditer(cell.source))
        for k, heading in enumerate(headings):
            end = headings[k + 1].start() if k + 1 < len(headings) else len(cell.source)
            marks = MARKS.search(cell.source, heading.end(), end)
            if not marks:
                raise AssignmentError(f"{name}: exercise {heading['number']} has no difficulty line")
            points.append(marks["difficulty"].count("🔴"))
    return points


def _meta(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": locked, "schema_version": 3}
    if points is not None:
        meta["points"] = points
    return meta


def make_source(nb: nbformat.NotebookNode, name: str, keep_outputs: bool = False) -> nbformat.NotebookNode:
    """The nbgrader source version of one instructor notebook (`name` for messages).

    `keep_outputs` keeps the exercise and check cells' outputs: the instructor's own submission,
    graded as it was run (tests/test_assignments.py).
    """
    nb = copy.deepcopy(nb)
    points = _points(nb, name)
    cells = [nbformat.v4.new_code_cell(SETUP_SOURCE, metadata={"nbgrader": _meta("phi4lab_setup", locked=True)})]
    exercise, check = 0, 0
    for cell in nb.cells:
        if "solution" in tags(cell):
            continue
        cell.metadata.pop("nbgrader", None)
        if cell.cell_type == "markdown":
            for instructor in EDITION_NOTES:
                cell.source = cell.source.replace(instructor, GRADED_NOTE)
        elif cell.cell_type == "code":
            cell.source = "\n".join(line for line in cell.source.splitlines() if not PLUMBING.match(line))
            cell.execution_count = None
            if any(START.match(line) for line in cell.source.splitlines()):
                exercise += 1
                cell.metadata["nbgrader"] = _meta(f"exercise_{exercise}", solution=True)
                cell.outputs = cell.outputs if keep_outputs else []
            elif "check" in tags(cell):
                check += 1
                if check > len(points):
                    raise AssignmentError(f"{name}: more check cells than exercise headings ({len(points)})")
                cell.metadata["nbgrader"] = _meta(f"check_{check}", grade=True, locked=True, points=points[check - 1])
                cell.outputs = cell.outputs if keep_outputs else []
        cells.append(cell)
    if not exercise == check == len(points):
        raise AssignmentError(f"{name}: {len(points)} exercise headings, {exercise} solution cells and {check} "
                              "check cells; each exercise needs one of each")
    nb.cells = cells
    nb.metadata["kernelspec"] = dict(KERNEL)
    return nb


def build_assignments(course_dir: Path, out_dir: Path, only: str | None = None) -> dict[str, int]:
    """An nbgrader course in `out_dir`: one assignment per notebook (or just `only`); each one's total points."""
    from phi4lab.exercises.student import STUB

    out_dir = Path(out_dir)
    totals = {}
    for path in sorted(Path(course_dir).glob("[0-9][0-9]_*.ipynb")):
        if only is not None and path.stem != only:
            continue
        source = make_source(nbformat.read(path, as_version=4), path.name)
        folder = out_dir / "source" / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(source, folder / path.name)
        totals[path.stem] = sum(c.metadata.get("nbgrader", {}).get("points", 0) for c in source.cells)
    (out_dir / "nbgrader_config.py").write_text(CONFIG.format(course_id=COURSE_ID, stub=STUB))
    (out_dir / "points.json").write_text(json.dumps(totals, indent=1) + "\n")
    return totals
