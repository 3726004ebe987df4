"""Checks for course exercises that say what is probably wrong, not just *that* it is.

An exercise gives the learner a stub with a docstring; the cell after it calls
`check_function(their_fn, reference_fn, cases, mistakes=...)`. The learner's
answer is compared with the reference on each case, and when it differs we try to
explain the difference:

* the wrong type, NaN or inf, the wrong shape (and whether it is the transpose);
* a known mistake: each exercise lists plausible wrong implementations with a
  message ("is your epsilon inside the square root?"); if the learner's output
  matches one of them, that message is the diagnosis;
* a constant factor or a flipped sign;
* otherwise, where and by how much the values differ.

Tolerances depend on the dtype: bf16 keeps about 3 significant digits, fp32 about
7, so one fixed tolerance would either pass wrong bf16 code or fail right fp32 code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

# (rtol, atol) per dtype: torch.testing.assert_close's defaults.
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


class ExerciseFailure(AssertionError):
    """The learner's answer is wrong; the message says how."""


STUB_MESSAGE = "exercise: write your solution here"   # what a stub raises (phi4lab.exercises.student writes it)


class StubError(NotImplementedError):
    """The learner's function is still its stub (its own body raised NotImplementedError)."""


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCES.get(dtype, (0.0, 0.0))


def _as_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return torch.tensor(x, dtype=torch.float64)
    return None


def _close(a: Any, b: Any, rtol: float | None = None, atol: float | None = None) -> bool:
    ta, tb = _as_tensor(a), _as_tensor(b)
    if ta is not None and tb is not None:
        if ta.shape != tb.shape or ta.dtype.is_complex != tb.dtype.is_complex:
            return False
        if rtol is None:
            rtol, atol = tolerance(tb.dtype) if tb.dtype in TOLERANCES else (0.0, 0.0)
        return bool(torch.allclose(ta.double(), tb.double(), rtol=rtol, atol=atol, equal_nan=False))
    if ta is not None or tb is not None:
        return False                   # a tensor or number against anything else (a numpy array, True, ...)
    # Neither is a tensor or number. Only the *reference's* equality is trusted, and only
    # for the same type: an answer whose __eq__ always says True must not pass.
    if type(a) is not type(b):
        return False
    if isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rtol, atol) for k in b)
    try:
        return (b == a) is True
    except Exception:
        return False


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor"
    if type(x).__module__ == "numpy":
        return f"a numpy {type(x).__name__} (convert it with torch.as_tensor, or use torch operations throughout)"
    return f"{type(x).__name__} {x!r:.60}"


def diagnose(actual: Any, expected: Any, *, mistakes: Mapping[str, Any] = (), rtol=None, atol=None) -> str | None:
    """None if `actual` matches `expected`, else the most specific explanation we can find."""
    if _close(actual, expected, rtol, atol):
        return None
    for message, wrong in dict(mistakes).items():
        if _close(actual, wrong, rtol, atol):
            return message
    ta, tb = _as_tensor(actual), _as_tensor(expected)
    if tb is not None and ta is None:
        what = f"a tensor ({expected.dtype})" if isinstance(expected, torch.Tensor) else "a number"
        return f"expected {what}, got {_kind(actual)}"
    if ta is None or tb is None:
        return f"expected {_kind(expected)}, got {_kind(actual)}"
    # The shape first, on the tensors as they are: a huge wrong answer is never copied.
    if ta.shape != tb.shape:
        hint = ""
        if ta.shape == tb.shape[::-1] or (ta.ndim == tb.ndim >= 2 and ta.shape[-2:] == tb.shape[-2:][::-1]):
            hint = " (it looks transposed)"
        elif ta.numel() == tb.numel():
            hint = " (same number of elements: a missing view/reshape or a wrong einsum output?)"
        return f"wrong shape: got {tuple(ta.shape)}, expected {tuple(tb.shape)}{hint}"
    if (ta.dtype.is_floating_point or ta.dtype.is_complex) and not torch.isfinite(ta).all():
        return "your result contains NaN or inf: look for a division by zero, a log of 0, or an overflow"
    dtype_note = ""
    if isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor) and ta.dtype != tb.dtype:
        dtype_note = (f" Your result is {ta.dtype}, the answer {tb.dtype}: a dtype that keeps fewer digits, "
                      "or an integer one, can explain the difference.")
    a, b = ta.double(), tb.double()
    nonzero = b.abs() > 1e-12
    if nonzero.any():
        ratio = a[nonzero] / b[nonzero]
        if torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), rtol=1e-4) and not math.isclose(ratio.flatten()[0].item(), 1.0):
            r = ratio.flatten()[0].item()
            if math.isclose(r, -1.0, rel_tol=1e-6):
                return "right size, wrong sign" + dtype_note
            return f"off by a constant factor: yours is {r:.6g} x the answer" + dtype_note
    err = (a - b).abs()
    where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape)) if err.ndim else ()
    at = f" at index {where}" if where else ""
    return (f"values differ: largest difference {err.max().item():.3g}{at} (yours {a[where].item():.6g}, "
            f"expected {b[where].item():.6g})" + dtype_note)


