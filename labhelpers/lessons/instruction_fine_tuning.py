# Written by `python -m labhelpers.tools.export` from notebooks/05_instruction_fine_tuning.ipynb: edit the notebook, then run it again.
"""Lesson code of Lab 05: Instruction fine-tuning: teach a model a task by training every weight."""

from __future__ import annotations

import random
from dataclasses import dataclass
from labhelpers import Template
from labhelpers import build_chat
from labhelpers import build_prompt
from labhelpers import context_window
from labhelpers import get_template
from labhelpers import model_family
from labhelpers import model_input
from labhelpers import uses_chat_template

__all__ = ['Task', 'TASKS', 'get_task', 'task_prompt', 'IGNORE_INDEX', 'answer_end_id', 'encode_example', 'InstructionData', 'build_instruction_data']


# 05_instruction_fine_tuning.ipynb, cell 7
@dataclass(frozen=True)
class Task:
    """An instruction task made from a dialogue row: a prompt template and the column holding the answer."""

    name: str
    template: Template
    target: str  # the column of the row that holds the answer, e.g. "summary" or "topic"
    max_new_tokens: int = 48  # a generation length that fits this task's answers


TASKS = {task.name: task for task in (
    Task("summary", get_template("instruction"), "summary", 48),
    Task("topic", Template("topic", "What is the following conversation about? Answer with a short topic of two "
                                    "or three words.\n\n{dialogue}\n\nTopic:"), "topic", 12),
)}


def get_task(task):
    """A task by name (see TASKS), or a Task as it is."""
    if isinstance(task, Task):
        return task
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"task={task!r} is unknown; choose one of {sorted(TASKS)} or pass a Task")
    return TASKS[task]


def task_prompt(row, task="summary", *, chat=True):
    """The prompt a model sees for this row and task: chat messages, or plain text when chat=False."""
    template = get_task(task).template
    return build_chat(row["dialogue"], template=template) if chat else build_prompt(row["dialogue"], template=template)


# 05_instruction_fine_tuning.ipynb, cell 9
IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips


def answer_end_id(model, tokenizer):
    """The token that ends an answer: the one generation stops on (for a chat model, the end of its turn)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return tokenizer.eos_token_id if eos is None else int(eos)


def encode_example(tokenizer, family, prompt, target, end_id=None):
    """input_ids, attention_mask and labels of one (prompt, answer) pair.

    Decoder-only ("causal"): the prompt as generation will see it, then the answer and `end_id` (default:
    the tokenizer's eos); the labels are -100 over the prompt. Encoder-decoder ("seq2seq"): the prompt
    is the encoder's input and the answer the labels.
    """
    if not isinstance(target, str) or not target.strip():
        raise ValueError("target is empty; every example needs an answer to learn")
    if family == "seq2seq":
        input_ids = tokenizer(model_input(tokenizer, prompt, chat=False))["input_ids"]
        labels = tokenizer(text_target=target.strip())["input_ids"]
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
    chat = uses_chat_template(tokenizer)
    prompt_ids = tokenizer(model_input(tokenizer, prompt, chat), add_special_tokens=not chat)["input_ids"]
    answer = target.strip() if chat else " " + target.strip()
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    answer_ids.append(tokenizer.eos_token_id if end_id is None else end_id)
    input_ids = prompt_ids + answer_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
            "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}


# 05_instruction_fine_tuning.ipynb, cell 11
@dataclass
class InstructionData:
    """An encoded instruction dataset, with what was dropped and why."""

    examples: list  # dicts of input_ids, attention_mask, labels and the task's name
    n_dropped: int  # examples longer than max_length, left out whole
    max_length: int
    tasks: dict  # task name -> examples kept

    def __len__(self):
        return len(self.examples)

    @property
    def lengths(self):
        """Tokens the model reads per example."""
        return [len(e["input_ids"]) for e in self.examples]

    def to_dataset(self):
        """A datasets.Dataset of the examples, with each one's length (for batches grouped by length)."""
        from datasets import Dataset

        return Dataset.from_list([{**e, "length": len(e["input_ids"])} for e in self.examples])


def _dialogue_rows(rows):
    """The rows as a list of dicts, refusing anything that is not a non-empty sequence of dialogue rows."""
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__iter__"):
        raise TypeError(f"rows must be a list of dialogue rows or a dataset split, not {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not hasattr(row, "keys"):
            raise TypeError(f"rows[{i}] must be a dialogue row (a dict with 'dialogue', 'summary', ...), "
                            f"not {type(row).__name__}")
        out.append(dict(row))
    if not out:
        raise ValueError("rows is empty; give at least one dialogue (check the split you passed)")
    return out


def build_instruction_data(rows, tokenizer, model, tasks="summary", *, max_length=None, seed=0):
    """Encode dialogue rows into instruction examples for one task or a mixture of tasks.

    With several tasks each row makes one example per task, shuffled together (seeded). Examples
    longer than `max_length` tokens (default: the model's context window) are dropped and counted.
    """
    rows = _dialogue_rows(rows)
    if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise TypeError(f"tokenizer must be a transformers tokenizer (load_model returns one with the model), "
                        f"not {type(tokenizer).__name__}")
    task_list = [get_task(t) for t in ([tasks] if isinstance(tasks, (str, Task)) else list(tasks))]
    if not task_list:
        raise ValueError("tasks is empty; name at least one task, e.g. 'summary'")
    needed = ["dialogue"] + sorted({t.target for t in task_list})
    missing = [column for column in needed if column not in rows[0]]
    if missing:
        raise ValueError(f"rows lacks column(s) {missing}; rows need {needed} (found {sorted(rows[0])})")
    family = model_family(model)
    limit = context_window(tokenizer, model) if max_length is None and family == "causal" else max_length
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"max_length={max_length!r} must be a positive number of tokens")
    chat = family == "causal" and uses_chat_template(tokenizer)
    end_id = answer_end_id(model, tokenizer)
    examples, dropped, kept = [], 0, {t.name: 0 for t in task_list}
    for task in task_list:
        for row in rows:
            example = encode_example(tokenizer, family, task_prompt(row, task, chat=chat), row[task.target], end_id)
            if limit is not None and max(len(example["input_ids"]), len(example["labels"])) > limit:
                dropped += 1
                continue
            examples.append({**example, "task": task.name})
            kept[task.name] += 1
    if not examples:
        raise ValueError(f"every example is longer than max_length={limit}; raise max_length")
    random.Random(seed).shuffle(examples)
    return InstructionData(examples, dropped, limit or 0, kept)
