"""LoRA and QLoRA through labhelpers on a GPU: parameters, speed, memory, adapter size and reload check.

A ~256M-parameter Llama is built from a config with random weights (hidden 1024, 16 layers, 16 heads,
intermediate 2816, vocab = the SmolLM2 tokenizer's 49152, tied embeddings; no weights downloaded) and
saved with save_pretrained (safetensors) into a temporary folder together with the SmolLM2 tokenizer
files (.whl/smollm2-tokenizer, or --tokenizer FOLDER). Then, through labhelpers only:

  lora          `load_model(folder)` (bf16 on a GPU), `fine_tune(base, ..., adapter=lora_config(base, r=16))`
                (LoRA on q,k,v,o; the base is copied, as fine_tune does by default)
  qlora         `load_model_4bit(folder)` (NF4, double quantisation, bf16 compute, gradient checkpointing),
                `fine_tune(base, ..., adapter=lora_config(base, r=16), in_place=True)`
  qlora-nockpt  the same with `load_model_4bit(folder, gradient_checkpointing=False)` (speed comparison)

each on the project's dialogues (`load_dialogues()`, all splits: 240 summary examples) for --steps
optimizer steps of --batch-size (30 x 8 = one epoch), constant learning rate --lr, seed 0. Reported per
configuration: trainable parameters (`trainable_summary`), seconds per step (whole `trainer.train()`, and
steady state between the first and last logged step), real (non-padding) tokens/s
(`FineTuneResult.tokens_per_second()`), the loaded base model's weights (`get_memory_footprint()`),
peak GPU memory during `fine_tune` (`torch.cuda.max_memory_allocated`, reset just before it, so it
includes the base already resident and, for lora, the copy fine_tune makes), loss first -> last, the
adapter's size on disk after `save_adapter`, and the max |logit difference| between the trained model
and `load_adapter(fresh base, folder)` on a few test dialogues (plus `merge_adapter` vs the PeftModel).
The weights are random, so the loss only shows that training runs and moves; it says nothing about quality.

    python benchmarks/gpu_peft.py                    # on a CUDA GPU; --out DIR (default $OUT) gets gpu_peft.md
    python benchmarks/gpu_peft.py --append           # also append the table to benchmarks/RESULTS.md
    OMP_NUM_THREADS=1 python benchmarks/gpu_peft.py --smoke   # tiny model, LoRA only, a CPU, seconds

--smoke builds a tiny Llama (hidden 64, 2 layers) with the same tokenizer, trains 3 steps of 2 on 16
dialogues on the CPU (fp32) and runs every check of the lora path; QLoRA is skipped with the reason
`qlora_available()` gives.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

GIB = 1024**3
MIB = 1024**2
CONFIGS = ["lora", "qlora", "qlora-nockpt"]
DESCRIPTIONS = {
    "lora": "LoRA r=16 q,k,v,o on a {dtype} base (`load_model`, fine_tune copies the base)",
    "qlora": "QLoRA r=16 q,k,v,o on an NF4 base (`load_model_4bit`, gradient checkpointing, in_place)",
    "qlora-nockpt": "QLoRA as above, gradient_checkpointing=False",
}


def pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_base(folder: Path, tokenizer_dir: Path, smoke: bool, device: torch.device) -> dict:
    """Save a random-weight Llama and the tokenizer files into `folder`; returns what was built."""
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    if not isinstance(end, int) or end == tok.unk_token_id:
        end = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else end
    sizes = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                  intermediate_size=172) if smoke else
             dict(hidden_size=1024, num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16,
                  intermediate_size=2816))
    config = LlamaConfig(vocab_size=len(tok), **sizes, max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=pad, bos_token_id=tok.bos_token_id, eos_token_id=end)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=end, pad_token_id=pad, bos_token_id=tok.bos_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    save_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what load_model will use
    model.to(save_dtype).save_pretrained(folder, safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy2(f, folder / f.name)
    del model
    free_memory()
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    arch = (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} heads,"
            f" intermediate {config.intermediate_size}, vocab {config.vocab_size}, tied embeddings")
    return {"arch": arch, "n_params": n_params, "safetensors_bytes": weights, "save_dtype": str(save_dtype)[6:],
            "vocab": len(tok)}


def check_batch(tokenizer, model, rows):
    """input_ids / attention_mask of a few prompts+answers, padded (the logits check's input)."""
    from labhelpers import PadCollator, build_instruction_data

    data = build_instruction_data(rows, tokenizer, model, "summary", seed=0)
    batch = PadCollator(tokenizer, "causal")(data.examples)
    return {k: batch[k] for k in ("input_ids", "attention_mask")}


@torch.no_grad()
def logits_of(model, batch) -> torch.Tensor:
    device = next(p.device for p in model.parameters())
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
    mask = batch["attention_mask"].to(device).bool()
    return out.logits.float()[mask]  # real positions only


def run_config(name: str, folder: Path, work: Path, rows, check_rows, args, device: torch.device, index: int = 0) -> dict:
    from labhelpers import (adapter_size_bytes, fine_tune, load_adapter, load_model, load_model_4bit, lora_config,
                            merge_adapter, save_adapter, trainable_summary)
    from labhelpers.train import TrainConfig

    cuda = device.type == "cuda"
    free_memory()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if name == "lora":
        base, tok = load_model(str(folder))
    else:
        base, tok = load_model_4bit(str(folder), gradient_checkpointing=name == "qlora")
    load_s = time.perf_counter() - t0
    weights_gib = base.get_memory_footprint() / GIB
    base_dtype = str(next(base.parameters()).dtype)[6:]  # the embeddings (tied with the output layer)
    if name != "lora":
        q = base.model.layers[0].self_attn.q_proj.weight
        base_dtype = f"{type(q).__name__} {getattr(q, 'quant_type', '?')} layers, {base_dtype} embeddings and norms"
    gc_on = bool(getattr(base, "is_activation_checkpointing", None) if hasattr(base, "is_activation_checkpointing")
                 else getattr(base, "is_gradient_checkpointing", False))
    batch = check_batch(tok, base, check_rows)
    base_logits = logits_of(base, batch)
    adapter = lora_config(base, r=16)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                         lr_scheduler="constant", log_every=1, seed=0)
    free_memory()
    resident = torch.cuda.memory_allocated() / GIB if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    in_place = name != "lora"
    result = fine_tune(base, tok, rows, tasks="summary", config=config, progress=False, live_plot=False,
                       title=name, adapter=adapter, in_place=in_place)
    sync()
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else None
    model = result.model
    summary = trainable_summary(model)
    timed = result.history.dropna(subset=["seconds"])
    steady = ((timed["seconds"].iloc[-1] - timed["seconds"].iloc[0]) / (timed["step"].iloc[-1] - timed["step"].iloc[0])
              if len(timed) > 1 else float("nan"))
    row = dict(name=name, load_s=load_s, weights_gib=weights_gib, base_dtype=base_dtype, gradient_checkpointing=gc_on,
               resident_gib=resident, peak_gib=peak, trainable=summary["trainable"], total=summary["total"],
               percent=summary["percent"], seconds=result.seconds, s_step=result.seconds / args.steps,
               steady=steady, tokens_per_s=result.tokens_per_second(), tokens_seen=result.tokens_seen,
               first_loss=result.first_loss, final_loss=result.final_loss, n_train=result.n_train,
               n_dropped=result.n_dropped, model_type=type(model).__name__,
               step_seconds=[round(float(x), 4) for x in timed["seconds"]])
    # The Trainer's accelerate wraps model.forward in bf16 autocast (and fp32 outputs) for mixed precision
    # and leaves that wrapper on the model it hands back: result.model keeps running under autocast.
    row["forward_wrapped_by_accelerate"] = "_original_forward" in vars(model)
    if not in_place:  # fine_tune trained a copy: the base must have no adapter layers and its old outputs
        row["base_untouched"] = (not any("lora_" in n for n, _ in base.named_modules())
                                 and float((logits_of(base, batch) - base_logits).abs().max()) == 0.0)
    trained = logits_of(model, batch)
    row["adapter_changes_logits"] = float((trained - base_logits).abs().max())
    out_dir = save_adapter(model, work / f"adapter-{name}-{index}")
    row["adapter_bytes"] = adapter_size_bytes(out_dir)
    row["adapter_files"] = sorted(p.name for p in out_dir.iterdir())
    del base
    free_memory()
    # a fresh base from the same folder, the saved adapter on top: must give the trained model's logits
    if name == "lora":
        fresh, _ = load_model(str(folder))
        reloaded = load_adapter(fresh, out_dir)
    else:
        fresh, _ = load_model_4bit(str(folder), gradient_checkpointing=name == "qlora")
        reloaded = load_adapter(fresh, out_dir, in_place=True)
    again = logits_of(reloaded, batch)
    row["reload_max_abs_diff"] = float((again - trained).abs().max())
    if row["forward_wrapped_by_accelerate"]:
        from accelerate.utils import extract_model_from_parallel

        with torch.autocast(device.type, dtype=torch.bfloat16):  # the reloaded model as the wrapper runs it
            row["reload_under_autocast_diff"] = float((logits_of(reloaded, batch) - trained).abs().max())
        model = extract_model_from_parallel(model, keep_fp32_wrapper=False)  # removes the wrapper (in place)
        trained = logits_of(model, batch)
        row["reload_diff_unwrapped"] = float((again - trained).abs().max())
    row["logit_scale"] = float(trained.abs().max())
    if name == "lora":
        merged = merge_adapter(model)
        row["merge_max_abs_diff"] = float((logits_of(merged, batch) - trained).abs().max())
        row["merged_type"] = type(merged).__name__
        row["peft_still_same"] = float((logits_of(model, batch) - trained).abs().max())
        del merged
    row["check_positions"] = int(batch["attention_mask"].sum())
    del model, reloaded, fresh, result
    free_memory()
    return row


