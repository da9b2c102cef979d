"""Tests for labhelpers.generate: batched generation returns each prompt's new text, in input order."""

from __future__ import annotations


import pytest
import torch

from labhelpers.generate import check_generation_config, generate_texts, make_generation_config
from labhelpers.models import model_family
from labhelpers.prompts import build_chat, build_prompt, count_tokens, model_input

from stirring import stirred

GREEDY = dict(max_new_tokens=10)


@pytest.fixture(scope="module")
def prompts(tiny_dialogues) -> list[str]:
    """Five prompts of clearly different lengths, deliberately not in length order."""
    rows = tiny_dialogues["test"]
    cuts = [300, 60, 700, 25, 150]
    return [build_prompt(rows[i]["dialogue"][:cut].strip()) for i, cut in enumerate(cuts)]


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return stirred(tiny_llama[0]), tiny_llama[1]


@pytest.fixture(scope="module")
def t5(tiny_t5):
    return stirred(tiny_t5[0]), tiny_t5[1]


@pytest.fixture(params=["llama", "t5"])
def pair(request):
    return request.getfixturevalue(request.param)


def _one_at_a_time(model, tok, prompts, config) -> list[str]:
    """Each prompt alone through model.generate, decoding only the tokens after the prompt."""
    causal = model_family(model) == "causal"
    texts = []
    for prompt in prompts:
        text = model_input(tok, prompt) if causal else prompt
        enc = tok(text, return_tensors="pt", add_special_tokens=not causal)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        new = out[0, enc["input_ids"].shape[1]:] if causal else out[0]  # T5's output holds no prompt
        texts.append(tok.decode(new, skip_special_tokens=True).strip())
    return texts


def test_prompts_need_reordering(prompts, tiny_llama, tiny_t5):
    for _, tok in (tiny_llama, tiny_t5):
        lengths = [count_tokens(tok, p) for p in prompts]
        assert len(set(lengths)) == len(lengths)
        assert lengths != sorted(lengths, reverse=True)  # so batching by length really reorders them


def test_batched_output_matches_one_at_a_time_in_input_order(pair, prompts):
    model, tok = pair
    config = make_generation_config(**GREEDY)
    batched = generate_texts(model, tok, prompts, config, batch_size=2, progress=False)
    alone = _one_at_a_time(model, tok, prompts, config)
    assert all(alone) and len(set(alone)) == len(alone)  # distinct texts: a mix-up would show
    assert batched == alone


@pytest.mark.parametrize("policy, asked, expected", [(True, None, False), (False, None, False), (True, True, True),
                                                     (False, True, True)])
def test_generation_is_fp32_unless_bf16_is_asked_for(tiny_llama, prompts, monkeypatch, policy, asked, expected):
    """Training follows the CPU's bf16 policy; generation does not (quality, batch invariance) unless asked."""
    from labhelpers import device

    monkeypatch.setattr(device, "_bf16_status", "ok")
    monkeypatch.setattr(device, "cpu_mixed_precision", lambda: policy)
    model, tok = tiny_llama
    seen = []
    hook = model.model.layers[0].self_attn.q_proj.register_forward_hook(
        lambda module, args, output: seen.append((torch.is_autocast_enabled("cpu"), output.dtype)))
    try:
        texts = generate_texts(model, tok, prompts[:2], make_generation_config(**GREEDY), progress=False,
                               **({} if asked is None else {"mixed_precision": asked}))
    finally:
        hook.remove()
    assert len(texts) == 2 and seen  # (random weights: a text may be empty)
    assert set(seen) == {(expected, torch.bfloat16 if expected else torch.float32)}
    assert next(model.parameters()).dtype == torch.float32  # the weights stay fp32 either way


def test_generation_on_the_cpu_multiplies_by_packed_weights_unless_autocast(tiny_llama, prompts, monkeypatch):
    from labhelpers import device

    model, tok = tiny_llama
    packed, real = [], device._packed_forward
    monkeypatch.setattr(device, "_packed_forward", lambda layer: packed.append(layer) or real(layer))
    texts = generate_texts(model, tok, prompts, make_generation_config(**GREEDY), batch_size=2, progress=False)
    assert len(packed) == sum(type(m) is torch.nn.Linear for m in model.modules()) > 0
    assert not any("forward" in vars(m) for m in model.modules())
    monkeypatch.setenv(device.CPU_PACKED_ENV, "0")  # the ordinary layers: the same text
    assert generate_texts(model, tok, prompts, make_generation_config(**GREEDY), batch_size=2,
                          progress=False) == texts
    assert len(packed) == sum(type(m) is torch.nn.Linear for m in model.modules())


