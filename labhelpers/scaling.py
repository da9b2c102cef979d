"""Plumbing for lab 03 (scaling laws): argument checks and a power-law fit in log space.

The calculators themselves (6ND, petaflop/s-days, Kaplan's and Chinchilla's laws, compute-optimal
sizes) are written in notebooks/03_scaling_laws_compute_budgets.ipynb and exported to
`labhelpers.lessons.scaling_laws_compute_budgets`; `from labhelpers import training_flops` finds them.

    as_positive(7e9, "n_params")            # 7e9, or a one-line ValueError naming the argument
    fit_power_law(sizes, losses)            # L = a * x^-b (+ c), fitted in log space
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def as_positive(value, argument: str, *, one: bool = False):
    """`value` (a number or array) as floats, all finite and positive, else a one-line ValueError naming `argument`.

    A single number comes back as a float, an array as a numpy array; `one=True` refuses arrays.
    """
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{argument}={value!r} must be a positive number (or an array of them)") from None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{argument}={value!r} must be positive and finite")
    if one and arr.size != 1:
        raise ValueError(f"{argument} must be one number, got {arr.size}; call once per value")
    return float(arr.reshape(())) if arr.ndim == 0 or one else arr


@dataclass(frozen=True)
class PowerLawFit:
    """L(x) = a * x^(-b) + c, fitted by least squares on log L; `predict(x)` evaluates it."""

    a: float
    b: float
    c: float
    rmse_log: float  # root mean squared error of log L at the fitted points
    n_points: int

    def predict(self, x):
        """The fitted law at `x` (a number or an array)."""
        return self.a * as_positive(x, "x") ** (-self.b) + self.c

    def __call__(self, x):
        return self.predict(x)

    def __str__(self) -> str:
        law = f"L = {self.a:.4g} * x^(-{self.b:.4f})" + (f" + {self.c:.4g}" if self.c else "")
        return f"{law} (fitted on {self.n_points} points, RMSE of log L {self.rmse_log:.4f})"


def _fit_log_linear(log_x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(log_x, np.log(y), 1)
    return math.exp(intercept), -slope


def fit_power_law(xs, losses, *, irreducible: bool = False) -> PowerLawFit:
    """Fit L = a * x^(-b) (+ c when `irreducible`) to points (x, L) by least squares in log space.

    Without `c` this is a straight line through (log x, log L). With `c` (the loss no scale removes),
    c is searched on [0, min L) and, for each c, a and b come from the straight line through
    (log x, log(L - c)); the c whose law best fits log L wins.
    """
    x = np.atleast_1d(as_positive(xs, "xs")).ravel()
    y = np.atleast_1d(as_positive(losses, "losses")).ravel()
    if x.shape != y.shape:
        raise ValueError(f"xs and losses must have the same length, got {x.size} and {y.size}")
    need = 3 if irreducible else 2
    if x.size < need or np.unique(x).size < 2:
        raise ValueError(f"xs needs at least {need} points with 2 distinct values to fit "
                         f"{'a, b and c' if irreducible else 'a and b'}, got {x.size}")
    log_x, log_y = np.log(x), np.log(y)

    def law(c: float) -> tuple[float, float, float]:
        a, b = _fit_log_linear(log_x, y - c)
        return a, b, float(np.sqrt(np.mean((np.log(a * x ** (-b) + c) - log_y) ** 2)))

    if not irreducible:
        a, b, rmse = law(0.0)
        return PowerLawFit(a, b, 0.0, rmse, x.size)
    top = float(y.min()) * (1 - 1e-9)
    lo, hi = 0.0, top
    best_c = 0.0
    for _ in range(4):  # a grid, then finer grids around the best c
        grid = np.linspace(lo, hi, 201)
        errors = [law(c)[2] for c in grid]
        i = int(np.argmin(errors))
        best_c = float(grid[i])
        step = grid[1] - grid[0]
        lo, hi = max(0.0, best_c - step), min(top, best_c + step)
    a, b, rmse = law(best_c)
    return PowerLawFit(a, b, best_c, rmse, x.size)


__all__ = ["PowerLawFit", "as_positive", "fit_power_law"]
