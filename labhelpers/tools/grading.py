"""Student copies and batch autograding, in the style of nbgrader and otter-grader, with no server.

    python -m labhelpers.tools.grading release notebooks/ student/        # student copies (--check: fail if stale)
    python -m labhelpers.tools.grading validate notebooks/                # solutions pass their checks, stubs fail them
    python -m labhelpers.tools.grading autograde notebooks/01_in_context_learning.ipynb submissions/ --out grades/

How to add an exercise to a lab (the instructor notebook in notebooks/ is the one truth):

1. A markdown cell says what to do and what the hidden checks will also look at.
2. A solution cell; release replaces everything between the markers by `raise NotImplementedError()`:

       def tokens_per_word(text):
           ### BEGIN SOLUTION
           ...
           ### END SOLUTION

3. A check cell right after it: one function decorated with `@exercise(id, points=..., hint=...)` that
   asserts, with messages written for the student; hidden checks sit between markers that release
   removes; then `check(id)`, which prints a pass/fail line with the hint (and raises on a failure, so a
   broken solution fails CI):

       @exercise("q1", points=1, hint="Count tokens with add_special_tokens=False, words with split().")
       def check_q1():
           from labhelpers.prompts import count_tokens   # helpers imported here, not taken from the notebook
           assert isinstance(tokens_per_word("a b"), float), "tokens_per_word should return a float"
           ### BEGIN HIDDEN TESTS
           assert ...
           ### END HIDDEN TESTS

       check("q1")

   An exercise earns its points when every check, visible and hidden, passes (all or nothing). Keep
   checks fast (under a second) and deterministic; write hidden checks on inputs the student has not seen.
4. `python -m labhelpers.tools.grading release notebooks/ student/` and commit both copies; `validate`.
   Later lab cells must not depend on the exercise's answer, so the student copy still runs.

Autograding. Each submission runs in its own kernel process, in a fresh working folder holding a copy
of the notebook (the submitted file is only read, and its hash is checked after grading), under limits:
a wall-clock limit per notebook, a limit per cell (then the cell is interrupted and the next one runs),
a memory limit (Linux: RLIMIT_AS on the kernel, so an allocation past it raises MemoryError; every
system, macOS included where RLIMIT_AS is not enforced: the kernel is killed when its resident memory
passes the limit; CUDA reserves far more address space than it uses, so on a GPU pass
--memory-mb 0, which switches both off), a limit on the bytes of output (past it the kernel is stopped), a 256 MB limit per
written file (RLIMIT_FSIZE), and fresh IPython/Jupyter/matplotlib config folders. Everything it did
before a stop still counts; exercises after it earn zero with the reason. Submissions run in parallel
(default 2 workers), each under a worker process the batch outlives.

How a submission is graded, and the threat model. Submissions are untrusted code, and a kernel runs
them with the grader's user rights. The grader never trusts the submission's own checks or `check`:
right after the student's cell that holds each exercise's check (or at the end when it is gone), it
runs a cell of its own that defines the instructor's checks, visible and hidden, taken from the
instructor notebook, under a random name, and prints its result on one line led by a random token made
for that cell in the grading process. So redefining `check`, editing check cells or printing a fake
"passed" earns nothing; edited check cells and suspicious code (redefining `check`, `sys.settrace`,
IPython input transformers or event hooks, `ctypes`, `os._exit`...) are reported as flags. Before the
checks run, that cell also looks for hooks that could read its token or forge its result (a trace or
profile function, input or AST transformers and event callbacks defined in the notebook, a patched
`run_cell`, builtins replaced since the kernel started); if it finds one, the exercise earns zero
with the reason. What it does NOT stop: a student who knows Python's internals runs arbitrary code in
the same interpreter before the grader's cell, and can hide a hook from these probes (for example by
faking `__module__`, patching `type`, or writing through `ctypes`), read the token, and forge a
result. The probes raise the bar, they are not a proof; flags send a submission to a person. Nor is
the working folder a file-system jail: the kernel can read and write anything the grader's user can
(other submissions, the model cache, this package). For untrusted classes, run autograde as a user
with no rights outside a scratch folder, or in a container with the repository read-only. Secrets are
removed from the kernel's environment (variables named like *TOKEN*, *KEY*, *SECRET*, *PASSWORD*).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import csv
import dataclasses
import hashlib
import hmac
import html
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
LAB_PATTERN = "[0-9][0-9]_*.ipynb"

RELEASE_NOTE = "student copy generated by `python -m labhelpers.tools.grading release`; do not edit by hand"


# --------------------------------------------------------------------------------------------------
# Instructor notebooks: exercises, markers, student copies
# --------------------------------------------------------------------------------------------------

class GradingError(ValueError):
    """An instructor notebook that cannot be released or graded (bad markers, bad @exercise): exit status 2."""


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise of an instructor notebook: its points and the source of its checks (hidden ones included)."""

    id: str
    points: float
    hint: str
    cell_id: str | None
    cell_index: int
    function: str
    source: str
    solution: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()


def _python(source: str) -> str:
    """A cell's source as plain Python (IPython magics and shell escapes transformed)."""
    from IPython.core.inputtransformer2 import TransformerManager
    return TransformerManager().transform_cell(source)


