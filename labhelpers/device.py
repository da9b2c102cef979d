"""Where tensors live and in which precision: CUDA, Apple MPS or CPU, chosen in exactly one place.

Some CPUs advertise AMX bf16 instructions that their (virtual) machine never enabled; the
first bf16 matrix multiply then kills the whole process with "Illegal instruction". We find
that out in a child process, never in the student's kernel, and cap oneDNN's instruction set
(`ONEDNN_MAX_CPU_ISA`) when that cap makes bf16 safe.

Where bf16 is safe *and* native (AVX512-BF16 or AMX: about 2.5x the fp32 matmul rate on the
machines these labs are tested on), fine-tuning (`fine_tune`, TRL's trainers) runs in bf16 mixed
precision (autocast; the weights and optimiser stay fp32), as it would on a GPU: a LoRA step 1.8x,
a full step 1.6x faster. Generation stays fp32 unless asked for (`generate_texts(mixed_precision=True)`),
and so does PPO. Whether bf16 is faster is measured once per machine, in a child process;
`LABS_CPU_BF16=0` keeps everything in fp32, `LABS_CPU_BF16=1` trains in bf16 whenever it is safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ['cache_dir', 'cpu_bf16_safe', 'cpu_bf16_speedup', 'cpu_mixed_precision', 'autocast', 'pick_device',
           'as_device', 'choose_dtype', 'trainer_precision', 'seed_everything', 'environment_summary']

ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"
SAFE_ISA = "AVX512_CORE_BF16"
BF16_PROBE_CODE = (
    "import torch\n"
    "a = torch.randn(64, 64, dtype=torch.bfloat16)\n"
    "print(float((a @ a).float().sum()))\n"
)
_bf16_status: str | None = None
CPU_BF16_ENV = "LABS_CPU_BF16"
FAST_BF16_RATIO = 1.3  # bf16 matmuls must be at least this much faster than fp32 to be used automatically
BF16_SPEED_CODE = (
    "import time, torch\n"
    "a = torch.randn(256, 1024); b = torch.randn(1024, 1024)\n"
    "def best(x, y):\n"
    "    x @ y\n"
    "    times = []\n"
    "    for _ in range(5):\n"
    "        t = time.perf_counter()\n"
    "        for _ in range(4):\n"
    "            x @ y\n"
    "        times.append(time.perf_counter() - t)\n"
    "    return min(times)\n"
    "print(best(a, b) / best(a.bfloat16(), b.bfloat16()))\n"
)
_bf16_speedup: float | None = None


def cache_dir() -> Path:
    """Folder for converted models, tiny models and probe results ($LABS_CACHE or ~/.cache/labhelpers)."""
    root = os.environ.get("LABS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "labhelpers")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cpu_fingerprint() -> str:
    """Identifies the CPU, its flags and the torch build, so a cached probe result is reused only here."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "model name")):
                    flags += line
                if line.strip() == "":
                    break
    except OSError:
        flags = platform.processor()
    try:
        from importlib.metadata import version
        torch_version = version("torch")
    except Exception:  # torch missing: the probe will say so
        torch_version = "none"
    raw = f"{platform.machine()}|{flags}|{torch_version}|{os.environ.get(ONEDNN_ENV, '')}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _read_cache(name: str, key: str) -> dict:
    """This machine's cached result in cache_dir()/name (a dict), or {} when missing, damaged or another machine's."""
    try:
        cached = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) and cached.get("key") == key else {}


def _write_cache(name: str, record: dict) -> None:
    """Write a result to cache_dir()/name whole (a temporary file renamed into place)."""
    path = cache_dir() / name
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)


