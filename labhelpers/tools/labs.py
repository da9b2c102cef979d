"""Run, check and clean the labs: `python -m labhelpers.tools.labs {run,check-clean,strip} --help`.

`run` executes notebooks headless with papermill into a new folder under runs/ (the sources are
never touched), printing a progress line per notebook with an estimate of the time left, and writes
summary.json and summary.md with each notebook's status, wall time, budget and the numbers it
recorded with `labhelpers.results.record`.
`check-clean` fails when a notebook holds outputs; `strip` removes them in place, atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.reader import NotJSONError

from ..profiles import get_profile, profile_name
from ..results import NOTEBOOK_ENV, RESULTS_FILE_ENV, read_results

ROOT = Path(__file__).resolve().parents[2]  # the repository: labhelpers/tools/labs.py -> ../..
NOTEBOOKS = ROOT / "notebooks"
LAB_PATTERN = "[0-9][0-9]_*.ipynb"


class UsageError(ValueError):
    """A problem with the command line (missing notebook, unknown profile): exit status 2."""


def lab_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered labs (NN_topic.ipynb) in `folder`, sorted."""
    return sorted(folder.glob(LAB_PATTERN))


def _existing(paths, default: list[Path]) -> list[Path]:
    """`paths` as resolved notebook files (folders expand to their notebooks), else UsageError."""
    if not paths:
        return default
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.is_file() and p.suffix == ".ipynb":
            found.append(p.resolve())
        else:
            raise UsageError(f"no such notebook: {p}")
    return found


