"""What every benchmark does with its table: print it, and append it to benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def publish(text: str, *, append: bool) -> None:
    """Print `text`; when `append`, add it to RESULTS.md after a blank line."""
    print(text)
    if append:
        with open(RESULTS, "a", encoding="utf-8") as fh:
            fh.write("\n" + text + "\n")
