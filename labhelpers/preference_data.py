"""Preference pairs for a reward model: (prompt, chosen, rejected) read from JSON lines, checked line by line.

The committed set (data/preference_pairs/, written by labhelpers.datagen.preference_pairs) judges summaries of
the hostile dialogues in three kinds: harmless beats insulting, helpful beats vacuous or looping, faithful beats
invented. `load_preference_pairs()` reads it, or any folder or file in the same format, as a datasets
Dataset (one split) or DatasetDict (train / validation / test); a bad line stops it with the file and line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .datagen.preference_pairs import PREFERENCE_FIELDS, PREFERENCE_KINDS, preference_data_dir

__all__ = ["PREFERENCE_KINDS", "PreferenceDataError", "load_preference_pairs"]

_SPLITS = ("train", "validation", "test")


class PreferenceDataError(ValueError):
    """A preference file that cannot be used: a missing field, an empty side, chosen equal to rejected, bad JSON."""


def _read_pairs(file: Path) -> list[dict]:
    """Every pair in one JSON-lines file, each line checked; blank lines are skipped."""
    rows, seen = [], {}
    with file.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{file}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PreferenceDataError(f"{where}: not valid JSON ({err.msg}, column {err.colno}); each line must "
                                          "be one JSON object") from None
            if not isinstance(row, dict):
                raise PreferenceDataError(f"{where}: a JSON {type(row).__name__}, not an object with the fields "
                                          f"{', '.join(PREFERENCE_FIELDS)}")
            missing = [k for k in PREFERENCE_FIELDS if k not in row]
            if missing:
                raise PreferenceDataError(f"{where}: missing field {', '.join(repr(k) for k in missing)}; each pair "
                                          f"needs {', '.join(PREFERENCE_FIELDS)}")
            not_text = [k for k in PREFERENCE_FIELDS if not isinstance(row[k], str)]
            if not_text:
                raise PreferenceDataError(f"{where}: field {not_text[0]!r} is a {type(row[not_text[0]]).__name__}, "
                                          "not text")
            empty = [k for k in PREFERENCE_FIELDS if not row[k].strip()]
            if empty:
                raise PreferenceDataError(f"{where}: field {empty[0]!r} is empty; "
                                          + ("a pair needs text on both sides" if empty[0] in ("chosen", "rejected")
                                             else "fill it in"))
            if row["chosen"].strip() == row["rejected"].strip():
                raise PreferenceDataError(f"{where}: chosen equals rejected, so the pair prefers nothing; drop the "
                                          "line or change one side")
            if row["kind"] not in PREFERENCE_KINDS:
                raise PreferenceDataError(f"{where}: kind {row['kind']!r} is not one of {', '.join(PREFERENCE_KINDS)}")
            if row["id"] in seen:
                raise PreferenceDataError(f"{where}: id {row['id']!r} already used on line {seen[row['id']]}; ids "
                                          "must be unique")
            seen[row["id"]] = number
            rows.append({k: row[k] for k in PREFERENCE_FIELDS})
    if not rows:
        raise PreferenceDataError(f"{file}: no preference pairs in it")
    return rows


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_dict({k: [r[k] for r in rows] for k in PREFERENCE_FIELDS})


def load_preference_pairs(split: str | None = None, path: str | os.PathLike | None = None):
    """The preference pairs: one split as a Dataset, or (split=None) train / validation / test as a DatasetDict.

    `path` is a folder holding {train,validation,test}.jsonl (default: the committed data/preference_pairs/) or a
    single .jsonl file, read as one Dataset. Columns: id, prompt, dialogue_id, chosen, rejected, kind, reason.
    """
    from datasets import DatasetDict

    if split is not None and split not in _SPLITS:
        raise ValueError(f"split={split!r} must be one of {', '.join(_SPLITS)}, or None for all three")
    where = preference_data_dir() if path is None else Path(path)
    if where.is_file():
        if split is not None:
            raise ValueError(f"path={str(where)!r} is one file; pass a folder to choose a split, or leave split=None")
        return _dataset(_read_pairs(where))
    if not where.is_dir():
        raise FileNotFoundError(f"no preference pairs at {where}; pass a folder of {{train,validation,test}}.jsonl "
                                "or one .jsonl file (labhelpers.datagen.preference_pairs.build_preference_data() "
                                "writes the project's)")
    wanted = _SPLITS if split is None else (split,)
    missing = [s for s in wanted if not (where / f"{s}.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"folder {where} lacks {', '.join(s + '.jsonl' for s in missing)}")
    if split is not None:
        return _dataset(_read_pairs(where / f"{split}.jsonl"))
    return DatasetDict({s: _dataset(_read_pairs(where / f"{s}.jsonl")) for s in _SPLITS})
