"""Measuring memory for real: the peak a piece of work reaches, on a GPU or on the CPU.

    with peak_memory() as mem:
        loss = model(**batch).loss
        loss.backward()
    print(mem)              # "peak 2.31 GiB (+1.12 GiB over the 1.19 GiB before), cuda max allocated"

On CUDA this is the allocator's own high-water mark (`torch.cuda.max_memory_allocated`, reset when
the block starts). On a CPU there is no such counter that can be reset, so a background thread
samples the process's resident memory every few milliseconds; a spike shorter than the interval can
be missed, so treat CPU peaks as slightly low. On Linux it counts anonymous memory only (RSS less the
pages mapped from files): a model's weights mapped from its safetensors file, and library code paged
in by the first backward pass, are read on first use and would otherwise count as the memory of
whatever touched them first. Freed memory is not always returned to the operating system, so compare
CPU peaks measured in fresh processes (see benchmarks/).

The calculators that predict this memory (bytes per number, `training_memory`, activations, LoRA's
parameter count) are written in notebooks/02_memory_precision_quantization.ipynb and exported to
`labhelpers.lessons.memory_precision_quantization`; `from labhelpers import training_memory` finds them.
This module keeps what they read from a model (`architecture`) and check arguments with (`as_count`).

Measuring the same thing: `measure_training_step` runs real AdamW steps in a fresh process and reports
the peak, and, counted tensor by tensor, the gradients, optimizer states and the activations autograd
saved (`saved_for_backward`), so each term of the prediction can be checked on its own.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

GIB = 1024**3


@dataclass
class PeakMemory:
    """What a `peak_memory` block measured, in bytes."""

    device: str
    method: str
    baseline_bytes: int = 0
    peak_bytes: int = 0

    @property
    def increase_bytes(self) -> int:
        """How far above the starting point the peak went."""
        return max(0, self.peak_bytes - self.baseline_bytes)

    def __str__(self) -> str:
        return (f"peak {self.peak_bytes / GIB:.2f} GiB (+{self.increase_bytes / GIB:.2f} GiB over the "
                f"{self.baseline_bytes / GIB:.2f} GiB before), {self.method}")


def resident_bytes(process=None) -> tuple[int, str]:
    """The process's resident memory that is its own, in bytes, and what was counted.

    On Linux: anonymous memory, RSS less the resident pages mapped from files (library code, a model's
    weights mapped from disk; the kernel can drop and re-read those) and shared memory. Elsewhere, RSS.
    """
    import psutil

    info = (process or psutil.Process()).memory_info()
    shared = getattr(info, "shared", None)  # Linux only: /proc/self/statm's file-backed and shared pages
    if shared is None:
        return info.rss, "process RSS"
    return info.rss - shared, "process anonymous memory (RSS less file-mapped pages)"


class _RssSampler(threading.Thread):
    def __init__(self, interval_s: float):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak, self.counted = resident_bytes(self.process)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, resident_bytes(self.process)[0])
            time.sleep(self.interval_s)

    def stop(self) -> int:
        self.stopped.set()
        self.join()
        self.peak = max(self.peak, resident_bytes(self.process)[0])
        return self.peak


def release_freed_memory() -> int:
    """Collect garbage and hand freed heap memory back to the operating system; returns the process's own
    resident memory after, in bytes (`resident_bytes`, what `peak_memory` counts).

    glibc keeps freed blocks for reuse, so after one training run the process's resident memory stays
    near that run's peak, and the next run measured by RSS would seem to need almost nothing more.
    `malloc_trim(0)` returns that memory (Linux with glibc; elsewhere only the garbage collection runs).
    On CUDA it also empties PyTorch's cache of freed blocks.
    """
    import ctypes
    import ctypes.util
    import gc
    import sys

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return resident_bytes()[0]


class peak_memory:  # noqa: N801  (used as a context manager, like a function)
    """Context manager measuring the peak memory of the work inside it (see the module docstring).

    `device`: "cuda", "cuda:1", "cpu" or a torch.device (default: where labhelpers would run).
    `interval_s`: CPU sampling interval (default 2 ms).
    """

    def __init__(self, device=None, interval_s: float = 0.002):
        if not isinstance(interval_s, (int, float)) or not 0 < interval_s <= 1:
            raise ValueError(f"interval_s={interval_s!r} must be between 0 and 1 second")
        if device is not None:
            from .device import as_device

            as_device(device)  # an unknown name fails here, naming it, rather than when the block starts
        self.device = device
        self.interval_s = float(interval_s)
        self.result: PeakMemory | None = None
        self._sampler: _RssSampler | None = None

    def __enter__(self) -> PeakMemory:
        import torch

        from .device import pick_device

        device = pick_device() if self.device is None else torch.device(self.device)
        self._device = device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.result = PeakMemory(str(device), "cuda max allocated", torch.cuda.memory_allocated(device))
        else:
            release_freed_memory()  # so the baseline is what is in use, not what earlier work left cached
            self._sampler = _RssSampler(self.interval_s)
            self.result = PeakMemory(str(device), f"{self._sampler.counted} sampled every "
                                                  f"{self.interval_s * 1000:.0f} ms", self._sampler.peak)
            self._sampler.start()
        return self.result

    def __exit__(self, *exc) -> bool:
        import torch

        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
            self.result.peak_bytes = torch.cuda.max_memory_allocated(self._device)
        else:
            self.result.peak_bytes = self._sampler.stop()
        return False




class saved_for_backward:  # noqa: N801  (used as a context manager, like a function)
    """Context manager counting the bytes autograd keeps for the backward pass of the work inside it.

        with saved_for_backward(model) as saved:
            loss = model(**batch).loss
        print(saved.bytes / GIB)   # the activations of this forward pass, exactly, whatever the allocator does

    Every tensor saved for backward is counted once per storage (views of one tensor share it); the
    storages of `model`'s parameters and buffers are left out (they are weights, not activations).
    This is the "activations" term of `training_memory`, measured without sampling memory.
    """

    def __init__(self, model=None):
        self.model = model
        self.bytes = 0
        self.n_tensors = 0
        self._storages: dict[int, int] = {}
        self._context = None

    def _pack(self, tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self._excluded and key not in self._storages:
            self._storages[key] = storage.nbytes()
        return tensor

    def __enter__(self) -> "saved_for_backward":
        import torch

        self._excluded = set()
        if self.model is not None:
            tensors = list(self.model.parameters()) + list(self.model.buffers())
            self._excluded = {t.untyped_storage().data_ptr() for t in tensors}
        self._context = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._context.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._context.__exit__(*exc)
        self.bytes = sum(self._storages.values())
        self.n_tensors = len(self._storages)
        self._storages = {}
        return False


# ---------------------------------------------------------------------------------------------
# Measured memory of a training step, in a fresh process
# ---------------------------------------------------------------------------------------------

def _training_batch(profile, tokenizer, model, batch_size: int, seq_len: int | None):
    """`batch_size` real instruction examples of the profile's train dialogues, of about `seq_len` tokens."""
    from .data import load_dialogues
    from .models import model_family
    from .lessons.instruction_fine_tuning import build_instruction_data
    from .train import PadCollator

    rows = list(load_dialogues(profile=profile)["train"])
    data = build_instruction_data(rows, tokenizer, model, "summary", seed=0)
    examples = sorted(data.examples, key=lambda e: len(e["input_ids"]))
    if len(examples) < batch_size:
        raise ValueError(f"batch_size={batch_size} is more than the {len(examples)} training examples of the profile")
    if seq_len is None:  # the median-length examples
        start = min(len(examples) // 2, len(examples) - batch_size)
    else:  # the window of batch_size consecutive lengths closest to seq_len
        start = min(range(len(examples) - batch_size + 1),
                    key=lambda i: abs(len(examples[i + batch_size - 1]["input_ids"]) - seq_len))
    chosen = [{k: e[k] for k in ("input_ids", "attention_mask", "labels")}
              for e in examples[start:start + batch_size]]
    return PadCollator(tokenizer, model_family(model))(chosen)


def _measure_training_step_here(model_name, profile, batch_size, seq_len, lora_r, gradient_checkpointing, steps,
                                device, answer_only, seed) -> dict:
    """`measure_training_step` in this process (what the fresh child process runs)."""
    import time as _time

    import torch  # the child imported labhelpers first (to unpickle this function), so bf16 is guarded

    from .adapters import add_adapter, lora_config
    from .device import seed_everything
    from .models import load_model
    from .profiles import get_profile
    from .train import answer_only_loss

    prof = get_profile(profile)
    seed_everything(seed)
    model, tokenizer = load_model(model_name, profile=prof, device=device, dtype=torch.float32)
    where = next(model.parameters()).device
    with torch.no_grad():  # weights loaded from a memory-mapped file are paged in only when touched, and copied
        for p in model.parameters():  # on the first update; make them resident now so the baseline counts them
            p.data = p.data.clone()
    batch = {k: v.to(where) for k, v in _training_batch(prof, tokenizer, model, batch_size, seq_len).items()}
    if gradient_checkpointing:  # keep each layer's input only; recompute the rest during backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora_r is not None:
        model = add_adapter(model, lora_config(model, r=lora_r), in_place=True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    loss_of = (lambda: answer_only_loss(model, batch)) if answer_only else (lambda: model(**batch).loss)
    loaded = release_freed_memory() if where.type == "cpu" else torch.cuda.memory_allocated(where)
    results = []
    for step in range(steps):
        started = _time.perf_counter()
        with peak_memory(where) as mem:
            with saved_for_backward(model) as saved:
                loss = loss_of()
            loss.backward()
            gradients = sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del loss
        states = sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
                     if torch.is_tensor(v) and v.dim() > 0)
        results.append({"step": step + 1, "baseline_bytes": mem.baseline_bytes, "peak_bytes": mem.peak_bytes,
                        "saved_activation_bytes": saved.bytes, "gradient_bytes": gradients,
                        "optimizer_state_bytes": states, "seconds": _time.perf_counter() - started})
    name = ("full" if lora_r is None else f"lora r={lora_r}") + (" + checkpointing" if gradient_checkpointing else "")
    return {"config": name, "model": model_name or prof.model, "profile": prof.name, "device": str(where),
            "method": mem.method, "batch_size": int(batch["input_ids"].shape[0]),
            "seq_len": int(batch["input_ids"].shape[1]), "tokens": int(batch["attention_mask"].sum()),
            "n_params": sum(p.numel() for p in model.parameters() if not p.requires_grad or lora_r is None),
            "trainable_params": sum(p.numel() for p in trainable), "lora_r": lora_r,
            "gradient_checkpointing": bool(gradient_checkpointing), "answer_only": bool(answer_only),
            "loaded_bytes": int(loaded), "steps": results,
            "peak_increase_bytes": max(r["peak_bytes"] for r in results) - int(loaded)}


def measure_training_step(model_name: str | None = None, profile=None, *, batch_size: int = 2,
                          seq_len: int | None = None, lora_r: int | None = None, gradient_checkpointing: bool = False,
                          steps: int = 2, device: str | None = None, answer_only: bool = False, seed: int = 0,
                          fresh_process: bool = True) -> dict:
    """Measure the peak memory of `steps` AdamW training steps of a model, in a fresh Python process.

    Loads `model_name` (default: the profile's model) in fp32, takes `batch_size` of the profile's
    real instruction examples of about `seq_len` tokens (default: median length), optionally adds a
    LoRA adapter of rank `lora_r` (q,k,v,o) and gradient checkpointing, then runs forward, backward and
    an AdamW step `steps` times, each inside `peak_memory` and `saved_for_backward`. The loss is the
    model's own over every position (`answer_only=True`: labhelpers' answer-only loss). A fresh Python
    process (a subprocess; `fresh_process=False`: this one) keeps memory that earlier work freed but the
    allocator kept from hiding in the measurement, and works from scripts, notebooks and tests alike.

    Returns a dict: the batch's shape, parameter counts, `loaded_bytes` (memory with the model and
    batch loaded, before training), per step its baseline and peak memory, the bytes of saved activations,
    gradients and optimizer states (counted tensor by tensor), and seconds, and `peak_increase_bytes`
    (highest peak minus `loaded_bytes`: what training added; compare `TrainingMemory.step_increase_bytes`).
    """
    for name, value in (("batch_size", batch_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive whole number")
    for name, value in (("seq_len", seq_len), ("lora_r", lora_r)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be a positive whole number or None")
    profile = getattr(profile, "name", profile)  # a Profile's name crosses the process boundary, not the object
    args = (model_name, profile, batch_size, seq_len, lora_r, bool(gradient_checkpointing), steps,
            None if device is None else str(device), bool(answer_only), seed)
    if not fresh_process:
        return _measure_training_step_here(*args)
    import json
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from labhelpers.memory import _measure_training_step_here as measure\n"
            "print('RESULT ' + json.dumps(measure(*json.loads(sys.argv[1]))))\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, check=False)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not found:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise RuntimeError(f"the process measuring the training step failed (exit {done.returncode}: {last}); "
                           f"out of memory? try a smaller batch_size or seq_len, or fresh_process=False to debug")
    return json.loads(found[-1][len("RESULT "):])


# ---------------------------------------------------------------------------------------------
# What the calculators read from a model, and how they check their arguments
# ---------------------------------------------------------------------------------------------

def as_count(value, argument: str, *, allow_zero: bool = False) -> int:
    """A whole count (floats like 7e9 accepted, zero only with `allow_zero`), else a one-line ValueError naming `argument`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{argument}={value!r} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{argument}={value!r} must be {'zero or more' if allow_zero else 'positive'}")
    return int(round(value))


def _config_value(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def architecture(model) -> dict:
    """Shape numbers of a decoder-only transformer read from `model.config` (or a config itself)."""
    config = getattr(model, "config", model)
    hidden = _config_value(config, "hidden_size", "n_embd", "d_model")
    heads = _config_value(config, "num_attention_heads", "n_head", "num_heads")
    if hidden is None and heads is None:
        raise TypeError(f"model must be a transformers model or config with hidden_size and num_attention_heads, "
                        f"not {type(model).__name__}")
    shape = {"n_layers": _config_value(config, "num_hidden_layers", "n_layer", "num_layers"),
             "hidden_size": hidden, "n_heads": heads,
             "n_kv_heads": _config_value(config, "num_key_value_heads", default=heads),
             "head_dim": _config_value(config, "head_dim"),
             "intermediate_size": _config_value(config, "intermediate_size", "n_inner", "d_ff", "ffn_dim"),
             "vocab_size": _config_value(config, "vocab_size"),
             "dropout": float(_config_value(config, "attention_dropout", "attn_pdrop", "dropout", default=0.0) or 0.0) > 0}
    if hasattr(model, "named_modules"):
        shape["gated_mlp"] = any(name.endswith(("gate_proj", "w1", "wi_0")) for name, _ in model.named_modules())
    else:
        shape["gated_mlp"] = str(_config_value(config, "hidden_act", default="")) in {"silu", "swiglu"}
    return {k: v for k, v in shape.items() if v is not None}


__all__ = ["GIB", "PeakMemory", "architecture", "as_count", "measure_training_step", "peak_memory",
           "release_freed_memory", "saved_for_backward"]
