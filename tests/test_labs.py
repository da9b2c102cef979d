"""Tests for labhelpers.tools.labs (run, check-clean, strip) and labhelpers.results, on small real notebooks."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labhelpers import results
from labhelpers.tools import labs
from labhelpers.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent
OK_NAME = "01_in_context_learning"  # a stem the tiny profile has a budget for


def make_notebook(path: Path, *code: str) -> Path:
    """Write a notebook: a title, a parameters cell `profile = None`, then `code` cells."""
    cells = [new_markdown_cell(f"# {path.stem}"),
             new_code_cell("profile = None", metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(src) for src in code]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                            "display_name": "Python 3"}})
    nbformat.write(nb, str(path))
    return path


def cli(*args, cwd=ROOT):
    """Run `python -m labhelpers.tools.labs ARGS` and return the completed process."""
    return subprocess.run([sys.executable, "-m", "labhelpers.tools.labs", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One CLI run over a failing notebook then a good one (the expensive part, shared)."""
    src = tmp_path_factory.mktemp("src")
    bad = make_notebook(src / "00_broken.ipynb", "raise RuntimeError('deliberate failure\\nmore detail')")
    ok = make_notebook(src / f"{OK_NAME}.ipynb",
                       "import os\nimport numpy as np\nfrom labhelpers.results import record",
                       "record('answer', np.float64(42.5), unit='points', note='a numpy scalar')\n"
                       "record('profile_param', profile)\n"
                       "record('profile_env', os.environ['LABS_PROFILE'])\n"
                       "record('cwd', os.getcwd())")
    before = {p: p.read_bytes() for p in (bad, ok)}
    out = tmp_path_factory.mktemp("runs")
    proc = cli("run", "--profile", "tiny", "--out", out, bad, ok)
    run_dirs = list(out.iterdir())
    assert len(run_dirs) == 1, (run_dirs, proc.stdout, proc.stderr)
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    return {"proc": proc, "src": src, "bad": bad, "ok": ok, "before": before, "out": out,
            "run_dir": run_dirs[0], "summary": summary,
            "entries": {nb["notebook"]: nb for nb in summary["notebooks"]}}


def test_run_executes_and_records_results(batch):
    entry = batch["entries"][OK_NAME]
    assert entry["status"] == "ok" and entry["error"] is None
    assert 0 < entry["wall_s"] < 300
    assert entry["budget_s"] == get_profile("tiny").budget_s(OK_NAME)
    assert entry["over_budget"] is False
    values = {r["key"]: r for r in entry["results"]}
    assert values["answer"] == {"notebook": OK_NAME, "key": "answer", "value": 42.5,
                                "unit": "points", "note": "a numpy scalar"}
    assert values["profile_param"]["value"] == "tiny"  # injected by papermill
    assert values["profile_env"]["value"] == "tiny"
    assert Path(values["cwd"]["value"]) == batch["src"]
    executed = nbformat.read(str(batch["run_dir"] / f"{OK_NAME}.ipynb"), as_version=4)
    assert any(c.get("outputs") or c.get("execution_count") for c in executed.cells if c.cell_type == "code")
    assert re.fullmatch(r"\d{8}-\d{6}-tiny-\d+", batch["run_dir"].name)
    md = (batch["run_dir"] / "summary.md").read_text()
    assert "answer: 42.5 points" in md and "| ok |" in md


def test_failure_is_reported_and_the_batch_goes_on(batch):
    proc, summary = batch["proc"], batch["summary"]
    assert proc.returncode == 1, proc.stderr
    assert [nb["notebook"] for nb in summary["notebooks"]] == ["00_broken", OK_NAME]
    bad = batch["entries"]["00_broken"]
    assert bad["status"] == "failed"
    assert bad["error"] == "RuntimeError: deliberate failure"
    assert bad["budget_s"] is None and bad["over_budget"] is None
    assert summary["failed"] == 1
    assert re.search(r"^\[1/2\] 00_broken: \d+ min left in all$", proc.stdout, re.M), proc.stdout
    assert re.search(r"^\[1/2\] 00_broken: failed in [\d.]+ s: RuntimeError: deliberate failure$", proc.stdout, re.M)
    assert re.search(rf"^\[2/2\] {OK_NAME}: about \d+ (s|min), \d+ (s|min) left in all$", proc.stdout, re.M)
    assert re.search(rf"^\[2/2\] {OK_NAME}: ok in [\d.]+ s \(budget {get_profile('tiny').budget_s(OK_NAME)} s\)$",
                     proc.stdout, re.M), proc.stdout
    assert str(batch["run_dir"] / "summary.md") in proc.stdout


def test_sources_unchanged_byte_for_byte(batch):
    for path, data in batch["before"].items():
        assert path.read_bytes() == data
    assert sorted(p.name for p in batch["src"].iterdir()) == sorted(p.name for p in batch["before"])


