"""Faults survived: a killed training process, damaged files, a full disk, runs at the same time, repeat runs.

What tests/test_train.py already covers is not repeated here: a polite interruption (KeyboardInterrupt)
resuming to the same weights, and the same seed repeating in one process. Here the training process
is killed outright (SIGKILL, also in the middle of writing a checkpoint), files are truncated or
overwritten, the disk fills up (ENOSPC raised by the writer), and whole runs are repeated in fresh
processes. Everything runs on the tiny profile.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from labhelpers import models
from labhelpers.tools import labs
from labhelpers.adapters import add_adapter, load_adapter, lora_config, save_adapter
from labhelpers.models import DamagedFileError, ModelUnavailableError, load_model, resolve_model_path
from labhelpers.profiles import TINY_CAUSAL
from labhelpers.train import CHECKPOINT_STAGING, FINAL_DIR, RUN_FILE, TrainConfig, fine_tune, load_fine_tuned

REPO = Path(__file__).resolve().parent.parent
CONFIG = TrainConfig(steps=6, save_every=2, batch_size=4, learning_rate=1e-3, log_every=1)  # checkpoints 2 and 4
N_ROWS = 16


@pytest.fixture(scope="module")
def rows(tiny_dialogues) -> list[dict]:
    return [dict(r) for r in tiny_dialogues["train"].select(range(N_ROWS))]


@pytest.fixture(scope="module")
def straight(tiny_llama, rows):
    """The reference: the same run, never interrupted, no output folder."""
    base, tok = tiny_llama
    return fine_tune(base, tok, rows, tasks="topic", config=CONFIG, progress=False, live_plot=False)


def _train(tiny_llama, rows, out, **kwargs):
    base, tok = tiny_llama
    return fine_tune(base, tok, rows, tasks="topic", config=CONFIG, output_dir=out, progress=False, live_plot=False,
                     **kwargs)


def _assert_same_weights(a, b) -> None:
    wa, wb = a.state_dict(), b.state_dict()
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6, rtol=0), name


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- a training process killed outright

KILLED_TRAINING = r'''
import io, json, sys, time
import labhelpers  # first: its bf16 guard runs before torch loads
import torch
import transformers
from labhelpers.data import load_dialogues
from labhelpers.models import load_model
from labhelpers.train import TrainConfig, fine_tune

out, ready, where, config, n_rows = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(1)  # as the tests' own process (conftest), so the arithmetic is the same


def freeze():
    """Tell the test how far training got, then wait for the kill."""
    open(ready, "w").close()
    while True:
        time.sleep(1)


if where == "mid-save":  # half of checkpoint-4's optimizer state is on disk when the kill comes
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt") and "checkpoint-4" in str(f):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as fh:
                fh.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            freeze()
        return real_save(obj, f, *args, **kwargs)

    torch.save = save
else:  # killed in the middle of optimizer step 5, checkpoint-4 written
    real_step = transformers.Trainer.training_step

    def step(self, *args, **kwargs):
        if self.state.global_step >= 4:
            freeze()
        return real_step(self, *args, **kwargs)

    transformers.Trainer.training_step = step

model, tok = load_model("tiny-llama", profile="tiny")
rows = [dict(r) for r in load_dialogues(profile="tiny")["train"].select(range(n_rows))]
fine_tune(model, tok, rows, tasks="topic", config=TrainConfig(**config), output_dir=out, progress=False,
          live_plot=False)
print("finished without being killed")
'''


def _run_and_kill(tmp_path: Path, out: Path, where: str) -> None:
    """Train in a child process until it reaches `where`, then SIGKILL it."""
    script, ready = tmp_path / "train_child.py", tmp_path / "ready"
    script.write_text(KILLED_TRAINING)
    args = [sys.executable, str(script), str(out), str(ready), where, json.dumps(dataclasses.asdict(CONFIG)),
            str(N_ROWS)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"the training process ended before it was killed:\n{proc.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training process never reached the point where it is killed")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("where, survivor", [("mid-step", "checkpoint-4"), ("mid-save", "checkpoint-2")])
def test_a_killed_training_process_resumes_to_the_weights_of_an_uninterrupted_run(
        tiny_llama, rows, straight, tmp_path, where, survivor):
    out = tmp_path / "run"
    _run_and_kill(tmp_path, out, where)
    names = sorted(p.name for p in out.iterdir())
    if where == "mid-save":
        # the kill came with checkpoint-4 half written: it lies under the staging name, never as checkpoint-4
        half = out / CHECKPOINT_STAGING / "checkpoint-4" / "optimizer.pt"
        assert half.is_file() and half.stat().st_size > 0
        assert names == sorted([CHECKPOINT_STAGING, survivor, RUN_FILE])
    else:
        assert names == sorted([survivor, RUN_FILE])

    resumed = _train(tiny_llama, rows, out, if_exists="resume")
    assert resumed.resumed_from == str(out / survivor)
    assert resumed.history.dropna(subset=["train_loss"])["step"].tolist() == list(range(1, 7))
    _assert_same_weights(resumed.model, straight.model)
    assert sorted(p.name for p in out.iterdir()) == sorted([FINAL_DIR, RUN_FILE])  # staging and checkpoints gone
    _assert_same_weights(load_fine_tuned(out)[0], straight.model)


# ---------------------------------------------------------------- damaged files are named on load

def _truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


def _zero_fill(path: Path) -> None:
    """Zeros over the whole file, its size kept: what a crash can leave of a file that was being written."""
    path.write_bytes(b"\0" * path.stat().st_size)


@pytest.fixture
def cached_copy(tiny_llama, tmp_cache) -> Path:
    """The tiny Llama's cache folder copied into an empty LABS_CACHE (the real cache stays untouched)."""
    real = Path(tiny_llama[0].config._name_or_path)  # the session's model was loaded from the real cache
    folder = tmp_cache / real.name
    shutil.copytree(real, folder)
    assert resolve_model_path(TINY_CAUSAL) == str(folder)
    return folder


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "config.json"])
def test_a_corrupt_cached_file_of_the_right_size_is_named_with_how_to_rebuild(cached_copy, name):
    path = cached_copy / name
    _zero_fill(path)
    with pytest.raises(DamagedFileError) as err:
        load_model(TINY_CAUSAL, profile="tiny")
    message = _one_line(err)
    assert f"model file {path} is damaged" in message
    assert f"delete {cached_copy} and run again to rebuild it" in message
    if name == "model.safetensors":  # doing what the message says rebuilds a working model (once: seconds)
        shutil.rmtree(cached_copy)
        model, _ = load_model(TINY_CAUSAL, profile="tiny")
        assert model.config.model_type == "llama" and (cached_copy / models.MARKER).is_file()


