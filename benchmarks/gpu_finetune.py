"""GPU fine-tuning throughput: full fine-tuning vs LoRA of a ~270M Llama-architecture model.

A causal Llama model is built from a config with random weights (no download: hidden 1024,
16 layers, 16 heads, intermediate 2816, vocab 32000, untied embeddings), trained on batches of
random token ids (16 x 512 by default) with SDPA attention and AdamW in a plain PyTorch loop.
For each configuration it reports tokens/s, model FLOPs utilisation (MFU) and peak GPU memory.

Configurations (pick with --configs, default all):
  full           full fine-tuning, fp32 master weights, forward/backward under
                 torch.autocast(bfloat16), fused AdamW with fp32 states (the usual "bf16 mixed precision")
  full-bf16      full fine-tuning with the weights themselves in bf16 (no autocast; AdamW states in bf16)
  full-compile   "full", with torch.compile(model) (default inductor mode)
  lora           LoRA r=16, alpha=32 on q,k,v,o projections (peft LoraConfig); frozen base weights in
                 bf16, adapter weights in fp32 (peft's default upcast), forward/backward under autocast(bf16)
  lora-compile   "lora", with torch.compile(model)

FLOP-counting convention (N = every parameter of the model, embeddings and lm_head included,
frozen and trainable; T = tokens processed, batch x sequence length):
  full fine-tuning: 6 * N * T   (forward 2NT, backward 4NT: activation grads 2NT + weight grads 2NT)
  LoRA:             4 * N_frozen * T + 6 * N_lora * T   (forward 2NT, activation grads 2NT, weight
                    grads only for the small adapters)
Attention-score FLOPs (QK^T and AV, about 12 * layers * seq * hidden per token for a training step,
~7% on top at 512 tokens) are NOT counted, and the embedding lookup is counted as if it were a
matmul; both are the common "6N" simplification. MFU = counted FLOPs / time / peak, where the
peak is this script's own measurement of a large bf16 matmul (8192^3, random data) on the same GPU.

Timing: warm-up steps first (they include torch.compile's compilation), then torch.cuda.synchronize,
a host clock around --steps steps, and torch.cuda.synchronize again. Peak memory is
torch.cuda.max_memory_allocated since just before the model was built (weights, gradients,
optimizer states and activations).

    python benchmarks/gpu_finetune.py                 # on a CUDA GPU; appends to benchmarks/RESULTS.md
    python benchmarks/gpu_finetune.py --smoke         # tiny model, a few steps, runs on a CPU in seconds

--smoke runs every configuration on a tiny model (fp32 on a CPU, where bf16 matmuls can crash
some machines; torch.compile with its "eager" backend, so only graph capture is checked) and prints the table without appending it to RESULTS.md. --out DIR (default: $OUT
when set) also writes the table to DIR/gpu_finetune.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ALL_CONFIGS = ["full", "full-bf16", "full-compile", "lora", "lora-compile"]
GIB = 1024**3


def model_config(smoke: bool):
    from transformers import LlamaConfig

    if smoke:
        sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                     intermediate_size=172, vocab_size=1000)
    else:
        sizes = dict(hidden_size=1024, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
                     intermediate_size=2816, vocab_size=32000)
    config = LlamaConfig(**sizes, max_position_embeddings=2048, tie_word_embeddings=False, use_cache=False,
                         attn_implementation="sdpa")
    return config


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """Mean throughput of `repeats` size^3 matmuls on random data after 3 warm-ups, in TFLOP/s."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    seconds = time.perf_counter() - start
    del a, b
    return 2 * size**3 * repeats / seconds / 1e12


def build_model(config, device: torch.device, weight_dtype: torch.dtype):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.to(dtype=weight_dtype).train()