def _literal(node: ast.AST, what: str, where: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise GradingError(f"{where}: {what} must be a literal (a string or a number)") from None


def _exercise_decorator(node: ast.FunctionDef) -> ast.Call | None:
    for deco in node.decorator_list:
        func = deco.func if isinstance(deco, ast.Call) else None
        if func is not None and (getattr(func, "id", None) == "exercise" or getattr(func, "attr", None) == "exercise"):
            return deco
    return None


def exercises_in(nb, name: str = "notebook") -> list[Exercise]:
    """The exercises an instructor notebook declares with @exercise, in notebook order."""
    found: list[Exercise] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "exercise" not in cell.source:
            continue
        code = _python(cell.source)
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            raise GradingError(f"{name} cell {index}: not valid Python ({exc.msg}, line {exc.lineno})") from None
        for node in tree.body:
            deco = _exercise_decorator(node) if isinstance(node, ast.FunctionDef) else None
            if deco is None:
                continue
            where = f"{name} cell {index}"
            if not deco.args:
                raise GradingError(f"{where}: @exercise needs the exercise id first, e.g. @exercise('q1', points=2)")
            kw = {k.arg: _literal(k.value, k.arg, where) for k in deco.keywords}
            ex_id = _literal(deco.args[0], "the exercise id", where)
            points = kw.get("points", _literal(deco.args[1], "points", where) if len(deco.args) > 1 else None)
            if not isinstance(ex_id, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", ex_id):
                raise GradingError(f"{where}: exercise id {ex_id!r} must be a short name such as 'q1'")
            if not isinstance(points, (int, float)) or points <= 0:
                raise GradingError(f"{where}: exercise {ex_id!r} needs points=<a positive number>")
            if any(e.id == ex_id for e in found):
                raise GradingError(f"{where}: exercise id {ex_id!r} is declared twice")
            lines = code.splitlines()[node.lineno - 1:node.end_lineno]  # the def without its decorators
            solution, forbid = (tuple([v] if isinstance(v, str) else v) for v in (kw.get("solution", ()),
                                                                                  kw.get("forbid", ())))
            if forbid and not solution:
                raise GradingError(f"{where}: exercise {ex_id!r} has forbid= without solution=<the function's name>")
            found.append(Exercise(ex_id, float(points), str(kw.get("hint", "")), cell.get("id"), index,
                                  node.name, "\n".join(lines) + "\n", solution, forbid))
    return found


def _replace_blocks(source: str, begin: str, end: str, replace: Callable[[str], list[str]], where: str) -> str:
    """`source` with each begin..end block (marker lines included) replaced by replace(indent)."""
    out, indent = [], None
    for number, line in enumerate(source.split("\n"), 1):
        stripped = line.strip()
        if stripped.startswith(begin):
            if indent is not None:
                raise GradingError(f"{where}, line {number}: {begin!r} again before {end!r}")
            indent = line[:len(line) - len(line.lstrip())]
        elif stripped.startswith(end):
            if indent is None:
                raise GradingError(f"{where}, line {number}: {end!r} without {begin!r}")
            out += replace(indent)
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise GradingError(f"{where}: {begin!r} is never closed by {end!r}")
    return "\n".join(out)


def release_notebook(nb, name: str = "notebook"):
    """The student copy of an instructor notebook: solutions stubbed, hidden checks removed, outputs cleared."""
    import nbformat
    student = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy
    cells = []
    for index, cell in enumerate(student.cells):
        where = f"{name} cell {index}"
        if cell.cell_type == "code":
            source = _replace_blocks(cell.source, SOLUTION_BEGIN, SOLUTION_END,
                                     lambda indent: [indent + line for line in STUB], where)
            source = _replace_blocks(source, HIDDEN_BEGIN, HIDDEN_END, lambda indent: [], where)
            if source != cell.source and not source.strip():
                continue  # a cell that held only hidden checks
            try:
                compile(_python(source), where, "exec")
            except SyntaxError as exc:
                raise GradingError(f"{where}: the student copy is not valid Python ({exc.msg}, line {exc.lineno});"
                                   " keep at least one visible statement in every block") from None
            cell.source, cell.outputs, cell.execution_count = source, [], None
        elif SOLUTION_BEGIN in cell.source or HIDDEN_BEGIN in cell.source:
            raise GradingError(f"{where}: grading markers only work in code cells")
        cell.metadata.pop("execution", None)
        cells.append(cell)
    student.cells = cells
    student.metadata["labhelpers_grading"] = {"release_of": name, "note": RELEASE_NOTE}
    return student


def _notebook_text(nb) -> str:
    import nbformat
    return nbformat.writes(nb) + "\n"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: Path):
    import nbformat
    return nbformat.reads(Path(path).read_text(encoding="utf-8"), as_version=4)


def _instructor_notebooks(paths: list[Path]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(p.glob(LAB_PATTERN))
        elif p.is_file() and p.suffix == ".ipynb":
            found.append(p)
        else:
            raise GradingError(f"no such notebook or folder: {p}")
    return found


def release(sources: list[Path], dest: Path, check_only: bool = False) -> list[str]:
    """Write the student copy of every source notebook that has exercises into `dest`.

    Returns the problems found: with check_only, copies that are missing, stale or unexpected in `dest`.
    """
    problems, expected = [], set()
    for path in _instructor_notebooks(sources):
        nb = _read(path)
        if not exercises_in(nb, path.name):
            print(f"skipped {path.name}: no exercises")
            continue
        text = _notebook_text(release_notebook(nb, path.name))
        target = Path(dest) / path.name
        expected.add(path.name)
        if check_only:
            if not target.is_file():
                problems.append(f"missing: {target}")
            elif target.read_text(encoding="utf-8") != text:
                problems.append(f"stale (differs from what release makes now): {target}")
        else:
            _write_atomic(target, text.encode("utf-8"))
            print(f"released {path.name} -> {target} ({len(exercises_in(nb, path.name))} exercises)")
    if check_only and Path(dest).is_dir():
        problems += [f"unexpected (no instructor notebook with exercises): {p}"
                     for p in sorted(Path(dest).glob("*.ipynb")) if p.name not in expected]
    return problems


# --------------------------------------------------------------------------------------------------
# Grading one submission: the plan (parent), the sandboxed run (worker process)
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Limits:
    """What one submission may use. Zero or None switches a limit off."""

    notebook_s: float = 600.0
    cell_s: float = 120.0
    memory_mb: int = 4096
    output_mb: float = 10.0
    file_mb: int = 256
    startup_s: float = 120.0

    def describe(self) -> str:
        return (f"{self.notebook_s:g} s per notebook, {self.cell_s:g} s per cell, {self.memory_mb} MB memory, "
                f"{self.output_mb:g} MB of output, {self.file_mb} MB per written file")


_PROBE_NAMES = ("print", "len", "isinstance", "issubclass", "type", "abs", "round", "sum", "min", "max", "all",
                "any", "float", "int", "str", "repr", "list", "dict", "tuple", "set", "sorted", "range", "zip",
                "getattr", "hasattr", "exec", "compile", "__import__", "AssertionError", "Exception",
                "BaseException", "NotImplementedError", "KeyboardInterrupt")

# Runs in the kernel, first before any student cell (the baseline), then in every grading cell.
_PROBE = '''
def _probe_{nonce}():
    import builtins, sys
    from IPython import get_ipython
    ip = get_ipython()
    def mine(obj):
        fn = getattr(obj, "__func__", obj)
        code = getattr(fn, "__code__", None) or getattr(getattr(type(obj), "__call__", None), "__code__", None)
        name = getattr(code, "co_filename", "")
        return getattr(fn, "__module__", None) == "__main__" or "ipykernel_" in name or name.startswith("<")
    hooks = list(ip.input_transformers_cleanup) + list(ip.input_transformers_post) + list(ip.ast_transformers)
    hooks += [cb for cbs in ip.events.callbacks.values() for cb in cbs]
    user_check = ip.user_ns.get("check")
    return {{"trace": sys.gettrace() is not None, "profile": sys.getprofile() is not None,
            "builtins": sorted(n for n in {names!r} if not (type(getattr(builtins, n, None)).__name__ in
                               ("builtin_function_or_method", "type") and getattr(getattr(builtins, n, None),
                               "__name__", None) == n)),
            "hooks": sum(1 for h in hooks if mine(h)),
            "shell": sorted(n for n in ("run_cell", "run_cell_async", "transform_cell", "run_code",
                                        "run_ast_nodes", "should_run_async") if n in vars(ip)),
            "check": user_check is None or getattr(getattr(user_check, "__code__", None), "co_filename", "")
                     .replace("\\\\", "/").endswith("labhelpers/exercises.py")}}
'''

_BASELINE_CELL = _PROBE + '''
import sys as _sys_{nonce}
_sys_{nonce}.stdout.write("\\n{token} " + __import__("json").dumps({{"probe": _probe_{nonce}()}}) + "\\n")
_sys_{nonce}.stdout.flush()
del _probe_{nonce}, _sys_{nonce}
'''

_GRADING_CELL = _PROBE + '''
def _grade_{nonce}():
    import json, sys, time, traceback
    from IPython import get_ipython
    result = {{"id": {ex_id!r}, "probe": _probe_{nonce}()}}
    namespace = dict(get_ipython().user_ns)
    namespace["__name__"] = "__grader__"
    start = time.perf_counter()
    try:
        __import__("linecache").cache["<checks {ex_id}>"] = (0, None, {source!r}.splitlines(True), "<checks {ex_id}>")
        exec(compile({source!r}, "<checks {ex_id}>", "exec"), namespace)
        for name in {solution!r}:
            code, used = getattr(getattr(namespace.get(name), "__func__", namespace.get(name)), "__code__", None), set()
            stack = [code] if code is not None else []
            while stack:
                current = stack.pop()
                used.update(current.co_names)
                stack.extend(c for c in current.co_consts if type(c) is type(code))
            if used & set({forbid!r}):
                raise AssertionError("`%s` uses %s, the code this exercise asks you to write: write the computation"
                                     " yourself" % (name, ", ".join(sorted(used & set({forbid!r})))))
        namespace[{function!r}]()
        result.update(status="passed", message="")
    except NotImplementedError:
        result.update(status="not done", message="not done: its solution still raises NotImplementedError")
    except AssertionError as exc:
        text = str(exc).strip()
        if not text:
            frames = traceback.extract_tb(exc.__traceback__)
            text = "`%s` is false" % frames[-1].line if frames and frames[-1].line else "a check failed"
        result.update(status="failed", message=text)
    except BaseException as exc:
        result.update(status="error", message="%s: %s" % (type(exc).__name__, exc))
    result["seconds"] = round(time.perf_counter() - start, 3)
    sys.stdout.write("\\n{token} " + json.dumps(result, default=str) + "\\n")
    sys.stdout.flush()
try:
    _grade_{nonce}()
finally:
    del _grade_{nonce}, _probe_{nonce}
'''


def _injected(template: str, **values) -> tuple[str, str]:
    """A grader cell's source and its token, with names and token fresh from this process's CSPRNG."""
    token = "LABS-GRADE-" + secrets.token_hex(16)
    return template.format(nonce=secrets.token_hex(8), token=token, names=_PROBE_NAMES, **values), token


def _anchor(cells: list, ex: Exercise) -> int | None:
    """Index of the submission cell after which exercise `ex` is graded: its check cell, by id, else by content."""
    for i, cell in enumerate(cells):
        if ex.cell_id and cell.get("id") == ex.cell_id and cell.get("cell_type") == "code":
            return i
    call = re.compile(r"""check\(\s*['"]%s['"]\s*\)""" % re.escape(ex.id))
    for i in range(len(cells) - 1, -1, -1):
        if cells[i].get("cell_type") == "code" and call.search(cells[i].get("source", "")):
            return i
    return None


def _edited_check_cells(cells: list, released, exercises: list[Exercise]) -> list[str]:
    """Flags for check cells of the released copy that the submission edited or removed."""
    flags, by_id = [], {c.get("id"): c for c in cells if c.get("id")}
    for ex in exercises:
        original = next((c for c in released.cells if c.get("id") == ex.cell_id), None)
        if original is None:
            continue
        mine = by_id.get(ex.cell_id)
        if mine is None:
            flags.append(f"check cell of {ex.id} removed")
        elif mine.get("source", "").strip() != original.source.strip():
            flags.append(f"check cell of {ex.id} edited")
    return flags


_SUSPICIOUS_CALLS = {"settrace": "sys.settrace", "setprofile": "sys.setprofile", "addaudithook": "sys.addaudithook",
                     "_exit": "os._exit", "kill": "os.kill", "killpg": "os.killpg", "register": "event registration",
                     "rmtree": "shutil.rmtree", "get_objects": "gc.get_objects", "setrlimit": "resource.setrlimit",
                     "signal": "signal handlers", "exec": "exec", "eval": "eval"}
_SUSPICIOUS_NAMES = {"builtins", "__builtins__", "ctypes", "input_transformers_cleanup", "input_transformers_post",
                     "ast_transformers", "_REGISTRY", "gc"}
_GUARDED_MODULES = {"sys", "os", "builtins", "labhelpers", "grading", "IPython", "json", "traceback"}
_GRADING_NAMES = {"check", "exercise", "CheckFailed"}


def scan_source(cells: list) -> list[str]:
    """Flags for code that redefines the checking machinery or reaches into the interpreter (read, never run)."""
    flags = set()
    for index, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        try:
            tree = ast.parse(_python(cell.get("source", "")))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in {"check", "exercise"}:
                flags.add(f"redefines `{node.name}` (cell {index})")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id in {"check", "exercise"}:
                flags.add(f"assigns `{node.id}` (cell {index})")
            elif isinstance(node, ast.alias) and (node.asname or node.name) in {"check", "exercise"} \
                    and node.name not in {"check", "exercise"}:
                flags.add(f"imports something else as `{node.asname}` (cell {index})")
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in _SUSPICIOUS_CALLS:
                    flags.add(f"calls {_SUSPICIOUS_CALLS[name]} (cell {index})")
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                    and ast.unparse(node).split(".")[0] in _GUARDED_MODULES:
                flags.add(f"assigns {ast.unparse(node)} (cell {index})")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("grading") \
                    and any(a.name not in _GRADING_NAMES for a in node.names):
                flags.add(f"imports grading internals (cell {index})")
            elif isinstance(node, (ast.Name, ast.Attribute, ast.Import, ast.ImportFrom)):
                text = ast.unparse(node) if not isinstance(node, (ast.Import, ast.ImportFrom)) else \
                    " ".join([getattr(node, "module", "") or ""] + [a.name for a in node.names])
                hit = next((s for s in _SUSPICIOUS_NAMES if s in text.split() or text == s
                            or text.startswith(s + ".") or text.endswith("." + s)), None)
                if hit:
                    flags.add(f"uses {hit} (cell {index})")
    return sorted(flags)


def _kernel_env(profile: str | None, root: Path) -> dict[str, str]:
    """The kernel's environment: the grader's, minus anything secret-looking, with config folders of its own."""
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE", re.I)
    env = {k: v for k, v in os.environ.items() if not secret.search(k)}
    for var, sub in (("IPYTHONDIR", "ipython"), ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                     ("JUPYTER_DATA_DIR", "jupyter-data"), ("MPLCONFIGDIR", "matplotlib")):
        (root / sub).mkdir(exist_ok=True)
        env[var] = str(root / sub)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if profile:
        env["LABS_PROFILE"] = profile
    return env


def _limit_kernel(memory_mb: int, file_mb: int):
    """A preexec function for the kernel process: address-space and file-size limits, no core dumps."""
    def apply():
        try:
            import resource
            if memory_mb:
                resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
            if file_mb:
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb * 2**20, file_mb * 2**20))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        except (ImportError, ValueError, OSError):
            pass  # not enforced here (macOS ignores RLIMIT_AS): the memory watchdog still applies
        if sys.platform.startswith("linux"):
            with contextlib.suppress(Exception):  # the kernel dies with its worker, whatever kills the worker
                import ctypes
                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    return apply


