"""Tests for labhelpers.adapters (LoRA, prompt tuning, QLoRA checks) and fine_tune(adapter=...).

Everything runs on the tiny profile on a CPU. LoRA starts as a no-op (its B matrices are zero), so
tests that compare logits first give the adapter random values: a round trip of a no-op proves nothing.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from labhelpers.adapters import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_size_bytes, add_adapter,
                                 default_target_modules, load_adapter, load_model_4bit, lora_config, merge_adapter,
                                 model_size_bytes, prompt_tuning_config, qlora_available, save_adapter,
                                 trainable_summary)
from labhelpers.models import load_model, model_family
from labhelpers.train import FINAL_DIR, RUN_FILE, TrainConfig, fine_tune, load_fine_tuned

FAST = dict(batch_size=4, learning_rate=1e-3, log_every=1)
ATTENTION = {"llama": {"q_proj", "k_proj", "v_proj", "o_proj"}, "t5": {"q", "k", "v", "o"}}


@pytest.fixture(scope="module")
def train_rows(tiny_dialogues) -> list[dict]:
    return [dict(r) for r in tiny_dialogues["train"].select(range(16))]


@pytest.fixture(params=["tiny_llama", "tiny_t5"])
def tiny(request):
    """Each tiny model in turn: (model, tokenizer)."""
    return request.getfixturevalue(request.param)


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def _unchanged(model, before: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


def _has_lora(model) -> bool:
    return any("lora_" in name for name, _ in model.named_modules())


def _randomised(peft_model, seed: int = 0):
    """Give every LoRA matrix random values, so the adapter really changes the model's output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return peft_model.eval()


def _logits(model, tok, texts=("#Person1#: Shall we meet at noon?", "#Person2#: The train was late again.")):
    batch = tok(list(texts), return_tensors="pt", padding=True)
    if model_family(model) == "seq2seq":
        batch["decoder_input_ids"] = torch.zeros((len(texts), 3), dtype=torch.long)
    with torch.no_grad():
        return model(**batch).logits


def _base_weights_of(peft_model) -> dict[str, torch.Tensor]:
    """The wrapped base model's own weights under their original names (LoRA keeps them in `base_layer`)."""
    inner = peft_model.get_base_model().state_dict()
    return {k.replace(".base_layer", ""): v for k, v in inner.items() if "lora_" not in k}


# ---------------------------------------------------------------- configs

def test_lora_config_chooses_attention_projections_per_architecture(tiny_llama, tiny_t5):
    from peft import TaskType

    for (model, _), kind, task in ((tiny_llama, "llama", TaskType.CAUSAL_LM), (tiny_t5, "t5", TaskType.SEQ_2_SEQ_LM)):
        config = lora_config(model)
        assert set(config.target_modules) == ATTENTION[kind] == set(default_target_modules(model))
        assert config.task_type == task
        assert config.r == 8 and config.lora_alpha == 16 and config.lora_dropout == 0.0
    custom = lora_config(tiny_llama[0], r=4, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    assert set(custom.target_modules) == {"q_proj", "v_proj"}
    assert (custom.r, custom.lora_alpha, custom.lora_dropout) == (4, 4, 0.0)


def test_lora_config_is_the_lora_config_lab_07_writes_out(tiny_llama, tiny_t5):
    """Labs 09 and 10 call lora_config; lab 07 writes PEFT's LoraConfig by hand: both must train the same adapter."""
    from peft import LoraConfig, TaskType

    for (model, _), kind, task in ((tiny_llama, "llama", TaskType.CAUSAL_LM), (tiny_t5, "t5", TaskType.SEQ_2_SEQ_LM)):
        for r in (4, 16):
            written = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=sorted(ATTENTION[kind]),
                                 task_type=task)
            assert lora_config(model, r=r).to_dict() == written.to_dict(), (kind, r)


class _Mystery(torch.nn.Module):
    """An architecture labhelpers has no table entry for: attention and MLP Linear layers."""

    def __init__(self, attention: bool = True):
        from types import SimpleNamespace

        super().__init__()
        self.config = SimpleNamespace(model_type="mystery", is_encoder_decoder=False)
        self.block = torch.nn.Module()
        if attention:
            self.block.attention = torch.nn.Module()
            self.block.attention.query = torch.nn.Linear(4, 4)
            self.block.attention.value = torch.nn.Linear(4, 4)
        self.block.mlp = torch.nn.Module()
        self.block.mlp.fc = torch.nn.Linear(4, 8)


