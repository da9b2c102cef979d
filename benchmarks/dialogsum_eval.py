"""Lab 05's fine-tuning, scored on real DialogSum dialogues (human-written, not ours to ship).

Fine-tunes the embedded model exactly as lab 05 does on the `embedded` profile (the project's
dialogues, the profile's steps, batch and learning rate), then scores base and fine-tuned model on
DialogSum dev dialogues read from ../shared/data/dialogsum/ beside the checkout: ROUGE with 95%
bootstrap intervals and the paired difference. With --train-on dialogsum it fine-tunes on the
first DialogSum dev rows instead and scores on the rest (an in-domain check).

    .venv/bin/python benchmarks/dialogsum_eval.py [--n 100] [--train-on project|dialogsum]

The data is read in place and never copied; without it the script says so and exits 0.
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

from labhelpers import (comparison_table, format_table, generate_texts, get_profile, load_dialogues, load_model,
                        make_generation_config, metric_table, score_summaries)
from labhelpers.data import read_jsonl
from labhelpers import TrainConfig, fine_tune, task_prompt

ROOT = Path(__file__).resolve().parent.parent
DIALOGSUM_DEV = ROOT.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"
METRICS = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="DialogSum dialogues to score (default 100)")
    parser.add_argument("--train-on", choices=["project", "dialogsum"], default="project")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    if not DIALOGSUM_DEV.exists():
        print(f"no DialogSum data at {DIALOGSUM_DEV}; nothing to measure")
        return 0
    torch.set_num_threads(max(1, torch.get_num_threads()))
    P = get_profile("embedded")
    rows = read_jsonl(DIALOGSUM_DEV)
    if args.train_on == "dialogsum":
        train_rows, test_rows = rows[:len(rows) - args.n], rows[len(rows) - args.n:]
        source = f"DialogSum dev rows 1-{len(train_rows)}"
    else:
        train_rows, test_rows = list(load_dialogues(profile=P)["train"]), rows[:args.n]
        source = "the project's train split (as lab 05)"
    model, tokenizer = load_model(profile=P)
    config = TrainConfig(steps=P.train_steps, batch_size=P.train_batch_size, learning_rate=P.learning_rate,
                         seed=P.seed)
    run = fine_tune(model, tokenizer, train_rows, tasks="summary", config=config, progress=False, live_plot=False)
    prompts = [task_prompt(r, "summary") for r in test_rows]
    references = [r["summary"] for r in test_rows]
    generation = make_generation_config(P.max_new_tokens)
    scores, seconds = {}, {}
    for name, m in (("base", model), ("fine-tuned", run.model)):
        started = time.perf_counter()
        texts = generate_texts(m, tokenizer, prompts, generation, batch_size=P.batch_size, progress=False)
        seconds[name] = time.perf_counter() - started
        scores[name] = score_summaries(texts, references)
    table = format_table(metric_table(scores, metrics=METRICS, seed=P.seed))
    paired = comparison_table(scores["base"], scores["fine-tuned"], metrics=METRICS, seed=P.seed)
    lines = [
        f"### Lab 05 fine-tuning scored on DialogSum, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"SmolLM2-135M-Instruct fine-tuned (every weight) on {source}: {run.n_train} examples "
        f"({run.n_dropped} dropped as too long), {config.steps} steps x {config.batch_size}, lr {config.learning_rate}, "
        f"{run.seconds:.0f} s on {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads); "
        f"train loss {run.first_loss:.2f} -> {run.final_loss:.2f}. Scored on {len(test_rows)} DialogSum dev "
        f"dialogues (human-written), greedy, {P.max_new_tokens} new tokens. torch {torch.__version__}, "
        f"transformers {version('transformers')}.",
        "",
        "| model | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name, row in table.iterrows():
        lines.append(f"| {name} | " + " | ".join(row[m] for m in METRICS) + " |")
    lines += ["", "Paired difference, fine-tuned minus base (95% bootstrap CI): " + "; ".join(
        f"{r.metric} {r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" for r in paired.itertuples()), ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
