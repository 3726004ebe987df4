"""nbgrader's whole loop on every notebook: release, fetch, submit, collect, autograde, feedback.

Three students submit: one with the instructor's solutions (full marks), one who changed nothing
(zero, and the untouched student edition runs top to bottom without an error cell), and, on
notebook 00, one with two exercises right, one with a classic mistake and two left undone (exactly
those two exercises' points, and phi4lab's diagnosis of the mistake in the feedback).
Each notebook is its own nbgrader course folder, so two notebooks grade at once on two cores.

The instructor's submission is the committed notebook, outputs included, and nbgrader grades it
as it stands (neither clearing nor re-running it): nbval re-runs every notebook in the same
`make test` and fails unless each check cell prints what is stored, so executing them a third
time would only add ten minutes to CI. `test_every_graded_cell_is_one_nbval_compares` keeps that
argument true. PHI4LAB_NBGRADER_EXECUTE_SOLUTIONS=1 makes the autograder run the instructor's
solutions too, from the release with the solutions pasted in.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from phi4lab.exercises.assignments import AssignmentError, build_assignments, make_source

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"
NOTEBOOKS = sorted(p.stem for p in COURSE.glob("[0-9][0-9]_*.ipynb"))
# e.g. PHI4LAB_NBGRADER_NOTEBOOKS=00,06 grades just those two (while writing a notebook); CI grades all
ONLY = [n for n in os.environ.get("PHI4LAB_NBGRADER_NOTEBOOKS", "").split(",") if n]
GRADED = [n for n in NOTEBOOKS if not ONLY or n[:2] in ONLY]
BIN = Path(sys.executable).parent
EXECUTE_SOLUTIONS = os.environ.get("PHI4LAB_NBGRADER_EXECUTE_SOLUTIONS") == "1"
# notebook 00's third exercise (sequences_that_fit) with the mistake its check names first
MISTAKE = "the weights take their share of the GPU first: only what they leave holds caches"
PARTIAL = {
    "exercise_1": None,                                  # the instructor's solution
    "exercise_2": None,
    "exercise_3": ("def sequences_that_fit(cfg, gpu_bytes, context, bytes_per_element):\n"
                   "    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * "
                   "(cfg.hidden_size // cfg.num_attention_heads) * bytes_per_element\n"
                   "    return gpu_bytes // (per_token * context)\n"),
}


def _nb(name: str) -> nbformat.NotebookNode:
    return nbformat.read(COURSE / f"{name}.ipynb", as_version=4)


def _grade_cells(nb):
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


# ---- the source notebooks ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_marks_solutions_and_weighs_checks_by_difficulty(name):
    instructor = _nb(name)
    source = make_source(instructor, name)
    solutions = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("solution")]
    graded = _grade_cells(source)
    checks = [c for c in instructor.cells if "check" in c.metadata.get("tags", [])]
    assert len(solutions) == len(graded) == len(checks) >= 2
    assert all("# SOLUTION" in c.source and "# END SOLUTION" in c.source for c in solutions)
    assert [c.source for c in graded] == [c.source for c in checks]
    assert all(c.metadata.nbgrader["locked"] and c.outputs == [] for c in graded)
    ids = [c.metadata.nbgrader["grade_id"] for c in source.cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids))
    # points: the exercise's red dots, in order
    from phi4lab.exercises.coursemap import read_notebook
    assert [c.metadata.nbgrader["points"] for c in graded] == [e.difficulty for e in read_notebook(COURSE / f"{name}.ipynb").exercises]
    text = "\n".join(c.source for c in source.cells)
    assert "# NBVAL_" not in text and "<summary>Solution" not in text
    assert source.cells[0].metadata.nbgrader["locked"] and "REVEAL = False" in source.cells[0].source
    assert source.metadata.kernelspec["name"] == "phi4lab"


def test_a_check_without_its_exercise_heading_is_refused():
    nb = _nb("00_welcome")
    heading = next(i for i, c in enumerate(nb.cells) if "### Exercise 1 " in c.source)
    nb.cells[heading].source = nb.cells[heading].source.replace("### Exercise 1 ", "### A section ")
    with pytest.raises(AssignmentError, match="exercise headings"):
        make_source(nb, "00_welcome")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_graded_cell_is_one_nbval_compares(name):
    """nbval checks each check cell's stored output, so grading the stored outputs grades a fresh run."""
    for cell in _nb(name).cells:
        if "check" in cell.metadata.get("tags", []):
            assert "# NBVAL_" not in cell.source and not {"nbval-ignore-output", "nbval-skip", "raises-exception"} & set(
                cell.metadata.get("tags", [])), cell.source
            assert any("\N{CHECK MARK}" in o.get("text", "") for o in cell.outputs), cell.source
            assert not any(o.output_type == "error" or o.get("name") == "stderr" for o in cell.outputs), cell.source


# ---- the loop ------------------------------------------------------------------------------------

