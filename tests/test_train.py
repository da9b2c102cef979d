"""Tests for lab 05's instruction data (exported from its notebook) and labhelpers.train: the answer-only
loss, padding, gradient accumulation, and fine_tune runs.

Everything runs on the tiny profile (random tiny models, generated dialogues) on a CPU, with a few
optimizer steps on a handful of rows, so each test takes a second or two.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from labhelpers.models import model_family
from labhelpers.prompts import Template, build_chat, build_prompt, model_input
from labhelpers import (IGNORE_INDEX, TASKS, PadCollator, Task, TrainConfig, answer_end_id, answer_only_loss,
                        build_instruction_data, encode_example, fine_tune, get_task, load_fine_tuned, task_prompt)
from labhelpers.train import FINAL_DIR, RUN_FILE, finished_run

from stirring import stirred

FAST = dict(batch_size=4, learning_rate=1e-3, log_every=1)


@pytest.fixture(scope="module")
def train_rows(tiny_dialogues) -> list[dict]:
    return [dict(r) for r in tiny_dialogues["train"].select(range(16))]


@pytest.fixture(scope="module")
def val_rows(tiny_dialogues) -> list[dict]:
    return [dict(r) for r in tiny_dialogues["validation"].select(range(4))]


def label_mask(example) -> list[bool]:
    """Which positions of an encoded example are learned (True) rather than masked with -100."""
    return [label != IGNORE_INDEX for label in example["labels"]]


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def _same_weights(a, b) -> bool:
    wa, wb = a.state_dict(), b.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


class _Interrupted(KeyboardInterrupt):
    """What a student's Ctrl-C (or a lost kernel) would raise in the middle of training."""


def _interrupted_run(model, tok, rows, folder, config, at_step: int, if_exists: str = "error") -> None:
    """Start fine_tune into `folder` and interrupt it once `at_step` optimizer steps are done."""
    import transformers

    original = transformers.Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step >= at_step:
            raise _Interrupted()
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.Trainer, "training_step", training_step)
        with pytest.raises(_Interrupted):
            fine_tune(model, tok, rows, tasks="topic", config=config, output_dir=folder, if_exists=if_exists,
                      progress=False)


# ---------------------------------------------------------------- encoding and label masks

def test_causal_labels_are_exactly_the_answer_then_eos(tiny_llama, train_rows):
    model, tok = tiny_llama
    row = train_rows[0]
    end = answer_end_id(model, tok)
    ex = encode_example(tok, "causal", task_prompt(row, "summary"), row["summary"], end)
    mask = label_mask(ex)
    n_answer = sum(mask)
    answer_ids = tok(row["summary"].strip(), add_special_tokens=False)["input_ids"] + [end]

    assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"]) == len(mask)
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])
    # the learned positions are one block at the end: the answer tokens, then eos
    assert n_answer == len(answer_ids)
    assert mask == [False] * (len(mask) - n_answer) + [True] * n_answer
    assert ex["labels"][-n_answer:] == answer_ids == ex["input_ids"][-n_answer:]
    # the answer ends with the token generation stops on (here the chat turn's end, not the tokenizer's eos)
    stop = model.generation_config.eos_token_id
    assert ex["labels"][-1] == (stop[0] if isinstance(stop, list) else stop)
    assert tok.decode(ex["labels"][-n_answer:], skip_special_tokens=True).strip() == row["summary"].strip()
    # the masked part is the prompt exactly as generation sees it (chat template, assistant turn opened)
    prompt_text = model_input(tok, build_chat(row["dialogue"]))
    assert ex["input_ids"][:-n_answer] == tok(prompt_text, add_special_tokens=False)["input_ids"]
    assert all(label == IGNORE_INDEX for label in ex["labels"][:-n_answer])


def test_build_instruction_data_encodes_like_encode_example(tiny_llama, train_rows):
    model, tok = tiny_llama
    row = train_rows[1]
    for task in ("summary", "topic"):
        data = build_instruction_data([row], tok, model, task)
        assert len(data) == 1 and data.tasks == {task: 1} and data.n_dropped == 0
        ex = data.examples[0]
        expected = encode_example(tok, "causal", task_prompt(row, task), row[TASKS[task].target],
                                  answer_end_id(model, tok))
        assert ex["task"] == task
        assert {k: ex[k] for k in expected} == expected
        answer = [label for label in ex["labels"] if label != IGNORE_INDEX]
        assert tok.decode(answer, skip_special_tokens=True).strip() == row[task]
        assert data.lengths == [len(ex["input_ids"])]


