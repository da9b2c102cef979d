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

Predicting memory before you train: `training_memory` adds up what a training step holds,

    print(training_memory(n_params=7e9, dtype="bf16", mixed_precision=True, optimizer="adamw"))
    # "104.31 GiB to train 7 B parameters (...): weights 13.04, gradients 13.04, fp32 master weights 26.08, ..."

weights, gradients, an fp32 master copy (mixed precision), optimizer states (SGD, Adam, 8-bit Adam),
for full fine-tuning or LoRA, and the activations of a decoder-only transformer for a batch
(Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models", eq. 1),
optionally with gradient checkpointing. `total_bytes` adds every component up (an upper bound);
`step_peak_bytes` follows a step in time (backward frees activations as it makes gradients), which is
what a measured peak shows. It leaves out what no formula knows: the CUDA context (~0.3-0.5 GiB),
allocator fragmentation, and temporary buffers of particular kernels.

Measuring the same thing: `measure_training_step` runs real AdamW steps in a fresh process and reports
the peak, and, counted tensor by tensor, the gradients, optimizer states and the activations autograd
saved (`saved_for_backward`), so each term of the prediction can be checked on its own.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Mapping

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
    from .train import PadCollator, build_instruction_data

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
# Predicted memory of a training step
# ---------------------------------------------------------------------------------------------

# Bytes one number takes in each storage format (4-bit: two numbers per byte; the small per-block
# scales that int8 and 4-bit formats add are left out).
DTYPE_BYTES: Mapping[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "4bit": 0.5}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "32": "fp32", "float16": "fp16", "half": "fp16",
                  "16": "fp16", "bfloat16": "bf16", "8bit": "int8", "int4": "4bit", "nf4": "4bit", "fp4": "4bit"}
QUANTISED = frozenset({"int8", "4bit"})

# Optimizer state per trained parameter: (full-precision tensors kept, fixed bytes).
# SGD keeps nothing, SGD with momentum one velocity, Adam/AdamW two moments (m and v);
# bitsandbytes' 8-bit Adam keeps both moments in one byte each (plus block scales, under 2%).
OPTIMIZER_STATES: Mapping[str, tuple[int, float]] = {
    "sgd": (0, 0.0), "sgd_momentum": (1, 0.0), "adam": (2, 0.0), "adamw": (2, 0.0),
    "adam_8bit": (0, 2.0), "adamw_8bit": (0, 2.0),
}
_OPTIMIZER_ALIASES = {"sgdmomentum": "sgd_momentum", "momentum": "sgd_momentum", "adam8bit": "adam_8bit",
                      "adamw8bit": "adamw_8bit", "adamwbnb8bit": "adamw_8bit", "bnbadamw8bit": "adamw_8bit"}

# Llama-2-7B (Touvron et al. 2023, and its config.json): the shape the lecture's claim is about.
LLAMA_2_7B: Mapping[str, float] = {"n_params": 6_738_415_616, "n_layers": 32, "hidden_size": 4096, "n_heads": 32,
                                   "intermediate_size": 11008, "vocab_size": 32000, "gated_mlp": True}


def dtype_name(dtype) -> str:
    """A storage format's canonical name ("fp32", "fp16", "bf16", "int8", "4bit") from a string or torch dtype."""
    key = str(dtype).replace("torch.", "").strip().lower().replace("-", "").replace("_", "")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise ValueError(f"dtype={dtype!r} is unknown; use one of {sorted(DTYPE_BYTES)} (or a torch dtype)")
    return key


def bytes_per_number(dtype) -> float:
    """Bytes one weight takes in `dtype` (4 for fp32, 2 for fp16/bf16, 1 for int8, 0.5 for 4-bit)."""
    return DTYPE_BYTES[dtype_name(dtype)]


def optimizer_name(optimizer: str) -> str:
    """An optimizer's canonical name (see OPTIMIZER_STATES), e.g. "AdamW" -> "adamw", "adamw8bit" -> "adamw_8bit"."""
    if not isinstance(optimizer, str):
        raise ValueError(f"optimizer={optimizer!r} must be a name such as 'adamw'; known: {sorted(OPTIMIZER_STATES)}")
    key = optimizer.strip().lower().replace("-", "_").replace(" ", "_")
    key = _OPTIMIZER_ALIASES.get(key.replace("_", ""), key)
    if key not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer={optimizer!r} is unknown; use one of {sorted(OPTIMIZER_STATES)}")
    return key