def run_config(name: str, args, config, device: torch.device, low_dtype: torch.dtype) -> dict:
    """Build, warm up and time one configuration; returns a row of measurements."""
    lora = name.startswith("lora")
    compiled = name.endswith("compile")
    pure_low = name == "full-bf16"
    use_autocast = low_dtype != torch.float32 and not pure_low
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    # full: fp32 master weights + autocast; full-bf16: bf16 weights; lora: frozen base in bf16
    weight_dtype = low_dtype if (lora or pure_low) else torch.float32
    model = build_model(config, device, weight_dtype)
    n_params = sum(p.numel() for p in model.parameters())
    if lora:
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        model = get_peft_model(model, lcfg)  # adapters upcast to fp32 (autocast_adapter_dtype=True)
    params = list(model.parameters())
    n_total = sum(p.numel() for p in params)
    n_trainable = sum(p.numel() for p in params if p.requires_grad)
    trainable = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.0, fused=device.type == "cuda")
    # a CPU smoke run only checks that dynamo can capture the step (backend "eager": no C++ build)
    step_model = (torch.compile(model, backend="eager" if args.smoke else "inductor") if compiled else model)

    gen = torch.Generator(device=device).manual_seed(1)
    batches = [torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device, generator=gen)
               for _ in range(4)]

    def step(i: int) -> torch.Tensor:
        ids = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=low_dtype, enabled=use_autocast):
            loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    t0 = time.perf_counter()
    for i in range(args.warmup):
        loss = step(i)
    sync(device)
    warmup_s = time.perf_counter() - t0
    first_loss = float(loss)

    start = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    sync(device)
    seconds = time.perf_counter() - start
    last_loss = float(loss)

    tokens = args.batch * args.seq * args.steps
    if lora:
        flops = 4 * (n_total - n_trainable) * tokens + 6 * n_trainable * tokens
    else:
        flops = 6 * n_total * tokens
    peak_mem = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    row = dict(name=name, n_base=n_params, n_total=n_total, n_trainable=n_trainable, seconds=seconds,
               step_ms=seconds / args.steps * 1000, tokens_s=tokens / seconds, tflops=flops / seconds / 1e12,
               peak_mem=peak_mem, warmup_s=warmup_s, loss=(first_loss, last_loss))
    del step_model, model, opt, batches, params, trainable
    return row


DESCRIPTIONS = {
    "full": "full fine-tune (fp32 weights, autocast bf16)",
    "full-bf16": "full fine-tune (bf16 weights, no autocast)",
    "full-compile": "full fine-tune (fp32 weights, autocast bf16) + torch.compile",
    "lora": "LoRA r=16 q,k,v,o (bf16 base, fp32 adapters, autocast bf16)",
    "lora-compile": "LoRA r=16 q,k,v,o (bf16 base, fp32 adapters, autocast bf16) + torch.compile",
}


def describe(name: str, smoke_fp32: bool) -> str:
    text = DESCRIPTIONS[name]
    if smoke_fp32:  # everything runs in fp32 in a CPU smoke run
        text = text.replace("bf16", "fp32") + " [fp32 smoke]"
    return text