def test_seq2seq_labels_are_the_tokenized_target_with_eos(tiny_t5, train_rows):
    model, tok = tiny_t5
    row = train_rows[2]
    data = build_instruction_data([row], tok, model, "summary")
    ex = data.examples[0]
    assert ex["labels"] == tok(text_target=row["summary"])["input_ids"]
    assert ex["labels"][-1] == tok.eos_token_id
    assert IGNORE_INDEX not in ex["labels"] and all(label_mask(ex))
    assert tok.decode(ex["labels"], skip_special_tokens=True).strip() == row["summary"].strip()
    # the encoder reads the plain-text prompt; no answer in the input
    assert ex["input_ids"] == tok(build_prompt(row["dialogue"]))["input_ids"]
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])


def test_empty_target_is_refused(tiny_llama):
    _, tok = tiny_llama
    with pytest.raises(ValueError, match="target is empty"):
        encode_example(tok, "causal", "Summarize: hi", "   ")


# ---------------------------------------------------------------- multi-task data and max_length

def test_multi_task_data_has_one_example_per_row_and_task(tiny_llama, train_rows):
    model, tok = tiny_llama
    rows = train_rows[:6]
    data = build_instruction_data(rows, tok, model, ["summary", "topic"])
    assert len(data) == 12 and data.n_dropped == 0
    assert data.tasks == {"summary": 6, "topic": 6}
    got = sorted((ex["task"], tok.decode([x for x in ex["labels"] if x != IGNORE_INDEX],
                                         skip_special_tokens=True).strip()) for ex in data.examples)
    assert got == sorted([("summary", r["summary"]) for r in rows] + [("topic", r["topic"]) for r in rows])
    # shuffled together (seeded): the tasks are mixed, the same seed repeats, another seed reorders
    assert [ex["task"] for ex in data.examples] != ["summary"] * 6 + ["topic"] * 6
    again = build_instruction_data(rows, tok, model, ["summary", "topic"])
    assert [ex["input_ids"] for ex in again.examples] == [ex["input_ids"] for ex in data.examples]
    other = build_instruction_data(rows, tok, model, ["summary", "topic"], seed=1)
    assert [ex["input_ids"] for ex in other.examples] != [ex["input_ids"] for ex in data.examples]


def test_examples_over_max_length_are_dropped_and_counted(tiny_llama, train_rows):
    model, tok = tiny_llama
    rows = train_rows[:8]
    tasks = ["summary", "topic"]
    lengths = {(t, i): len(encode_example(tok, "causal", task_prompt(r, t), r[t])["input_ids"])
               for t in tasks for i, r in enumerate(rows)}
    limit = sorted(lengths.values())[len(lengths) // 2]  # about half are longer
    too_long = {key for key, n in lengths.items() if n > limit}
    assert 0 < len(too_long) < len(lengths)

    data = build_instruction_data(rows, tok, model, tasks, max_length=limit)
    assert data.n_dropped == len(too_long)
    assert len(data) == len(lengths) - len(too_long) == sum(data.tasks.values())
    assert data.max_length == limit
    assert max(data.lengths) <= limit
    for t in tasks:
        assert data.tasks[t] == sum(1 for (task, _) in lengths if task == t and (task, _) not in too_long)
    # kept examples are whole (never truncated): each still ends with eos
    assert all(ex["input_ids"][-1] == answer_end_id(model, tok) for ex in data.examples)

    with pytest.raises(ValueError, match="max_length"):
        build_instruction_data(rows, tok, model, tasks, max_length=10)


# ---------------------------------------------------------------- padding

def test_pad_collator_pads_causal_batch_to_its_own_longest_on_the_right(tiny_llama, train_rows):
    model, tok = tiny_llama
    data = build_instruction_data(train_rows[:8], tok, model, "topic")
    shortest = {}  # one example per length, shortest lengths first
    for ex in sorted(data.examples, key=lambda e: len(e["input_ids"])):
        shortest.setdefault(len(ex["input_ids"]), ex)
    by_length = list(shortest.values())
    features = [by_length[2], by_length[0], by_length[1]]  # not in length order
    lengths = [len(f["input_ids"]) for f in features]
    assert len(set(lengths)) == 3 and max(lengths) < max(data.lengths)
    assert tok.padding_side == "left"  # the tokenizer pads left for generation; training pads right anyway

    batch = PadCollator(tok, "causal")(features)
    width = max(lengths)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for key in batch:
        assert batch[key].shape == (3, width) and batch[key].dtype == torch.long
    for i, f in enumerate(features):
        n = lengths[i]
        assert batch["input_ids"][i, :n].tolist() == f["input_ids"]
        assert batch["input_ids"][i, n:].tolist() == [tok.pad_token_id] * (width - n)
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
        assert batch["labels"][i, :n].tolist() == f["labels"]
        assert batch["labels"][i, n:].tolist() == [IGNORE_INDEX] * (width - n)


def test_pad_collator_pads_seq2seq_labels_to_their_own_longest(tiny_t5, train_rows):
    model, tok = tiny_t5
    data = build_instruction_data(train_rows[:6], tok, model, "summary")
    features = data.examples[:4]
    in_len = [len(f["input_ids"]) for f in features]
    out_len = [len(f["labels"]) for f in features]
    assert len(set(out_len)) > 1

    batch = PadCollator(tok, "seq2seq")(features)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, max(in_len))
    assert batch["labels"].shape == (4, max(out_len))
    for i, f in enumerate(features):
        assert batch["input_ids"][i].tolist() == f["input_ids"] + [tok.pad_token_id] * (max(in_len) - in_len[i])
        assert batch["attention_mask"][i].tolist() == [1] * in_len[i] + [0] * (max(in_len) - in_len[i])
        assert batch["labels"][i].tolist() == f["labels"] + [IGNORE_INDEX] * (max(out_len) - out_len[i])