@dataclass(frozen=True)
class TrainingMemory:
    """What one training step holds, in bytes, component by component (see `training_memory`)."""

    weights_bytes: float
    gradient_bytes: float
    master_weight_bytes: float
    optimizer_state_bytes: float
    activation_bytes: float
    n_params: int  # parameters of the model itself (LoRA adapters not included)
    trainable_params: int  # parameters the optimizer updates
    dtype: str
    optimizer: str
    mixed_precision: bool
    finetuning: str  # "full" or "lora"
    batch_size: int = 0
    seq_len: int | None = None  # None: activations not counted
    gradient_checkpointing: bool = False
    loss_gradient_bytes: float = 0.0  # fp32 gradients of the logits at the start of backward (not in total_bytes)

    @property
    def model_state_bytes(self) -> float:
        """Everything but activations: what the step holds whatever the batch."""
        return self.weights_bytes + self.gradient_bytes + self.master_weight_bytes + self.optimizer_state_bytes

    @property
    def total_bytes(self) -> float:
        """Model states plus activations."""
        return self.model_state_bytes + self.activation_bytes

    @property
    def step_peak_bytes(self) -> float:
        """The highest point of a step whose optimizer states exist: what is held when it is reached.

        Weights, master weights and optimizer states always; on top, the larger of the two phases,
        since backward frees each layer's activations as it makes that layer's gradients: the start of
        backward (all activations plus the loss's gradients) or the optimizer step (all gradients).
        `total_bytes` adds everything up instead: an upper bound.
        """
        return (self.weights_bytes + self.master_weight_bytes + self.optimizer_state_bytes
                + max(self.activation_bytes + self.loss_gradient_bytes, self.gradient_bytes))

    @property
    def step_increase_bytes(self) -> float:
        """`step_peak_bytes` minus the weights: what training adds to a loaded model (as measured in a process)."""
        return self.step_peak_bytes - self.weights_bytes

    @property
    def bytes_per_param(self) -> float:
        """Total bytes per parameter of the model."""
        return self.total_bytes / self.n_params

    @property
    def extra_bytes_per_param(self) -> float:
        """Bytes per parameter beyond the weights themselves (the lecture's "+12 to +20 bytes per parameter")."""
        return (self.total_bytes - self.weights_bytes) / self.n_params

    def times_weights(self, dtype="fp16") -> float:
        """The total as a multiple of the model's weights stored in `dtype` (default fp16, as models ship)."""
        return self.total_bytes / (self.n_params * bytes_per_number(dtype))

    def rows(self) -> list[dict]:
        """One dict per component: bytes, GiB, bytes per model parameter and share of the total."""
        parts = [("weights", self.weights_bytes), ("gradients", self.gradient_bytes),
                 ("fp32 master weights", self.master_weight_bytes),
                 (f"optimizer states ({self.optimizer})", self.optimizer_state_bytes),
                 ("activations" + (" (checkpointed)" if self.gradient_checkpointing else ""), self.activation_bytes),
                 ("total", self.total_bytes)]
        total = self.total_bytes or 1.0
        return [{"component": name, "bytes": int(round(b)), "GiB": b / GIB, "bytes per parameter": b / self.n_params,
                 "share": b / total} for name, b in parts]

    def table(self):
        """The components as a pandas DataFrame indexed by component (for display in a notebook)."""
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("component")

    def describe(self) -> str:
        """The setting in a few words, e.g. "full fine-tuning, bf16 mixed precision, adamw"."""
        precision = f"{self.dtype} mixed precision" if self.mixed_precision else self.dtype
        batch = (f", batch {self.batch_size} x {self.seq_len} tokens" if self.seq_len else ", activations not counted")
        return (f"{'full fine-tuning' if self.finetuning == 'full' else 'LoRA'}, {precision}, {self.optimizer}{batch}"
                + (", gradient checkpointing" if self.gradient_checkpointing else ""))

    def __str__(self) -> str:
        parts = ", ".join(f"{r['component']} {r['GiB']:.2f}" for r in self.rows()[:-1] if r["bytes"] > 0)
        return (f"{self.total_bytes / GIB:.2f} GiB to train {self.n_params / 1e9:.3g} B parameters "
                f"({self.trainable_params:,} trainable; {self.describe()}): {parts} GiB; "
                f"{self.bytes_per_param:.1f} bytes/parameter, {self.times_weights('fp16'):.1f}x the fp16 weights")


def _count(value, argument: str, *, allow_zero: bool = False) -> int:
    """A non-negative whole count (floats like 7e9 accepted), else a one-line ValueError naming the argument."""
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