def test_gpt2_gets_its_conv1d_attention_layers():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32,
                                       bos_token_id=0, eos_token_id=0))
    config = lora_config(model, r=2)
    assert set(config.target_modules) == {"c_attn", "c_proj"} and config.fan_in_fan_out  # GPT-2 stores W transposed
    adapted = add_adapter(model, config)
    # c_attn 16 -> 48, and c_proj twice (attention 16 -> 16, MLP 64 -> 16): r * (in + out) each
    assert trainable_summary(adapted)["trainable"] == 2 * ((16 + 48) + (16 + 16) + (64 + 16))
    assert adapted(input_ids=torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 64)


def test_unknown_architectures_get_their_attention_linears_or_a_clear_error():
    assert default_target_modules(_Mystery()) == ["query", "value"]
    assert set(lora_config(_Mystery()).target_modules) == {"query", "value"}
    with pytest.raises(ValueError, match=r"pass target_modules=.*'fc'"):
        lora_config(_Mystery(attention=False))
    assert set(lora_config(_Mystery(attention=False), target_modules=["fc"]).target_modules) == {"fc"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(r=0), "r=0"),
    (dict(r=2.5), "r=2.5"),
    (dict(r=True), "r=True"),
    (dict(alpha=-1), "alpha=-1"),
    (dict(dropout=1.0), "dropout=1.0"),
    (dict(dropout=-0.1), "dropout=-0.1"),
    (dict(target_modules=[]), "target_modules"),
])
def test_bad_lora_settings_are_refused_naming_the_setting(tiny_llama, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        lora_config(tiny_llama[0], **kwargs)


def test_unknown_target_modules_are_named_with_the_candidates(tiny_llama):
    with pytest.raises(ValueError, match=r"\['query', 'nope'\] not found in LlamaForCausalLM.*'q_proj'.*'up_proj'"):
        lora_config(tiny_llama[0], target_modules=["q_proj", "query", "nope"])
    with pytest.raises(TypeError, match="transformers model"):
        lora_config("tiny-llama")


def test_prompt_tuning_config_from_text_or_at_random(tiny_llama, tiny_t5):
    from peft import PromptTuningInit, TaskType

    model, tok = tiny_llama
    config = prompt_tuning_config(model, tok, n_virtual_tokens=12, init_text="Summarize the conversation:")
    assert config.prompt_tuning_init == PromptTuningInit.TEXT
    assert config.tokenizer_name_or_path == tok.name_or_path
    assert config.num_virtual_tokens == 12 and config.task_type == TaskType.CAUSAL_LM
    plain = prompt_tuning_config(tiny_t5[0], tiny_t5[1])
    assert plain.prompt_tuning_init == PromptTuningInit.RANDOM and plain.num_virtual_tokens == 20
    assert plain.task_type == TaskType.SEQ_2_SEQ_LM
    for bad in (0, -3, 2.0):
        with pytest.raises(ValueError, match="n_virtual_tokens"):
            prompt_tuning_config(model, tok, n_virtual_tokens=bad)
    with pytest.raises(ValueError, match="init_text"):
        prompt_tuning_config(model, tok, init_text="  ")


# ---------------------------------------------------------------- adapter models

def test_lora_trains_r_times_in_plus_out_per_targeted_linear(tiny_llama):
    base, _ = tiny_llama
    before = _weights(base)
    r = 4
    model = add_adapter(base, lora_config(base, r=r))
    targeted = [m for name, m in base.named_modules()
                if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ATTENTION["llama"]]
    assert len(targeted) == 4 * base.config.num_hidden_layers
    expected = sum(r * (m.in_features + m.out_features) for m in targeted)

    summary = trainable_summary(model)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert summary["trainable"] == expected == sum(trainable.values())
    assert all("lora_A" in n or "lora_B" in n for n in trainable)
    assert summary["total"] == trainable_summary(base)["total"] + expected
    assert summary["percent"] == pytest.approx(100 * expected / summary["total"])
    assert summary["percent"] < 5
    # the base was copied, not changed: no LoRA layers in it, every weight as it was, all of it trainable
    assert not _has_lora(base) and _unchanged(base, before)
    assert trainable_summary(base)["percent"] == 100.0
    # in_place wraps the given model itself
    import copy

    mine = copy.deepcopy(base)
    assert add_adapter(mine, lora_config(base)).get_base_model() is not mine
    assert add_adapter(mine, lora_config(base), in_place=True).get_base_model() is mine and _has_lora(mine)


def test_add_adapter_refuses_what_is_not_a_peft_config_or_already_adapted(tiny_llama):
    base, _ = tiny_llama
    with pytest.raises(TypeError, match="peft config"):
        add_adapter(base, {"r": 8})
    adapted = add_adapter(base, lora_config(base))
    with pytest.raises(ValueError, match="already has an adapter"):
        add_adapter(adapted, lora_config(base))


def test_fine_tune_refuses_a_bad_adapter_before_touching_the_output_dir(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    with pytest.raises(TypeError, match="peft config"):
        fine_tune(base, tok, train_rows[:4], tasks="topic", config=TrainConfig(steps=1, **FAST), adapter={"r": 8},
                  output_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_adapter_round_trip_gives_identical_logits(tiny, tmp_path):
    base, tok = tiny
    model = _randomised(add_adapter(base, lora_config(base)))
    expected = _logits(model, tok)
    assert not torch.allclose(expected, _logits(base, tok), atol=1e-3)  # the adapter matters

    folder = save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".md") == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    assert not list(tmp_path.glob("*.partial")) and not list(folder.glob("*.bin"))

    fresh, _ = load_model(base.config._name_or_path)  # a base loaded anew, not the one trained on
    before = _weights(fresh)
    loaded = load_adapter(fresh, folder)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert torch.allclose(_logits(loaded, tok), expected, atol=1e-6, rtol=0)
    assert not _has_lora(fresh) and _unchanged(fresh, before)  # loaded onto a copy
    # the adapter file is a small fraction of the model
    assert 0 < adapter_size_bytes(folder) < model_size_bytes(base) / 5
    assert model_size_bytes(base) == 4 * trainable_summary(base)["total"]  # fp32, tied weights once


def test_merge_gives_the_same_logits_and_no_lora_layers(tiny):
    base, tok = tiny
    model = _randomised(add_adapter(base, lora_config(base)))
    expected = _logits(model, tok)
    merged = merge_adapter(model)
    assert type(merged) is type(base)
    assert not [n for n, _ in merged.named_parameters() if "lora_" in n]
    assert set(merged.state_dict()) == set(base.state_dict())
    assert torch.allclose(_logits(merged, tok), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(_logits(merged, tok), _logits(base, tok), atol=1e-3)
    # the PeftModel is still an adapter model, with the same output
    assert _has_lora(model) and torch.equal(_logits(model, tok), expected)
    with pytest.raises(TypeError, match="PeftModel"):
        merge_adapter(base)


def test_save_adapter_refuses_to_overwrite_unless_asked(tiny_llama, tmp_path):
    base, tok = tiny_llama
    first = _randomised(add_adapter(base, lora_config(base)), seed=1)
    second = _randomised(add_adapter(base, lora_config(base)), seed=2)
    folder = save_adapter(first, tmp_path / "adapter", tokenizer=tok)
    assert (folder / "tokenizer_config.json").exists()
    saved = (folder / ADAPTER_WEIGHTS).read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_adapter(second, folder)
    assert (folder / ADAPTER_WEIGHTS).read_bytes() == saved
    save_adapter(second, folder, overwrite=True)
    assert (folder / ADAPTER_WEIGHTS).read_bytes() != saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no .partial or .old left behind
    assert torch.allclose(_logits(load_adapter(base, folder), tok), _logits(second, tok), atol=1e-6)
    with pytest.raises(TypeError, match="PeftModel"):
        save_adapter(base, tmp_path / "plain")


def test_load_adapter_names_the_missing_files(tiny_llama, tmp_path):
    base, _ = tiny_llama
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(base, tmp_path / "nowhere")
    folder = save_adapter(add_adapter(base, lora_config(base)), tmp_path / "adapter")
    (folder / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"lacks ['{ADAPTER_WEIGHTS}']")):
        load_adapter(base, folder)
    (folder / ADAPTER_CONFIG).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"['{ADAPTER_CONFIG}', '{ADAPTER_WEIGHTS}']")):
        load_adapter(base, folder)
    with pytest.raises(FileNotFoundError, match="not a saved adapter"):
        adapter_size_bytes(folder)


