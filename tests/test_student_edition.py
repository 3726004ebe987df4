"""The student edition: solutions stripped, stubs in their place.

That it runs top to bottom with every check failing on its stub is tested with nbgrader
(tests/test_assignments.py), which grades the untouched edition of every notebook.
"""

import re
from pathlib import Path

import nbformat
import pytest

from phi4lab.exercises.student import MarkerError, make_student, strip_solutions

COURSE = Path(__file__).resolve().parents[1] / "course"
NOTEBOOKS = sorted(COURSE.glob("*.ipynb"))


def test_strip_solutions():
    src = "def f(x):\n    '''doc'''\n    # SOLUTION\n    return x + 1\n    # END SOLUTION\n\nprint(1)"
    out, n = strip_solutions(src)
    assert n == 1 and "return x + 1" not in out and "'''doc'''" in out
    assert "    raise NotImplementedError" in out
    for bad in ["# SOLUTION\nx", "# END SOLUTION", "# SOLUTION\n# SOLUTION\n# END SOLUTION"]:
        with pytest.raises(MarkerError):
            strip_solutions(bad)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_edition_hides_solutions(path):
    instructor = nbformat.read(path, as_version=4)
    student, n = make_student(instructor)
    assert n >= 2, "every notebook has at least two exercises"
    text = "\n".join(c.source for c in student.cells)
    assert "# SOLUTION" not in text and "END SOLUTION" not in text
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    for cell in student.cells:
        if cell.cell_type == "code" and ("NotImplementedError" in cell.source or "check" in cell.metadata.get("tags", [])):
            assert cell.outputs == []
    # it does not promise the solutions it removed
    prose = " ".join(c.source for c in student.cells if c.cell_type == "markdown")
    assert not re.search(r"solutions? (sits?|are|is) (behind|below|under)", prose, re.I)
    if any("Hints and solutions sit behind" in c.source for c in instructor.cells):
        assert "the worked solutions are in the instructor's edition" in prose


def test_the_student_edition_drops_nbval_markers_and_keeps_the_rest():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "# NBVAL_IGNORE_OUTPUT\n# (timings depend on the machine)\nprint('NBVAL_IGNORE_OUTPUT is a marker')")])
    student, _ = make_student(nb)
    assert student.cells[0].source == "# (timings depend on the machine)\nprint('NBVAL_IGNORE_OUTPUT is a marker')"
    for path in NOTEBOOKS:
        text = "\n".join(c.source for c in make_student(nbformat.read(path, as_version=4))[0].cells)
        assert "# NBVAL_" not in text, path.name


def test_the_student_edition_drops_hidden_tests():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "checks.check_f(f)\n### BEGIN HIDDEN TESTS\nchecks.held_out(f, [(1,)])\n### END HIDDEN TESTS\nprint(f(2))",
        metadata={"tags": ["check"]})])
    student, _ = make_student(nb)
    assert student.cells[0].source == "checks.check_f(f)\nprint(f(2))"
    for path in NOTEBOOKS:
        text = "\n".join(c.source for c in make_student(nbformat.read(path, as_version=4))[0].cells)
        assert "HIDDEN TESTS" not in text and "checks.held_out(" not in text, path.name