def test_runs_never_share_a_folder(batch, tmp_path):
    out = tmp_path / "runs"
    fast = make_notebook(tmp_path / "05_fast.ipynb", "x = 1")
    first, summary = labs.run([fast], profile="tiny", out=out)
    second = labs._new_run_dir(out, "tiny")  # same second, same pid: must still be new
    third = labs._new_run_dir(out, "tiny")
    assert len({first, second, third, batch["run_dir"]}) == 4
    assert summary["notebooks"][0]["status"] == "ok"
    assert (first / "05_fast.ipynb").exists() and (first / "summary.md").exists()


def test_check_clean_and_strip(batch, tmp_path):
    dirty = tmp_path / "executed.ipynb"
    dirty.write_bytes((batch["run_dir"] / f"{OK_NAME}.ipynb").read_bytes())
    clean = tmp_path / "clean.ipynb"
    clean.write_bytes(batch["ok"].read_bytes())
    assert labs.main(["check-clean", str(clean)]) == 0
    assert labs.main(["check-clean", str(dirty), str(clean)]) == 1
    assert labs.main(["strip", str(dirty), str(clean)]) == 0
    assert clean.read_bytes() == batch["ok"].read_bytes()  # nothing to strip: untouched
    assert labs.main(["check-clean", str(tmp_path)]) == 0
    nb = nbformat.read(str(dirty), as_version=4)
    assert all("execution" not in c.metadata for c in nb.cells)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.ipynb", "executed.ipynb"]  # no temp left


def test_check_clean_lists_dirty_notebooks(batch, tmp_path, capsys):
    dirty = tmp_path / "executed.ipynb"
    dirty.write_bytes((batch["run_dir"] / f"{OK_NAME}.ipynb").read_bytes())
    assert labs.main(["check-clean", str(dirty)]) == 1
    out = capsys.readouterr().out
    assert str(dirty) in out and "strip" in out


def test_usage_error_exits_2_without_traceback(batch, tmp_path):
    proc = cli("run", "--profile", "no-such-profile", "--out", tmp_path / "runs", batch["ok"])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no-such-profile" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["run", "check-clean", "strip"])
def test_missing_notebook_exits_2(tmp_path, capsys, command):
    missing = tmp_path / "missing.ipynb"
    options = ["--profile", "tiny", "--out", str(tmp_path / "runs")] if command == "run" else []
    assert labs.main([command, *options, str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_record_writes_json_lines(tmp_path, monkeypatch):
    target = tmp_path / "results.jsonl"
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(target))
    monkeypatch.setenv(results.NOTEBOOK_ENV, "07_demo")
    value = np.int64(3)
    assert results.record("steps", value, unit="steps") is value
    results.record("scores", {"rouge1": np.float32(0.5), "all": [1, 2.0, True, None, "x"]})
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert lines[0] == {"notebook": "07_demo", "key": "steps", "value": 3, "unit": "steps", "note": ""}
    assert lines[1]["value"] == {"rouge1": 0.5, "all": [1, 2.0, True, None, "x"]}
    assert results.recorded()[-2:] == lines


def test_record_without_file_keeps_in_process(monkeypatch):
    monkeypatch.delenv(results.RESULTS_FILE_ENV, raising=False)
    results.record("in_memory", 1.25)
    assert results.recorded()[-1]["key"] == "in_memory"


@pytest.mark.parametrize("bad", [object(), {1: 2}, [1, {3}], b"bytes"])
def test_record_rejects_non_serialisable_values(bad, tmp_path, monkeypatch):
    target = tmp_path / "results.jsonl"
    monkeypatch.setenv(results.RESULTS_FILE_ENV, str(target))
    with pytest.raises(TypeError, match="value"):
        results.record("k", bad)
    assert not target.exists()


@pytest.mark.parametrize("key", ["", "   ", None])
def test_record_rejects_empty_key(key):
    with pytest.raises(ValueError, match="key"):
        results.record(key, 1)


def test_record_rejects_nan():
    with pytest.raises(ValueError, match="value"):
        results.record("k", float("nan"))


def test_help_mentions_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        labs.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "check-clean", "strip"):
        assert command in out


def _summary(out: Path, name: str, profile: str, walls: dict, status: str = "ok") -> None:
    folder = out / name
    folder.mkdir(parents=True)
    notebooks = [{"notebook": k, "status": status, "wall_s": v} for k, v in walls.items()]
    (folder / "summary.json").write_text(json.dumps({"profile": profile, "notebooks": notebooks}))


TINY_LABS = ["01_in_context_learning", "02_memory_precision_quantization", "05_instruction_fine_tuning"]


