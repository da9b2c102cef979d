"""Tests for labhelpers.data: the project's dialogues, generated ones, JSONL files and folders, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import DIALOGSUM_DEV
from labhelpers import data
from labhelpers.data import COLUMNS, SPLITS, DataUnavailableError, load_dialogues, read_jsonl

TURN = re.compile(r"#Person[1-9]\d*#: ")
# data/README.md: 150 train, 30 validation, 60 test dialogues written for the project
PROJECT_SIZES = {"train": 150, "validation": 30, "test": 60}


def _row(i: int, **extra) -> dict:
    row = {"fname": f"file_{i}", "dialogue": f"#Person1#: Question {i}?\n#Person2#: Answer {i}.",
           "summary": f"Person1 asks question {i}.", "topic": "test"}
    row.update(extra)
    return row


def _write_jsonl(path: Path, rows) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ids(dd) -> dict[str, list[str]]:
    return {name: list(dd[name]["id"]) for name in SPLITS}


def _check_schema(dd) -> None:
    assert set(dd) == set(SPLITS)
    for name in SPLITS:
        assert dd[name].column_names == list(COLUMNS), name


# ---------------------------------------------------------------- the project's dialogues

@pytest.fixture(scope="module")
def project():
    return load_dialogues("project")


def test_project_sizes_and_schema(project):
    _check_schema(project)
    assert {name: project[name].num_rows for name in SPLITS} == PROJECT_SIZES


def test_project_rows_are_complete_and_ids_unique(project):
    all_ids = []
    for name in SPLITS:
        for row in project[name]:
            assert row["id"].strip() and row["dialogue"].strip() and row["summary"].strip(), row["id"]
            all_ids.append(row["id"])
    assert len(all_ids) == len(set(all_ids))


def test_project_dialogue_lines_start_with_a_speaker_tag(project):
    for name in SPLITS:
        for row in project[name]:
            for line in row["dialogue"].split("\n"):
                assert TURN.match(line), f"{row['id']}: {line!r}"


def test_profile_default_source(monkeypatch, project):
    monkeypatch.delenv("LABS_PROFILE", raising=False)
    assert _ids(load_dialogues()) == _ids(project)  # embedded (the default) uses the project's dialogues


def test_missing_project_folder_is_unavailable(monkeypatch, tmp_path):
    monkeypatch.setenv("LABS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailableError, match="LABS_DATA_DIR"):
        load_dialogues("project")


# ---------------------------------------------------------------- generated dialogues

def test_generated_is_deterministic_and_seeded(tiny_dialogues):
    _check_schema(tiny_dialogues)
    assert {n: tiny_dialogues[n].num_rows for n in SPLITS} == data.GENERATED_SIZES
    again = load_dialogues("generated", seed=0)
    for name in SPLITS:
        assert again[name].to_list() == tiny_dialogues[name].to_list()
    other = load_dialogues("generated", seed=1)
    assert other["train"]["dialogue"] != tiny_dialogues["train"]["dialogue"]


def test_generated_splits_do_not_overlap(tiny_dialogues):
    ids = _ids(tiny_dialogues)
    assert sum(len(v) for v in ids.values()) == len(set().union(*map(set, ids.values())))


# ---------------------------------------------------------------- a JSONL file

def test_jsonl_file_splits_by_seed_and_maps_fname_to_id(tmp_path):
    rows = [_row(i) for i in range(20)]
    path = _write_jsonl(tmp_path / "mine.jsonl", rows)
    dd = load_dialogues(str(path), seed=0)
    _check_schema(dd)
    # default fractions: 20% test, 10% validation, the rest train
    assert {n: dd[n].num_rows for n in SPLITS} == {"train": 14, "validation": 2, "test": 4}
    ids = _ids(dd)
    assert sorted(sum(ids.values(), [])) == sorted(r["fname"] for r in rows)
    by_id = {r["fname"]: r for r in rows}
    for name in SPLITS:
        for row in dd[name]:
            assert row["dialogue"] == by_id[row["id"]]["dialogue"]
            assert row["summary"] == by_id[row["id"]]["summary"]
    assert _ids(load_dialogues(path, seed=0)) == ids  # a Path works too, and the split repeats
    assert _ids(load_dialogues(str(path), seed=1)) != ids


def test_small_jsonl_keeps_every_column_in_every_split(tmp_path):
    path = _write_jsonl(tmp_path / "few.jsonl", [_row(i) for i in range(4)])
    dd = load_dialogues(str(path))
    _check_schema(dd)
    assert sum(dd[n].num_rows for n in SPLITS) == 4


def test_read_jsonl_defaults(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"dialogue": "#Person1#: Hi.", "summary": "A greeting."},
                                               "", {"id": 7, "dialogue": "#Person1#: Bye.", "summary": "Bye."}])
    rows = read_jsonl(path)
    assert [r["id"] for r in rows] == ["d-1", "7"]  # no id: file stem and line; ids are strings
    assert [r["topic"] for r in rows] == ["", ""]


@pytest.mark.parametrize("bad, what", [
    (json.dumps({"fname": "x", "dialogue": "   ", "summary": "s"}), "'dialogue'"),
    (json.dumps({"fname": "x", "dialogue": "#Person1#: Hi."}), "'summary'"),
    ('{"fname": "x", "dialogue": ', "not valid JSON"),
    ('["#Person1#: Hi.", "a summary"]', ""),
], ids=["empty-dialogue", "missing-summary", "invalid-json", "not-an-object"])
def test_bad_row_names_file_and_line(tmp_path, bad, what):
    path = _write_jsonl(tmp_path / "bad.jsonl", [_row(0), "", bad, _row(1)])  # the bad row is on line 3
    with pytest.raises(ValueError) as info:
        read_jsonl(path)
    assert f"{path}:3" in str(info.value)
    assert what in str(info.value)
    with pytest.raises(ValueError, match=re.escape(f"{path}:3")):
        load_dialogues(str(path))


def test_empty_file_is_a_value_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="no dialogues"):
        read_jsonl(path)


# ---------------------------------------------------------------- a folder of split files

def test_folder_with_three_split_files_loads_as_is(tmp_path):
    written = {"train": range(0, 5), "validation": range(5, 7), "test": range(7, 10)}
    for name, numbers in written.items():
        _write_jsonl(tmp_path / f"{name}.jsonl", [_row(i) for i in numbers])
    dd = load_dialogues(str(tmp_path))
    _check_schema(dd)
    assert _ids(dd) == {name: [f"file_{i}" for i in numbers] for name, numbers in written.items()}


def test_folder_missing_a_split_file(tmp_path):
    for name in ("train", "test"):
        _write_jsonl(tmp_path / f"{name}.jsonl", [_row(0)])
    with pytest.raises(DataUnavailableError, match="validation.jsonl"):
        load_dialogues(str(tmp_path))


# ---------------------------------------------------------------- bad sources and the hub

@pytest.mark.parametrize("source", [123, 4.5, ["project"], "", "   ", "no-such-source", "a/b/c"])
def test_bad_source_is_a_value_error(source):
    with pytest.raises(ValueError, match="source"):
        load_dialogues(source)


def test_hub_id_offline_is_unavailable_with_the_offline_way(hub_offline):
    with pytest.raises(DataUnavailableError) as info:
        load_dialogues("labs-test-org/no-such-dialogues", profile="course")
    message = str(info.value)
    assert "'course'" in message and "labs-test-org/no-such-dialogues" in message
    assert "LABS_PROFILE=embedded" in message


# ---------------------------------------------------------------- the real DialogSum dev split (when present)

@pytest.mark.skipif(not DIALOGSUM_DEV.is_file(),
                    reason=f"real DialogSum dev data is not shipped with the project (absent: {DIALOGSUM_DEV})")
def test_real_dialogsum_dev_file_loads():
    raw = [json.loads(line) for line in DIALOGSUM_DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    dd = load_dialogues(str(DIALOGSUM_DEV))
    _check_schema(dd)
    assert sum(dd[n].num_rows for n in SPLITS) == 500  # DialogSum's dev split has 500 dialogues
    ids = sum(_ids(dd).values(), [])
    assert sorted(ids) == sorted(r["fname"] for r in raw)
    assert len(set(ids)) == 500
    for row in dd["test"]:
        assert TURN.match(row["dialogue"]) and row["summary"].strip()
