"""A student-only tree, so that solutions stay private: `python -m labhelpers.tools.publish DEST [--repository URL]`.

DEST gets what a student needs and nothing an instructor keeps:

- notebooks/: the student copy of every lab (solutions stubbed, hidden checks removed, outputs cleared),
  made now from the instructor notebooks in notebooks/ exactly as `grading release` makes them;
- labhelpers/ without the grader (tools/grading.py and this file), data/, the requirements, environment.yml,
  pyproject.toml, setup.sh, the licence, and the README's student part (up to STUDENT_PART_END);
- no instructor notebooks, student/, tests/, benchmarks/, docs/, run folders or caches.

Then every file written is scanned for the grading markers and for lines of the solutions and hidden checks
(those that appear nowhere else in the instructor notebook); a hit removes DEST again and fails the command,
naming the file.
A line of a solution inside a labhelpers module (a reference implementation that the exercise forbids calling)
fails it too, unless --allow-references, which publishes and lists them.
Make DEST a git repository and push it where students get the labs. With --repository (that repository's
GitHub address) the labs' Colab cells clone it, and the README's Colab badges open its notebooks.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from . import colab
from .grading import HIDDEN_BEGIN, HIDDEN_END, SOLUTION_BEGIN, SOLUTION_END, GradingError, _read, release_notebook
from .labs import ROOT, lab_notebooks, write_notebook

STUDENT_PART_END = "<!-- end of the student part: `python -m labhelpers.tools.publish` leaves out what follows -->"
TOP_FILES = ("README.md", "LICENSE", "setup.sh", "pyproject.toml", "requirements.txt", "requirements-browser.txt",
             "environment.yml", ".gitignore")
FOLDERS = ("labhelpers", "data")
LEFT_OUT = {Path("labhelpers/tools/grading.py"), Path("labhelpers/tools/publish.py")}
SKIPPED_DIRS = {"__pycache__", "runs", "outputs", ".ipynb_checkpoints"}
MARKERS = (SOLUTION_BEGIN, SOLUTION_END, HIDDEN_BEGIN, HIDDEN_END)
MIN_SECRET_CHARS = 12  # shorter lines ('return x', 'pass') say nothing about a solution
CONTROL_FLOW = re.compile(r"(try|else|finally|except( [\w.]+( as \w+)?)?):")


def _blocks(source: str) -> dict[str, list[str]]:
    """The stripped lines inside a cell's solution blocks and hidden-check blocks: {'solution': [...], 'hidden': [...]}."""
    kind, found = None, {"solution": [], "hidden": []}
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped.startswith(SOLUTION_BEGIN):
            kind = "solution"
        elif stripped.startswith(HIDDEN_BEGIN):
            kind = "hidden"
        elif stripped.startswith((SOLUTION_END, HIDDEN_END)):
            kind = None
        elif kind:
            found[kind].append(stripped)
    return found


def _telling(line: str) -> bool:
    """A line long enough, and more than control flow, to give an answer away."""
    return len(line) >= MIN_SECRET_CHARS and not line.startswith("#") and not CONTROL_FLOW.fullmatch(line)


def secret_lines(nb) -> dict[str, set[str]]:
    """Lines of an instructor notebook's solutions and hidden checks that appear nowhere else in it, by kind."""
    outside = {line.strip() for cell in release_notebook(nb).cells for line in cell.source.split("\n")}
    found: dict[str, set[str]] = {"solution": set(), "hidden": set()}
    for cell in nb.cells:
        if cell.cell_type == "code":
            for kind, lines in _blocks(cell.source).items():
                found[kind] |= {line for line in lines if line not in outside and _telling(line)}
    return found


def leaks(dest: Path, secrets: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(file relative to dest, what, detail) for each grading marker or secret line found in the files under `dest`."""
    problems = []
    for path in sorted(p for p in Path(dest).rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary data: no code in it
        rel = path.relative_to(dest).as_posix()
        problems += [(rel, "marker", m) for m in MARKERS if m in text]
        lines = {line.strip() for line in text.replace("\\n", "\n").split("\n")}  # notebooks store lines escaped
        for kind, secret in secrets.items():
            problems += [(rel, kind, line) for line in sorted(secret & lines)]
    return problems


def describe(problem: tuple[str, str, str]) -> str:
    rel, kind, detail = problem
    what = {"marker": "the grading marker", "solution": "a line of a solution", "hidden": "a line of a hidden check"}
    return f"{rel}: holds {what[kind]}: {detail[:90]!r}"


def is_package_reference(problem: tuple[str, str, str]) -> bool:
    """A solution line in a module of the package: a reference implementation the exercise forbids calling."""
    rel, kind, _ = problem
    return kind == "solution" and rel.startswith("labhelpers/") and rel.endswith(".py")


class LeakError(GradingError):
    """The written tree gave something away; it has been removed again."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        hint = (" (package modules only: --allow-references publishes anyway and lists them)"
                if all(is_package_reference(p) for p in problems) else "")
        super().__init__(f"the student tree would give away solutions or hidden checks in {len(problems)} place(s), "
                         f"so nothing was published{hint}; first: {describe(problems[0])}")


