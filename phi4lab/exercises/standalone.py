"""A student edition that stands on its own: an exercise left undone does not break what follows.

A notebook's later cells use the learner's functions: notebook 06 computes its whole patching
table with the learner's one-line `patching_recovery`. Skip that exercise, and its stub's
``raise NotImplementedError`` would stop every cell after it, so a learner who wants the
story of activation patching before the arithmetic could not read on.

So every check in `phi4lab.exercises` passes through `stand_alone`, which changes what it does
with a stub, and only with a stub:

* **a stub** (an exercise whose own body still raises NotImplementedError): the check does
  not raise. It writes "✗ ... not written yet" to **stderr** and returns. Jupyter shows that in
  red without stopping "Run All"; nbgrader scores a graded cell with stderr output 0, so the
  check still *fails*. It then puts phi4lab's reference in the notebook under the stub's name,
  and the reference says so each time a cell uses it ("ⓘ using phi4lab's reference for ...").
  Run the exercise's cell again with your code and the name is yours once more.
* **a wrong answer** raises ExerciseFailure, as before: the notebook should stop there, since
  the cells after it would show numbers computed by the bug.
* **a right answer** passes, as before.

A check handed the stand-in itself (the learner re-ran the check without writing the exercise)
says "not written yet" again: the reference never passes for the learner.

`held_out(answer, cases)` checks the answer against its reference on cases the learner has not
seen: a check cell's nbgrader hidden test (between ``### BEGIN HIDDEN TESTS`` and ``### END
HIDDEN TESTS``), which releases and the student edition leave out, so code fitted to the visible
cases scores no points for the hidden ones.

`reveal("name")` prints the reference's source, but only after an attempt: once the learner has
run the check on code of their own, right or wrong. nbgrader releases switch it off
(phi4lab.exercises.assignments sets ``REVEAL = False`` in a read-only cell).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

from phi4lab.exercises.checking import StubError, _raised_by, check_function

REVEAL = True                               # False in an nbgrader release: graded work shows no solutions
STANDS_IN = "__phi4lab_stands_in_for__"     # set on a reference standing in for a learner's stub
_REFERENCES: dict[str, Callable] = {}       # learner's function name -> reference, with the same signature
_ATTEMPTED: set[str] = set()                # names whose check has run on the learner's own code


def _stub_raised(error: NotImplementedError, answer: Any) -> bool:
    """Whether `error` is the stub's own raise: a StubError from a check, or a raise in `answer`'s own body."""
    if isinstance(error, StubError):
        return True
    own = [answer] + (list(vars(answer).values()) if inspect.isclass(answer) else [])  # a class: its methods
    name = getattr(answer, "__name__", None)
    return any(_raised_by(error, f, name) for f in own if callable(f) and hasattr(inspect.unwrap(f), "__code__"))


def _current_cell() -> Any:
    """The running notebook cell's execution count (None outside IPython): stand-ins speak once a cell."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "execution_count", None)


def _stand_in(name: str, reference: Callable) -> Callable:
    """`reference`, saying on its first call in each cell that it stands in for the learner's `name`."""
    told = set()

    @functools.wraps(reference)
    def stand_in(*args, **kwargs):
        cell = _current_cell()
        if cell not in told:
            told.add(cell)
            print(f"\N{CIRCLED LATIN SMALL LETTER I} using phi4lab's reference for {name}: yours is not written yet")
        return reference(*args, **kwargs)

    setattr(stand_in, STANDS_IN, name)
    return stand_in


def _not_written(name: str, answer: Any, reference: Callable | None) -> None:
    """Report an unwritten exercise on stderr, and put the reference in its place if the notebook uses it."""
    message = (f"\N{BALLOT X} {name} is not written yet: its stub still raises NotImplementedError, so this check "
               "fails (an nbgrader autograde scores it 0).")
    namespace = getattr(answer, "__globals__", None) or getattr(sys.modules.get(getattr(answer, "__module__", "")),
                                                                "__dict__", None)
    if reference is not None and namespace is not None and namespace.get(name) is answer:
        namespace[name] = _stand_in(name, reference)
        message += (f" The cells below use phi4lab's reference for {name} until you write yours: then run "
                    "its cell and this check again.")
    print(message, file=sys.stderr)


def _standing(check: Callable, references: Mapping[str, Callable]) -> Callable:
    @functools.wraps(check)
    def run(answer, *args, **kwargs):
        stands_in = getattr(answer, STANDS_IN, None)
        if stands_in is not None:
            _not_written(stands_in, answer, None)
            return None
        name = getattr(answer, "__name__", check.__name__.removeprefix("check_"))
        try:
            result = check(answer, *args, **kwargs)
        except NotImplementedError as error:
            if not _stub_raised(error, answer):
                _ATTEMPTED.add(name)
                raise
            _not_written(name, answer, references.get(name))
            return None
        except BaseException:
            _ATTEMPTED.add(name)
            raise
        _ATTEMPTED.add(name)
        return result

    return run


def stand_alone(namespace: dict, references: Mapping[str, Callable]) -> None:
    """Make every ``check_*`` function defined in a checks module (its globals, `namespace`) stand alone.

    `references` maps the name of a learner's function to phi4lab's reference for it, with the same
    signature: the one a notebook's later cells get while the learner's is a stub. A check whose
    exercise no later cell uses needs no entry. The module also gets `reveal`, so a notebook can call
    ``checks.reveal("name")``, and `held_out` for hidden tests (``checks.held_out(fn, cases)``).
    """
    module = namespace["__name__"]
    for key, value in list(namespace.items()):
        if key.startswith("check_") and inspect.isfunction(value) and value.__module__ == module:
            namespace[key] = _standing(value, references)
    _REFERENCES.update(references)
    namespace["reveal"] = reveal
    namespace["held_out"] = held_out


def _held_out(answer, cases, **tolerances):
    name = getattr(answer, "__name__", "")
    if name not in _REFERENCES:
        raise KeyError(f"no reference for {name!r}: register one in its checks module's stand_alone call")
    check_function(answer, _REFERENCES[name], cases, name=f"{name} (held-out cases)", **tolerances)


held_out = _standing(_held_out, _REFERENCES)
held_out.__doc__ = "Check `answer` against phi4lab's reference for it on held-out `cases` (an nbgrader hidden test)."


def reveal(name: str | Callable) -> None:
    """Print phi4lab's reference for the exercise `name` (or the learner's function), after an attempt."""
    name = name if isinstance(name, str) else getattr(name, STANDS_IN, None) or getattr(name, "__name__", "")
    if not REVEAL:
        print("Solutions are not revealed in a graded assignment.")
    elif name not in _REFERENCES:
        known = ", ".join(sorted(_REFERENCES)) or "none yet: run a notebook's setup cell first"
        print(f"No reference named {name!r}. Those phi4lab can reveal: {known}.")
    elif name not in _ATTEMPTED:
        print(f"Try {name} first: write your version and run its check (right or wrong), then reveal it.")
    else:
        print(f"# phi4lab's reference for {name} (yours may differ and be just as right)")
        print(inspect.getsource(inspect.unwrap(_REFERENCES[name])))
