"""Tests for labhelpers.tools.grading: markers and student copies, check(), release/validate, and autograde on hostile work.

The graded lab is tests/fixtures/grading/course.py (no model, seconds per kernel); its notebooks and the
submissions only ever exist in temporary folders, so pytest and nbmake never execute them directly.
"""

import csv
import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labhelpers.tools import grading
from labhelpers import exercises
from labhelpers.exercises import CheckFailed
from labhelpers.tools.grading import GradingError, Limits

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("grading_course", Path(__file__).parent / "fixtures/grading/course.py")
course = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course)

# Small limits so the hostile cases end quickly; 3 GB of address space is plenty for a kernel without torch.
LIMITS = Limits(notebook_s=30, cell_s=4, memory_mb=3072, output_mb=1)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "labhelpers.tools.grading", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """The instructor notebook of the fixture lab, written to a temporary folder."""
    path = tmp_path_factory.mktemp("instructor") / course.NAME
    nbformat.write(course.instructor_notebook(), str(path))
    return path


def test_release_stubs_solutions_drops_hidden_checks_and_outputs(lab):
    nb = nbformat.read(str(lab), as_version=4)
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", text="old output\n")]
    nb.cells[4].execution_count = 3
    student = grading.release_notebook(nb, lab.name)
    text = nbformat.writes(student)
    assert "### BEGIN SOLUTION" not in text and "return len(text.split())" not in text
    assert "HIDDEN" not in text and "an empty text has no words" not in text
    assert student.cells[4].source == "def word_count(text):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert 'word_count("a b c") == 3' in student.cells[5].source and 'check("q1")' in student.cells[5].source
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in student.cells if c.cell_type == "code")
    assert [c.id for c in student.cells] == [c.id for c in nb.cells]  # ids kept: the grader finds check cells by id
    assert "BEGIN SOLUTION" in nb.cells[4].source  # the instructor copy is left alone


def test_exercises_are_read_from_the_decorators(lab):
    found = grading.exercises_in(nbformat.read(str(lab), as_version=4))
    assert {e.id: e.points for e in found} == course.POINTS
    q3 = found[2]
    assert q3.function == "check_q3" and "negative limit" in q3.source and q3.source.startswith("def check_q3")
    assert (found[0].solution, found[0].forbid) == (("word_count",), ("reference_word_count",))
    assert (q3.solution, q3.forbid) == ((), ())


@pytest.mark.parametrize("source, problem", [
    ("x = 1\n### BEGIN SOLUTION\nx = 2", "never closed"),
    ("### END SOLUTION", "without"),
    ("def f():\n    ### BEGIN HIDDEN TESTS\n    assert True\n    ### END HIDDEN TESTS", "not valid Python"),
])
def test_release_refuses_broken_markers(source, problem):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    with pytest.raises(GradingError, match=problem):
        grading.release_notebook(nb)


def test_exercise_needs_points():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('@exercise("q1")\ndef c():\n    pass')])
    with pytest.raises(GradingError, match="points"):
        grading.exercises_in(nb)


def test_check_prints_a_pass_and_raises_a_failure_with_its_hint(capsys):
    state = {"answer": 41}

    @exercises.exercise("t-demo", points=2, hint="add one")
    def checks():
        assert state["answer"] == 42, f"answer is {state['answer']}, expected 42"

    with pytest.raises(CheckFailed) as failure:
        exercises.check("t-demo")
    assert "answer is 41" in str(failure.value) and "hint: add one" in str(failure.value)
    assert failure.value._render_traceback_()[0].startswith("✗ t-demo failed")
    state["answer"] = 42
    exercises.check("t-demo")
    assert "✓ t-demo passed (2 points)" in capsys.readouterr().out

    @exercises.exercise("t-todo", points=1)
    def not_done():
        raise NotImplementedError()

    with pytest.raises(CheckFailed, match="not done yet"):
        exercises.check("t-todo")
    with pytest.raises(CheckFailed, match="no checks for 't-nothing'"):
        exercises.check("t-nothing")