def student_readme(text: str, labs: list[Path], repository: str | None) -> str:
    """The README's student part, with Colab badges for the published notebooks (or none without a repository)."""
    if STUDENT_PART_END not in text:
        raise GradingError(f"README.md has no line {STUDENT_PART_END!r} where the student part ends")
    text = text.split(STUDENT_PART_END, 1)[0].rstrip() + "\n"
    if colab.README_START in text and colab.README_END in text:
        head, rest = text.split(colab.README_START, 1)
        tail = rest.split(colab.README_END, 1)[1]
        if repository:
            rows = [f"| {nb.stem[:2]} | [![Open In Colab]({colab.BADGE})]"
                    f"({colab.colab_url(f'notebooks/{nb.name}', repository)}) |" for nb in labs]
            table = "\n".join(["| lab | open in Colab |", "|---|---|", *rows])
        else:
            table = "(No Colab badges: this copy was published without its repository's address.)"
        text = head + table + tail
    return text + ("\nThis is the student copy of the labs: the exercises are yours to fill in, and `check(\"q1\")` "
                   "in a lab says whether an answer passes. A lab run (`bash setup.sh`) stops at the first exercise "
                   "not done yet; `bash setup.sh --install-only` installs without running the labs.\n")


def publish(dest: Path, repository: str | None = None, force: bool = False, allow_references: bool = False,
            root: Path = ROOT) -> tuple[list[Path], list[str]]:
    """Write the student-only tree into `dest` (refused if it exists and is not empty, unless force).

    Returns the labs published and, with allow_references, the package modules found holding lines of a solution
    (reference implementations that the exercises forbid calling, but that a student can read). Without it they
    fail the command like any other leak.
    """
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise GradingError(f"{dest} exists and is not empty; choose a new folder or pass --force to replace it")
        shutil.rmtree(dest)
    labs = lab_notebooks(root / "notebooks")
    if not labs:
        raise GradingError(f"no labs in {root / 'notebooks'}")
    secrets: dict[str, set[str]] = {"solution": set(), "hidden": set()}
    (dest / "notebooks").mkdir(parents=True)
    for path in labs:
        nb = _read(path)
        for kind, lines in secret_lines(nb).items():
            secrets[kind] |= lines
        student = release_notebook(nb, path.name)
        if repository:
            for cell in student.cells:
                if colab.CELL_TAG in cell.get("metadata", {}).get("tags", []):
                    cell.source = colab.cell_source(repository)
        target = dest / "notebooks" / path.name
        target.touch()
        write_notebook(student, target)
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            if path.is_dir() or rel in LEFT_OUT or path.suffix == ".pyc" or SKIPPED_DIRS & set(rel.parts) \
                    or any(part.endswith(".egg-info") for part in rel.parts):
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
    for name in TOP_FILES:
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    (dest / "README.md").write_text(student_readme((root / "README.md").read_text(encoding="utf-8"), labs, repository),
                                    encoding="utf-8")
    if repository:
        colab_file = dest / "labhelpers" / "tools" / "colab.py"
        colab_file.write_text(re.sub(r'^REPOSITORY = ".*"$', f'REPOSITORY = "{repository}"',
                                     colab_file.read_text(encoding="utf-8"), count=1, flags=re.M), encoding="utf-8")
    problems = leaks(dest, secrets)
    references = [p for p in problems if is_package_reference(p)] if allow_references else []
    problems = [p for p in problems if p not in references]
    if problems:
        shutil.rmtree(dest)
        raise LeakError(problems)
    return labs, [describe(p) for p in references]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m labhelpers.tools.publish", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="folder for the student-only tree (new or empty)")
    parser.add_argument("--repository", help="GitHub address students get it from (Colab cells and badges)")
    parser.add_argument("--force", action="store_true", help="replace DEST if it holds anything")
    parser.add_argument("--allow-references", action="store_true",
                        help="publish even when a labhelpers module holds lines of a solution (a reference the "
                             "exercise forbids calling, readable all the same), and list them")
    args = parser.parse_args(argv)
    try:
        labs, references = publish(args.dest, args.repository, args.force, args.allow_references)
    except (GradingError, OSError) as exc:
        for problem in getattr(exc, "problems", []):
            print(describe(problem), file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in references:
        print(f"warning: {line}", file=sys.stderr)
    print(f"published {len(labs)} student labs to {args.dest}: no instructor notebooks, no hidden checks, no solutions"
          + (f" outside the {len(references)} package line(s) listed" if references else "")
          + " (scanned). Next: make it a git repository and push it where students get the labs.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
