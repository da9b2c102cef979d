# Written by `python -m labhelpers.tools.export` from notebooks/03_scaling_laws_compute_budgets.ipynb: edit the notebook, then run it again.
"""Lesson code of Lab 03: Scaling laws and compute budgets: how big a model, how much data?."""

from __future__ import annotations

import math
import pandas as pd
from dataclasses import dataclass
from labhelpers import as_positive
from typing import NamedTuple

__all__ = ['FLOPS_PER_PARAM_PER_TOKEN', 'PF_DAY_FLOPS', 'training_flops', 'flops_to_pf_days', 'pf_days_to_flops', 'kaplan_loss_n', 'kaplan_loss_d', 'ChinchillaFit', 'HOFFMANN_2022', 'BESIROGLU_2024', 'as_fit', 'chinchilla_loss', 'CHINCHILLA_TOKENS_PER_PARAM', 'ComputeOptimal', 'compute_optimal', 'compute_optimal_by_rule', 'KnownModel', 'KNOWN_MODELS', 'known_models_table']


# 03_scaling_laws_compute_budgets.ipynb, cell 5
FLOPS_PER_PARAM_PER_TOKEN = 6  # 2 N forward (a multiply and an add per weight) + 4 N backward
PF_DAY_FLOPS = 1e15 * 86400  # one petaflop/s sustained for a day: 8.64e19 FLOPs


def training_flops(n_params, n_tokens):
    """FLOPs to train `n_params` parameters on `n_tokens` tokens: C = 6 N D."""
    return FLOPS_PER_PARAM_PER_TOKEN * as_positive(n_params, "n_params") * as_positive(n_tokens, "n_tokens")


def flops_to_pf_days(flops):
    """FLOPs as petaflop/s-days."""
    return as_positive(flops, "flops") / PF_DAY_FLOPS


def pf_days_to_flops(pf_days):
    """Petaflop/s-days as FLOPs."""
    return as_positive(pf_days, "pf_days") * PF_DAY_FLOPS


# 03_scaling_laws_compute_budgets.ipynb, cell 11
KAPLAN_N_C, KAPLAN_ALPHA_N = 8.8e13, 0.076  # Kaplan et al. 2020, eq. 1.1 (N: non-embedding parameters)
KAPLAN_D_C, KAPLAN_ALPHA_D = 5.4e13, 0.095  # eq. 1.2


def kaplan_loss_n(n_params):
    """Kaplan's L(N) = (N_c / N)^alpha_N: the loss of a model trained to convergence on plenty of data."""
    return (KAPLAN_N_C / as_positive(n_params, "n_params")) ** KAPLAN_ALPHA_N


def kaplan_loss_d(n_tokens):
    """Kaplan's L(D) = (D_c / D)^alpha_D: the loss of a large model trained on D tokens, stopped early."""
    return (KAPLAN_D_C / as_positive(n_tokens, "n_tokens")) ** KAPLAN_ALPHA_D


# 03_scaling_laws_compute_budgets.ipynb, cell 14
@dataclass(frozen=True)
class ChinchillaFit:
    """A fitted loss L(N, D) = E + A / N^alpha + B / D^beta (nats per token), and where it comes from."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str

    def loss(self, n_params, n_tokens):
        """Predicted loss of `n_params` parameters trained on `n_tokens` tokens."""
        n, d = as_positive(n_params, "n_params"), as_positive(n_tokens, "n_tokens")
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta


# Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3 (eq. 10, Appendix D.2).
HOFFMANN_2022 = ChinchillaFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                              source="Hoffmann et al. 2022, approach 3 (published, rounded constants)")
# Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt": approach 3 refitted (see section 4).
BESIROGLU_2024 = ChinchillaFit(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                               source="Besiroglu et al. 2024, replication of approach 3")


def as_fit(fit):
    """`fit` itself when it is a ChinchillaFit, else a one-line TypeError."""
    if not isinstance(fit, ChinchillaFit):
        raise TypeError(f"fit must be a ChinchillaFit such as HOFFMANN_2022 or BESIROGLU_2024, not {type(fit).__name__}")
    return fit


def chinchilla_loss(n_params, n_tokens, fit=HOFFMANN_2022):
    """Chinchilla's L(N, D) with `fit`'s constants (default: the published ones)."""
    return as_fit(fit).loss(n_params, n_tokens)


# 03_scaling_laws_compute_budgets.ipynb, cell 18
CHINCHILLA_TOKENS_PER_PARAM = 20  # Chinchilla: 70B parameters on 1.4T tokens


class ComputeOptimal(NamedTuple):
    """A model size and token count for a compute budget, and the loss a fit predicts for them."""

    flops: float
    n_params: float
    n_tokens: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.n_tokens / self.n_params


def compute_optimal(flops, fit=HOFFMANN_2022):
    """N and D minimising `fit`'s L(N, D) under C = 6 N D (Hoffmann et al. 2022, eq. 4)."""
    c, fit = as_positive(flops, "flops", one=True), as_fit(fit)
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    n = g * (c / FLOPS_PER_PARAM_PER_TOKEN) ** (fit.beta / (fit.alpha + fit.beta))
    d = c / (FLOPS_PER_PARAM_PER_TOKEN * n)
    return ComputeOptimal(c, n, d, fit.loss(n, d))


