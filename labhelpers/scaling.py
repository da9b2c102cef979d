"""Compute budgets and scaling laws: training FLOPs, petaflop/s-days, Kaplan and Chinchilla, power-law fits.

    training_flops(70e9, 1.4e12)            # 5.9e23 FLOPs: Chinchilla, C ~ 6 N D
    flops_to_pf_days(5.88e23)               # ~6800 petaflop/s-days
    compute_optimal(1e23)                   # N and D minimising Chinchilla's fitted L(N, D) under C = 6 N D
    fit_power_law(sizes, losses)            # L = a * x^-b (+ c), fitted in log space

Conventions: N counts every parameter that takes part in the matrix multiplies (Chinchilla's
convention; Kaplan et al. counted non-embedding parameters only), D counts training tokens, and one
training token costs ~6 N FLOPs: 2 N for the forward pass (a multiply and an add per weight) and 4 N
for the backward pass (gradients with respect to activations and to weights). Attention's own
context-length term (~6 * n_layers * seq_len * d_model per token) is left out, as both papers do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

FLOPS_PER_PARAM_PER_TOKEN = 6
PF_DAY_FLOPS = 1e15 * 86400  # one petaflop/s sustained for a day: 8.64e19 FLOPs
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: Chinchilla, 70B parameters on 1.4T tokens


def _positive(value, argument: str) -> np.ndarray:
    """`value` (a number or array) as floats, all finite and positive, else a one-line ValueError."""
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{argument}={value!r} must be a positive number (or an array of them)") from None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{argument}={value!r} must be positive and finite")
    return arr


def _one(value, argument: str) -> float:
    """`value` as one positive, finite number, else a one-line ValueError."""
    arr = _positive(value, argument)
    if arr.size != 1:
        raise ValueError(f"{argument} must be one number, got {arr.size}; call once per value")
    return float(arr.reshape(()))


def _check_fit(fit) -> None:
    if not isinstance(fit, ChinchillaFit):
        raise TypeError(f"fit must be a ChinchillaFit such as HOFFMANN_2022 or BESIROGLU_2024, "
                        f"not {type(fit).__name__}")


def _out(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def training_flops(n_params, n_tokens):
    """FLOPs to train `n_params` parameters on `n_tokens` tokens: C ~ 6 N D (arrays broadcast)."""
    return _out(FLOPS_PER_PARAM_PER_TOKEN * _positive(n_params, "n_params") * _positive(n_tokens, "n_tokens"))


def flops_to_pf_days(flops):
    """FLOPs as petaflop/s-days (1 PF/s-day = 1e15 FLOP/s for 86,400 s = 8.64e19 FLOPs)."""
    return _out(_positive(flops, "flops") / PF_DAY_FLOPS)


def pf_days_to_flops(pf_days):
    """Petaflop/s-days as FLOPs."""
    return _out(_positive(pf_days, "pf_days") * PF_DAY_FLOPS)


# ---------------------------------------------------------------------------------------------
# Fitted laws
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChinchillaFit:
    """A parametric loss L(N, D) = E + A / N^alpha + B / D^beta (nats per token), with where it comes from."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, n_params, n_tokens):
        """Predicted loss of `n_params` parameters trained on `n_tokens` tokens (arrays broadcast)."""
        n = _positive(n_params, "n_params")
        d = _positive(n_tokens, "n_tokens")
        return _out(self.E + self.A / n ** self.alpha + self.B / d ** self.beta)


# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3 (eq. 10, Appendix D.2).
HOFFMANN_2022 = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                              source="Hoffmann et al. 2022, approach 3 (published, rounded constants)")
# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt" (Epoch AI), refit of approach 3 on data
# read from the paper's figures; unlike the published constants, it agrees with approaches 1 and 2 (~20 tokens/param).
BESIROGLU_2024 = ChinchillaFit(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                               source="Besiroglu et al. 2024, replication of approach 3")

# Kaplan et al. 2020, "Scaling Laws for Neural Language Models", eqs. 1.1 and 1.2 (N: non-embedding parameters).
KAPLAN_N_C, KAPLAN_ALPHA_N = 8.8e13, 0.076
KAPLAN_D_C, KAPLAN_ALPHA_D = 5.4e13, 0.095


def chinchilla_loss(n_params, n_tokens, fit: ChinchillaFit = HOFFMANN_2022):
    """Chinchilla's fitted loss L(N, D) = E + A/N^alpha + B/D^beta (default: the published approach-3 constants)."""
    _check_fit(fit)
    return fit.loss(n_params, n_tokens)


def kaplan_loss_n(n_params):
    """Kaplan et al.'s L(N) = (N_c / N)^alpha_N: loss of a model trained to convergence on plenty of data."""
    return _out((KAPLAN_N_C / _positive(n_params, "n_params")) ** KAPLAN_ALPHA_N)


def kaplan_loss_d(n_tokens):
    """Kaplan et al.'s L(D) = (D_c / D)^alpha_D: loss of a large model trained on D tokens with early stopping."""
    return _out((KAPLAN_D_C / _positive(n_tokens, "n_tokens")) ** KAPLAN_ALPHA_D)


