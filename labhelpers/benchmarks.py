"""The plumbing of lab 08's multiple-choice benchmark: its questions, their prompts, and accuracy with an interval.

A question has a few options, exactly one right. Lab 08 writes the scorer itself (`continuation_logprobs`,
`score_choices`, `evaluate_multiple_choice`, exported from the notebook): the model's log-likelihood of
each option, and the most likely option is its answer. Here are what it stands on:
- the items: `load_multiple_choice` reads data/multiple_choice.jsonl, `check_item` refuses a malformed one;
- the two ways to ask, as benchmark suites do: `option_prompt` (cloze: the question, then each option's
  text is scored) and `letter_prompt` (MMLU's original form: the options listed "A. ...", and the letters
  " A", " B", ... scored, one token each);
- `rescore` picks again from stored log-probabilities with the other normalisation (per token or summed);
- `accuracy_interval` (Wilson score or bootstrap) and `accuracy_table` (per subject, against chance).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from .metrics import Estimate, bootstrap_ci

__all__ = [
    "LETTERS",
    "accuracy_interval",
    "accuracy_table",
    "check_item",
    "check_items",
    "default_path",
    "letter_prompt",
    "load_multiple_choice",
    "option_prompt",
    "rescore",
]

LETTERS = "ABCDEFGHIJ"
NORMALIZATIONS = ("tokens", "none")


def default_path() -> Path:
    """The questions written for this project: data/multiple_choice.jsonl beside the package."""
    return Path(__file__).resolve().parent.parent / "data" / "multiple_choice.jsonl"


# ---------------------------------------------------------------- items

def check_item(item: Mapping, where: str = "item") -> dict:
    """The item as a plain dict {id, subject, question, choices, answer} after checking every field.

    Raises ValueError (one line, naming `where`) for a malformed item: fewer than 2 choices, an
    empty or repeated choice, or an answer that is not the index of one of the choices.
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"{where} must be a dict with id, subject, question, choices, answer; got {type(item).__name__}")
    missing = [key for key in ("id", "question", "choices", "answer") if key not in item]
    if missing:
        raise ValueError(f"{where} is missing {missing}; each item needs id, question, choices and answer")
    question, choices, answer = item["question"], item["choices"], item["answer"]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"{where}: question must be a non-empty string")
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise ValueError(f"{where}: choices must be a list of strings, got {type(choices).__name__}")
    if len(choices) < 2:
        raise ValueError(f"{where}: has {len(choices)} choice(s); a multiple-choice item needs at least 2")
    if len(choices) > len(LETTERS):
        raise ValueError(f"{where}: has {len(choices)} choices; at most {len(LETTERS)} are supported")
    if not all(isinstance(c, str) and c.strip() for c in choices):
        raise ValueError(f"{where}: every choice must be a non-empty string")
    if len({c.strip() for c in choices}) != len(choices):
        raise ValueError(f"{where}: two choices are the same text; each option must differ")
    if isinstance(answer, bool) or not isinstance(answer, (int, np.integer)) or not 0 <= answer < len(choices):
        raise ValueError(f"{where}: answer={answer!r} must be the index (0 to {len(choices) - 1}) of the right choice")
    return {"id": str(item["id"]), "subject": str(item.get("subject", "")), "question": question.strip(),
            "choices": [c.strip() for c in choices], "answer": int(answer)}


def check_items(items: Sequence[Mapping]) -> list[dict]:
    """The items as plain dicts, each checked by `check_item`, after checking that ids are unique."""
    if isinstance(items, Mapping) or isinstance(items, str) or not isinstance(items, Sequence):
        raise TypeError("items must be a list of multiple-choice items (dicts), e.g. from load_multiple_choice()")
    if not items:
        raise ValueError("items is empty; pass at least one multiple-choice item")
    checked = [check_item(item, f"items[{i}]") for i, item in enumerate(items)]
    seen = set()
    for item in checked:
        if item["id"] in seen:
            raise ValueError(f"items: id {item['id']!r} appears twice; ids must be unique")
        seen.add(item["id"])
    return checked


def load_multiple_choice(path: str | os.PathLike | None = None) -> list[dict]:
    """Multiple-choice items from a JSONL file (default: the project's), each checked by `check_item`."""
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (or None for the project's questions), not {type(path).__name__}")
    path = default_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file; give a JSONL file of multiple-choice items")
    items = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number} is not valid JSON ({err.msg})") from None
            items.append(check_item(raw, f"{path}:{number}"))
    if not items:
        raise ValueError(f"{path} holds no multiple-choice items")
    return check_items(items)


