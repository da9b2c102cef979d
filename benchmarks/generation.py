"""Generation: labhelpers.generate_texts (length-sorted batches) vs one dialogue at a time.

Same model, same prompts, same greedy settings, run side by side in one process; the outputs are
compared, and model FLOPs utilisation (2 x parameters FLOPs per processed token, prompt and new
tokens, over this machine's matmul peak in the precision used, measured here) is reported for each.
Rows: the loop in fp32; generate_texts in fp32 with every prompt read in full (share_prefix=False);
generate_texts as the labs run it, the prompts' common start read once (outputs of both must match
the loop's); and, where the CPU does bf16 fast, generate_texts(mixed_precision=True) (bf16 autocast;
its outputs are compared with fp32's and both are scored against the human summaries with ROUGE-L,
which is why the labs do not use it). `--shots 3` puts three short worked examples in front of
every dialogue, as lab 01's few-shot prompts do. Utilisation counts the tokens each way computes:
the shared start once, not once per prompt.

    .venv/bin/python benchmarks/generation.py [--n 64] [--shots 0] [--max-new-tokens 40] [--batch-size 16]

Prints a table and appends it to benchmarks/RESULTS.md. Uses the real DialogSum dev split when
../shared/data/dialogsum/ exists beside the checkout, else the project's own dialogues.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import labhelpers  # noqa: F401  first: probes bf16 safety before torch loads
import torch

from labhelpers import (build_chat, build_prompt, generate_texts, load_dialogues, load_model, make_generation_config,
                        model_input, select_examples)
from labhelpers.data import read_jsonl
from labhelpers.device import cpu_bf16_speedup, cpu_mixed_precision
from labhelpers.generate import SHARED_PREFIX_MIN_TOKENS, common_prefix_length
from labhelpers.prompts import uses_chat_template
from labhelpers.metrics import comparison_table, score_summaries

ROOT = Path(__file__).resolve().parent.parent
DIALOGSUM_DEV = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"


def matmul_peak_gflops(size: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    """Best observed matmul throughput on this machine in `dtype`, in GFLOP/s."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def held_out_dialogues(n: int) -> tuple[list[dict], list[dict], str]:
    """n dialogues to summarise, the rest of the split (a pool of worked examples), and their source."""
    if DIALOGSUM_DEV.exists():
        rows = read_jsonl(DIALOGSUM_DEV)
        return rows[:n], rows[n:], f"DialogSum dev (first {n})"
    ds = load_dialogues("project")
    rows = list(ds["test"]) + list(ds["validation"])
    return rows[:n], list(ds["train"]), f"project test+validation (first {n})"


