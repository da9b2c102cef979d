"""Data-parallel training for real: DDP and FSDP (ZeRO stage 3) on several processes, launched by torchrun.

One script, three strategies, the same code on CPUs (gloo backend) and on GPUs (nccl, one GPU per process):

    torchrun --standalone --nproc_per_node 2 -m labhelpers.distributed --strategy ddp --profile tiny --out runs/ddp
    python -m labhelpers.distributed --strategy single --profile tiny --out runs/single    # the reference

- single: one process trains on the whole global batch; the reference the others must match.
- ddp:    every rank holds the whole model and optimizer and takes its own slice of each global batch;
          an all-reduce averages the gradients, so every rank applies the same update and stays identical.
- fsdp:   FSDP2 `fully_shard`: parameters, gradients and AdamW states are split across the ranks (ZeRO-3);
          a layer's weights are all-gathered just before it runs and freed after, gradients reduce-scattered.

Each rank writes `rank<r>.json` into `--out` (atomically): loss and a hash of the weights it holds after
every step, the parameters and optimizer numbers it holds, its peak memory and its times. From a notebook,
`launch("ddp", nproc=2, profile="tiny")` runs torchrun in a subprocess and returns a `DistributedRun`.
On a machine with N GPUs the same command with `--nproc_per_node N` uses one GPU per process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

STRATEGIES = ("single", "ddp", "fsdp")
WEIGHTS_FILE = "final_weights.pt"
GIB = 1024**3
# glibc keeps freed heap blocks for reuse, so a process's resident memory (RSS) stays at its high-water
# mark of *allocated* memory, not live memory: FSDP, which allocates and frees a layer's gathered weights
# again and again, would look far bigger than it is. Giving every block over 1 MiB its own mapping,
# returned to the system when freed, makes CPU RSS follow live tensors (launch sets this for the ranks).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


# ---------------------------------------------------------------------------------------------
# What runs inside each process
# ---------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of one training process (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m labhelpers.distributed",
                                     description="Train a few steps with single / DDP / FSDP; write rank<r>.json.")
    parser.add_argument("--strategy", required=True, choices=STRATEGIES)
    parser.add_argument("--model", default=None, help="model id or folder (default: the profile's model)")
    parser.add_argument("--profile", default=None, help="tiny, embedded or course (default: $LABS_PROFILE)")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
    parser.add_argument("--global-batch", type=int, default=4, help="sequences per step, summed over all ranks")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda when visible, else cpu")
    parser.add_argument("--save-weights", action="store_true", help=f"rank 0 writes the full weights to {WEIGHTS_FILE}")
    parser.add_argument("--out", required=True, help="folder for rank<r>.json (and the weights)")
    args = parser.parse_args(argv)
    for name in ("steps", "global_batch", "seq_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary file beside `path`, then rename it: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _rss() -> int:
    from .memory import resident_bytes

    return resident_bytes()[0]  # what peak_memory counts, so the two subtract


def _local(tensor):
    """The part of a tensor this rank holds: its shard for an FSDP DTensor, else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def weights_hash(model) -> str:
    """A hash of the exact bytes of every parameter this rank holds (its shard, under FSDP)."""
    import torch

    digest = hashlib.sha256()  # SHA-NI makes it about 1 GB/s
    for name, p in model.named_parameters():
        local = _local(p.detach())
        if local.device.type != "cpu":
            local = local.cpu()
        digest.update(name.encode())
        digest.update(memoryview(local.contiguous().view(torch.uint8).numpy()))
    return digest.hexdigest()