def test_prompt_is_not_echoed(llama, prompts):
    model, tok = llama
    out = generate_texts(model, tok, prompts[:2], make_generation_config(**GREEDY), progress=False)
    for prompt, text in zip(prompts, out):
        assert prompt[:40] not in text
        assert "<|im_start|>" not in text and "assistant" not in text


def test_batch_size_does_not_change_greedy_output(pair, prompts):
    model, tok = pair
    config = make_generation_config(**GREEDY)
    one = generate_texts(model, tok, prompts, config, batch_size=1, progress=False)
    four = generate_texts(model, tok, prompts, config, batch_size=4, progress=False)
    assert len(set(one)) == len(one)
    assert one == four


def test_chat_messages_and_text_give_the_same_input(llama, tiny_dialogues):
    model, tok = llama
    dialogue = tiny_dialogues["test"][0]["dialogue"][:200]
    config = make_generation_config(**GREEDY)
    as_text = generate_texts(model, tok, [build_prompt(dialogue)], config, progress=False)
    as_chat = generate_texts(model, tok, [build_chat(dialogue)], config, progress=False)
    assert as_text == as_chat and as_text[0]


def test_sampling_repeats_with_a_seed_and_varies_across_seeds(tiny_llama, prompts):
    model, tok = tiny_llama  # the fresh random model: near-uniform next-token distributions
    config = make_generation_config(max_new_tokens=24, do_sample=True, top_k=0, temperature=1.0)
    first = generate_texts(model, tok, prompts[:2], config, seed=1, progress=False)
    again = generate_texts(model, tok, prompts[:2], config, seed=1, progress=False)
    other = generate_texts(model, tok, prompts[:2], config, seed=2, progress=False)
    assert all(first)
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]


def test_stop_strings_cut_the_text(llama, prompts):
    model, tok = llama
    config = make_generation_config(max_new_tokens=16)
    full = generate_texts(model, tok, prompts[:2], config, progress=False)
    text = full[0]
    assert len(text) >= 4
    # two characters from the second half, no blanks in them (so where the cut falls is unambiguous)
    stop = next(text[i:i + 2] for i in range(len(text) // 2, len(text) - 1)
                if not any(c.isspace() for c in text[i:i + 2]))
    cut = generate_texts(model, tok, prompts[:2], config, stop_strings=["never-generated-§", stop], progress=False)
    first = full[0].find(stop)
    assert cut[0] == full[0][:first].strip()
    assert stop not in cut[0] and len(cut[0]) < len(full[0])
    at = full[1].find(stop)
    assert cut[1] == (full[1] if at == -1 else full[1][:at].strip())


@pytest.mark.parametrize("settings, argument", [
    ({"do_sample": True, "temperature": 0.0}, "temperature"),
    ({"do_sample": True, "temperature": -0.5}, "temperature"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -4}, "max_new_tokens"),
    ({"do_sample": True, "top_p": 0.0}, "top_p"),
    ({"do_sample": True, "top_p": 1.5}, "top_p"),
    ({"num_beams": 0}, "num_beams"),
    ({"max_new_tokens": 5, "min_new_tokens": 6}, "min_new_tokens"),
])
def test_invalid_settings_name_the_argument(settings, argument):
    with pytest.raises(ValueError, match=argument):
        make_generation_config(**settings)


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("top_p", 1.01), ("max_new_tokens", 0),
                                          ("num_beams", 0), ("top_k", -1)])
def test_generate_checks_a_config_changed_after_it_was_made(tiny_t5, field, value, monkeypatch):
    model, tok = tiny_t5
    config = make_generation_config(max_new_tokens=4, do_sample=True)
    setattr(config, field, value)
    with pytest.raises(ValueError, match=f"{field}="):
        check_generation_config(config)
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("generated with a bad config"))
    with pytest.raises(ValueError, match=f"{field}="):
        generate_texts(model, tok, ["#Person1#: Hi."], config, progress=False)