def loop_generate(model, tokenizer, prompts, config) -> list[str]:
    """The obvious way: one prompt at a time, no padding."""
    texts = []
    with torch.inference_mode():
        for prompt in prompts:
            enc = tokenizer(model_input(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)
            out = model.generate(**enc, generation_config=config)
            texts.append(tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return texts


def processed_tokens(tokenizer, prompt_ids, outputs) -> int:
    """Prompt tokens (already tokenized) plus each output's tokens and its end-of-sequence token."""
    new_tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs)
    return sum(map(len, prompt_ids)) + new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--shots", type=int, default=0, help="worked examples in front of every dialogue")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    rows, pool, source = held_out_dialogues(args.n)
    model, tokenizer = load_model("smollm2-135m-instruct")
    config = make_generation_config(args.max_new_tokens)
    config.pad_token_id = tokenizer.pad_token_id
    shots = select_examples(pool, k=args.shots, seed=0, max_chars=700)
    build = build_chat if uses_chat_template(tokenizer) else build_prompt
    prompts = [build(r["dialogue"], shots, template="instruction") for r in rows]
    peak = matmul_peak_gflops()
    params = model.num_parameters()
    ids = [tokenizer(model_input(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    shared = common_prefix_length(ids)

    def timed(**settings):
        start = time.perf_counter()
        texts = generate_texts(model, tokenizer, prompts, config, batch_size=args.batch_size, progress=False,
                               **settings)
        return texts, time.perf_counter() - start

    start = time.perf_counter()
    loop = loop_generate(model, tokenizer, prompts, config)
    loop_s = time.perf_counter() - start
    full, full_s = timed(share_prefix=False)
    batched, batched_s = timed()
    mixed = cpu_mixed_precision()
    if mixed:
        peak16 = matmul_peak_gflops(dtype=torch.bfloat16)
        fast, fast_s = timed(mixed_precision=True)

    same = sum(a == b for a, b in zip(loop, batched))
    same_full = sum(a == b for a, b in zip(loop, full))
    tokens = processed_tokens(tokenizer, ids, loop)
    if shared < SHARED_PREFIX_MIN_TOKENS:  # too short to share: every prompt is read in full
        shared = 0
    once = tokens - (len(prompts) - 1) * shared  # the common start computed once
    mfu = lambda seconds, peak=peak, tokens=tokens: 2 * params * tokens / seconds / (peak * 1e9)
    if mixed:
        refs = [r["summary"] for r in rows]
        quality = comparison_table(score_summaries(batched, refs), score_summaries(fast, refs), metrics=["rougeL"])
        q = quality.iloc[0]
        bf16_row = (f"| generate_texts(mixed_precision=True) (bf16 autocast, fp32 weights), sorted batches of"
                    f" {args.batch_size} | {fast_s:.1f} | {loop_s / fast_s:.1f}x | {mfu(fast_s, peak16, once):.0%} of the bf16"
                    f" peak ({mfu(fast_s, peak, once):.0%} of fp32's) |")
        bf16_note = (f"bf16 autocast: bf16 matmul peak {peak16:.0f} GFLOP/s ({cpu_bf16_speedup():.1f}x fp32 in the"
                     f" labs' probe); outputs identical to fp32's: {sum(a == b for a, b in zip(batched, fast))} of"
                     f" {len(prompts)}; ROUGE-L against the human summaries, fp32 {q['baseline']:.3f} vs bf16"
                     f" {q['candidate']:.3f}, paired difference {q['difference']:+.3f}"
                     f" (95% CI {q['ci_low']:+.3f} to {q['ci_high']:+.3f}).")
    else:
        bf16_row, bf16_note = "", "bf16 autocast: not used on this CPU (see labhelpers.device.cpu_mixed_precision)."
    table = "\n".join([
        f"### Generation, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"SmolLM2-135M-Instruct fp32, greedy, {args.max_new_tokens} new tokens, {len(prompts)} dialogues ({source}),"
        f" {args.shots} worked example(s) in each prompt ({sum(map(len, ids)) / len(ids):.0f} prompt tokens on"
        f" average, the first {shared} common to all); {platform.processor() or platform.machine()},"
        f" {torch.get_num_threads()} threads, torch {torch.__version__}, transformers {version('transformers')};"
        f" fp32 matmul peak {peak:.0f} GFLOP/s (measured); {tokens:,} tokens processed, {once:,} when the common"
        f" start is read once.",
        "",
        "| method | wall time (s) | speed-up | model FLOPs utilisation |",
        "|---|---:|---:|---:|",
        f"| one dialogue at a time | {loop_s:.1f} | 1.0x | {mfu(loop_s):.0%} |",
        f"| generate_texts(share_prefix=False) (fp32), sorted batches of {args.batch_size} | {full_s:.1f} |"
        f" {loop_s / full_s:.1f}x | {mfu(full_s):.0%} |",
        f"| generate_texts (fp32, as the labs run it: the common start read once), sorted batches of"
        f" {args.batch_size} | {batched_s:.1f} | {loop_s / batched_s:.1f}x | {mfu(batched_s, peak, once):.0%} |",
        *([bf16_row] if bf16_row else []),
        "",
        f"fp32: identical outputs, loop vs batches: {same_full} of {len(prompts)} reading every prompt in full,"
        f" {same} of {len(prompts)} sharing the common start. {bf16_note}",
        "",
    ])
    print(table)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
        fh.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
