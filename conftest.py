"""Shared by tests/ and course/: the notebook time budget.

Every notebook must run within 3 minutes on the 2-core lab machine, and the
whole course within 15 (README, course map). nbval runs each cell as a test;
this adds up the cells per notebook and prints a table at the end of the run.
It reports, it does not fail: timing is the machine's business, and the table
is there to be read in CI logs.
"""

from collections import defaultdict

NOTEBOOK_BUDGET_S = 180
COURSE_BUDGET_S = 900

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration       # setup, call and teardown phases all count


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    tr = terminalreporter
    tr.section("notebook run times under nbval (budget: 3 min each, 15 min in all)")
    for path, seconds in sorted(_seconds.items()):
        flag = "  OVER BUDGET" if seconds > NOTEBOOK_BUDGET_S else ""
        tr.line(f"{path:40s} {seconds:7.1f} s{flag}")
    total = sum(_seconds.values())
    flag = "  OVER BUDGET" if total > COURSE_BUDGET_S else ""
    tr.line(f"{'whole course':40s} {total:7.1f} s{flag}")
