"""Prompt templates, zero/one/few-shot builders, and a context-window budget that never truncates silently.

A prompt is plain text (the course's style: examples stacked above the dialogue to summarise) or,
for chat models, a list of messages where each example is a user turn answered by an assistant
turn. `model_input` turns either into the exact string the model reads, so token counts and
generation see the same thing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Sequence

__all__ = ['SHOT_SEPARATOR', 'Template', 'TEMPLATES', 'ContextWindowError', 'get_template', 'build_prompt',
           'build_chat', 'uses_chat_template', 'model_input', 'check_prompt', 'count_tokens', 'context_window',
           'FittedPrompt', 'fit_prompt', 'select_examples']

SHOT_SEPARATOR = "\n\n\n"


@dataclass(frozen=True)
class Template:
    """A way of asking for a summary: `text` holds a {dialogue} slot; the answer follows the text."""

    name: str
    text: str
    note: str = ""

    def __post_init__(self):
        if "{dialogue}" not in self.text:
            raise ValueError(f"template={self.name!r} has no {{dialogue}} slot; put {{dialogue}} where the dialogue goes")

    def render(self, dialogue: str, summary: str | None = None) -> str:
        """The template filled with a dialogue; with `summary`, a worked example for few-shot prompts."""
        query = self.text.replace("{dialogue}", dialogue)
        return query if summary is None else f"{query} {summary}"


TEMPLATES: Mapping[str, Template] = {t.name: t for t in (
    Template("none", "{dialogue}", "no prompt engineering: the dialogue alone"),
    Template("instruction", "Summarize the following conversation.\n\n{dialogue}\n\nSummary:",
             "a plain instruction, as the course's labs used"),
    Template("what_was_going_on", "Dialogue:\n\n{dialogue}\n\nWhat was going on?",
             "FLAN's dialogue-summary style"),
    Template("briefly_summarize", "{dialogue}\n\nBriefly summarize that dialogue.",
             "FLAN's dialogue-summary style, instruction after the dialogue"),
    Template("short_summary", "Here is a dialogue:\n{dialogue}\n\nWrite a short summary!",
             "FLAN's dialogue-summary style"),
    Template("one_sentence", "{dialogue}\n\nIn one sentence, who wants what and what is decided?",
             "asks for the content of a DialogSum reference"),
)}


class ContextWindowError(ValueError):
    """A prompt does not fit in the model's context window with room for the answer."""


def get_template(template: str | Template) -> Template:
    """A template by name (see TEMPLATES), or a Template / a string with a {dialogue} slot as is."""
    if isinstance(template, Template):
        return template
    if not isinstance(template, str):
        raise TypeError(f"template must be a name or a Template, not {type(template).__name__}")
    if template in TEMPLATES:
        return TEMPLATES[template]
    if "{dialogue}" in template:
        return Template("custom", template)
    raise ValueError(f"template={template!r} is neither a known name ({', '.join(TEMPLATES)}) nor a text with a"
                     " {dialogue} slot")


def _check_dialogue(dialogue, argument: str = "dialogue") -> str:
    if not isinstance(dialogue, str):
        raise TypeError(f"{argument} must be a string, not {type(dialogue).__name__}")
    if not dialogue.strip():
        raise ValueError(f"{argument} is empty; give the text of a conversation")
    return dialogue.strip()


def _pairs(examples: Sequence) -> list[tuple[str, str]]:
    """Examples as (dialogue, summary) pairs, from dicts with those keys or from pairs."""
    if isinstance(examples, (str, bytes, Mapping)) or not hasattr(examples, "__iter__"):
        raise TypeError(f"examples must be a list of worked examples (dicts with dialogue and summary, or pairs), "
                        f"not {type(examples).__name__}")
    pairs = []
    for i, ex in enumerate(examples):
        if isinstance(ex, Mapping):
            missing = [key for key in ("dialogue", "summary") if key not in ex]
            if missing:
                raise ValueError(f"examples[{i}] lacks {missing}; each worked example needs a dialogue and a summary")
            dialogue, summary = ex["dialogue"], ex["summary"]
        elif isinstance(ex, (list, tuple)) and len(ex) == 2:
            dialogue, summary = ex
        else:
            raise TypeError(f"examples[{i}] must be a dict with dialogue and summary, or a (dialogue, summary) pair; "
                            f"got {type(ex).__name__}" + (f" of {len(ex)}" if isinstance(ex, (list, tuple)) else ""))
        pairs.append((_check_dialogue(dialogue, f"examples[{i}].dialogue"),
                      _check_dialogue(summary, f"examples[{i}].summary")))
    return pairs


def build_prompt(dialogue: str, examples: Sequence = (), template: str | Template = "instruction") -> str:
    """Zero-shot (no examples), one-shot or few-shot prompt as plain text: worked examples, then the query."""
    tpl = get_template(template)
    shots = [tpl.render(d, s) for d, s in _pairs(examples)]
    return SHOT_SEPARATOR.join(shots + [tpl.render(_check_dialogue(dialogue))])


def build_chat(dialogue: str, examples: Sequence = (), template: str | Template = "instruction") -> list[dict]:
    """The same prompt for a chat model: each example a user turn answered by the assistant, then the query."""
    tpl = get_template(template)
    messages = []
    for d, s in _pairs(examples):
        messages += [{"role": "user", "content": tpl.render(d)}, {"role": "assistant", "content": s}]
    return messages + [{"role": "user", "content": tpl.render(_check_dialogue(dialogue))}]


