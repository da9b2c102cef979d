"""Fine-tuning: where a training step's time goes, and how fast each part runs against its kernel alone.

Runs `labhelpers.fine_tune` as lab 07 runs it (the profile's model and dialogues, summary task, batch 4,
gradient checkpointing, the helpers' precision: bf16 autocast on a CPU that does bf16 fast), with LoRA
r=16 or full fine-tuning, under `torch.profiler`, and sorts the operators' own time into matrix
multiplies, attention (PyTorch's fused scaled-dot-product kernels, forward and backward), dtype casts
and copies, and the rest. Matrix-multiply FLOPs come from the profiler (`with_flops`); attention FLOPs
from each call's shapes (causal: half of the 4 x batch x heads x queries x keys x head size of the
forward; the backward does 2.5 times the forward's work), counted in a second, identical run, since
recording shapes and FLOPs slows every operator. The same kernels are then timed alone at the
step's shapes: one matmul as large as a layer's MLP projection over the batch's tokens, and one
attention call forward and backward, so the table can say how close to its kernel each part runs.

    .venv/bin/python benchmarks/training_profile.py [--profile embedded] [--adapter lora|full] [--steps 4]

Prints a table and appends it to benchmarks/RESULTS.md (not on --profile tiny unless --append).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections import defaultdict
from importlib.metadata import version

import labhelpers  # noqa: F401  first: probes bf16 safety before torch loads
import torch
import torch.nn.functional as F

from labhelpers import fine_tune, load_dialogues, load_model
from labhelpers.adapters import lora_config
from labhelpers.device import cpu_mixed_precision
from labhelpers.train import TrainConfig

from _publish import add_append_arguments, publish

ATTENTION = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_efficient_attention",
             "aten::_scaled_dot_product_attention_math")
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
CASTS = ("aten::copy_", "aten::_to_copy", "aten::to")


def category(name: str) -> str:
    if name.startswith(ATTENTION):
        return "attention, backward" if "backward" in name else "attention, forward"
    if name in MATMUL:
        return "matrix multiplies"
    if name in CASTS:
        return "dtype casts and copies"
    return "everything else"


def attention_flops(shapes) -> float:
    """Causal work of one forward attention call from its input shapes (query [B, H, S, D], key [B, Hk, T, D])."""
    if not shapes or len(shapes[0]) != 4 or len(shapes[1]) != 4:
        return 0.0
    batch, heads, queries, dim = shapes[0]
    keys = shapes[1][2]
    return 4 * batch * heads * queries * keys * dim / 2


def best_seconds(work, repeats: int = 5) -> float:
    work()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="embedded", choices=["tiny", "embedded"])
    parser.add_argument("--adapter", default="lora", choices=["lora", "full"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    add_append_arguments(parser)
    args = parser.parse_args()
    if args.steps < 2 or args.batch_size < 1:
        parser.error("--steps must be at least 2 and --batch-size at least 1")

    from torch.profiler import ProfilerActivity, profile

    model, tokenizer = load_model(profile=args.profile)
    rows = load_dialogues(profile=args.profile)["train"]
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=1e-3 if args.adapter == "lora"
                         else 1e-4, seed=0, gradient_checkpointing=True)
    adapter = lora_config(model, r=16) if args.adapter == "lora" else None
    if next(model.parameters()).device.type != "cpu":
        raise SystemExit("this profiles CPU training; on a GPU, measure with benchmarks/gpu_finetune.py")
    mixed = cpu_mixed_precision()

    def profiled(counting: bool):
        """One fine_tune run under the profiler. Recording shapes and FLOPs slows every operator, so the
        times come from a run without them, and the FLOPs from a second, identical run (same batches)."""
        with profile(activities=[ProfilerActivity.CPU], record_shapes=counting, with_flops=counting) as prof:
            run = fine_tune(model, tokenizer, rows, tasks="summary", config=config, adapter=adapter,
                            progress=False, live_plot=False)
        return run, [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]

    run, timed = profiled(False)
    _, counted = profiled(True)
    seconds = defaultdict(float)
    flops = defaultdict(float)
    attention_shapes = []
    for event in timed:
        seconds[category(event.name)] += event.self_cpu_time_total / 1e6
    for event in counted:
        kind = category(event.name)
        if kind == "matrix multiplies":
            flops[kind] += event.flops or 0
        elif kind == "attention, forward":
            work = attention_flops(event.input_shapes)
            flops[kind] += work
            if work:
                attention_shapes.append(event.input_shapes[0])
    flops["attention, backward"] = 2.5 * flops["attention, forward"]
    total = sum(seconds.values())
    steps = run.history.dropna(subset=["train_loss"])
    step_seconds = steps["seconds"].diff().dropna()

    # The same kernels alone, at the step's shapes and in the step's precision.
    dtype = torch.bfloat16 if mixed else torch.float32
    hidden = model.config.hidden_size
    inner = getattr(model.config, "intermediate_size", 4 * hidden)
    tokens = int(run.tokens_seen / args.steps)
    a, w = torch.randn(tokens, hidden, dtype=dtype), torch.randn(inner, hidden, dtype=dtype)
    gemm_rate = 2 * tokens * hidden * inner / best_seconds(lambda: a @ w.t()) / 1e9
    b, h, s, d = max(attention_shapes, key=lambda shape: shape[2]) if attention_shapes else (args.batch_size, 1, 64, 64)
    q, k, v = (torch.randn(b, h, s, d, dtype=dtype, requires_grad=True) for _ in range(3))
    forward_alone = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    both_alone = best_seconds(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward())
    work = 4 * b * h * s * s * d / 2
    attention_rate = work / forward_alone / 1e9
    attention_rate_both = 3.5 * work / both_alone / 1e9

    gflops = {kind: flops[kind] / seconds[kind] / 1e9 for kind in flops if seconds[kind] and flops[kind]}
    name = "LoRA r=16" if args.adapter == "lora" else "full fine-tuning"
    lines = [
        f"### Fine-tuning: where a step's time goes, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"`benchmarks/training_profile.py`: `fine_tune` with {name} on the `{args.profile}` model"
        f" ({sum(p.numel() for p in model.parameters()):,} parameters), summary task, {args.steps} steps of"
        f" {args.batch_size} project dialogues ({run.tokens_seen:,} real tokens), gradient checkpointing, "
        f"{'bf16 autocast (fp32 weights and AdamW)' if mixed else 'fp32'}; under `torch.profiler`. Steps after the first:"
        f" median {statistics.median(step_seconds):.2f} s; the run {run.seconds:.1f} s. Seconds are each operator's own"
        f" time on the thread that called it (its intra-op threads work inside that time). Machine:"
        f" {platform.machine()}, {torch.get_num_threads()} threads; torch {version('torch')}, transformers {version('transformers')}, peft {version('peft')}.",
        "",
        "| part | seconds | share | GFLOP/s |",
        "|---|---:|---:|---:|",
    ]
    for kind in ("matrix multiplies", "attention, forward", "attention, backward", "dtype casts and copies",
                 "everything else"):
        rate = f"{gflops[kind]:.0f}" if kind in gflops else ""
        lines.append(f"| {kind} | {seconds[kind]:.1f} | {seconds[kind] / total:.0%} | {rate} |")
    lines.append(f"| **all operators** | **{total:.1f}** | | |")
    lines += ["", f"Alone, in {str(dtype).replace('torch.', '')}: a [{tokens} x {hidden}] x [{hidden} x {inner}] matmul"
              f" (a step's tokens through one MLP projection) {gemm_rate:.0f} GFLOP/s; causal attention at the"
              f" step's longest shape [{b}, {h}, {s}, {d}] {attention_rate:.0f} GFLOP/s forward, {attention_rate_both:.0f}"
              f" GFLOP/s forward and backward (`F.scaled_dot_product_attention`).", ""]
    publish("\n".join(lines), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
