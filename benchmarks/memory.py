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
computes the vocabulary-sized logits at every position. Reported: the peak, the memory before the
step (model loaded), the second step's seconds, and the ratios LoRA / full.

    .venv/bin/python benchmarks/memory.py [--profile embedded] [--batch-size 4] [--device cpu]

Prints a table and appends it to benchmarks/RESULTS.md (not on --profile tiny unless --append).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("full", "lora", "full+ckpt", "lora+ckpt", "prompt+ckpt", "prompt+ckpt+logits")


def measure(config: str, profile: str, batch_size: int, device: str | None) -> dict:
    """One configuration, in this process: two optimizer steps, each with its measured peak."""
    import labhelpers  # noqa: F401  probes bf16 safety before torch loads
    import torch

    from labhelpers import load_dialogues, load_model
    from labhelpers.adapters import add_adapter, lora_config, prompt_tuning_config, trainable_summary
    from labhelpers.memory import peak_memory
    from labhelpers.train import PadCollator, answer_only_loss, build_instruction_data

    torch.manual_seed(0)
    model, tokenizer = load_model(profile=profile, device=device)
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
    model.train()
    summary = trainable_summary(model) if config.startswith(("lora", "prompt")) else {
        "trainable": sum(p.numel() for p in model.parameters()), "percent": 100.0}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    steps = []
    for _ in range(2):
        start = time.perf_counter()
        with peak_memory(device) as mem:
            loss = loss_of(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        steps.append({"baseline": mem.baseline_bytes, "peak": mem.peak_bytes, "method": mem.method,
                      "seconds": time.perf_counter() - start})
    return {"config": config, "tokens": int(batch["attention_mask"].sum()), "shape": list(batch["input_ids"].shape),
            "trainable": summary["trainable"], "percent": summary["percent"], "steps": steps,
            "device": mem.device, "params": sum(p.numel() for p in model.parameters() if p.dim() > 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="embedded", choices=["tiny", "embedded"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: labhelpers.pick_device())")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)  # internal: measure one, print JSON
    parser.add_argument("--append", action="store_true", help="append to RESULTS.md even on --profile tiny")
    parser.add_argument("--no-append", action="store_true")
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
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"measuring {config} failed (exit {done.returncode})")
        results[config] = json.loads(lines[-1][len("RESULT "):])

    gib = 1024**3
    full, lora = results["full"], results["lora"]
    names = {"full": "full fine-tuning", "lora": "LoRA r=16 q,k,v,o", "full+ckpt": "full, gradient checkpointing",
             "lora+ckpt": "LoRA, gradient checkpointing", "prompt+ckpt": "prompt tuning, 20 tokens, checkpointing",
             "prompt+ckpt+logits": "the same, logits at every position (PEFT's loss)"}
    lines = [
        f"### Memory: one LoRA step vs one full fine-tuning step, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Profile `{args.profile}` ({full['params']:,} parameters, fp32), one batch of {args.batch_size} real instruction"
        f" examples of median length (shape {full['shape']}, {full['tokens']} real tokens), answer-only loss,"
        f" AdamW; each configuration in a fresh process on {full['device']} ({full['steps'][0]['method']}). Step 1"
        f" creates the AdamW states; step 2 has them. Machine: {platform.machine()}; torch {version('torch')},"
        f" transformers {version('transformers')}, peft {version('peft')}.",
        "",
        "| configuration | trainable | before the step (GiB) | peak, step 1 (GiB) | peak, step 2 (GiB) |"
        " step 2 peak above before (GiB) | step 2 (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for config, r in results.items():
        s1, s2 = r["steps"]
        lines.append(f"| {names[config]} | {r['trainable']:,} ({r['percent']:.2f}%) | {s1['baseline'] / gib:.2f} |"
                     f" {s1['peak'] / gib:.2f} | {s2['peak'] / gib:.2f} | {(s2['peak'] - s2['baseline']) / gib:.2f} |"
                     f" {s2['seconds']:.2f} |")
    ratio = lora["steps"][1]["peak"] / full["steps"][1]["peak"]
    ratio_step = (lora["steps"][1]["peak"] - lora["steps"][0]["baseline"]) / \
        (full["steps"][1]["peak"] - full["steps"][0]["baseline"])
    ckpt = results["lora+ckpt"]["steps"][1]["peak"] / results["full+ckpt"]["steps"][1]["peak"]
    lines += ["", f"LoRA / full, peak of a step with optimizer states in place: {ratio:.2f}x (goal at most 0.6x: "
              f"{'met' if ratio <= 0.6 else 'not met'}); of what training adds on top of the loaded model: "
              f"{ratio_step:.2f}x. With gradient checkpointing in both: {ckpt:.2f}x "
              f"({'met' if ckpt <= 0.6 else 'not met'}). LoRA dropout 0 (labhelpers' default).", ""]
    prompt, logits = results["prompt+ckpt"]["steps"][1], results["prompt+ckpt+logits"]["steps"][1]
    lines += [f"Prompt tuning, answer-only loss vs PEFT's loss: peak above the loaded model "
              f"{(prompt['peak'] - prompt['baseline']) / gib:.2f} vs {(logits['peak'] - logits['baseline']) / gib:.2f} GiB,"
              f" step {prompt['seconds']:.2f} vs {logits['seconds']:.2f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if (args.profile != "tiny" or args.append) and not args.no_append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