def test_a_damaged_file_in_a_saved_model_folder_is_named(tiny_llama, tmp_path):
    model, tok = tiny_llama
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": ')  # cut off mid-write
    with pytest.raises(DamagedFileError) as err:
        load_model(str(folder))
    message = _one_line(err)
    assert f"{folder / 'config.json'} is damaged (JSONDecodeError" in message and f"replace {folder}" in message


@pytest.fixture(scope="module")
def interrupted(tiny_llama, rows, tmp_path_factory) -> Path:
    """An output folder whose run stopped after step 3: checkpoint-2 is its only checkpoint."""
    import transformers

    out = tmp_path_factory.mktemp("interrupted") / "run"
    real_step = transformers.Trainer.training_step

    def step(self, *args, **kwargs):
        if self.state.global_step >= 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transformers.Trainer, "training_step", step)
        with pytest.raises(KeyboardInterrupt):
            _train(tiny_llama, rows, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint-2", RUN_FILE])
    return out


@pytest.mark.parametrize("name, damage", [("model.safetensors", _truncate), ("optimizer.pt", _truncate),
                                          ("rng_state.pth", _zero_fill), ("trainer_state.json", _truncate)])
def test_a_damaged_checkpoint_is_named_on_resume_and_deleting_it_starts_over(
        tiny_llama, rows, straight, interrupted, tmp_path, name, damage):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)
    checkpoint = out / "checkpoint-2"
    damage(checkpoint / name)
    before = _files(out)
    with pytest.raises(DamagedFileError) as err:
        _train(tiny_llama, rows, out, if_exists="resume")
    message = _one_line(err)
    assert f"checkpoint file {checkpoint / name} is damaged" in message
    assert f"delete {checkpoint} and run again with if_exists='resume'" in message
    assert _files(out) == before  # nothing touched

    shutil.rmtree(checkpoint)  # as the message says
    again = _train(tiny_llama, rows, out, if_exists="resume")
    assert again.resumed_from is None
    _assert_same_weights(again.model, straight.model)