def _output_size(content: dict) -> int:
    size = len(content.get("text", "") or "")
    for value in (content.get("data") or {}).values():
        size += len(value) if isinstance(value, str) else len(json.dumps(value))
    return size + len(str(content.get("traceback", "")))


async def _execute_job(job: dict) -> dict:
    """In the worker: run the planned cells in a sandboxed kernel; report what happened (never raises)."""
    import nbformat
    import psutil
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    limits = Limits(**job["limits"])
    nb = nbformat.from_dict(job["notebook"])
    workdir, root = Path(job["workdir"]), Path(job["root"])
    report = {"stop": None, "results": {}, "output_bytes": 0, "peak_rss_mb": 0.0, "cells_run": 0}
    state = {"killed": None}

    class SandboxClient(NotebookClient):
        def process_message(self, msg, cell, cell_index):
            report["output_bytes"] += _output_size(msg.get("content") or {})
            if limits.output_mb and report["output_bytes"] > limits.output_mb * 2**20:
                if not state["killed"]:
                    state["killed"] = f"output limit exceeded (over {limits.output_mb:g} MB)"
                    kill_kernel()
                if msg["msg_type"] == "status":
                    return super().process_message(msg, cell, cell_index)
                return None  # over the limit: nothing more is kept
            return super().process_message(msg, cell, cell_index)

    client = SandboxClient(nb, timeout=int(limits.cell_s) or None, allow_errors=True, interrupt_on_timeout=True,
                           error_on_timeout={"ename": "CellTimeoutError", "traceback": [],
                                             "evalue": f"cell ran over its {limits.cell_s:g} s limit; interrupted"},
                           kernel_name="python3", startup_timeout=int(limits.startup_s), shutdown_kernel="immediate",
                           store_widget_state=False, record_timing=False, iopub_timeout=4,
                           resources={"metadata": {"path": str(workdir)}})

    def kernel_pid() -> int | None:
        process = getattr(getattr(client.km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def kill_kernel():
        pid = kernel_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL) if hasattr(os, "killpg") else os.kill(pid, signal.SIGKILL)

    async def watch():
        while True:
            await asyncio.sleep(0.2)
            if limits.notebook_s and time.perf_counter() - start > limits.notebook_s and not state["killed"]:
                state["killed"] = f"notebook time limit ({limits.notebook_s:g} s) reached"
                kill_kernel()
            pid = kernel_pid()
            if not pid:
                continue
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                rss = sum(p.memory_info().rss for p in [proc] + proc.children(recursive=True)) / 2**20
                report["peak_rss_mb"] = max(report["peak_rss_mb"], round(rss, 1))
                if limits.memory_mb and rss > limits.memory_mb and not state["killed"]:
                    state["killed"] = f"memory limit exceeded ({rss:.0f} MB resident > {limits.memory_mb} MB)"
                    kill_kernel()

    async def run_cells():
        async with client.async_setup_kernel(env=_kernel_env(job.get("profile"), root), cwd=str(workdir),
                                             stdout=log, stderr=subprocess.STDOUT,
                                             preexec_fn=_limit_kernel(limits.memory_mb, limits.file_mb)):
            watcher = asyncio.ensure_future(watch())
            try:
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code":
                        continue
                    current["cell"] = index
                    try:
                        await client.async_execute_cell(cell, index)
                    except DeadKernelError:
                        report["stop"] = {"cell": index, "reason": state["killed"] or "the kernel died (crashed or exited)"}
                        return
                    report["cells_run"] += 1
                    if state["killed"]:
                        report["stop"] = {"cell": index, "reason": state["killed"]}
                        return
                    token = job["tokens"].get(str(index))
                    if token:
                        lines = [line[len(token) + 1:] for out in cell.outputs if out.get("output_type") == "stream"
                                 for line in out.get("text", "").splitlines() if line.startswith(token + " ")]
                        report["results"][str(index)] = lines
            finally:
                watcher.cancel()

    current = {"cell": None}
    start = time.perf_counter()
    with open(root / "kernel.log", "ab") as log:
        try:
            # watch() stops the kernel at the limit; this is the backstop should the kernel never start
            await asyncio.wait_for(run_cells(), timeout=(limits.notebook_s + 30) if limits.notebook_s else None)
        except asyncio.TimeoutError:
            report["stop"] = {"cell": current["cell"], "reason": f"notebook time limit ({limits.notebook_s:g} s) reached"}
            kill_kernel()
        except Exception as exc:  # kernel failed to start, or nbclient gave up: reported, never raised
            report["stop"] = {"cell": current["cell"], "reason": state["killed"] or
                              f"grader could not run the notebook: {type(exc).__name__}: {str(exc)[:300]}"}
            kill_kernel()
    report["wall_s"] = round(time.perf_counter() - start, 2)
    with contextlib.suppress(Exception):
        nbformat.write(nb, str(Path(job["executed"])))
    return report


def _worker_main() -> int:
    """`grading.py _worker`: read one job (JSON) on stdin, grade it, write the report (JSON) on stdout."""
    job = json.loads(sys.stdin.read())
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but the report goes to the grading process's pipe
    report = json.dumps(asyncio.run(_execute_job(job)))
    # Signed with a key only this process and the grading process know: the kernel can reach this pipe
    # through /proc, but cannot sign a report of its own.
    mac = hmac.new(bytes.fromhex(job["report_key"]), report.encode("utf-8"), "sha256").hexdigest()
    out.write(f"{mac}\n{report}")
    out.flush()
    return 0


@dataclasses.dataclass
class Submission:
    student: str
    path: Path


def find_submissions(folder: Path, notebook_name: str) -> list[Submission]:
    """Submissions in `folder`: each `<student>.ipynb` in it, and `<student>/**/<notebook_name>` in subfolders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GradingError(f"no such folder of submissions: {folder}")
    found = [Submission(p.stem, p) for p in sorted(folder.glob("*.ipynb"))]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [Submission(sub.name, p) for p in sorted(sub.rglob(notebook_name))[:1]]
    names = [s.student for s in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GradingError(f"two submissions for the same student: {dupes}; keep one file per student")
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _safe_name(student: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", student).strip("._")[:80] or "student"


def grade_submission(source: Path, submission: Submission, limits: Limits = Limits(), profile: str | None = "tiny",
                     scratch: Path | None = None, executed_dir: Path | None = None) -> dict:
    """Grade one submission against the instructor notebook `source`; a result dict, whatever the submission does."""
    import nbformat
    instructor = _read(source)
    exercises = exercises_in(instructor, Path(source).name)
    start = time.perf_counter()
    result = {"student": submission.student, "file": str(submission.path), "status": "graded", "reason": None,
              "flags": [], "exercises": {}, "wall_s": 0.0, "peak_rss_mb": None, "output_bytes": None}

    def give(ex: Exercise, points: float, status: str, message: str):
        result["exercises"][ex.id] = {"exercise": ex.id, "points": points, "max_points": ex.points,
                                      "status": status, "message": message}
    try:
        digest_before = _sha256(submission.path)
        data = Path(submission.path).read_bytes()
    except OSError as exc:
        digest_before, data = None, None
        result.update(status="unreadable", reason=f"cannot read the submission: {exc.strerror or exc}")
    nb = None
    if data is not None:
        try:
            nb = nbformat.reads(data.decode("utf-8"), as_version=4)
            nbformat.validate(nb)
        except Exception as exc:
            nb = None
            result.update(status="invalid", reason=f"not a valid notebook: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    if nb is None:
        for ex in exercises:
            give(ex, 0.0, "not graded", result["reason"])
        result["wall_s"] = round(time.perf_counter() - start, 2)
        return result

    result["flags"] += _edited_check_cells(nb.cells, release_notebook(instructor, Path(source).name), exercises)
    result["flags"] += scan_source(nb.cells)
    own_root = Path(tempfile.mkdtemp(prefix=f"grade-{_safe_name(submission.student)}-", dir=scratch))
    try:
        workdir = own_root / "work"
        workdir.mkdir()
        (workdir / Path(submission.path).name).write_bytes(data)  # the kernel's copy; the original is only read
        cells = [c for c in nb.cells if c.cell_type in ("code", "markdown", "raw")]
        anchors = {ex.id: _anchor(cells, ex) for ex in exercises}
        plan, tokens, where = [], {}, {}
        baseline_src, baseline_token = _injected(_BASELINE_CELL)
        plan.append(nbformat.v4.new_code_cell(baseline_src, metadata={"labhelpers_grading": "baseline"}))
        tokens["0"] = baseline_token
        for ex in exercises:
            if anchors[ex.id] is None:
                result["flags"].append(f"no check cell for {ex.id}: graded at the end")

        def inject(ex):
            src, token = _injected(_GRADING_CELL, ex_id=ex.id, source=ex.source, function=ex.function,
                                   solution=ex.solution, forbid=ex.forbid)
            plan.append(nbformat.v4.new_code_cell(src, metadata={"labhelpers_grading": ex.id}))
            tokens[str(len(plan) - 1)], where[ex.id] = token, len(plan) - 1
        for i, cell in enumerate(cells):
            cell = nbformat.from_dict(dict(cell))
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
            plan.append(cell)
            for ex in exercises:
                if anchors[ex.id] == i:
                    inject(ex)
        for ex in exercises:
            if anchors[ex.id] is None:
                inject(ex)
        executed = own_root / "executed.ipynb"
        job = {"notebook": nbformat.v4.new_notebook(cells=plan, metadata=nb.metadata), "tokens": tokens,
               "workdir": str(workdir), "root": str(own_root), "executed": str(executed),
               "limits": dataclasses.asdict(limits), "profile": profile}
        report = _run_worker(job, limits)
        result["wall_s_kernel"] = report.get("wall_s")
        result["peak_rss_mb"], result["output_bytes"] = report.get("peak_rss_mb"), report.get("output_bytes")
        stop = report.get("stop")
        if stop:
            result["status"] = "stopped"
            cell = stop.get("cell")
            result["reason"] = stop["reason"] + (f" at cell {_student_index(plan, cell)}" if cell is not None else "")
        baseline = _one_result(report["results"].get("0"), None)
        tamper_base = (baseline or {}).get("probe")
        for ex in exercises:
            lines = report["results"].get(str(where[ex.id]))
            if lines is None:
                give(ex, 0.0, "not graded", f"not graded: {result['reason'] or 'its checks never ran'}")
                continue
            got = _one_result(lines, ex.id)
            if got is None:
                give(ex, 0.0, "tampered", f"no trustworthy result from the checks ({len(lines)} result lines):"
                                          " the notebook interfered with the grader's output")
                continue
            tampering = _tampering(tamper_base, got.get("probe") or {})
            if not got["probe"].get("check", True):
                result["flags"].append("`check` in the kernel was not labhelpers' own")
            if tampering:
                give(ex, 0.0, "tampered", "not trusted: " + "; ".join(tampering))
            elif got.get("status") == "passed":
                give(ex, ex.points, "passed", "passed")
            else:
                give(ex, 0.0, got.get("status", "failed"), f"{got.get('message', '')}"
                     + (f" (hint: {ex.hint})" if ex.hint and got.get("status") == "failed" else ""))
        if executed_dir is not None and executed.is_file():
            Path(executed_dir).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(executed, Path(executed_dir) / f"{_safe_name(submission.student)}.ipynb")
    finally:
        shutil.rmtree(own_root, onerror=_force_remove)
    with contextlib.suppress(OSError):
        if _sha256(submission.path) != digest_before:
            result["flags"].append("the submitted file changed while it was graded")
    result["flags"] = sorted(set(result["flags"]))
    result["wall_s"] = round(time.perf_counter() - start, 2)
    return result


def _force_remove(func, path, _exc):
    """rmtree's error handler: make a folder the kernel locked writable again, then retry."""
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        os.chmod(path, 0o700)
        func(path)


def _student_index(plan: list, index: int) -> str:
    """A plan index as the student sees it: their cell number, or the grader's cell for an exercise."""
    if index is None or index >= len(plan):
        return "?"
    tag = plan[index].metadata.get("labhelpers_grading")
    if tag:
        return f"grading {tag}" if tag != "baseline" else "0 (grader setup)"
    return str(sum(1 for c in plan[:index] if "labhelpers_grading" not in c.metadata))


def _one_result(lines: list[str] | None, ex_id: str | None) -> dict | None:
    """The grader cell's result, when exactly one well-formed line for this exercise came back."""
    if not lines or len(lines) != 1:
        return None
    try:
        got = json.loads(lines[0])
    except ValueError:
        return None
    if not isinstance(got, dict) or not isinstance(got.get("probe"), dict) or (ex_id and got.get("id") != ex_id):
        return None
    return got


def _tampering(base: dict | None, now: dict) -> list[str]:
    """What the probes say changed between the fresh kernel and this grading cell."""
    base = base or {"trace": False, "profile": False, "builtins": [], "hooks": 0, "shell": []}
    found = []
    if now.get("trace") and not base.get("trace"):
        found.append("a trace function (sys.settrace) was set")
    if now.get("profile") and not base.get("profile"):
        found.append("a profile function (sys.setprofile) was set")
    replaced = sorted(set(now.get("builtins", [])) - set(base.get("builtins", [])))
    if replaced:
        found.append("builtins replaced: " + ", ".join(replaced))
    if now.get("hooks", 0) > base.get("hooks", 0):
        found.append("IPython hooks defined in the notebook (input/AST transformers or event callbacks)")
    if set(now.get("shell", [])) - set(base.get("shell", [])):
        found.append("the IPython shell was patched: " + ", ".join(now["shell"]))
    return found


def _run_worker(job: dict, limits: Limits) -> dict:
    """Run one job in a worker process, with a hard wall limit; the worker and its kernel die with it."""
    import psutil
    grace = 60 + limits.startup_s
    timeout = (limits.notebook_s + grace) if limits.notebook_s else None
    key = secrets.token_bytes(32)
    job = job | {"report_key": key.hex()}
    # -I: the worker imports nothing from the current folder or PYTHONPATH; run_path: nor from labhelpers/
    launcher = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"
    proc = subprocess.Popen([sys.executable, "-I", "-c", launcher, "_worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(Path(job["root"]) / "worker.log", "wb"),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(json.dumps(job).encode("utf-8"), timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        proc.kill()
        proc.communicate()
        return {"stop": {"cell": None, "reason": f"grader gave up after {timeout:g} s"}, "results": {}}
    try:
        mac, report = out.decode("utf-8").split("\n", 1)
        if not hmac.compare_digest(mac, hmac.new(key, report.encode("utf-8"), "sha256").hexdigest()):
            return {"stop": {"cell": None, "reason": "the grader's report was forged or corrupted"}, "results": {}}
        return json.loads(report)
    except ValueError:
        log = (Path(job["root"]) / "worker.log").read_text(errors="replace")[-300:]
        return {"stop": {"cell": None, "reason": f"grader worker failed (exit {proc.returncode}): {log.strip()}"},
                "results": {}}


# --------------------------------------------------------------------------------------------------
# A batch: autograde, reports, validate
# --------------------------------------------------------------------------------------------------

ROW_FIELDS = ("student", "exercise", "points", "max_points", "status", "message", "flags")


def _rows(results: list[dict]) -> list[dict]:
    rows = []
    for r in results:
        for e in r["exercises"].values():
            rows.append({"student": r["student"], "exercise": e["exercise"], "points": e["points"],
                         "max_points": e["max_points"], "status": e["status"], "message": e["message"],
                         "flags": "; ".join(r["flags"])})
    return rows


def _html(summary: dict) -> str:
    esc = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>Grades</title>",
             "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;"
             "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
             ".ok{color:#17632a}.no{color:#a11}.flag{color:#8a5a00}</style>",
             f"<h1>Grades: {esc(summary['source'])}</h1>",
             f"<p>{len(summary['students'])} submissions graded in {summary['wall_s']:.1f} s with "
             f"{summary['workers']} workers; limits: {esc(summary['limits_text'])}.</p>",
             "<table><tr><th>student</th><th>points</th><th>status</th><th>reason / flags</th></tr>"]
    for s in summary["students"]:
        note = "; ".join(x for x in [s["reason"] or ""] + s["flags"] if x)
        parts.append(f"<tr><td><a href='#{esc(_safe_name(s['student']))}'>{esc(s['student'])}</a></td>"
                     f"<td>{s['points']:g} / {s['max_points']:g}</td><td>{esc(s['status'])}</td>"
                     f"<td class='flag'>{esc(note)}</td></tr>")
    parts.append("</table>")
    for s in summary["students"]:
        parts.append(f"<h2 id='{esc(_safe_name(s['student']))}'>{esc(s['student'])}: {s['points']:g} / "
                     f"{s['max_points']:g}</h2>")
        if s["reason"]:
            parts.append(f"<p class='no'>{esc(s['reason'])}</p>")
        if s["flags"]:
            parts.append("<p class='flag'>flags: " + esc("; ".join(s["flags"])) + "</p>")
        parts.append("<table><tr><th>exercise</th><th>points</th><th>message</th></tr>")
        for e in s["exercises"].values():
            cls = "ok" if e["points"] == e["max_points"] else "no"
            parts.append(f"<tr><td>{esc(e['exercise'])}</td><td class='{cls}'>{e['points']:g} / {e['max_points']:g}"
                         f"</td><td>{esc(e['message'][:2000])}</td></tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def _publish(out: Path, files: dict[str, bytes], executed: Path | None, force: bool) -> None:
    """Write the report files into a new folder next to `out`, then move it into place in one rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    if executed is not None and executed.is_dir():
        shutil.copytree(executed, staging / "executed")
    old = None
    if out.exists():
        if not force:
            shutil.rmtree(staging)
            raise GradingError(f"{out} exists; pass --force to replace it")
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def autograde(source: Path, submissions: list[Submission], out: Path, limits: Limits = Limits(), workers: int = 2,
              profile: str | None = "tiny", force: bool = False, progress: bool = True) -> dict:
    """Grade every submission (in parallel, each sandboxed) and write grades.csv, grades.json and grades.html to `out`."""
    source = Path(source)
    exercises = exercises_in(_read(source), source.name)
    if not exercises:
        raise GradingError(f"{source} declares no exercises (@exercise); nothing to grade")
    if Path(out).exists() and not force:
        raise GradingError(f"{out} exists; pass --force to replace it")
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="autograde-"))
    done = []

    def one(sub: Submission) -> dict:
        try:
            r = grade_submission(source, sub, limits, profile, scratch, scratch / "executed")
        except Exception as exc:  # a bug of ours must not stop the batch: that student's rows say so
            r = {"student": sub.student, "file": str(sub.path), "status": "error", "flags": [], "wall_s": 0.0,
                 "reason": f"grader error: {type(exc).__name__}: {exc}",
                 "exercises": {e.id: {"exercise": e.id, "points": 0.0, "max_points": e.points, "status": "not graded",
                                      "message": f"not graded: grader error: {exc}"} for e in exercises}}
        r["points"] = sum(e["points"] for e in r["exercises"].values())
        r["max_points"] = sum(e.points for e in exercises)
        done.append(r)
        if progress:
            print(f"[{len(done)}/{len(submissions)}] {r['student']}: {r['points']:g}/{r['max_points']:g} "
                  f"in {r['wall_s']:.1f} s" + (f" ({r['reason']})" if r["reason"] else ""), flush=True)
        return r

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(one, submissions))
        wall = round(time.perf_counter() - start, 2)
        summary = {"source": str(source), "profile": profile, "workers": workers, "wall_s": wall,
                   "limits": dataclasses.asdict(limits), "limits_text": limits.describe(),
                   "exercises": [{"id": e.id, "points": e.points} for e in exercises], "students": results}
        rows = _rows(results)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        files = {"grades.csv": buf.getvalue().encode("utf-8"),
                 "grades.json": (json.dumps(summary | {"rows": rows}, indent=2) + "\n").encode("utf-8"),
                 "grades.html": _html(summary).encode("utf-8")}
        _publish(Path(out), files, scratch / "executed", force)
    finally:
        shutil.rmtree(scratch, onerror=_force_remove)
    return summary


def validate(sources: list[Path], limits: Limits = Limits(), profile: str | None = "tiny") -> list[str]:
    """Run each instructor notebook (must earn full marks) and its student copy (must earn zero); the problems."""
    problems = []
    for path in _instructor_notebooks(sources):
        nb = _read(path)
        exercises = exercises_in(nb, path.name)
        if not exercises:
            continue
        with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
            stub = Path(tmp) / path.name
            stub.write_text(_notebook_text(release_notebook(nb, path.name)), encoding="utf-8")
            for kind, sub, want_full in (("solution", Submission("instructor", path), True),
                                         ("student copy", Submission("student-copy", stub), False)):
                r = grade_submission(path, sub, limits, profile, Path(tmp))
                for e in r["exercises"].values():
                    ok = e["points"] == e["max_points"] if want_full else e["points"] == 0
                    print(f"{path.name} {kind} {e['exercise']}: {e['points']:g}/{e['max_points']:g} "
                          f"{'ok' if ok else 'WRONG'} ({e['message'][:200]})")
                    if not ok:
                        problems.append(f"{path.name}: the {kind} earns {e['points']:g}/{e['max_points']:g} on "
                                        f"{e['exercise']}" + (f": {e['message'][:300]}" if want_full else
                                                              ": its checks pass without a solution"))
                if r["reason"]:
                    problems.append(f"{path.name}: the {kind} stopped: {r['reason']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m labhelpers.tools.grading", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_rel = sub.add_parser("release", help="write student copies of the instructor notebooks that have exercises")
    p_rel.add_argument("sources", type=Path, help="instructor notebook or folder (its NN_*.ipynb)")
    p_rel.add_argument("dest", type=Path, help="folder for the student copies")
    p_rel.add_argument("--check", action="store_true", help="write nothing; exit 1 if a copy in DEST is stale")

    def limit_options(p):
        d = Limits()
        p.add_argument("--profile", default="tiny", help="LABS_PROFILE for the kernels (default: tiny)")
        p.add_argument("--timeout", type=float, default=d.notebook_s, help=f"seconds per notebook (default {d.notebook_s:g})")
        p.add_argument("--cell-timeout", type=float, default=d.cell_s, help=f"seconds per cell (default {d.cell_s:g})")
        p.add_argument("--memory-mb", type=int, default=d.memory_mb, help=f"memory per kernel, 0: none (default {d.memory_mb})")
        p.add_argument("--max-output-mb", type=float, default=d.output_mb, help=f"output per notebook (default {d.output_mb:g})")
    p_val = sub.add_parser("validate", help="instructor solutions pass their checks; student copies earn zero")
    p_val.add_argument("sources", type=Path, nargs="+", help="instructor notebooks or folders")
    limit_options(p_val)
    p_ag = sub.add_parser("autograde", help="grade a folder of submissions; write CSV, JSON and HTML reports")
    p_ag.add_argument("source", type=Path, help="the instructor notebook (with solutions and hidden checks)")
    p_ag.add_argument("submissions", type=Path, help="folder of <student>.ipynb or <student>/<notebook name>")
    p_ag.add_argument("--out", type=Path, required=True, help="report folder (refused if it exists, unless --force)")
    p_ag.add_argument("--force", action="store_true", help="replace an existing report folder")
    p_ag.add_argument("--workers", type=int, default=2, help="submissions graded at once (default 2)")
    limit_options(p_ag)
    args = parser.parse_args(argv)
    try:
        if args.command == "release":
            problems = release([args.sources], args.dest, check_only=args.check)
            for p in problems:
                print(p)
            if problems:
                print(f"{len(problems)} student copies out of date; run "
                      f"`python -m labhelpers.tools.grading release {args.sources} {args.dest}`")
            return 1 if problems else 0
        limits = Limits(notebook_s=args.timeout, cell_s=args.cell_timeout, memory_mb=args.memory_mb,
                        output_mb=args.max_output_mb)
        if args.command == "validate":
            problems = validate(args.sources, limits, args.profile)
            print("\n".join(problems) if problems else "OK: every solution passes and every student copy earns zero")
            return 1 if problems else 0
        subs = find_submissions(args.submissions, args.source.name)
        if not subs:
            raise GradingError(f"no submissions in {args.submissions}")
        summary = autograde(args.source, subs, args.out, limits, args.workers, args.profile, args.force)
        print(f"graded {len(subs)} submissions in {summary['wall_s']:.1f} s; limits: {limits.describe()}; "
              f"report: {args.out}/grades.html")
        return 0
    except (GradingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    if sys.argv[1:2] == ["_worker"]:
        sys.exit(_worker_main())
    sys.exit(main())
