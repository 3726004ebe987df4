"""Notebooks a reviewer can read: py:percent twins in step, and no heavy output that nbval compares.

Every notebook has its py:percent twin in course/py/ (a diff of code and prose, not of JSON
and outputs); a stale twin would show a reviewer something the notebook no longer says, so
each notebook is written afresh with the course's own jupytext.toml and compared with the
committed twin.

Pictures (PNG, plotly JSON, the HTML attention views) stay in the notebooks, for a learner who
reads before running and for the website, but nbval must not compare them: their bytes follow
the machine's arithmetic and the libraries' versions. The claim a picture makes is asserted in
the cell or printed as text instead.
"""

import json
from pathlib import Path

import pytest
from jupytext.cli import jupytext

COURSE = Path(__file__).resolve().parents[1] / "course"
NOTEBOOKS = sorted(COURSE.glob("[0-9][0-9]_*.ipynb"))
TWINS = sorted((COURSE / "py").glob("*.py"))


def test_each_notebook_has_one_twin_and_each_twin_a_notebook():
    assert NOTEBOOKS, "no notebooks found in course/"
    assert [n.stem for n in NOTEBOOKS] == [t.stem for t in TWINS], (
        "course/py/ must hold one NN_name.py per course/NN_name.ipynb: run `make pair`")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_twin_matches_its_notebook(notebook, tmp_path):
    fresh = tmp_path / f"{notebook.stem}.py"
    # --to with --output honours course/jupytext.toml (no metadata header, tags kept)
    jupytext(["--quiet", "--to", "py:percent", "--output", str(fresh), str(notebook)])
    committed = COURSE / "py" / fresh.name
    assert committed.read_text(encoding="utf-8") == fresh.read_text(encoding="utf-8"), (
        f"{committed.relative_to(COURSE.parent)} is out of step with {notebook.name}: run `make pair` "
        "(it syncs each pair from whichever file was saved last) and commit both")


# An output this large is a picture or a page, not a number to compare.
HEAVY_BYTES = 20_000


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_heavy_outputs_are_not_compared(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    compared_heavy = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        size = len(json.dumps(cell.get("outputs", [])))
        source = "".join(cell["source"])
        ignored = "NBVAL_IGNORE_OUTPUT" in source or "nbval-ignore-output" in cell["metadata"].get("tags", [])
        if size > HEAVY_BYTES and not ignored:
            compared_heavy.append(f"cell {i} ({size:,} bytes of output): {source.splitlines()[0][:60]!r}")
    assert not compared_heavy, (
        f"{notebook.name}: nbval would compare these heavy outputs byte for byte; mark the cell "
        "# NBVAL_IGNORE_OUTPUT and assert (or print as text) what the picture shows: " + "; ".join(compared_heavy))
