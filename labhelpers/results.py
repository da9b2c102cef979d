"""Results: numbers a notebook measured, recorded so a batch run can summarise them.

`record("rouge1", 0.31, unit="F1")` keeps the value in this process (see `recorded()`) and,
when $LABS_RESULTS_FILE is set (as `python -m labhelpers.tools.labs run` does), appends one JSON
line {notebook, key, value, unit, note} to that file. $LABS_NOTEBOOK names the notebook.
"""

from __future__ import annotations

import copy
import json
import math
import os

__all__ = ['RESULTS_FILE_ENV', 'NOTEBOOK_ENV', 'record', 'recorded', 'read_results']

RESULTS_FILE_ENV = "LABS_RESULTS_FILE"
NOTEBOOK_ENV = "LABS_NOTEBOOK"

_RECORDED: list[dict] = []


def _plain(value, where: str = "value"):
    """`value` as plain JSON types (numpy scalars and arrays converted), else TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}={value!r} is not finite; JSON has no NaN or Infinity "
                             f"(record None or a string instead)")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"{where} has non-string dict key {bad[0]!r}; JSON keys must be strings")
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist(), where)
    raise TypeError(f"{where} must be JSON-serialisable (number, string, bool, None, or a list/dict "
                    f"of those), not {type(value).__name__}")


def record(key: str, value, unit: str = "", note: str = ""):
    """Record one measured `value` under `key` (and append it to $LABS_RESULTS_FILE); return `value`."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    for name, text in (("unit", unit), ("note", note)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a string, not {type(text).__name__}")
    entry = {"notebook": os.environ.get(NOTEBOOK_ENV) or None, "key": key.strip(),
             "value": _plain(value), "unit": unit, "note": note}
    path = os.environ.get(RESULTS_FILE_ENV)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, allow_nan=False) + "\n")
    _RECORDED.append(entry)
    return value


def recorded() -> list[dict]:
    """A copy of every entry recorded in this process, oldest first."""
    return copy.deepcopy(_RECORDED)


def read_results(path) -> list[dict]:
    """The entries in a results file written by `record` (an empty list if it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
