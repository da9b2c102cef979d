"""Dialogues with reference summaries as a `DatasetDict` (train / validation / test), DialogSum schema.

Sources: "project" (the dialogues written for this project, in data/dialogues/), "generated"
(seeded synthetic dialogues), a DialogSum-format JSONL file or folder, or a Hub dataset id
(the course profile's knkarthick/dialogsum).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from .profiles import get_profile

__all__ = ['COLUMNS', 'SPLITS', 'GENERATED_SIZES', 'DataUnavailableError', 'project_data_dir', 'read_jsonl',
           'split_rows', 'load_dialogues']

COLUMNS = ("id", "dialogue", "summary", "topic")
SPLITS = ("train", "validation", "test")
GENERATED_SIZES = {"train": 400, "validation": 40, "test": 40}


class DataUnavailableError(RuntimeError):
    """The dialogues a profile needs cannot be had here."""


def project_data_dir() -> Path:
    """The project's dialogues: $LABS_DATA_DIR, else data/dialogues beside the labhelpers package."""
    env = os.environ.get("LABS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "data" / "dialogues"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read DialogSum-format JSONL (keys id or fname, dialogue, summary, optional topic), checking each row."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, not {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file; give a DialogSum-format .jsonl file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON ({err.msg})") from None
            if not isinstance(raw, dict):
                raise ValueError(f"{path}:{number} is not a JSON object with dialogue and summary")
            row = {"id": str(raw.get("id", raw.get("fname", f"{path.stem}-{number}"))),
                   "dialogue": raw.get("dialogue"), "summary": raw.get("summary"), "topic": raw.get("topic", "")}
            for key in ("dialogue", "summary"):
                if not isinstance(row[key], str) or not row[key].strip():
                    raise ValueError(f"{path}:{number} has an empty or missing {key!r}")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no dialogues")
    return rows


def split_rows(rows: list[dict], seed: int = 0, validation: float = 0.1, test: float = 0.2) -> dict[str, list[dict]]:
    """Shuffle with a seed and cut into train/validation/test by the given fractions."""
    if not 0 <= validation < 1 or not 0 < test < 1 or validation + test >= 1:
        raise ValueError(f"validation={validation} and test={test} must be fractions that leave room for train")
    order = list(rows)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(order) * test))
    n_val = round(len(order) * validation)
    return {"test": order[:n_test], "validation": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}


def _to_dataset_dict(splits: dict[str, list[dict]]):
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({c: Value("string") for c in COLUMNS})  # an empty split keeps its columns
    return DatasetDict({name: Dataset.from_dict({c: [r[c] for r in splits[name]] for c in COLUMNS}, features=features)
                        for name in SPLITS})


def _from_folder(folder: Path):
    missing = [s for s in SPLITS if not (folder / f"{s}.jsonl").is_file()]
    if missing:
        raise DataUnavailableError(f"folder {folder} lacks {', '.join(m + '.jsonl' for m in missing)}")
    return _to_dataset_dict({s: read_jsonl(folder / f"{s}.jsonl") for s in SPLITS})


def _from_hub(dataset_id: str, profile_name: str):
    try:
        import datasets.config
        from datasets import load_dataset

        from .models import hub_offline

        before = datasets.config.HF_HUB_OFFLINE
        datasets.config.HF_HUB_OFFLINE = before or hub_offline()  # cached copy only, at once, when offline
        try:
            raw = load_dataset(dataset_id)
        finally:
            datasets.config.HF_HUB_OFFLINE = before
    except Exception as err:  # offline, unknown id, no cache: datasets raises many kinds
        raise DataUnavailableError(
            f"profile {profile_name!r}: cannot load dataset {dataset_id!r} (not cached, and the Hub cannot be"
            f" reached: {type(err).__name__}); offline, use LABS_PROFILE=embedded") from None
    splits = {}
    for name in SPLITS:
        if name not in raw:
            raise DataUnavailableError(f"dataset {dataset_id!r} has no {name!r} split")
        ds = raw[name]
        if "id" not in ds.column_names and "fname" in ds.column_names:
            ds = ds.rename_column("fname", "id")
        if "topic" not in ds.column_names:
            ds = ds.add_column("topic", [""] * len(ds))
        splits[name] = ds.select_columns(list(COLUMNS))
    from datasets import DatasetDict

    return DatasetDict(splits)


def load_dialogues(source: str | os.PathLike | None = None, *, profile=None, seed: int = 0):
    """Dialogues as a DatasetDict with train/validation/test and columns id, dialogue, summary, topic."""
    prof = get_profile(profile)
    source = prof.data if source is None else source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be 'project', 'generated', a .jsonl path, a folder or a Hub id; got {source!r}")
    if source == "project":
        folder = project_data_dir()
        if not folder.is_dir():
            raise DataUnavailableError(f"the project's dialogues are not at {folder}; set LABS_DATA_DIR to the"
                                       " data/dialogues folder of a checkout")
        return _from_folder(folder)
    if source == "generated":
        from .datagen.synthetic import generate_dialogues

        total = sum(GENERATED_SIZES.values())
        rows = generate_dialogues(total, seed=seed, id_prefix="gen")
        cuts = {"train": rows[:GENERATED_SIZES["train"]],
                "validation": rows[GENERATED_SIZES["train"]:GENERATED_SIZES["train"] + GENERATED_SIZES["validation"]],
                "test": rows[total - GENERATED_SIZES["test"]:]}
        return _to_dataset_dict(cuts)
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.suffix == ".jsonl" or path.exists():
        return _to_dataset_dict(split_rows(read_jsonl(path), seed=seed))
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return _from_hub(source, prof.name)
    raise ValueError(f"source={source!r} is neither 'project', 'generated', an existing file or folder,"
                     " nor a Hub id like 'knkarthick/dialogsum'")