def test_source_scan_flags_tampering_but_not_the_usual_import():
    cells = [nbformat.v4.new_code_cell(s) for s in (
        "from labhelpers.exercises import check, exercise",
        "def check(name):\n    print('passed')",
        "import builtins\nbuiltins.abs = lambda x: 0",
        "import sys\nsys.settrace(lambda *a: None)",
    )]
    flags = grading.scan_source(cells)
    assert not any("cell 0" in f for f in flags), flags
    assert "redefines `check` (cell 1)" in flags
    assert "assigns builtins.abs (cell 2)" in flags and "calls sys.settrace (cell 3)" in flags


def test_committed_student_copies_are_what_release_makes_now(tmp_path):
    problems = grading.release([ROOT / "notebooks"], ROOT / "student", check_only=True)
    assert not problems, ("student/ is stale: run `python -m labhelpers.tools.grading release notebooks/ student/`\n"
                          + "\n".join(problems))
    assert (ROOT / "student" / "01_in_context_learning.ipynb").is_file()


# every lab hands out exercises: a lab moved into notebooks/ without them fails here
GRADED_LABS = tuple(sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))


@pytest.mark.parametrize("number", GRADED_LABS)
def test_graded_labs_state_each_exercise_and_check_it(number):
    path = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    nb = nbformat.read(str(path), as_version=4)
    found = grading.exercises_in(nb, path.name)
    assert len(found) >= 2, f"{path.name} declares {len(found)} exercises; the graded labs hold at least two"
    assert (ROOT / "student" / path.name).is_file(), f"no student copy of {path.name}"
    for ex in found:
        heading = re.compile(rf"^### Exercise {re.escape(ex.id)} \((\d+(?:\.\d+)?) points?\)", re.M)
        tasks = [i for i, c in enumerate(nb.cells[:ex.cell_index]) if c.cell_type == "markdown" and heading.search(c.source)]
        assert tasks, f"{path.name} {ex.id}: no markdown cell '### Exercise {ex.id} (N points): ...' above its checks"
        task = tasks[-1]
        assert float(heading.search(nb.cells[task].source).group(1)) == ex.points, \
            f"{path.name} {ex.id}: the task states other points than @exercise(points={ex.points:g})"
        between = [c for c in nb.cells[task + 1:ex.cell_index] if c.cell_type == "code"]
        assert any(grading.SOLUTION_BEGIN in c.source for c in between), \
            f"{path.name} {ex.id}: no solution cell between the task and the checks"
        assert grading.HIDDEN_BEGIN in ex.source, f"{path.name} {ex.id}: no hidden checks"
        assert f'check("{ex.id}")' in nb.cells[ex.cell_index].source, f"{path.name} {ex.id}: its cell never calls check"


def test_release_then_validate_round_trip(lab, tmp_path):
    out = tmp_path / "student"
    proc = cli("release", lab.parent, out)
    assert proc.returncode == 0, proc.stderr
    assert (out / course.NAME).is_file()
    assert cli("release", lab.parent, out, "--check").returncode == 0
    problems = grading.validate([lab], LIMITS)
    assert not problems, problems
    broken = tmp_path / "broken" / course.NAME  # a solution that fails its own hidden check
    broken.parent.mkdir()
    nb = course.instructor_notebook()
    nb.cells[10].source = nb.cells[10].source.replace('        raise ValueError("limit must be >= 0")\n', "        pass\n")
    nbformat.write(nb, str(broken))
    problems = grading.validate([broken], LIMITS)
    assert len(problems) == 1 and "q3" in problems[0] and "negative limit" in problems[0], problems