def _run_probe(code: str, env: dict[str, str], timeout_s: float) -> bool:
    """True when `code` exits cleanly in a fresh Python process (a crash there cannot hurt us)."""
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              timeout=timeout_s, check=False)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def probe_cpu_bf16(code: str = BF16_PROBE_CODE, timeout_s: float = 120.0, use_cache: bool = True) -> str:
    """Test bf16 matmul on this CPU in a child process.

    Returns "ok" (works as is), "capped" (works once ONEDNN_MAX_CPU_ISA is capped) or
    "unsafe" (crashes either way: keep CPU work in fp32).
    """
    key = _cpu_fingerprint()
    if use_cache and code == BF16_PROBE_CODE:
        cached = _read_cache("bf16_probe.json", key).get("status")
        if cached in {"ok", "capped", "unsafe"}:
            return cached
    env = dict(os.environ)
    if _run_probe(code, env, timeout_s):
        status = "ok"
    else:
        env[ONEDNN_ENV] = SAFE_ISA
        status = "capped" if _run_probe(code, env, timeout_s) else "unsafe"
    if use_cache and code == BF16_PROBE_CODE:
        _write_cache("bf16_probe.json", {"key": key, "status": status})
    return status


def guard_cpu_bf16(code: str = BF16_PROBE_CODE, use_cache: bool = True) -> str:
    """Probe once per process; when capping oneDNN makes bf16 safe, cap it here too.

    Call before torch is imported (labhelpers does, on import) so the cap takes effect; if torch
    was imported first, a CPU that needs the cap is reported "unsafe" for this process.
    """
    global _bf16_status
    if _bf16_status is None or code != BF16_PROBE_CODE:
        status = probe_cpu_bf16(code, use_cache=use_cache)
        if status == "capped":
            if "torch" in sys.modules and os.environ.get(ONEDNN_ENV) != SAFE_ISA:
                status = "unsafe"  # too late to cap oneDNN in this process
            else:
                os.environ[ONEDNN_ENV] = SAFE_ISA
        _bf16_status = status
    return _bf16_status


def cpu_bf16_safe() -> bool:
    """Whether a bf16 matmul on the CPU will run in this process without crashing it."""
    return guard_cpu_bf16() in {"ok", "capped"}


def cpu_bf16_speedup(timeout_s: float = 120.0, use_cache: bool = True) -> float:
    """How many times faster a bf16 matmul runs than an fp32 one on this CPU (0.0 where bf16 is unsafe).

    Measured once per machine in a child process (so a crash cannot hurt this one), then cached
    beside the safety probe's result; an interrupted or failed measurement counts as 0.0.
    """
    global _bf16_speedup
    if _bf16_speedup is not None and use_cache:
        return _bf16_speedup
    speedup = 0.0
    if cpu_bf16_safe():
        key = _cpu_fingerprint()
        cached = _read_cache("bf16_speed.json", key).get("speedup") if use_cache else None
        if isinstance(cached, (int, float)) and not isinstance(cached, bool):
            speedup = float(cached)
        else:
            try:
                done = subprocess.run([sys.executable, "-c", BF16_SPEED_CODE], env=dict(os.environ),
                                      capture_output=True, text=True, timeout=timeout_s, check=False)
                speedup = float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0.0
            except (subprocess.TimeoutExpired, OSError, ValueError, IndexError):
                speedup = 0.0
            if use_cache:
                _write_cache("bf16_speed.json", {"key": key, "speedup": round(speedup, 3)})
    _bf16_speedup = speedup
    return speedup


def cpu_mixed_precision() -> bool:
    """Whether the helpers train in bf16 mixed precision on the CPU (autocast; weights and optimiser stay fp32).

    $LABS_CPU_BF16: "0" never, "1" whenever bf16 is safe here, unset or "auto" when it is safe and
    measured at least 1.3x faster than fp32 (native bf16: AVX512-BF16 or AMX).
    """
    wanted = os.environ.get(CPU_BF16_ENV, "auto").strip().lower()
    if wanted not in {"0", "1", "auto", ""}:
        raise ValueError(f"{CPU_BF16_ENV}={wanted!r} is unknown; use 0 (fp32), 1 (bf16 where safe) or auto")
    if wanted == "0":
        return False
    if wanted == "1":
        return cpu_bf16_safe()
    return cpu_bf16_speedup() >= FAST_BF16_RATIO