# ---------------------------------------------------------------- answer-only loss

@pytest.mark.parametrize("stir", [False, True], ids=["random", "stirred"])
def test_answer_only_loss_equals_the_models_loss_on_a_padded_batch(tiny_llama, train_rows, stir):
    model, tok = tiny_llama
    model = stirred(model) if stir else model
    data = build_instruction_data(train_rows[:4], tok, model, ["summary", "topic"])
    batch = PadCollator(tok, "causal")(data.examples[:5])
    assert (batch["attention_mask"] == 0).any()  # really padded
    with torch.no_grad():
        ours = answer_only_loss(model, batch)
        theirs = model(**batch).loss
        # the same number from full logits by hand: prediction at t scores label t+1, -100 ignored
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        manual = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                   batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        everything = model(**{**batch, "labels": batch["input_ids"]}).loss
    assert ours.shape == ()
    assert abs(ours.item() - theirs.item()) < 1e-5
    assert abs(ours.item() - manual.item()) < 1e-5
    if stir:  # the mask matters: the loss over every token is another number
        assert abs(everything.item() - ours.item()) > 1e-3


def test_answer_only_loss_has_the_models_gradient(tiny_llama, train_rows):
    base, tok = tiny_llama
    data = build_instruction_data(train_rows[:3], tok, base, "topic")
    batch = PadCollator(tok, "causal")(data.examples)
    grads = []
    for loss_of in (lambda m: answer_only_loss(m, batch), lambda m: m(**batch).loss):
        model = stirred(base)
        loss_of(model).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4), name


def _prompt_tuned(base, tok, n_virtual_tokens=5):
    """A prompt-tuned copy of `base` whose learnt embeddings are far from any word's (so position matters)."""
    from labhelpers.adapters import add_adapter, prompt_tuning_config

    model = add_adapter(base, prompt_tuning_config(base, tok, n_virtual_tokens=n_virtual_tokens))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    return model


def test_answer_only_loss_of_a_prompt_tuned_model_is_peft_s_loss_and_gradient(tiny_llama, train_rows):
    """Prompt tuning trains without the vocabulary-sized logits at every position, for the same loss."""
    base, tok = tiny_llama
    model = _prompt_tuned(stirred(base), tok)
    data = build_instruction_data(train_rows[:4], tok, base, ["summary", "topic"])
    batch = PadCollator(tok, "causal")(data.examples[:5])
    assert (batch["attention_mask"] == 0).any()
    losses, grads = [], []
    for loss_of in (answer_only_loss, lambda m, b: m(**b).loss):
        model.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert abs(losses[0] - losses[1]) < 1e-5
    assert len(grads[0]) == 1 and grads[0][0].abs().sum() > 0  # the learnt embeddings, and only they
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6, rtol=1e-4)
    with torch.no_grad():  # the learnt tokens count: the base model's loss on the same batch is another number
        assert abs(answer_only_loss(model.get_base_model(), batch).item() - losses[0]) > 1e-3