# ---------------------------------------------------------------- training with fine_tune

@pytest.mark.parametrize("which", ["tiny_llama", "tiny_t5"])
def test_lora_training_changes_only_the_adapter(which, request, train_rows):
    base, tok = request.getfixturevalue(which)
    before = _weights(base)
    result = fine_tune(base, tok, train_rows[:8], tasks="topic", config=TrainConfig(steps=4, **FAST),
                       adapter=lora_config(base), progress=False, live_plot=False)
    model = result.model
    assert hasattr(model, "peft_config") and not model.training
    assert result.final_loss < result.first_loss
    # every base weight inside the trained model is exactly as it was
    inner = _base_weights_of(model)
    assert inner.keys() == before.keys()
    assert all(torch.equal(inner[k], before[k]) for k in before)
    # the adapter trained: every B matrix (zero at the start) has moved, and only LoRA parameters train
    lora_b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())
    assert all(("lora_A" in n or "lora_B" in n) == p.requires_grad for n, p in model.named_parameters())
    # the base itself was not touched at all
    assert not _has_lora(base) and _unchanged(base, before)


def test_prompt_tuning_trains_only_the_prompt_embeddings(tiny_llama, train_rows):
    base, tok = tiny_llama
    before = _weights(base)
    text = "Summarize the conversation:"
    config = prompt_tuning_config(base, tok, n_virtual_tokens=8, init_text=text)

    # initialised from the text: the embeddings of its tokens, repeated up to 8 virtual tokens
    start = add_adapter(base, config)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids = (ids * 8)[:8]
    prompt = start.prompt_encoder["default"].embedding.weight
    assert torch.equal(prompt.detach(), base.get_input_embeddings().weight[ids].detach())

    result = fine_tune(base, tok, train_rows, train_rows[:8], tasks="topic", adapter=config, progress=False,
                       live_plot=False, config=TrainConfig(steps=15, batch_size=4, learning_rate=1e-2))
    model = result.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["prompt_encoder.default.embedding.weight"]
    assert trainable_summary(model)["trainable"] == 8 * base.config.hidden_size
    trained_prompt = model.prompt_encoder["default"].embedding.weight
    assert not torch.allclose(trained_prompt, prompt, atol=1e-4)  # the prompt moved
    assert _unchanged(model.get_base_model(), before) and _unchanged(base, before)  # nothing else did
    # the loss on a fixed set of training examples fell (a random tiny model sits near log(vocabulary),
    # so the fall is small, but an untrained prompt leaves it exactly where it was)
    assert result.val_losses.index.tolist() == [0, 15]
    assert result.val_losses[15] < result.val_losses[0] - 0.02
    with pytest.raises(ValueError, match="no weights to merge"):
        merge_adapter(model)