def make_table(rows: list[dict], failures: dict[str, str], args, meta: dict) -> str:
    peak = meta["peak_tflops"]
    lines = [
        f"### GPU fine-tuning throughput, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Llama-architecture causal LM from a config with random weights ({meta['arch']};"
        f" {meta['n_params']:,} parameters), random token ids, batch {args.batch} x {args.seq} tokens,"
        f" SDPA attention (`{meta['attn']}`), AdamW (fused on CUDA), plain PyTorch loop;"
        f" {args.warmup} warm-up steps then {args.steps} timed steps (synchronised host clock)."
        f" Machine: {meta['machine']}; torch {meta['torch']}, transformers {meta['transformers']},"
        f" peft {meta['peft']}; {meta['peak_dtype']} matmul peak {peak:.3g} TFLOP/s"
        f" (measured here, {meta['peak_size']}^3, random data).",
        "FLOPs counted: full fine-tune 6·N·T, LoRA 4·N_frozen·T + 6·N_lora·T (N = all parameters incl."
        " embeddings and lm_head, T = tokens); attention-score FLOPs not counted.",
        "",
        "| configuration | trainable params | step (ms) | tokens/s | model TFLOP/s | MFU | peak memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem = f"{r['peak_mem']:.2f}" if r["peak_mem"] is not None else "n/a (CPU)"
        lines.append(f"| {describe(r['name'], meta['smoke_fp32'])} | {r['n_trainable']:,} | {r['step_ms']:.1f}"
                     f" | {r['tokens_s']:,.0f} | {r['tflops']:.1f} | {r['tflops'] / peak:.1%} | {mem} |")
    for name, err in failures.items():
        lines.append(f"| {describe(name, meta['smoke_fp32'])} | failed: {err} | | | | | |")
    lines.append("")
    by = {r["name"]: r for r in rows}
    notes = []
    if "full" in by and "lora" in by and by["full"]["peak_mem"]:
        notes.append(f"LoRA / full peak memory: {by['lora']['peak_mem'] / by['full']['peak_mem']:.2f}"
                     f" ({by['lora']['peak_mem']:.2f} / {by['full']['peak_mem']:.2f} GiB);"
                     f" LoRA / full tokens/s: {by['lora']['tokens_s'] / by['full']['tokens_s']:.2f}.")
    for base in ("full", "lora"):
        if base in by and f"{base}-compile" in by:
            c = by[f"{base}-compile"]
            notes.append(f"torch.compile speed-up ({base}): {c['tokens_s'] / by[base]['tokens_s']:.2f}x"
                         f" (warm-up incl. compilation {c['warmup_s']:.0f} s).")
    notes.append("Loss (end of warm-up -> last timed step): "
                 + "; ".join(f"{r['name']} {r['loss'][0]:.2f} -> {r['loss'][1]:.2f}" for r in rows) + ".")
    lines += [" ".join(notes), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model and batch, a few steps; runs on a CPU")
    parser.add_argument("--configs", default=",".join(ALL_CONFIGS), help=f"comma-separated subset of {ALL_CONFIGS}")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak measurement")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="also write the table to OUT/gpu_finetune.md")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.smoke and device.type != "cuda":
        parser.error("no CUDA GPU found: this benchmark needs one (use --smoke to check it on a CPU)")
    defaults = (2, 64, 1, 2, 512) if args.smoke else (16, 512, 5, 20, 8192)
    for key, value in zip(("batch", "seq", "warmup", "steps", "peak_size"), defaults):
        if getattr(args, key) is None:
            setattr(args, key, value)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(configs) - set(ALL_CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {ALL_CONFIGS}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # bf16 on a GPU; fp32 on a CPU (some CPUs here crash on bf16 matmuls, see labhelpers/device.py)
    low_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    config = model_config(args.smoke)
    peak = matmul_peak_tflops(device, low_dtype, args.peak_size)
    probe = build_model(config, torch.device("meta"), torch.float32)
    n_params = sum(p.numel() for p in probe.parameters())
    attn = probe.config._attn_implementation
    del probe
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    meta = dict(peak_tflops=peak, peak_dtype=str(low_dtype).replace("torch.", ""), peak_size=args.peak_size,
                n_params=n_params, attn=attn, machine=machine, torch=torch.__version__,
                transformers=version("transformers"), peft=version("peft"),
                smoke_fp32=low_dtype == torch.float32,
                arch=f"hidden {config.hidden_size}, {config.num_hidden_layers} layers,"
                     f" {config.num_attention_heads} heads, intermediate {config.intermediate_size},"
                     f" vocab {config.vocab_size}")
    print(f"{machine}: {meta['peak_dtype']} matmul peak {peak:.1f} TFLOP/s; model {n_params:,} parameters;"
          f" attention {attn}", flush=True)

    rows, failures = [], {}
    for name in configs:
        try:
            row = run_config(name, args, config, device, low_dtype)
        except Exception as exc:  # report, keep going with the other configurations
            failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:150] if str(exc) else ''}"
            print(f"{name}: FAILED {failures[name]}", flush=True)
            continue
        rows.append(row)
        mem = f"{row['peak_mem']:.2f} GiB" if row["peak_mem"] is not None else "n/a"
        print(f"{name}: {row['step_ms']:.1f} ms/step, {row['tokens_s']:,.0f} tokens/s, {row['tflops']:.1f} TFLOP/s"
              f" ({row['tflops'] / peak:.1%} MFU), peak memory {mem}, trainable {row['n_trainable']:,}"
              f" of {row['n_total']:,}, warm-up {row['warmup_s']:.1f} s", flush=True)
        if args.out:  # partial results survive a later crash or timeout
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "gpu_finetune.md").write_text(make_table(rows, failures, args, meta), encoding="utf-8")

    table = make_table(rows, failures, args, meta)
    print()
    print(table)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_finetune.md").write_text(table, encoding="utf-8")
    if not args.smoke and not args.no_append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write(table + "\n")
    return 1 if failures and not rows else 0


if __name__ == "__main__":
    sys.exit(main())
