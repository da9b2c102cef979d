"""Fine-tuning throughput: labhelpers.train (dynamic padding, length-grouped batches, answer-only output layer)
vs padding every example to the longest one in the dataset, as the 2023 course lab did.

Four ways of running the same training, side by side in one process: the same model (a fresh copy of
the same weights for each), the same encoded examples (`build_instruction_data(...).examples`), the
same number of optimizer steps, the same seed, AdamW with the same constant learning rate and gradient
clipping at 1.0 (as the Trainer does), in one plain PyTorch loop in which only batching, padding and
the loss change:

  A  "2023 style": every example padded to the longest example in the dataset, random batches,
     the model's own loss (labels -100 on prompt and padding, logits computed at every position);
  B  dynamic padding (each batch padded to its own longest example, `PadCollator`), random batches,
     the model's own loss;
  C  B with length-grouped batches (the Trainer's `LengthGroupedSampler`, as `group_by_length` uses);
  D  C with the output layer run on answer tokens only (`answer_only_loss`): labhelpers.train as it is.

D is then also timed through the real `labhelpers.fine_tune` (progress and live plot off), to show
that the library path matches the loop; on CUDA a second `fine_tune` row trains bf16 weights, which
is what `load_model()` hands a lab on a GPU. Before training, one batch is scored with the base model
in fp32 three ways: A's padding vs C's must give the same loss, and D's loss must equal C's.

The examples are the first steps x batch rows of the (seeded) shuffled source, so every method sees
exactly the same examples once (one epoch; more rows than that are not used, fewer are cycled through
epoch by epoch). A pads to the longest example of ALL the source rows, as a global padding length does.

Reported per method: seconds per optimizer step, real (non-padding) tokens per second, processed
(padded) tokens per step, the share of padding, output-layer positions per step, peak GPU memory on
CUDA, the training loss (first -> last step) and tokens/s relative to A. Seconds include collation
and moving the batch to the device; on CUDA the clock is read after a synchronize.

    .venv/bin/python benchmarks/finetune_throughput.py --profile tiny --steps 4   # smoke, seconds
    .venv/bin/python benchmarks/finetune_throughput.py --profile embedded         # SmolLM2-135M, CPU
    .venv/bin/python benchmarks/finetune_throughput.py --dialogsum ../shared/data/dialogsum/dialogsum.dev.jsonl
    python benchmarks/finetune_throughput.py --random-llama-250m --device cuda --split all --repeats 3

Model: the profile's (`tiny`: tiny-llama; `embedded`: SmolLM2-135M-Instruct, fp32 weights), or with
--random-llama-250m a ~256M-parameter Llama built from a config with random weights (hidden 1024,
16 layers, 16 heads, intermediate 2816, tied embeddings; no download) using the SmolLM2 tokenizer
(--tokenizer FOLDER, else the labhelpers cache if it holds it, else the tiny tokenizer). On CUDA the
weights stay fp32 and forward/backward run under bf16 autocast, as the Trainer's bf16=True does.
Data: the profile's dialogues (`tiny`: generated; `embedded`: the project's, --split train or all),
or --dialogsum PATH (DialogSum-format JSONL read in place; never copied into the repo).

Prints a markdown table and appends it to benchmarks/RESULTS.md, except on --profile tiny (a smoke run)
unless --append is given, and never with --no-append. --out DIR (default: $OUT when set) also writes
the table to DIR/finetune_throughput.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import os
import platform
import random
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import labhelpers  # noqa: F401  first: probes bf16 safety before torch loads
import torch

from labhelpers import TrainConfig, fine_tune, get_profile, load_dialogues, load_model, pick_device, read_jsonl
from labhelpers.device import cache_dir, seed_everything, trainer_precision
from labhelpers import IGNORE_INDEX, PadCollator, answer_only_loss, build_instruction_data

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
SMOLLM2_CACHE = "smollm2-135m-instruct-q4_1-v1"  # labhelpers' cache folder for the converted SmolLM2
METHODS = {
    "A": "A: pad to dataset max, random batches, full logits (2023 style)",
    "B": "B: dynamic padding, random batches, full logits",
    "C": "C: dynamic padding, length-grouped batches, full logits",
    "D": "D: C + answer-only output layer (labhelpers.train)",
}
SETUP = {"A": ("random", "max", "full"), "B": ("random", "dynamic", "full"),
         "C": ("grouped", "dynamic", "full"), "D": ("grouped", "dynamic", "answer")}


def pkg_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "n/a"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------
# Model, tokenizer and rows
# ---------------------------------------------------------------------------------------------

def random_llama(tokenizer, device: torch.device, seed: int):
    """A ~256M-parameter Llama with random weights, fp32, sized like benchmarks/gpu_finetune.py's."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not isinstance(end, int) or end == tokenizer.unk_token_id:
        end = tokenizer.eos_token_id
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=1024, num_hidden_layers=16, num_attention_heads=16,
                         num_key_value_heads=16, intermediate_size=2816, max_position_embeddings=2048,
                         tie_word_embeddings=True, use_cache=False, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=end)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=end, pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.bos_token_id)
    arch = (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads,"
            f" intermediate {config.intermediate_size}, vocab {config.vocab_size}, tied embeddings")
    return model.float().eval(), arch


