"""Tests for labhelpers.hostile: the committed hostile dialogues are valid, disjoint, hostile, with clean references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labhelpers.data import COLUMNS, SPLITS, read_jsonl
from labhelpers.datagen.hostile import (HOSTILE_SCENARIOS, HOSTILE_SPLIT, TINY_HOSTILE_SIZES, build_hostile_data,
                                        generate_hostile_dialogues, hostile_data_dir)
from labhelpers.hostile import careless_summariser, careless_summaries, load_hostile_dialogues


@pytest.fixture(scope="module")
def committed():
    return load_hostile_dialogues("embedded")


def test_committed_rows_are_valid_and_split_as_documented(committed):
    for split in SPLITS:
        rows = read_jsonl(hostile_data_dir() / f"{split}.jsonl")  # read_jsonl checks each row
        assert len(rows) == HOSTILE_SPLIT[split] * len(HOSTILE_SCENARIOS)
        assert committed[split].column_names == list(COLUMNS) + ["quoting_summary"]
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


@pytest.mark.parametrize("scorer_name", ["ProfanityCheckScorer", "SafeTypeScorer"])
def test_quoting_summaries_repeat_the_insults_and_keep_the_facts(committed, scorer_name):
    import labhelpers.rewards as rewards

    scorer = getattr(rewards, scorer_name)()
    rows = [r for s in SPLITS for r in committed[s]]
    quoting = scorer.toxicity([r["quoting_summary"] for r in rows])
    neutral = scorer.toxicity([r["summary"] for r in rows])
    assert quoting.mean() > neutral.mean() + 0.2  # measured: 0.71 vs 0.03 and 0.27 vs 0.00
    # the insults are the dialogue's own: every quoted word of a quoting summary was said in its dialogue
    for r in rows:
        for quote in r["quoting_summary"].split('"')[1::2]:
            words = [w.strip(",.!?").lower() for w in quote.split()]
            assert all(w in r["dialogue"].lower() for w in words if w), (quote, r["dialogue"])
    # the same facts: a quoting summary differs from its reference only where the reference said "insults"
    differ = sum(r["quoting_summary"] != r["summary"] for r in rows)
    assert differ >= 0.9 * len(rows)


def test_careless_summaries_mix_the_two_styles_as_asked(committed):
    train = committed["train"]
    rows = careless_summaries(train, share=0.75, seed=3)
    changed = [r["summary"] != ref for r, ref in zip(rows, train["summary"])]
    assert all(r["summary"] == r["quoting_summary"] for r, c in zip(rows, changed) if c)
    same = sum(q == ref for q, ref in zip(train["quoting_summary"], train["summary"]))  # no insult in the template
    assert round(0.75 * len(rows)) - same <= sum(changed) <= round(0.75 * len(rows))
    assert careless_summaries(train, share=0.75, seed=3) == rows
    assert careless_summaries(train, share=0.75, seed=4) != rows
    assert [r["summary"] for r in careless_summaries(train, share=0.0)] == train["summary"]
    assert [r["summary"] for r in careless_summaries(train, share=1.0)] == train["quoting_summary"]
    with pytest.raises(ValueError, match="share="):
        careless_summaries(train, share=1.5)
    with pytest.raises(ValueError, match="quoting_summary"):
        careless_summaries([{"dialogue": "a", "summary": "b"}])


def test_careless_summariser_trains_once_and_is_reused(tmp_path):
    import torch

    from labhelpers import load_model

    dialogues = load_hostile_dialogues("tiny")
    model, tok = load_model(profile="tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start, result = careless_summariser(model, tok, dialogues, "tiny", output_dir=tmp_path / "careless",
                                        progress=False, live_plot=False)
    assert result is not None and result.final_loss < result.first_loss
    assert not hasattr(start, "peft_config")  # merged: a plain model, as PPO's starting point must be
    changed = [k for k, v in start.state_dict().items() if not torch.equal(v, before[k])]
    depth = model.config.num_hidden_layers
    assert changed and all(f"layers.{depth - 1}." in k for k in changed)  # only the top third moved
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the base stays as it was
    again, none = careless_summariser(model, tok, dialogues, "tiny", output_dir=tmp_path / "careless", reuse=True)
    assert none is None
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in again.state_dict().items())
    # another share of careless summaries is another run: reuse=True trains it rather than load the old one
    other, trained = careless_summariser(model, tok, dialogues, "tiny", output_dir=tmp_path / "careless", reuse=True,
                                         share=0.5, progress=False, live_plot=False)
    assert trained is not None and not trained.reused
    assert any(not torch.equal(v, start.state_dict()[k]) for k, v in other.state_dict().items())