def compute_optimal_by_rule(flops, tokens_per_param=CHINCHILLA_TOKENS_PER_PARAM, fit=HOFFMANN_2022):
    """N and D with D = k N and C = 6 N D, so N = sqrt(C / 6k): the "20 tokens per parameter" rule."""
    c, k = as_positive(flops, "flops", one=True), as_positive(tokens_per_param, "tokens_per_param", one=True)
    n = math.sqrt(c / (FLOPS_PER_PARAM_PER_TOKEN * k))
    return ComputeOptimal(c, n, k * n, as_fit(fit).loss(n, k * n))


# 03_scaling_laws_compute_budgets.ipynb, cell 27
class KnownModel(NamedTuple):
    """A published model: parameters, training tokens, and where those numbers are published."""

    name: str
    n_params: float
    n_tokens: float
    source: str


KNOWN_MODELS = (
    KnownModel("GPT-3", 175e9, 300e9, "Brown et al. 2020, Language Models are Few-Shot Learners, Table D.1"),
    KnownModel("Gopher", 280e9, 300e9, "Rae et al. 2021, Scaling Language Models: ... Gopher, Table 1"),
    KnownModel("Chinchilla", 70e9, 1.4e12, "Hoffmann et al. 2022, Training Compute-Optimal LLMs, Table 1"),
    KnownModel("LLaMA-7B", 6.7e9, 1.0e12, "Touvron et al. 2023, LLaMA: Open and Efficient Foundation LMs, Table 2"),
    KnownModel("LLaMA-65B", 65.2e9, 1.4e12, "Touvron et al. 2023, LLaMA: Open and Efficient Foundation LMs, Table 2"),
    KnownModel("Llama-2-7B", 7e9, 2.0e12, "Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models, Table 1"),
    KnownModel("Llama-2-70B", 70e9, 2.0e12, "Touvron et al. 2023, Llama 2: Open Foundation and Fine-Tuned Chat Models, Table 1"),
    KnownModel("BloombergGPT", 50.6e9, 569e9, "Wu et al. 2023, BloombergGPT, sec. 3 (569B tokens trained, "
                                              "of a 708B corpus: 363B financial + 345B public)"),
)


def known_models_table(models=KNOWN_MODELS, fit=HOFFMANN_2022):
    """The models with their training FLOPs (6ND), PF/s-days, tokens per parameter and the rule's size for that compute."""
    if isinstance(models, (str, bytes)) or not hasattr(models, "__iter__") or not list(models):
        raise ValueError(f"models must be a non-empty list of KnownModel (default: KNOWN_MODELS), not {models!r}")
    rows = []
    for i, m in enumerate(models):
        if not isinstance(m, KnownModel):
            raise TypeError(f"models[{i}] must be a KnownModel(name, n_params, n_tokens, source), not {m!r}")
        flops = training_flops(m.n_params, m.n_tokens)
        rows.append({"model": m.name, "parameters": m.n_params, "tokens": m.n_tokens, "FLOPs (6ND)": flops,
                     "PF/s-days": flops_to_pf_days(flops), "tokens per parameter": m.n_tokens / m.n_params,
                     "20-tokens/param size for this compute": compute_optimal_by_rule(flops, fit=fit).n_params,
                     "source": m.source})
    return pd.DataFrame(rows).set_index("model")