def test_time_estimates_come_from_the_latest_recorded_runs_then_the_budgets(tmp_path):
    _summary(tmp_path, "20261201-100000-tiny-1", "tiny", {TINY_LABS[0]: 50.0, TINY_LABS[1]: 70.0})
    _summary(tmp_path, "20261202-100000-tiny-2", "tiny", {TINY_LABS[0]: 30.0})
    _summary(tmp_path, "20261203-100000-tiny-3", "tiny", {TINY_LABS[1]: 999.0}, status="failed")
    _summary(tmp_path, "20261204-100000-embedded-4", "embedded", {TINY_LABS[0]: 400.0})
    (tmp_path / "20261205-100000-tiny-5").mkdir()
    (tmp_path / "20261205-100000-tiny-5" / "summary.json").write_text("{not json")
    recorded = labs.recorded_times(tmp_path, "tiny")
    assert recorded == {TINY_LABS[0]: 30.0, TINY_LABS[1]: 70.0}
    budget = get_profile("tiny").budget_s(TINY_LABS[2])
    assert labs.estimates_s(TINY_LABS + ["99_unknown"], "tiny", recorded) == [30.0, 70.0, float(budget), None]


def test_time_left_follows_this_runs_pace():
    estimates = [30.0, 120.0, 120.0]
    assert labs.time_left_s(estimates, []) == 270.0                # nothing run yet: the estimates as they are
    assert labs.time_left_s(estimates, [60.0]) == 480.0            # twice as slow as estimated: 2 x 240
    assert labs.time_left_s(estimates, [60.0, 60.0]) == 96.0       # 120 s for 150 estimated: 0.8 x 120
    assert labs.time_left_s([10.0, 100.0], [1000.0]) == 500.0      # the pace is kept within 5x
    assert labs.time_left_s([10.0, None, 30.0], []) == 60.0        # no estimate: the mean of the others
    assert labs.time_left_s([None, None], []) is None
    assert [labs.duration(s) for s in (None, 0.4, 89.4, 90, 121, 3599, 3601, 7320)] == \
        ["unknown", "0 s", "89 s", "2 min", "3 min", "1 h 00 min", "1 h 01 min", "2 h 02 min"]


def test_run_prints_a_progress_line_per_lab_with_the_time_left(tmp_path, monkeypatch, capsys):
    """run() with a stand-in for the notebook execution: each lab takes twice its recorded time."""
    out = tmp_path / "runs"
    _summary(out, "20261201-100000-tiny-1", "tiny", {TINY_LABS[0]: 30.0, TINY_LABS[1]: 60.0})
    taken = {TINY_LABS[0]: 60.0, TINY_LABS[1]: 120.0, TINY_LABS[2]: 10.0}

    def fake_run_notebook(path, profile, run_dir):
        budget = get_profile(profile).budget_s(path.stem)
        return {"notebook": path.stem, "source": str(path), "output": None, "status": "ok", "error": None,
                "wall_s": taken[path.stem], "budget_s": budget, "over_budget": taken[path.stem] > budget,
                "results": [{"notebook": path.stem, "key": "rouge_l", "value": 0.25, "unit": "", "note": ""}]}

    monkeypatch.setattr(labs, "run_notebook", fake_run_notebook)
    run_dir, summary = labs.run([tmp_path / f"{stem}.ipynb" for stem in TINY_LABS], profile="tiny", out=out)
    lines = capsys.readouterr().out.splitlines()
    budget = get_profile("tiny").budget_s(TINY_LABS[2])  # 120 s
    assert lines[0] == (f"running 3 notebook(s) on tiny; time estimates: 2 from earlier runs in {out}, "
                        "1 from the profile's time budgets (upper bounds), corrected by this run's pace")
    # estimates 30, 60, 120 s: 210 s in all; after lab 1 the pace is 60/30 = 2, after lab 2 (60+120)/(30+60) = 2
    assert lines[1:] == [
        f"[1/3] {TINY_LABS[0]}: about 30 s, 4 min left in all", f"[1/3] {TINY_LABS[0]}: ok in 60.0 s (budget 120 s)",
        f"[2/3] {TINY_LABS[1]}: about 2 min, 6 min left in all", f"[2/3] {TINY_LABS[1]}: ok in 120.0 s (budget 120 s)",
        f"[3/3] {TINY_LABS[2]}: about 4 min, 4 min left in all",
        f"[3/3] {TINY_LABS[2]}: ok in 10.0 s (budget {budget} s)"]
    assert summary["wall_s"] == 190.0 and summary["failed"] == 0
    md = (run_dir / "summary.md").read_text()
    assert "3 notebook(s) in 190 s, 0 failed" in md and md.count("- rouge_l: 0.25") == 3


def test_default_notebooks_and_runs_folder_are_the_repositorys():
    """`labs run` with no notebook runs notebooks/NN_*.ipynb of the repository and writes under its runs/."""
    assert labs.ROOT == ROOT and labs.NOTEBOOKS == ROOT / "notebooks"
    assert [p.name for p in labs.lab_notebooks()] == sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(labs.lab_notebooks()) >= 10