def gib(x) -> str:
    return "n/a (CPU)" if x is None else f"{x:.2f}"


def make_table(rows: list[dict], skipped: dict, failures: dict, meta: dict, args) -> str:
    when = time.strftime("%Y-%m-%d %H:%M")
    lines = [
        f"### LoRA and QLoRA through labhelpers.adapters on a GPU{' [smoke, CPU]' if args.smoke else ''}, {when}",
        "",
        f"`python benchmarks/gpu_peft.py{' --smoke' if args.smoke else ''}"
        f"{'' if args.configs == ','.join(CONFIGS) else ' --configs ' + args.configs}`: a Llama from a config with random weights"
        f" ({meta['arch']}; {meta['n_params']:,} parameters), saved with save_pretrained ({meta['save_dtype']},"
        f" {meta['safetensors_bytes'] / MIB:,.0f} MiB of safetensors) plus the SmolLM2 tokenizer files, then loaded"
        f" back through labhelpers. Data: `load_dialogues()` ({meta['source']}), {meta['n_rows']} dialogues, summary task;"
        f" {args.steps} optimizer steps of batch {args.batch_size}, learning rate {args.lr:g} constant, seed 0,"
        f" `fine_tune(..., adapter=lora_config(base, r=16))` (alpha 32, dropout 0.05, q,k,v,o);"
        f" `progress=False`. Machine: {meta['machine']}; torch {meta['torch']}, transformers {meta['transformers']},"
        f" peft {meta['peft']}, accelerate {meta['accelerate']}, datasets {meta['datasets']},"
        f" bitsandbytes {meta['bitsandbytes']}.",
        "",
        "| configuration | trainable params | base weights (GiB) | s/step (steady) | real tokens/s | peak GPU memory"
        " in fine_tune (GiB) | loss first → last | adapter on disk | reload max abs logit diff |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    count: dict[str, int] = {}
    for r in rows:
        count[r["name"]] = count.get(r["name"], 0) + 1
        r["label"] = r["name"] + (f" (run {count[r['name']]})" if count[r["name"]] > 1 else "")
        again = f" (run {count[r['name']]}, same process)" if count[r["name"]] > 1 else ""
        lines.append(
            f"| {DESCRIPTIONS[r['name']].format(dtype=r['base_dtype'])}{again} | {r['trainable']:,} of {r['total']:,} ({r['percent']:.2f}%)"
            f" | {r['weights_gib']:.3f} | {r['s_step']:.3g} ({r['steady']:.3g}) | {r['tokens_per_s']:,.0f}"
            f" | {gib(r['peak_gib'])} | {r['first_loss']:.3f} → {r['final_loss']:.3f}"
            f" | {r['adapter_bytes'] / MIB:.2f} MiB | {r['reload_max_abs_diff']:.3g} |")
    for name, reason in skipped.items():
        lines.append(f"| {DESCRIPTIONS[name].format(dtype='bf16')} | skipped: {reason} | | | | | | | |")
    for name, err in failures.items():
        lines.append(f"| {DESCRIPTIONS[name.split('#')[0]].format(dtype='bf16')} | FAILED: {err} | | | | | | | |")
    lines.append("")
    notes = []
    for r in rows:
        bits = [f"{r['label']}: base weights {r['base_dtype']}"
                f" (gradient checkpointing {'on' if r['gradient_checkpointing'] else 'off'}),"
                f" loaded in {r['load_s']:.1f} s"
                + (f", {r['resident_gib']:.2f} GiB allocated on the GPU before fine_tune;" if r["resident_gib"] is not None else ";") +
                f" {r['n_train']} examples ({r['n_dropped']} dropped), {r['tokens_seen']:,} real tokens in"
                f" {r['seconds']:.2f} s (whole trainer.train());"
                f" result.model is a {r['model_type']}; adapter files {', '.join(r['adapter_files'])};"
                f" the adapter moves the logits by up to {r['adapter_changes_logits']:.3g} (max |logit| {r['logit_scale']:.3g});"
                f" reload onto a fresh base: max abs diff {r['reload_max_abs_diff']:.3g} over"
                f" {r['check_positions']} positions x {meta['vocab']} logits"]
        if r.get("forward_wrapped_by_accelerate"):
            bits.append("result.model.forward is still wrapped by accelerate's bf16 autocast; the reloaded model"
                        f" under the same autocast: diff {r['reload_under_autocast_diff']:.3g}; result.model with"
                        f" the wrapper removed vs the reloaded model: diff {r['reload_diff_unwrapped']:.3g}")
        steps = r["step_seconds"]
        if len(steps) > 10:
            d = [b - a for a, b in zip(steps, steps[1:])]
            bits.append(f"seconds per step, steps 2-6 {sum(d[:5]) / 5:.3g}, last 10 {sum(d[-10:]) / 10:.3g}")
        if "base_untouched" in r:
            bits.append(f"base left untouched by fine_tune: {r['base_untouched']}")
        if "merge_max_abs_diff" in r:
            bits.append(f"merge_adapter gives a {r['merged_type']} whose logits differ from the PeftModel's by"
                        f" up to {r['merge_max_abs_diff']:.3g} (W + BA rounded to the base's {r['base_dtype']});"
                        f" the PeftModel is unchanged after merging (diff {r['peft_still_same']:.3g})")
        notes.append("; ".join(bits) + ".")
    by = {r["name"]: r for r in rows}  # the last run of each (warm when a configuration was repeated)
    if "lora" in by and "qlora" in by and by["lora"]["peak_gib"]:
        a, b = by["lora"], by["qlora"]
        notes.append(f"QLoRA / LoRA (the last run of each): base weights {b['weights_gib'] / a['weights_gib']:.2f}x, peak memory"
                     f" {b['peak_gib'] / a['peak_gib']:.2f}x, real tokens/s {b['tokens_per_s'] / a['tokens_per_s']:.2f}x.")
    notes.append("The weights are random, so the loss only shows that the adapter trains; it says nothing about"
                 " summary quality.")
    lines += [" ".join(notes), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, LoRA only, a few steps on a CPU")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}")
    parser.add_argument("--tokenizer", default=str(ROOT / ".whl" / "smollm2-tokenizer"), metavar="FOLDER")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--out", default=os.environ.get("OUT"), help="write gpu_peft.md/.json here (default $OUT)")
    parser.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.smoke else 30)
    args.batch_size = args.batch_size or (2 if args.smoke else 8)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]  # a name may repeat (a rerun)
    if set(configs) - set(CONFIGS):
        parser.error(f"unknown configs {sorted(set(configs) - set(CONFIGS))}; choose from {CONFIGS}")
    if args.smoke:
        os.environ.setdefault("LABS_DEVICE", "cpu")
    device = torch.device("cpu") if args.smoke else torch.device("cuda")
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU found (use --smoke to check the script on a CPU)")
    tokenizer_dir = Path(args.tokenizer)
    if not (tokenizer_dir / "tokenizer.json").exists():
        parser.error(f"no tokenizer.json in {tokenizer_dir}; pass --tokenizer FOLDER")

    from labhelpers import load_dialogues, qlora_available

    data = load_dialogues()
    rows = [dict(r) for split in ("train", "validation", "test") for r in data[split]]
    check_rows = [dict(r) for r in data["test"]][:4]
    if args.smoke:
        rows = rows[:16]
        check_rows = check_rows[:2]
    machine = (f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores" if device.type == "cuda"
               else f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    work = Path(tempfile.mkdtemp(prefix="gpu-peft-"))
    rows_out, skipped, failures = [], {}, {}
    try:
        folder = work / "base"
        built = build_base(folder, tokenizer_dir, args.smoke, device)
        meta = dict(built, machine=machine, torch=torch.__version__, transformers=pkg("transformers"),
                    peft=pkg("peft"), accelerate=pkg("accelerate"), datasets=pkg("datasets"),
                    bitsandbytes=pkg("bitsandbytes"), n_rows=len(rows),
                    source="the project's data/dialogues, train+validation+test" if not args.smoke else
                           "the project's data/dialogues, first 16 rows")
        print(f"{machine}; {built['arch']}; {built['n_params']:,} parameters", flush=True)
        ok, reason = qlora_available()
        print(f"qlora_available(): {ok}, {reason}", flush=True)
        meta["qlora_available"] = reason
        for name in configs:
            if name != "lora" and (args.smoke or not ok):
                skipped[name] = reason if not ok else "--smoke runs the LoRA path only"
                continue
            try:
                row = run_config(name, folder, work, rows, check_rows, args, device, index=len(rows_out) + len(failures))
            except Exception as exc:
                traceback.print_exc()
                failures[name if name not in failures else f"{name}#{len(failures)}"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
                print(f"{name}: FAILED {list(failures.values())[-1]}", flush=True)
                free_memory()
                continue
            rows_out.append(row)
            print(json.dumps(row, default=str), flush=True)
            if args.out:  # partial results survive a later crash
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / "gpu_peft.md").write_text(make_table(rows_out, skipped, failures, meta, args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = make_table(rows_out, skipped, failures, meta, args)
    print()
    print(table)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_peft.md").write_text(table, encoding="utf-8")
        (Path(args.out) / "gpu_peft.json").write_text(json.dumps({"meta": meta, "rows": rows_out, "skipped": skipped,
                                                                  "failures": failures}, indent=1, default=str))
    if args.append and not args.smoke:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + table)
    return 1 if failures or not rows_out else 0


if __name__ == "__main__":
    sys.exit(main())