def lora_trainable_params(model, config) -> int:
    """Parameters a peft LoraConfig would add to `model`: r * (inputs + outputs) per adapted layer, plus modules_to_save."""
    import re

    from peft.tuners.tuners_utils import check_target_module_exists

    if not hasattr(model, "named_modules"):
        raise ValueError(f"model must be a torch model to count LoRA parameters from a config, "
                         f"not {type(model).__name__}; or pass lora=<number of adapter parameters>")
    if not (hasattr(config, "r") and hasattr(config, "target_modules")):
        raise TypeError(f"config must be a peft LoraConfig (see labhelpers.adapters.lora_config), "
                        f"not {type(config).__name__}")
    rank_pattern = getattr(config, "rank_pattern", None) or {}
    total = 0
    for name, module in model.named_modules():
        if not name or not check_target_module_exists(config, name):
            continue
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() < 2:
            continue
        rank = next((r for pattern, r in rank_pattern.items() if re.search(pattern, name)), config.r)
        total += rank * (weight.shape[0] + weight.shape[1])  # A: r x in, B: out x r (Linear, Conv1D, Embedding)
    for keep in getattr(config, "modules_to_save", None) or []:
        for name, module in model.named_modules():
            if name == keep or name.endswith("." + keep):
                total += sum(p.numel() for p in module.parameters())
    return total


def activation_bytes_per_layer(batch_size: int, seq_len: int, hidden_size: int, n_heads: int, *,
                               intermediate_size: int | None = None, n_kv_heads: int | None = None,
                               head_dim: int | None = None, gated_mlp: bool = False, dropout: bool = False,
                               flash_attention: bool = False, bytes_per_activation: float = 2) -> float:
    """Bytes one transformer layer keeps for the backward pass (Korthikanti et al. 2022, eq. 1, generalised).

    With the paper's assumptions (16-bit, dropout, 4h MLP, plain attention) this is exactly
    s*b*h*(34 + 5*a*s/h). Per token it stores: the inputs of both norms, the attention input, Q, K, V
    and the attention output (8h numbers with the 2 MLP tensors below), the a*s softmax scores
    (none with flash attention, which recomputes them), the MLP's hidden tensors (2 of size i, or 4 for a
    gated SwiGLU MLP), and with dropout a second copy of the scores and 1-byte masks.
    """
    h, a = _count(hidden_size, "hidden_size"), _count(n_heads, "n_heads")
    s, b = _count(seq_len, "seq_len"), _count(batch_size, "batch_size")
    i = 4 * h if intermediate_size is None else _count(intermediate_size, "intermediate_size")
    d = h // a if head_dim is None else _count(head_dim, "head_dim")
    kv = a if n_kv_heads is None else _count(n_kv_heads, "n_kv_heads")
    if isinstance(bytes_per_activation, bool) or not isinstance(bytes_per_activation, (int, float)) \
            or not 0 < bytes_per_activation <= 8:
        raise ValueError(f"bytes_per_activation={bytes_per_activation!r} must be a number of bytes such as 2 or 4")
    numbers = 4 * h + 2 * a * d + 2 * kv * d + (4 if gated_mlp else 2) * i  # norm/attention/MLP tensors per token
    scores = 0 if flash_attention else a * s * (2 if dropout else 1)  # softmax output (+ dropout output)
    mask_bytes = (0 if flash_attention else a * s) + 2 * h if dropout else 0
    return s * b * ((numbers + scores) * bytes_per_activation + mask_bytes)


