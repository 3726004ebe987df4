"""The README's course map is the one the notebooks give, and the notebooks keep the conventions it counts."""

from pathlib import Path

import nbformat
import pytest

from phi4lab.cli import main
from phi4lab.exercises import coursemap
from phi4lab.exercises.student import make_student

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "course"


def test_the_readme_course_map_is_the_one_the_notebooks_give():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    fresh = coursemap.replace_in_readme(readme, coursemap.table(coursemap.read_course(COURSE)))
    assert fresh == readme, "README.md's course map is stale: run `.venv/bin/phi4lab course-map` and commit README.md"


@pytest.mark.parametrize("path", sorted(COURSE.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_every_exercise_heading_has_its_stub(path):
    """The headings counted are the exercises the student edition stubs, one stub cell each."""
    counted = coursemap.read_notebook(path)
    _, stubs = make_student(nbformat.read(path, as_version=4))
    assert len(counted.exercises) == stubs, (
        f"{path.name}: {len(counted.exercises)} '### Exercise' headings but {stubs} code cells with a SOLUTION block")


def _notebook(tmp_path, *markdown):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(m) for m in markdown])
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    return path


MARKS = "> Difficulty: 🔴🔴🔴🔴⚪ · Importance: 🔵🔵⚪⚪⚪ · about 20 minutes"


def test_counts_difficulty_and_questions(tmp_path):
    path = _notebook(tmp_path, f"### Exercise 1 · A\n\n{MARKS}",
                     "**Predict, then run.** Up or down?\n\n<details><summary>Answer (after)</summary>Up.</details>",
                     "**Predict, then run.** Which layer?", "text", "<details><summary>Answer</summary>3</details>",
                     f"### Exercise 2 · B\n\n{MARKS.replace('🔴🔴🔴🔴⚪', '🔴⚪⚪⚪⚪')}")
    m = coursemap.read_notebook(path)
    assert [(e.number, e.title, e.difficulty, e.importance) for e in m.exercises] == [(1, "A", 4, 2), (2, "B", 1, 2)]
    assert m.by_difficulty() == [1, 0, 0, 1, 0] and m.questions == 2
    assert "| `00_x.ipynb` | 2 | 1 / 0 / 0 / 1 / 0 | 2 |" in coursemap.table([m])


@pytest.mark.parametrize("cells, message", [
    (["### Exercise 1 · A\n\nno marks"], "no '> Difficulty"),
    ([f"### Exercise 2 · A\n\n{MARKS}"], "numbered [2]"),
    (["**Predict, then run.** Up?", "**Predict, then run.** Down?\n<details><summary>Answer</summary>x</details>"],
     "cell 0: a predict-then-run question without its hidden answer"),
    (["**Predict, then run.** Up?"], "cell 0"),
])
def test_a_broken_convention_is_named(tmp_path, cells, message):
    with pytest.raises(coursemap.CourseMapError, match=message.replace("[", r"\[").replace("]", r"\]")):
        coursemap.read_notebook(_notebook(tmp_path, *cells))


def test_the_command_rewrites_only_the_table(tmp_path, capsys):
    course = tmp_path / "course"
    course.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"### Exercise 1 · A\n\n{MARKS}")]),
                   course / "01_a.ipynb")
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{coursemap.BEGIN}\nold\n{coursemap.END}\nafter\n", encoding="utf-8")
    assert main(["course-map", "--course", str(course), "--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| `01_a.ipynb` | 1 | 0 / 0 / 0 / 1 / 0 | 0 |" in text
    readme.write_text("no markers\n", encoding="utf-8")
    assert main(["course-map", "--course", str(course), "--readme", str(readme)]) == 2
    assert "course-map markers" in capsys.readouterr().err


def test_marks_are_read_from_their_own_exercise_and_each_question_needs_its_own_answer(tmp_path):
    # the first exercise has no marks: the second exercise's must not be borrowed
    with pytest.raises(coursemap.CourseMapError, match="exercise 1 has no"):
        coursemap.read_notebook(_notebook(tmp_path, f"### Exercise 1 · A\n\n### Exercise 2 · B\n\n{MARKS}"))
    # two questions, one answer
    two = "**Predict, then run.** Up? **Predict, then run.** Down?\n<details><summary>Answer</summary>x</details>"
    with pytest.raises(coursemap.CourseMapError, match="cell 0"):
        coursemap.read_notebook(_notebook(tmp_path, two))
    # an answer that comes before its question in the same cell does not answer it
    with pytest.raises(coursemap.CourseMapError, match="cell 0"):
        coursemap.read_notebook(_notebook(tmp_path, "<details><summary>Answer</summary>x</details> **Predict, then run.** Up?"))