def test_answer_only_loss_for_seq2seq_is_the_models_loss(tiny_t5, train_rows):
    model, tok = tiny_t5
    model = stirred(model)
    data = build_instruction_data(train_rows[:3], tok, model, "summary")
    batch = PadCollator(tok, "seq2seq")(data.examples)
    with torch.no_grad():
        ours = answer_only_loss(model, batch)
        theirs = model(**batch).loss
    assert torch.isfinite(ours)
    assert abs(ours.item() - theirs.item()) < 1e-6


# ---------------------------------------------------------------- training runs

def test_fine_tune_lowers_the_loss_and_leaves_the_base_alone(tiny_llama, train_rows, val_rows):
    base, tok = tiny_llama
    before = _weights(base)
    result = fine_tune(base, tok, train_rows, val_rows, tasks="summary", config=TrainConfig(steps=15, **FAST),
                       progress=False, live_plot=False)
    hist = result.history
    train = hist.dropna(subset=["train_loss"])
    assert train["step"].tolist() == list(range(1, 16))  # one training loss per step
    assert hist["val_loss"].notna().sum() == 2
    assert result.val_losses.index.tolist() == [0, 15]  # at the start and the end
    assert train["train_loss"].tail(3).mean() < train["train_loss"].head(3).mean() - 0.2
    assert result.final_loss < result.first_loss
    assert result.val_losses[15] < result.val_losses[0]
    assert result.n_train == 16 and result.n_dropped == 0 and result.output_dir is None
    assert result.resumed_from is None and result.seconds > 0

    # the base is untouched (a copy was trained), and the trained copy really differs
    assert result.model is not base
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not base.training
    assert not _same_weights(result.model, base)
    assert not result.model.training  # handed back ready to generate


def test_first_validation_loss_is_the_base_models_loss(tiny_llama, train_rows, val_rows):
    base, tok = tiny_llama
    result = fine_tune(base, tok, train_rows[:4], val_rows, tasks="topic",
                       config=TrainConfig(steps=1, **FAST), progress=False, live_plot=False)
    # the four validation rows make one evaluation batch, in order
    val = build_instruction_data(val_rows, tok, base, "topic", seed=0)
    batch = PadCollator(tok, "causal")(val.examples)
    with torch.no_grad():
        expected = base(**batch).loss.item()
    assert abs(result.val_losses[0] - expected) < 1e-4


def test_in_place_trains_the_given_model(tiny_llama, train_rows):
    base, tok = tiny_llama
    mine = copy.deepcopy(base)
    result = fine_tune(mine, tok, train_rows[:4], tasks="topic", config=TrainConfig(steps=2, **FAST),
                       in_place=True, progress=False, live_plot=False)
    assert result.model is mine
    assert not _same_weights(mine, base)


def test_tokens_seen_counts_the_real_tokens_of_the_trained_batches(tiny_llama, train_rows, val_rows):
    base, tok = tiny_llama
    # 16 examples in batches of 4, 8 steps: exactly two passes over the data (validation not counted)
    result = fine_tune(base, tok, train_rows, val_rows, tasks="topic", config=TrainConfig(steps=8, **FAST),
                       progress=False, live_plot=False)
    data = build_instruction_data(train_rows, tok, base, "topic")
    assert result.n_train == len(data) == 16
    assert result.tokens_seen == 2 * sum(data.lengths)
    assert result.tokens_per_second() > 0


def test_seq2seq_fine_tune_trains_and_counts_labels(tiny_t5, train_rows):
    base, tok = tiny_t5
    before = _weights(base)
    result = fine_tune(base, tok, train_rows[:8], tasks="topic", config=TrainConfig(steps=4, **FAST),
                       progress=False, live_plot=False)
    data = build_instruction_data(train_rows[:8], tok, base, "topic")
    assert result.tokens_seen == 2 * (sum(data.lengths) + sum(len(e["labels"]) for e in data.examples))
    assert result.history["train_loss"].notna().sum() == 4
    assert result.final_loss < result.first_loss
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_same_seed_repeats_exactly_and_another_seed_does_not(tiny_llama, train_rows):
    base, tok = tiny_llama
    runs = [fine_tune(base, tok, train_rows, tasks="topic", config=TrainConfig(steps=5, seed=seed, **FAST),
                      progress=False, live_plot=False) for seed in (7, 7, 8)]
    a, b, c = runs
    assert a.history["train_loss"].tolist() == b.history["train_loss"].tolist()
    assert a.final_loss == b.final_loss
    assert _same_weights(a.model, b.model)
    assert a.tokens_seen == b.tokens_seen
    assert not _same_weights(a.model, c.model)