def training_memory(model=None, *, n_params: float | None = None, dtype="fp32", optimizer: str = "adamw",
                    mixed_precision: bool = False, lora=None, trainable_dtype=None,
                    batch_size: int = 1, seq_len: int | None = None, gradient_checkpointing: bool = False,
                    flash_attention: bool | None = None, activation_dtype=None, n_layers: int | None = None,
                    hidden_size: int | None = None, n_heads: int | None = None, n_kv_heads: int | None = None,
                    head_dim: int | None = None, intermediate_size: int | None = None, vocab_size: int | None = None,
                    gated_mlp: bool | None = None, dropout: bool | None = None) -> TrainingMemory:
    """Predict the memory of one training step: weights, gradients, master weights, optimizer states, activations.

    `model`: a transformers model (its config gives the shape, its parameters the count; a PeftModel
    counts as LoRA with its trainable parameters), or None with `n_params` and, for activations, the
    shape numbers (e.g. `**LLAMA_2_7B`). `dtype`: how the weights are stored (fp32, fp16, bf16, int8, 4bit).
    `mixed_precision`: train 16-bit weights with an fp32 master copy, and fp32 optimizer states.
    `lora`: a peft LoraConfig (needs `model`) or the adapter's parameter count; the base stays frozen and
    the adapter is kept in `trainable_dtype` (default fp32, as PEFT upcasts adapters). Activations are
    counted when `seq_len` is given, in `activation_dtype` (default: fp32 for fp32 training, else 16-bit).
    `flash_attention`: whether attention recomputes its a*s*s scores instead of keeping them; default:
    read from the model (PyTorch's SDPA and flash-attention kernels do, "eager" attention does not; measured
    on SmolLM2 with SDPA on a CPU, no score tensor is saved), False without a model.
    """
    dtype = dtype_name(dtype)
    optimizer = optimizer_name(optimizer)
    shape = {}
    base_params, adapter_params = None, None
    if model is not None:
        if not (hasattr(model, "parameters") or hasattr(model, "hidden_size") or hasattr(model, "n_embd")):
            raise ValueError(f"model={type(model).__name__} is neither a torch model nor a transformers config; "
                             f"pass a model or n_params=...")
        shape = architecture(model)
        if flash_attention is None:
            config = getattr(model, "config", model)
            kernel = str(getattr(config, "_attn_implementation", None) or "eager")
            flash_attention = kernel != "eager"  # sdpa, flash_attention_2/3, flex_attention: scores not kept
        if hasattr(model, "parameters"):
            params = list(model.parameters())  # parameters() lists tied weights once
            if hasattr(model, "peft_config"):  # a PeftModel: the adapter is what trains
                adapter_params = sum(p.numel() for p in params if p.requires_grad)
                base_params = sum(p.numel() for p in params) - adapter_params
            else:
                base_params = sum(p.numel() for p in params)
    if n_params is not None:
        base_params = _count(n_params, "n_params")
    if base_params is None:
        raise ValueError("n_params is missing: pass a model, or n_params=<number of parameters> (e.g. 7e9)")
    if base_params <= 0:
        raise ValueError(f"n_params={base_params!r} must be positive")
    explicit = {"n_layers": n_layers, "hidden_size": hidden_size, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
                "head_dim": head_dim, "intermediate_size": intermediate_size, "vocab_size": vocab_size}
    for name, value in explicit.items():
        if value is not None:
            shape[name] = _count(value, name)
    for name, value in (("gated_mlp", gated_mlp), ("dropout", dropout)):
        if value is not None:
            shape[name] = bool(value)

    if lora is not None:
        if isinstance(lora, bool) or not isinstance(lora, (int, float)):
            if model is None or not hasattr(model, "named_modules"):
                raise ValueError("lora=<LoraConfig> needs model=<the model it adapts>; or pass lora=<adapter parameters>")
            if not hasattr(lora, "r"):
                raise ValueError(f"lora={type(lora).__name__} must be a peft LoraConfig or a number of parameters")
            adapter_params = lora_trainable_params(model, lora)
        else:
            adapter_params = _count(lora, "lora", allow_zero=True)
    finetuning = "full" if adapter_params is None else "lora"
    if finetuning == "full" and dtype in QUANTISED:
        raise ValueError(f"dtype={dtype!r} weights are frozen quantised numbers that an optimizer cannot update; "
                         f"train a LoRA adapter on them (lora=...), as QLoRA does, or use fp32/bf16/fp16")
    if mixed_precision and finetuning == "full" and dtype not in {"fp16", "bf16"}:
        raise ValueError(f"mixed_precision=True trains 16-bit weights with an fp32 master copy; "
                         f"dtype={dtype!r} must then be 'bf16' or 'fp16'")
    if trainable_dtype is None:
        trainable_dtype = dtype if finetuning == "full" else "fp32"
    trainable_dtype = dtype_name(trainable_dtype)
    if trainable_dtype in QUANTISED:
        raise ValueError(f"trainable_dtype={trainable_dtype!r} cannot be trained; use fp32, bf16 or fp16")

    trainable = base_params if finetuning == "full" else adapter_params
    frozen = 0 if finetuning == "full" else base_params
    trained_bytes = DTYPE_BYTES[trainable_dtype]
    weights = frozen * DTYPE_BYTES[dtype] + trainable * trained_bytes
    gradients = trainable * trained_bytes
    master = trainable * 4.0 if mixed_precision and trained_bytes < 4 else 0.0
    n_states, fixed_bytes = OPTIMIZER_STATES[optimizer]
    state_bytes = 4.0 if (mixed_precision or trained_bytes == 4) else trained_bytes  # torch keeps states in param dtype
    states = trainable * (n_states * state_bytes + fixed_bytes)

    batch_size = _count(batch_size, "batch_size")
    activations = loss_gradients = 0.0
    flash_attention = bool(flash_attention)
    if seq_len is not None:
        seq_len = _count(seq_len, "seq_len")
        missing = [k for k in ("n_layers", "hidden_size", "n_heads", "vocab_size") if k not in shape]
        if missing:
            raise ValueError(f"{missing[0]} is missing: activations need the model's shape; pass a model or "
                             f"{', '.join(f'{k}=...' for k in missing)} (or leave seq_len=None)")
        if activation_dtype is None:
            activation_dtype = "fp32" if dtype == "fp32" and not mixed_precision else (
                dtype if dtype in {"fp16", "bf16"} else "bf16")
        e = DTYPE_BYTES[dtype_name(activation_dtype)]
        if dtype_name(activation_dtype) in QUANTISED:
            raise ValueError(f"activation_dtype={activation_dtype!r} must be fp32, bf16 or fp16")
        layer = activation_bytes_per_layer(
            batch_size, seq_len, shape["hidden_size"], shape["n_heads"],
            intermediate_size=shape.get("intermediate_size"), n_kv_heads=shape.get("n_kv_heads"),
            head_dim=shape.get("head_dim"), gated_mlp=shape.get("gated_mlp", False),
            dropout=shape.get("dropout", False), flash_attention=flash_attention, bytes_per_activation=e)
        tokens = batch_size * seq_len
        # logits [b, s, vocab] in the activation dtype, their fp32 copy for the loss (when 16-bit),
        # and the fp32 log-probabilities cross-entropy keeps for the backward pass
        logits = tokens * shape["vocab_size"] * (e + 4 + (4 if e < 4 else 0))
        final_norm = 2 * tokens * shape["hidden_size"] * e  # final norm input and the output layer's input
        if gradient_checkpointing:  # keep each layer's input; one layer's activations exist again in its backward
            layers = shape["n_layers"] * tokens * shape["hidden_size"] * e + layer
        else:
            layers = shape["n_layers"] * layer
        activations = layers + logits + final_norm
        # the backward pass starts at the loss: gradients of the log-probabilities and of the logits (fp32,
        # [b, s, vocab] each) exist while every activation is still held (measured: 2 logits-sized tensors)
        loss_gradients = 2 * tokens * shape["vocab_size"] * 4
    return TrainingMemory(weights_bytes=float(weights), gradient_bytes=float(gradients), master_weight_bytes=master,
                          optimizer_state_bytes=float(states), activation_bytes=float(activations),
                          loss_gradient_bytes=float(loss_gradients),
                          n_params=base_params, trainable_params=int(trainable), dtype=dtype, optimizer=optimizer,
                          mixed_precision=bool(mixed_precision), finetuning=finetuning, batch_size=batch_size,
                          seq_len=seq_len, gradient_checkpointing=bool(gradient_checkpointing))


