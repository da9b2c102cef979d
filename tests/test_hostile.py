"""Tests for labhelpers.hostile: the committed hostile dialogues are valid, disjoint, hostile, with clean references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labhelpers.data import COLUMNS, SPLITS, read_jsonl
from labhelpers.hostile import (HOSTILE_SCENARIOS, HOSTILE_SPLIT, TINY_HOSTILE_SIZES, build_hostile_data,
                                generate_hostile_dialogues, hostile_data_dir, load_hostile_dialogues)


@pytest.fixture(scope="module")
def committed():
    return load_hostile_dialogues("embedded")


def test_committed_rows_are_valid_and_split_as_documented(committed):
    for split in SPLITS:
        rows = read_jsonl(hostile_data_dir() / f"{split}.jsonl")  # read_jsonl checks each row
        assert len(rows) == HOSTILE_SPLIT[split] * len(HOSTILE_SCENARIOS)
        assert committed[split].column_names == list(COLUMNS)
        # every setting in every split, with #Person1# opening each dialogue
        assert sorted(set(committed[split]["topic"])) == sorted({r["topic"] for r in rows})
        assert len(set(committed[split]["topic"])) == len(HOSTILE_SCENARIOS)
        assert all(d.startswith("#Person1#: ") and "#Person2#: " in d for d in committed[split]["dialogue"])


def test_splits_share_no_id_and_no_dialogue(committed):
    ids = [i for s in SPLITS for i in committed[s]["id"]]
    texts = [t for s in SPLITS for t in committed[s]["dialogue"]]
    assert len(set(ids)) == len(ids)
    assert len(set(texts)) == len(texts)


def test_the_committed_files_are_what_the_generator_writes(tmp_path):
    sizes = build_hostile_data(tmp_path)
    assert sizes == {s: HOSTILE_SPLIT[s] * len(HOSTILE_SCENARIOS) for s in SPLITS}
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_text() == (hostile_data_dir() / f"{split}.jsonl").read_text()


@pytest.mark.parametrize("scorer_name", ["ProfanityCheckScorer", "SafeTypeScorer"])
def test_dialogues_are_flagged_and_references_are_clean(committed, scorer_name):
    import labhelpers.rewards as rewards

    scorer = getattr(rewards, scorer_name)()
    dialogues = [t for s in SPLITS for t in committed[s]["dialogue"]]
    summaries = [t for s in SPLITS for t in committed[s]["summary"]]
    assert np.mean(scorer.toxicity(dialogues) > 0.5) >= 0.6  # measured: 0.86 and 0.72
    p_summaries = scorer.toxicity(summaries)
    assert p_summaries.max() < 0.5, summaries[int(p_summaries.argmax())]
    assert p_summaries.mean() < 0.1


def test_the_tiny_profile_generates_a_small_set():
    ds = load_hostile_dialogues("tiny")
    assert {s: len(ds[s]) for s in SPLITS} == TINY_HOSTILE_SIZES
    assert ds["train"][0]["dialogue"].startswith("#Person1#: ")


def test_generation_is_seeded_and_checks_its_arguments():
    assert generate_hostile_dialogues(5, seed=1) == generate_hostile_dialogues(5, seed=1)
    assert generate_hostile_dialogues(5, seed=1) != generate_hostile_dialogues(5, seed=2)
    assert [r["topic"] for r in generate_hostile_dialogues(2)] == ["delivery complaint", "shop refund"]
    json.dumps(generate_hostile_dialogues(24))  # plain, serialisable rows
    with pytest.raises(ValueError, match="n=-1"):
        generate_hostile_dialogues(-1)
    with pytest.raises(ValueError, match="seed="):
        generate_hostile_dialogues(2, seed="x")
