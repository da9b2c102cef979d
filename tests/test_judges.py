"""Tests for labhelpers.judges: the judge set, AUC with an interval, the candidates, and the judge the labs use."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from labhelpers.datagen.preference_pairs import preference_data_dir
from labhelpers.judges import (JUDGE_AUC_GOAL, JUDGE_SET_PARTS, EmbeddingProbeScorer, MaxScorer,
                               ThreatDehumanisationScorer, judge_auc, load_toxicity_judge_set, roc_auc_interval,
                               toxicity_judge)
from labhelpers.rewards import SafeTypeScorer, ToxicityScorer, ToxicityScores


class FixedScorer(ToxicityScorer):
    """P(toxic) looked up per text."""

    def __init__(self, table: dict[str, float]):
        self.table, self.name = table, "fixed"

    def _score(self, texts, batch_size):
        p = np.array([self.table[t] for t in texts])
        return ToxicityScores(p, -p)


# ------------------------------------------------------------------ the labelled set


def test_judge_set_is_balanced_varied_and_in_two_parts():
    parts = {part: load_toxicity_judge_set(part) for part in JUDGE_SET_PARTS}
    for part, rows in parts.items():
        assert len(rows) >= 100
        labels = Counter(r["label"] for r in rows)
        assert labels[0] == labels[1], (part, labels)
        categories = Counter(r["category"] for r in rows)
        assert set(categories) == {"neutral", "insult", "threat", "dehumanising"}
        assert all(categories[c] >= 15 for c in ("insult", "threat", "dehumanising")), categories
        assert all((r["category"] == "neutral") == (r["label"] == 0) for r in rows)
    texts = [r["text"] for rows in parts.values() for r in rows]
    assert len(set(texts)) == len(texts)  # no sentence twice, and the two parts share none
    assert len(load_toxicity_judge_set()) == len(texts)


def test_no_judge_sentence_is_in_the_preference_pairs():
    """The judge set must never train a reward: none of its sentences is on either side of a preference pair."""
    judge = {r["text"] for r in load_toxicity_judge_set()}
    for file in preference_data_dir().glob("*.jsonl"):
        for line in file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert row["chosen"] not in judge and row["rejected"] not in judge


def test_judge_set_errors_name_the_part_or_line(tmp_path):
    with pytest.raises(ValueError, match="part='test' must be one of development, heldout"):
        load_toxicity_judge_set("test")
    with pytest.raises(FileNotFoundError, match="no judge set at"):
        load_toxicity_judge_set("heldout", path=tmp_path)
    (tmp_path / "heldout.jsonl").write_text('{"text": "fine", "label": 0}\n{"text": "x", "label": 2}\n')
    with pytest.raises(ValueError, match=r"heldout.jsonl, line 2: each line needs a 'text' and a 'label' of 0 or 1"):
        load_toxicity_judge_set("heldout", path=tmp_path)


# ------------------------------------------------------------------ AUC with an interval


def test_roc_auc_interval_is_the_hand_computed_auc():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of the 4 (positive, negative) pairs ranked right
    labels, scores = [0, 0, 1, 1] * 10, [0.1, 0.4, 0.35, 0.8] * 10
    estimate = roc_auc_interval(labels, scores)
    assert estimate.mean == pytest.approx(0.75)
    assert estimate.low < 0.75 < estimate.high and estimate.n == 40
    assert roc_auc_interval(labels, scores) == estimate  # seeded
    perfect = roc_auc_interval([0, 1] * 20, [0.2, 0.9] * 20)
    assert (perfect.mean, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc_interval([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="one length"):
        roc_auc_interval([0, 1], [0.2])


# ------------------------------------------------------------------ the candidates


def test_threat_and_dehumanisation_rules_on_hand_examples():
    rules = ThreatDehumanisationScorer()
    p = rules.toxicity(["#Person1# threatens to break #Person2#'s legs.",
                        "#Person2# says he will kill him if he comes back.",
                        "#Person1# says people like #Person2# are vermin.",
                        "#Person1# kills time at the station.",            # a violent word, no threat: one cue
                        "#Person2# asks for a refund for the kettle."])
    assert p.tolist() == [0.9, 0.9, 0.9, 0.3, 0.0]
    assert rules.reward(["#Person2# asks for a refund for the kettle."])[0] == pytest.approx(5.0)  # clipped log-odds


def test_max_scorer_takes_the_most_toxic_opinion():
    a = FixedScorer({"x": 0.1, "y": 0.7})
    b = FixedScorer({"x": 0.4, "y": 0.2})
    scores = MaxScorer([a, b]).score(["x", "y"])
    assert scores.toxicity.tolist() == [0.4, 0.7]
    assert scores.reward[0] == pytest.approx(np.log(0.6 / 0.4))
    with pytest.raises(TypeError, match="non-empty list of ToxicityScorer"):
        MaxScorer([])


def test_embedding_probe_mechanics_on_the_tiny_model():
    texts = ["#Person1# calls #Person2# a stupid idiot.", "#Person1# books a table for two.",
             "#Person2# says she will hurt him.", "#Person2# pays the bill."]
    probe = EmbeddingProbeScorer(texts, [1, 0, 1, 0], model="tiny-llama", profile="tiny", layer=1)
    p = probe.toxicity(texts + ["A new sentence."])
    assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))
    assert probe.embed(texts).shape[0] == 4
    # a text's embedding does not depend on what else is in its batch: padding is left out of the mean
    alone = probe.embed(texts[1:2])[0]
    beside_longer = probe.embed([texts[1], "#Person1# says a great deal more than anyone in this batch " * 3])[0]
    np.testing.assert_allclose(alone, beside_longer, rtol=1e-4, atol=1e-5)
    # an empty summary (a policy can write one) is scored, alone or beside others, as the end-of-text token
    empty = probe.toxicity(["", "  "])
    assert np.all(np.isfinite(empty)) and empty[0] == empty[1]
    np.testing.assert_allclose(probe.embed(["", texts[0]])[0], probe.embed([probe._tokenizer.eos_token])[0],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="labels of both classes"):
        EmbeddingProbeScorer(texts, [1, 1, 1, 1], model="tiny-llama", profile="tiny")


# ------------------------------------------------------------------ the judge the labs use


@pytest.fixture(scope="module")
def judge():
    return toxicity_judge("embedded")


def test_the_judge_reaches_the_goal_on_the_held_out_part_where_safetype_does_not(judge):
    """The held-out part was written after the judge was fitted; SafeType alone fails this very check."""
    auc = judge_auc(judge, "heldout")
    assert auc.mean >= JUDGE_AUC_GOAL, auc
    assert auc.low >= 0.85, auc
    assert judge_auc(SafeTypeScorer(), "heldout").mean < JUDGE_AUC_GOAL


def test_the_judge_scores_quoting_summaries_above_neutral_references(judge):
    """Text the project did not write by hand for the judge: the hostile dialogues' two summaries of one dialogue."""
    from labhelpers.datagen.hostile import hostile_data_dir

    with (hostile_data_dir() / "test.jsonl").open(encoding="utf-8") as fh:
        rows = [r for r in map(json.loads, fh) if r["quoting_summary"] != r["summary"]]
    neutral = judge.toxicity([r["summary"] for r in rows])
    quoting = judge.toxicity([r["quoting_summary"] for r in rows])
    assert np.mean(quoting > neutral) >= 0.8
    assert np.mean(neutral > 0.5) <= 0.2