def random_llama_tokenizer(path: str | None):
    from labhelpers.models import build_tiny_tokenizer, load_tokenizer

    if path:
        tok = load_tokenizer(path, "causal")
        smollm2 = len(tok) == 49152 and "<|im_end|>" in tok.get_vocab()
        return tok, "SmolLM2 tokenizer" if smollm2 else f"tokenizer from {Path(path).name} (vocab {len(tok)})"
    cached = cache_dir() / SMOLLM2_CACHE
    if (cached / "tokenizer.json").exists():
        return load_tokenizer(str(cached), "causal"), "SmolLM2 tokenizer"
    tok = build_tiny_tokenizer()
    return tok, "labhelpers' tiny BPE tokenizer (no SmolLM2 tokenizer found)"


def load_rows(args, profile) -> tuple[list[dict], str]:
    if args.dialogsum:
        path = Path(args.dialogsum).expanduser()
        return read_jsonl(path), f"DialogSum rows from {path.name}"
    ds = load_dialogues(profile.data)
    names = ["train"] if args.split == "train" else ["train", "validation", "test"]
    rows = [dict(r) for name in names for r in ds[name]]
    what = "generated dialogues" if profile.data == "generated" else f"{profile.data} dialogues"
    return rows, f"{what} ({'+'.join(names)})"


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------