def test_a_damaged_final_model_and_adapter_are_named_on_load(tiny_llama, rows, tmp_path):
    base, tok = tiny_llama
    out = tmp_path / "run"
    fine_tune(base, tok, rows[:4], tasks="topic", config=TrainConfig(steps=1, batch_size=4), output_dir=out,
              progress=False, live_plot=False)
    weights = out / FINAL_DIR / "model.safetensors"
    _truncate(weights)
    with pytest.raises(DamagedFileError) as err:
        load_fine_tuned(out)
    message = _one_line(err)
    assert f"saved model file {weights} is damaged" in message
    assert f"output_dir={str(out)!r} and if_exists='overwrite'" in message

    folder = tmp_path / "adapter"
    save_adapter(add_adapter(base, lora_config(base, r=2)), folder)
    _zero_fill(folder / "adapter_model.safetensors")
    with pytest.raises(DamagedFileError) as err:
        load_adapter(base, folder)
    assert f"adapter file {folder / 'adapter_model.safetensors'} is damaged" in _one_line(err)


# ---------------------------------------------------------------- a full disk while saving

def _disk_full(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tiny_llama, rows, straight, tmp_path,
                                                                         monkeypatch):
    out = tmp_path / "run"
    real_save, seen = torch.save, {}

    def save(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f) and str(f).endswith("optimizer.pt"):
            seen["checkpoint-2"] = _files(out / "checkpoint-2")  # the previous checkpoint, as it was
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            Path(f).write_bytes(buffer.getvalue()[:1000])  # the disk filled up part way through
            raise _disk_full(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError) as err:
        _train(tiny_llama, rows, out)
    monkeypatch.setattr(torch, "save", real_save)  # space freed
    message = _one_line(err)
    assert err.value.errno == errno.ENOSPC
    assert f"could not write checkpoint-4 in {out}" in message and "No space left on device" in message
    assert "checkpoint-2 is intact" in message and "if_exists='resume'" in message
    # no half checkpoint left (its space is given back), the previous one byte for byte as it was
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint-2", RUN_FILE])
    assert _files(out / "checkpoint-2") == seen["checkpoint-2"]

    resumed = _train(tiny_llama, rows, out, if_exists="resume")
    assert resumed.resumed_from == str(out / "checkpoint-2")
    _assert_same_weights(resumed.model, straight.model)


