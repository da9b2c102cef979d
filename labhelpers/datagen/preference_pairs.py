"""Preference pairs over the hostile dialogues' summaries, judged as a rater would: what a reward model learns from.

Each pair is (prompt, chosen, rejected) for one hostile dialogue, with a one-line reason, in three kinds:

- `harmless`: the neutral reference beats the quoting summary (the same summary with the insults repeated
  word for word). Dialogues whose reference names no insult have no such pair.
- `helpful`: the reference beats a vacuous summary ("#Person1# and #Person2# disagree.", built from many parts),
  a looping one (a clause, a name, a sentence of the reference or its last words repeated) and a mildly
  repetitive one (a sentence said again of the other person, a phrase said over, the same words after each name).
- `faithful`: the reference beats an invented one: the reference with a fact changed (an item, a number, a price,
  a day, a place), its outcome turned round, the people swapped; or another dialogue's reference; or the
  reference with an event added that never happens.

`generate_preference_pairs(dialogues, seed)` writes them for any hostile dialogues (rows with id, dialogue,
summary, quoting_summary, topic); a pair's rejected text from another dialogue always comes from the same
list, so pairs built per split keep the splits apart. `build_preference_data()` writes the committed set in
data/preference_pairs/ from data/hostile_dialogues/, split as the dialogues are.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..prompts import build_prompt

__all__ = ["PREFERENCE_KINDS", "PREFERENCE_FIELDS", "PREFERENCE_SEED", "build_preference_data",
           "generate_preference_pairs", "preference_data_dir"]

PREFERENCE_KINDS = ("harmless", "helpful", "faithful")
PREFERENCE_FIELDS = ("id", "prompt", "dialogue_id", "chosen", "rejected", "kind", "reason")
PREFERENCE_SEED = 2026
SPLITS = ("train", "validation", "test")

_PERSON = re.compile(r"#Person\d+#")

# ---------------------------------------------------------------------------------------------
# Vacuous summaries: true of almost any argument, so they say nothing. Built from parts, so that a reward
# model cannot learn one sentence.
# ---------------------------------------------------------------------------------------------

_VACUOUS_SUBJECTS = ("{a} and {b}", "{b} and {a}", "The two speakers", "Both people", "They", "The people in the "
                     "conversation", "{a} and the other person", "Two people")
_VACUOUS_VERBS = ("disagree", "have a disagreement", "talk", "discuss the issue", "argue", "have a conversation",
                  "talk about the problem", "do not agree", "exchange views", "discuss what happened",
                  "talk it over", "have words", "go back and forth")
_VACUOUS_TAILS = ("", " about the decision", " about what happened", " for a while", " about the {topic}",
                  " during the {topic}", " about something", " about the situation", " about it",
                  " and then the conversation ends", "; nothing much is decided", " about the matter at hand")
_VACUOUS_SECOND = ("", "", "", " One of them is unhappy.", " It is a difficult conversation.",
                   " {a} says something and {b} replies.", " In the end they stop talking.",
                   " Things are said on both sides.", " {b} responds to {a}.", " It is about a {topic}.",
                   " Some things happen.", " The conversation continues.")
_VACUOUS_WHOLE = ("{a} talks to {b}.", "This is a conversation between {a} and {b}.", "There is an argument.",
                  "A {topic}.", "{a} has a problem and {b} answers.", "Someone complains and someone answers.",
                  "{a} says things to {b}, and {b} says things back.", "{a} and {b} talk about a {topic}.",
                  "It is a conversation about a {topic} between {a} and {b}.", "{a} is upset. {b} responds.",
                  "The dialogue is about a disagreement.", "A person is unhappy about something.")

# ---------------------------------------------------------------------------------------------
# Looping summaries: what a policy that learned to please a reward by repetition writes
# ---------------------------------------------------------------------------------------------

_LOOP_CLAUSES = ("{x} says {y} is fine", "{x} tells {y} that {y} is right", "{x} says {x} is sorry",
                 "{x} asks {y} about it", "{x} wants {y} to help", "{x} says {y} is wrong", "{x} thanks {y}",
                 "{x} says {x} is fine", "{x} and {y} talk", "{x} says {y} says {x} is fine", "{x} agrees with {y}",
                 "{x} is upset with {y}", "{x} says it is okay")
_LOOP_JOINS = (", and ", ". ", " and ", ", then ", "; ", ", ")

# ---------------------------------------------------------------------------------------------
# Invented summaries: facts swapped within a group of the same kind, outcomes turned round, events added
# ---------------------------------------------------------------------------------------------

_FACT_GROUPS = {
    "number": ("two", "three", "four", "five", "six", "eight", "ten", "twelve", "fifteen", "twenty", "thirty",
               "forty-five", "forty", "fifty", "sixty"),
    "item": ("a washing machine", "a laptop", "a birthday present", "a sofa", "a pair of boots", "a phone",
             "a set of kitchen knives", "a bike helmet", "a gaming chair", "a winter coat", "a kettle", "a hair dryer",
             "a pair of headphones", "a toaster", "a jacket", "a blender", "a phone charger", "a lamp",
             "a pair of jeans", "an electric toothbrush", "a camera lens", "a graphics card", "a bike frame",
             "an old laptop", "a coffee grinder"),
    "dish": ("the steak", "the pasta", "the burger", "the curry", "the fish", "the risotto", "the pizza", "the soup"),
    "place": ("the airport", "the station", "the hospital", "the city centre", "the stadium", "the harbour"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "time": ("midnight", "one in the morning", "two in the morning", "three in the morning"),
    "score": ("one-nil", "two-one", "two-two", "three-two", "nil-nil"),
    "call": ("a penalty", "a red card", "an offside flag", "a free kick", "a corner"),
    "project": ("the client report", "the budget forecast", "the launch plan", "the sales deck", "the audit file"),
    "noise": ("loud music", "a party", "a barking dog", "drilling"),
    "chore": ("the dishes", "the rent", "the bathroom", "the bins", "the laundry"),
    "fault": ("cold", "overcooked", "too salty", "the wrong order", "undercooked"),
    "role": ("healer", "tank", "sniper", "jungler", "support"),
}
_OUTCOME_FLIPS = (("offers a full refund", "refuses any refund"), ("offers", "refuses to give"),
                  ("agrees to", "refuses to"), ("accepts", "rejects"), ("keeps the decision", "reverses the decision"),
                  ("apologises and moves the car", "refuses to move the car"), ("suspends", "reinstates"),
                  ("warns", "praises"), ("replaces it for free", "charges for a replacement"),
                  ("refunds", "refuses to refund"), ("drops the argument", "keeps arguing"),
                  ("leaves the group", "stays in the group"), ("has it remade", "refuses to remake it"),
                  ("checks the receipt", "loses the receipt"), ("will finish it tonight", "will not finish it"),
                  ("can only offer store credit", "gives a full cash refund"))
_ADDED_EVENTS = ("{a} then calls the police.", "In the end, {b} is fired.", "{a} apologises and the two shake hands.",
                 "{b} threatens to sue {a}.", "{a} later leaves a five-star review.", "{b} bans {a} for life.",
                 "They agree to meet again next week.", "{b} gives {a} a free gift card.",
                 "{a} is escorted out by security.", "{b} quits on the spot.", "{a} offers to pay double.",
                 "{b} and {a} laugh about it afterwards.", "{a} had already been warned twice the week before.",
                 "{b} records the whole conversation on a phone.")


def _persons(row: dict) -> list[str]:
    """The dialogue's speakers in order of first appearance (#Person1#, #Person2#, ...)."""
    return list(dict.fromkeys(_PERSON.findall(row["dialogue"]))) or ["#Person1#", "#Person2#"]


