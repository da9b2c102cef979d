"""Tests for labhelpers.device: device and dtype choice, the crash-safe bf16 probe, the summary line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from labhelpers import device
from labhelpers.device import (BF16_PROBE_CODE, CPU_BF16_ENV, ONEDNN_ENV, SAFE_ISA, autocast, choose_dtype,
                               cpu_bf16_speedup, cpu_mixed_precision, environment_summary, guard_cpu_bf16,
                               pick_device, probe_cpu_bf16, trainer_precision)

# Child programs that stand in for the bf16 matmul: one that works, one that dies of SIGILL as a CPU
# with unusable AMX does, and one that dies only while oneDNN's instruction set is not capped.
WORKS = "print('fine')\n"
CRASHES = "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n"
CRASHES_UNLESS_CAPPED = (
    "import os, signal\n"
    f"if not os.environ.get({ONEDNN_ENV!r}):\n"
    "    os.kill(os.getpid(), signal.SIGILL)\n"
)
needs_posix_signals = pytest.mark.skipif(not hasattr(signal, "SIGILL") or os.name != "posix",
                                         reason="simulating a SIGILL crash needs POSIX signals")


@pytest.fixture
def clean_bf16_state(monkeypatch, tmp_cache):
    """No oneDNN cap in the environment, no probe result in this process; both restored afterwards."""
    monkeypatch.setenv(ONEDNN_ENV, "placeholder")  # records the original value (or its absence) for undo
    monkeypatch.delenv(ONEDNN_ENV)
    monkeypatch.setattr(device, "_bf16_status", None)
    tmp_cache.mkdir(parents=True, exist_ok=True)
    return tmp_cache


# ---------------------------------------------------------------- device and dtype

def test_pick_device_is_cpu_on_a_machine_without_accelerators(monkeypatch):
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    monkeypatch.delenv("LABS_DEVICE", raising=False)
    assert pick_device() == torch.device("cpu")


def test_pick_device_honours_argument_and_env(monkeypatch):
    monkeypatch.setenv("LABS_DEVICE", "CPU")
    assert pick_device() == torch.device("cpu")
    monkeypatch.setenv("LABS_DEVICE", "tpu")  # the argument wins over a bad env value
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("wanted", ["cuda", "cuda:1"])
@pytest.mark.parametrize("via", ["env", "argument"])
def test_cuda_without_gpu_is_a_clear_error(monkeypatch, wanted, via):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on any machine
    monkeypatch.delenv("LABS_DEVICE", raising=False)
    if via == "env":
        monkeypatch.setenv("LABS_DEVICE", wanted)
    with pytest.raises(ValueError) as info:
        pick_device(wanted if via == "argument" else None)
    assert repr(wanted) in str(info.value) and "no CUDA GPU" in str(info.value)


def test_mps_without_apple_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="mps"):
        pick_device("mps")


@pytest.mark.parametrize("wanted", ["tpu", "gpu", "cudaX"])
def test_unknown_device_string(monkeypatch, wanted):
    monkeypatch.setenv("LABS_DEVICE", wanted)
    with pytest.raises(ValueError) as info:
        pick_device()
    assert f"device={wanted.lower()!r}" in str(info.value)


def test_cpu_dtype_is_float32():
    assert choose_dtype("cpu") == torch.float32
    assert choose_dtype(torch.device("cpu")) == torch.float32


# ---------------------------------------------------------------- bf16 mixed precision on a CPU

@pytest.fixture
def cpu_bf16(monkeypatch, tmp_cache):
    """Set this process's view of the CPU: (safety probe result, measured bf16 speed-up); no env override."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    tmp_cache.mkdir(parents=True, exist_ok=True)

    def set_cpu(status: str, speedup: float | None):
        monkeypatch.setattr(device, "_bf16_status", status)
        monkeypatch.setattr(device, "_bf16_speedup", speedup)
    return set_cpu


