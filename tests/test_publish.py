"""labhelpers.tools.publish: the student-only tree holds the student copies and what they need, and gives nothing away."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labhelpers.tools import colab, publish
from labhelpers.tools.grading import HIDDEN_BEGIN, SOLUTION_BEGIN

REPO = Path(__file__).resolve().parent.parent
SOLUTION_LINE = "return sum(len(word) for word in text.split()) / 7.25"
HIDDEN_LINE = "assert letters_per_word('ab cd ef') == 6 / 7.25"
STUDENT_TEXT = "# Demo labs\n\nRun `bash setup.sh`.\n\n"
INSTRUCTOR_TEXT = "## For instructors\n\nGrade with the grader.\n"

SOLUTION_CELL = f"""def letters_per_word(text):
    ### BEGIN SOLUTION
    {SOLUTION_LINE}
    ### END SOLUTION"""
CHECK_CELL = f"""@exercise("q1", points=1, hint="letters over 7.25")
def check_q1():
    assert letters_per_word("a") > 0, "positive"
    ### BEGIN HIDDEN TESTS
    {HIDDEN_LINE}
    ### END HIDDEN TESTS

check("q1")"""


def _notebook(path: Path, *cells) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(new_notebook(cells=list(cells)), str(path))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def source(tmp_path):
    """An instructor repository in miniature, with everything a student must not get beside what they need."""
    root = tmp_path / "instructor"
    _notebook(root / "notebooks" / "01_demo.ipynb", new_markdown_cell("# Demo"),
              new_code_cell("pass", metadata={"tags": [colab.CELL_TAG]}),
              new_code_cell("profile = None", metadata={"tags": ["parameters"]}),
              new_code_cell(SOLUTION_CELL), new_code_cell(CHECK_CELL))
    _notebook(root / "notebooks" / "02_plain.ipynb", new_code_cell("x = 1"))
    _notebook(root / "notebooks" / "outputs" / "adapter" / "01_copy.ipynb", new_code_cell(SOLUTION_CELL))
    _notebook(root / "student" / "01_demo.ipynb", new_code_cell("stale copy"))
    _notebook(root / "labhelpers" / "runs" / "20261207-000000-tiny-1" / "01_demo.ipynb", new_code_cell(SOLUTION_CELL))
    _write(root / "labhelpers" / "__init__.py", '"""demo"""\n')
    _write(root / "labhelpers" / "tools" / "grading.py", f"SOLUTION_BEGIN = {SOLUTION_BEGIN!r}\n")
    _write(root / "labhelpers" / "tools" / "labs.py", "# the lab runner\n")
    _write(root / "labhelpers" / "tools" / "colab.py", 'REPOSITORY = "https://github.com/teacher/labs"\n')
    (root / "labhelpers" / "__pycache__").mkdir()
    (root / "labhelpers" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0compiled")
    _write(root / "data" / "dialogues" / "train.jsonl", '{"dialogue": "#Person1#: hi"}\n')
    (root / "data" / "blob.bin").write_bytes(bytes(range(256)))
    _write(root / "tests" / "test_demo.py", f"# {HIDDEN_LINE}\n")
    _write(root / "benchmarks" / "RESULTS.md", "numbers\n")
    _write(root / "docs" / "instructors.md", INSTRUCTOR_TEXT)
    for name in ("setup.sh", "requirements.txt", "pyproject.toml", "LICENSE"):
        _write(root / name, f"# {name}\n")
    _write(root / "README.md", STUDENT_TEXT + colab.README_START + "\n| old badges |\n" + colab.README_END + "\n\n"
           + publish.STUDENT_PART_END + "\n\n" + INSTRUCTOR_TEXT)
    return root


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_the_tree_holds_the_student_copies_and_what_they_need_only(source, tmp_path):
    dest = tmp_path / "published"
    labs, references = publish.publish(dest, root=source)
    assert [p.name for p in labs] == ["01_demo.ipynb", "02_plain.ipynb"] and references == []
    assert _files(dest) == {"notebooks/01_demo.ipynb", "notebooks/02_plain.ipynb", "labhelpers/__init__.py",
                            "labhelpers/tools/labs.py", "labhelpers/tools/colab.py", "data/dialogues/train.jsonl",
                            "data/blob.bin", "setup.sh", "requirements.txt", "pyproject.toml", "LICENSE", "README.md"}
    cells = nbformat.read(str(dest / "notebooks" / "01_demo.ipynb"), as_version=4).cells
    sources = "\n".join(c.source for c in cells)
    assert "raise NotImplementedError()" in sources and 'assert letters_per_word("a") > 0' in sources
    assert SOLUTION_LINE not in sources and HIDDEN_LINE not in sources and "### " not in sources
    assert cells[1].source == "pass"  # without --repository the Colab cell is left as it is
    readme = (dest / "README.md").read_text()
    assert readme.startswith(STUDENT_TEXT) and "For instructors" not in readme and "old badges" not in readme
    assert "student copy of the labs" in readme and "(No Colab badges" in readme
    assert (dest / "data" / "blob.bin").read_bytes() == bytes(range(256))


def test_a_repository_address_goes_into_the_colab_cells_and_badges(source, tmp_path):
    dest, address = tmp_path / "published", "https://github.com/course/labs-student"
    publish.publish(dest, repository=address, root=source)
    cells = nbformat.read(str(dest / "notebooks" / "01_demo.ipynb"), as_version=4).cells
    assert cells[1].source == colab.cell_source(address)
    readme = (dest / "README.md").read_text()
    assert colab.colab_url("notebooks/01_demo.ipynb", address) in readme and "teacher/labs" not in readme
    assert (dest / "labhelpers" / "tools" / "colab.py").read_text() == f'REPOSITORY = "{address}"\n'


@pytest.mark.parametrize("planted, where, kind", [
    (f"    {SOLUTION_LINE}\n", "labhelpers/reference.py", "solution"),
    (f"{HIDDEN_LINE}\n", "data/notes.txt", "hidden"),
    (f"x = 1  # see {SOLUTION_BEGIN} in the key\n", "labhelpers/notes.py", "marker"),
    (f"{HIDDEN_BEGIN}\n", "data/dialogues/leak.jsonl", "marker")])
def test_a_leak_fails_the_command_and_removes_the_tree(source, tmp_path, planted, where, kind, capsys):
    _write(source / where, planted)
    dest = tmp_path / "published"
    with pytest.raises(publish.LeakError) as caught:
        publish.publish(dest, root=source)
    assert [(p[0], p[1]) for p in caught.value.problems] == [(where, kind)]
    assert not dest.exists()
    if kind == "solution":  # a reference in the package: published on request, and listed
        labs, references = publish.publish(dest, allow_references=True, root=source)
        assert references == [f"{where}: holds a line of a solution: {SOLUTION_LINE!r}"] and dest.is_dir()
    else:
        with pytest.raises(publish.LeakError):
            publish.publish(dest, allow_references=True, root=source)


def test_a_folder_that_holds_anything_is_replaced_only_with_force(source, tmp_path):
    dest = tmp_path / "published"
    _write(dest / "keep.txt", "mine")
    with pytest.raises(publish.GradingError, match="--force"):
        publish.publish(dest, root=source)
    assert (dest / "keep.txt").read_text() == "mine"
    publish.publish(dest, force=True, root=source)
    assert not (dest / "keep.txt").exists() and (dest / "notebooks" / "01_demo.ipynb").exists()


def test_control_flow_and_short_lines_are_not_secrets():
    nb = new_notebook(cells=[new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    try:\n        y = x\n"
                                           "    except ValueError:\n        y = 0\n    return compute_answer(y) * 3\n"
                                           "    ### END SOLUTION")])
    assert publish.secret_lines(nb) == {"solution": {"return compute_answer(y) * 3"}, "hidden": set()}