@pytest.fixture(scope="module")
def batch(lab, tmp_path_factory):
    """One autograde run, through the command line, over every submission in the fixture (the slow part)."""
    student = grading.release_notebook(nbformat.read(str(lab), as_version=4), lab.name)
    folder = tmp_path_factory.mktemp("submissions")
    paths = course.write_submissions(folder, student)
    hashes = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in paths.items()}
    out = tmp_path_factory.mktemp("report") / "grades"
    proc = cli("autograde", lab, folder, "--out", out, "--workers", 2, "--timeout", LIMITS.notebook_s,
               "--cell-timeout", LIMITS.cell_s, "--memory-mb", LIMITS.memory_mb, "--max-output-mb", LIMITS.output_mb)
    return {"proc": proc, "paths": paths, "hashes": hashes, "out": out, "folder": folder, "lab": lab}


def test_autograde_finishes_with_a_row_per_student_and_exercise(batch):
    assert batch["proc"].returncode == 0, batch["proc"].stdout + batch["proc"].stderr
    rows = list(csv.DictReader((batch["out"] / "grades.csv").open(encoding="utf-8")))
    assert len(rows) == len(course.EXPECTED) * len(course.POINTS)
    got = {(r["student"], r["exercise"]): r for r in rows}
    wrong = []
    for student, (points, words) in course.EXPECTED.items():
        for exercise, want in points.items():
            row = got[(student, exercise)]
            assert float(row["max_points"]) == course.POINTS[exercise]
            if float(row["points"]) != want or words.get(exercise, "") not in row["message"]:
                wrong.append(f"{student} {exercise}: {row['points']} ({row['message']}), expected {want} "
                             f"with {words.get(exercise)!r}")
    assert not wrong, "\n".join(wrong)


def test_full_marks_and_exactly_one_answer_lost(batch):
    report = json.loads((batch["out"] / "grades.json").read_text(encoding="utf-8"))
    by_student = {s["student"]: s for s in report["students"]}
    assert by_student["correct"]["points"] == by_student["correct"]["max_points"] == sum(course.POINTS.values())
    assert by_student["correct"]["flags"] == [] and by_student["correct"]["reason"] is None
    assert by_student["wrong_q3"]["points"] == sum(course.POINTS.values()) - course.POINTS["q3"]
    assert report["limits"]["notebook_s"] == LIMITS.notebook_s and report["wall_s"] > 0


def test_hostile_cases_are_reported_with_their_reasons(batch):
    report = json.loads((batch["out"] / "grades.json").read_text(encoding="utf-8"))
    s = {r["student"]: r for r in report["students"]}
    assert s["invalid_json"]["status"] == "invalid"
    assert "time limit" in s["never_ends"]["reason"]
    assert "kernel died" in s["crashes"]["reason"] and "kernel died" in s["kills_itself"]["reason"]
    assert "output limit" in s["floods_output"]["reason"]
    assert (batch["out"] / "executed" / "floods_output.ipynb").stat().st_size < 2 * LIMITS.output_mb * 2**20
    assert "redefines `check` (cell 2)" in s["tampers"]["flags"] and "check cell of q1 edited" in s["tampers"]["flags"]
    assert any("shutil.rmtree" in f for f in s["deletes_files"]["flags"])
    assert all(r["wall_s"] < LIMITS.notebook_s + 60 for r in report["students"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is enforced on Linux only")
def test_memory_limit_raises_memory_error_inside_the_kernel(batch):
    executed = nbformat.read(str(batch["out"] / "executed" / "hogs_memory.ipynb"), as_version=4)
    texts = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "MemoryError, as it should be" in texts


def test_submissions_are_never_modified_and_reports_are_safe_html(batch):
    for name, path in batch["paths"].items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == batch["hashes"][name], name
    page = (batch["out"] / "grades.html").read_text(encoding="utf-8")
    assert "<h2 id='correct'>correct: 5 / 5</h2>" in page and "<script" not in page


def test_autograde_refuses_to_overwrite_a_report_without_force(batch):
    before = (batch["out"] / "grades.csv").read_bytes()
    proc = cli("autograde", batch["lab"], batch["folder"], "--out", batch["out"])
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (batch["out"] / "grades.csv").read_bytes() == before