def test_valid_sampling_config_defaults():
    config = make_generation_config(max_new_tokens=3, do_sample=True)
    assert (config.top_k, config.top_p, config.temperature) == (0, 1.0, 1.0)  # plain sampling, nothing cut
    assert not make_generation_config(max_new_tokens=3).do_sample


def test_callers_config_is_not_changed(tiny_t5):
    model, tok = tiny_t5
    config = make_generation_config(max_new_tokens=2)
    assert config.pad_token_id is None
    generate_texts(model, tok, ["#Person1#: Hi."], config, progress=False)
    assert config.pad_token_id is None


@pytest.mark.parametrize("prompts", ["#Person1#: Hi.", {"role": "user", "content": "Hi"}])
def test_a_bare_prompt_is_a_type_error(tiny_llama, prompts):
    with pytest.raises(TypeError, match="list"):
        generate_texts(*tiny_llama, prompts, progress=False)


def test_no_prompts_no_texts(tiny_llama):
    assert generate_texts(*tiny_llama, [], progress=False) == []


def test_bad_batch_size_and_empty_prompt(tiny_t5):
    with pytest.raises(ValueError, match="batch_size"):
        generate_texts(*tiny_t5, ["Hi"], batch_size=0, progress=False)
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        generate_texts(*tiny_t5, ["Hi", "   "], progress=False)


def test_playground_shows_a_first_result_and_regenerates_on_demand(llama, tiny_dialogues, capsys):
    from labhelpers.generate import playground

    rows = list(tiny_dialogues["test"])[:3]
    built = []

    def build(row):
        built.append(row["id"])
        return build_prompt(row["dialogue"])

    panel, run = playground(*llama, rows, build, max_new_tokens=4)
    first = capsys.readouterr().out
    assert "reference: " + rows[0]["summary"] in first and "ROUGE-L" in first
    assert built == [rows[0]["id"]]
    slider = panel.children[0].children[0]  # the dialogue picker
    slider.value = 2
    report = run()
    assert built[-1] == rows[2]["id"] and rows[2]["summary"] in report
    out = panel.children[-1]
    assert out.outputs[0]["text"] == report  # the widget shows what the last run produced


def test_common_prefix_length_leaves_every_prompt_a_token_of_its_own():
    from labhelpers.generate import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter one keeps its last token
    assert common_prefix_length([[7, 1], [8, 1]]) == 0
    assert common_prefix_length([[1, 2, 3]]) == 2


@pytest.fixture(scope="module")
def few_shot_prompts(tiny_dialogues) -> list[str]:
    """Two worked examples, then dialogues of clearly different lengths: a long common start."""
    rows = tiny_dialogues["test"]
    shots = list(tiny_dialogues["train"])[:2]
    cuts = [200, 40, 500, 90, 300]
    return [build_prompt(rows[i]["dialogue"][:cut].strip(), examples=shots) for i, cut in enumerate(cuts)]


def _spy_on_prefixes(monkeypatch) -> list[int]:
    from labhelpers import generate

    lengths, real = [], generate._prefix_cache

    def spy(model, prefix, device, **learnt):
        lengths.append(len(prefix))
        return real(model, prefix, device, **learnt)

    monkeypatch.setattr(generate, "_prefix_cache", spy)
    return lengths


@pytest.mark.parametrize("settings", [GREEDY, dict(max_new_tokens=10, do_sample=True, temperature=1.0)],
                         ids=["greedy", "sampled"])
def test_a_shared_start_is_read_once_and_changes_no_output(llama, few_shot_prompts, monkeypatch, settings):
    from labhelpers.generate import SHARED_PREFIX_MIN_TOKENS, common_prefix_length

    model, tok = llama
    config = make_generation_config(**settings)
    ids = [tok(model_input(tok, p), add_special_tokens=False)["input_ids"] for p in few_shot_prompts]
    common = common_prefix_length(ids)
    assert common >= SHARED_PREFIX_MIN_TOKENS and min(map(len, ids)) > common + 5
    lengths = _spy_on_prefixes(monkeypatch)
    shared = generate_texts(model, tok, few_shot_prompts, config, batch_size=2, seed=3, progress=False)
    assert lengths == [common]  # once for all three batches, the whole common start
    plain = generate_texts(model, tok, few_shot_prompts, config, batch_size=2, seed=3, progress=False,
                           share_prefix=False)
    assert lengths == [common]
    assert len(set(plain)) == len(plain)  # distinct texts: a mix-up between prompts would show
    assert shared == plain
    if not config.do_sample:
        assert shared == _one_at_a_time(model, tok, few_shot_prompts, config)