def uses_chat_template(tokenizer, chat: bool | None = None) -> bool:
    """Whether prompts go through the tokenizer's chat template (default: whenever it has one)."""
    if chat is not None and not isinstance(chat, bool):
        raise TypeError(f"chat={chat!r} must be True, False or None (None: whenever the tokenizer has a chat template)")
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has:
        raise ValueError("chat=True but this tokenizer has no chat template; use chat=None or False")
    return has if chat is None else bool(chat)


def model_input(tokenizer, prompt: str | list[dict], chat: bool | None = None) -> str:
    """The exact text the model reads for a prompt (chat template applied when the model has one)."""
    check_prompt(prompt)
    if uses_chat_template(tokenizer, chat):
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(prompt, str):
        return prompt
    blocks = []  # no chat template: lay the turns out as build_prompt does, each answer after its query
    for message in prompt:
        if message["role"] == "assistant" and blocks:
            blocks[-1] = f"{blocks[-1]} {message['content']}"
        else:
            blocks.append(message["content"])
    return SHOT_SEPARATOR.join(blocks)


def check_prompt(prompt, argument: str = "prompt") -> None:
    """Refuse a prompt that is neither text nor a list of chat messages, naming `argument`."""
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list) or not all(isinstance(m, Mapping) and "role" in m and "content" in m
                                               for m in prompt):
        raise TypeError(f"{argument} must be a string or a list of chat messages "
                        f"({{'role': ..., 'content': ...}}), not {type(prompt).__name__}")


def count_tokens(tokenizer, prompt: str | list[dict], chat: bool | None = None) -> int:
    """Tokens the model reads for this prompt, special tokens included."""
    chat_on = uses_chat_template(tokenizer, chat)
    text = model_input(tokenizer, prompt, chat)
    return len(tokenizer(text, add_special_tokens=not chat_on)["input_ids"])


def context_window(tokenizer, model=None) -> int:
    """The model's context window in tokens (position limit of the model, else the tokenizer's max length)."""
    limits = []
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    if getattr(config, "is_encoder_decoder", False):
        limits = []  # T5's relative positions have no hard limit; it was trained on 512-token inputs
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 10**7:
        limits.append(tok_max)
    if not limits:
        raise ValueError(f"cannot tell the context window: neither the model's config nor the tokenizer "
                         f"({type(tokenizer).__name__}) gives a length limit; pass max_tokens explicitly")
    return min(limits)


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt that fits, with its accounting: tokens used, the limit, examples kept and dropped."""

    prompt: str | list[dict]
    tokens: int
    limit: int
    n_examples: int
    n_dropped: int


def fit_prompt(tokenizer, dialogue: str, examples: Sequence = (), template: str | Template = "instruction", *,
               max_tokens: int, reserve: int = 0, style: str = "text", on_overflow: str = "drop") -> FittedPrompt:
    """Build the prompt and make it fit in `max_tokens - reserve` tokens.

    Rule when it does not fit: on_overflow="drop" removes examples from the end, one at a time,
    until it fits; "error" raises ContextWindowError. If even the zero-shot prompt is too long,
    ContextWindowError names the dialogue's size: the text is never truncated silently.
    """
    if style not in {"text", "chat"}:
        raise ValueError(f"style={style!r} must be 'text' or 'chat'")
    if on_overflow not in {"drop", "error"}:
        raise ValueError(f"on_overflow={on_overflow!r} must be 'drop' or 'error'")
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_tokens={max_tokens!r} must be a positive number of tokens")
    if not isinstance(reserve, int) or not 0 <= reserve < max_tokens:
        raise ValueError(f"reserve={reserve!r} must be between 0 and max_tokens={max_tokens}")
    if style == "chat" and not uses_chat_template(tokenizer):
        raise ValueError("style='chat' needs a tokenizer with a chat template; use style='text' for this model")
    build = build_chat if style == "chat" else build_prompt
    limit = max_tokens - reserve
    kept = list(examples)
    while True:
        prompt = build(dialogue, kept, template)
        tokens = count_tokens(tokenizer, prompt)
        if tokens <= limit:
            return FittedPrompt(prompt, tokens, limit, len(kept), len(examples) - len(kept))
        if not kept:
            raise ContextWindowError(
                f"dialogue needs {tokens} tokens with its template, over the limit of {limit}"
                f" ({max_tokens} window - {reserve} reserved for the answer); shorten it or raise max_tokens")
        if on_overflow == "error":
            raise ContextWindowError(
                f"prompt with {len(kept)} example(s) needs {tokens} tokens, over the limit of {limit};"
                " use fewer or shorter examples, or on_overflow='drop'")
        kept.pop()


def select_examples(pool: Sequence[Mapping], k: int, seed: int = 0, exclude_ids: Sequence[str] = (),
                    max_chars: int | None = None) -> list[dict]:
    """Pick k worked examples from a pool (a train split), seeded; optionally only short ones."""
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k={k!r} must be a non-negative number of examples")
    if isinstance(pool, (str, bytes, Mapping)) or not hasattr(pool, "__iter__"):
        raise TypeError(f"pool must be a list of dialogue rows or a dataset split, not {type(pool).__name__}")
    rows = list(pool)
    for i, ex in enumerate(rows):
        if not isinstance(ex, Mapping) or "dialogue" not in ex:
            raise ValueError(f"pool[{i}] must be a dialogue row (a dict with 'dialogue' and 'summary'), got "
                             f"{type(ex).__name__}" + (f" with keys {sorted(ex)}" if isinstance(ex, Mapping) else ""))
    excluded = set(exclude_ids)
    candidates = [dict(ex) for ex in rows if ex.get("id") not in excluded
                  and (max_chars is None or len(ex["dialogue"]) <= max_chars)]
    if k > len(candidates):
        raise ValueError(f"k={k} examples asked for but only {len(candidates)} qualify in the pool")
    return random.Random(seed).sample(candidates, k)