def test_a_full_disk_while_writing_the_final_model_keeps_the_last_checkpoint(tiny_llama, rows, straight, tmp_path,
                                                                              monkeypatch):
    import transformers.modeling_utils

    out = tmp_path / "run"
    real_write = transformers.modeling_utils.safe_save_file

    def write(tensors, filename, *args, **kwargs):
        if f"{FINAL_DIR}.partial" in str(filename):
            Path(filename).write_bytes(b"\0" * 100)
            raise _disk_full(filename)
        return real_write(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", write)
    with pytest.raises(OSError) as err:
        _train(tiny_llama, rows, out)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", real_write)
    message = _one_line(err)
    assert err.value.errno == errno.ENOSPC
    assert f"could not write the final model to {out / FINAL_DIR}" in message
    assert "checkpoint-4 is intact" in message and "if_exists='resume'" in message
    assert sorted(p.name for p in out.iterdir()) == sorted(["checkpoint-4", RUN_FILE])

    resumed = _train(tiny_llama, rows, out, if_exists="resume")
    assert resumed.resumed_from == str(out / "checkpoint-4")
    _assert_same_weights(resumed.model, straight.model)
    _assert_same_weights(load_fine_tuned(out)[0], straight.model)


def test_a_full_disk_while_overwriting_an_adapter_keeps_the_old_one(tiny_llama, tmp_path, monkeypatch):
    import peft.peft_model

    base, _ = tiny_llama
    folder = tmp_path / "adapter"
    first = add_adapter(base, lora_config(base, r=2))
    with torch.no_grad():
        for name, p in first.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)  # B starts at zero; a non-zero B makes the adapter change the logits
    save_adapter(first, folder)
    before = _files(folder)
    real_write = peft.peft_model.safe_save_file

    def write(tensors, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\0" * 100)
        raise _disk_full(filename)

    monkeypatch.setattr(peft.peft_model, "safe_save_file", write)
    with pytest.raises(OSError) as err:
        save_adapter(add_adapter(base, lora_config(base, r=4)), folder, overwrite=True)
    monkeypatch.setattr(peft.peft_model, "safe_save_file", real_write)
    message = _one_line(err)
    assert err.value.errno == errno.ENOSPC and f"could not write the adapter to {folder}" in message
    assert "the adapter already there is intact" in message
    assert _files(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(load_adapter(base, folder)(input_ids=ids).logits, first.eval()(input_ids=ids).logits)


def test_a_full_disk_while_building_a_cached_model_says_where_and_leaves_no_staging(tmp_cache, monkeypatch):
    def build(kind, folder):
        staging = models._staging(folder)
        (staging / "model.safetensors").write_bytes(b"\0" * 100)
        raise _disk_full(staging / "model.safetensors")

    monkeypatch.setattr(models, "_build_tiny", build)
    with pytest.raises(ModelUnavailableError) as err:
        load_model(TINY_CAUSAL, profile="tiny")
    message = _one_line(err)
    assert f"cannot write {TINY_CAUSAL} into the cache {tmp_cache}" in message
    assert "No space left on device" in message and "LABS_CACHE" in message
    assert list(tmp_cache.iterdir()) == []


# ---------------------------------------------------------------- runs at the same time

def test_runs_started_at_once_in_the_same_second_and_process_get_their_own_folders(tmp_path, monkeypatch):
    out, n = tmp_path / "runs", 8
    monkeypatch.setattr(labs.time, "strftime", lambda *args: "20250101-000000")  # all in the same second
    start, results, errors = threading.Barrier(n), [], []

    def one_run():
        try:
            start.wait()
            results.append(labs.run([], profile="tiny", out=out))
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=one_run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    folders = [run_dir for run_dir, _ in results]
    assert len(set(folders)) == n == len(list(out.iterdir()))
    for run_dir, summary in results:  # each run's summary is its own, in its own folder
        assert json.loads((run_dir / "summary.json").read_text())["run_dir"] == str(run_dir) == summary["run_dir"]


def test_a_cached_model_published_by_another_process_meanwhile_is_kept(cached_copy, tmp_path):
    # this process built the same model at the same time, and publishes second
    mine = cached_copy.with_name(f".{cached_copy.name}.tmp{os.getpid()}")
    shutil.copytree(cached_copy, mine)
    (mine / models.MARKER).unlink()
    theirs = (cached_copy / "model.safetensors").stat().st_ino
    models._publish(mine, cached_copy)
    assert (cached_copy / "model.safetensors").stat().st_ino == theirs  # never deleted under the other's feet
    assert not mine.exists()
    assert load_model(TINY_CAUSAL, profile="tiny")[0].config.model_type == "llama"


def test_two_runs_into_one_output_folder_do_not_mix(tiny_llama, rows, interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted, out)  # another run is using this folder
    before = _files(out)
    with pytest.raises(FileExistsError, match="unfinished run"):
        _train(tiny_llama, rows, out)
    assert _files(out) == before


# ---------------------------------------------------------------- the same numbers twice

REPEAT_RUN = r"""
import hashlib, json
import labhelpers  # first: its bf16 guard runs before torch loads
import torch
from labhelpers import bootstrap_ci, generate_texts, load_dialogues, load_model, make_generation_config, score_summaries
from labhelpers.train import TrainConfig, fine_tune


def numbers() -> dict:
    # data, a short fine-tuning run, sampled generations and a bootstrap interval, as a lab computes them
    torch.set_num_threads(1)
    data = load_dialogues(profile="tiny")
    model, tok = load_model(profile="tiny")
    rows = [dict(r) for r in data["train"].select(range(8))]
    config = TrainConfig(steps=3, batch_size=4, learning_rate=1e-3, seed=5)
    result = fine_tune(model, tok, rows, tasks="topic", config=config, progress=False, live_plot=False)
    tensors = result.model.state_dict()
    weights = hashlib.sha256(b"".join(tensors[k].numpy().tobytes() for k in sorted(tensors))).hexdigest()
    test = [dict(r) for r in data["test"].select(range(4))]
    texts = generate_texts(result.model, tok, [r["dialogue"] for r in test],
                           make_generation_config(12, do_sample=True, temperature=1.0), seed=3, progress=False)
    rouge = score_summaries([t or "-" for t in texts], [r["summary"] for r in test])["rougeL"]
    ci = bootstrap_ci(rouge, seed=0)
    rows_hash = hashlib.sha256(json.dumps([dict(r) for r in data["train"]], sort_keys=True).encode()).hexdigest()
    return {"data": rows_hash, "losses": result.history["train_loss"].dropna().tolist(), "weights": weights,
            "texts": texts, "rougeL": [ci.mean, ci.low, ci.high]}


if __name__ == "__main__":
    print("RESULT " + json.dumps(numbers()))
"""


def test_the_same_profile_and_seed_give_the_same_numbers_here_and_in_a_fresh_process(tmp_path):
    script = tmp_path / "repeat.py"
    script.write_text(REPEAT_RUN)
    # a fresh process with another hash seed (an order that depends on hashing strings would show), while
    # this one, which has run other tests before, computes the same numbers ("restart and run all" vs a used kernel)
    other_seed = str(int(os.environ.get("PYTHONHASHSEED", "0") or 0) + 1)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "LABS_PROFILE": "tiny", "PYTHONHASHSEED": other_seed})
    try:
        namespace = {"__name__": "repeat_run"}
        exec(compile(REPEAT_RUN, str(script), "exec"), namespace)
        here = json.loads(json.dumps(namespace["numbers"]()))
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    found = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and found, stderr[-3000:]
    fresh = json.loads(found[-1][len("RESULT "):])
    assert len(here["losses"]) == 3 and len(here["texts"]) == 4
    assert here == fresh


def test_a_final_model_written_meanwhile_by_another_run_is_replaced_whole(tmp_path):
    """Two notebooks at once (labs 09 and 10 both training the same starting summariser): the later save wins whole."""
    from labhelpers.models import load_model
    from labhelpers.train import _atomic_save

    model, tok = load_model(profile="tiny")
    final = tmp_path / "final"
    final.mkdir()
    (final / "from_the_other_run.txt").write_text("theirs")
    _atomic_save(model, tok, final)
    assert not (final / "from_the_other_run.txt").exists() and (final / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no staging or old copy left behind
