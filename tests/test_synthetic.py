"""Tests for labhelpers.datagen.synthetic: schema, determinism, format, faithfulness, variety, bad input."""

from __future__ import annotations

import ast
import collections
import json
import random
import re
import sys
import time
from pathlib import Path

import pytest

from labhelpers.datagen import synthetic
from labhelpers.datagen.synthetic import SCENARIOS, generate_dialogues

TURN_RE = re.compile(r"#Person([1-9])#: \S.*")
THREE_SPEAKER = {"birthday_party", "team_meeting_deadline"}


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return generate_dialogues(2000, seed=7)


@pytest.fixture(scope="module")
def topic_of() -> dict[str, str]:
    """Scenario name -> topic string, read off the generator itself."""
    return {name: generate_dialogues(1, scenarios=[name])[0]["topic"] for name in SCENARIOS}


def _speakers(dialogue: str) -> list[int]:
    return [int(TURN_RE.fullmatch(line).group(1)) for line in dialogue.split("\n")]


def _occurs(token: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(token) + r"(?!\w)", text) is not None


def _capitalised_tokens(summary: str) -> list[str]:
    """Capitalised words of a summary (names, places, days...), #PersonN# tags excluded."""
    out = []
    for tok in summary.split():
        tok = tok.strip('.,;:!?()"')
        if tok.startswith("#Person"):
            continue
        if tok.endswith("'s"):
            tok = tok[:-2]
        if tok and tok[0].isupper():
            out.append(tok)
    return out


# ---------------------------------------------------------------- schema

def test_schema_and_ids(corpus, topic_of):
    assert len(corpus) == 2000
    topics = set(topic_of.values())
    for i, rec in enumerate(corpus):
        assert set(rec) == {"id", "dialogue", "summary", "topic"}
        assert all(isinstance(v, str) and v for v in rec.values())
        assert rec["id"] == f"syn-{i:05d}"
        assert rec["topic"] in topics
        assert "{" not in rec["dialogue"] + rec["summary"]
        assert "<" not in rec["summary"]
    json.dumps(corpus)  # plain data, ready for datasets.Dataset.from_list / JSONL


def test_scenarios_constant(topic_of):
    assert isinstance(SCENARIOS, tuple)
    assert len(SCENARIOS) >= 14
    assert len(set(SCENARIOS)) == len(SCENARIOS)
    assert all(re.fullmatch(r"[a-z_]+", s) for s in SCENARIOS)
    assert len(set(topic_of.values())) == len(SCENARIOS)


def test_n_zero_and_id_prefix():
    assert generate_dialogues(0) == []
    a = generate_dialogues(5, seed=3)
    b = generate_dialogues(5, seed=3, id_prefix="train")
    assert [r["id"] for r in b] == [f"train-{i:05d}" for i in range(5)]
    assert [{**r, "id": None} for r in a] == [{**r, "id": None} for r in b]


# ---------------------------------------------------------------- determinism

def test_same_seed_same_output():
    assert generate_dialogues(300, seed=11) == generate_dialogues(300, seed=11)


def test_different_seed_different_output():
    a = generate_dialogues(100, seed=1)
    b = generate_dialogues(100, seed=2)
    assert a != b
    assert sum(x["dialogue"] != y["dialogue"] for x, y in zip(a, b)) > 90


def test_growing_n_only_appends():
    small = generate_dialogues(40, seed=5)
    big = generate_dialogues(130, seed=5)
    assert big[:40] == small


def test_independent_of_global_random_state():
    random.seed(123)
    a = generate_dialogues(50, seed=9)
    random.seed(456)
    state = random.getstate()
    b = generate_dialogues(50, seed=9)
    assert a == b
    assert random.getstate() == state  # global state neither used nor advanced


# ---------------------------------------------------------------- format

def test_every_line_is_a_turn_and_lengths_vary_within_bounds(corpus):
    for rec in corpus:
        lines = rec["dialogue"].split("\n")
        assert 4 <= len(lines) <= 14, rec
        for line in lines:
            assert TURN_RE.fullmatch(line), line
            assert line == line.strip()


def test_speakers_numbered_by_first_appearance(corpus):
    for rec in corpus:
        speakers = _speakers(rec["dialogue"])
        first_seen = list(dict.fromkeys(speakers))
        assert first_seen == list(range(1, len(first_seen) + 1)), rec["dialogue"]
        assert all(a != b for a, b in zip(speakers, speakers[1:])), "same speaker twice in a row"


def test_speaker_count_per_scenario(topic_of):
    for name in SCENARIOS:
        for rec in generate_dialogues(40, seed=2, scenarios=[name]):
            n_speakers = len(set(_speakers(rec["dialogue"])))
            assert n_speakers == (3 if name in THREE_SPEAKER else 2), (name, rec["dialogue"])
            # all three people are mentioned in three-speaker summaries
            if name in THREE_SPEAKER:
                assert {"#Person1#", "#Person2#", "#Person3#"} <= set(re.findall(r"#Person\d#", rec["summary"]))


def test_summary_style(corpus):
    for rec in corpus:
        summary, dialogue = rec["summary"], rec["dialogue"]
        assert summary[0].isupper() or summary.startswith("#Person")
        assert summary.endswith(".")
        sentences = re.findall(r"[.!?](?:\s|$)", summary)
        assert 1 <= len(sentences) <= 2, summary
        tags = re.findall(r"#Person\d#", summary)
        assert tags, summary  # third person, DialogSum style
        for tag in tags:
            assert f"{tag}: " in dialogue  # refers only to people who speak
        assert not re.search(r"\b(I|me|my|you|your)\b", summary), summary


# ---------------------------------------------------------------- faithfulness

