"""Plumbing around PEFT for the labs that reuse adapters (09, 10), fine_tune, the benchmarks and tests.

Lab 07 writes PEFT's own API out (`LoraConfig`, `get_peft_model`, `PromptTuningConfig`,
`save_pretrained`, `PeftModel.from_pretrained`, `merge_and_unload`); this module is what the labs after
it call instead, so that they need not repeat it. What it guarantees:

- a config is checked against the model it is meant for: LoRA's target layers must exist in it
  (chosen per architecture when not given), and the task type follows the model family;
- `add_adapter` wraps a copy of the model (the base stays as it was), with only the adapter trainable;
- an adapter is saved as safetensors only, atomically, and never over an existing folder unless asked;
  it loads back onto a copy of a fresh base and gives the same logits;
- `merge_adapter` folds LoRA into the weights of a copy, leaving the adapter model usable;
- QLoRA needs a CUDA GPU and bitsandbytes: `qlora_available()` says in one line whether this machine has
  them, and `load_model_4bit` refuses with that line rather than failing deep inside a library.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Iterable

from .models import DamagedFileError, check_model, damaged_file, model_family

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# Attention projections LoRA adapts by default, per model_type prefix (SmolLM2 is a Llama).
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "smollm": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "t5": ["q", "k", "v", "o"],
    "mt5": ["q", "k", "v", "o"],
    "gpt2": ["c_attn", "c_proj"],
}


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def _task_type(model):
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if model_family(model) == "seq2seq" else TaskType.CAUSAL_LM


def _adaptable_layers(model) -> dict[str, str]:
    """Full module name -> class name, for every layer LoRA can adapt (Linear, GPT-2's Conv1D, Embedding)."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)
    extra = {"Conv1D", "Linear4bit", "Linear8bitLt"}  # GPT-2's layers, and bitsandbytes' quantised Linear
    return {name: type(module).__name__ for name, module in model.named_modules()
            if name and (isinstance(module, kinds) or type(module).__name__ in extra)}


def _matches(target: str, name: str) -> bool:
    """PEFT's rule for a target name: the module's full name, or its last part(s) after a dot."""
    return name == target or name.endswith("." + target)


def _attention_projections(model) -> list[str]:
    """Short names of the Linear layers inside attention blocks (the fallback for unknown architectures)."""
    found = set()
    for name, kind in _adaptable_layers(model).items():
        parent, _, leaf = name.rpartition(".")
        if kind != "Embedding" and any(word in parent.lower().rsplit(".", 1)[-1] for word in ("attn", "attention")):
            found.add(leaf)
    return sorted(found)


def default_target_modules(model) -> list[str]:
    """The layers LoRA adapts when none are named: the attention projections of this architecture."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", "") or "")
    for prefix, targets in LORA_TARGETS.items():
        if model_type.startswith(prefix):
            return list(targets)
    found = _attention_projections(model)
    if not found:
        raise ValueError(f"cannot choose LoRA target modules for model_type={model_type!r} ({type(model).__name__}): "
                         f"no attention projection layers found; pass target_modules=[...], e.g. from "
                         f"{sorted({n.rsplit('.', 1)[-1] for n in _adaptable_layers(model)})[:20]}")
    return found


def _check_targets(model, targets: Iterable[str]) -> list[str]:
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ValueError(f"target_modules={targets!r} must be a non-empty list of layer names such as ['q_proj']")
    layers = _adaptable_layers(model)
    missing = [t for t in targets if not any(_matches(t, name) for name in layers)]
    if missing:
        candidates = sorted({name.rsplit(".", 1)[-1] for name in layers})
        raise ValueError(f"target_modules {missing} not found in {type(model).__name__}; layers LoRA can adapt "
                         f"here: {candidates}")
    return sorted(set(targets))


def lora_config(model, r: int = 8, alpha: float | None = None, dropout: float = 0.0,
                target_modules: Iterable[str] | str | None = None, layers: Iterable[int] | None = None):
    """A peft LoraConfig checked against `model`: rank `r`, scale `alpha / r` (alpha defaults to 2*r).

    `target_modules` (default: the attention projections of the architecture, see LORA_TARGETS) are
    layer names as PEFT matches them: a module's name or its last part(s), e.g. "q_proj" (a single
    string is one name, not a pattern). Pass target_modules="all-linear" for every Linear layer but
    the output layer. Every name must match a layer of `model`, or the error lists the ones that do.
    `dropout` defaults to 0: any other value makes each adapted layer keep a dropped-out copy of its
    input for the backward pass (measured on SmolLM2-135M, batch 4 x 372 tokens, q/k/v/o: +0.65 GiB,
    a fifth of the step's activations), which short fine-tuning runs do not need.
    `layers` (default: all) adapts only the transformer blocks with these indices. Adapting only the top
    blocks makes the backward pass stop there: the blocks below run forward only, as in inference.
    """
    from peft import LoraConfig

    if not hasattr(model, "named_modules") or not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers model, not {type(model).__name__}")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"r={r!r} must be a positive whole number (the rank of the update, e.g. 8)")
    alpha = 2 * r if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"alpha={alpha!r} must be a positive number (the update is scaled by alpha / r)")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
    if target_modules == "all-linear":
        targets = "all-linear"
    else:
        targets = _check_targets(model, default_target_modules(model) if target_modules is None else target_modules)
    conv1d = any(kind == "Conv1D" for name, kind in _adaptable_layers(model).items()
                 if targets != "all-linear" and any(_matches(t, name) for t in targets))
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=float(dropout), target_modules=targets,
                      task_type=_task_type(model), bias="none", fan_in_fan_out=conv1d,
                      layers_to_transform=_check_layers(model, layers))


def _check_layers(model, layers) -> list[int] | None:
    """Block indices for LoRA's layers_to_transform, each checked against the model's depth."""
    if layers is None:
        return None
    depth = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "num_layers", None)
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be block indices such as range({depth - 4}, {depth}), not {type(layers).__name__}")
    chosen = sorted(set(layers))
    if not chosen or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < depth for i in chosen):
        raise ValueError(f"layers={list(layers)!r} must name blocks between 0 and {depth - 1} (this model has {depth})")
    return chosen


def prompt_tuning_config(model, tokenizer, n_virtual_tokens: int = 20, init_text: str | None = None):
    """A peft PromptTuningConfig: `n_virtual_tokens` trainable embeddings put before every input.

    With `init_text` they start as the embeddings of that text's tokens (repeated or cut to length),
    e.g. "Summarize the conversation:"; without it, at random.
    """
    from peft import PromptTuningConfig, PromptTuningInit

    if not hasattr(model, "config"):
        raise TypeError(f"model must be a transformers model, not {type(model).__name__}")
    if not isinstance(n_virtual_tokens, int) or isinstance(n_virtual_tokens, bool) or n_virtual_tokens < 1:
        raise ValueError(f"n_virtual_tokens={n_virtual_tokens!r} must be a positive whole number, e.g. 20")
    task_type = _task_type(model)
    if init_text is None:
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    if not isinstance(init_text, str) or not init_text.strip():
        raise ValueError("init_text must be a non-empty string (or None for a random start)")
    name = getattr(tokenizer, "name_or_path", None)
    if not name:
        raise ValueError("the tokenizer has no name_or_path to reload it from; load it with load_model, or use "
                         "init_text=None")
    return PromptTuningConfig(task_type=task_type, num_virtual_tokens=n_virtual_tokens,
                              prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                              tokenizer_name_or_path=name)


# ---------------------------------------------------------------------------------------------
# Adapter models
# ---------------------------------------------------------------------------------------------

def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def prepends_learnt_embeddings(model) -> bool:
    """A PEFT prompt-tuning or p-tuning model: learnt embeddings go in front of every input's embeddings.

    (Prefix tuning differs: it puts learnt keys and values into the cache instead.)
    """
    config = getattr(model, "active_peft_config", None) if _is_peft(model) else None
    return config is not None and getattr(config, "peft_type", None) in ("PROMPT_TUNING", "P_TUNING") \
        and hasattr(model, "get_prompt") and hasattr(model, "word_embeddings")


def prepend_learnt_embeddings(model, input_ids, attention_mask=None):
    """What a prompt-tuned PEFT model feeds its base model: the learnt embeddings, then the words'.

    Returns (inputs_embeds, attention_mask with ones for the learnt positions, or None without a mask).
    """
    import torch

    words = model.word_embeddings(input_ids)
    learnt = model.get_prompt(batch_size=input_ids.shape[0]).to(words.dtype)
    embeds = torch.cat([learnt, words], dim=1)
    if attention_mask is None:
        return embeds, None
    ones = attention_mask.new_ones(attention_mask.shape[0], learnt.shape[1])
    return embeds, torch.cat([ones, attention_mask], dim=1)


def add_adapter(model, config, in_place: bool = False):
    """A PeftModel around a copy of `model` (or `model` itself when in_place) with only the adapter trainable.

    The config is copied too, so the one you pass is never changed (fine_tune's run records stay stable).
    """
    from peft import PeftConfig, get_peft_model

    if not isinstance(config, PeftConfig):
        raise TypeError(f"config must be a peft config (see lora_config, prompt_tuning_config), "
                        f"not {type(config).__name__}")
    if _is_peft(model):
        raise ValueError("model already has an adapter; add one to the base model (or merge_adapter first)")
    if not hasattr(model, "config") or not hasattr(model, "parameters"):
        raise TypeError(f"model must be a transformers model, not {type(model).__name__}")
    target = model if in_place else copy.deepcopy(model)
    return get_peft_model(target, copy.deepcopy(config))


def trainable_summary(model) -> dict:
    """{'trainable', 'total', 'percent'}: parameters that train, all parameters, and the share in percent."""
    check_model(model)
    if hasattr(model, "get_nb_trainable_parameters"):  # a PeftModel: counts 4-bit weights at their real size
        trainable, total = model.get_nb_trainable_parameters()
    else:
        seen, trainable, total = set(), 0, 0
        for p in model.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return {"trainable": int(trainable), "total": int(total),
            "percent": 100.0 * trainable / total if total else 0.0}


def _folder(folder, argument: str = "folder") -> Path:
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a folder path, not {type(folder).__name__}")
    return Path(folder).expanduser()


def _missing_files(folder: Path) -> list[str]:
    return [name for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / name).is_file()]


def save_adapter(model, folder: str | os.PathLike, *, tokenizer=None, overwrite: bool = False) -> Path:
    """Save only the adapter (adapter_config.json + adapter_model.safetensors) into `folder`; returns it.

    Written to `folder.partial` first and moved into place, so an interrupted save leaves no half folder.
    An existing `folder` is refused unless overwrite=True. A tokenizer, if given, is saved beside it.
    """
    if not _is_peft(model):
        raise TypeError(f"model must be a PeftModel (see add_adapter), not {type(model).__name__}; "
                        "a plain model is saved with save_pretrained")
    final = _folder(folder)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{str(final)!r} already exists; pass overwrite=True to replace it, or choose "
                              "another folder")
    staging = final.with_name(final.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    except OSError as err:  # a full disk, most often: give back the space, keep what was there
        shutil.rmtree(staging, ignore_errors=True)
        kept = "the adapter already there is intact; " if final.exists() else ""
        raise OSError(err.errno, f"could not write the adapter to {final} ({err.strerror or err}); {kept}free disk "
                                 "space and save again") from err
    if final.exists():  # overwrite: move the old one aside, then put the new one in place
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    return final


def load_adapter(base_model, folder: str | os.PathLike, in_place: bool = False, *, is_trainable: bool = False):
    """A PeftModel: the adapter saved in `folder` on a copy of `base_model` (the base itself when in_place).

    It comes back in eval mode with the adapter frozen; pass is_trainable=True to train it further.
    """
    from peft import PeftModel

    folder = _folder(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"adapter folder {str(folder)!r} does not exist")
    missing = _missing_files(folder)
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not a saved adapter: it lacks {missing} (save_adapter "
                                "writes both)")
    check_model(base_model, "base_model")
    if _is_peft(base_model):
        raise ValueError("base_model already has an adapter; pass the plain base model")
    damage = damaged_file(folder)
    if damage:
        raise DamagedFileError(f"adapter file {damage[0]} is damaged ({damage[1]}); save the adapter again "
                               "(save_adapter with overwrite=True, or rerun its fine_tune with if_exists='overwrite')")
    target = base_model if in_place else copy.deepcopy(base_model)
    model = PeftModel.from_pretrained(target, str(folder), is_trainable=is_trainable)
    return model if is_trainable else model.eval()


def merge_adapter(peft_model):
    """A plain model with LoRA folded into its weights (W + B A * alpha / r), made from a copy.

    The PeftModel stays usable. The merged model runs at the base model's speed and saves like any model.
    """
    if not _is_peft(peft_model):
        raise TypeError(f"peft_model must be a PeftModel, not {type(peft_model).__name__}")
    if peft_model.active_peft_config.is_prompt_learning:
        raise ValueError("prompt tuning has no weights to merge: its virtual tokens are an input, not a change "
                         "of the model's weights")
    return copy.deepcopy(peft_model).merge_and_unload().eval()


def adapter_size_bytes(folder: str | os.PathLike) -> int:
    """Bytes on disk of what an adapter needs saved: its weights and its config."""
    folder = _folder(folder)
    missing = _missing_files(folder)
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not a saved adapter: it lacks {missing}")
    return sum((folder / name).stat().st_size for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS))


def model_size_bytes(model) -> int:
    """Bytes of a model's weights in their dtype (shared weights once): about its safetensors file size."""
    check_model(model)
    seen, total = set(), 0
    for p in model.parameters():
        key = (p.data_ptr(), p.numel()) if p.device.type != "meta" else id(p)
        if key in seen:
            continue
        seen.add(key)
        total += p.numel() * p.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# QLoRA: a 4-bit base model (CUDA and bitsandbytes only)
# ---------------------------------------------------------------------------------------------

QLORA_NEEDS = "QLoRA needs a CUDA GPU and bitsandbytes"


def qlora_available() -> tuple[bool, str]:
    """(True, what was found) when 4-bit QLoRA can run here, else (False, a one-line reason)."""
    import torch

    if not torch.cuda.is_available():
        return False, f"{QLORA_NEEDS}; this machine has no CUDA device"
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, f"{QLORA_NEEDS}; bitsandbytes is not installed (pip install bitsandbytes)"
    try:
        import bitsandbytes
    except Exception as err:  # a broken native library raises all sorts of errors on import
        return False, f"{QLORA_NEEDS}; bitsandbytes failed to import ({type(err).__name__}: {err})".splitlines()[0]
    return True, (f"CUDA device {torch.cuda.get_device_name(0)} and bitsandbytes "
                  f"{getattr(bitsandbytes, '__version__', '?')}")


def load_model_4bit(name: str | None = None, *, profile=None, gradient_checkpointing: bool = True):
    """`(model, tokenizer)` with the weights quantised to 4-bit NF4, ready for LoRA training (QLoRA).

    NF4 with double quantisation; matrix multiplies run in bf16 (fp16 on GPUs without it). The model
    is prepared with peft.prepare_model_for_kbit_training (norms in fp32, input gradients on, gradient
    checkpointing unless turned off). Add LoRA with add_adapter(model, lora_config(model), in_place=True),
    or train with fine_tune(model, ..., adapter=lora_config(model), in_place=True) (no copy of the base).
    Raises RuntimeError with qlora_available()'s reason where CUDA or bitsandbytes is missing.
    """
    ok, reason = qlora_available()
    if not ok:
        raise RuntimeError(reason)
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    from .models import ModelUnavailableError, load_tokenizer, resolve_model_path
    from .profiles import get_profile

    prof = get_profile(profile)
    name = prof.model if name is None else os.fspath(name)
    path = resolve_model_path(name)
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                               bnb_4bit_use_double_quant=True)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        family = model_family(config)
        auto = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
        model = auto.from_pretrained(path, quantization_config=quant, dtype=compute, device_map={"": 0},
                                     use_safetensors=True, trust_remote_code=False)
    except OSError as err:
        raise ModelUnavailableError(f"cannot load {path} in 4-bit ({type(err).__name__}: {err})".splitlines()[0]) \
            from None
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    tokenizer = load_tokenizer(path, family)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "LORA_TARGETS", "adapter_size_bytes", "add_adapter",
           "default_target_modules", "load_adapter", "load_model_4bit", "lora_config", "merge_adapter",
           "model_size_bytes", "prompt_tuning_config", "qlora_available", "save_adapter", "trainable_summary"]
