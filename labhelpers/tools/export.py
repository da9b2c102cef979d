"""Export the lesson code the notebooks write into `labhelpers.lessons`, as d2l does with `#@save`.

A lab writes the mechanism it teaches in its own cells. When a later lab, a benchmark or a test reuses
that code, the cell's first line is `#@save`: this command copies every such cell, in notebook order,
into `labhelpers/lessons/<topic>.py` (the notebook's name without its number), adds the imports the
code needs (taken from the notebook's own import lines) and lists the module's names in
`labhelpers/lessons/__init__.py`, so `from labhelpers import <name>` finds them. The notebook stays the
one truth: edit it, then run the command; a test fails when the package is stale.

    python -m labhelpers.tools.export            # rewrite labhelpers/lessons/ from notebooks/
    python -m labhelpers.tools.export --check    # exit 1, naming the files, when labhelpers/lessons/ is stale

An exported cell holds definitions only (imports, functions, classes, constants), since the package runs
it at import time; anything else, or a name it uses that neither an exported cell nor a notebook import
defines, is refused with the cell and the name.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import sys
import symtable
from dataclasses import dataclass
from pathlib import Path

import nbformat

MARKER = "#@save"
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
LESSONS = ROOT / "labhelpers" / "lessons"
HEADER = "# Written by `python -m labhelpers.tools.export` from {source}: edit the notebook, then run it again.\n"
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                ast.AnnAssign)


class ExportError(ValueError):
    """A `#@save` cell that cannot be exported (not definitions only, or a name nothing defines)."""


@dataclass(frozen=True)
class Exported:
    """One notebook's exported module: its name, its source, and the public names it defines."""

    module: str
    source: str
    names: tuple[str, ...]


def module_name(notebook: Path) -> str:
    """`05_instruction_fine_tuning.ipynb` -> `instruction_fine_tuning`."""
    stem = notebook.stem
    head, _, rest = stem.partition("_")
    return rest if head.isdigit() and rest else stem


def is_exported(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(MARKER)


def _body(cell) -> str:
    """The cell's code without its marker line."""
    lines = cell.source.lstrip().split("\n")
    return "\n".join(lines[1:]).strip("\n") + "\n"


def _imports(nb) -> dict[str, str]:
    """name -> the import statement (one name each) that binds it in the notebook's non-exported cells."""
    bound: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or is_exported(cell):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue  # a cell with IPython magics: its imports, if any, are not ours to copy
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.asname or alias.name.split(".")[0]
                    bound[name] = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                for alias in node.names:
                    name = alias.asname or alias.name
                    bound[name] = f"from {node.module} import {alias.name}" + (
                        f" as {alias.asname}" if alias.asname else "")
    return bound


def _free_names(source: str) -> set[str]:
    """Names the code reads at module level or as globals of its functions, and never binds at module level."""
    top = symtable.symtable(source, "<exported>", "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    free: set[str] = set()
    stack = [top]
    while stack:
        table = stack.pop()
        for symbol in table.get_symbols():
            if not symbol.is_referenced():
                continue
            if table is top or symbol.is_global():
                free.add(symbol.get_name())
        stack.extend(table.get_children())
    return free - defined - set(dir(builtins))


def export_notebook(path: Path) -> Exported | None:
    """The module a notebook's `#@save` cells make, or None when it has none."""
    nb = nbformat.read(str(path), as_version=4)
    cells = [(i, c) for i, c in enumerate(nb.cells) if is_exported(c)]
    if not cells:
        return None
    parts, names = [], []
    for index, cell in cells:
        code = _body(cell)
        where = f"{path.name} cell {index}"
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            raise ExportError(f"{where}: a {MARKER} cell must be plain Python ({exc.msg}, line {exc.lineno})") from None
        for node in tree.body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            if not isinstance(node, _DEFINITIONS) and not docstring:
                raise ExportError(f"{where}, line {node.lineno}: a {MARKER} cell holds definitions only (imports, "
                                  f"def, class, constants); move `{ast.unparse(node)[:60]}` to a cell of its own")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names += [t.id for t in targets if isinstance(t, ast.Name)]
        parts.append(f"# {path.name}, cell {index}\n{code}")
    body = "\n\n".join(parts)
    imports = _imports(nb)
    needed = _free_names(body)
    missing = sorted(n for n in needed if n not in imports)
    if missing:
        raise ExportError(f"{path.name}: the {MARKER} cells use {', '.join(missing)}, which no {MARKER} cell defines "
                          f"and no import in the notebook binds; mark the cell that defines it {MARKER}")
    module = module_name(path)
    header_imports = sorted({imports[n] for n in needed}, key=lambda s: (not s.startswith("import "), s))
    title = next((c.source.split("\n")[0].lstrip("# ").strip() for c in nb.cells if c.cell_type == "markdown"), "")
    public = tuple(n for n in dict.fromkeys(names) if not n.startswith("_"))
    source = (HEADER.format(source=f"notebooks/{path.name}") + f'"""Lesson code of {title}."""\n\n'
              + "from __future__ import annotations\n\n"
              + ("\n".join(header_imports) + "\n\n" if header_imports else "")
              + f"__all__ = {list(public)!r}\n\n\n" + body)
    return Exported(module, source, public)


def exported_files(notebooks: list[Path]) -> dict[Path, str]:
    """Every file of labhelpers/lessons/ as the notebooks say it should be."""
    modules = [e for e in (export_notebook(p) for p in sorted(notebooks)) if e is not None]
    seen: dict[str, str] = {}
    for e in modules:
        for name in e.names:
            if name in seen:
                raise ExportError(f"`{name}` is exported by both {seen[name]} and {e.module}; give one another name")
            seen[name] = e.module
    files = {LESSONS / f"{e.module}.py": e.source for e in modules}
    lines = [HEADER.format(source="the notebooks' #@save cells"),
             '"""Lesson code written in the notebooks and exported for later labs, benchmarks and tests."""\n\n']
    every = []
    for e in modules:
        lines.append(f"from .{e.module} import {', '.join(e.names)}  # noqa: F401\n")
        every += e.names
    lines.append(f"\n__all__ = {every!r}\n")
    files[LESSONS / "__init__.py"] = "".join(lines)
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """The files whose content differs from what is on disk, and lesson modules no notebook makes any more."""
    out = [p for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if LESSONS.is_dir():
        out += [p for p in sorted(LESSONS.glob("*.py")) if p not in files]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labhelpers.tools.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when labhelpers/lessons/ is stale; write nothing")
    args = parser.parse_args(argv)
    try:
        files = exported_files(sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    changed = stale(files)
    if args.check:
        if changed:
            print("labhelpers/lessons/ is stale (" + ", ".join(p.name for p in changed) + "): run "
                  "`python -m labhelpers.tools.export`", file=sys.stderr)
            return 1
        return 0
    LESSONS.mkdir(exist_ok=True)
    for path in changed:
        if path in files:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(files[path], encoding="utf-8")
            tmp.replace(path)
        else:
            path.unlink()
        print(f"wrote {path.relative_to(ROOT)}" if path in files else f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