class ComputeOptimal(NamedTuple):
    """A model size and token count for a compute budget, and the loss a fit predicts for them."""

    flops: float
    n_params: float
    n_tokens: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.n_tokens / self.n_params


def compute_optimal(flops, fit: ChinchillaFit = HOFFMANN_2022) -> ComputeOptimal:
    """N and D that minimise `fit`'s L(N, D) subject to C = 6 N D (Hoffmann et al. 2022, eq. 4, closed form).

    N_opt = G (C/6)^a and D_opt = (C/6)^b / G, with a = beta/(alpha+beta), b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)).
    """
    c = _one(flops, "flops")
    _check_fit(fit)
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    n = g * (c / FLOPS_PER_PARAM_PER_TOKEN) ** (fit.beta / (fit.alpha + fit.beta))
    d = c / (FLOPS_PER_PARAM_PER_TOKEN * n)
    return ComputeOptimal(c, n, d, float(fit.loss(n, d)))


def compute_optimal_by_rule(flops, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM,
                            fit: ChinchillaFit = HOFFMANN_2022) -> ComputeOptimal:
    """N and D with D = k N and C = 6 N D, i.e. N = sqrt(C / 6k): the "20 tokens per parameter" rule of thumb."""
    c = _one(flops, "flops")
    k = _one(tokens_per_param, "tokens_per_param")
    _check_fit(fit)
    n = math.sqrt(c / (FLOPS_PER_PARAM_PER_TOKEN * k))
    return ComputeOptimal(c, n, k * n, float(fit.loss(n, k * n)))


# ---------------------------------------------------------------------------------------------
# Known models
# ---------------------------------------------------------------------------------------------

class KnownModel(NamedTuple):
    """A published model: parameters, training tokens, and where those numbers are published."""

    name: str
    n_params: float
    n_tokens: float
    source: str


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("GPT-3", 175e9, 300e9, "Brown et al. 2020, Language Models are Few-Shot Learners, Table D.1"),
    KnownModel("Gopher", 280e9, 300e9, "Rae et al. 2021, Scaling Language Models: ... Gopher, Table 1"),
    KnownModel("Chinchilla", 70e9, 1.4e12, "Hoffmann et al. 2022, Training Compute-Optimal LLMs, Table 1"),
    KnownModel("LLaMA-65B", 65.2e9, 1.4e12, "Touvron et al. 2023, LLaMA: Open and Efficient Foundation LMs, Table 2"),
    KnownModel("Llama-2-70B", 70e9, 2.0e12, "Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models, Table 1"),
    KnownModel("BloombergGPT", 50.6e9, 569e9, "Wu et al. 2023, BloombergGPT, sec. 3 (569B tokens trained, "
                                              "of a 708B corpus: 363B financial + 345B public)"),
)


def known_models_table(models: Sequence[KnownModel] = KNOWN_MODELS, fit: ChinchillaFit = HOFFMANN_2022):
    """The known models with their training FLOPs (6ND), PF/s-days, tokens per parameter and Chinchilla-rule size."""
    import pandas as pd

    if isinstance(models, (str, bytes)) or not hasattr(models, "__iter__"):
        raise TypeError(f"models must be a list of KnownModel, not {type(models).__name__}")
    models = list(models)
    if not models:
        raise ValueError("models is empty; pass at least one KnownModel (default: KNOWN_MODELS)")
    for i, m in enumerate(models):
        if not isinstance(m, KnownModel):
            raise TypeError(f"models[{i}] must be a KnownModel(name, n_params, n_tokens, source), not {m!r}")
    _check_fit(fit)
    rows = []
    for m in models:
        flops = training_flops(m.n_params, m.n_tokens)
        rule = compute_optimal_by_rule(flops, fit=fit)
        rows.append({"model": m.name, "parameters": m.n_params, "tokens": m.n_tokens, "FLOPs (6ND)": flops,
                     "PF/s-days": flops_to_pf_days(flops), "tokens per parameter": m.n_tokens / m.n_params,
                     "20-tokens/param size for this compute": rule.n_params, "source": m.source})
    return pd.DataFrame(rows).set_index("model")


# ---------------------------------------------------------------------------------------------
# Fitting a power law
# ---------------------------------------------------------------------------------------------

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
        return _out(self.a * _positive(x, "x") ** (-self.b) + self.c)

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
    x = _positive(xs, "xs").ravel()
    y = _positive(losses, "losses").ravel()
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


__all__ = ["BESIROGLU_2024", "CHINCHILLA_TOKENS_PER_PARAM", "ChinchillaFit", "ComputeOptimal", "FLOPS_PER_PARAM_PER_TOKEN",
           "HOFFMANN_2022", "KAPLAN_ALPHA_D", "KAPLAN_ALPHA_N", "KAPLAN_D_C", "KAPLAN_N_C", "KNOWN_MODELS", "KnownModel",
           "PF_DAY_FLOPS", "PowerLawFit", "chinchilla_loss", "compute_optimal", "compute_optimal_by_rule",
           "fit_power_law", "flops_to_pf_days", "kaplan_loss_d", "kaplan_loss_n", "known_models_table",
           "pf_days_to_flops", "training_flops"]
