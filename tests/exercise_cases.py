"""Shared by tests/test_exercises_NN_*.py: one case per (check, listed mistake), and the assertion on it."""

import pytest

from phi4lab.exercises import ExerciseFailure


def mistake_cases(table):
    """pytest params (check, message, wrong) for every mistake of every (check, mistakes) pair in table."""
    return [pytest.param(check, message, wrong, id=f"{check.__name__}-{i}")
            for check, mistakes in table for i, (message, wrong) in enumerate(mistakes.items())]


def assert_mistake_named(check, message, wrong):
    """The check fails on the wrong answer, with the message listed for it."""
    with pytest.raises(ExerciseFailure) as info:
        check(wrong)
    assert message in str(info.value)
