# Written by `python -m labhelpers.tools.export` from notebooks/02_memory_precision_quantization.ipynb: edit the notebook, then run it again.
"""Lesson code of Lab 02: Memory, precision and quantization: what training holds, and what a number costs."""

from __future__ import annotations

import pandas as pd
from dataclasses import dataclass
from labhelpers import GIB
from labhelpers import architecture
from labhelpers import as_count

__all__ = ['DTYPE_BYTES', 'DTYPE_ALIASES', 'QUANTISED', 'dtype_name', 'bytes_per_number', 'OPTIMIZER_STATES', 'optimizer_name', 'activation_bytes_per_layer', 'lora_trainable_params', 'TrainingMemory', 'model_activation_bytes', 'training_memory', 'LLAMA_2_7B', 'training_memory_table']


# 02_memory_precision_quantization.ipynb, cell 17
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "4bit": 0.5}
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
                 "8bit": "int8", "int4": "4bit", "nf4": "4bit", "fp4": "4bit"}
QUANTISED = ("int8", "4bit")  # frozen numbers an optimizer cannot update


def dtype_name(dtype):
    """A format's short name ("fp32", "fp16", "bf16", "int8", "4bit") from a string or a torch dtype."""
    key = str(dtype).replace("torch.", "").strip().lower().replace("-", "").replace("_", "")
    key = DTYPE_ALIASES.get(key, key)
    if key not in DTYPE_BYTES:
        raise ValueError(f"dtype={dtype!r} is unknown; use one of {sorted(DTYPE_BYTES)} (or a torch dtype)")
    return key


def bytes_per_number(dtype):
    """Bytes one weight takes in `dtype`: 4 for fp32, 2 for fp16 and bf16, 1 for int8, 0.5 for 4-bit."""
    return DTYPE_BYTES[dtype_name(dtype)]


# 02_memory_precision_quantization.ipynb, cell 24
# Optimizer state per trained parameter: (full-precision tensors kept, fixed bytes). bitsandbytes' 8-bit
# Adam keeps both moments in one byte each (plus block scales, under 2%).
OPTIMIZER_STATES = {"sgd": (0, 0.0), "sgd_momentum": (1, 0.0), "adam": (2, 0.0), "adamw": (2, 0.0),
                    "adam_8bit": (0, 2.0), "adamw_8bit": (0, 2.0)}


def optimizer_name(optimizer):
    """An optimizer's name as OPTIMIZER_STATES spells it: "AdamW" -> "adamw", "adamw-8bit" -> "adamw_8bit"."""
    key = optimizer.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(optimizer, str) else None
    key = {"momentum": "sgd_momentum", "adam8bit": "adam_8bit", "adamw8bit": "adamw_8bit"}.get(key, key)
    if key not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer={optimizer!r} is unknown; use one of {sorted(OPTIMIZER_STATES)}")
    return key


# 02_memory_precision_quantization.ipynb, cell 26
def activation_bytes_per_layer(batch_size, seq_len, hidden_size, n_heads, *, intermediate_size=None, n_kv_heads=None,
                               head_dim=None, gated_mlp=False, dropout=False, flash_attention=False,
                               bytes_per_activation=2):
    """Bytes one transformer layer keeps for the backward pass (Korthikanti et al. 2022, eq. 1, generalised).

    With the paper's assumptions (16-bit, dropout, a 4h MLP, plain attention) this is s*b*h*(34 + 5*a*s/h).
    """
    h, a = as_count(hidden_size, "hidden_size"), as_count(n_heads, "n_heads")
    s, b = as_count(seq_len, "seq_len"), as_count(batch_size, "batch_size")
    i = 4 * h if intermediate_size is None else as_count(intermediate_size, "intermediate_size")
    d = h // a if head_dim is None else as_count(head_dim, "head_dim")
    kv = a if n_kv_heads is None else as_count(n_kv_heads, "n_kv_heads")
    if isinstance(bytes_per_activation, bool) or not isinstance(bytes_per_activation, (int, float)) \
            or not 0 < bytes_per_activation <= 8:
        raise ValueError(f"bytes_per_activation={bytes_per_activation!r} must be a number of bytes such as 2 or 4")
    # per token: both norms' inputs, the attention input and output, Q, K and V, the MLP's hidden tensors
    numbers = 4 * h + 2 * a * d + 2 * kv * d + (4 if gated_mlp else 2) * i
    scores = 0 if flash_attention else a * s * (2 if dropout else 1)  # softmax output (and dropout's)
    mask_bytes = (0 if flash_attention else a * s) + 2 * h if dropout else 0  # 1-byte dropout masks
    return s * b * ((numbers + scores) * bytes_per_activation + mask_bytes)


