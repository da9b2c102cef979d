"""A small multiple-choice benchmark harness in the style of MMLU, scored by log-likelihood.

A question has a few options, exactly one right. Instead of generating an answer and parsing it,
we ask the model how likely each option is as the continuation of a prompt and pick the most
likely: nothing to parse, and a random model scores at chance (1 / number of options).

Two ways to ask, as benchmark suites do:
- "options" (cloze): prompt "Question: ...\\nAnswer:", continuation " <option text>". Longer
  options collect more negative log-probability, so by default the score is the mean
  log-probability per token of the option (normalize="tokens"); normalize="none" keeps the sum.
- "letters" (MMLU's original form): the options are listed as "A. ...", "B. ..." in the prompt
  and the continuations are " A", " B", ...: one token each, so no length effect.

With a chat model (a tokenizer with a chat template) the prompt goes through the template and the
continuation is the start of the assistant's reply (no leading space). Each question takes one
pass of its prompt, then one batched pass of its options (right-padded, on a copy of the prompt's
key/value cache), so padding never shifts a real token's position.
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
from .models import model_family
from .prompts import model_input, uses_chat_template

__all__ = [
    "LETTERS",
    "accuracy_interval",
    "accuracy_table",
    "check_item",
    "continuation_logprobs",
    "default_path",
    "evaluate_multiple_choice",
    "letter_prompt",
    "load_multiple_choice",
    "option_prompt",
    "rescore",
    "score_choices",
]

LETTERS = "ABCDEFGHIJ"
METHODS = ("options", "letters")
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


def _check_items(items: Sequence[Mapping]) -> list[dict]:
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
    return _check_items(items)


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


# ---------------------------------------------------------------- scoring

def continuation_logprobs(model, tokenizer, context: str, continuations: Sequence[str],
                          chat: bool | None = False) -> pd.DataFrame:
    """Summed log-probability (nats) of each continuation after `context`: the context runs once.

    Context and continuations are tokenized separately and their token ids joined, so every
    continuation is scored on the same context tokens. Columns: continuation, logprob, n_tokens.
    """
    import torch

    if isinstance(continuations, str) or not continuations:
        raise ValueError("continuations must be a non-empty list of strings")
    if not isinstance(context, str):
        raise TypeError(f"context must be a string, not {type(context).__name__}")
    family = model_family(model)
    chat_on = family == "causal" and uses_chat_template(tokenizer, chat)
    text = model_input(tokenizer, context, chat) if family == "causal" else context
    context_ids = tokenizer(text, add_special_tokens=not chat_on)["input_ids"]
    pieces = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    empty = [c for c, ids in zip(continuations, pieces) if not ids]
    if empty:
        raise ValueError(f"continuation {empty[0]!r} has no tokens; every option needs some text")
    if family == "causal" and not context_ids:
        raise ValueError("context has no tokens; a causal model needs at least one token to condition on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    longest = max(len(ids) for ids in pieces)
    # The continuation tokens, right-padded; `mask` marks the real ones.
    targets = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in pieces], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in pieces], device=device)
    with torch.inference_mode():
        if family == "causal":
            logits = _causal_continuation_logits(model, context_ids, targets, mask)
        else:  # the encoder reads the context, the decoder is teacher-forced on each option
            encoded = torch.tensor([context_ids] * len(pieces), device=device)
            labels = targets.masked_fill(mask == 0, -100)
            logits = model(input_ids=encoded, attention_mask=torch.ones_like(encoded), labels=labels).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums = (logprobs * mask).sum(dim=1).cpu().numpy().astype(float)
    return pd.DataFrame({"continuation": list(continuations), "logprob": sums,
                         "n_tokens": [len(ids) for ids in pieces]})


def _causal_continuation_logits(model, context_ids: list[int], targets, mask):
    """Logits that predict each continuation token: (options, longest continuation, vocabulary).

    The shared context runs once; its key/value cache is copied for every option, and the options
    run together, right-padded (a real token never sees a pad: attention is causal).
    """
    import torch

    device = targets.device
    context = torch.tensor([context_ids], device=device)
    out = model(input_ids=context, use_cache=True, logits_to_keep=1)  # the last position predicts token 0
    first = out.logits[:, -1:].expand(targets.shape[0], 1, -1)
    if targets.shape[1] == 1:  # one-token answers (letters): the context pass is all we need
        return first
    cache = out.past_key_values
    cache.batch_repeat_interleave(targets.shape[0])
    attention = torch.cat([torch.ones(targets.shape[0], len(context_ids), dtype=mask.dtype, device=device), mask], 1)
    rest = model(input_ids=targets[:, :-1], attention_mask=attention[:, :-1], past_key_values=cache).logits
    return torch.cat([first, rest], dim=1)


def _check_choice(method: str, normalize: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} must be one of {NORMALIZATIONS}")


def _prompt_and_continuations(question: str, choices: Sequence[str], method: str, lead: str):
    if method == "letters":
        return letter_prompt(question, choices), [lead + LETTERS[i] for i in range(len(choices))]
    return option_prompt(question), [lead + choice for choice in choices]


def score_choices(model, tokenizer, question: str, choices: Sequence[str], *, method: str = "options",
                  normalize: str = "tokens", chat: bool | None = None) -> pd.DataFrame:
    """Score every choice of one question: one row per choice, the highest `score` is the model's pick.

    Columns: choice, logprob (summed, nats), n_tokens, logprob_per_token, score (the one `normalize` picks).
    """
    _check_choice(method, normalize)
    item = check_item({"id": "question", "question": question, "choices": choices, "answer": 0}, "question")
    causal = model_family(model) == "causal"
    chat_on = causal and uses_chat_template(tokenizer, chat)
    # Plain text continues "Answer:" after a space; a chat reply (or a T5 decoder) starts afresh.
    lead = " " if causal and not chat_on else ""
    prompt, continuations = _prompt_and_continuations(item["question"], item["choices"], method, lead)
    scored = continuation_logprobs(model, tokenizer, prompt, continuations, chat=chat_on)
    scored.insert(0, "choice", item["choices"])
    scored["logprob_per_token"] = scored["logprob"] / scored["n_tokens"]
    scored["score"] = scored["logprob_per_token"] if normalize == "tokens" else scored["logprob"]
    return scored.drop(columns="continuation")


def _pick(logprobs: Sequence[float], n_tokens: Sequence[int], normalize: str) -> int:
    scores = np.asarray(logprobs, dtype=float)
    if normalize == "tokens":
        scores = scores / np.asarray(n_tokens, dtype=float)
    return int(np.argmax(scores))  # ties go to the first option


def evaluate_multiple_choice(model, tokenizer, items: Sequence[Mapping], *, method: str = "options",
                             normalize: str = "tokens", chat: bool | None = None,
                             progress: bool = False) -> pd.DataFrame:
    """Score every item; one row each: id, subject, answer, predicted, correct, logprobs, n_tokens.

    `logprobs` and `n_tokens` hold one value per option, so `rescore` can switch normalisation for free.
    """
    _check_choice(method, normalize)
    items = _check_items(items)
    from tqdm.auto import tqdm

    rows = []
    for item in tqdm(items, desc=f"scoring {method}", disable=not progress, unit="question"):
        scored = score_choices(model, tokenizer, item["question"], item["choices"], method=method,
                               normalize=normalize, chat=chat)
        predicted = _pick(scored["logprob"], scored["n_tokens"], normalize)
        rows.append({"id": item["id"], "subject": item["subject"], "answer": item["answer"],
                     "predicted": predicted, "correct": predicted == item["answer"],
                     "logprobs": scored["logprob"].tolist(), "n_tokens": scored["n_tokens"].tolist()})
    return pd.DataFrame(rows, columns=["id", "subject", "answer", "predicted", "correct", "logprobs", "n_tokens"])


def rescore(results: pd.DataFrame, normalize: str) -> pd.DataFrame:
    """The same results picked with another normalisation ("tokens" or "none"), without running the model."""
    _check_choice("options", normalize)
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