def _uneven_micro_batches(model, tok, row):
    """One row's topic (a few answer tokens) and summary (dozens) as two micro-batches, with every answer
    token's cross-entropy computed by hand from the full logits."""
    collate = PadCollator(tok, "causal")
    parts = [collate(build_instruction_data([row], tok, model, task).examples) for task in ("topic", "summary")]
    per_token = []
    with torch.no_grad():
        for part in parts:
            logits = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits[:, :-1]
            labels = part["labels"][:, 1:]
            keep = labels != IGNORE_INDEX
            per_token.append(torch.nn.functional.cross_entropy(logits[keep].float(), labels[keep], reduction="none"))
    return parts, per_token


def test_accumulated_micro_batches_weigh_every_answer_token_equally(tiny_llama, train_rows):
    model, tok = tiny_llama
    model = stirred(model)
    parts, per_token = _uneven_micro_batches(model, tok, train_rows[0])
    counts = [len(t) for t in per_token]
    assert counts[1] > 4 * counts[0]  # really uneven
    token_mean = torch.cat(per_token).mean().item()
    mean_of_means = (per_token[0].mean().item() + per_token[1].mean().item()) / 2
    assert abs(token_mean - mean_of_means) > 0.02  # so the weighting is observable
    # each micro-batch's sum over the step's answer tokens: the parts add up to the mean over every token
    n = sum(counts)
    scaled = [answer_only_loss(model, part, num_items_in_batch=n) for part in parts]
    for loss, tokens in zip(scaled, per_token):
        assert abs(loss.item() - tokens.sum().item() / n) < 1e-5
    assert abs(sum(scaled).item() - token_mean) < 1e-5
    # without the count, each micro-batch's own mean (what a lone batch reports)
    assert abs(answer_only_loss(model, parts[0]).item() - per_token[0].mean().item()) < 1e-5
    # and the accumulated gradient is the gradient of the whole batch's loss
    whole = PadCollator(tok, "causal")(build_instruction_data([train_rows[0]], tok, model, ["topic", "summary"]).examples)
    grads = []
    for losses_of in (lambda m: [answer_only_loss(m, part, num_items_in_batch=n) for part in parts],
                      lambda m: [answer_only_loss(m, whole)]):
        m = copy.deepcopy(model)
        for loss in losses_of(m):
            loss.backward()
        grads.append({name: p.grad for name, p in m.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4), name


def test_gradient_accumulation_in_fine_tune_weighs_every_answer_token_equally(tiny_llama, train_rows):
    base, tok = tiny_llama
    model = stirred(base)
    _, per_token = _uneven_micro_batches(model, tok, train_rows[0])
    token_mean = torch.cat(per_token).mean().item()
    mean_of_means = (per_token[0].mean().item() + per_token[1].mean().item()) / 2
    first = {}
    for accumulation, batch in ((1, 2), (2, 1)):  # the same two examples in one step, in one batch or two
        config = TrainConfig(steps=1, batch_size=batch, grad_accumulation=accumulation, learning_rate=1e-3)
        first[accumulation] = fine_tune(model, tok, [train_rows[0]], tasks=["topic", "summary"], config=config,
                                        progress=False, live_plot=False).first_loss
    # the loss of the step is the mean over its answer tokens (up to bf16 autocast), not a mean of means
    assert abs(first[2] - first[1]) < 1e-4, first
    assert abs(first[2] - token_mean) < 0.005 < abs(first[2] - mean_of_means), (first, token_mean, mean_of_means)


@pytest.mark.parametrize("with_adapter", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_trains_the_same_and_is_off_afterwards(tiny_llama, train_rows, with_adapter):
    from labhelpers.adapters import lora_config

    base, tok = tiny_llama
    runs = {}
    for checkpointing in (False, True):
        config = TrainConfig(steps=3, batch_size=4, learning_rate=1e-3, seed=3, gradient_checkpointing=checkpointing)
        runs[checkpointing] = fine_tune(base, tok, train_rows, tasks="topic", config=config, progress=False,
                                        live_plot=False, adapter=lora_config(base, r=4) if with_adapter else None)
    plain, recomputed = runs[False], runs[True]
    # recomputing activations in the backward pass changes the memory, not the arithmetic
    assert recomputed.history["train_loss"].dropna().tolist() == pytest.approx(
        plain.history["train_loss"].dropna().tolist(), rel=1e-5)
    for (name, a), (_, b) in zip(plain.model.named_parameters(), recomputed.model.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not recomputed.model.is_activation_checkpointing
    assert not base.is_activation_checkpointing


# ---------------------------------------------------------------- output folders, checkpoints, resume

def test_finished_run_saves_final_model_that_loads_back(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    out = tmp_path / "run"
    result = fine_tune(base, tok, train_rows[:8], tasks="topic", config=TrainConfig(steps=4, save_every=2, **FAST),
                       output_dir=out, progress=False, live_plot=False)
    assert result.output_dir == out
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE])  # checkpoints superseded
    run = json.loads((out / RUN_FILE).read_text())
    assert run["config"]["steps"] == 4 and run["n_train"] == 8 and run["tasks"] == ["topic"]

    loaded, loaded_tok = load_fine_tuned(out)
    assert model_family(loaded) == "causal" and not loaded.training
    data = build_instruction_data(train_rows[8:11], tok, base, "topic")
    batch = PadCollator(tok, "causal")(data.examples)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = result.model(**inputs).logits
        got = loaded(**inputs).logits
        untrained = base(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(got, untrained, atol=1e-4)
    assert loaded_tok(["#Person1#: hi"])["input_ids"] == tok(["#Person1#: hi"])["input_ids"]
    # the final folder itself loads too
    again, _ = load_fine_tuned(out / FINAL_DIR)
    assert _same_weights(again, loaded)


def test_load_fine_tuned_without_a_finished_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished model"):
        load_fine_tuned(tmp_path)


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    config = TrainConfig(steps=6, save_every=3, **FAST)
    out = tmp_path / "run"
    _interrupted_run(base, tok, train_rows, out, config, at_step=4)  # step 4 done, lost: only checkpoint-3 kept
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint-3", RUN_FILE])
    assert not (out / FINAL_DIR).exists()

    with pytest.raises(FileExistsError, match="unfinished run"):  # the default refuses to touch it
        fine_tune(base, tok, train_rows, tasks="topic", config=config, output_dir=out, progress=False)
    assert (out / "checkpoint-3").is_dir()

    import transformers

    original, steps_run = transformers.Trainer.training_step, []

    def counting_step(self, *args, **kwargs):
        steps_run.append(self.state.global_step + 1)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.Trainer, "training_step", counting_step)
        resumed = fine_tune(base, tok, train_rows, tasks="topic", config=config, output_dir=out,
                            if_exists="resume", progress=False, live_plot=False)
    assert steps_run == [4, 5, 6]  # it continued from the checkpoint rather than starting again
    straight = fine_tune(base, tok, train_rows, tasks="topic", config=config, progress=False, live_plot=False)

    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-3")
    assert straight.resumed_from is None
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE])
    r_train = resumed.history.dropna(subset=["train_loss"])
    s_train = straight.history.dropna(subset=["train_loss"])
    assert r_train["step"].tolist() == s_train["step"].tolist() == list(range(1, 7))  # the whole run's log
    assert torch.allclose(torch.tensor(r_train["train_loss"].tolist()), torch.tensor(s_train["train_loss"].tolist()),
                          atol=1e-6, rtol=0)
    assert abs(resumed.final_loss - straight.final_loss) < 1e-6
    rw, sw = resumed.model.state_dict(), straight.model.state_dict()
    assert all(torch.allclose(rw[k], sw[k], atol=1e-6, rtol=0) for k in sw)
    assert not _same_weights(resumed.model, base)
    loaded, _ = load_fine_tuned(out)
    assert _same_weights(loaded, resumed.model)


