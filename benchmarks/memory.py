"""Memory: peak of one LoRA training step vs one full fine-tuning step, same model and batch.

Each configuration runs in a fresh Python process (freed memory is not always returned to the
operating system, so one process per measurement keeps the numbers honest). In each: load the
model, encode one batch of real instruction examples, then measure with `labhelpers.memory.peak_memory`
one optimizer step (forward, backward, AdamW step, which creates the optimizer states) and a second
step (states already there). Full fine-tuning trains every weight; LoRA r=16 on q,k,v,o trains
about 1% of them (labhelpers.adapters). Both also with gradient checkpointing, which keeps only
each layer's input and recomputes the rest in the backward pass: at real batch sizes activations,
not weights and optimizer states, dominate the peak. Prompt tuning (20 learnt tokens, as in lab 07)
runs with checkpointing twice: with labhelpers' answer-only loss, and with PEFT's own loss, which
computes the vocabulary-sized logits at every position. Full and LoRA also run under bf16 autocast
(weights and AdamW stay fp32), as `labhelpers.fine_tune` trains on a CPU with fast bf16. Reported: the
peak, the memory before the step (model loaded), the second step's seconds, and the ratios LoRA / full.

Two things would otherwise make CPU peaks measure the allocator and the page cache, not the method:
- The loaded model's weights are mapped from its safetensors file and read in only when first used, so
  the first step that reads them (a LoRA step: it never writes them) would count 0.5 GiB of weights as
  its own. Each process copies the weights into its own memory before measuring, as `fine_tune` does.
- glibc keeps freed blocks and, by default, raises its threshold for handing large ones straight back
  to the system as a program frees them; how much a step then keeps resident varies by 0.5-1 GiB from
  run to run (benchmarks/RESULTS.md, 2026-11-23 vs 2026-12-07 06:45). The children run with
  MALLOC_MMAP_THRESHOLD_=131072: every block of 128 KiB or more is its own mapping, returned when
  freed, so the resident peak follows the memory in use. That costs page faults, so the step seconds
  here run slower than training does.

    .venv/bin/python benchmarks/memory.py [--profile embedded] [--batch-size 4] [--device cpu]

Prints a table and appends it to benchmarks/RESULTS.md (not on --profile tiny unless --append).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version

from _publish import add_append_arguments, publish

CONFIGS = ("full", "lora", "full+ckpt", "lora+ckpt", "full+bf16", "lora+bf16", "prompt+ckpt", "prompt+ckpt+logits")
# glibc: blocks of 128 KiB or more get their own mapping, given back when freed (see the docstring)
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(config: str, profile: str, batch_size: int, device: str | None) -> dict:
    """One configuration, in this process: two optimizer steps, each with its measured peak."""
    import labhelpers  # noqa: F401  probes bf16 safety before torch loads
    import torch

    from labhelpers import load_dialogues, load_model
    from labhelpers.adapters import add_adapter, lora_config, prompt_tuning_config, trainable_summary
    from labhelpers.device import autocast, cpu_bf16_safe
    from labhelpers.memory import peak_memory
    from labhelpers import PadCollator, answer_only_loss, build_instruction_data

    torch.manual_seed(0)
    model, tokenizer = load_model(profile=profile, device=device)
    with torch.no_grad():  # weights into this process's memory, not pages of the file read on first use
        for parameter in model.parameters():  # (tied weights are one parameter: the tie survives)
            parameter.data = parameter.data.clone()
    rows = list(load_dialogues(profile=profile)["train"])
    data = build_instruction_data(rows, tokenizer, model, "summary", seed=0)
    examples = sorted(data.examples, key=lambda e: len(e["input_ids"]))  # a batch of median-length examples
    middle = len(examples) // 2
    batch = PadCollator(tokenizer, "causal")(examples[middle:middle + batch_size])
    batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
    if config.endswith("+ckpt"):  # keep only each layer's input; recompute the rest during backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.startswith("lora"):
        model = add_adapter(model, lora_config(model, r=16), in_place=True)
    if config.startswith("prompt"):
        model = add_adapter(model, prompt_tuning_config(model, tokenizer, n_virtual_tokens=20), in_place=True)
    # "+logits": PEFT's own loss, the vocabulary-sized logits at every position (what prompt tuning used before)
    loss_of = (lambda m, b: m(**b).loss) if config.endswith("+logits") else answer_only_loss
    mixed = config.endswith("+bf16")
    if mixed and (next(model.parameters()).device.type != "cpu" or not cpu_bf16_safe()):
        return {"config": config, "skipped": "bf16 autocast on a CPU is not safe here, or this is not a CPU"}
    model.train()
    summary = trainable_summary(model) if config.startswith(("lora", "prompt")) else {
        "trainable": sum(p.numel() for p in model.parameters()), "percent": 100.0}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    steps = []
    for _ in range(2):
        start = time.perf_counter()
        with peak_memory(device) as mem:
            with autocast(model, enabled=True) if mixed else contextlib.nullcontext():
                loss = loss_of(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        steps.append({"baseline": mem.baseline_bytes, "peak": mem.peak_bytes, "method": mem.method,
                      "seconds": time.perf_counter() - start})
    return {"config": config, "tokens": int(batch["attention_mask"].sum()), "shape": list(batch["input_ids"].shape),
            "trainable": summary["trainable"], "percent": summary["percent"], "steps": steps,
            "device": mem.device, "params": sum(p.numel() for p in model.parameters() if p.dim() > 0),
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="embedded", choices=["tiny", "embedded"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: labhelpers.pick_device())")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # internal: measure one, print JSON
    add_append_arguments(parser)
    args = parser.parse_args()
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.profile, args.batch_size, args.device)))
        return 0

    results = {}
    for config in CONFIGS:
        command = [sys.executable, __file__, "--one", config, "--profile", args.profile,
                   "--batch-size", str(args.batch_size)] + (["--device", args.device] if args.device else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ | CHILD_ENV)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"measuring {config} failed (exit {done.returncode})")
        result = json.loads(lines[-1][len("RESULT "):])
        if "skipped" in result:
            print(f"{config}: skipped ({result['skipped']})", file=sys.stderr)
        else:
            results[config] = result

    gib = 1024**3
    full = results["full"]

    def tensors(r: dict) -> int:
        """Step 2's peak less what the process held before step 1 apart from the weights (on a CPU the
        interpreter, torch and its libraries; on CUDA the batch): weights, gradients, optimizer states
        and activations, what a GPU's allocator counts."""
        return r["steps"][1]["peak"] - (r["steps"][0]["baseline"] - r["weight_bytes"])

    names = {"full": "full fine-tuning", "lora": "LoRA r=16 q,k,v,o", "full+ckpt": "full, gradient checkpointing",
             "lora+ckpt": "LoRA, gradient checkpointing", "full+bf16": "full, bf16 autocast (fine_tune here)",
             "lora+bf16": "LoRA, bf16 autocast (fine_tune here)", "prompt+ckpt": "prompt tuning, 20 tokens, checkpointing",
             "prompt+ckpt+logits": "the same, logits at every position (PEFT's loss)"}
    lines = [
        f"### Memory: one LoRA step vs one full fine-tuning step, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Profile `{args.profile}` ({full['params']:,} parameters, fp32), one batch of {args.batch_size} real instruction"
        f" examples of median length (shape {full['shape']}, {full['tokens']} real tokens), answer-only loss,"
        f" AdamW; each configuration in a fresh process on {full['device']} ({full['steps'][0]['method']}; weights"
        f" copied into the process's memory first; {' '.join(f'{k}={v}' for k, v in CHILD_ENV.items())}). Step 1"
        f" creates the AdamW states; step 2 has them. Machine: {platform.machine()}; torch {version('torch')},"
        f" transformers {version('transformers')}, peft {version('peft')}.",
        "",
        "| configuration | trainable | before the step (GiB) | peak, step 1 (GiB) | peak, step 2 (GiB) |"
        " step 2 peak above before (GiB) | step 2 peak: weights and training (GiB) | step 2 (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config, r in results.items():
        s1, s2 = r["steps"]
        lines.append(f"| {names[config]} | {r['trainable']:,} ({r['percent']:.2f}%) | {s1['baseline'] / gib:.2f} |"
                     f" {s1['peak'] / gib:.2f} | {s2['peak'] / gib:.2f} | {(s2['peak'] - s2['baseline']) / gib:.2f} |"
                     f" {tensors(r) / gib:.2f} | {s2['seconds']:.2f} |")

    def versus(a: str, b: str, measure=tensors) -> str:
        ratio = measure(results[a]) / measure(results[b])
        return f"{ratio:.2f}x ({'met' if ratio <= 0.6 else 'not met'})"

    def whole(r: dict) -> int:
        return r["steps"][1]["peak"]

    def added(r: dict) -> int:
        return r["steps"][1]["peak"] - r["steps"][0]["baseline"]

    pairs = [("lora", "full", "fp32"), ("lora+ckpt", "full+ckpt", "fp32, gradient checkpointing in both"),
             ("lora+bf16", "full+bf16", "bf16 autocast in both, as fine_tune trains here")]
    lines += ["", "LoRA / full, peak of a step with the optimizer states in place (goal at most 0.6x), counting the"
              " weights and training, what a GPU's allocator counts: "
              + "; ".join(f"{how}: {versus(a, b)}" for a, b, how in pairs if {a, b} <= results.keys())
              + f". The whole process's peak, fp32: {versus('lora', 'full', whole)}; what training adds on top of the"
              f" loaded model, fp32: {versus('lora', 'full', added)}. LoRA dropout 0 (labhelpers' default).", ""]
    prompt, logits = results["prompt+ckpt"]["steps"][1], results["prompt+ckpt+logits"]["steps"][1]
    lines += [f"Prompt tuning, answer-only loss vs PEFT's loss: peak above the loaded model "
              f"{(prompt['peak'] - prompt['baseline']) / gib:.2f} vs {(logits['peak'] - logits['baseline']) / gib:.2f} GiB,"
              f" step {prompt['seconds']:.2f} vs {logits['seconds']:.2f} s.", ""]
    publish("\n".join(lines), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