@pytest.mark.parametrize("status, speedup, env, expected", [
    ("ok", 2.7, None, True),        # native bf16 (AVX512-BF16 / AMX): on by default
    ("capped", 2.7, None, True),
    ("ok", 0.4, None, False),       # emulated bf16 is slower than fp32: stay fp32
    ("ok", 1.2, None, False),       # not worth the rounding
    ("unsafe", 0.0, None, False),
    ("ok", 2.7, "0", False),        # the student's switch wins
    ("ok", 0.4, "1", True),         # forced on where it is safe...
    ("unsafe", 0.0, "1", False),    # ...but never where it would crash the kernel
    ("ok", 2.7, "auto", True),
])
def test_cpu_mixed_precision_policy(cpu_bf16, monkeypatch, status, speedup, env, expected):
    cpu_bf16(status, speedup)
    if env is not None:
        monkeypatch.setenv(CPU_BF16_ENV, env)
    assert cpu_mixed_precision() is expected
    assert trainer_precision("cpu") == {"bf16": expected, "fp16": False, "use_cpu": True}
    with autocast(torch.nn.Linear(4, 4)):
        assert torch.is_autocast_enabled("cpu") is expected
        if expected:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_bad_cpu_bf16_switch_is_a_clear_error(cpu_bf16, monkeypatch):
    cpu_bf16("ok", 2.7)
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match="LABS_CPU_BF16='yes' is unknown; use 0"):
        cpu_mixed_precision()


def test_autocast_leaves_alone_what_is_not_an_fp32_cpu_model(cpu_bf16):
    cpu_bf16("ok", 2.7)
    cases = {
        "asked off": (torch.nn.Linear(4, 4), False),
        "bf16 weights": (torch.nn.Linear(4, 4).to(torch.bfloat16), None),
        "int8 dynamic": (torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(4, 4)),
                                                                {torch.nn.Linear}, dtype=torch.qint8), None),
    }
    for name, (model, enabled) in cases.items():
        with autocast(model, enabled):
            assert not torch.is_autocast_enabled("cpu"), name
    with autocast("cpu"):  # a device works too
        assert torch.is_autocast_enabled("cpu")


def test_autocast_asked_for_is_refused_where_bf16_would_crash(cpu_bf16):
    cpu_bf16("unsafe", 0.0)
    with autocast(torch.nn.Linear(4, 4), True):
        assert not torch.is_autocast_enabled("cpu")


def _count_child_runs(monkeypatch) -> list:
    """The command lines of the child processes started from now on (they still run)."""
    runs, real_run = [], subprocess.run

    def counting_run(*args, **kwargs):
        runs.append(args[0])
        return real_run(*args, **kwargs)
    monkeypatch.setattr(subprocess, "run", counting_run)
    return runs


def test_bf16_speed_is_measured_in_a_child_and_cached(cpu_bf16, monkeypatch, tmp_cache):
    cpu_bf16("ok", None)
    runs = _count_child_runs(monkeypatch)
    first = cpu_bf16_speedup()
    assert first > 0 and len(runs) == 1 and runs[0][1] == "-c"
    saved = json.loads((tmp_cache / "bf16_speed.json").read_text())
    assert saved["speedup"] == round(first, 3)
    monkeypatch.setattr(device, "_bf16_speedup", None)  # a new process: reads the file, runs nothing
    assert cpu_bf16_speedup() == round(first, 3) and len(runs) == 1