def _training_sequences(tokenizer, family: str, profile, n: int, seq_len: int) -> list[dict]:
    """`n` sequences of the profile's training dialogues, the same on every rank, in a fixed order.

    Causal models: the dialogue-and-summary texts joined and cut into blocks of exactly `seq_len` tokens
    (no padding, so every sequence carries the same number of tokens). Seq2seq: dialogue in, summary out.
    """
    from .data import load_dialogues

    rows = list(load_dialogues(profile=profile)["train"])
    if family == "causal":
        eos = tokenizer.eos_token or ""
        ids = []
        for row in rows:
            ids += tokenizer(f"{row['dialogue']}\nSummary: {row['summary']}{eos}", add_special_tokens=False)["input_ids"]
            if len(ids) >= n * seq_len:
                break
        if len(ids) < seq_len:
            raise ValueError(f"the training dialogues hold only {len(ids)} tokens, fewer than --seq-len {seq_len}")
        blocks = [ids[i:i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
        return [{"input_ids": blocks[i % len(blocks)]} for i in range(n)]
    out = []
    for i in range(n):
        row = rows[i % len(rows)]
        out.append({"input_ids": tokenizer(row["dialogue"], truncation=True, max_length=seq_len)["input_ids"],
                    "labels": tokenizer(row["summary"], truncation=True, max_length=seq_len)["input_ids"]})
    return out


def _batch(sequences: list[dict], family: str, pad_id: int, device, pad_to: dict[str, int]):
    """Tensors for a list of sequences, padded to the lengths of the whole global batch (`pad_to`)."""
    import torch

    def pad(key, value):
        rows = [s[key] + [value] * (pad_to[key] - len(s[key])) for s in sequences]
        return torch.tensor(rows, dtype=torch.long, device=device)

    if family == "causal":
        return {"input_ids": pad("input_ids", pad_id)}
    ids = pad("input_ids", pad_id)
    return {"input_ids": ids, "attention_mask": (ids != pad_id) | (torch.arange(ids.shape[1], device=device) == 0),
            "labels": pad("labels", -100)}


def _token_loss_sum(model, batch, family: str):
    """Summed cross-entropy over the batch's target tokens, and how many target tokens there were."""
    import torch.nn.functional as F

    if family == "causal":
        logits = model(input_ids=batch["input_ids"]).logits
        targets = batch["input_ids"][:, 1:]
        logits = logits[:, :-1]
    else:
        logits = model(**batch).logits
        targets = batch["labels"]
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=-100, reduction="sum")
    return loss_sum, int((targets != -100).sum())


def _optimizer_state_numel(optimizer) -> int:
    """Numbers this rank's optimizer keeps (AdamW: two moments per parameter it updates)."""
    return sum(_local(v).numel() for state in optimizer.state.values() for k, v in state.items()
               if k != "step" and hasattr(v, "numel"))


def train(args: argparse.Namespace) -> dict:
    """Train `args.steps` steps with `args.strategy` in this process; return what it measured (see rank<r>.json)."""
    import torch
    import torch.distributed as dist

    from .device import pick_device
    from .memory import peak_memory, release_freed_memory, training_memory
    from .models import load_model, model_family, resolve_model_path
    from .profiles import get_profile

    started = time.perf_counter()
    rss_start = _rss()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.strategy == "single" and world != 1:
        raise ValueError(f"--strategy single trains in one process; it was started with {world} (use --nproc_per_node 1)")
    if args.global_batch % world:
        raise ValueError(f"--global-batch {args.global_batch} must split evenly over {world} processes")
    device = pick_device(args.device) if args.device != "cpu" else torch.device("cpu")
    if device.type == "mps":
        device = torch.device("cpu")  # no collective backend runs on Apple GPUs
    if device.type == "cuda":
        if torch.cuda.device_count() < int(os.environ.get("LOCAL_WORLD_SIZE", "1")):
            raise ValueError(f"{os.environ.get('LOCAL_WORLD_SIZE')} processes on this machine but only "
                             f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node {torch.cuda.device_count()}")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    distributed = args.strategy != "single"
    if distributed:
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    profile = get_profile(args.profile)
    name = args.model or profile.model
    lr = profile.learning_rate if args.lr is None else args.lr

    # Rank 0 builds a model that is not cached yet; the others wait, then all load the same weights.
    if rank == 0:
        resolve_model_path(name)
    if distributed:
        dist.barrier()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one "Loading weights" bar per rank is noise
    model, tokenizer = load_model(name, profile=profile, dtype=torch.float32, device=device)
    family = model_family(model)
    n_params = sum(p.numel() for p in model.parameters())
    # What the process holds apart from the model's weights: Python, torch, the libraries and modules that
    # loading imported, the tokenizer. Training memory is measured above this line.
    if device.type == "cpu":
        with torch.no_grad():  # own copies, not pages mapped from the weights file, which RSS counts only once read
            for t in [*model.parameters(), *model.buffers()]:
                t.data = t.data.clone()
        release_freed_memory()
        rss_without_model = _rss() - sum(p.numel() * p.element_size() for p in model.parameters())
    else:
        rss_without_model = 0  # the CUDA allocator counts tensors only
    model.train()
    for module in model.modules():  # dropout off: every run sees exactly the same function of its weights
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    local_batch = args.global_batch // world
    predicted = training_memory(model, dtype="fp32", optimizer="adamw", batch_size=local_batch,
                                seq_len=args.seq_len if family == "causal" else None)

    if args.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # gradient_as_bucket_view: gradients live in DDP's all-reduce buckets instead of beside them
        model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None,
                                        gradient_as_bucket_view=True)
    elif args.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        inner = getattr(model, "model", None) or getattr(model, "encoder", None)
        layers = list(getattr(inner, "layers", None) or getattr(inner, "block", None) or [])
        if family == "seq2seq":
            layers += list(model.decoder.block)
        for layer in layers:  # one all-gather per layer: only one layer's full weights exist at a time
            fully_shard(layer)
        fully_shard(model)  # the rest (embeddings, final norm, output layer) as one group
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    local_params = sum(_local(p).numel() for p in model.parameters())

    sequences = _training_sequences(tokenizer, family, profile, args.steps * args.global_batch, args.seq_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    setup_s = time.perf_counter() - started
    unwrapped = model.module if args.strategy == "ddp" else model  # the same parameter names in every strategy
    initial_hash = weights_hash(unwrapped)
    steps = []
    release_freed_memory()
    with peak_memory(device) as mem:
        train_started = time.perf_counter()
        for step in range(args.steps):
            step_started = time.perf_counter()
            global_batch = sequences[step * args.global_batch:(step + 1) * args.global_batch]
            pad_to = {k: max(len(s[k]) for s in global_batch) for k in global_batch[0]}
            mine = global_batch[rank * local_batch:(rank + 1) * local_batch]
            batch = _batch(mine, family, pad_id, device, pad_to)
            loss_sum, n_local = _token_loss_sum(model, batch, family)
            # The global mean loss: this rank's summed token losses over the global token count. DDP and FSDP
            # average gradients over ranks, so multiply by `world` to get the gradient of the global mean.
            totals = torch.tensor([loss_sum.item(), float(n_local)], dtype=torch.float64, device=device)
            if distributed:
                dist.all_reduce(totals)
            n_targets = totals[1].item()
            (loss_sum * (world / n_targets)).backward()
            optimizer.step()
            optimizer.zero_grad()
            steps.append({"step": step + 1, "loss": totals[0].item() / n_targets, "target_tokens": int(n_targets),
                          "local_sequences": len(mine), "weights_hash": weights_hash(unwrapped),
                          "step_s": round(time.perf_counter() - step_started, 3)})
            if rank == 0:
                print(f"[{args.strategy}] step {step + 1}/{args.steps} loss {steps[-1]['loss']:.4f} "
                      f"({steps[-1]['step_s']:.1f} s)", flush=True)
        train_s = time.perf_counter() - train_started

    optimizer_numel = _optimizer_state_numel(optimizer)
    weights_path = None
    if args.save_weights:
        if args.strategy == "fsdp":  # every rank takes part in gathering the full weights onto rank 0
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            state = {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()}
        if rank == 0:
            weights_path = Path(args.out) / WEIGHTS_FILE
            tmp = weights_path.with_name(f".{WEIGHTS_FILE}.tmp{os.getpid()}")
            torch.save(state, tmp)
            os.replace(tmp, weights_path)
        del state
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return {
        "strategy": args.strategy, "rank": rank, "world_size": world, "backend": backend if distributed else None,
        "device": str(device), "torch": torch.__version__, "model": name, "family": family, "profile": profile.name,
        "n_params": n_params, "local_params": local_params, "optimizer_state_numel": optimizer_numel,
        "global_batch": args.global_batch, "local_batch": local_batch, "seq_len": args.seq_len, "lr": lr,
        "initial_weights_hash": initial_hash, "steps": steps,
        "memory": {"method": mem.method, "without_model_bytes": rss_without_model, "start_of_training_bytes": mem.baseline_bytes,
                   "peak_bytes": mem.peak_bytes, "training_bytes": mem.peak_bytes - rss_without_model,
                   "process_start_bytes": rss_start if device.type == "cpu" else 0},
        "predicted": {"weights_bytes": predicted.weights_bytes, "gradient_bytes": predicted.gradient_bytes,
                      "optimizer_state_bytes": predicted.optimizer_state_bytes,
                      "activation_bytes": predicted.activation_bytes},
        "setup_s": round(setup_s, 3), "train_s": round(train_s, 3), "wall_s": round(time.perf_counter() - started, 3),
        "weights_path": str(weights_path) if weights_path else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of each process torchrun starts: train, then write rank<r>.json into --out."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = train(args)
    _write_json_atomic(out / f"rank{result['rank']}.json", result)
    return 0


# ---------------------------------------------------------------------------------------------
# The notebook's side: launch torchrun, read back what each rank measured
# ---------------------------------------------------------------------------------------------

@dataclass
class DistributedRun:
    """What one launch measured: one dict per rank (the rank<r>.json files), the command and its output."""

    strategy: str
    ranks: list[dict]
    out: Path
    command: list[str]
    wall_s: float
    log: str = field(repr=False, default="")

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    @property
    def losses(self) -> list[float]:
        """The global mean loss at each step (the same on every rank)."""
        return [s["loss"] for s in self.ranks[0]["steps"]]

    @property
    def hashes(self) -> list[list[str]]:
        """hashes[rank][step]: the hash of the weights each rank held after each step."""
        return [[s["weights_hash"] for s in r["steps"]] for r in self.ranks]

    def ranks_identical(self) -> list[bool]:
        """For each step: did every rank hold exactly the same weights (same hash)?"""
        return [len(set(step)) == 1 for step in zip(*self.hashes)]

    @property
    def weights_path(self) -> Path | None:
        """The full final weights rank 0 saved (launch with save_weights=True), else None."""
        path = self.ranks[0].get("weights_path")
        return Path(path) if path else None

    def table(self):
        """One row per rank: parameters and optimizer numbers held, memory (GiB) and times (s)."""
        import pandas as pd

        rows = []
        for r in self.ranks:
            m = r["memory"]
            rows.append({"strategy": self.strategy, "rank": r["rank"], "parameters held": r["local_params"],
                         "share of the model": r["local_params"] / r["n_params"],
                         "optimizer numbers held": r["optimizer_state_numel"],
                         "peak GiB": m["peak_bytes"] / GIB, "training GiB (peak - without model)": m["training_bytes"] / GIB,
                         "train s": r["train_s"], "set-up s": r["setup_s"]})
        return pd.DataFrame(rows)


def _check_launch_args(strategy: str, nproc: int, global_batch: int, timeout_s: float) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc={nproc!r} must be a whole number of processes, at least 1")
    if strategy == "single" and nproc != 1:
        raise ValueError(f"strategy='single' is one process; got nproc={nproc} (use nproc=1, or strategy 'ddp')")
    if isinstance(global_batch, bool) or not isinstance(global_batch, int) or global_batch < 1 or global_batch % nproc:
        raise ValueError(f"global_batch={global_batch!r} must be a positive multiple of nproc={nproc}, "
                         f"so that every process gets the same number of sequences")
    if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")


def torchrun_command(strategy: str, nproc: int, script_args: list[str]) -> list[str]:
    """The command line that starts `nproc` processes of this script on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "labhelpers.distributed", "--strategy", strategy, *script_args]


def launch(strategy: str, nproc: int = 2, *, model: str | None = None, profile=None, steps: int = 3,
           global_batch: int = 4, seq_len: int = 128, lr: float | None = None, seed: int = 0, device: str | None = None,
           out: str | os.PathLike | None = None, save_weights: bool = False, threads_per_rank: int = 1,
           timeout_s: float = 600, verbose: bool = True) -> DistributedRun:
    """Run this script under torchrun with `nproc` processes, stream its output, return what each rank wrote.

    `out`: folder for the rank files (default: a fresh temporary folder). Raises RuntimeError with the last
    lines of the output when a process fails, TimeoutError after `timeout_s` seconds (the processes are killed).
    """
    import tempfile

    from .profiles import get_profile

    _check_launch_args(strategy, nproc, global_batch, timeout_s)
    prof = get_profile(profile)
    out = Path(tempfile.mkdtemp(prefix=f"dist-{strategy}-")) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("rank*.json"), out / WEIGHTS_FILE]:
        stale.unlink(missing_ok=True)
    script_args = ["--profile", prof.name, "--steps", str(steps), "--global-batch", str(global_batch),
                   "--seq-len", str(seq_len), "--seed", str(seed), "--out", str(out)]
    if model is not None:
        script_args += ["--model", str(model)]
    if lr is not None:
        script_args += ["--lr", repr(float(lr))]
    if device is not None:
        script_args += ["--device", device]
    if save_weights:
        script_args += ["--save-weights"]
    command = torchrun_command(strategy, nproc, script_args)
    env = {**MALLOC_ENV, **os.environ, "OMP_NUM_THREADS": str(threads_per_rank), "PYTHONUNBUFFERED": "1",
           "LABS_PROFILE": prof.name, "TORCHELASTIC_ERROR_FILE": str(out / "error.json")}
    lines: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)

    def read():
        for line in proc.stdout:
            lines.append(line)
            if verbose:
                print(line, end="", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        import signal

        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and the processes it started
        proc.wait()
        raise TimeoutError(f"{strategy} with {nproc} processes did not finish within {timeout_s:.0f} s and was "
                           f"stopped; use fewer steps or a shorter seq_len, or raise timeout_s") from None
    finally:
        reader.join(timeout=5)
    wall = time.perf_counter() - started
    log = "".join(lines)
    if code != 0:
        errors = [ln.strip() for ln in lines if "Error" in ln or "error:" in ln]
        reason = errors[-1] if errors else (lines[-1].strip() if lines else "no output")
        raise RuntimeError(f"{strategy} with {nproc} processes failed (exit status {code}): {reason}")
    ranks = []
    for r in range(nproc):
        path = out / f"rank{r}.json"
        if not path.exists():
            raise RuntimeError(f"{strategy}: rank {r} exited without writing {path}; see the output above")
        ranks.append(json.loads(path.read_text()))
    return DistributedRun(strategy=strategy, ranks=ranks, out=out, command=command, wall_s=wall, log=log)


def fsdp_unavailable_reason(device: str = "cpu") -> str | None:
    """None when this torch can run FSDP2 (`fully_shard`) on `device` ("cpu": gloo, "cuda": nccl), else why not."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return f"torch {torch.__version__} was built without torch.distributed"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (FSDP2, torch >= 2.6)
    except ImportError:
        return f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard (FSDP2 needs torch 2.6 or later)"
    if device == "cpu" and not dist.is_gloo_available():
        return f"torch {torch.__version__} has no gloo backend, which FSDP on CPU processes needs; run it on GPUs"
    if device == "cuda" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        return "no CUDA GPU with the nccl backend is visible"
    return None


def draw_data_parallel(world_size: int = 2, ax=None):
    """A diagram of one data-parallel step: the global batch split, local gradients, one all-reduce, one update."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.2))
    ax.set_xlim(0, 10); ax.set_ylim(0, 10); ax.axis("off")
    box = dict(boxstyle="round,pad=0.4", fc="#eef3fb", ec="#4a6fa5")
    ax.text(5, 9.3, f"global batch of B sequences -> {world_size} shards of B/{world_size}", ha="center", bbox=box)
    xs = [10 * (i + 0.5) / world_size for i in range(world_size)]
    for i, x in enumerate(xs):
        ax.annotate("", xy=(x, 7.6), xytext=(5, 8.8), arrowprops=dict(arrowstyle="->", color="#4a6fa5"))
        ax.text(x, 6.6, f"rank {i}\nfull copy of the model\nforward + backward on shard {i}\n-> local gradient g{i}",
                ha="center", va="center", fontsize=9, bbox=dict(box, fc="#fdf6e3", ec="#b58900"))
        ax.annotate("", xy=(5, 4.4), xytext=(x, 5.5), arrowprops=dict(arrowstyle="->", color="#b58900"))
        ax.annotate("", xy=(x, 1.7), xytext=(5, 3.4), arrowprops=dict(arrowstyle="->", color="#2a9d8f"))
        ax.text(x, 1.0, f"rank {i}: same averaged g,\nsame AdamW step -> same weights", ha="center", va="center",
                fontsize=9, bbox=dict(box, fc="#e9f5f2", ec="#2a9d8f"))
    grads = " + ".join(f"g{i}" for i in range(world_size))
    ax.text(5, 3.9, f"all-reduce: every rank receives g = ({grads}) / {world_size}", ha="center", va="center",
            bbox=dict(box, fc="#e9f5f2", ec="#2a9d8f"))
    ax.set_title("One step of distributed data parallel (DDP)")
    return ax


def max_weight_difference(path_a: str | os.PathLike, path_b: str | os.PathLike) -> tuple[float, str]:
    """The largest absolute difference between two saved weight files, and the parameter where it occurs."""
    import torch

    a = torch.load(path_a, map_location="cpu", weights_only=True, mmap=True)
    b = torch.load(path_b, map_location="cpu", weights_only=True, mmap=True)
    if set(a) != set(b):
        raise ValueError(f"{path_a} and {path_b} hold different parameters: {sorted(set(a) ^ set(b))[:3]}")
    worst, where = 0.0, ""
    for name in a:
        diff = (a[name].float() - b[name].float()).abs().max().item()
        if diff > worst:
            worst, where = diff, name
    return worst, where


__all__ = ["STRATEGIES", "DistributedRun", "draw_data_parallel", "fsdp_unavailable_reason", "launch", "main",
           "max_weight_difference", "parse_args", "torchrun_command", "train", "weights_hash"]


if __name__ == "__main__":
    sys.exit(main())