# 02_memory_precision_quantization.ipynb, cell 28
def lora_trainable_params(model, config):
    """Parameters a peft LoraConfig adds to `model`: r * (inputs + outputs) per adapted layer, plus modules_to_save."""
    import re

    from peft.tuners.tuners_utils import check_target_module_exists

    if not hasattr(model, "named_modules"):
        raise ValueError(f"model must be a torch model to count LoRA parameters from a config, "
                         f"not {type(model).__name__}; or pass lora=<number of adapter parameters>")
    if not (hasattr(config, "r") and hasattr(config, "target_modules")):
        raise TypeError(f"config must be a peft LoraConfig (see labhelpers.adapters.lora_config), not {type(config).__name__}")
    rank_pattern = getattr(config, "rank_pattern", None) or {}
    total = 0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if name and weight is not None and weight.dim() >= 2 and check_target_module_exists(config, name):
            rank = next((r for pattern, r in rank_pattern.items() if re.search(pattern, name)), config.r)
            total += rank * (weight.shape[0] + weight.shape[1])  # A: r x in, B: out x r
    for keep in getattr(config, "modules_to_save", None) or []:  # layers trained whole, beside the adapters
        total += sum(p.numel() for name, module in model.named_modules() if name == keep or name.endswith("." + keep)
                     for p in module.parameters())
    return total


# 02_memory_precision_quantization.ipynb, cell 30
@dataclass(frozen=True)
class TrainingMemory:
    """What one training step holds, in bytes, term by term (see `training_memory`)."""

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
    loss_gradient_bytes: float = 0.0  # the loss's fp32 gradients at the start of backward (not in total_bytes)

    @property
    def model_state_bytes(self):
        """Weights, gradients, master weights and optimizer states: what the step holds whatever the batch."""
        return self.weights_bytes + self.gradient_bytes + self.master_weight_bytes + self.optimizer_state_bytes

    @property
    def total_bytes(self):
        """Model states plus activations, all added up (an upper bound on the peak)."""
        return self.model_state_bytes + self.activation_bytes

    @property
    def step_peak_bytes(self):
        """The step's highest point: the states, plus every activation and the loss's gradients, or every gradient."""
        return (self.weights_bytes + self.master_weight_bytes + self.optimizer_state_bytes
                + max(self.activation_bytes + self.loss_gradient_bytes, self.gradient_bytes))

    @property
    def step_increase_bytes(self):
        """`step_peak_bytes` less the weights: what training adds to a loaded model."""
        return self.step_peak_bytes - self.weights_bytes

    @property
    def bytes_per_param(self):
        return self.total_bytes / self.n_params

    @property
    def extra_bytes_per_param(self):
        """Bytes per parameter beyond the weights (the lecture's "+12 to +20 bytes per parameter")."""
        return (self.total_bytes - self.weights_bytes) / self.n_params

    def times_weights(self, dtype="fp16"):
        """The total as a multiple of the model's weights in `dtype` (default fp16, as models ship)."""
        return self.total_bytes / (self.n_params * bytes_per_number(dtype))

    def rows(self):
        """One dict per term: bytes, GiB, bytes per parameter and share of the total."""
        parts = [("weights", self.weights_bytes), ("gradients", self.gradient_bytes),
                 ("fp32 master weights", self.master_weight_bytes),
                 (f"optimizer states ({self.optimizer})", self.optimizer_state_bytes),
                 ("activations" + (" (checkpointed)" if self.gradient_checkpointing else ""), self.activation_bytes),
                 ("total", self.total_bytes)]
        return [{"component": name, "bytes": int(round(b)), "GiB": b / GIB, "bytes per parameter": b / self.n_params,
                 "share": b / (self.total_bytes or 1.0)} for name, b in parts]

    def table(self):
        return pd.DataFrame(self.rows()).set_index("component")

    def __str__(self):
        setting = ["full fine-tuning" if self.finetuning == "full" else "LoRA",
                   f"{self.dtype} mixed precision" if self.mixed_precision else self.dtype, self.optimizer,
                   f"batch {self.batch_size} x {self.seq_len} tokens" if self.seq_len else "activations not counted"]
        setting += ["gradient checkpointing"] if self.gradient_checkpointing else []
        parts = ", ".join(f"{r['component']} {r['GiB']:.2f}" for r in self.rows()[:-1] if r["bytes"] > 0)
        return (f"{self.total_bytes / GIB:.2f} GiB to train {self.n_params / 1e9:.3g} B parameters "
                f"({self.trainable_params:,} trainable; {', '.join(setting)}): {parts} GiB; "
                f"{self.bytes_per_param:.1f} bytes/parameter, {self.times_weights('fp16'):.1f}x the fp16 weights")


