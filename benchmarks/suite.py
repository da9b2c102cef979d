"""The whole suite: wall time of every lab on `tiny` and on `embedded`, from one run, as one table.

Runs `labhelpers.tools.labs.run` (the same batch runner as `setup.sh`: papermill, one kernel per lab,
one lab after another) on every notebook in notebooks/, first on `tiny`, then on `embedded`, and
compares each lab's time with the goals: under 5 minutes on `embedded` (lab 09, RLHF with PPO,
under 10), the whole `embedded` suite under 30 minutes, every lab on `tiny` under 1 minute. The
profiles' own budgets (labhelpers/profiles.py) are shown beside them.

    .venv/bin/python benchmarks/suite.py [--profiles tiny,embedded] [--no-append] [NOTEBOOK ...]

Takes about an hour on two CPU cores. Run it on a quiet machine: a second busy process on two cores
slows every lab several-fold. Prints a table and appends it to benchmarks/RESULTS.md (only when
every lab of both profiles ran).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = {"tiny": 60, "embedded": 300}
GOAL_S_BY_LAB = {("embedded", "09_rlhf_ppo_detoxification"): 600}
SUITE_GOAL_S = {"embedded": 1800}


def goal_s(profile: str, lab: str) -> int | None:
    return GOAL_S_BY_LAB.get((profile, lab), GOAL_S.get(profile))


def verdict(seconds: float, goal: int | None) -> str:
    if goal is None:
        return ""
    return f"{'met' if seconds <= goal else 'missed'} ({goal} s)"


def table(runs: dict[str, dict]) -> str:
    """One row per lab, a column pair per profile: wall time and the goal's verdict."""
    profiles = list(runs)
    labs = list(dict.fromkeys(nb["notebook"] for s in runs.values() for nb in s["notebooks"]))
    by = {(p, nb["notebook"]): nb for p, s in runs.items() for nb in s["notebooks"]}
    head = "| lab | " + " | ".join(f"{p} (s) | {p}: goal | {p}: budget (s)" for p in profiles) + " |"
    rule = "|---|" + "|".join("---:|---|---:" for _ in profiles) + "|"
    lines = [head, rule]
    for lab in labs:
        cells = []
        for p in profiles:
            nb = by.get((p, lab))
            if nb is None:
                cells += ["-", "", ""]
                continue
            wall = f"{nb['wall_s']:.1f}" + ("" if nb["status"] == "ok" else " (failed)")
            cells += [wall, verdict(nb["wall_s"], goal_s(p, lab)), "-" if nb["budget_s"] is None else str(nb["budget_s"])]
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    totals = []
    for p in profiles:
        total = sum(nb["wall_s"] for nb in runs[p]["notebooks"])
        goal = SUITE_GOAL_S.get(p)
        totals += [f"**{total:.0f}**", verdict(total, goal) if goal else "", ""]
    lines.append("| **whole suite** | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="tiny,embedded", help="comma-separated, run in this order")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every lab in notebooks/")
    args = parser.parse_args()

    import labhelpers  # noqa: F401  probes bf16 safety before torch loads
    import torch

    from labhelpers.device import CPU_BF16_ENV, cpu_bf16_speedup, cpu_mixed_precision
    from labhelpers.tools.labs import lab_notebooks, run

    notebooks = args.notebooks or lab_notebooks()
    missing = [str(p) for p in notebooks if not Path(p).exists()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    runs, folders, started = {}, {}, time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()[0]
    for profile in args.profiles.split(","):
        print(f"== {profile}: {len(notebooks)} labs", flush=True)
        folder, summary = run(notebooks, profile)
        runs[profile], folders[profile] = summary, folder
    load_after = os.getloadavg()[0]

    text = table(runs)
    failed = sum(s["failed"] for s in runs.values())
    heading = f"### The whole suite, wall time per lab, {started}"
    about = (f"`python benchmarks/suite.py` ({', '.join(runs)}; `labhelpers.tools.labs run`: papermill, one fresh kernel per "
             f"lab, labs one after another, model caches warm). Machine: {platform.machine()}, {os.cpu_count()} cores, "
             f"{torch.get_num_threads()} torch threads; load average {load_before:.1f} at the start, {load_after:.1f} at "
             f"the end; Python {platform.python_version()}, torch {torch.__version__}, transformers "
             f"{version('transformers')}, peft {version('peft')}, trl {version('trl')}; helpers' CPU precision: "
             + (f"bf16 autocast, fp32 weights (bf16 matmuls {cpu_bf16_speedup():.1f}x fp32 here)" if cpu_mixed_precision()
                else f"fp32 ({CPU_BF16_ENV}={os.environ.get(CPU_BF16_ENV, 'auto')}, bf16 {cpu_bf16_speedup():.1f}x fp32 here)")
             + ". Goals: every lab under 300 s on "
             "`embedded` (lab 09 under 600 s), the suite under 1800 s; every lab under 60 s on `tiny`. Run folders: "
             + ", ".join(f"`runs/{f.name}`" for f in folders.values()) + ".")
    section = f"{heading}\n\n{about}\n\n{text}\n"
    print("\n" + section)
    if failed:
        print(f"{failed} lab run(s) failed: not appended to RESULTS.md", file=sys.stderr)
        return 1
    if not args.no_append and not args.notebooks:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + section)
        print("appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