def _run(args, cwd, env):
    done = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _submit(name, student, work, env, exchange, answers, whole=None):
    """Fetch the release as `student`, write `answers` {grade_id: source} into it (or replace it by the
    notebook `whole`), and submit it."""
    flags = [f"--Exchange.root={exchange}", "--CourseDirectory.course_id=phi4lab"]
    home = work / student
    home.mkdir()
    _run(["nbgrader", "fetch_assignment", name, *flags], home, env)
    path = home / name / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4) if whole is None else whole
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    nbformat.write(nb, path)
    _run(["nbgrader", "submit", name, f"--student={student}", *flags], home, env)


def _loop(name, root, env):
    """Release, three (or two) submissions, collect, autograde, feedback; the scores by student."""
    course, exchange, work = root / name / "course", root / name / "exchange", root / name / "students"
    exchange.mkdir(parents=True)
    work.mkdir()
    build_assignments(COURSE, course, only=name)
    env = dict(env, PHI4LAB_EXCHANGE=str(exchange))
    _run(["nbgrader", "generate_assignment", name], course, env)
    _run(["nbgrader", "release_assignment", name], course, env)
    source = nbformat.read(course / "source" / name / f"{name}.ipynb", as_version=4)
    solutions = {c.metadata.nbgrader["grade_id"]: c.source for c in source.cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    if EXECUTE_SOLUTIONS:
        _submit(name, "instructor", work, env, exchange, solutions)
    else:
        _submit(name, "instructor", work, env, exchange, {}, whole=make_source(_nb(name), name, keep_outputs=True))
    _submit(name, "untouched", work, env, exchange, {})
    students = ["untouched"]
    if name == "00_welcome":
        _submit(name, "partial", work, env, exchange,
                {k: solutions[k] if v is None else v for k, v in PARTIAL.items()})
        students.append("partial")
    _run(["nbgrader", "collect", name], course, env)
    if EXECUTE_SOLUTIONS:
        students.append("instructor")
    else:
        _run(["nbgrader", "autograde", name, "--student=instructor", "--ClearOutput.enabled=False",
              "--Execute.enabled=False"], course, env)
    for student in students:
        _run(["nbgrader", "autograde", name, f"--student={student}"], course, env)
    _run(["nbgrader", "generate_feedback", name], course, env)
    _run(["nbgrader", "export", f"--to={root / name / 'grades.csv'}"], course, env)
    with open(root / name / "grades.csv") as f:
        return {row["student_id"]: (float(row["score"]), float(row["max_score"])) for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("nbgrader")
    # phi4lab's kernel, as `make kernel` installs it, but in a folder of the test's own
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(root / "kernel"), "--name",
                    "phi4lab", "--display-name", "Python 3 (phi4lab)"], check=True, capture_output=True)
    # Two notebooks at once, one thread each: two kernels of two threads on two cores slow each other down
    # several times over (torch's threads spin waiting for each other).
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               JUPYTER_PATH=str(root / "kernel" / "share" / "jupyter"))
    with ThreadPoolExecutor(2) as pool:
        scores = dict(zip(GRADED, pool.map(lambda n: _loop(n, root, env), GRADED)))
    return root, scores


@pytest.mark.slow
@pytest.mark.parametrize("name", GRADED)
def test_nbgrader_scores_solutions_full_and_the_untouched_edition_zero(graded, name):
    root, scores = graded
    total = sum(c.metadata.nbgrader["points"] for c in _grade_cells(make_source(_nb(name), name)))
    assert scores[name]["instructor"] == (total, total)
    # graded on what its checks printed, not on empty cells
    instructor = nbformat.read(root / name / "course" / "autograded" / "instructor" / name / f"{name}.ipynb", 4)
    for cell in _grade_cells(instructor):
        assert any("\N{CHECK MARK}" in o.get("text", "") for o in cell.outputs), cell.source
    assert scores[name]["untouched"] == (0.0, total)
    # the untouched edition ran to the end without an error cell, each check saying "not written yet"
    autograded = nbformat.read(root / name / "course" / "autograded" / "untouched" / name / f"{name}.ipynb", 4)
    errors = [(i, o.ename) for i, c in enumerate(autograded.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors == [], f"the untouched student edition has error cells: {errors}"
    for cell in _grade_cells(autograded):
        assert any(o.output_type == "stream" and o.name == "stderr" and "not written yet" in o.text
                   for o in cell.outputs), cell.source


@pytest.mark.slow
@pytest.mark.skipif("00_welcome" not in GRADED, reason="the partial submission is notebook 00's")
def test_nbgrader_gives_a_partial_submission_its_points_and_the_diagnosis(graded):
    root, scores = graded
    points = [c.metadata.nbgrader["points"] for c in _grade_cells(make_source(_nb("00_welcome"), "00_welcome"))]
    assert scores["00_welcome"]["partial"] == (points[0] + points[1], sum(points))
    feedback = (root / "00_welcome" / "course" / "feedback" / "partial" / "00_welcome" / "00_welcome.html").read_text()
    assert MISTAKE in feedback.replace("&#39;", "'")
    assert "count_parameters: all" in feedback          # a right answer's check mark is there too
    # the hidden tests: absent from the release, back in place to grade, and passed by the right answers
    release = (root / "00_welcome" / "course" / "release" / "00_welcome" / "00_welcome.ipynb").read_text()
    assert "checks.held_out(" not in release and "HIDDEN TESTS" not in release
    assert "count_parameters (held-out cases): all 2 test cases pass" in feedback
