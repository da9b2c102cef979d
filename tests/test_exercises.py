"""Tests for labhelpers.exercises: an exercise's checks, and solutions that call the answer refused."""

from __future__ import annotations

import math

import pytest

from labhelpers import exercises
from labhelpers.exercises import CheckFailed, check, exercise, names_used


def reference_square(x):
    return x * x


def test_names_used_sees_nested_functions_and_attributes():
    def outer(v):
        inner = lambda w: math.floor(reference_square(w))  # noqa: E731
        return inner(v)
    assert {"math", "floor", "reference_square"} <= names_used(outer)


def test_check_refuses_a_solution_that_calls_the_forbidden_reference(monkeypatch, capsys):
    def square(x):
        return reference_square(x)
    monkeypatch.setitem(globals(), "square", square)

    @exercise("t-forbid", points=1, solution="square", forbid=("reference_square",))
    def check_it():
        assert square(3) == 9
    with pytest.raises(CheckFailed, match="`square` uses `reference_square`"):
        check("t-forbid")

    def square(x):  # noqa: F811  the student's own computation
        return x * x
    monkeypatch.setitem(globals(), "square", square)
    check("t-forbid")
    assert "✓ t-forbid passed" in capsys.readouterr().out
    exercises._REGISTRY.pop("t-forbid")


def test_forbid_needs_the_solution_name():
    with pytest.raises(ValueError, match="forbid= needs solution="):
        exercise("t-bad", points=1, forbid=("x",))
