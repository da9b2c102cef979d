"""Instruction fine-tuning with the Hugging Face Trainer, for decoder-only and encoder-decoder models.

What this module guarantees, so the labs can teach with it:

- the base model is never trained in place: `fine_tune` trains a copy, so "base vs tuned" always
  compares against the real base;
- the examples are lab 05's (`build_instruction_data`, exported from its notebook): for decoder-only
  models the loss covers the answer tokens only (the prompt is masked with -100), and here the output
  layer runs only at those positions (same loss, less work and memory);
- gradient accumulation weighs every answer token of an optimizer step equally: each micro-batch's
  sum is divided by the step's answer-token count (the Trainer's `num_items_in_batch`);
- batches are padded to their own longest example (never to a global maximum), optionally grouped
  by length, and an example longer than `max_length` is dropped and counted, never truncated;
- a run is seeded and repeats exactly on a CPU; checkpoints resume after an interruption (each is
  written whole under a hidden name, then renamed, so a killed process never leaves a half one; a
  damaged one is named on resume), and an output folder that holds another run's work is refused
  unless you say what to do with it;
- with `adapter=` (a peft config, see labhelpers.adapters) only the adapter trains, on a copy of the
  base, and only the adapter is saved: `load_fine_tuned` puts it back onto a fresh base.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .models import model_family

RUN_FILE = "labhelpers-run.json"  # written into output_dir: the config that made this run
FINAL_DIR = "final"
CHECKPOINT_STAGING = ".checkpoint-partial"  # a checkpoint is written here whole, then renamed to checkpoint-N


# ---------------------------------------------------------------------------------------------
# Batches (the instruction dataset itself is lesson code: labhelpers.lessons.instruction_fine_tuning)
# ---------------------------------------------------------------------------------------------

class PadCollator:
    """Pads a batch to its own longest example: input ids with the pad id, labels with -100.

    Padding goes on the right (positions start at 0 for every example); nothing is truncated.
    """

    def __init__(self, tokenizer, family: str):
        self.pad_id = tokenizer.pad_token_id
        self.family = family

    def __call__(self, features: Sequence[Mapping]):
        import torch

        from .lessons.instruction_fine_tuning import IGNORE_INDEX

        def pad(key, value, length_of):
            width = max(len(f[key]) for f in features) if length_of is None else length_of
            return torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features])

        batch = {"input_ids": pad("input_ids", self.pad_id, None),
                 "attention_mask": pad("attention_mask", 0, None)}
        batch["labels"] = pad("labels", IGNORE_INDEX, None if self.family == "seq2seq"
                              else batch["input_ids"].shape[1])
        return batch


# ---------------------------------------------------------------------------------------------
# Loss on answer positions only
# ---------------------------------------------------------------------------------------------

def answer_only_loss(model, batch, num_items_in_batch=None) -> "torch.Tensor":
    """Cross-entropy over the answer tokens (labels other than -100), running the output layer only there.

    Without `num_items_in_batch`: their mean, equal to the model's own loss with the same labels. With it
    (the answer tokens of every micro-batch of an optimizer step, as the Trainer counts them): their sum
    divided by that count, so the micro-batches of a step add up to its mean with every token weighed
    equally, however the answers are spread between them. The output projection (a vocabulary-sized
    matrix) is skipped at every prompt and padding position, which saves time and a large logits tensor.
    """
    from .lessons.instruction_fine_tuning import IGNORE_INDEX

    mean = _answer_only_mean(model, batch)
    if num_items_in_batch is None:
        return mean
    labels = batch["labels"][:, 1:] if model_family(model) == "causal" else batch["labels"]
    return mean * (labels != IGNORE_INDEX).sum() / num_items_in_batch


def _answer_only_mean(model, batch) -> "torch.Tensor":
    import torch.nn.functional as F

    from .adapters import prepend_learnt_embeddings, prepends_learnt_embeddings
    from .lessons.instruction_fine_tuning import IGNORE_INDEX

    inner, prompt_tuned = model, False
    if hasattr(model, "get_base_model"):  # a PEFT model: adapters live inside the base model's layers
        config = getattr(model, "active_peft_config", None)
        if config is None:
            return model(**batch).loss
        if getattr(config, "is_prompt_learning", False):
            if not prepends_learnt_embeddings(model):
                return model(**batch).loss  # prefix tuning and the like change the cache, not the input
            prompt_tuned = True
        inner = model.get_base_model()
    body = getattr(inner, "model", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if body is None or head is None or model_family(inner) != "causal" or \
            getattr(inner.config, "final_logit_softcapping", None):
        return model(**batch).loss
    if not prompt_tuned:  # a plain model, or adapters inside its layers
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    else:  # what PEFT's forward does: the learnt embeddings first, attended by every token, then the text
        embeds, mask = prepend_learnt_embeddings(model, batch["input_ids"], batch["attention_mask"])
        hidden = body(inputs_embeds=embeds, attention_mask=mask
                      ).last_hidden_state[:, embeds.shape[1] - batch["input_ids"].shape[1]:]
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep])
    scale = getattr(inner.config, "logit_scale", None)  # a few architectures scale their logits
    if scale:
        logits = logits * scale
    return F.cross_entropy(logits.float(), targets[keep])


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """How to train. Steps are optimizer steps; a batch is `batch_size x grad_accumulation` examples."""

    steps: int = 60
    batch_size: int = 8
    grad_accumulation: int = 1
    learning_rate: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    group_by_length: bool = True
    eval_every: int | None = None  # steps between validation losses (None: at start and end only)
    save_every: int | None = None  # steps between checkpoints (None: no checkpoints before the end)
    log_every: int = 1
    seed: int = 0
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accumulation", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("eval_every", "save_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be a positive number of steps or None")
        if not isinstance(self.learning_rate, (int, float)) or not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be between 0 and 1 (e.g. 5e-5)")
        if not isinstance(self.warmup_steps, int) or not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} must be between 0 and steps={self.steps}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"gradient_checkpointing={self.gradient_checkpointing!r} must be True or False")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        if self.lr_scheduler not in {"linear", "constant", "cosine", "constant_with_warmup"}:
            raise ValueError(f"lr_scheduler={self.lr_scheduler!r} must be linear, cosine, constant "
                             "or constant_with_warmup")


@dataclass
class FineTuneResult:
    """A finished run: the trained model (a copy; the base is untouched) and what happened."""

    model: object
    history: "pd.DataFrame"  # one row per logged step: step, train_loss, val_loss, learning_rate, seconds
    output_dir: Path | None
    seconds: float
    tokens_seen: int  # non-padding tokens the model processed in training
    n_train: int
    n_dropped: int
    resumed_from: str | None = None
    reused: bool = False  # True: a finished identical run was loaded from output_dir (if_exists="reuse")

    @property
    def first_loss(self) -> float:
        return float(self.history["train_loss"].dropna().iloc[0])

    @property
    def final_loss(self) -> float:
        return float(self.history["train_loss"].dropna().iloc[-1])

    @property
    def val_losses(self) -> "pd.Series":
        return self.history.set_index("step")["val_loss"].dropna()

    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.seconds if self.seconds > 0 else float("nan")


def _fingerprint(config: TrainConfig, model, n_train: int, extra: Mapping) -> dict:
    facts = {"config": dataclasses.asdict(config), "model": getattr(model.config, "_name_or_path", ""),
             "model_type": getattr(model.config, "model_type", ""), "n_train": n_train, **extra}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"fingerprint": digest, **facts}


def _data_digest(data: "InstructionData", val_data: "InstructionData | None") -> str:
    """A digest of every training and validation example's tokens and labels: other data, another run."""
    h = hashlib.sha256()
    for part in (data, val_data):
        for example in part.examples if part is not None else ():
            h.update(json.dumps([example["input_ids"], example["labels"]]).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def _checkpoints(folder: Path) -> list[Path]:
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _recorded_run(path: Path) -> tuple[dict | None, bool]:
    """The run record in `path` (a RUN_FILE): (its contents, or None when missing; whether it is unreadable)."""
    if not path.exists():
        return None, False
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, True
    return (recorded, False) if isinstance(recorded, dict) else (None, True)


def finished_run(output_dir) -> dict | None:
    """The record of the run whose model `output_dir/final` holds (its fingerprint, settings, history), if any."""
    final = Path(output_dir).expanduser() / FINAL_DIR
    return _recorded_run(final / RUN_FILE)[0] if final.is_dir() else None


def _prepare_output_dir(output_dir, if_exists: str, run: dict) -> tuple[Path | None, str | None, dict | None]:
    """Decide what to do with an existing output folder: (folder, checkpoint to resume from, the record of
    the finished identical run to reuse, or None).

    A finished model (`final/`) is never deleted before a new one replaces it whole: "overwrite" clears the
    old run's checkpoints and record only, so an interrupted overwrite leaves the previous model loadable,
    and the interrupted run can go on with "resume". `final/` carries the record of the run that made it.
    """
    if if_exists not in {"error", "resume", "overwrite", "reuse"}:
        raise ValueError(f"if_exists={if_exists!r} must be 'error', 'resume', 'overwrite' or 'reuse'")
    if output_dir is None:
        if if_exists == "reuse":
            raise ValueError("if_exists='reuse' needs an output_dir to look for a finished run in")
        return None, None, None
    folder = Path(output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output_dir={str(folder)!r} is a file; give a folder")
    final = folder / FINAL_DIR
    made_final, _ = _recorded_run(final / RUN_FILE)
    same_final = final.exists() and made_final is not None and made_final.get("fingerprint") == run["fingerprint"]
    # a final/ without a record of its own predates records: count it as this folder's finished run
    final_is_this_run = same_final or (final.exists() and made_final is None)
    if if_exists == "reuse":
        if same_final:
            return folder, None, made_final
        if_exists = "overwrite"  # nothing identical to reuse: train
    occupied = folder.exists() and any(folder.iterdir())
    if not occupied or if_exists == "overwrite":
        for entry in folder.iterdir() if occupied else ():
            if entry.name == FINAL_DIR:
                continue  # replaced whole when the new run finishes
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(folder / RUN_FILE, json.dumps(run, indent=1, default=str))
        return folder, None, None
    recorded, unreadable = _recorded_run(folder / RUN_FILE)
    if final_is_this_run:
        raise FileExistsError(f"output_dir={str(folder)!r} holds a finished model; pass if_exists='overwrite' to "
                              "replace it, if_exists='reuse' to load it, or choose another output_dir")
    if if_exists == "error":
        what = "an unfinished run" if recorded is not None and not final.exists() else "another run's model or checkpoints"
        raise FileExistsError(f"output_dir={str(folder)!r} holds {what}; pass if_exists='resume' to "
                              "continue it, if_exists='overwrite' to start again, or choose another output_dir")
    if unreadable:
        raise FileExistsError(f"{folder / RUN_FILE} is damaged, so its checkpoints cannot be matched to this run; "
                              "use if_exists='overwrite' or another output_dir")
    if recorded is None or recorded.get("fingerprint") != run["fingerprint"]:
        raise FileExistsError(f"output_dir={str(folder)!r} holds another run's checkpoints (different model, data or "
                              "settings); use if_exists='overwrite' or another output_dir")
    found = _checkpoints(folder)
    if found:
        _check_checkpoint(found[-1])
    return folder, str(found[-1]) if found else None, None


def _check_checkpoint(checkpoint: Path) -> None:
    """Refuse to resume from a checkpoint with a truncated or corrupt file, naming it and the way out."""
    from .models import DamagedFileError, damaged_file

    damage = damaged_file(checkpoint, torch_files=True)
    if damage:
        earlier = [c for c in _checkpoints(checkpoint.parent) if c != checkpoint]
        then = f"continues from {earlier[-1].name}" if earlier else "starts from the beginning"
        raise DamagedFileError(f"checkpoint file {damage[0]} is damaged ({damage[1]}); delete {checkpoint} and run "
                               f"again with if_exists='resume' (it then {then})")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_failed(err: OSError, what: str, folder: Path) -> OSError:
    """A failed save (a full disk, most often) as one line: what was kept and how to go on."""
    kept = _checkpoints(folder)
    intact = f"{kept[-1].name} is intact" if kept else "no checkpoint was kept"
    return OSError(err.errno, f"could not write {what} ({err.strerror or err}); {intact}: free disk space, then "
                              f"run fine_tune again with if_exists='resume'")


def _atomic_save(model, tokenizer, final: Path, record: Mapping | None = None) -> None:
    """Write the model whole under a name of this process's own, then rename it to `final`. When another run
    finished into the same folder meanwhile (two notebooks at once), its model is replaced whole, not mixed.
    `record` (the run's fingerprint, settings and history) goes inside, so a model and its record never part."""
    staging = final.with_name(f"{final.name}.partial{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if record is not None:
            (staging / RUN_FILE).write_text(json.dumps(record, indent=1, default=str))
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)  # give back the space the half-written model took
        raise _save_failed(err, f"the final model to {final}", final.parent) from err
    if final.exists():
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def _make_trainer_class():
    from transformers import Trainer

    class AnswerOnlyTrainer(Trainer):
        """Trainer whose loss runs the output layer at answer positions only (see answer_only_loss),
        and which counts the real (non-padding) tokens it trains on."""

        loss_is_scaled_for_ga = True  # compute_loss divides by the step's answer tokens itself
        _tokens = 0  # a tensor on the model's device once training starts (no host sync per step)
        _staging: str | None = None  # set while a checkpoint is being written (see _save_checkpoint)

        def _get_output_dir(self, trial):
            return self._staging or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            """Write checkpoint-N whole into a hidden folder, rename it into place, then drop the older one:
            a kill or a full disk mid-save never leaves a half-written checkpoint-N for a resume to pick."""
            run_dir = Path(super()._get_output_dir(trial))
            name = f"checkpoint-{self.state.global_step}"
            staging = run_dir / CHECKPOINT_STAGING
            shutil.rmtree(staging, ignore_errors=True)
            self._staging = str(staging)
            try:
                super()._save_checkpoint(model, trial)
            except OSError as err:
                shutil.rmtree(staging, ignore_errors=True)  # give back the space the half checkpoint took
                raise _save_failed(err, f"{name} in {run_dir}", run_dir) from err
            finally:
                self._staging = None
            target = run_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
            shutil.rmtree(staging, ignore_errors=True)
            for older in _checkpoints(run_dir)[:-1]:
                shutil.rmtree(older, ignore_errors=True)  # only the newest is kept

        @property
        def tokens_seen(self) -> int:
            """Real (non-padding) tokens trained on by this process (after a resume: the resumed part)."""
            return int(self._tokens)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            from .lessons.instruction_fine_tuning import IGNORE_INDEX

            if model.training:
                self._tokens = self._tokens + inputs["attention_mask"].sum()
                if model_family(model) == "seq2seq":
                    self._tokens = self._tokens + (inputs["labels"] != IGNORE_INDEX).sum()
            if return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # The Trainer's mixed precision (bf16/fp16) wraps model.forward; this loss calls the model's
            # body and output layer directly, so it needs the same autocast around it.
            with self.accelerator.autocast():
                loss = answer_only_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is None:  # not counted (a model without loss kwargs): a mean per micro-batch
                loss = loss / self.current_gradient_accumulation_steps
            return loss

    return AnswerOnlyTrainer


class _History:
    """Collects the Trainer's logs into rows, and draws a live loss plot in a notebook."""

    def __init__(self, live: bool, title: str):
        self.rows: list[dict] = []
        self.live = live
        self.title = title
        self.handle = None
        self.fig = None
        self.started = time.perf_counter()

    def add(self, step: int, logs: Mapping) -> None:
        row = {"step": step, "seconds": time.perf_counter() - self.started}
        if "loss" in logs:
            row["train_loss"] = float(logs["loss"])
            row["learning_rate"] = float(logs.get("learning_rate", float("nan")))
        if "eval_loss" in logs:
            row["val_loss"] = float(logs["eval_loss"])
        if len(row) > 2:
            self.rows.append(row)
            self.draw()

    def frame(self):
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=["step", "train_loss", "val_loss", "learning_rate", "seconds"])
        return frame.groupby("step", as_index=False).first() if len(frame) else frame

    def draw(self) -> None:
        if not self.live:
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        frame = self.frame()
        if self.fig is None:
            self.fig, self.ax = plt.subplots(figsize=(6, 3.2))
            plt.close(self.fig)  # shown through the display handle only, never twice
        ax = self.ax
        ax.clear()
        train = frame.dropna(subset=["train_loss"])
        val = frame.dropna(subset=["val_loss"])
        ax.plot(train["step"], train["train_loss"], label="train (answer tokens)", color="C0")
        if len(val):
            ax.plot(val["step"], val["val_loss"], "o-", label="validation", color="C1")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy loss")
        ax.set_title(self.title)
        ax.legend(loc="upper right")
        ax.grid(alpha=0.3)
        if self.handle is None:
            self.handle = display(self.fig, display_id=True)
        else:
            self.handle.update(self.fig)


def loss_plot_callback(title: str = "fine-tuning", live: bool | None = None):
    """A Trainer callback that plots the training and validation loss as the Trainer logs them (live in a
    notebook; `live=False` only collects them); its `frame()` is the log so far, one row per step."""
    from transformers import TrainerCallback

    history = _History(_in_notebook() if live is None else live, title)

    class LossPlot(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            history.add(state.global_step, logs or {})

        def frame(self) -> "pd.DataFrame":
            """step, train_loss, val_loss, learning_rate, seconds (since the callback was made)."""
            return history.frame()

    return LossPlot()


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
    except ImportError:
        return False


def fine_tune(base_model, tokenizer, train, validation=None, *, tasks: Sequence[str | Task] | str | Task = "summary",
              config: TrainConfig | None = None, output_dir: str | os.PathLike | None = None,
              if_exists: str = "error", max_length: int | None = None, live_plot: bool | None = None,
              progress: bool = True, title: str = "fine-tuning", in_place: bool = False,
              adapter=None) -> FineTuneResult:
    """Fine-tune every weight of a copy of `base_model` on instruction examples built from dialogue rows.

    `train` / `validation` are dialogue rows (a dataset split or a list of dicts). The base model is
    left as it was (pass in_place=True to train it directly, e.g. a model you just loaded for this).
    `output_dir` (optional) receives checkpoints every `config.save_every` steps and the final model in
    `output_dir/final`; `if_exists` says what to do when it already holds a run: "error" (default),
    "resume" (continue the same run from its last checkpoint), "overwrite" (train again; the old final
    model stays until the new one replaces it whole) or "reuse" (load the finished model when the same
    model, data and settings made it, `result.reused` is then True; train otherwise).
    `adapter` (a peft config such as `adapters.lora_config(base_model)`): train only that adapter, on a
    copy of the base; result.model is then a PeftModel, and checkpoints and output_dir/final hold the
    adapter alone (adapter_config.json + adapter_model.safetensors).
    """
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments

    from .device import seed_everything, trainer_precision
    from .lessons.instruction_fine_tuning import build_instruction_data

    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, not {type(config).__name__}")
    if not hasattr(base_model, "config") or not hasattr(base_model, "parameters"):
        raise TypeError(f"base_model must be a transformers model, not {type(base_model).__name__}")
    family = model_family(base_model)
    data = build_instruction_data(train, tokenizer, base_model, tasks, max_length=max_length, seed=config.seed)
    val_data = (build_instruction_data(validation, tokenizer, base_model, tasks, max_length=max_length,
                                       seed=config.seed) if validation is not None else None)
    task_names = sorted(data.tasks)
    extra = {"tasks": task_names, "family": family, "max_length": data.max_length,
             "first_ids": data.examples[0]["input_ids"][:16], "data": _data_digest(data, val_data)}
    if adapter is not None:
        extra["adapter"] = _adapter_facts(adapter)  # another adapter is another run (resume refuses it)
    run = _fingerprint(config, base_model, len(data), extra)
    folder, resume_from, finished = _prepare_output_dir(output_dir, if_exists, run)
    if finished is not None:
        return _reused_result(folder, base_model, data, finished)

    seed_everything(config.seed)
    model = base_model if in_place else copy.deepcopy(base_model)
    if adapter is not None:
        from .adapters import add_adapter

        model = add_adapter(model, adapter, in_place=True)  # `model` is already the copy (or in_place)
    model.train()
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # no generation cache while training
    device = next(model.parameters()).device
    precision = trainer_precision(device)
    scratch = None
    if folder is None:
        import tempfile

        scratch = tempfile.mkdtemp(prefix="labhelpers-train-")
    evaluating = val_data is not None
    args = TrainingArguments(
        output_dir=str(folder or scratch),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
        logging_steps=config.log_every,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=(config.eval_every or config.steps) if evaluating else None,
        eval_on_start=evaluating,
        save_strategy="steps" if (config.save_every and folder) else "no",
        save_steps=config.save_every or config.steps,
        save_total_limit=1,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5's name for it
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        **precision,
    )
    plot = loss_plot_callback(title, live_plot)

    class NoLastCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps and folder is not None:
                control.should_save = False  # the final model is saved below; no checkpoint of the last step

    columns = ["input_ids", "attention_mask", "labels", "length"]
    train_set = data.to_dataset().select_columns(columns)
    val_set = val_data.to_dataset().select_columns(columns) if evaluating else None
    trainer = _make_trainer_class()(model=model, args=args, train_dataset=train_set, eval_dataset=val_set,
                                    data_collator=PadCollator(tokenizer, family), callbacks=[plot, NoLastCheckpoint()])
    if not progress:
        trainer.remove_callback(PrinterCallback)  # the Trainer prints every log line when its bar is off
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    # Mixed precision wrapped model.forward in an autocast; hand back the plain model, so later forwards
    # and generation run in the model's own precision (as a reloaded copy of it would).
    model = trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if config.gradient_checkpointing and getattr(model, "is_activation_checkpointing", False):
        model.activation_checkpointing_disable()  # a training-time trade; inference gains nothing from it
    model.eval()
    if getattr(model.config, "use_cache", None) is False:
        model.config.use_cache = True
    full = _History(False, title)  # the whole run's log, also the part before a resume
    for logs in trainer.state.log_history:
        full.add(logs.get("step", 0), logs)
    timing = plot.frame()[["step", "seconds"]]
    log = full.frame().drop(columns="seconds").merge(timing, on="step", how="left")
    if folder is not None:
        record = {**run, "seconds": seconds, "tokens_seen": trainer.tokens_seen, "n_dropped": data.n_dropped,
                  "history": log.astype(object).where(log.notna(), None).to_dict("records")}
        _atomic_save(model, tokenizer, folder / FINAL_DIR, record)
        for checkpoint in _checkpoints(folder) + [folder / CHECKPOINT_STAGING]:
            shutil.rmtree(checkpoint, ignore_errors=True)  # the final model supersedes them
    return FineTuneResult(model=model, history=log, output_dir=folder, seconds=seconds,
                          tokens_seen=trainer.tokens_seen, n_train=len(data), n_dropped=data.n_dropped,
                          resumed_from=resume_from)


def _reused_result(folder: Path, base_model, data: "InstructionData", record: dict) -> FineTuneResult:
    """The FineTuneResult of a finished identical run, loaded from `folder` instead of trained again."""
    import pandas as pd

    model = load_fine_tuned(folder, base_model=base_model)[0]
    return FineTuneResult(model=model, history=pd.DataFrame(record.get("history") or []), output_dir=folder,
                          seconds=float(record.get("seconds", 0.0)), tokens_seen=int(record.get("tokens_seen", 0)),
                          n_train=len(data), n_dropped=data.n_dropped, reused=True)


def load_fine_tuned(output_dir: str | os.PathLike, *, base_model=None, device=None, dtype=None):
    """Load `(model, tokenizer)` a `fine_tune` run saved in `output_dir` (or its `final` folder).

    An adapter run saved the adapter only; it is put onto a copy of `base_model` (which is left as it
    was), or, when base_model is None, onto the base named in its adapter_config.json
    (base_model_name_or_path: the folder or hub id the base was loaded from), loaded with load_model
    (`device` and `dtype` apply to that load only; a given base_model keeps its own).
    The model comes back as a PeftModel in eval mode; `adapters.merge_adapter` makes a plain one of it.
    """
    from .models import DamagedFileError, damaged_file, load_model

    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a folder path, not {type(output_dir).__name__}")
    folder = Path(output_dir).expanduser()
    final = folder / FINAL_DIR if (folder / FINAL_DIR).is_dir() else folder
    adapter = (final / "adapter_config.json").exists()
    if not adapter and not (final / "config.json").exists():
        raise FileNotFoundError(f"no finished model in {str(folder)!r}: expected {final}/config.json (or "
                                "adapter_config.json) from a completed fine_tune run (an interrupted run can "
                                "continue with if_exists='resume')")
    damage = damaged_file(final)
    if damage:
        run_dir = final.parent if final.name == FINAL_DIR else final
        raise DamagedFileError(f"saved model file {damage[0]} is damaged ({damage[1]}); train it again: run its "
                               f"fine_tune with output_dir={str(run_dir)!r} and if_exists='overwrite'")
    if adapter:
        return _load_fine_tuned_adapter(final, base_model, device=device, dtype=dtype)
    return load_model(str(final), device=device, dtype=dtype)


def _adapter_facts(adapter) -> dict:
    """A peft config as plain, repeatable JSON values (sets sorted), for the run's fingerprint."""
    from peft import PeftConfig

    if not isinstance(adapter, PeftConfig):
        raise TypeError(f"adapter must be a peft config (see labhelpers.adapters), not {type(adapter).__name__}")
    facts = {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in adapter.to_dict().items()}
    facts.pop("base_model_name_or_path", None)  # filled in by peft when the adapter is added
    return json.loads(json.dumps(facts, sort_keys=True, default=str))


def _load_fine_tuned_adapter(final: Path, base_model, *, device=None, dtype=None):
    from .adapters import load_adapter
    from .models import load_model, load_tokenizer

    tokenizer = None
    if base_model is None:
        name = json.loads((final / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not name:
            raise ValueError(f"{str(final)!r} holds an adapter that does not name its base model; pass base_model=")
        base_model, tokenizer = load_model(name, device=device, dtype=dtype)
        model = load_adapter(base_model, final, in_place=True)  # a base of its own: no copy needed
    else:
        model = load_adapter(base_model, final)  # on a copy, where base_model is and in its dtype
    if (final / "tokenizer_config.json").exists():
        tokenizer = load_tokenizer(str(final), model_family(model))
    return model, tokenizer


def parameter_change(base_model, tuned_model) -> "pd.DataFrame":
    """Relative change of each weight matrix after training (|W' - W| / |W|), one row per parameter."""
    import pandas as pd
    import torch

    tuned = dict(tuned_model.named_parameters())
    rows = []
    with torch.no_grad():
        for name, before in base_model.named_parameters():
            after = tuned.get(name)
            if after is None or after.shape != before.shape:
                continue
            norm = before.float().norm().item()
            rows.append({"parameter": name, "numel": before.numel(),
                         "relative_change": (after.float() - before.float()).norm().item() / norm if norm else 0.0})
    return pd.DataFrame(rows)


__all__ = ["FineTuneResult", "PadCollator", "TrainConfig", "answer_only_loss", "fine_tune", "load_fine_tuned",
           "loss_plot_callback", "parameter_change"]
