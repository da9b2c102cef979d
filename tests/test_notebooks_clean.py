"""Every lab notebook (notebooks/NN_topic.ipynb) is committed clean and follows the lab conventions."""

import ast
import re
from collections import Counter
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
NAME = re.compile(r"\d\d_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb")
FORBIDDEN_CALLS = {"login", "input", "notebook_login"}  # a headless run cannot answer these

pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason=f"no lab notebooks yet ({NOTEBOOK_DIR}/NN_topic.ipynb)")
each_notebook = pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])


def read(path: Path):
    """The notebook at `path`, as nbformat v4."""
    return nbformat.read(str(path), as_version=4)


def code_cells(nb) -> list:
    """The notebook's code cells."""
    return [c for c in nb.cells if c.cell_type == "code"]


def tree(cell) -> ast.Module:
    """A code cell's syntax tree (IPython magics and shell escapes turned into plain Python first)."""
    return ast.parse(TransformerManager().transform_cell(cell.source))


def called_names(cell) -> set[str]:
    """Names of the functions a code cell calls: `f(...)` and `obj.f(...)` both give "f"."""
    names = set()
    for node in ast.walk(tree(cell)):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


@each_notebook
def test_no_outputs_or_execution_counts(path):
    dirty = [i for i, c in enumerate(read(path).cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} hold outputs or execution counts; "
                       f"run `python -m labhelpers.tools.labs strip`")


@each_notebook
def test_first_cell_is_a_markdown_title(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), \
        f'{path.name}: the first cell must be markdown starting with a "# " title'


@each_notebook
def test_one_parameters_cell_assigning_profile(path):
    tagged = [c for c in code_cells(read(path)) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected exactly one code cell tagged 'parameters', found {len(tagged)}"
    targets = {t.id for node in ast.walk(tree(tagged[0])) if isinstance(node, (ast.Assign, ast.AnnAssign))
               for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
               if isinstance(t, ast.Name)}
    assert "profile" in targets, f"{path.name}: the parameters cell must assign `profile`"


@each_notebook
def test_reports_its_environment(path):
    assert any("environment_summary" in called_names(c) for c in code_cells(read(path))), \
        f"{path.name}: no code cell calls environment_summary(...)"


@each_notebook
def test_never_waits_for_a_person(path):
    found = {name for c in code_cells(read(path)) for name in called_names(c) & FORBIDDEN_CALLS}
    assert not found, f"{path.name}: calls {sorted(found)}, which a headless run cannot answer"


def test_names_are_nn_topic_with_unique_numbers():
    bad = [p.name for p in NOTEBOOKS if not NAME.fullmatch(p.name)]
    assert not bad, f"notebook names must be NN_topic.ipynb (lower-case words joined by _): {bad}"
    repeated = {n: c for n, c in Counter(p.name[:2] for p in NOTEBOOKS).items() if c > 1}
    assert not repeated, f"notebook numbers used more than once: {sorted(repeated)}"