def _fresh(x: Any) -> Any:
    """A copy of a test case's arguments for one call: every tensor cloned, containers rebuilt.

    The learner's function, the reference and each mistake get their own copies, so an answer
    that writes into its input cannot change what the reference sees. Modules are shared (they
    are models, too big to copy, and no exercise writes into them).
    """
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, torch.nn.Module):
        return x
    if isinstance(x, (list, tuple)):
        return type(x)(_fresh(v) for v in x)
    if isinstance(x, dict):
        return {k: _fresh(v) for k, v in x.items()}
    try:
        return copy.deepcopy(x)
    except Exception:        # an object that cannot be copied is passed as it is
        return x


def _raised_by(error: BaseException, fn: Callable, name: str | None = None) -> bool:
    """Whether `error` was raised in `fn`'s own body (a stub's raise), not in something it called.

    A check may call the learner's function through a wrapper (a lambda that stacks its outputs):
    then the stub is the innermost frame that raised the stub's own message from a function
    named `name`, the exercise's name.
    """
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if code is None or (tb is not None and tb.tb_frame.f_code is code):
        return True
    return (tb is not None and name is not None and error.args == (STUB_MESSAGE,)
            and tb.tb_frame.f_code.co_name == name)


def run_answer(fn: Callable, name: str, *args, **kwargs):
    """Call a learner's function; a stub's own ``raise NotImplementedError`` says so, any other one is named.

    For checks that call the learner's function themselves instead of through `check_function`.
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as e:
        if _raised_by(e, fn, name):
            raise StubError(f"{name} is still a stub: replace `raise NotImplementedError` with your "
                                      "code") from None
        raise ExerciseFailure(f"{name}: something your code calls raised NotImplementedError ({e or 'no message'}); "
                              "it is not the stub's own raise, so look at the operation named in the traceback "
                              "above") from e


class CountCalls:
    """Counts a module's forward calls (and the lengths of its inputs) inside a `with` block."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.lengths = module, []

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda m, args, out: self.lengths.append(args[0].shape[-1]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()

    @property
    def calls(self) -> int:
        return len(self.lengths)


def _changed_arguments(before: tuple, after: tuple) -> list[int]:
    """1-based positions of the tensor arguments that a call wrote into."""
    changed = []
    for i, (a, b) in enumerate(zip(before, after), 1):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.shape != b.shape or not torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)):
                changed.append(i)
    return changed


def check_function(
    fn: Callable,
    reference: Callable,
    cases: Iterable[tuple],
    *,
    name: str | None = None,
    mistakes: Mapping[str, Callable] = (),
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Compare `fn(*case)` with `reference(*case)` on every case; raise ExerciseFailure if wrong.

    `mistakes` maps a message to a function implementing that mistake; a learner
    output equal to a mistake's output gets that message.
    """
    name = name or getattr(fn, "__name__", "your function")
    cases = list(cases)
    for i, case in enumerate(cases):
        mine = _fresh(tuple(case))
        try:
            actual = fn(*mine)
        except NotImplementedError as e:
            if _raised_by(e, fn, name):
                raise StubError(f"{name} is still a stub: replace `raise NotImplementedError` with your "
                                          "code") from None
            raise ExerciseFailure(f"{name}, test case {i + 1} of {len(cases)}: something your code calls raised "
                                  f"NotImplementedError ({e or 'no message'}); it is not the stub's own raise, "
                                  "so look at the operation named in the traceback above") from e
        changed = _changed_arguments(tuple(case), mine)
        expected = reference(*_fresh(tuple(case)))
        wrong = {message: mistake(*_fresh(tuple(case))) for message, mistake in dict(mistakes).items()}
        problem = diagnose(actual, expected, mistakes=wrong, rtol=rtol, atol=atol)
        if changed:
            args = ", ".join(f"argument {k}" for k in changed)
            problem = (f"{problem}; also, " if problem else "the result is right, but ") + (
                f"your function changed its input in place ({args}): the caller's tensors must stay as they were. "
                "Use out-of-place operations (x = x * 2, not x *= 2 or x.mul_(2)), or clone first")
        if problem:
            raise ExerciseFailure(f"{name}, test case {i + 1} of {len(cases)}: {problem}")
    print(f"\N{CHECK MARK} {name}: all {len(cases)} test cases pass")