def autocast(model_or_device=None, enabled: bool | None = None):
    """A context for forward passes: bf16 autocast on a CPU that does bf16 fast, else a plain context.

    `enabled=None` follows `cpu_mixed_precision()`; False always gives a plain context (to measure
    fp32 itself, as lab 02 does); True asks for bf16 where it is safe. Only a CPU model whose floating
    weights are all fp32 is autocast: a model already in bf16, on a GPU, or quantized is left as it is.
    """

    import torch

    if enabled is False:
        return contextlib.nullcontext()
    if isinstance(model_or_device, torch.nn.Module):
        params = [p for p in model_or_device.parameters() if p.is_floating_point()]
        device = params[0].device if params else torch.device("cpu")
        quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized")
                        for m in model_or_device.modules())
        if quantized or any(p.dtype != torch.float32 for p in params):
            return contextlib.nullcontext()
    else:
        device = as_device(model_or_device)
    if device.type != "cpu":
        return contextlib.nullcontext()
    on = cpu_bf16_safe() if enabled else cpu_mixed_precision()
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


CPU_PACKED_ENV = "LABS_CPU_PACKED"
PACKED_PROBE_CODE = (
    "import torch\n"
    "torch.manual_seed(0)\n"
    "layer = torch.nn.Linear(96, 80)\n"
    "packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), 16)\n"
    "with torch.no_grad():\n"
    "    for shape in ((1, 96), (16, 96), (3, 40, 96)):\n"
    "        x = torch.randn(*shape)\n"
    "        got = torch.ops.mkldnn._linear_pointwise(x, packed, layer.bias, 'none', [], '')\n"
    "        assert torch.allclose(got, layer(x), rtol=1e-4, atol=1e-5), shape\n"
)
_packed_ok: bool | None = None


def cpu_packed_linear_ok(use_cache: bool = True) -> bool:
    """Whether oneDNN's linear with a pre-packed fp32 weight runs here and agrees with torch's own.

    Probed once per machine in a child process (a crash there cannot hurt this one) and cached beside the
    bf16 probe. $LABS_CPU_PACKED=0 switches the packed path off.
    """
    global _packed_ok
    if os.environ.get(CPU_PACKED_ENV, "").strip() == "0":
        return False
    if _packed_ok is not None and use_cache:
        return _packed_ok
    key = _cpu_fingerprint()
    cached = _read_cache("packed_linear_probe.json", key).get("ok") if use_cache else None
    if isinstance(cached, bool):
        ok = cached
    else:
        ok = _run_probe(PACKED_PROBE_CODE, dict(os.environ), 120.0)
        if use_cache:
            _write_cache("packed_linear_probe.json", {"key": key, "ok": ok})
    _packed_ok = ok
    return ok


PACKED_MAX_SHARE_OF_FREE_MEMORY = 0.25  # the packed copies are extra memory; never take more than this share


@contextlib.contextmanager
def packed_linears(*models):
    """A context for inference on the CPU: each fp32 nn.Linear of `models` multiplies by a copy of its weight
    packed once (a model given as None is skipped; a layer two models share is packed once).

    torch's fp32 CPU matmul repacks the weight matrix at every call. Decoding runs the model on one token
    per sequence, so that copy costs more than the arithmetic: packing each weight once for oneDNN made
    the layers' matmuls 2.5x faster for 16 sequences at a time, 1.1x on a 6,600-token prefill, and
    generating 60 DialogSum summaries with the embedded model 1.28x faster, with the same text. Packing
    the embedded model takes about 0.1 s and as much memory again as its linear weights, until the
    context ends.

    A call falls back to the ordinary layer whenever its result needs a gradient, autocast is on, the
    input is not fp32, or the weight changed since it was packed, so the context is safe around any code.
    It does nothing off the CPU, where the probe (`cpu_packed_linear_ok`) failed, or when the copies would
    take more than a quarter of the free memory.
    """
    import torch

    found = {id(m): m for model in models if model is not None for m in model.modules()}
    layers = [m for m in found.values()
              if type(m) is torch.nn.Linear and "forward" not in vars(m) and m.weight.device.type == "cpu"
              and m.weight.dtype == torch.float32 and m.weight.dim() == 2]
    size = sum(m.weight.numel() * 4 for m in layers)
    if not layers or torch.is_autocast_enabled("cpu") or not cpu_packed_linear_ok() or \
            size > PACKED_MAX_SHARE_OF_FREE_MEMORY * _free_memory_bytes():
        yield
        return
    try:
        for layer in layers:
            layer.forward = _packed_forward(layer)
        yield
    finally:
        for layer in layers:
            vars(layer).pop("forward", None)