def test_resume_refuses_another_runs_checkpoints_and_overwrite_replaces_them(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    out = tmp_path / "run"
    _interrupted_run(base, tok, train_rows, out, TrainConfig(steps=6, save_every=2, **FAST), at_step=5)
    old = sorted(p.name for p in out.iterdir())
    assert old == sorted(["checkpoint-4", RUN_FILE])  # only the latest checkpoint is kept
    old_run = (out / RUN_FILE).read_text()

    other = TrainConfig(steps=6, save_every=2, batch_size=4, learning_rate=2e-3)  # another learning rate
    with pytest.raises(FileExistsError, match="another run"):
        fine_tune(base, tok, train_rows, tasks="topic", config=other, output_dir=out, if_exists="resume",
                  progress=False)
    assert sorted(p.name for p in out.iterdir()) == old and (out / RUN_FILE).read_text() == old_run

    with pytest.raises(FileExistsError, match="another run"):  # other data is another run too
        fine_tune(base, tok, train_rows[:8], tasks="topic", config=TrainConfig(steps=6, save_every=2, **FAST),
                  output_dir=out, if_exists="resume", progress=False)

    result = fine_tune(base, tok, train_rows, tasks="topic", config=other, output_dir=out, if_exists="overwrite",
                       progress=False, live_plot=False)
    assert result.resumed_from is None
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE])
    assert json.loads((out / RUN_FILE).read_text())["config"]["learning_rate"] == 2e-3
    assert result.history.dropna(subset=["train_loss"])["step"].tolist() == list(range(1, 7))


