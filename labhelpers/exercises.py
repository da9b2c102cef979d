"""Exercises inside a lab: `@exercise` registers an exercise's checks, `check(id)` runs them.

Instructor tooling (student copies, batch grading) lives in `labhelpers.tools.grading`; this is the
part a lab imports. An exercise can name the student's function (`solution=`) and the references it
must not call (`forbid=`): an exercise on code the lab has just shown would otherwise pass by calling
that code. `check` and the batch grader both refuse such a solution.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Callable, Iterable

__all__ = ["CheckFailed", "check", "exercise", "names_used"]


@dataclasses.dataclass
class _Registered:
    id: str
    points: float
    hint: str
    func: Callable[[], None]
    solution: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()


_REGISTRY: dict[str, _Registered] = {}


class CheckFailed(AssertionError):
    """An exercise's checks failed; in a notebook it shows as its message, without a traceback."""

    def _render_traceback_(self):
        return str(self).splitlines()


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def exercise(exercise_id: str, points: float, hint: str = "", solution: str | Iterable[str] = (),
             forbid: str | Iterable[str] = ()) -> Callable:
    """Decorator: the function holds the checks of exercise `exercise_id`, worth `points`.

    `solution` names the function(s) the student writes; `forbid` the names their code must not use
    (the reference the lab imported or just defined). Both must be literals: the grader reads them.
    """
    if not isinstance(points, (int, float)) or points <= 0:
        raise ValueError(f"points={points!r} for exercise {exercise_id!r} must be a positive number")
    if _names(forbid) and not _names(solution):
        raise ValueError(f"exercise {exercise_id!r}: forbid= needs solution=<the student's function name>")

    def register(func: Callable[[], None]) -> Callable[[], None]:
        _REGISTRY[exercise_id] = _Registered(exercise_id, points, hint, func, _names(solution), _names(forbid))
        return func
    return register


def names_used(func) -> set[str]:
    """Every global and attribute name the code of `func` refers to, nested functions and lambdas included."""
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    found: set[str] = set()
    stack = [code] if code is not None else []
    while stack:
        current = stack.pop()
        found.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return found


def _forbidden_use(entry: _Registered, namespace: dict) -> str | None:
    """A message when one of the solution functions uses a forbidden name, else None."""
    for name in entry.solution:
        used = names_used(namespace.get(name)) & set(entry.forbid)
        if used:
            listed = ", ".join(f"`{u}`" for u in sorted(used))
            return (f"`{name}` uses {listed}, the code this exercise asks you to write: "
                    "write the computation yourself")
    return None


def _plural(points: float) -> str:
    return f"{points:g} point" + ("" if points == 1 else "s")


def _user_namespace() -> dict:
    """The notebook's namespace (IPython's user namespace), or the caller's globals outside IPython."""
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except ImportError:
        shell = None
    return shell.user_ns if shell is not None else sys._getframe(2).f_globals


def check(exercise_id: str) -> None:
    """Run the checks of one exercise on the notebook's current state; print ✓ or raise CheckFailed with a hint."""
    entry = _REGISTRY.get(exercise_id)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY)) or "none yet"
        raise CheckFailed(f"✗ no checks for {exercise_id!r}: run the cell that defines them first (known: {known})")
    forbidden = _forbidden_use(entry, _user_namespace()) if entry.forbid else None
    if forbidden:
        raise CheckFailed(f"✗ {exercise_id} failed: {forbidden}")
    try:
        entry.func()
    except NotImplementedError:
        message = f"✗ {exercise_id} is not done yet: replace `raise NotImplementedError()` in its solution cell"
    except AssertionError as exc:
        message = f"✗ {exercise_id} failed: {_assertion_message(exc)}"
    except Exception as exc:  # the student's code raised: say what, not where in the checks
        message = f"✗ {exercise_id}: your code raised {type(exc).__name__}: {exc}"
    else:
        print(f"✓ {exercise_id} passed ({_plural(entry.points)})")
        return None
    if entry.hint:
        message += f"\n  hint: {entry.hint}"
    raise CheckFailed(message)


def _assertion_message(exc: AssertionError) -> str:
    """An assertion's message, or the line of the failing `assert` when it has none."""
    text = str(exc).strip()
    if text:
        return text
    import traceback
    frames = traceback.extract_tb(exc.__traceback__)
    return f"`{frames[-1].line}` is false" if frames and frames[-1].line else "a check failed"