def pad_to(features, width: int, pad_id: int) -> dict:
    """Right-pad a batch to `width` tokens (input ids with pad_id, attention 0, labels -100)."""
    def pad(key, value):
        return torch.tensor([list(f[key]) + [value] * (width - len(f[key])) for f in features])

    return {"input_ids": pad("input_ids", pad_id), "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX)}


def batch_orders(lengths: list[int], batch_size: int, steps: int, seed: int) -> dict[str, list[list[int]]]:
    """Index batches for `steps` steps: random (RandomSampler-like) and length-grouped (Trainer's sampler).

    Epoch after epoch, each epoch cut into batches like a DataLoader without drop_last.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    orders = {}
    for kind in ("random", "grouped"):
        gen = torch.Generator().manual_seed(seed)
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=gen) if kind == "grouped" else None
        batches: list[list[int]] = []
        while len(batches) < steps:
            epoch = list(sampler) if sampler is not None else torch.randperm(len(lengths), generator=gen).tolist()
            batches += [epoch[i:i + batch_size] for i in range(0, len(epoch), batch_size)]
        orders[kind] = batches[:steps]
    return orders


def batch_stats(features, width: int | None, loss: str) -> dict:
    lengths = [len(f["input_ids"]) for f in features]
    width = max(lengths) if width is None else width
    answer = sum(sum(1 for label in f["labels"][1:] if label != IGNORE_INDEX) for f in features)
    return {"real": sum(lengths), "processed": len(features) * width,
            "output": answer if loss == "answer" else len(features) * width}


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, base, tokenizer, examples, orders, pad_width, device, amp_dtype, lr, seed):
        self.base, self.examples, self.orders, self.seed = base, examples, orders, seed
        self.pad_width, self.device, self.amp_dtype, self.lr = pad_width, device, amp_dtype, lr
        self.pad_id = tokenizer.pad_token_id
        self.collate_dynamic = PadCollator(tokenizer, "causal")

    def features(self, method: str) -> list[list[dict]]:
        order = self.orders[SETUP[method][0]]
        return [[self.examples[i] for i in batch] for batch in order]

    def collate(self, method: str, features) -> dict:
        batch = (pad_to(features, self.pad_width, self.pad_id) if SETUP[method][1] == "max"
                 else self.collate_dynamic(features))
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def loss(self, method: str, model, batch) -> torch.Tensor:
        amp = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
               else contextlib.nullcontext())
        with amp:
            return answer_only_loss(model, batch) if SETUP[method][2] == "answer" else model(**batch).loss

    def fresh(self):
        model = copy.deepcopy(self.base).train()
        model.config.use_cache = False
        try:
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.0, fused=True)
        except (RuntimeError, TypeError):  # fused AdamW missing for this device/build
            opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=0.0)
        return model, opt

    def step(self, method, model, opt, features) -> torch.Tensor:
        loss = self.loss(method, model, self.collate(method, features))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's max_grad_norm
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def warm_up(self, steps: int) -> None:
        """A few untimed steps on a throwaway copy (kernels, allocator), with A's and D's first batches."""
        if steps <= 0:
            return
        model, opt = self.fresh()
        for _ in range(steps):
            for method in ("A", "D"):
                self.step(method, model, opt, self.features(method)[0])
        sync(self.device)
        del model, opt
        self.cleanup()

    def cleanup(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def run(self, method: str) -> dict:
        self.cleanup()
        seed_everything(self.seed)
        batches = self.features(method)
        model, opt = self.fresh()
        losses = []
        sync(self.device)
        start = time.perf_counter()
        for features in batches:
            losses.append(self.step(method, model, opt, features))
        sync(self.device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(self.device) / GIB if self.device.type == "cuda" else None
        del model, opt
        self.cleanup()
        width = self.pad_width if SETUP[method][1] == "max" else None
        stats = [batch_stats(f, width, SETUP[method][2]) for f in batches]
        return {"seconds": seconds, "steps": len(batches), "peak": peak,
                "losses": [float(x) for x in losses],
                **{key: sum(s[key] for s in stats) for key in ("real", "processed", "output")}}


def loss_checks(runner: Runner) -> dict:
    """Score the first length-grouped batch (it holds the longest example) with the base model three ways."""
    features = runner.features("C")[0]
    base = runner.base.eval()
    out = {}
    with torch.no_grad():
        for label, amp in (("fp32", None), ("bf16", runner.amp_dtype)):
            if label == "bf16" and amp is None:
                continue
            saved, runner.amp_dtype = runner.amp_dtype, amp
            try:
                a = float(runner.loss("A", base, runner.collate("A", features)))
                c = float(runner.loss("C", base, runner.collate("C", features)))
                d = float(runner.loss("D", base, runner.collate("D", features)))
            finally:
                runner.amp_dtype = saved
            out[label] = {"A": a, "C": c, "D": d}
    return out


def run_library(base, tokenizer, rows, args, device, weights: str) -> dict:
    """D through the real labhelpers.fine_tune, recording the TrainingArguments and the batches it built."""
    import transformers

    import labhelpers.train as train_module

    captured, shapes = [], []
    original, original_collator = transformers.TrainingArguments, train_module.PadCollator

    class Recorded(original):
        def __post_init__(self):
            super().__post_init__()
            captured.append(self)

    class CountingCollator(original_collator):
        def __call__(self, features):
            batch = super().__call__(features)
            shapes.append((batch["input_ids"].numel(), int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())))
            return batch

    model = base if weights == "fp32" else copy.deepcopy(base).to(torch.bfloat16)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, lr_scheduler="constant",
                         group_by_length=True, log_every=1, seed=args.seed)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    transformers.TrainingArguments, train_module.PadCollator = Recorded, CountingCollator
    try:
        result = fine_tune(model, tokenizer, rows, tasks="summary", config=config, max_length=args.max_length,
                           progress=False, live_plot=False, title="throughput")
    finally:
        transformers.TrainingArguments, train_module.PadCollator = original, original_collator
    shapes = shapes[:args.steps]  # training batches only (no validation set is given)
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    history = result.history.dropna(subset=["train_loss"])
    timed = result.history.dropna(subset=["seconds"])
    steady = ((timed["seconds"].iloc[-1] - timed["seconds"].iloc[0]) / (timed["step"].iloc[-1] - timed["step"].iloc[0])
              if len(timed) > 1 else float("nan"))
    if captured:  # what the Trainer was really given (an enum such as `optim` shown by its value)
        values = {k: getattr(captured[-1], k) for k in ("bf16", "fp16", "use_cpu", "optim", "max_grad_norm")}
        flags = {k: getattr(v, "value", v) for k, v in values.items()}
    else:
        flags = {"computed": trainer_precision(device)}
    trained_dtype = str(next(result.model.parameters()).dtype).replace("torch.", "")
    row = {"seconds": result.seconds, "steps": args.steps, "peak": peak, "real": result.tokens_seen,
           "losses": history["train_loss"].tolist(), "steady": steady, "flags": flags, "weights": trained_dtype,
           "n_train": result.n_train, "processed": sum(p for p, _ in shapes) if shapes else None,
           "output": sum(o for _, o in shapes) if shapes else None}
    del result, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def make_table(rows: dict, library: list[tuple[str, dict]], checks: dict, meta: dict, args) -> str:
    cuda = meta["device"].type == "cuda"
    a_tps = rows["A"]["real"] / rows["A"]["seconds"]
    head = "| method | s/step | real tokens/s | processed tokens/step | padding | output-layer positions/step |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if cuda:
        head += " peak GPU memory (GiB) |"
        rule += "---:|"
    head += " loss first → last | tokens/s vs A |"
    rule += "---|---:|"
    lines = [
        f"### Fine-tuning throughput: labhelpers.train vs 2023-style padding, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{meta['model']}, {meta['n_params']:,} parameters, fp32 weights, {meta['tokenizer']}; {meta['source']}: {meta['n_examples']} examples"
        f" (summary task, the first {meta['n_rows']} of {meta['n_source']} shuffled rows), tokens per example"
        f" min/median/max {meta['len_min']}/{meta['len_median']}/{meta['len_max']}, answer tokens"
        f" {meta['answer_share']:.0%} of them; A pads to {meta['pad_width']} tokens (the longest of all"
        f" {meta['n_source']} source rows' examples). Batch {args.batch_size}, {args.steps} optimizer steps"
        f" ({meta['epochs']:.2g} epoch{'' if meta['epochs'] == 1 else 's'}), AdamW{' (fused)' if meta['fused'] else ''} lr {args.lr:g} constant,"
        f" grad clip 1.0, seed {args.seed}; {meta['precision']}. Plain PyTorch loop for A-D"
        f" (median of {args.repeats} repeat{'s' if args.repeats > 1 else ''}), then D through"
        f" `labhelpers.fine_tune` (Trainer). Machine: {meta['machine']}; torch {meta['torch']},"
        f" transformers {meta['transformers']}, datasets {meta['datasets']}, accelerate {meta['accelerate']}.",
        "",
        head,
        rule,
    ]

    def line(name, r, seconds, processed=None, output=None, padding=None):
        tps = r["real"] / seconds
        losses = r["losses"]
        cells = [name, f"{seconds / r['steps']:.3g}", f"{tps:,.0f}",
                 f"{processed / r['steps']:,.0f}" if processed is not None else "n/a",
                 f"{padding:.0%}" if padding is not None else "n/a",
                 f"{output / r['steps']:,.0f}" if output is not None else "n/a"]
        if cuda:
            cells.append(f"{r['peak']:.2f}" if r.get("peak") is not None else "")
        cells += [f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "", f"{tps / a_tps:.2f}x"]
        return "| " + " | ".join(cells) + " |"

    for key in ("A", "B", "C", "D"):
        r = rows[key]
        lines.append(line(METHODS[key], r, r["seconds"], r["processed"], r["output"],
                          1 - r["real"] / r["processed"]))
    for name, r in library:
        processed = r["processed"]
        lines.append(line(name, r, r["seconds"], processed, r["output"],
                          1 - r["real"] / processed if processed else None))
    lines.append("")

    notes = []
    fp32 = checks["fp32"]
    tol = 1e-4 * max(1.0, abs(fp32["C"]))
    ok_pad = abs(fp32["A"] - fp32["C"]) <= tol
    ok_answer = abs(fp32["D"] - fp32["C"]) <= tol
    notes.append(f"Loss checks on the first length-grouped batch, base model, fp32: A (padded to {meta['pad_width']})"
                 f" {fp32['A']:.6f}, C (padded to its own longest) {fp32['C']:.6f}, D (answer-only output layer)"
                 f" {fp32['D']:.6f}; |A-C| = {abs(fp32['A'] - fp32['C']):.1e} ({'agree' if ok_pad else 'DIFFER'}),"
                 f" |D-C| = {abs(fp32['D'] - fp32['C']):.1e} ({'agree' if ok_answer else 'DIFFER'}).")
    if "bf16" in checks:
        b = checks["bf16"]
        notes.append(f"Under bf16 autocast: A {b['A']:.4f}, C {b['C']:.4f}, D {b['D']:.4f}.")
    same = (f"Training losses at the last step: A {rows['A']['losses'][-1]:.4f} / B {rows['B']['losses'][-1]:.4f}"
            f" (same batches), C {rows['C']['losses'][-1]:.4f} / D {rows['D']['losses'][-1]:.4f} (same batches).")
    notes.append(same)
    d_ratio = (rows["D"]["real"] / rows["D"]["seconds"]) / a_tps
    notes.append(f"Goal (D at least 2x A in real tokens/s): {d_ratio:.2f}x, {'met' if d_ratio >= 2 else 'NOT met'}.")
    for name, r in library:
        flags = ", ".join(f"{k}={v}" for k, v in r["flags"].items())
        notes.append(f"{name}: TrainingArguments {flags}; weights {r['weights']}; {r['n_train']} examples;"
                     f" {r['seconds']:.2f} s for {r['steps']} steps (whole `trainer.train()`, start-up included),"
                     f" steady state {r['steady']:.3g} s/step between the first and last logged step;"
                     f" loss {r['losses'][0]:.3f} → {r['losses'][-1]:.3f} ({'down' if r['losses'][-1] < r['losses'][0] else 'NOT down'}).")
    if args.repeats > 1:
        notes.append("Seconds per step over the repeats (min-max): " + "; ".join(
            f"{k} {min(v) / rows[k]['steps']:.3g}-{max(v) / rows[k]['steps']:.3g}"
            for k, v in meta["all_seconds"].items()) + ".")
    lines += [" ".join(notes), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=["tiny", "embedded"], default="embedded")
    parser.add_argument("--dialogsum", default=None, metavar="PATH", help="DialogSum-format JSONL to train on")
    parser.add_argument("--split", choices=["train", "all"], default="train",
                        help="which splits of the profile's dialogues to use (ignored with --dialogsum)")
    parser.add_argument("--random-llama-250m", action="store_true",
                        help="a ~256M Llama with random weights built from a config (no download)")
    parser.add_argument("--tokenizer", default=None, metavar="FOLDER",
                        help="tokenizer for --random-llama-250m (default: SmolLM2's from the labhelpers cache)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: labhelpers.pick_device())")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=None, help="drop longer examples (default: context window)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up rounds (default 2 on CUDA, 0 on CPU)")
    parser.add_argument("--repeats", type=int, default=1, help="time A-D this many times; report the median")
    parser.add_argument("--no-library", action="store_true", help="skip the labhelpers.fine_tune row(s)")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="also write DIR/finetune_throughput.md")
    parser.add_argument("--append", action="store_true", help="append to RESULTS.md even on --profile tiny")
    parser.add_argument("--no-append", action="store_true", help="never append to RESULTS.md")
    args = parser.parse_args()

    profile = get_profile(args.profile)
    device = pick_device(args.device)
    args.batch_size = args.batch_size or (8 if args.profile == "tiny" else profile.train_batch_size)
    args.steps = args.steps or 12
    args.lr = args.lr or profile.learning_rate
    warmup = args.warmup if args.warmup is not None else (2 if device.type == "cuda" else 0)
    if min(args.steps, args.batch_size, args.repeats) < 1:
        parser.error("--steps, --batch-size and --repeats must be at least 1")
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None

    if args.random_llama_250m:
        tokenizer, tok_what = random_llama_tokenizer(args.tokenizer)
        base, arch = random_llama(tokenizer, device, args.seed)
        model_what = f"Llama from a config with random weights ({arch})"
    else:
        name = profile.model
        base, tokenizer = load_model(name, device=device, dtype=torch.float32)
        model_what = ("tiny-llama (labhelpers' test model, random weights)" if args.profile == "tiny"
                      else "SmolLM2-135M-Instruct")
        tok_what = "its own tokenizer"
    base.eval()
    n_params = sum(p.numel() for p in base.parameters())

    rows, source = load_rows(args, profile)
    shuffled = list(rows)
    random.Random(args.seed).shuffle(shuffled)
    used = shuffled[:args.steps * args.batch_size]
    everything = build_instruction_data(rows, tokenizer, base, "summary", max_length=args.max_length, seed=args.seed)
    data = build_instruction_data(used, tokenizer, base, "summary", max_length=args.max_length, seed=args.seed)
    examples = data.examples
    lengths = data.lengths
    pad_width = max(everything.lengths)
    answer = sum(sum(1 for x in e["labels"] if x != IGNORE_INDEX) for e in examples)
    orders = batch_orders(lengths, args.batch_size, args.steps, args.seed)

    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores"
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    fused = True
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError):
        fused = False
    meta = dict(device=device, model=model_what, n_params=n_params, tokenizer=tok_what, source=source, n_examples=len(examples),
                n_rows=len(used), n_source=len(rows), len_min=min(lengths), len_median=int(statistics.median(lengths)),
                len_max=max(lengths), answer_share=answer / sum(lengths), pad_width=pad_width,
                epochs=args.steps * args.batch_size / len(examples), fused=fused,
                precision=("fp32 weights, bf16 autocast" if amp_dtype is not None else "fp32"),
                machine=machine, torch=torch.__version__, transformers=pkg_version("transformers"),
                datasets=pkg_version("datasets"), accelerate=pkg_version("accelerate"))
    print(f"{machine}: {model_what}, {n_params:,} parameters, {tok_what}; {len(examples)} examples from {source}, lengths"
          f" {min(lengths)}-{max(lengths)} (A pads to {pad_width}); {args.steps} steps of {args.batch_size};"
          f" {meta['precision']}", flush=True)

    runner = Runner(base, tokenizer, examples, orders, pad_width, device, amp_dtype, args.lr, args.seed)
    checks = loss_checks(runner)
    print("loss checks:", {k: {m: round(v, 6) for m, v in c.items()} for k, c in checks.items()}, flush=True)
    start = time.perf_counter()
    runner.warm_up(warmup)
    if warmup:
        print(f"warm-up {time.perf_counter() - start:.1f} s", flush=True)

    all_runs: dict[str, list[dict]] = {k: [] for k in METHODS}
    for repeat in range(args.repeats):
        for key in METHODS:
            r = runner.run(key)
            all_runs[key].append(r)
            print(f"[{repeat + 1}/{args.repeats}] {key}: {r['seconds'] / r['steps']:.4f} s/step,"
                  f" {r['real'] / r['seconds']:,.0f} real tokens/s, {r['processed'] / r['steps']:,.0f} processed"
                  f" tokens/step, loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}", flush=True)
    results = {}
    for key, runs in all_runs.items():
        median = statistics.median(r["seconds"] for r in runs)
        results[key] = {**runs[0], "seconds": median}
    meta["all_seconds"] = {k: [r["seconds"] for r in v] for k, v in all_runs.items()}

    library = []
    if not args.no_library:
        weight_kinds = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
        for weights in weight_kinds:
            r = run_library(base, tokenizer, used, args, device, weights)
            name = f"D via labhelpers.fine_tune ({weights} weights)"
            library.append((name, r))
            print(f"{name}: {r['seconds'] / r['steps']:.4f} s/step, {r['real'] / r['seconds']:,.0f} real tokens/s,"
                  f" flags {r['flags']}, loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}", flush=True)

    table = make_table(results, library, checks, meta, args)
    print()
    print(table)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "finetune_throughput.md").write_text(table + "\n", encoding="utf-8")
    if not args.no_append and (args.profile != "tiny" or args.append):
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
