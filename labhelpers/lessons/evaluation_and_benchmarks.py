# Written by `python -m labhelpers.tools.export` from notebooks/08_evaluation_and_benchmarks.ipynb: edit the notebook, then run it again.
"""Lesson code of Lab 08: Evaluation and benchmarks: what ROUGE, BLEU and a benchmark score really tell you."""

from __future__ import annotations

import math
import numpy as np
import pandas as pd
import torch
from collections import Counter
from labhelpers import LETTERS
from labhelpers import check_item
from labhelpers import check_items
from labhelpers import letter_prompt
from labhelpers import model_family
from labhelpers import model_input
from labhelpers import option_prompt
from labhelpers import uses_chat_template
from tqdm.auto import tqdm

__all__ = ['ngram_counts', 'precision_recall_f1', 'rouge_n', 'lcs_table', 'longest_common_subsequence', 'rouge_l', 'brevity_penalty', 'sentence_bleu', 'continuation_logprobs', 'score_choices', 'evaluate_multiple_choice']


# 08_evaluation_and_benchmarks.ipynb, cell 7
def ngram_counts(tokens, n):
    """How often each n-gram (a tuple of n neighbouring tokens) occurs in a list of tokens."""
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def precision_recall_f1(matched, n_prediction, n_reference):
    """matched / prediction units, matched / reference units, and their harmonic mean (0 for an empty side)."""
    precision = matched / n_prediction if n_prediction else 0.0
    recall = matched / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return precision, recall, f1


def rouge_n(prediction_tokens, reference_tokens, n):
    """ROUGE-N (precision, recall, F1): n-gram matches clipped to the reference's counts."""
    prediction, reference = ngram_counts(prediction_tokens, n), ngram_counts(reference_tokens, n)
    matched = sum((prediction & reference).values())  # & keeps the smaller count of each n-gram
    return precision_recall_f1(matched, sum(prediction.values()), sum(reference.values()))


# 08_evaluation_and_benchmarks.ipynb, cell 12
def lcs_table(a, b):
    """Dynamic-programming table: cell [i, j] is the LCS length of a[:i] and b[:j]."""
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i, j] = table[i - 1, j - 1] + 1
            else:
                table[i, j] = max(table[i - 1, j], table[i, j - 1])
    return table


