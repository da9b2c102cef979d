"""Tests for labhelpers.tools.export: #@save cells become labhelpers.lessons, and the package is never stale."""

from __future__ import annotations

import nbformat
import pytest

from labhelpers.tools import export


def _notebook(tmp_path, *cells, name="05_demo_lesson.ipynb"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab 05: a demo")] + [
        nbformat.v4.new_code_cell(c) for c in cells]
    path = tmp_path / name
    nbformat.write(nb, str(path))
    return path


def test_lessons_package_is_fresh():
    """labhelpers/lessons/ is what the notebooks' #@save cells say: edit a notebook, run the export."""
    files = export.exported_files(sorted(export.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    assert export.stale(files) == [], "run `python -m labhelpers.tools.export`"


def test_export_copies_marked_cells_with_the_imports_they_use(tmp_path):
    path = _notebook(tmp_path,
                     "import math\nimport numpy as np\nfrom collections import Counter\nx = 3",
                     "#@save\ndef area(r):\n    \"\"\"A circle's area.\"\"\"\n    return math.pi * r * r",
                     "print(area(2))",
                     "#@save\nSCALE = 2.0\n\ndef scaled(r):\n    return SCALE * area(r)\n")
    out = export.export_notebook(path)
    assert out.module == "demo_lesson"
    assert out.names == ("area", "SCALE", "scaled")
    assert "import math\n" in out.source and "numpy" not in out.source and "Counter" not in out.source
    assert "print(area(2))" not in out.source
    namespace: dict = {}
    exec(compile(out.source, "demo", "exec"), namespace)
    assert namespace["scaled"](1.0) == pytest.approx(2 * 3.141592653589793)


def test_export_refuses_a_name_nothing_defines(tmp_path):
    path = _notebook(tmp_path, "y = 2", "#@save\ndef f():\n    return y + helper()")
    with pytest.raises(export.ExportError, match="helper, y"):
        export.export_notebook(path)


def test_export_refuses_statements_that_would_run_at_import(tmp_path):
    path = _notebook(tmp_path, "#@save\ndef f():\n    return 1\n\nprint(f())")
    with pytest.raises(export.ExportError, match=r"cell 1, line 4: a #@save cell holds definitions only"):
        export.export_notebook(path)


def test_notebooks_without_marked_cells_export_nothing(tmp_path):
    assert export.export_notebook(_notebook(tmp_path, "#save is not the marker\nx = 1")) is None


def test_a_name_exported_twice_is_refused(tmp_path):
    one = _notebook(tmp_path, "#@save\ndef f():\n    return 1", name="01_one.ipynb")
    two = _notebook(tmp_path, "#@save\ndef f():\n    return 2", name="02_two.ipynb")
    with pytest.raises(export.ExportError, match="`f` is exported by both one and two"):
        export.exported_files([one, two])