def test_bf16_speed_of_a_crashing_child_is_zero(cpu_bf16, monkeypatch):
    cpu_bf16("ok", None)
    monkeypatch.setattr(device, "BF16_SPEED_CODE", "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    assert cpu_bf16_speedup(use_cache=False) == 0.0
    assert cpu_mixed_precision() is False


def test_summary_says_which_precision_the_helpers_compute_in(cpu_bf16, monkeypatch):
    monkeypatch.delenv("LABS_DEVICE", raising=False)
    cpu_bf16("ok", 2.5)
    assert "CPU bf16 ok (2.5x fp32): training in bf16 mixed precision" in environment_summary("tiny")
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert "CPU bf16 ok (2.5x fp32): training in fp32" in environment_summary("tiny")


def test_environment_summary_is_one_line_with_profile_torch_and_device(monkeypatch):
    monkeypatch.delenv("LABS_DEVICE", raising=False)
    line = environment_summary("tiny")
    assert "\n" not in line
    assert "profile tiny" in line
    assert f"torch {torch.__version__}" in line
    assert f"device {pick_device().type}" in line


# ---------------------------------------------------------------- the bf16 probe, simulated

@needs_posix_signals
def test_the_crash_simulation_really_crashes():
    done = subprocess.run([sys.executable, "-c", CRASHES], capture_output=True, check=False)
    assert done.returncode == -signal.SIGILL


@needs_posix_signals
@pytest.mark.parametrize("code, expected", [(WORKS, "ok"), (CRASHES_UNLESS_CAPPED, "capped"), (CRASHES, "unsafe")],
                         ids=["works", "crashes-unless-capped", "crashes"])
def test_probe_status_and_the_process_survives(clean_bf16_state, code, expected):
    assert probe_cpu_bf16(code) == expected
    assert ONEDNN_ENV not in os.environ  # probing alone never changes this process
    assert not (clean_bf16_state / "bf16_probe.json").exists()  # simulations are not cached


def test_probe_that_hangs_is_unsafe(clean_bf16_state):
    assert probe_cpu_bf16("import time\ntime.sleep(30)\n", timeout_s=0.5) == "unsafe"


@needs_posix_signals
@pytest.mark.parametrize("code, expected", [(WORKS, "ok"), (CRASHES, "unsafe")], ids=["works", "crashes"])
def test_guard_sets_no_cap_unless_capped(clean_bf16_state, code, expected):
    assert guard_cpu_bf16(code) == expected
    assert ONEDNN_ENV not in os.environ
    assert device._bf16_status == expected


@needs_posix_signals
def test_guard_caps_onednn_before_torch_is_imported(clean_bf16_state, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch")  # as at `import labhelpers`, before torch loads
    assert guard_cpu_bf16(CRASHES_UNLESS_CAPPED) == "capped"
    assert os.environ.get(ONEDNN_ENV) == SAFE_ISA


@needs_posix_signals
def test_guard_after_torch_import_reports_unsafe_without_capping(clean_bf16_state):
    assert "torch" in sys.modules
    assert guard_cpu_bf16(CRASHES_UNLESS_CAPPED) == "unsafe"  # too late for the cap to take effect
    assert ONEDNN_ENV not in os.environ


def test_probe_code_is_sound_apart_from_bf16():
    """The real probe must fail only because of bf16: with fp32 it runs cleanly in a child."""
    code = BF16_PROBE_CODE.replace("torch.bfloat16", "torch.float32")
    assert code != BF16_PROBE_CODE
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    float(done.stdout.strip())


# ---------------------------------------------------------------- the probe result, cached on disk

class FakeRun:
    """Stands in for subprocess.run: counts calls and answers with a fixed return code."""

    def __init__(self, returncode: int):
        self.returncode = returncode
        self.calls = 0

    def __call__(self, args, **kwargs):
        self.calls += 1
        return subprocess.CompletedProcess(args, self.returncode)


def _refuse_to_run(*args, **kwargs):
    raise AssertionError("the probe ran a child process although its result was cached")


def test_probe_result_is_cached_on_disk(clean_bf16_state, monkeypatch):
    fake = FakeRun(0)
    monkeypatch.setattr(subprocess, "run", fake)
    assert probe_cpu_bf16() == "ok"
    assert fake.calls == 1
    saved = json.loads((clean_bf16_state / "bf16_probe.json").read_text())
    assert saved == {"key": device._cpu_fingerprint(), "status": "ok"}

    monkeypatch.setattr(subprocess, "run", _refuse_to_run)
    assert probe_cpu_bf16() == "ok"  # from the file, no child process
    with pytest.raises(AssertionError, match="cached"):
        probe_cpu_bf16(use_cache=False)  # proves the patch is in force


def test_cached_result_of_another_machine_is_ignored(clean_bf16_state, monkeypatch):
    (clean_bf16_state / "bf16_probe.json").write_text(json.dumps({"key": "another-cpu", "status": "ok"}))
    fake = FakeRun(1)  # every child fails here
    monkeypatch.setattr(subprocess, "run", fake)
    assert probe_cpu_bf16() == "unsafe"
    assert fake.calls == 2  # as is, then capped
    assert json.loads((clean_bf16_state / "bf16_probe.json").read_text())["status"] == "unsafe"


def test_corrupt_cache_file_is_probed_again(clean_bf16_state, monkeypatch):
    (clean_bf16_state / "bf16_probe.json").write_text("{not json")
    fake = FakeRun(0)
    monkeypatch.setattr(subprocess, "run", fake)
    assert probe_cpu_bf16() == "ok"
    assert fake.calls == 1


def test_guard_probes_once_per_process(clean_bf16_state, monkeypatch):
    fake = FakeRun(0)
    monkeypatch.setattr(subprocess, "run", fake)
    (clean_bf16_state / "bf16_probe.json").unlink(missing_ok=True)
    assert guard_cpu_bf16(use_cache=False) == "ok"
    assert guard_cpu_bf16(use_cache=False) == "ok"
    assert fake.calls == 1


# ---------------------------------------------------------------- pre-packed linear layers for CPU inference

@pytest.fixture
def packing_state(monkeypatch, tmp_cache):
    """No packed-linear probe result in this process, the probe's cache in a temporary folder."""
    monkeypatch.setattr(device, "_packed_ok", None)
    monkeypatch.delenv(device.CPU_PACKED_ENV, raising=False)
    tmp_cache.mkdir(parents=True, exist_ok=True)
    return tmp_cache


def _packed_layers(model) -> list[str]:
    return [name for name, m in model.named_modules() if "forward" in vars(m)]


def _two_layers() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.ReLU(), torch.nn.Linear(40, 8, bias=False))


def test_packed_probe_runs_in_a_child_is_cached_and_a_crash_says_no(packing_state, monkeypatch):
    runs = _count_child_runs(monkeypatch)
    assert device.cpu_packed_linear_ok() is True  # oneDNN ships inside torch's x86 and arm builds
    assert len(runs) == 1 and runs[0][1] == "-c"
    assert json.loads((packing_state / "packed_linear_probe.json").read_text())["ok"] is True
    monkeypatch.setattr(device, "_packed_ok", None)  # a new process: reads the file, runs nothing
    assert device.cpu_packed_linear_ok() is True and len(runs) == 1
    monkeypatch.setattr(device, "PACKED_PROBE_CODE", CRASHES)
    assert device.cpu_packed_linear_ok(use_cache=False) is False  # and this process is still alive
    monkeypatch.setenv(device.CPU_PACKED_ENV, "0")
    monkeypatch.setattr(device, "_packed_ok", True)
    assert device.cpu_packed_linear_ok() is False


def test_packed_layers_give_the_same_outputs_and_are_restored(packing_state):
    model = _two_layers()
    x = torch.randn(3, 5, 24)
    with torch.no_grad():
        expected = model(x)
        with device.packed_linears(model):
            assert _packed_layers(model) == ["0", "2"]
            got = model(x)
            one_row = model(x[:1, -1:])  # a decoding step's shape, a non-contiguous slice
        assert _packed_layers(model) == []
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(one_row, expected[:1, -1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="boom"):
        with device.packed_linears(model):
            raise RuntimeError("boom")
    assert _packed_layers(model) == []  # restored on the way out of an error too


def test_packed_layers_fall_back_where_packing_would_be_wrong(packing_state):
    model = _two_layers()
    x = torch.randn(4, 24)
    with device.packed_linears(model):
        assert _packed_layers(model) == ["0", "2"]
        out = model(x)  # gradients wanted: the ordinary layers run
        out.sum().backward()
        assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
        with torch.no_grad():
            model[0].weight.mul_(2.0)  # changed since it was packed: the packed copy is stale
            assert torch.allclose(model(x), model[2](torch.relu(x @ model[0].weight.T + model[0].bias)), atol=1e-5)
            with pytest.raises(RuntimeError, match="dtype"):  # not fp32: the ordinary layer, and its error
                model(x.double())
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=device.cpu_bf16_safe()):
                if device.cpu_bf16_safe():
                    assert model(x).dtype == torch.bfloat16  # autocast still applies
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast nothing is packed at all
        with device.packed_linears(model):
            assert _packed_layers(model) == []


def test_packed_contexts_nest_and_respect_the_switch(packing_state, monkeypatch):
    model = _two_layers()
    with device.packed_linears(model, None, model[2]):  # several models, one given twice, one absent
        with device.packed_linears(model):
            assert _packed_layers(model) == ["0", "2"]
        assert _packed_layers(model) == ["0", "2"]  # the inner context leaves the outer one's layers alone
    assert _packed_layers(model) == []
    monkeypatch.setenv(device.CPU_PACKED_ENV, "0")
    with device.packed_linears(model):
        assert _packed_layers(model) == []
    monkeypatch.delenv(device.CPU_PACKED_ENV)
    monkeypatch.setattr(device, "PACKED_MAX_SHARE_OF_FREE_MEMORY", 1e-12)  # copies too big for free memory
    with device.packed_linears(model):
        assert _packed_layers(model) == []