def longest_common_subsequence(a, b):
    """One longest common subsequence of two token lists, read back from the table's last cell."""
    table, i, j, common = lcs_table(a, b), len(a), len(b), []
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1]:
            common.append(a[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1, j] >= table[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return common[::-1]


def rouge_l(prediction_tokens, reference_tokens):
    """ROUGE-L (precision, recall, F1) from the length of the longest common subsequence."""
    lcs = int(lcs_table(prediction_tokens, reference_tokens)[-1, -1])
    return precision_recall_f1(lcs, len(prediction_tokens), len(reference_tokens))


# 08_evaluation_and_benchmarks.ipynb, cell 20
def brevity_penalty(prediction_length, reference_length):
    """1 when the prediction is at least as long as the reference, else exp(1 - r / c); 0 for an empty prediction."""
    if prediction_length >= reference_length:
        return 1.0
    return math.exp(1 - reference_length / prediction_length) if prediction_length > 0 else 0.0


def sentence_bleu(prediction_tokens, reference_tokens, max_order=4):
    """Sentence BLEU (0 to 100) as sacrebleu computes it, with its steps: matches, totals, precisions (%), BP."""
    orders = range(1, max_order + 1)
    matched = [sum((ngram_counts(prediction_tokens, n) & ngram_counts(reference_tokens, n)).values()) for n in orders]
    totals = [max(len(prediction_tokens) - n + 1, 0) for n in orders]
    precisions, halvings = [], 1
    for m, total in zip(matched, totals):
        if total == 0 or not any(matched):  # effective order: no n-grams this long (or nothing matched at all)
            break
        if m == 0:  # "exp" smoothing: the k-th order with no match counts as 1 / (2^k * total)
            halvings *= 2
            precisions.append(100 / (halvings * total))
        else:
            precisions.append(100 * m / total)
    bp = brevity_penalty(len(prediction_tokens), len(reference_tokens))
    bleu = bp * math.exp(sum(math.log(p) for p in precisions) / len(precisions)) if precisions else 0.0
    return {"matched": matched, "totals": totals, "precisions": precisions, "brevity_penalty": bp, "bleu": bleu}


# 08_evaluation_and_benchmarks.ipynb, cell 37
def continuation_logprobs(model, tokenizer, context, continuations, chat=False):
    """Summed log-probability (nats) of each continuation after `context`. Columns: continuation, logprob, n_tokens.

    Context and continuations are tokenized apart and their ids joined, so every option follows the same tokens.
    """
    if isinstance(continuations, str) or not continuations:
        raise ValueError("continuations must be a non-empty list of strings")
    if not isinstance(context, str):
        raise TypeError(f"context must be a string, not {type(context).__name__}")
    causal = model_family(model) == "causal"
    chat = causal and uses_chat_template(tokenizer, chat)
    text = model_input(tokenizer, context, chat) if causal else context
    context_ids = tokenizer(text, add_special_tokens=not chat)["input_ids"]
    options = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    if not all(options):
        raise ValueError("a continuation has no tokens; every option needs some text")
    device, pad, longest = next(model.parameters()).device, tokenizer.pad_token_id or 0, max(map(len, options))
    targets = torch.tensor([ids + [pad] * (longest - len(ids)) for ids in options], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (longest - len(ids)) for ids in options], device=device)
    context = torch.tensor([context_ids] * len(options), device=device)
    with torch.inference_mode():
        if causal:  # the prompt, then each option but its last token: the logits at position t predict token t + 1,
            ids = torch.cat([context, targets[:, :-1]], dim=1)  # so the last `longest` positions predict the option
            attention = torch.cat([torch.ones_like(context), mask[:, :-1]], dim=1)
            if longest == 1:  # one-token options (the letters): the prompt alone predicts them all, one row will do
                ids, attention = ids[:1], attention[:1]
            logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=longest).logits
            logits = logits.expand(len(options), -1, -1)
        else:  # the encoder reads the prompt, the decoder is teacher-forced on each option
            logits = model(input_ids=context, labels=targets.masked_fill(mask == 0, -100)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return pd.DataFrame({"continuation": list(continuations), "logprob": (logprobs * mask).sum(dim=1).tolist(),
                         "n_tokens": [len(ids) for ids in options]})


def score_choices(model, tokenizer, question, choices, *, method="options", normalize="tokens", chat=None):
    """One row per choice: logprob (summed), n_tokens, logprob_per_token, and the score `normalize` picks by.

    method="options" scores each option's text after the question; "letters" lists the options and scores " A", " B" ...
    """
    if method not in ("options", "letters"):
        raise ValueError(f"method={method!r} must be 'options' or 'letters'")
    if normalize not in ("tokens", "none"):
        raise ValueError(f"normalize={normalize!r} must be 'tokens' (mean per token) or 'none' (summed)")
    item = check_item({"id": "question", "question": question, "choices": choices, "answer": 0}, "question")
    causal = model_family(model) == "causal"
    chat = causal and uses_chat_template(tokenizer, chat)
    lead = " " if causal and not chat else ""  # plain text goes on after "Answer:"; a chat reply or T5 starts afresh
    if method == "letters":
        prompt = letter_prompt(item["question"], item["choices"])
        continuations = [lead + LETTERS[i] for i in range(len(item["choices"]))]
    else:
        prompt, continuations = option_prompt(item["question"]), [lead + choice for choice in item["choices"]]
    scored = continuation_logprobs(model, tokenizer, prompt, continuations, chat=chat)
    scored["continuation"] = item["choices"]
    scored = scored.rename(columns={"continuation": "choice"})
    scored["logprob_per_token"] = scored["logprob"] / scored["n_tokens"]
    scored["score"] = scored["logprob_per_token"] if normalize == "tokens" else scored["logprob"]
    return scored


def evaluate_multiple_choice(model, tokenizer, items, *, method="options", normalize="tokens", chat=None,
                             progress=False):
    """One row per item: id, subject, answer, predicted, correct, and each option's logprobs and n_tokens."""
    rows = []
    for item in tqdm(check_items(items), desc=f"scoring {method}", disable=not progress, unit="question"):
        scored = score_choices(model, tokenizer, item["question"], item["choices"], method=method,
                               normalize=normalize, chat=chat)
        predicted = int(np.argmax(scored["score"].to_numpy()))  # ties go to the first option
        rows.append({"id": item["id"], "subject": item["subject"], "answer": item["answer"], "predicted": predicted,
                     "correct": predicted == item["answer"], "logprobs": scored["logprob"].tolist(),
                     "n_tokens": scored["n_tokens"].tolist()})
    return pd.DataFrame(rows, columns=["id", "subject", "answer", "predicted", "correct", "logprobs", "n_tokens"])