# Package modules that hold the code of an exercise's answer today (the exercise forbids calling them, but a
# student can read them). A new one fails this test; when one goes, take it off the list.
KNOWN_REFERENCES = {"labhelpers/benchmarks.py", "labhelpers/preferences.py"}


def test_publishing_this_repository(tmp_path):
    dest = tmp_path / "student-labs"
    proc = subprocess.run([sys.executable, "-m", "labhelpers.tools.publish", str(dest), "--allow-references"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = _files(dest)
    labs = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(f.split("/", 1)[1] for f in files if f.startswith("notebooks/")) == labs
    assert {"setup.sh", "requirements.txt", "pyproject.toml", "README.md", "labhelpers/tools/labs.py",
            "labhelpers/tools/torch_build.py"} <= files
    assert not {f for f in files if f.split("/")[0] in {"tests", "benchmarks", "student", "docs", ".ci", "drafts"}}
    assert "labhelpers/tools/grading.py" not in files and not any("/runs/" in f for f in files)
    referenced = {line.removeprefix("warning: ").split(":", 1)[0] for line in proc.stderr.splitlines()
                  if line.startswith("warning: ")}
    assert referenced <= KNOWN_REFERENCES, f"new solution code in the package: {referenced - KNOWN_REFERENCES}"
    secrets = {"solution": set(), "hidden": set()}
    for lab in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        for kind, lines in publish.secret_lines(nbformat.read(str(lab), as_version=4)).items():
            secrets[kind] |= lines
    assert sum(map(len, secrets.values())) > 50  # the scan has something to look for
    assert {p[0] for p in publish.leaks(dest, secrets)} == referenced
    imported = subprocess.run([sys.executable, "-c", "import labhelpers.tools.labs as l; print(l.ROOT)"],
                              capture_output=True, text=True, cwd=dest, timeout=300)
    assert imported.stdout.strip() == str(dest), imported.stderr