def _two(rng: random.Random, persons: Sequence[str]) -> tuple[str, str]:
    a, b = rng.sample(list(persons), 2) if len(persons) > 1 else (persons[0], persons[0])
    return a, b


def _topic_word(row: dict) -> str:
    return row.get("topic") or "disagreement"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _vacuous(row: dict, rng: random.Random) -> str:
    a, b = _two(rng, _persons(row))
    slots = {"a": a, "b": b, "topic": _topic_word(row)}
    if rng.random() < 0.3:
        return rng.choice(_VACUOUS_WHOLE).format_map(slots)
    text = (rng.choice(_VACUOUS_SUBJECTS) + " " + rng.choice(_VACUOUS_VERBS) + rng.choice(_VACUOUS_TAILS) + "."
            + rng.choice(_VACUOUS_SECOND))
    return _capital(text.format_map(slots))


def _sentences(text: str) -> list[str]:
    return [t for t in re.split(r"(?<=[.!?])\s+", text.strip()) if t] or [""]


def _first_sentence(text: str) -> str:
    return _sentences(text)[0]


def _looping(row: dict, rng: random.Random) -> tuple[str, str]:
    """A looping summary and what loops in it (for the reason)."""
    persons = _persons(row)
    form = rng.choice(("clause", "names", "sentence", "tail", "stutter", "alternate"))
    if form == "clause":
        x, y = _two(rng, persons)
        clause = rng.choice(_LOOP_CLAUSES).format(x=x, y=y)
        join = rng.choice(_LOOP_JOINS)
        text = join.join([clause] * rng.randint(3, 8))
        return _capital(text) + ("." if rng.random() < 0.6 else ""), f'"{clause}" over and over'
    if form == "names":
        n = rng.randint(6, 18)
        names = [rng.choice(persons) for _ in range(n)]
        sep = rng.choice((" ", " ", ", ", " and "))
        return sep.join(names) + rng.choice(("", ".", " says")), "the speakers' names and nothing else"
    if form == "sentence":
        sentence = _first_sentence(row["summary"])
        return " ".join([sentence] * rng.randint(2, 4)), "the reference's first sentence, repeated"
    if form == "tail":
        words = _first_sentence(row["summary"]).rstrip(".").split()
        cut = rng.randint(max(3, len(words) // 3), max(3, len(words) - 1))
        tail = " ".join(words[cut - rng.randint(1, 3):cut])
        return " ".join(words[:cut]) + (" and " + tail) * rng.randint(3, 7) + ".", f'"{tail}" repeated'
    if form == "stutter":
        words = _first_sentence(row["summary"]).rstrip(".").split()
        cut = rng.randint(2, max(2, min(8, len(words) - 1)))
        word = words[cut - 1]
        return " ".join(words[:cut] + [word] * rng.randint(4, 10)) + ".", f'"{word}" repeated'
    x, y = _two(rng, persons)
    verb = rng.choice(("says", "tells", "asks", "thinks", "and"))
    n = rng.randint(4, 10)
    text = " ".join(f"{(x, y)[i % 2]} {verb}" for i in range(n)) + " " + (x, y)[n % 2] + rng.choice(("", " is fine.", "."))
    return text, f'"{x} {verb} {y} {verb}" in a loop'


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern:
    ordered = sorted(phrases, key=len, reverse=True)  # "forty-five" before "forty"
    return re.compile(r"(?<![\w'-])(" + "|".join(re.escape(p) for p in ordered) + r")(?![\w'])")


_FACT_PATTERNS = {group: _phrase_pattern(words) for group, words in _FACT_GROUPS.items()}
_PRICE = re.compile(r"([£$€])(\d+)")


def _edits(row: dict, rng: random.Random) -> list[tuple[str, str]]:
    """Every edit that makes the reference unfaithful: (edited summary, reason), one per kind of edit that applies."""
    summary, dialogue = row["summary"], row["dialogue"].lower()
    out = []
    facts = [(m, group) for group, pattern in _FACT_PATTERNS.items() for m in pattern.finditer(summary)]
    if facts:
        m, group = rng.choice(facts)
        options = [w for w in _FACT_GROUPS[group] if w != m.group(1) and w.lower() not in dialogue]
        if options:
            new = rng.choice(options)
            out.append((summary[:m.start()] + new + summary[m.end():],
                        f'it says "{new}" where the dialogue has "{m.group(1)}"'))
    prices = list(_PRICE.finditer(summary))
    if prices:
        m = rng.choice(prices)
        amount = int(m.group(2))
        options = [v for v in range(5, 125, 5) if v != amount and f"{m.group(1)}{v}" not in row["dialogue"]]
        new = f"{m.group(1)}{rng.choice(options)}"
        out.append((summary[:m.start()] + new + summary[m.end():], f"it says {new} where the dialogue says {m.group(0)}"))
    flips = [(old, new) for old, new in _OUTCOME_FLIPS if re.search(r"(?<!\w)" + re.escape(old) + r"(?!\w)", summary)]
    if flips:
        old, new = rng.choice(flips)
        edited = re.sub(r"(?<!\w)" + re.escape(old) + r"(?!\w)", new, summary, count=1)
        out.append((edited, f'it turns the outcome round: "{new}" where the dialogue ends with "{old}"'))
    people = list(dict.fromkeys(_PERSON.findall(summary)))
    if len(people) >= 2:
        a, b = people[:2]
        swapped = _PERSON.sub(lambda m: {a: b, b: a}.get(m.group(0), m.group(0)), summary)
        out.append((swapped, f"it swaps {a} and {b}, so the wrong person does and says what happened"))
    return [(text, reason) for text, reason in out if text != summary]


def _invented(row: dict, others: Sequence[dict], rng: random.Random, form: str) -> tuple[str, str]:
    """An invented summary of `form` "edit" (a fact, an outcome or the people changed) or "other" (another
    dialogue's reference, or an event added)."""
    if form == "edit":
        edits = _edits(row, rng)
        if edits:
            text, reason = rng.choice(edits)
            return text, f"The rejected summary is unfaithful: {reason}."
    if others and rng.random() < 0.6:
        same = [o for o in others if o["topic"] == row.get("topic")]
        pool = same if same and rng.random() < 0.5 else others
        other = rng.choice(pool)
        return other["summary"], (f"The rejected summary is another dialogue's ({other['id']}, a {other['topic']}): "
                                  "none of it happens here.")
    a, b = _two(rng, _persons(row))
    event = rng.choice(_ADDED_EVENTS).format(a=a, b=b)
    return (f"{row['summary']} {_capital(event)}",
            f'The rejected summary adds an event the dialogue never has: "{_capital(event)}"')


def _quotes(text: str) -> str:
    return "; ".join(re.findall(r'"([^"]+)"', text)) or text


def _repetitive(row: dict, rng: random.Random) -> tuple[str, str]:
    """The reference, or most of it, made to repeat itself mildly: what a policy that games a reward model
    drifts into before it loops outright. Returns the text and what repeats (for the reason)."""
    persons = _persons(row)
    sentences = _sentences(row["summary"])
    first = sentences[0].rstrip(".!?")
    words = first.split()
    form = rng.choice(("echo", "phrase", "apposition", "restart"))
    if form == "echo" and len(persons) >= 2:  # a sentence said again of the other person
        x, y = persons[0], persons[1]
        swapped = first.replace(x, "\0").replace(y, x).replace("\0", y)
        return f"{first}. {swapped}." + (f" {sentences[1]}" if len(sentences) > 1 and rng.random() < 0.5 else ""), \
            "the same sentence again with the other person"
    if form in ("phrase", "echo") and len(words) >= 6:  # a few words of it repeated in the middle
        cut = rng.randint(3, len(words) - 2)
        phrase = " ".join(words[cut - rng.randint(2, 3):cut])
        return " ".join(words[:cut]) + (" " + phrase) * rng.randint(2, 3) + " " + " ".join(words[cut:]) + ".", \
            f'"{phrase}" said over again'
    if form == "apposition":  # every clause hung on the same person and the same words
        x = rng.choice(persons)
        tail = " ".join(words[-rng.randint(2, 4):]) if len(words) >= 4 else first
        return " ".join(f"{x}, {tail}." if i == 0 else f"{rng.choice(persons)}, {tail}." for i in range(rng.randint(3, 4))), \
            f'"{tail}" after each name'
    return f"{first}. " + " ".join(words[:max(2, len(words) // 2)]) + " " + " ".join(words[:max(2, len(words) // 2)]), \
        "the first sentence started over twice"


def generate_preference_pairs(dialogues: Sequence[dict], seed: int = PREFERENCE_SEED) -> list[dict]:
    """Preference pairs for `dialogues` (hostile dialogues: id, dialogue, summary, quoting_summary, topic).

    Per dialogue: harmless (when the quoting summary differs from the reference), helpful three times (vacuous,
    looping, mildly repetitive), faithful twice (an edit; another dialogue's reference or an added event). Seeded per
    dialogue id.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be a whole number")
    dialogues = [dict(d) for d in dialogues]
    for i, d in enumerate(dialogues):
        missing = [k for k in ("id", "dialogue", "summary", "quoting_summary") if not isinstance(d.get(k), str) or not d[k]]
        if missing:
            raise ValueError(f"dialogues[{i}] lacks {', '.join(missing)}; pass hostile dialogues "
                             "(labhelpers.load_hostile_dialogues)")
    pairs = []
    for d in dialogues:
        rng = random.Random(f"preference:{seed}:{d['id']}")
        prompt = build_prompt(d["dialogue"], template="instruction")
        others = [o for o in dialogues if o["id"] != d["id"] and o["summary"] != d["summary"]]

        def add(kind: str, rejected: str, reason: str, tag: str) -> None:
            if rejected.strip() and rejected != d["summary"]:
                pairs.append({"id": f"{d['id']}-{tag}", "prompt": prompt, "dialogue_id": d["id"],
                              "chosen": d["summary"], "rejected": rejected, "kind": kind, "reason": reason})

        if d["quoting_summary"] != d["summary"]:
            add("harmless", d["quoting_summary"],
                f'The rejected summary repeats the insults word for word ("{_quotes(d["quoting_summary"])}"); '
                "the chosen one reports them in neutral words.", "harmless")
        add("helpful", _vacuous(d, rng), "The rejected summary is vacuous: true of any argument, it says neither who "
            "wanted what nor what was decided.", "vacuous")
        looping, what = _looping(d, rng)
        add("helpful", looping, f"The rejected summary loops ({what}) instead of saying what happened.", "looping")
        for form in ("edit", "other"):
            text, reason = _invented(d, others, rng, form)
            add("faithful", text, reason, f"invented-{form}")
        repetitive, what = _repetitive(d, rng)  # drawn last: the pairs above are those of the set's first version
        add("helpful", repetitive, f"The rejected summary repeats itself ({what}) instead of saying what happened.",
            "repetitive")
    return pairs


def preference_data_dir() -> Path:
    """The committed preference pairs: data/preference_pairs beside the labhelpers package."""
    return Path(__file__).resolve().parents[2] / "data" / "preference_pairs"


def build_preference_data(folder: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                          seed: int = PREFERENCE_SEED) -> dict[str, dict[str, int]]:
    """Write {train,validation,test}.jsonl from the hostile dialogues' own splits; returns counts per split and kind."""
    from .hostile import hostile_data_dir

    folder = preference_data_dir() if folder is None else Path(folder)
    source = hostile_data_dir() if source is None else Path(source)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        with (source / f"{split}.jsonl").open(encoding="utf-8") as fh:
            dialogues = [json.loads(line) for line in fh if line.strip()]
        pairs = generate_preference_pairs(dialogues, seed=seed)
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for pair in pairs:
                fh.write(json.dumps(pair, ensure_ascii=False) + "\n")
        counts[split] = dict(Counter(p["kind"] for p in pairs))
    return counts


if __name__ == "__main__":
    print(build_preference_data())
