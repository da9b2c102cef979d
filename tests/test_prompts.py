"""Tests for labhelpers.prompts: templates, zero/one/few-shot builders, token counts, the context budget."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labhelpers.profiles import get_profile
from labhelpers.prompts import (SHOT_SEPARATOR, TEMPLATES, ContextWindowError, Template, build_chat, build_prompt,
                                context_window, count_tokens, fit_prompt, get_template, model_input,
                                select_examples)

DIALOGUE = "#Person1#: Is the library open on Sunday?\n#Person2#: Only in the afternoon, from one to five."
EXAMPLES = [
    {"id": "ex-a", "dialogue": "#Person1#: Can I pay by card?\n#Person2#: Yes, any card.",
     "summary": "Person2 says any card is accepted."},
    {"id": "ex-b", "dialogue": "#Person1#: When does the train leave?\n#Person2#: At ten past nine.",
     "summary": "The train leaves at 9:10."},
    {"id": "ex-c", "dialogue": "#Person1#: Is this seat free?\n#Person2#: Sorry, my friend is sitting there.",
     "summary": "The seat is taken by a friend of Person2."},
    {"id": "ex-d", "dialogue": "#Person1#: Do you sell stamps?\n#Person2#: Yes, at the counter by the door.",
     "summary": "Stamps are sold at the counter by the door."},
]


def _filled(template: Template, dialogue: str) -> str:
    return template.text.replace("{dialogue}", dialogue)


# ---------------------------------------------------------------- templates

def test_every_template_has_a_dialogue_slot_and_fills_it():
    assert "instruction" in TEMPLATES
    for name, tpl in TEMPLATES.items():
        assert tpl.name == name
        assert "{dialogue}" in tpl.text
        rendered = tpl.render(DIALOGUE)
        assert DIALOGUE in rendered and "{dialogue}" not in rendered


def test_template_without_slot_is_refused():
    with pytest.raises(ValueError, match="template='mine'"):
        Template("mine", "Summarize this.")
    with pytest.raises(ValueError, match="template="):
        get_template("Summarize this.")  # neither a known name nor a text with a slot
    with pytest.raises(TypeError, match="template"):
        get_template(42)


def test_custom_template_text_is_used():
    tpl = get_template("Conversation:\n{dialogue}\nGist:")
    assert tpl.render("X") == "Conversation:\nX\nGist:"
    assert get_template(tpl) is tpl
    assert get_template("instruction") is TEMPLATES["instruction"]


# ---------------------------------------------------------------- zero / one / few shot

@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_zero_shot_is_the_template_filled(template):
    assert build_prompt(DIALOGUE, template=template) == _filled(TEMPLATES[template], DIALOGUE)


@pytest.mark.parametrize("k", [1, 3])
def test_shots_come_before_the_query_each_followed_by_its_summary(k):
    tpl = TEMPLATES["instruction"]
    prompt = build_prompt(DIALOGUE, EXAMPLES[:k], "instruction")
    parts = prompt.split(SHOT_SEPARATOR)
    assert len(parts) == k + 1
    for part, ex in zip(parts, EXAMPLES[:k]):
        assert part == f"{_filled(tpl, ex['dialogue'])} {ex['summary']}"
    assert parts[-1] == _filled(tpl, DIALOGUE)


def test_examples_may_be_pairs():
    pairs = [(ex["dialogue"], ex["summary"]) for ex in EXAMPLES[:2]]
    assert build_prompt(DIALOGUE, pairs) == build_prompt(DIALOGUE, EXAMPLES[:2])


def test_chat_alternates_user_and_assistant_and_ends_with_the_query():
    messages = build_chat(DIALOGUE, EXAMPLES[:3], "what_was_going_on")
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    tpl = TEMPLATES["what_was_going_on"]
    for i, ex in enumerate(EXAMPLES[:3]):
        assert messages[2 * i]["content"] == _filled(tpl, ex["dialogue"])
        assert messages[2 * i + 1]["content"] == ex["summary"]
    assert messages[-1]["content"] == _filled(tpl, DIALOGUE)
    assert build_chat(DIALOGUE) == [{"role": "user", "content": _filled(TEMPLATES["instruction"], DIALOGUE)}]


@pytest.mark.parametrize("builder", [build_prompt, build_chat])
@pytest.mark.parametrize("empty", ["", "   \n "])
def test_empty_dialogue_is_refused(builder, empty):
    with pytest.raises(ValueError, match="dialogue"):
        builder(empty)
    with pytest.raises(ValueError, match=r"examples\[1\]\.summary"):
        builder(DIALOGUE, [EXAMPLES[0], {"dialogue": "#Person1#: Hi.", "summary": empty}])


def test_non_string_dialogue_is_a_type_error():
    with pytest.raises(TypeError, match="dialogue"):
        build_prompt(None)


# ---------------------------------------------------------------- what the model reads, in tokens

def test_model_input_applies_chat_template_for_llama_only(tiny_llama, tiny_t5):
    _, llama_tok = tiny_llama
    _, t5_tok = tiny_t5
    prompt = build_prompt(DIALOGUE)
    text = model_input(llama_tok, prompt)
    assert text == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"  # ChatML, as SmolLM2 uses
    assert model_input(t5_tok, prompt) == prompt
    assert model_input(llama_tok, prompt, chat=False) == prompt
    with pytest.raises(ValueError, match="chat template"):
        model_input(t5_tok, prompt, chat=True)


def test_model_input_of_a_chat_keeps_every_turn(tiny_llama):
    _, tok = tiny_llama
    messages = build_chat(DIALOGUE, EXAMPLES[:2])
    text = model_input(tok, messages)
    assert text.count("<|im_start|>user") == 3 and text.count("<|im_start|>assistant") == 3
    positions = [text.index(m["content"]) for m in messages]
    assert positions == sorted(positions)


def test_count_tokens_is_what_the_tokenizer_makes_of_model_input(tiny_llama, tiny_t5):
    _, llama_tok = tiny_llama
    _, t5_tok = tiny_t5
    prompt = build_prompt(DIALOGUE, EXAMPLES[:2])
    text = model_input(llama_tok, prompt)
    assert count_tokens(llama_tok, prompt) == len(llama_tok(text, add_special_tokens=False)["input_ids"])
    templated = llama_tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True,
                                              add_generation_prompt=True)
    assert count_tokens(llama_tok, prompt) == len(templated["input_ids"])
    ids = t5_tok(prompt)["input_ids"]
    assert ids[-1] == t5_tok.eos_token_id  # T5 reads the closing </s> too, and it is counted
    assert count_tokens(t5_tok, prompt) == len(ids)
    assert count_tokens(t5_tok, prompt) == len(t5_tok(prompt, add_special_tokens=False)["input_ids"]) + 1


def test_context_window_of_the_tiny_models(tiny_llama, tiny_t5):
    llama, llama_tok = tiny_llama
    t5, t5_tok = tiny_t5
    assert context_window(llama_tok, llama) == min(llama.config.max_position_embeddings, llama_tok.model_max_length)
    assert context_window(t5_tok, t5) == t5_tok.model_max_length
    for tok, model in (tiny_llama[::-1], tiny_t5[::-1]):
        assert get_profile("tiny").prompt_token_limit <= context_window(tok, model)


def test_context_window_rules():
    tok = SimpleNamespace(model_max_length=1000)
    causal = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=256, is_encoder_decoder=False))
    assert context_window(tok, causal) == 256  # the smaller of model and tokenizer
    t5_like = SimpleNamespace(config=SimpleNamespace(n_positions=256, is_encoder_decoder=True))
    assert context_window(tok, t5_like) == 1000  # relative positions: the tokenizer's limit
    unlimited = SimpleNamespace(model_max_length=int(1e30))  # transformers' "no limit" value
    with pytest.raises(ValueError, match="max_tokens"):
        context_window(unlimited)


# ---------------------------------------------------------------- fitting a prompt in the window

def _sizes(tok, examples) -> list[int]:
    """Token count of the prompt with the first k examples, for k = 0 .. len(examples)."""
    return [count_tokens(tok, build_prompt(DIALOGUE, examples[:k])) for k in range(len(examples) + 1)]


@pytest.fixture(params=["llama", "t5"])
def tok(request, tiny_llama, tiny_t5):
    return (tiny_llama if request.param == "llama" else tiny_t5)[1]


def test_fit_prompt_keeps_everything_when_it_fits(tok):
    fitted = fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=1000, reserve=50)
    assert fitted.prompt == build_prompt(DIALOGUE, EXAMPLES)
    assert (fitted.n_examples, fitted.n_dropped, fitted.limit) == (4, 0, 950)
    assert fitted.tokens == count_tokens(tok, fitted.prompt)


def test_fit_prompt_drops_examples_from_the_end(tok):
    sizes = _sizes(tok, EXAMPLES)
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    reserve = 10
    fitted = fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=sizes[2] + reserve, reserve=reserve)
    assert (fitted.n_examples, fitted.n_dropped) == (2, 2)
    assert fitted.prompt == build_prompt(DIALOGUE, EXAMPLES[:2])
    assert fitted.tokens == sizes[2] <= fitted.limit
    for ex in EXAMPLES[:2]:
        assert ex["summary"] in fitted.prompt
    for ex in EXAMPLES[2:]:
        assert ex["summary"] not in fitted.prompt
    # one token less and the second example has to go too
    fewer = fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=sizes[2] + reserve - 1, reserve=reserve)
    assert fewer.prompt == build_prompt(DIALOGUE, EXAMPLES[:1])


def test_fit_prompt_in_chat_style(tiny_llama):
    _, tok = tiny_llama
    full = count_tokens(tok, build_chat(DIALOGUE, EXAMPLES))
    fitted = fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=full - 1, style="chat")
    assert fitted.prompt == build_chat(DIALOGUE, EXAMPLES[:3])
    assert fitted.tokens == count_tokens(tok, fitted.prompt) <= full - 1


def test_fit_prompt_on_overflow_error(tok):
    sizes = _sizes(tok, EXAMPLES)
    with pytest.raises(ContextWindowError, match="4 example"):
        fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=sizes[-1] - 1, on_overflow="error")
    assert issubclass(ContextWindowError, ValueError)
    assert fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=sizes[-1], on_overflow="error").n_examples == 4


def test_dialogue_too_long_alone_is_an_error_never_truncated(tok):
    alone = _sizes(tok, [])[0]
    for reserve in (0, 7):
        with pytest.raises(ContextWindowError) as info:
            fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=alone - 1 + reserve, reserve=reserve)
        message = str(info.value)
        assert f"needs {alone} tokens" in message
        assert f"limit of {alone - 1}" in message
        assert f"{reserve} reserved" in message
    exact = fit_prompt(tok, DIALOGUE, EXAMPLES, max_tokens=alone + 7, reserve=7)
    assert exact.tokens == exact.limit == alone and exact.prompt == build_prompt(DIALOGUE)


@pytest.mark.parametrize("kwargs, argument", [
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": -5}, "max_tokens"), ({"max_tokens": 100.0}, "max_tokens"),
    ({"max_tokens": "100"}, "max_tokens"), ({"max_tokens": 100, "reserve": -1}, "reserve"),
    ({"max_tokens": 100, "reserve": 100}, "reserve"), ({"max_tokens": 100, "reserve": 2.5}, "reserve"),
    ({"max_tokens": 100, "style": "xml"}, "style"), ({"max_tokens": 100, "on_overflow": "truncate"}, "on_overflow"),
])
def test_fit_prompt_validates_its_arguments(tiny_llama, kwargs, argument):
    with pytest.raises(ValueError, match=f"{argument}="):
        fit_prompt(tiny_llama[1], DIALOGUE, EXAMPLES, **kwargs)


# ---------------------------------------------------------------- choosing examples

def test_select_examples_is_seeded(tiny_dialogues):
    pool = tiny_dialogues["train"]
    first = select_examples(pool, 3, seed=5)
    assert first == select_examples(pool, 3, seed=5)
    assert [ex["id"] for ex in first] != [ex["id"] for ex in select_examples(pool, 3, seed=6)]
    pool_ids = set(pool["id"])
    assert len({ex["id"] for ex in first}) == 3 and {ex["id"] for ex in first} <= pool_ids
    assert select_examples(pool, 0) == []


def test_select_examples_respects_exclude_ids_and_max_chars():
    by_length = sorted(EXAMPLES, key=lambda ex: len(ex["dialogue"]))
    assert len({len(ex["dialogue"]) for ex in EXAMPLES}) == len(EXAMPLES)
    shortest_two = {ex["id"] for ex in by_length[:2]}
    for seed in range(5):
        picked = select_examples(EXAMPLES, 3, seed=seed, exclude_ids=["ex-a"])
        assert {ex["id"] for ex in picked} == {"ex-b", "ex-c", "ex-d"}
        short = select_examples(EXAMPLES, 2, seed=seed, max_chars=len(by_length[1]["dialogue"]))
        assert {ex["id"] for ex in short} == shortest_two
    with pytest.raises(ValueError, match="k=2"):
        select_examples(EXAMPLES, 2, max_chars=len(by_length[0]["dialogue"]))  # one qualifies, two asked for


def test_select_examples_bad_k():
    with pytest.raises(ValueError, match="k=5"):
        select_examples(EXAMPLES, 5)
    with pytest.raises(ValueError, match="k=-1"):
        select_examples(EXAMPLES, -1)
    with pytest.raises(ValueError, match="k=4"):
        select_examples(EXAMPLES, 4, exclude_ids=["ex-b"])


def test_chat_style_needs_a_chat_template(tiny_t5, tiny_dialogues):
    from labhelpers.prompts import fit_prompt

    _, tok = tiny_t5
    with pytest.raises(ValueError, match="style='chat'"):
        fit_prompt(tok, tiny_dialogues["test"][0]["dialogue"], max_tokens=1000, style="chat")