# 02_memory_precision_quantization.ipynb, cell 32
def model_activation_bytes(shape, batch_size, seq_len, bytes_per_activation, *, gradient_checkpointing=False,
                           flash_attention=False):
    """(activations, the loss's gradients) in bytes for a decoder-only model of `shape` (see `architecture`)."""
    missing = [k for k in ("n_layers", "hidden_size", "n_heads", "vocab_size") if k not in shape]
    if missing:
        raise ValueError(f"{missing[0]} is missing: activations need the model's shape; pass a model or "
                         f"{', '.join(f'{k}=...' for k in missing)} (or leave seq_len=None)")
    e, tokens = bytes_per_activation, batch_size * seq_len
    layer = activation_bytes_per_layer(
        batch_size, seq_len, shape["hidden_size"], shape["n_heads"], intermediate_size=shape.get("intermediate_size"),
        n_kv_heads=shape.get("n_kv_heads"), head_dim=shape.get("head_dim"), gated_mlp=shape.get("gated_mlp", False),
        dropout=shape.get("dropout", False), flash_attention=flash_attention, bytes_per_activation=e)
    if gradient_checkpointing:  # each layer keeps its input; one layer's activations exist again in its backward
        layers = shape["n_layers"] * tokens * shape["hidden_size"] * e + layer
    else:
        layers = shape["n_layers"] * layer
    # the logits in the activation dtype, their fp32 copy for the loss (when 16-bit), the fp32 log-probabilities
    logits = tokens * shape["vocab_size"] * (e + 4 + (4 if e < 4 else 0))
    final_norm = 2 * tokens * shape["hidden_size"] * e  # the final norm's input and the output layer's input
    loss_gradients = 2 * tokens * shape["vocab_size"] * 4  # d loss / d log-probabilities and / d logits, fp32
    return layers + logits + final_norm, loss_gradients