def test_fine_tune_with_adapter_saves_only_the_adapter(tiny_llama, train_rows, tmp_path):
    base, tok = tiny_llama
    out = tmp_path / "run"
    config = lora_config(base, r=4)
    result = fine_tune(base, tok, train_rows[:8], tasks="topic", config=TrainConfig(steps=3, **FAST),
                       adapter=config, output_dir=out, progress=False, live_plot=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE])
    final = out / FINAL_DIR
    names = {p.name for p in final.iterdir()}
    assert {ADAPTER_CONFIG, ADAPTER_WEIGHTS, "tokenizer_config.json"} <= names
    assert not names & {"config.json", "model.safetensors", "adapter_model.bin", "pytorch_model.bin"}
    assert adapter_size_bytes(final) < model_size_bytes(base) / 10
    run = json.loads((out / RUN_FILE).read_text())
    assert run["adapter"]["r"] == 4 and run["adapter"]["target_modules"] == sorted(ATTENTION["llama"])
    assert config.base_model_name_or_path is None  # the caller's config was not changed

    expected = _logits(result.model, tok)
    assert not torch.allclose(expected, _logits(base, tok), atol=1e-4)
    before = _weights(base)
    loaded, loaded_tok = load_fine_tuned(out, base_model=base)  # onto a copy of the given base
    assert _unchanged(base, before) and not _has_lora(base)
    assert torch.allclose(_logits(loaded, tok), expected, atol=1e-6, rtol=0)
    assert loaded_tok("#Person1#: hi")["input_ids"] == tok("#Person1#: hi")["input_ids"]
    named, _ = load_fine_tuned(final)  # no base given: the one named in adapter_config.json
    assert torch.allclose(_logits(named, tok), expected, atol=1e-6, rtol=0)


class _Interrupted(KeyboardInterrupt):
    """What a student's Ctrl-C would raise in the middle of training."""