def test_each_batch_shares_its_own_start_when_the_prompts_share_little(llama, few_shot_prompts, monkeypatch):
    from labhelpers.generate import SHARED_PREFIX_MIN_TOKENS, common_prefix_length

    model, tok = llama
    config = make_generation_config(**GREEDY)
    # Two groups whose worked examples differ from the first word on; the longest two dialogues form one
    # group and the shortest two the other, so each length-sorted batch of two is one group.
    long_group = [few_shot_prompts[2], few_shot_prompts[4]]
    short_group = [few_shot_prompts[i].replace("Summarize", "Briefly summarise", 1) for i in (1, 3)]
    prompts = short_group[:1] + long_group + short_group[1:]
    ids = [tok(model_input(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
    everyone = common_prefix_length(ids)
    assert everyone < SHARED_PREFIX_MIN_TOKENS
    lengths = _spy_on_prefixes(monkeypatch)
    shared = generate_texts(model, tok, prompts, config, batch_size=2, progress=False)
    assert sorted(lengths) == sorted([common_prefix_length(ids[1:3]), common_prefix_length([ids[0], ids[3]])])
    assert min(lengths) >= SHARED_PREFIX_MIN_TOKENS
    plain = generate_texts(model, tok, prompts, config, batch_size=2, progress=False, share_prefix=False)
    assert shared == plain and len(set(plain)) == len(plain)


@pytest.mark.parametrize("share", [True, False], ids=["shared start", "own start"])
def test_a_prompt_tuned_model_generates_in_batches_what_it_generates_alone(llama, few_shot_prompts, monkeypatch,
                                                                           share):
    """The learnt tokens start a cache; padding goes after them, so no prompt's positions depend on its batch."""
    from labhelpers.adapters import add_adapter, prompt_tuning_config
    from labhelpers.generate import common_prefix_length

    base, tok = llama
    model = add_adapter(base, prompt_tuning_config(base, tok, n_virtual_tokens=4)).eval()
    with torch.no_grad():  # learnt embeddings unlike any word's, so that where they sit shows in the text
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    config = make_generation_config(**GREEDY)
    prompts = [p.replace("Summarize", "Sum up", 1) if i % 2 else p for i, p in enumerate(few_shot_prompts)] \
        if not share else few_shot_prompts
    ids = [tok(model_input(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
    lengths = _spy_on_prefixes(monkeypatch)
    texts = generate_texts(model, tok, prompts, config, batch_size=2, progress=False, share_prefix=share)
    assert lengths == [common_prefix_length(ids) if share else 0]  # computed once, with the learnt tokens
    alone = _one_at_a_time(model, tok, prompts, config)  # PEFT's generate, one unpadded prompt at a time
    assert len(set(alone)) == len(alone)
    assert alone != _one_at_a_time(base, tok, prompts, config)  # the learnt tokens change the text
    assert texts == alone


def test_a_lora_model_shares_a_start_with_its_adapter_on(llama, few_shot_prompts, monkeypatch):
    from labhelpers.adapters import add_adapter, lora_config

    base, tok = llama
    model = add_adapter(base, lora_config(base, r=4)).eval()
    with torch.no_grad():  # a trained-looking adapter: lora_B starts at zero, which would change nothing
        generator = torch.Generator().manual_seed(0)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    lengths = _spy_on_prefixes(monkeypatch)
    config = make_generation_config(**GREEDY)
    texts = generate_texts(model, tok, few_shot_prompts, config, batch_size=2, progress=False)
    assert len(lengths) == 1
    assert texts == _one_at_a_time(model, tok, few_shot_prompts, config)


@pytest.mark.parametrize("settings", [dict(num_beams=2), dict(cache_implementation="static")], ids=["beams", "static"])
def test_beams_and_a_chosen_cache_read_every_prompt_in_full(llama, few_shot_prompts, monkeypatch, settings):
    model, tok = llama
    lengths = _spy_on_prefixes(monkeypatch)
    texts = generate_texts(model, tok, few_shot_prompts[:2], make_generation_config(max_new_tokens=6, **settings),
                           progress=False)
    assert lengths == [] and len(texts) == 2