# 02_memory_precision_quantization.ipynb, cell 34
def training_memory(model=None, *, n_params=None, dtype="fp32", optimizer="adamw", mixed_precision=False, lora=None,
                    trainable_dtype=None, batch_size=1, seq_len=None, gradient_checkpointing=False,
                    flash_attention=None, activation_dtype=None, n_layers=None, hidden_size=None, n_heads=None,
                    n_kv_heads=None, head_dim=None, intermediate_size=None, vocab_size=None, gated_mlp=None,
                    dropout=None) -> TrainingMemory:
    """Predict the memory of one training step: weights, gradients, master weights, optimizer states, activations.

    `model`: a transformers model (a PeftModel counts as LoRA), or None with `n_params` and, for activations, the
    shape numbers (e.g. `**LLAMA_2_7B`). `dtype`: how the weights are stored. `mixed_precision`: 16-bit weights
    with an fp32 master copy and fp32 optimizer states. `lora`: a peft LoraConfig (with `model`) or the adapter's
    parameter count; the adapter is kept in `trainable_dtype` (default fp32, as PEFT does). Activations are
    counted when `seq_len` is given; `flash_attention` defaults to what the model runs (SDPA: True).
    """
    dtype, optimizer = dtype_name(dtype), optimizer_name(optimizer)
    shape, n_base, n_adapter = {}, None, None
    if model is not None:  # its shape, its parameter count, and what its attention kernel keeps
        if not any(hasattr(model, a) for a in ("parameters", "hidden_size", "n_embd")):
            raise ValueError(f"model={type(model).__name__} is neither a torch model nor a transformers config; "
                             f"pass a model or n_params=...")
        shape = architecture(model)
        if flash_attention is None:
            config = getattr(model, "config", model)
            flash_attention = str(getattr(config, "_attn_implementation", None) or "eager") != "eager"
        if hasattr(model, "parameters"):
            params = list(model.parameters())  # tied weights listed once
            n_base = sum(p.numel() for p in params)
            if hasattr(model, "peft_config"):  # a PeftModel: the adapter is what trains
                n_adapter = sum(p.numel() for p in params if p.requires_grad)
                n_base -= n_adapter
    if n_params is not None:
        n_base = as_count(n_params, "n_params")
    if n_base is None:
        raise ValueError("n_params is missing: pass a model, or n_params=<number of parameters> (e.g. 7e9)")
    given = {"n_layers": n_layers, "hidden_size": hidden_size, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
             "head_dim": head_dim, "intermediate_size": intermediate_size, "vocab_size": vocab_size}
    shape.update({k: as_count(v, k) for k, v in given.items() if v is not None})
    shape.update({k: bool(v) for k, v in (("gated_mlp", gated_mlp), ("dropout", dropout)) if v is not None})
    if lora is not None:
        n_adapter = lora_trainable_params(model, lora) if hasattr(lora, "r") else as_count(lora, "lora", allow_zero=True)

    full = n_adapter is None
    if full and dtype in QUANTISED:
        raise ValueError(f"dtype={dtype!r} weights are frozen quantised numbers that an optimizer cannot update; "
                         f"train a LoRA adapter on them (lora=...), as QLoRA does, or use fp32/bf16/fp16")
    if mixed_precision and full and dtype not in ("fp16", "bf16"):
        raise ValueError(f"mixed_precision=True trains 16-bit weights with an fp32 master copy; "
                         f"dtype={dtype!r} must then be 'bf16' or 'fp16'")
    trainable_dtype = dtype_name(trainable_dtype or (dtype if full else "fp32"))
    if trainable_dtype in QUANTISED:
        raise ValueError(f"trainable_dtype={trainable_dtype!r} cannot be trained; use fp32, bf16 or fp16")

    # model states: the equation above
    trainable, frozen = (n_base, 0) if full else (n_adapter, n_base)
    b = DTYPE_BYTES[trainable_dtype]
    weights = frozen * DTYPE_BYTES[dtype] + trainable * b
    gradients = trainable * b
    master = trainable * 4.0 if mixed_precision and b < 4 else 0.0
    n_states, fixed_bytes = OPTIMIZER_STATES[optimizer]
    state_bytes = 4.0 if (mixed_precision or b == 4) else b  # without mixed precision torch keeps states in the weights' dtype
    states = trainable * (n_states * state_bytes + fixed_bytes)

    # activations of the batch
    batch_size = as_count(batch_size, "batch_size")
    activations = loss_gradients = 0.0
    if seq_len is not None:
        seq_len = as_count(seq_len, "seq_len")
        if activation_dtype is None:  # fp32 training keeps fp32 activations; otherwise 16-bit ones
            activation_dtype = "fp32" if dtype == "fp32" and not mixed_precision else (
                dtype if dtype in ("fp16", "bf16") else "bf16")
        if dtype_name(activation_dtype) in QUANTISED:
            raise ValueError(f"activation_dtype={activation_dtype!r} must be fp32, bf16 or fp16")
        activations, loss_gradients = model_activation_bytes(
            shape, batch_size, seq_len, bytes_per_number(activation_dtype),
            gradient_checkpointing=gradient_checkpointing, flash_attention=bool(flash_attention))
    return TrainingMemory(weights_bytes=float(weights), gradient_bytes=float(gradients), master_weight_bytes=master,
                          optimizer_state_bytes=float(states), activation_bytes=float(activations),
                          loss_gradient_bytes=float(loss_gradients), n_params=n_base, trainable_params=int(trainable),
                          dtype=dtype, optimizer=optimizer, mixed_precision=bool(mixed_precision),
                          finetuning="full" if full else "lora", batch_size=batch_size, seq_len=seq_len,
                          gradient_checkpointing=bool(gradient_checkpointing))


# 02_memory_precision_quantization.ipynb, cell 36
# Llama-2-7B (Touvron et al. 2023, and its config.json)
LLAMA_2_7B = {"n_params": 6_738_415_616, "n_layers": 32, "hidden_size": 4096, "n_heads": 32,
              "intermediate_size": 11008, "vocab_size": 32000, "gated_mlp": True}


def training_memory_table(scenarios, **common):
    """One row per named scenario (keyword arguments of `training_memory`, on top of `common`): GiB per term."""
    if not isinstance(scenarios, dict) or not scenarios:
        raise ValueError("scenarios must be a non-empty dict of name -> training_memory keyword arguments")
    rows = {}
    for name, kwargs in scenarios.items():
        if not isinstance(kwargs, dict):
            raise TypeError(f"scenarios[{name!r}] must be a dict of training_memory keyword arguments, "
                            f"not {type(kwargs).__name__}")
        mem = training_memory(**{**common, **kwargs})
        rows[name] = {r["component"].split(" (")[0]: r["GiB"] for r in mem.rows()}
        rows[name]["bytes per parameter"] = mem.bytes_per_param
        rows[name]["x fp16 weights"] = mem.times_weights("fp16")
    return pd.DataFrame(rows).T