def test_finished_model_is_kept_unless_overwrite(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    out = tmp_path / "run"
    config = TrainConfig(steps=2, **FAST)
    first = fine_tune(base, tok, train_rows[:4], tasks="topic", config=config, output_dir=out,
                      progress=False, live_plot=False)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    for mode in ("error", "resume"):
        with pytest.raises(FileExistsError, match="finished model"):
            fine_tune(base, tok, train_rows[:4], tasks="topic", config=config, output_dir=out, if_exists=mode,
                      progress=False)
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    assert _same_weights(load_fine_tuned(out)[0], first.model)

    second = fine_tune(base, tok, train_rows[4:8], tasks="topic", config=config, output_dir=out,
                       if_exists="overwrite", progress=False, live_plot=False)
    replaced = load_fine_tuned(out)[0]
    assert _same_weights(replaced, second.model)
    assert not _same_weights(replaced, first.model)


def test_interrupted_overwrite_keeps_the_previous_model_and_can_resume(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    out = tmp_path / "run"
    first = fine_tune(base, tok, train_rows[:4], tasks="topic", config=TrainConfig(steps=2, **FAST), output_dir=out,
                      progress=False, live_plot=False)
    config = TrainConfig(steps=6, save_every=2, **FAST)
    _interrupted_run(base, tok, train_rows, out, config, at_step=5, if_exists="overwrite")
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE, "checkpoint-4"])
    assert _same_weights(load_fine_tuned(out)[0], first.model)  # the previous model was not lost
    assert finished_run(out)["fingerprint"] != json.loads((out / RUN_FILE).read_text())["fingerprint"]

    with pytest.raises(FileExistsError, match="if_exists='resume'"):
        fine_tune(base, tok, train_rows, tasks="topic", config=config, output_dir=out, progress=False)
    resumed = fine_tune(base, tok, train_rows, tasks="topic", config=config, output_dir=out, if_exists="resume",
                        progress=False, live_plot=False)
    assert resumed.resumed_from.endswith("checkpoint-4")
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE])
    assert _same_weights(load_fine_tuned(out)[0], resumed.model)
    assert finished_run(out)["fingerprint"] == json.loads((out / RUN_FILE).read_text())["fingerprint"]


def test_reuse_loads_an_identical_finished_run_and_trains_otherwise(tiny_llama, train_rows, tmp_path):
    import transformers

    base, tok = tiny_llama
    out = tmp_path / "run"
    config = TrainConfig(steps=3, **FAST)
    first = fine_tune(base, tok, train_rows[:8], tasks="topic", config=config, output_dir=out, if_exists="reuse",
                      progress=False, live_plot=False)
    assert not first.reused and (out / FINAL_DIR / RUN_FILE).is_file()  # nothing to reuse yet: it trained

    def no_training(self, *args, **kwargs):
        raise AssertionError("reuse trained again")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.Trainer, "training_step", no_training)
        again = fine_tune(base, tok, train_rows[:8], tasks="topic", config=config, output_dir=out,
                          if_exists="reuse", progress=False, live_plot=False)
    assert again.reused and _same_weights(again.model, first.model) and not again.model.training
    assert again.history["train_loss"].dropna().tolist() == pytest.approx(first.history["train_loss"].dropna().tolist())
    assert (again.seconds, again.tokens_seen, again.n_train) == (pytest.approx(first.seconds), first.tokens_seen, 8)

    other = TrainConfig(steps=3, batch_size=4, learning_rate=2e-3)  # other settings: not the same run
    third = fine_tune(base, tok, train_rows[:8], tasks="topic", config=other, output_dir=out, if_exists="reuse",
                      progress=False, live_plot=False)
    assert not third.reused and not _same_weights(third.model, first.model)
    assert _same_weights(load_fine_tuned(out)[0], third.model)

    (out / FINAL_DIR / RUN_FILE).unlink()  # a model without its record cannot be proved the same: trained again
    fourth = fine_tune(base, tok, train_rows[:8], tasks="topic", config=other, output_dir=out, if_exists="reuse",
                       progress=False, live_plot=False)
    assert not fourth.reused and (out / FINAL_DIR / RUN_FILE).is_file()
    with pytest.raises(ValueError, match="needs an output_dir"):
        fine_tune(base, tok, train_rows[:8], tasks="topic", config=other, if_exists="reuse", progress=False)