def test_interrupted_lora_run_resumes_to_the_same_weights(tiny_llama, train_rows, tmp_path):
    import transformers

    base, tok = tiny_llama
    config = TrainConfig(steps=6, save_every=3, **FAST)
    adapter = lora_config(base, r=4, dropout=0.05)  # dropout: resuming must restore the random state too
    out = tmp_path / "run"
    original = transformers.Trainer.training_step

    def interrupting_step(self, *args, **kwargs):
        if self.state.global_step >= 4:
            raise _Interrupted()
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.Trainer, "training_step", interrupting_step)
        with pytest.raises(_Interrupted):
            fine_tune(base, tok, train_rows, tasks="topic", config=config, adapter=adapter, output_dir=out,
                      progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint-3", RUN_FILE])
    checkpoint = {p.name for p in (out / "checkpoint-3").iterdir()}
    assert ADAPTER_WEIGHTS in checkpoint and "model.safetensors" not in checkpoint  # checkpoints hold the adapter

    with pytest.raises(FileExistsError, match="another run"):  # another adapter is another run
        fine_tune(base, tok, train_rows, tasks="topic", config=config, adapter=lora_config(base, r=2),
                  output_dir=out, if_exists="resume", progress=False)

    steps_run = []

    def counting_step(self, *args, **kwargs):
        steps_run.append(self.state.global_step + 1)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.Trainer, "training_step", counting_step)
        resumed = fine_tune(base, tok, train_rows, tasks="topic", config=config, adapter=adapter, output_dir=out,
                            if_exists="resume", progress=False, live_plot=False)
    assert steps_run == [4, 5, 6]
    straight = fine_tune(base, tok, train_rows, tasks="topic", config=config, adapter=adapter, progress=False,
                         live_plot=False)
    assert resumed.resumed_from.endswith("checkpoint-3") and straight.resumed_from is None
    r_loss = resumed.history.dropna(subset=["train_loss"])["train_loss"].tolist()
    s_loss = straight.history.dropna(subset=["train_loss"])["train_loss"].tolist()
    assert len(r_loss) == len(s_loss) == 6
    assert torch.allclose(torch.tensor(r_loss), torch.tensor(s_loss), atol=1e-6, rtol=0)
    rw, sw = resumed.model.state_dict(), straight.model.state_dict()
    assert rw.keys() == sw.keys()
    assert all(torch.allclose(rw[k], sw[k], atol=1e-6, rtol=0) for k in sw)
    lora = [k for k in sw if "lora_B" in k]
    assert lora and all(sw[k].abs().sum() > 0 for k in lora)
    loaded, _ = load_fine_tuned(out, base_model=base)
    lw = loaded.state_dict()
    assert all(torch.equal(lw[k], rw[k]) for k in lora)


# ---------------------------------------------------------------- QLoRA

@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_qlora_is_unavailable_without_cuda_and_says_why(tiny_llama):
    ok, reason = qlora_available()
    assert ok is False
    assert reason == "QLoRA needs a CUDA GPU and bitsandbytes; this machine has no CUDA device"
    with pytest.raises(RuntimeError, match=re.escape(reason)):
        load_model_4bit("tiny-llama", profile="tiny")


def test_qlora_without_bitsandbytes_says_so(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args, **kw: None if name == "bitsandbytes" else find_spec(name, *args, **kw))
    ok, reason = qlora_available()
    assert ok is False and "\n" not in reason
    assert reason == "QLoRA needs a CUDA GPU and bitsandbytes; bitsandbytes is not installed (pip install bitsandbytes)"
    with pytest.raises(RuntimeError, match="bitsandbytes is not installed"):
        load_model_4bit("tiny-llama", profile="tiny")


def test_lora_on_the_top_blocks_only_and_the_backward_pass_stops_there(tiny_llama):
    base, _ = tiny_llama
    depth = base.config.num_hidden_layers
    top = [depth - 1]
    model = add_adapter(base, lora_config(base, r=4, layers=top))
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {str(depth - 1)}
    full = trainable_summary(add_adapter(base, lora_config(base, r=4)))["trainable"]
    assert trainable_summary(model)["trainable"] * depth == full
    # nothing below the adapted block needs a gradient: autograd records no graph there
    seen = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: seen.append((k, (o[0] if isinstance(o, tuple) else o)
                                                                            .requires_grad)))
             for k, layer in enumerate(model.get_base_model().model.layers)]
    model.train()
    model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.sum().backward()
    for h in hooks:
        h.remove()
    assert dict(seen) == {k: k >= depth - 1 for k in range(depth)}
    for bad in ([depth], [-1], [], "1"):
        with pytest.raises((ValueError, TypeError), match="layers"):
            lora_config(base, layers=bad)


def test_wrapping_a_model_shows_students_no_library_deprecation_warning():
    """peft reads a transformers attribute that warns on every wrap; the labs must not fill with it."""
    import subprocess
    import sys

    script = ("import warnings\n"
              "import labhelpers\n"
              "from labhelpers import add_adapter, load_model, lora_config\n"
              "model, _ = load_model('tiny-llama', profile='tiny')\n"
              "add_adapter(model, lora_config(model, r=2))\n"
              "warnings.warn('`is_gradient_checkpointing` is deprecated (a look-alike from elsewhere)', UserWarning)\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FutureWarning: `is_gradient_checkpointing`" not in done.stderr
    assert "UserWarning: `is_gradient_checkpointing`" in done.stderr  # the filter is that narrow