def _packed_forward(layer):
    """`layer.forward`, multiplying by a oneDNN-packed copy of the weight while nothing asks for more."""
    import torch
    import torch.nn.functional as F

    weight = layer.weight
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 16)
    version = weight._version

    def forward(x):
        if (x.dtype != torch.float32 or layer.weight is not weight or weight._version != version
                or torch.is_autocast_enabled("cpu")
                or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
            return F.linear(x, layer.weight, layer.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, layer.bias, "none", [], "")

    return forward


def _free_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # no psutil, or no answer: assume enough for a small model
        return 8 * 2**30


def pick_device(prefer: str | None = None):
    """The torch device to use: `prefer` or $LABS_DEVICE if given, else CUDA, then MPS, then CPU."""
    import torch

    wanted = prefer or os.environ.get("LABS_DEVICE")
    if wanted:
        wanted = str(wanted).lower()
        if wanted not in {"cuda", "mps", "cpu"} and not wanted.startswith("cuda:"):
            raise ValueError(f"device={wanted!r} is unknown; use 'cuda', 'cuda:N', 'mps' or 'cpu'")
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={wanted!r} was asked for but no CUDA GPU is visible; use 'cpu'")
        if wanted == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device='mps' was asked for but Apple's MPS backend is not available; use 'cpu'")
        return torch.device(wanted)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_device(device=None):
    """`device` (a name such as "cuda:1" or a torch.device) as a torch.device; None: `pick_device()`."""
    import torch

    if device is None:
        return pick_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is unknown; use 'cuda', 'cuda:N', 'mps' or 'cpu' (or a torch.device)") \
            from None


def choose_dtype(device=None):
    """Compute dtype for a device: bf16 where it really works, fp16 on older GPUs, fp32 otherwise.

    On CPUs we stay in fp32: bf16 there is slow without AMX and can crash (see module docstring).
    """
    import torch

    device = as_device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        try:
            x = torch.ones(8, 8, dtype=torch.bfloat16, device=device)
            (x @ x).sum().item()
            return torch.bfloat16
        except (RuntimeError, TypeError):
            return torch.float16
    return torch.float32


def trainer_precision(device=None) -> dict[str, bool]:
    """Precision flags for transformers/TRL training arguments (TRL defaults bf16=True).

    On a CPU, bf16 mixed precision only where `cpu_mixed_precision()` says bf16 is safe and fast.
    """
    import torch

    device = as_device(device)
    dtype = choose_dtype(device)
    return {
        "bf16": (device.type == "cuda" and dtype == torch.bfloat16) or (device.type == "cpu" and cpu_mixed_precision()),
        "fp16": device.type == "cuda" and dtype == torch.float16,
        "use_cpu": device.type == "cpu",
    }


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run repeats on the same machine."""
    import random

    import numpy as np
    import torch

    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def environment_summary(profile=None) -> str:
    """One line saying what this run is on: profile, versions, device, dtype, threads, memory."""
    from importlib.metadata import version

    import psutil
    import torch

    from .profiles import get_profile

    prof = get_profile(profile)
    device = pick_device()
    dtype = str(choose_dtype(device)).replace("torch.", "")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        mem = torch.cuda.get_device_properties(device).total_memory / 2**30
        where = f"cuda ({name}, {mem:.0f} GiB)"
    else:
        threads = torch.get_num_threads()
        where = f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"
    ram = psutil.virtual_memory().total / 2**30
    bf16 = {"ok": "ok", "capped": f"ok with {ONEDNN_ENV}={SAFE_ISA}", "unsafe": "unsafe, fp32 only"}[guard_cpu_bf16()]
    if device.type == "cpu" and guard_cpu_bf16() != "unsafe":
        speed = f"{cpu_bf16_speedup():.1f}x fp32"
        bf16 += f" ({speed}): training in bf16 mixed precision" if cpu_mixed_precision() else f" ({speed}): training in fp32"
    return (f"labhelpers {version('labhelpers')} | profile {prof.name} | Python {platform.python_version()}"
            f" | torch {torch.__version__} | transformers {version('transformers')} | device {where}"
            f" | dtype {dtype} | CPU bf16 {bf16} | RAM {ram:.0f} GiB")