def test_summary_names_and_numbers_occur_in_dialogue(corpus):
    for rec in corpus:
        summary, dialogue = rec["summary"], rec["dialogue"]
        for tok in _capitalised_tokens(summary):
            assert _occurs(tok, dialogue), (tok, summary, dialogue)
        for num in re.findall(r"\d+(?:[.:,]\d+)*", summary.replace("#Person", "#P")):
            assert re.search(r"(?<![\d.:,])" + re.escape(num) + r"(?![\d]|[.:,]\d)", dialogue), (num, summary)
        for price in re.findall(r"[$£€]\d{1,3}(?:,\d{3})*(?:\.\d\d)?", summary):
            assert price in dialogue, (price, summary)
        for clock in re.findall(r"\d{1,2}(?::\d\d)? [ap]m", summary):
            assert clock in dialogue, (clock, summary)


def test_outcomes_vary_and_summary_follows_them():
    recs = generate_dialogues(300, seed=4, scenarios="restaurant_booking")
    kinds = collections.Counter()
    for rec in recs:
        s, d = rec["summary"], rec["dialogue"]
        if "turns down" in s:
            kinds["declined"] += 1
            assert "name" not in s  # no booking was made
        elif "instead" in s:
            kinds["alternative"] += 1
            alt = re.search(r"books (\d{1,2}(?::\d\d)? [ap]m) instead", s).group(1)
            assert alt in d
        else:
            kinds["booked"] += 1
            assert "books a table" in s
    assert all(kinds[k] >= 20 for k in ("declined", "alternative", "booked")), kinds

    returns = generate_dialogues(300, seed=4, scenarios=["item_return"])
    phrases = ("refunds", "exchanges", "store credit", "refuses")
    for phrase in phrases:
        assert any(phrase in r["summary"] for r in returns), phrase


# ---------------------------------------------------------------- coverage and variety

def test_every_scenario_appears_in_500(topic_of):
    recs = generate_dialogues(500, seed=0)
    seen = collections.Counter(r["topic"] for r in recs)
    for name, topic in topic_of.items():
        assert seen[topic] >= 5, name


def test_variety(topic_of):
    recs = generate_dialogues(500, seed=21)
    assert len({r["dialogue"] for r in recs}) >= 300
    assert len({r["summary"] for r in recs}) >= 300
    lengths = collections.Counter(r["dialogue"].count("\n") + 1 for r in recs)
    assert len(lengths) >= 7, lengths
    assert min(lengths) <= 5 and max(lengths) >= 12, lengths
    assert max(lengths.values()) < 0.35 * len(recs), lengths
    # many different names, cultures mixed
    text = " ".join(r["dialogue"] for r in recs)
    names = {n for n in synthetic._FIRST_NAMES + synthetic._SURNAMES if _occurs(n, text)}
    assert len(names) >= 60
    # every scenario itself varies
    for name in SCENARIOS:
        texts = {r["dialogue"] for r in generate_dialogues(30, seed=1, scenarios=[name])}
        assert len(texts) >= 25, name


def test_about_half_have_small_talk():
    recs = generate_dialogues(1000, seed=8)
    openers = {o for aside in synthetic._ASIDES for o in aside[0]}
    with_aside = sum(any(o in r["dialogue"] for o in openers) for r in recs)
    assert 0.3 * len(recs) <= with_aside <= 0.7 * len(recs), with_aside
    # small talk never leaks into the summary
    for r in recs:
        assert not any(w in r["summary"] for w in ("weather", "weekend", "umbrella", "roadworks", "scarf", "slept"))


# ---------------------------------------------------------------- scenarios argument

def test_scenarios_restricts_and_is_order_insensitive(topic_of):
    pick = ["hotel_checkin", "lost_luggage"]
    recs = generate_dialogues(60, seed=3, scenarios=pick)
    assert {r["topic"] for r in recs} == {topic_of[p] for p in pick}
    assert generate_dialogues(60, seed=3, scenarios=reversed(pick + pick)) == recs
    single = generate_dialogues(10, seed=3, scenarios="car_repair")
    assert {r["topic"] for r in single} == {topic_of["car_repair"]}
    assert generate_dialogues(10, seed=3, scenarios=None) == generate_dialogues(10, seed=3)


def test_unknown_scenario_rejected():
    with pytest.raises(ValueError, match="scenarios") as info:
        generate_dialogues(3, scenarios=["restaurant_booking", "skydiving"])
    assert "skydiving" in str(info.value)
    assert "restaurant_booking" in str(info.value)  # lists the valid names
    with pytest.raises(ValueError, match="scenarios"):
        generate_dialogues(3, scenarios=[])


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("n", [1.5, "3", None, True, 2.0])
def test_n_must_be_int(n):
    with pytest.raises(TypeError, match=r"\bn\b"):
        generate_dialogues(n)


def test_negative_n():
    with pytest.raises(ValueError, match=r"\bn\b"):
        generate_dialogues(-1)


@pytest.mark.parametrize("seed", ["1", 1.0, None, False])
def test_seed_must_be_int(seed):
    with pytest.raises(TypeError, match="seed"):
        generate_dialogues(2, seed=seed)


def test_id_prefix_must_be_str():
    with pytest.raises(TypeError, match="id_prefix"):
        generate_dialogues(2, id_prefix=3)


# ---------------------------------------------------------------- implementation constraints

def test_standard_library_only():
    tree = ast.parse(Path(synthetic.__file__).read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.add(node.module.split(".")[0])
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


def test_speed():
    start = time.perf_counter()
    recs = generate_dialogues(10_000, seed=99)
    elapsed = time.perf_counter() - start
    assert len(recs) == 10_000
    assert elapsed < 2.0, f"10,000 dialogues took {elapsed:.2f} s"