def test_output_dir_that_is_a_file_is_refused(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        fine_tune(base, tok, train_rows[:4], tasks="topic", config=TrainConfig(steps=1, **FAST), output_dir=path,
                  progress=False)
    assert path.read_text() == "mine"


# ---------------------------------------------------------------- bad input

def test_rows_without_the_tasks_column_are_refused(tiny_llama, train_rows):
    model, tok = tiny_llama
    rows = [{k: v for k, v in r.items() if k != "topic"} for r in train_rows[:3]]
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['topic'\]"):
        build_instruction_data(rows, tok, model, "topic")
    with pytest.raises(ValueError, match="topic"):
        fine_tune(model, tok, rows, tasks=["summary", "topic"], config=TrainConfig(steps=1), progress=False)
    no_dialogue = [{k: v for k, v in r.items() if k != "dialogue"} for r in train_rows[:3]]
    with pytest.raises(ValueError, match="dialogue"):
        build_instruction_data(no_dialogue, tok, model, "summary")
    # the summary task alone does not need the topic column
    assert len(build_instruction_data(rows, tok, model, "summary")) == 3


def test_empty_split_and_wrong_row_types_are_refused(tiny_llama, tiny_dialogues, train_rows):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="empty"):
        build_instruction_data(tiny_dialogues["train"].select([]), tok, model)
    with pytest.raises(ValueError, match="empty"):
        fine_tune(model, tok, [], config=TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="validation is empty|rows is empty"):
        fine_tune(model, tok, train_rows[:2], [], config=TrainConfig(steps=1), progress=False)
    with pytest.raises(TypeError, match="list of dialogue rows"):
        build_instruction_data("a dialogue", tok, model)
    with pytest.raises(TypeError, match="list of dialogue rows"):
        build_instruction_data(train_rows[0], tok, model)


def test_unknown_task_and_bad_templates_are_refused(tiny_llama, train_rows):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="'translate' is unknown.*summary.*topic"):
        get_task("translate")
    with pytest.raises(ValueError, match="translate"):
        build_instruction_data(train_rows[:2], tok, model, ["summary", "translate"])
    with pytest.raises(ValueError, match="tasks is empty"):
        build_instruction_data(train_rows[:2], tok, model, [])
    with pytest.raises(ValueError, match=r"\{dialogue\} slot"):
        Template("bad", "Summarize the conversation.")
    # a custom Task works as is
    custom = Task("gist", Template("gist", "Gist of: {dialogue}\nGist:"), "summary")
    assert get_task(custom) is custom
    data = build_instruction_data(train_rows[:2], tok, model, custom)
    assert data.tasks == {"gist": 2}


@pytest.mark.parametrize("kwargs, name", [
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(grad_accumulation=-1), "grad_accumulation"),
    (dict(learning_rate=5), "learning_rate"),
    (dict(learning_rate=0), "learning_rate"),
    (dict(lr_scheduler="exponential"), "lr_scheduler"),
    (dict(warmup_steps=100, steps=10), "warmup_steps"),
    (dict(weight_decay=-0.1), "weight_decay"),
    (dict(save_every=0), "save_every"),
    (dict(eval_every=-5), "eval_every"),
    (dict(gradient_checkpointing="yes"), "gradient_checkpointing"),
])
def test_bad_train_config_is_refused_naming_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kwargs)


def test_bad_fine_tune_arguments_are_refused(tiny_llama, train_rows, tmp_path):
    model, tok = tiny_llama
    with pytest.raises(ValueError, match="if_exists='keep'"):
        fine_tune(model, tok, train_rows[:2], config=TrainConfig(steps=1), output_dir=tmp_path / "x",
                  if_exists="keep", progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(TypeError, match="TrainConfig"):
        fine_tune(model, tok, train_rows[:2], config={"steps": 1}, progress=False)
    with pytest.raises(TypeError, match="transformers model"):
        fine_tune("tiny-llama", tok, train_rows[:2], config=TrainConfig(steps=1), progress=False)
