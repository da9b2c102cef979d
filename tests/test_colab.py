"""labhelpers.tools.colab: every lab's Colab install cell, what it does on Colab and elsewhere, and the README's badges."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from labhelpers.tools import colab
from labhelpers.models import EMBEDDED_PIP

REPO = Path(__file__).resolve().parent.parent
LABS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("folder", ["notebooks", "student"])
def test_every_lab_has_the_current_install_cell_before_its_other_code(folder):
    for lab in sorted((REPO / folder).glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(str(lab), as_version=4).cells
        tagged = [i for i, c in enumerate(cells) if colab.CELL_TAG in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{lab.name}: {len(tagged)} cells tagged {colab.CELL_TAG}; run `python -m labhelpers.tools.colab`"
        first_code = next(i for i, c in enumerate(cells) if c.cell_type == "code")
        assert tagged == [first_code], f"{lab.name}: the install cell must be the first code cell"
        assert cells[first_code].source == colab.cell_source(), f"{lab.name}: stale; run `python -m labhelpers.tools.colab`"
        assert "parameters" in cells[first_code + 1].metadata.get("tags", []), lab.name


def test_readme_badges_open_every_lab_and_its_student_copy_from_the_repository():
    readme = (REPO / "README.md").read_text()
    assert colab.badge_table(LABS) in readme, "README's badges are stale: run `python -m labhelpers.tools.colab`"
    assert colab.main(["--check"]) == 0
    prefix = f"https://colab.research.google.com/github/genai-llm-labs/llm-labs/blob/{colab.BRANCH}/"
    assert colab.colab_url("notebooks/x.ipynb", "https://github.com/genai-llm-labs/llm-labs.git") == prefix + "notebooks/x.ipynb"
    for lab in LABS:
        for folder in ("notebooks", "student"):
            assert colab.colab_url(f"{folder}/{lab.name}") in readme
            assert (REPO / folder / lab.name).exists()


def _run_cell(monkeypatch, tmp_path, on_colab: bool, cloned: bool = False):
    """Execute the install cell with subprocess.run, os.chdir and the clone folder faked; return what it did."""
    calls, moves = [], []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append((list(args), kw)))
    monkeypatch.setattr(os, "chdir", moves.append)
    clone = tmp_path / "llm-labs"
    if cloned:
        clone.mkdir()
    monkeypatch.setattr(colab, "CLONE_DIR", str(clone))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    path_before = list(sys.path)
    exec(compile(colab.cell_source(), "<colab cell>", "exec"), {})
    added = [p for p in sys.path if p not in path_before]
    monkeypatch.setattr(sys, "path", path_before)
    return calls, moves, added, clone


def test_install_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    calls, moves, added, _ = _run_cell(monkeypatch, tmp_path, on_colab=False)
    assert calls == [] and moves == [] and added == []


def test_install_cell_on_colab_clones_installs_and_moves_into_the_labs(monkeypatch, tmp_path):
    calls, moves, added, clone = _run_cell(monkeypatch, tmp_path, on_colab=True)
    commands = [args for args, _ in calls]
    assert commands[0] == ["git", "clone", "--depth", "1", "--branch", colab.BRANCH, colab.REPOSITORY, str(clone)]
    assert commands[1] == [sys.executable, "-m", "pip", "install", "-q", "-e", str(clone)]
    assert commands[2] == [sys.executable, "-m", "pip", "install", "-q"] + EMBEDDED_PIP.split()[2:]
    assert all(kw.get("check") is True for _, kw in calls), "a failed clone or install must stop the cell"
    assert added == [str(clone)] and moves == [os.path.join(str(clone), "notebooks")]
    # Run again in the same session (the clone is there): no second clone or install.
    calls, moves, added, clone = _run_cell(monkeypatch, tmp_path, on_colab=True, cloned=True)
    assert calls == [] and added == [str(clone)] and moves == [os.path.join(str(clone), "notebooks")]


def test_sync_inserts_the_cell_once_and_readme_without_markers_is_refused(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Lab 99"),
                                         nbformat.v4.new_code_cell("profile = None", metadata={"tags": ["parameters"]})])
    path = tmp_path / "99_lab.ipynb"
    nbformat.write(nb, str(path))
    assert colab.sync_notebook(path, write=False) is True
    assert nbformat.read(str(path), as_version=4).cells[1].source == "profile = None"  # check only: unchanged
    assert colab.sync_notebook(path) is True
    assert colab.sync_notebook(path) is False  # already current
    cells = nbformat.read(str(path), as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "code", "code"] and cells[1].source == colab.cell_source()
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="badge markers"):
        colab.sync_readme(readme, [path])
    readme.write_text(f"top\n{colab.README_START}\nold\n{colab.README_END}\nbottom\n")
    assert colab.sync_readme(readme, [path]) is True and colab.sync_readme(readme, [path]) is False
    text = readme.read_text()
    assert text.startswith("top\n") and text.endswith("\nbottom\n") and "old" not in text and "99_lab" in text