@contextlib.contextmanager
def _environ(**values):
    """Set environment variables (inherited by the kernel) for the duration of a block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _new_run_dir(out: Path, profile: str) -> Path:
    """Create and return a fresh folder `out/<YYYYmmdd-HHMMSS>-<profile>-<pid>[-n]`."""
    out.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{profile}-{os.getpid()}"
    for n in range(1000):
        path = out / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder in {out}")


def _one_line(exc: BaseException) -> str:
    """An exception as one line: 'Name: message'."""
    name = getattr(exc, "ename", None) or type(exc).__name__
    message = str(getattr(exc, "evalue", exc)).strip().splitlines()
    return f"{name}: {message[0]}" if message else name


def cell_timeout_s(budget: int | None) -> int:
    """Per-cell limit: a cell that hangs (a lost kernel message, a stuck download) fails instead of waiting forever."""
    return 3600 if budget is None else max(600, 2 * budget)


def run_notebook(path: Path, profile: str, run_dir: Path) -> dict:
    """Execute one notebook into `run_dir` and return its summary entry."""
    import papermill as pm

    stem = path.stem
    results_file = run_dir / f"{stem}.results.jsonl"
    try:
        budget = get_profile(profile).budget_s(stem)
    except ValueError:
        budget = None
    status, error = "ok", None
    start = time.perf_counter()
    with _environ(LABS_PROFILE=profile, **{RESULTS_FILE_ENV: str(results_file), NOTEBOOK_ENV: stem}):
        try:
            pm.execute_notebook(str(path), str(run_dir / path.name), parameters={"profile": profile},
                                kernel_name="python3", language="python", cwd=str(path.parent), progress_bar=False,
                                start_timeout=120, execution_timeout=cell_timeout_s(budget))
        except Exception as exc:  # a failing notebook is reported, and the batch goes on
            status, error = "failed", _one_line(exc)
    wall = round(time.perf_counter() - start, 2)
    output = run_dir / path.name
    return {"notebook": stem, "source": str(path), "output": str(output) if output.exists() else None,
            "status": status, "error": error, "wall_s": wall, "budget_s": budget,
            "over_budget": None if budget is None else wall > budget,
            "results": read_results(results_file)}


def _result_line(r: dict) -> str:
    """One recorded result as Markdown: '- key: value unit (note)'."""
    value = r["value"] if isinstance(r["value"], str) else json.dumps(r["value"])
    return f"- {r['key']}: {value}" + (f" {r['unit']}" if r["unit"] else "") + (f" ({r['note']})" if r["note"] else "")


def _summary_md(summary: dict) -> str:
    """The run summary as Markdown: one table row per notebook, then each one's results."""
    lines = [f"# Lab run {Path(summary['run_dir']).name}", "",
             f"Profile `{summary['profile']}`, started {summary['started']}, {len(summary['notebooks'])} notebook(s) "
             f"in {summary.get('wall_s', 0):.0f} s, {summary.get('failed', 0)} failed. The numbers each lab recorded "
             "follow the table.", "",
             "| notebook | status | wall time (s) | budget (s) |", "|---|---|---:|---:|"]
    for nb in summary["notebooks"]:
        status = nb["status"] if nb["status"] == "ok" else f"failed: {nb['error']}"
        budget = "-" if nb["budget_s"] is None else f"{nb['budget_s']}{' (exceeded)' if nb['over_budget'] else ''}"
        lines.append(f"| {nb['notebook']} | {status.replace('|', '/')} | {nb['wall_s']:.1f} | {budget} |")
    for nb in summary["notebooks"]:
        lines += ["", f"## {nb['notebook']}", ""]
        lines += [_result_line(r) for r in nb["results"]] or ["(no results recorded)"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Progress: how long each lab should take, and how long is left
# --------------------------------------------------------------------------------------------------

PACE_LIMITS = (0.2, 5.0)  # this run's pace corrects the estimates, within these factors


def recorded_times(out: Path, profile: str) -> dict[str, float]:
    """Each notebook's wall time in its most recent successful run on `profile` among the run folders in `out`."""
    times: dict[str, float] = {}
    # folder names start with the time (YYYYmmdd-HHMMSS), so sorting them puts the most recent last
    for summary_file in sorted(Path(out).glob("*/summary.json"), key=lambda p: p.parent.name):
        try:
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or summary.get("profile") != profile:
            continue
        for nb in summary.get("notebooks", []):
            if isinstance(nb, dict) and nb.get("status") == "ok" and isinstance(nb.get("wall_s"), (int, float)):
                times[str(nb.get("notebook"))] = float(nb["wall_s"])
    return times


def estimates_s(stems: list[str], profile: str, recorded: dict[str, float]) -> list[float | None]:
    """Seconds each notebook should take: its recorded time, else the profile's budget (an upper bound), else None."""
    found: list[float | None] = []
    for stem in stems:
        if stem in recorded:
            found.append(recorded[stem])
            continue
        try:
            found.append(float(get_profile(profile).budget_s(stem)))
        except ValueError:
            found.append(None)
    return found


def time_left_s(estimates: list[float | None], walls: list[float]) -> float | None:
    """Seconds left when the first len(walls) notebooks took `walls`: the remaining estimates times this run's pace.

    The pace is the time taken over the time estimated for the notebooks done so far (1 before any), kept within
    PACE_LIMITS; a notebook without an estimate counts as the mean of the others. None when nothing is known.
    """
    done = [(w, e) for w, e in zip(walls, estimates) if e]
    pace = sum(w for w, _ in done) / sum(e for _, e in done) if done else 1.0
    pace = min(max(pace, PACE_LIMITS[0]), PACE_LIMITS[1])
    known = [e for e in estimates if e is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    return pace * sum(mean if e is None else e for e in estimates[len(walls):])


def duration(seconds: float | None) -> str:
    """A duration for a person: '45 s', '7 min', '1 h 05 min' (minutes rounded up); 'unknown' for None."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def progress_line(index: int, stems: list[str], estimates: list[float | None], walls: list[float]) -> str:
    """The line printed as notebook `index` (0-based) starts: its place, its name and the time left, itself included.

    A line of its own, ended before the notebook runs: a kernel's start-up warnings on stderr cannot split it.
    """
    this = time_left_s(estimates[:index + 1], walls) if estimates[index] is not None else None
    left = time_left_s(estimates, walls)
    return (f"[{index + 1}/{len(stems)}] {stems[index]}: " + (f"about {duration(this)}, " if this is not None else "")
            + (f"{duration(left)} left in all" if left is not None else "time left unknown"))


def _estimates_note(stems: list[str], profile: str, recorded: dict[str, float], out: Path) -> str:
    from_runs = sum(stem in recorded for stem in stems)
    parts = ([f"{from_runs} from earlier runs in {out}"] if from_runs else []) + (
        [f"{len(stems) - from_runs} from the profile's time budgets (upper bounds)"] if from_runs < len(stems) else [])
    return f"running {len(stems)} notebook(s) on {profile}; time estimates: {', '.join(parts)}, corrected by this run's pace"


def run(notebooks: list[Path], profile: str | None = None, out: Path | None = None) -> tuple[Path, dict]:
    """Execute `notebooks` into a new run folder; return the folder and the summary written there."""
    try:
        profile = get_profile(profile_name(profile)).name
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stems = [Path(p).stem for p in notebooks]
    if len(set(stems)) < len(stems):
        raise UsageError(f"two notebooks share a name, so their executed copies would collide: {stems}")
    out = Path(out) if out else ROOT / "runs"
    recorded = recorded_times(out, profile) if out.is_dir() else {}
    estimates = estimates_s(stems, profile, recorded)
    run_dir = _new_run_dir(out, profile)
    summary = {"profile": profile, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "run_dir": str(run_dir), "notebooks": []}
    print(_estimates_note(stems, profile, recorded, out), flush=True)
    walls: list[float] = []
    for i, path in enumerate(notebooks):
        print(progress_line(i, stems, estimates, walls), flush=True)
        entry = run_notebook(Path(path).resolve(), profile, run_dir)
        walls.append(entry["wall_s"])
        budget = "" if entry["budget_s"] is None else f" (budget {entry['budget_s']} s" + (
            ", EXCEEDED)" if entry["over_budget"] else ")")
        print(f"[{i + 1}/{len(stems)}] {stems[i]}: {entry['status']} in {entry['wall_s']:.1f} s{budget}"
              + (f": {entry['error']}" if entry["error"] else ""), flush=True)
        summary["notebooks"].append(entry)
    summary["wall_s"] = round(sum(walls), 1)
    summary["failed"] = sum(nb["status"] != "ok" for nb in summary["notebooks"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (run_dir / "summary.md").write_text(_summary_md(summary), encoding="utf-8")
    return run_dir, summary


def is_clean(nb) -> bool:
    """True when no code cell has outputs or an execution count."""
    return all(not c.get("outputs") and c.get("execution_count") is None
               for c in nb.cells if c.cell_type == "code")


def strip_notebook(path: Path) -> bool:
    """Remove outputs, execution counts and execution timings in place (atomically); True if it changed."""
    nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
        if "execution" in cell.get("metadata", {}):
            del cell.metadata["execution"]
            changed = True
    if changed:
        write_notebook(nb, path)
    return changed


def write_notebook(nb, path: Path) -> None:
    """Write `nb` over `path` atomically (a temporary file beside it, then a rename), keeping its mode."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _all_notebooks() -> list[Path]:
    """Every notebook under notebooks/ (checkpoints excluded)."""
    return _existing([NOTEBOOKS], []) if NOTEBOOKS.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m labhelpers.tools.labs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_run = sub.add_parser("run", help="execute notebooks headless into a new runs/ folder and summarise",
                           description="Execute notebooks with papermill (profile injected as a parameter) "
                                       "into a new folder DIR/<time>-<profile>-<pid>; exit 1 if any failed.")
    p_run.add_argument("--profile", help="tiny, embedded or course (default: $LABS_PROFILE or embedded)")
    p_run.add_argument("--out", type=Path, metavar="DIR", help=f"parent of the run folder (default: {ROOT / 'runs'})")
    p_run.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                       help=f"notebooks to run (default: every notebooks/{LAB_PATTERN})")
    p_check = sub.add_parser("check-clean", help="fail if any notebook holds outputs or execution counts")
    p_check.add_argument("paths", nargs="*", metavar="PATH", help="notebooks or folders (default: notebooks/)")
    p_strip = sub.add_parser("strip", help="remove outputs and execution counts in place")
    p_strip.add_argument("paths", nargs="*", metavar="PATH", help="notebooks or folders (default: notebooks/)")
    args = parser.parse_args(argv)

    try:
        if args.command == "run":
            notebooks = _existing(args.notebooks, lab_notebooks())
            if not notebooks:
                raise UsageError(f"no notebooks to run (none match {NOTEBOOKS / LAB_PATTERN})")
            run_dir, summary = run(notebooks, args.profile, args.out)
            print(f"summary: {run_dir / 'summary.md'} ({summary['failed']} of {len(notebooks)} failed, "
                  f"{duration(summary['wall_s'])} in all)")
            return 1 if summary["failed"] else 0
        paths = _existing(args.paths, _all_notebooks())
        if args.command == "check-clean":
            dirty = [p for p in paths if not is_clean(nbformat.read(str(p), as_version=nbformat.NO_CONVERT))]
            for p in dirty:
                print(f"has outputs: {p}")
            if dirty:
                print(f"{len(dirty)} notebook(s) hold outputs; run `python -m labhelpers.tools.labs strip`")
                return 1
            print(f"OK: {len(paths)} notebook(s) clean")
            return 0
        changed = [p for p in paths if strip_notebook(p)]
        print(f"stripped {len(changed)} of {len(paths)} notebook(s)" + "".join(f"\n  {p}" for p in changed))
        return 0
    except (UsageError, OSError, NotJSONError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