def training_memory_table(scenarios: Mapping[str, Mapping], **common):
    """One row per named scenario (keyword arguments of `training_memory`, on top of `common`): GiB per component."""
    import pandas as pd

    if not isinstance(scenarios, Mapping) or not scenarios:
        raise ValueError("scenarios must be a non-empty dict of name -> training_memory keyword arguments")
    rows = {}
    for name, kwargs in scenarios.items():
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"scenarios[{name!r}] must be a dict of training_memory keyword arguments, "
                            f"not {type(kwargs).__name__}")
        mem = training_memory(**{**common, **kwargs})
        rows[name] = {r["component"].split(" (")[0]: r["GiB"] for r in mem.rows()}
        rows[name]["bytes per parameter"] = mem.bytes_per_param
        rows[name]["x fp16 weights"] = mem.times_weights("fp16")
    return pd.DataFrame(rows).T


__all__ = ["DTYPE_BYTES", "GIB", "LLAMA_2_7B", "OPTIMIZER_STATES", "PeakMemory", "TrainingMemory",
           "activation_bytes_per_layer", "architecture", "bytes_per_number", "dtype_name", "lora_trainable_params",
           "measure_training_step", "optimizer_name", "peak_memory", "release_freed_memory", "saved_for_backward",
           "training_memory", "training_memory_table"]
