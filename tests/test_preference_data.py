"""Tests for the preference pairs: the committed set is valid, split by dialogue, varied; bad files fail by line."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from labhelpers.data import read_jsonl
from labhelpers.datagen.hostile import generate_hostile_dialogues, hostile_data_dir
from labhelpers.datagen.preference_pairs import (PREFERENCE_FIELDS, PREFERENCE_KINDS, build_preference_data,
                                                 generate_preference_pairs, preference_data_dir)
from labhelpers.preference_data import PreferenceDataError, load_preference_pairs
from labhelpers.prompts import build_prompt

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def pairs():
    return load_preference_pairs()


def test_committed_pairs_load_with_the_documented_columns(pairs):
    assert list(pairs) == list(SPLITS)
    for split in SPLITS:
        assert pairs[split].column_names == list(PREFERENCE_FIELDS)
        assert len(pairs[split]) > 0
    assert len(load_preference_pairs("test")) == len(pairs["test"])


def test_each_pair_prefers_the_reference_of_its_own_dialogue(pairs):
    for split in SPLITS:
        with (hostile_data_dir() / f"{split}.jsonl").open(encoding="utf-8") as fh:
            dialogues = {r["id"]: r for r in map(json.loads, fh)}
        for row in pairs[split]:
            source = dialogues[row["dialogue_id"]]  # a KeyError here: the pair's dialogue is in another split
            assert row["chosen"] == source["summary"]
            assert row["prompt"] == build_prompt(source["dialogue"], template="instruction")
            assert row["chosen"] != row["rejected"] and row["rejected"].strip()
            assert "\n" not in row["reason"] and row["reason"].strip()
            if row["kind"] == "harmless":
                assert row["rejected"] == source["quoting_summary"]


def test_splits_are_disjoint_by_dialogue_and_follow_the_hostile_split(pairs):
    by_split = {s: set(pairs[s]["dialogue_id"]) for s in SPLITS}
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["validation"] & by_split["test"]
    for split in SPLITS:
        assert by_split[split] == {r["id"] for r in read_jsonl(hostile_data_dir() / f"{split}.jsonl")}
    # no text of a test dialogue (a reference, a quoting or invented summary) appears in train; vacuous
    # summaries and loops of names, which name no dialogue's facts, may recur, and so may the pairs of the
    # two dialogues (h-0006 in test, h-0066 in train) whose references the hostile set writes word for word alike
    def references(split):
        with (hostile_data_dir() / f"{split}.jsonl").open(encoding="utf-8") as fh:
            return {json.loads(line)["summary"] for line in fh}

    alike = references("train") & references("test")
    assert len(alike) <= 1

    def texts(split):
        return {t for row in pairs[split] if row["kind"] != "helpful" and row["chosen"] not in alike
                for t in (row["chosen"], row["rejected"])}

    assert not texts("test") & texts("train")
    assert not {p for p in pairs["test"]["prompt"]} & set(pairs["train"]["prompt"])


def test_every_kind_in_every_split(pairs):
    for split in SPLITS:
        kinds = Counter(pairs[split]["kind"])
        assert set(kinds) == set(PREFERENCE_KINDS), (split, kinds)


def test_rejected_forms_vary_so_no_single_string_marks_them(pairs):
    train = pairs["train"]
    helpful = [r["rejected"] for r in train if r["kind"] == "helpful"]
    faithful = [r["rejected"] for r in train if r["kind"] == "faithful"]
    assert len(set(helpful)) >= 0.8 * len(helpful)
    assert Counter(helpful).most_common(1)[0][1] <= 6
    assert len(set(faithful)) >= 0.6 * len(faithful)
    # vacuous, looping and repetitive summaries, and several kinds of invention
    ids = Counter(re.sub(r"^h-\d+-", "", i) for i in train["id"])
    assert ids["vacuous"] > 0 and ids["looping"] > 0 and ids["invented-edit"] > 0 and ids["invented-other"] > 0
    assert ids["repetitive"] == len(set(train["dialogue_id"]))  # one per dialogue
    reasons = " ".join(r["reason"] for r in train if r["id"].endswith("-repetitive"))
    for form in ("with the other person", "said over again", "after each name", "started over"):
        assert form in reasons, form
    reasons = " ".join(r["reason"] for r in train if r["kind"] == "faithful")
    for form in ("where the dialogue has", "swaps", "turns the outcome round", "another dialogue's", "adds an event"):
        assert form in reasons, form


def test_the_committed_files_are_what_the_generator_writes(tmp_path):
    counts = build_preference_data(tmp_path)
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_text(encoding="utf-8") == \
            (preference_data_dir() / f"{split}.jsonl").read_text(encoding="utf-8")
        assert sum(counts[split].values()) == len(load_preference_pairs(split))


def test_generator_on_tiny_dialogues_is_seeded_and_stays_within_its_list():
    rows = generate_hostile_dialogues(24, seed=3, id_prefix="t")
    first, again = generate_preference_pairs(rows, seed=5), generate_preference_pairs(rows, seed=5)
    assert first == again
    assert first != generate_preference_pairs(rows, seed=6)
    summaries = {r["summary"] for r in rows}
    borrowed = [p for p in first if "another dialogue's" in p["reason"]]
    assert borrowed and all(p["rejected"] in summaries for p in borrowed)
    with pytest.raises(ValueError, match=r"dialogues\[0\] lacks quoting_summary"):
        generate_preference_pairs([{"id": "x", "dialogue": "#Person1#: hi", "summary": "hi"}])


GOOD = {"id": "p1", "prompt": "Summarize the following conversation.\n\n#Person1#: Hi.\n\nSummary:",
        "dialogue_id": "d1", "chosen": "#Person1# says hello.", "rejected": "#Person1# #Person1# #Person1#",
        "kind": "helpful", "reason": "The rejected summary loops."}


def _write(tmp_path, *lines: str):
    file = tmp_path / "pairs.jsonl"
    file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return file


def test_a_good_file_loads_as_one_dataset(tmp_path):
    second = json.dumps({**GOOD, "id": "p2"})
    ds = load_preference_pairs(path=_write(tmp_path, json.dumps(GOOD), "", second))
    assert ds["id"] == ["p1", "p2"] and ds.column_names == list(PREFERENCE_FIELDS)


@pytest.mark.parametrize("line, message", [
    ('{"id": "p1", "prompt": ', r"line 2: not valid JSON"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "rejected"}), r"line 2: missing field 'rejected'"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "reason"}), r"line 2: missing field 'reason'"),
    (json.dumps({**GOOD, "chosen": "  "}), r"line 2: field 'chosen' is empty; a pair needs text on both sides"),
    (json.dumps({**GOOD, "rejected": ""}), r"line 2: field 'rejected' is empty"),
    (json.dumps({**GOOD, "rejected": GOOD["chosen"]}), r"line 2: chosen equals rejected"),
    (json.dumps({**GOOD, "kind": "nicer"}), r"line 2: kind 'nicer' is not one of harmless, helpful, faithful"),
    (json.dumps({**GOOD, "chosen": 3}), r"line 2: field 'chosen' is a int, not text"),
    (json.dumps([GOOD]), r"line 2: a JSON list, not an object"),
    (json.dumps(GOOD), r"line 2: id 'p1' already used on line 1"),
])
def test_a_bad_line_is_named_in_one_line(tmp_path, line, message):
    file = _write(tmp_path, json.dumps(GOOD), line)
    with pytest.raises(PreferenceDataError, match=message) as info:
        load_preference_pairs(path=file)
    text = str(info.value)
    assert str(file) in text and "\n" not in text


def test_bad_arguments_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="split='dev' must be one of train, validation, test"):
        load_preference_pairs("dev")
    with pytest.raises(FileNotFoundError, match="no preference pairs at"):
        load_preference_pairs(path=tmp_path / "nowhere")
    (tmp_path / "train.jsonl").write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    assert len(load_preference_pairs("train", path=tmp_path)) == 1
    with pytest.raises(FileNotFoundError, match="lacks validation.jsonl, test.jsonl"):
        load_preference_pairs(path=tmp_path)
    with pytest.raises(ValueError, match="is one file"):
        load_preference_pairs("train", path=tmp_path / "train.jsonl")
    empty = _write(tmp_path, "", "")
    with pytest.raises(PreferenceDataError, match="no preference pairs in it"):
        load_preference_pairs(path=empty)
