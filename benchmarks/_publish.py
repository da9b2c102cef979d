"""What every benchmark does with its table: print it, and append it to benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def add_append_arguments(parser: argparse.ArgumentParser) -> None:
    """--append / --no-append: a run on the tiny profile is a smoke test and is not recorded unless asked."""
    parser.add_argument("--append", action="store_true", help="append to RESULTS.md even on --profile tiny")
    parser.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")


def publish(text: str, args: argparse.Namespace) -> None:
    """Print `text`; append it to RESULTS.md after a blank line, unless the arguments say not to."""
    print(text)
    if (args.profile != "tiny" or args.append) and not args.no_append:
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")
