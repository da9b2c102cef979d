# Written by `python -m labhelpers.tools.export` from the notebooks' #@save cells: edit the notebook, then run it again.
"""Lesson code written in the notebooks and exported for later labs, benchmarks and tests."""


__all__ = []
