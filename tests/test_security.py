"""Security: weights load from safetensors only, pickles are refused, remote code never runs, tokens stay hidden.

A "malicious pickle" here is a file whose unpickling would create a marker file: if any loader
unpickled it, the marker would exist. Each test checks both that loading is refused and that the
marker was never written.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from labhelpers import ModelUnavailableError, load_model
from labhelpers.train import TrainConfig, fine_tune

REPO = Path(__file__).resolve().parent.parent


class _Payload:
    """Unpickling this runs `open(marker, "w")`: code execution, in a harmless form."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"state": _Payload(marker)}))


def test_a_pickle_in_place_of_model_weights_is_refused_and_never_unpickled(tiny_llama, tmp_path):
    model, tok = tiny_llama
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    _plant_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(ModelUnavailableError, match="safetensors"):
        load_model(str(folder))
    assert not marker.exists()


def test_a_pickle_in_a_checkpoint_is_refused_on_resume(tiny_llama, tiny_dialogues, tmp_path, monkeypatch):
    import transformers

    model, tok = tiny_llama
    rows = list(tiny_dialogues["train"])[:8]
    config = TrainConfig(steps=4, batch_size=4, learning_rate=1e-3, save_every=2)
    out = tmp_path / "run"

    def stop_after_checkpoint(self, *args, **kwargs):
        if self.state.global_step >= 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    original = transformers.Trainer.training_step
    monkeypatch.setattr(transformers.Trainer, "training_step", stop_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        fine_tune(model, tok, rows, tasks="topic", config=config, output_dir=out, progress=False, live_plot=False)
    monkeypatch.setattr(transformers.Trainer, "training_step", original)
    checkpoint = out / "checkpoint-2"
    assert (checkpoint / "optimizer.pt").exists()
    marker = tmp_path / "pwned"
    _plant_pickle(checkpoint / "optimizer.pt", marker)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|not allowed|unsupported"):
        fine_tune(model, tok, rows, tasks="topic", config=config, output_dir=out, if_exists="resume",
                  progress=False, live_plot=False)
    assert not marker.exists()


def test_an_adapter_given_as_a_pickle_is_refused(tiny_llama, tmp_path):
    from labhelpers.adapters import add_adapter, load_adapter, lora_config, save_adapter

    model, tok = tiny_llama
    folder = tmp_path / "adapter"
    save_adapter(add_adapter(model, lora_config(model, r=2)), folder)
    (folder / "adapter_model.safetensors").unlink()
    marker = tmp_path / "pwned"
    _plant_pickle(folder / "adapter_model.bin", marker)
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_adapter(model, folder)
    assert not marker.exists()


def _source_calls(pattern: str) -> list[str]:
    """Each call in labhelpers' source matching `pattern`, with its arguments (to the closing parenthesis)."""
    calls = []
    for path in sorted((REPO / "labhelpers").glob("*.py")):
        text = path.read_text()
        for match in re.finditer(pattern, text):
            depth, end = 0, match.end()
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls.append(f"{path.name}: {text[match.start():end + 1]}")
    return calls


def test_the_source_never_trusts_remote_code_or_unpickles():
    assert not re.search(r"trust_remote_code\s*=\s*True",
                         "".join(p.read_text() for p in (REPO / "labhelpers").glob("*.py")))
    for call in _source_calls(r"torch\.load\("):
        assert "weights_only=True" in call, call
    loads = _source_calls(r"[\w.]*\.from_pretrained\(")
    assert loads, "expected from_pretrained calls in labhelpers"
    for call in loads:
        if "gguf_file=" in call:  # the embedded model's GGUF: a plain tensor format, no pickle, no code
            continue
        assert "trust_remote_code=False" in call or "PeftModel" in call, call
    weight_loads = [c for c in loads if not re.search(r"(Tokenizer|Config|PeftModel)\.from_pretrained", c)]
    assert len(weight_loads) >= 3, weight_loads  # load_model, the 4-bit load, the GGUF conversion
    for call in weight_loads:
        assert "use_safetensors=True" in call or "gguf_file=" in call, call


def test_a_token_in_the_environment_is_never_printed(monkeypatch, capsys):
    from labhelpers import environment_summary

    secret = "hf_" + "x" * 34
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", secret)
    line = environment_summary("tiny")
    print(line)
    assert secret not in line and secret not in capsys.readouterr().out