# ---------------------------------------------------------------- prompts

def _check_question(question) -> None:
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"question={question!r} must be a non-empty string")


def option_prompt(question: str) -> str:
    """Cloze prompt: the question alone; each option is scored as the answer's text."""
    _check_question(question)
    return f"Question: {question.strip()}\nAnswer:"


def letter_prompt(question: str, choices: Sequence[str]) -> str:
    """MMLU prompt: the question and its lettered options; the letters are scored."""
    _check_question(question)
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not 2 <= len(choices) <= len(LETTERS) \
            or not all(isinstance(c, str) and c.strip() for c in choices):
        raise ValueError(f"choices must be a list of 2 to {len(LETTERS)} non-empty strings, got {choices!r}")
    lines = [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices)]
    return f"Question: {question.strip()}\n" + "\n".join(lines) + "\nAnswer:"


# ---------------------------------------------------------------- picking again

def _pick(logprobs: Sequence[float], n_tokens: Sequence[int], normalize: str) -> int:
    scores = np.asarray(logprobs, dtype=float)
    if normalize == "tokens":
        scores = scores / np.asarray(n_tokens, dtype=float)
    return int(np.argmax(scores))  # ties go to the first option


def rescore(results: pd.DataFrame, normalize: str) -> pd.DataFrame:
    """The same results picked with another normalisation ("tokens" or "none"), without running the model."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} must be one of {NORMALIZATIONS}")
    if not isinstance(results, pd.DataFrame) or not {"logprobs", "n_tokens", "answer"} <= set(results.columns):
        raise TypeError("results must be a DataFrame from evaluate_multiple_choice")
    out = results.copy()
    out["predicted"] = [_pick(lp, nt, normalize) for lp, nt in zip(out["logprobs"], out["n_tokens"])]
    out["correct"] = out["predicted"] == out["answer"]
    return out


# ---------------------------------------------------------------- accuracy with uncertainty

def accuracy_interval(correct: Sequence[bool], confidence: float = 0.95, method: str = "wilson",
                      seed: int | None = 0) -> Estimate:
    """Accuracy (share of True) with a confidence interval: Wilson score (default) or percentile bootstrap.

    Wilson stays inside [0, 1] and is honest for small n and accuracies near 0 or 1.
    """
    values = np.asarray(correct)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("correct must be a non-empty 1-D list of True/False, one per question")
    if not np.isin(values, [0, 1]).all():
        raise ValueError("correct must hold only True/False (or 1/0), one per question")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise TypeError(f"confidence must be a number such as 0.95, got {confidence!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    values = values.astype(float)
    if method == "bootstrap":
        return bootstrap_ci(values, confidence=confidence, seed=seed)
    if method != "wilson":
        raise ValueError(f"method={method!r} must be 'wilson' or 'bootstrap'")
    n, p = values.size, float(values.mean())
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, confidence)


def accuracy_table(results: pd.DataFrame, by: str = "subject", confidence: float = 0.95) -> pd.DataFrame:
    """Accuracy with a Wilson interval per group and for all items ("all", last row).

    Columns: `by`, n, correct, accuracy, ci_low, ci_high, chance (mean of 1 / options), above_chance.
    """
    if not isinstance(results, pd.DataFrame) or not {"correct", "logprobs"} <= set(results.columns):
        raise TypeError("results must be a DataFrame from evaluate_multiple_choice")
    if by not in results.columns:
        raise ValueError(f"by={by!r} is not a column of results; choose one of {list(results.columns)}")
    groups = [(name, frame) for name, frame in results.groupby(by, sort=True)] + [("all", results)]
    rows = []
    for name, frame in groups:
        estimate = accuracy_interval(frame["correct"].to_numpy(), confidence)
        chance = float(np.mean([1 / len(lp) for lp in frame["logprobs"]]))
        rows.append({by: name, "n": estimate.n, "correct": int(frame["correct"].sum()), "accuracy": estimate.mean,
                     "ci_low": estimate.low, "ci_high": estimate.high, "chance": chance,
                     "above_chance": estimate.low > chance})
    return pd.DataFrame(rows)
