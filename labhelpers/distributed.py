"""Plumbing for lab 04, whose training script is written in the notebook: start it with torchrun, read back
what each rank measured, and the small pieces the script and the notebook use that are not the lesson.

- `run_torchrun(command, out)`: run a torchrun command in a subprocess with a timeout, stream its output,
  raise one clear line when a process fails, and return the `rank<r>.json` files as a `DistributedRun`;
- `training_examples(...)`: the profile's dialogues as equal-length token sequences (the script's data set);
- `memory_without_weights(model)`: a rank's memory apart from its weights, the baseline of "training memory";
- `max_weight_difference`, `fsdp_unavailable_reason`, `draw_data_parallel`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .memory import GIB

# glibc keeps freed heap blocks for reuse, so a process's resident memory (RSS) stays at its high-water
# mark of *allocated* memory, not live memory: FSDP, which allocates and frees a layer's gathered weights
# again and again, would look far bigger than it is. Giving every block over 1 MiB its own mapping,
# returned to the system when freed, makes CPU RSS follow live tensors (run_torchrun sets this for the ranks).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}
_ERROR_LINE = re.compile(r"(^|\s)(\w+(Error|Exception)|error):\s")


@dataclass
class DistributedRun:
    """What one torchrun launch measured: one dict per rank (its rank<r>.json), the command and its output."""

    ranks: list[dict]
    out: Path
    command: list[str]
    wall_s: float
    log: str = field(repr=False, default="")

    @property
    def strategy(self) -> str:
        return self.ranks[0]["strategy"]

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
    def weights_path(self) -> Path:
        """The full final weights rank 0 saved."""
        return self.out / self.ranks[0]["weights_file"]

    def table(self):
        """One row per rank: parameters and optimizer numbers held, memory (GiB) and training time (s)."""
        import pandas as pd

        return pd.DataFrame([{"strategy": r["strategy"], "rank": r["rank"], "parameters held": r["local_params"],
                              "share of the model": r["local_params"] / r["n_params"],
                              "optimizer numbers held": r["optimizer_state_numel"],
                              "peak GiB": r["memory"]["peak_bytes"] / GIB,
                              "training GiB (peak - without model)": r["memory"]["training_bytes"] / GIB,
                              "train s": r["train_s"]} for r in self.ranks])


def _python_command(command: list[str]) -> list[str]:
    """`torchrun ...` as `<this Python> -m torch.distributed.run ...`: the same program, run by the Python
    of this kernel, so the processes find the same packages even when its bin folder is not on PATH."""
    if command and command[0] == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", *command[1:]]
    return list(command)


def _failure_reason(lines: list[str]) -> str:
    """The first line of the output that names an error (the failing rank's own, before torchrun's summary)."""
    for line in lines:
        if _ERROR_LINE.search(line) and "torch.distributed.elastic" not in line and "ChildFailedError" not in line:
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def run_torchrun(command: list[str], out: str | os.PathLike, *, timeout_s: float = 600, threads_per_rank: int = 1,
                 verbose: bool = True) -> DistributedRun:
    """Run a `torchrun ...` command whose processes each write `rank<r>.json` into `out`; return them all.

    Streams the output (when `verbose`). Raises RuntimeError naming the first error when a process fails,
    TimeoutError after `timeout_s` seconds (torchrun and every process it started are killed).
    """
    if not isinstance(command, (list, tuple)) or not command or not all(isinstance(c, str) for c in command):
        raise ValueError(f"command={command!r} must be a non-empty list of strings, e.g. ['torchrun', ...]")
    if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("rank*.json"):
        stale.unlink()
    command = _python_command(list(command))
    env = {**MALLOC_ENV, **os.environ, "OMP_NUM_THREADS": str(threads_per_rank), "PYTHONUNBUFFERED": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # one "Loading weights" bar per rank is noise
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
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and the processes it started
        proc.wait()
        raise TimeoutError(f"torchrun did not finish within {timeout_s:.0f} s and was stopped; use fewer steps or "
                           f"shorter sequences, or raise timeout_s") from None
    finally:
        reader.join(timeout=5)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"torchrun failed (exit status {code}): {_failure_reason(lines)}")
    files = sorted(out.glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    if not files:
        raise RuntimeError(f"torchrun finished but no process wrote a rank<r>.json into {out}; does the script "
                           f"write its results there (--out)?")
    ranks = [json.loads(p.read_text()) for p in files]
    if [r["rank"] for r in ranks] != list(range(ranks[0]["world_size"])):
        raise RuntimeError(f"{out} holds the results of ranks {[r['rank'] for r in ranks]}, not of all "
                           f"{ranks[0]['world_size']}; see the output above")
    return DistributedRun(ranks=ranks, out=out, command=command, wall_s=wall, log="".join(lines))


def training_examples(tokenizer, profile, n: int, seq_len: int, seq2seq: bool = False) -> list[dict]:
    """`n` training examples from the profile's dialogues, in a fixed order, each a dict of tensors of
    exactly `seq_len` tokens, so that every example weighs the same and a batch is a plain stack.

    Causal models: the dialogue-and-summary texts joined and cut into blocks of `seq_len` tokens
    (`input_ids`). Seq2seq: the dialogue in, the summary out, padded (`attention_mask`, `labels` of -100).
    """
    import torch

    from .data import load_dialogues

    if n < 1 or seq_len < 2:
        raise ValueError(f"need at least one example of at least 2 tokens, got n={n}, seq_len={seq_len}")
    rows = list(load_dialogues(profile=profile)["train"])
    if not seq2seq:
        ids: list[int] = []
        for row in rows:
            text = f"{row['dialogue']}\nSummary: {row['summary']}{tokenizer.eos_token or ''}"
            ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= n * seq_len:
                break
        blocks = [ids[i:i + seq_len] for i in range(0, len(ids) - seq_len + 1, seq_len)]
        if not blocks:
            raise ValueError(f"the training dialogues hold only {len(ids)} tokens, fewer than seq_len={seq_len}")
        return [{"input_ids": torch.tensor(blocks[i % len(blocks)])} for i in range(n)]
    pad = tokenizer.pad_token_id or 0
    examples = []
    for i in range(n):
        row = rows[i % len(rows)]
        source = tokenizer(row["dialogue"], truncation=True, max_length=seq_len)["input_ids"]
        target = tokenizer(row["summary"], truncation=True, max_length=seq_len)["input_ids"]
        examples.append({"input_ids": torch.tensor(source + [pad] * (seq_len - len(source))),
                         "attention_mask": torch.tensor([1] * len(source) + [0] * (seq_len - len(source))),
                         "labels": torch.tensor(target + [-100] * (seq_len - len(target)))})
    return examples


def memory_without_weights(model) -> int:
    """What this process holds apart from the model's weights, in bytes: Python, torch, the libraries, the
    tokenizer. On a CPU it first copies the weights into the process's own memory (loading maps them from
    the file, and those pages count only once read), so that training memory = peak - this. 0 on CUDA,
    whose allocator counts tensors only."""
    import torch

    from .memory import release_freed_memory

    if next(model.parameters()).device.type != "cpu":
        return 0
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            t.data = t.data.clone()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return release_freed_memory() - weights


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


__all__ = ["DistributedRun", "draw_data_parallel", "fsdp_unavailable_reason", "max_weight_difference",
           "memory_without_weights", "run_torchrun", "training_examples"]
