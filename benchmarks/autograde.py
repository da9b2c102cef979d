"""Autograde a class of 20 submissions (correct, one answer wrong, untouched, and every hostile case) and time it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/autograde.py [--workers 2] [--keep DIR]

The lab is tests/fixtures/grading/course.py (three exercises, 5 points, no model), so the time measured
is the grader's own: a kernel per submission, the limits, the reports. It checks every row against what
each submission must earn and exits 1 on a mismatch. Prints the wall time and the limits enforced.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from labhelpers.tools import grading

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("grading_course", ROOT / "tests/fixtures/grading/course.py")
course = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(course)
LIMITS = grading.Limits(notebook_s=60, cell_s=10, memory_mb=3072, output_mb=2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="write the report here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autograde-bench-") as tmp:
        tmp = Path(tmp)
        lab = tmp / course.NAME
        nbformat.write(course.instructor_notebook(), str(lab))
        student = grading.release_notebook(nbformat.read(str(lab), as_version=4), lab.name)
        folder = tmp / "submissions"
        paths = course.write_submissions(folder, student)  # the 12 cases, then more honest students to make 20
        expected = dict(course.EXPECTED)
        for i in range(20 - len(paths)):
            kind = ("correct", "wrong_q3", "untouched")[i % 3]
            target = folder / f"student_{i + 1:02d}_{kind}.ipynb"
            target.write_bytes(paths[kind].read_bytes())
            expected[target.stem] = course.EXPECTED[kind]
        subs = grading.find_submissions(folder, lab.name)
        out = args.keep or tmp / "report"
        start = time.perf_counter()
        summary = grading.autograde(lab, subs, out, LIMITS, workers=args.workers, force=bool(args.keep))
        wall = time.perf_counter() - start
        wrong = [f"{s['student']} {e['exercise']}: {e['points']:g} ({e['message']})"
                 for s in summary["students"] for e in s["exercises"].values()
                 if e["points"] != expected[s["student"]][0][e["exercise"]]]
        print(f"\n{len(subs)} submissions graded in {wall:.1f} s with {args.workers} workers "
              f"({wall / len(subs):.1f} s per submission); limits: {LIMITS.describe()}")
        print("\n".join(wrong) if wrong else "every row as expected")
        return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
