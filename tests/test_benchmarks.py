"""Tests for the multiple-choice benchmark: items and prompts (labhelpers.benchmarks), lab 08's exported
log-likelihood scorer checked by hand (continuation_logprobs, score_choices, evaluate_multiple_choice),
and accuracy intervals."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from labhelpers import (accuracy_interval, accuracy_table, benchmarks, check_item, continuation_logprobs,
                        evaluate_multiple_choice, letter_prompt, load_multiple_choice, option_prompt, rescore,
                        score_choices)

QUESTION = "What is the capital of France?"
CHOICES = ["Paris", "Berlin and its many suburbs", "Rome", "a"]


def hand_logprob(model, tokenizer, context_ids, continuation_ids):
    """Sum of log p(token | everything before it) over the continuation, from one unpadded forward."""
    import torch

    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    start = len(context_ids)
    return sum(float(logprobs[start + k - 1, token]) for k, token in enumerate(continuation_ids))


# ---------------------------------------------------------------- the project's questions

def test_project_questions_load_and_are_balanced():
    items = load_multiple_choice()
    assert 40 <= len(items) <= 60
    assert len({item["id"] for item in items}) == len(items)
    assert all(len(item["choices"]) == 4 for item in items)
    subjects = pd.Series([item["subject"] for item in items]).value_counts()
    assert len(subjects) >= 4 and subjects.min() >= 5
    # The right answer is spread over A-D, so always answering one letter scores about chance.
    answers = pd.Series([item["answer"] for item in items]).value_counts(normalize=True)
    assert set(answers.index) == {0, 1, 2, 3} and answers.max() <= 0.3


def test_project_questions_have_a_documented_licence():
    readme = (benchmarks.default_path().parent / "README.md").read_text()
    assert "multiple_choice.jsonl" in readme and "Licence" in readme


# ---------------------------------------------------------------- malformed items are refused

@pytest.mark.parametrize("item, words", [
    ({"id": "x", "question": "Q?", "choices": ["a", "b"], "answer": 2}, "answer=2"),
    ({"id": "x", "question": "Q?", "choices": ["a", "b"], "answer": -1}, "answer=-1"),
    ({"id": "x", "question": "Q?", "choices": ["a", "b"], "answer": True}, "answer=True"),
    ({"id": "x", "question": "Q?", "choices": ["a"], "answer": 0}, "at least 2"),
    ({"id": "x", "question": "Q?", "choices": "ab", "answer": 0}, "list of strings"),
    ({"id": "x", "question": "Q?", "choices": ["a", "a"], "answer": 0}, "same text"),
    ({"id": "x", "question": "Q?", "choices": ["a", " "], "answer": 0}, "non-empty"),
    ({"id": "x", "question": "", "choices": ["a", "b"], "answer": 0}, "question"),
    ({"id": "x", "choices": ["a", "b"], "answer": 0}, "missing"),
    (["not", "a", "dict"], "must be a dict"),
])
def test_malformed_items_are_refused_with_one_line(item, words):
    with pytest.raises(ValueError) as info:
        check_item(item, "items[3]")
    message = str(info.value)
    assert words in message and "items[3]" in message and "\n" not in message


def test_load_multiple_choice_names_the_bad_line(tmp_path):
    path = tmp_path / "mc.jsonl"
    good = {"id": "a", "subject": "s", "question": "Q?", "choices": ["x", "y"], "answer": 1}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "id": "b", "answer": 5}) + "\n")
    with pytest.raises(ValueError, match=r"mc\.jsonl:3: answer=5"):
        load_multiple_choice(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="appears twice"):
        load_multiple_choice(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_multiple_choice(path)
    with pytest.raises(FileNotFoundError):
        load_multiple_choice(tmp_path / "missing.jsonl")
    path.write_text(json.dumps(good) + "\n")
    assert load_multiple_choice(path) == [good]


def test_prompts():
    assert option_prompt(" Q? ") == "Question: Q?\nAnswer:"
    assert letter_prompt("Q?", ["x", "y"]) == "Question: Q?\nA. x\nB. y\nAnswer:"


# ---------------------------------------------------------------- scores checked by hand (tiny models)

def test_option_logprob_equals_hand_sum_of_token_logprobs(tiny_llama):
    model, tokenizer = tiny_llama
    scored = score_choices(model, tokenizer, QUESTION, CHOICES, chat=False)
    context_ids = tokenizer(option_prompt(QUESTION))["input_ids"]
    for row in scored.itertuples():
        continuation_ids = tokenizer(" " + row.choice, add_special_tokens=False)["input_ids"]
        assert row.n_tokens == len(continuation_ids)
        assert row.logprob == pytest.approx(hand_logprob(model, tokenizer, context_ids, continuation_ids), abs=1e-4)
        assert row.logprob_per_token == pytest.approx(row.logprob / row.n_tokens)
    assert (scored["logprob"] < 0).all()
    assert scored["n_tokens"].nunique() > 1  # options of different lengths: padding was exercised


def test_batching_and_padding_do_not_change_scores(tiny_llama):
    model, tokenizer = tiny_llama
    context = option_prompt(QUESTION)
    together = continuation_logprobs(model, tokenizer, context, [" " + c for c in CHOICES])
    alone = [continuation_logprobs(model, tokenizer, context, [" " + c])["logprob"].item() for c in CHOICES]
    assert together["logprob"].to_numpy() == pytest.approx(np.array(alone), abs=1e-4)
    reordered = continuation_logprobs(model, tokenizer, context, [" " + c for c in CHOICES[::-1]])
    assert reordered["logprob"].to_numpy()[::-1] == pytest.approx(together["logprob"].to_numpy(), abs=1e-4)


def test_chat_template_scores_the_assistant_reply(tiny_llama):
    model, tokenizer = tiny_llama
    scored = score_choices(model, tokenizer, QUESTION, CHOICES[:2], chat=True)
    text = tokenizer.apply_chat_template([{"role": "user", "content": option_prompt(QUESTION)}], tokenize=False,
                                         add_generation_prompt=True)
    context_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    continuation_ids = tokenizer(CHOICES[0], add_special_tokens=False)["input_ids"]  # no leading space
    assert scored["logprob"].iloc[0] == pytest.approx(hand_logprob(model, tokenizer, context_ids, continuation_ids),
                                                      abs=1e-4)


def test_letters_score_one_token_each(tiny_llama):
    model, tokenizer = tiny_llama
    scored = score_choices(model, tokenizer, QUESTION, CHOICES, method="letters", chat=False)
    assert scored["n_tokens"].tolist() == [1, 1, 1, 1]
    context_ids = tokenizer(letter_prompt(QUESTION, CHOICES))["input_ids"]
    letter_ids = tokenizer(" B", add_special_tokens=False)["input_ids"]
    assert scored["logprob"].iloc[1] == pytest.approx(hand_logprob(model, tokenizer, context_ids, letter_ids), abs=1e-4)


def test_seq2seq_option_logprob_equals_decoder_loss(tiny_t5):
    import torch

    model, tokenizer = tiny_t5
    scored = score_choices(model, tokenizer, QUESTION, CHOICES)
    encoded = tokenizer(option_prompt(QUESTION), return_tensors="pt")
    for row in scored.itertuples():
        labels = torch.tensor([tokenizer(row.choice, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            loss = model(**encoded, labels=labels).loss  # mean negative log-likelihood per token
        assert row.logprob == pytest.approx(-float(loss) * labels.shape[1], abs=1e-4)


def test_a_uniform_model_scores_every_token_log_one_over_the_vocabulary(tiny_llama):
    # With its output layer zeroed, the model gives every token the same probability 1 / V, so an option
    # of k tokens has log-likelihood exactly -k log V: per token all options score -log V, and summed
    # the option with the fewest tokens wins.
    import copy

    import torch

    model, tokenizer = tiny_llama
    uniform = copy.deepcopy(model)
    with torch.no_grad():
        uniform.lm_head.weight.zero_()
    log_v = math.log(uniform.config.vocab_size)
    scored = score_choices(uniform, tokenizer, QUESTION, CHOICES, chat=False)
    lengths = [len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) for c in CHOICES]
    assert scored["n_tokens"].tolist() == lengths and len(set(lengths)) > 1
    assert scored["logprob"].to_numpy() == pytest.approx(-log_v * np.array(lengths), abs=1e-4)
    assert scored["logprob_per_token"].to_numpy() == pytest.approx(np.full(len(CHOICES), -log_v), abs=1e-5)
    items = [{"id": "q", "question": QUESTION, "choices": CHOICES, "answer": 0},
             {"id": "r", "question": "Which is longest?", "choices": ["a b c d e f", "x"], "answer": 0}]
    summed = evaluate_multiple_choice(uniform, tokenizer, items, normalize="none", chat=False)
    assert summed["predicted"].tolist() == [int(np.argmin(lengths)), 1]
    assert summed["correct"].tolist() == [int(np.argmin(lengths)) == 0, False]
    assert summed["logprobs"].iloc[1] == pytest.approx(-log_v * np.array(summed["n_tokens"].iloc[1]), abs=1e-4)


def test_evaluate_rescore_and_table(tiny_llama):
    model, tokenizer = tiny_llama
    items = load_multiple_choice()[:6]
    results = evaluate_multiple_choice(model, tokenizer, items, chat=False)
    assert list(results.columns) == ["id", "subject", "answer", "predicted", "correct", "logprobs", "n_tokens"]
    assert len(results) == 6 and results["predicted"].between(0, 3).all()
    for row, item in zip(results.itertuples(), items):
        per_token = np.array(row.logprobs) / np.array(row.n_tokens)
        assert row.predicted == int(np.argmax(per_token))
        assert row.correct == (row.predicted == item["answer"])
    summed = rescore(results, "none")
    assert summed["predicted"].tolist() == [int(np.argmax(lp)) for lp in results["logprobs"]]
    same = evaluate_multiple_choice(model, tokenizer, items, normalize="none", chat=False)
    assert same["predicted"].tolist() == summed["predicted"].tolist()
    table = accuracy_table(results)
    assert table["subject"].iloc[-1] == "all" and table["n"].iloc[-1] == 6
    assert table["chance"].iloc[-1] == pytest.approx(0.25)
    assert table["accuracy"].iloc[-1] == pytest.approx(results["correct"].mean())


def test_evaluate_refuses_bad_arguments(tiny_llama):
    model, tokenizer = tiny_llama
    item = {"id": "x", "question": "Q?", "choices": ["a", "b"], "answer": 0}
    with pytest.raises(ValueError, match="method="):
        evaluate_multiple_choice(model, tokenizer, [item], method="guess")
    with pytest.raises(ValueError, match="normalize="):
        evaluate_multiple_choice(model, tokenizer, [item], normalize="chars")
    with pytest.raises(ValueError, match="items is empty"):
        evaluate_multiple_choice(model, tokenizer, [])
    with pytest.raises(ValueError, match=r"items\[1\].*at least 2"):
        evaluate_multiple_choice(model, tokenizer, [item, {**item, "id": "y", "choices": ["a"]}])


# ---------------------------------------------------------------- accuracy with an interval

def test_wilson_interval_hand_computed():
    # 8 right out of 10, 95%: the Wilson score interval is [0.490, 0.943].
    estimate = accuracy_interval([True] * 8 + [False] * 2)
    assert estimate.mean == pytest.approx(0.8)
    assert (estimate.low, estimate.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert estimate.n == 10
    z = 1.959963984540054
    p, n = 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    assert (estimate.low + estimate.high) / 2 == pytest.approx(centre)


def test_wilson_interval_at_the_edges_and_shrinking_with_n():
    assert accuracy_interval([False] * 5).low == 0.0
    assert accuracy_interval([True] * 5).high == 1.0
    assert 0 < accuracy_interval([True] * 5).low < 1
    widths = [accuracy_interval([True, False] * n).high - accuracy_interval([True, False] * n).low for n in (5, 50, 500)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] / widths[2] == pytest.approx(math.sqrt(10), rel=0.05)


def test_bootstrap_accuracy_interval_is_close_to_wilson():
    correct = [True] * 30 + [False] * 20
    wilson, boot = accuracy_interval(correct), accuracy_interval(correct, method="bootstrap")
    assert boot.mean == wilson.mean == 0.6
    assert abs(boot.low - wilson.low) < 0.03 and abs(boot.high - wilson.high) < 0.03


@pytest.mark.parametrize("kwargs, words", [
    ({"correct": []}, "non-empty"),
    ({"correct": [0.5, 1.0]}, "True/False"),
    ({"correct": [True], "confidence": 95}, "confidence"),
    ({"correct": [True], "method": "exact"}, "method="),
])
def test_accuracy_interval_refuses_bad_input(kwargs, words):
    with pytest.raises(ValueError, match=words):
        accuracy_interval(**kwargs)
