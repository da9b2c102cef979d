"""Tests for lab 03's calculators (6ND, petaflop/s-days, Kaplan and Chinchilla laws, compute-optimal sizes),
exported from the notebook, and for labhelpers.scaling's power-law fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labhelpers import (BESIROGLU_2024, HOFFMANN_2022, KNOWN_MODELS, PF_DAY_FLOPS, chinchilla_loss, compute_optimal,
                        compute_optimal_by_rule, fit_power_law, flops_to_pf_days, kaplan_loss_d, kaplan_loss_n,
                        known_models_table, pf_days_to_flops, training_flops)


def test_chinchilla_training_compute_is_5_9e23_flops():
    assert training_flops(70e9, 1.4e12) == pytest.approx(5.88e23)
    assert training_flops(np.array([1e9, 2e9]), 1e10).tolist() == [6e19, 1.2e20]


def test_petaflop_days():
    assert PF_DAY_FLOPS == 8.64e19
    assert flops_to_pf_days(8.64e19) == pytest.approx(1.0)
    assert flops_to_pf_days(training_flops(175e9, 300e9)) == pytest.approx(3646, rel=1e-3)  # GPT-3: "3.64E+03"
    assert pf_days_to_flops(flops_to_pf_days(3.3e22)) == pytest.approx(3.3e22)


def test_chinchilla_loss_uses_the_published_constants():
    n, d = 70e9, 1.4e12
    assert chinchilla_loss(n, d) == pytest.approx(1.69 + 406.4 / n ** 0.34 + 410.7 / d ** 0.28)
    assert chinchilla_loss(1e30, 1e30) == pytest.approx(1.69, abs=1e-3)  # the irreducible loss E
    assert chinchilla_loss(1e9, 1e11) < chinchilla_loss(1e9, 1e10)
    assert chinchilla_loss(1e10, 1e10) < chinchilla_loss(1e9, 1e10)


def test_kaplan_power_laws():
    # (N_c / N)^alpha_N and (D_c / D)^alpha_D worked out by hand: log10(8.8e13 / 1e9) = 4.9445, times 0.076
    # is 0.37578, and 10^0.37578 = 2.3756; a changed constant or exponent moves these.
    assert kaplan_loss_n(1e9) == pytest.approx(2.3756403, rel=1e-7)
    assert kaplan_loss_n(1e12) == pytest.approx(1.4053377, rel=1e-7)
    assert kaplan_loss_d(1e10) == pytest.approx(2.2624418, rel=1e-7)
    assert kaplan_loss_d(1e12) == pytest.approx(1.4607551, rel=1e-7)
    assert kaplan_loss_n(8.8e13 / 2 ** (1 / 0.076)) == pytest.approx(2.0)
    assert kaplan_loss_n(np.array([1e9, 1e12])) == pytest.approx([2.3756403, 1.4053377], rel=1e-7)


def test_the_refit_uses_besiroglus_constants():
    # E + A / N^alpha + B / D^beta with E = 1.8172, A = 482.01, B = 2085.43, alpha = 0.3478, beta = 0.3658
    assert chinchilla_loss(70e9, 1.4e12, BESIROGLU_2024) == pytest.approx(1.9738819, rel=1e-7)
    assert chinchilla_loss(1e30, 1e30, BESIROGLU_2024) == pytest.approx(1.8172, abs=1e-6)  # E, the irreducible loss
    assert chinchilla_loss(70e9, 1.4e12) == pytest.approx(1.9366455, rel=1e-7)  # the published constants


def test_closed_form_optimum_against_values_worked_out_by_hand():
    # G = (alpha A / (beta B))^(1/(alpha+beta)), N = G (C/6)^(beta/(alpha+beta)), D = C / 6N
    assert compute_optimal(1e23, BESIROGLU_2024).n_params == pytest.approx(2.944613e10, rel=1e-6)
    assert compute_optimal(1e23).n_params == pytest.approx(1.459831e10, rel=1e-6)
    assert compute_optimal(1e23).n_tokens == pytest.approx(1.141685e12, rel=1e-6)
    rule = compute_optimal_by_rule(1.2e23, tokens_per_param=5)  # N = sqrt(1.2e23 / 30) = 6.3246e10
    assert (rule.n_params, rule.n_tokens) == (pytest.approx(6.3245553e10), pytest.approx(3.1622777e11))
    assert rule.loss == pytest.approx(chinchilla_loss(6.3245553e10, 3.1622777e11), rel=1e-7)


def test_closed_form_optimum_minimises_the_loss_on_its_isoflop_curve():
    budget = 1e22
    best = compute_optimal(budget)
    assert training_flops(best.n_params, best.n_tokens) == pytest.approx(budget)
    sizes = best.n_params * np.logspace(-1, 1, 41)
    losses = chinchilla_loss(sizes, budget / (6 * sizes))
    assert losses.min() >= best.loss - 1e-12
    assert sizes[np.argmin(losses)] == pytest.approx(best.n_params, rel=0.13)  # grid step 12%


@pytest.mark.parametrize("budget", [1e21, 1e22, 1e23, 1e24])
def test_compute_optimal_tokens_per_parameter_is_near_20(budget):
    # The replication of approach 3 agrees with Chinchilla's approaches 1 and 2: ~20 tokens per parameter.
    fitted = compute_optimal(budget, fit=BESIROGLU_2024)
    assert 15 < fitted.tokens_per_param < 25, fitted
    rule = compute_optimal_by_rule(budget, fit=BESIROGLU_2024)
    assert rule.tokens_per_param == pytest.approx(20)
    assert rule.n_params == pytest.approx(fitted.n_params, rel=0.2)
    assert rule.loss - fitted.loss < 0.005  # the rule's loss is within 0.005 nats of the optimum


def test_published_approach_3_constants_favour_more_tokens_per_parameter():
    # Known discrepancy (Besiroglu et al. 2024): the rounded published constants put the optimum at
    # ~50-100 tokens per parameter for 1e21-1e24 FLOPs, not the ~20 of the paper's other two approaches.
    ratios = [compute_optimal(c, fit=HOFFMANN_2022).tokens_per_param for c in (1e21, 1e24)]
    assert 40 < ratios[0] < ratios[1] < 110
    chinchilla_budget = training_flops(70e9, 1.4e12)
    assert 25e9 < compute_optimal(chinchilla_budget).n_params < 70e9


def test_known_models_table():
    table = known_models_table()
    assert list(table.index) == [m.name for m in KNOWN_MODELS]
    assert all(m.source for m in KNOWN_MODELS)
    assert table.loc["Chinchilla", "tokens per parameter"] == pytest.approx(20)
    assert table.loc["GPT-3", "tokens per parameter"] < 2
    assert table.loc["Chinchilla", "FLOPs (6ND)"] == pytest.approx(5.88e23)
    # Chinchilla's point: for GPT-3's compute, the 20-tokens rule asks for a much smaller model
    assert table.loc["GPT-3", "20-tokens/param size for this compute"] == pytest.approx(5.1234754e10)  # sqrt(3.15e23 / 120)
    assert table.loc["GPT-3", "PF/s-days"] == pytest.approx(3645.8333, rel=1e-7)
    # the Llama models: 65B and 70B near 20 tokens per parameter, the 7B siblings far above it
    assert table.loc["LLaMA-65B", "tokens per parameter"] == pytest.approx(21.47, abs=0.01)
    assert table.loc["Llama-2-70B", "tokens per parameter"] == pytest.approx(28.57, abs=0.01)
    assert table.loc["Llama-2-7B", "tokens per parameter"] == pytest.approx(285.71, abs=0.01)


def test_fit_recovers_a_power_law_from_noisy_points():
    rng = np.random.default_rng(0)
    x = np.logspace(5, 9, 12)
    y = 30.0 * x ** -0.2 * np.exp(rng.normal(0, 0.01, x.size))
    fit = fit_power_law(x, y)
    assert fit.b == pytest.approx(0.2, abs=0.01)
    assert fit.a == pytest.approx(30.0, rel=0.15)
    assert fit.c == 0 and fit.rmse_log < 0.02
    assert fit.predict(1e7) == pytest.approx(30.0 * 1e7 ** -0.2, rel=0.02)
    assert fit(np.array([1e6, 1e8])).shape == (2,)


def test_fit_with_irreducible_loss_recovers_all_three_parameters():
    rng = np.random.default_rng(1)
    x = np.logspace(4, 10, 25)
    y = (400.0 * x ** -0.34 + 1.7) * np.exp(rng.normal(0, 0.003, x.size))
    fit = fit_power_law(x, y, irreducible=True)
    assert fit.c == pytest.approx(1.7, abs=0.1)
    assert fit.b == pytest.approx(0.34, abs=0.03)
    plain = fit_power_law(x, y)  # forcing c = 0 fits worse and flattens the exponent
    assert plain.rmse_log > 3 * fit.rmse_log and plain.b < fit.b
    assert "x^(-" in str(fit)


@pytest.mark.parametrize("call, argument", [
    (lambda: training_flops(-1, 10), "n_params="),
    (lambda: training_flops(10, 0), "n_tokens="),
    (lambda: flops_to_pf_days(float("nan")), "flops="),
    (lambda: compute_optimal(-1e20), "flops="),
    (lambda: compute_optimal_by_rule(1e20, tokens_per_param=0), "tokens_per_param="),
    (lambda: fit_power_law([1, 2, 3], [1, 2]), "same length"),
    (lambda: fit_power_law([1, 2], [3, -1]), "losses="),
    (lambda: fit_power_law([1, 2], [3, 2], irreducible=True), "xs needs at least 3"),
    (lambda: fit_power_law([2, 2, 2], [3, 2, 1]), "2 distinct"),
    (lambda: fit_power_law("abc", [1, 2, 3]), "xs="),
])
def test_bad_input_is_one_line_naming_the_argument(call, argument):
    with pytest.raises(ValueError) as info:
        call()
    assert argument in str(info.value) and "\n" not in str(info.value)


def test_six_n_d_matches_a_real_forward_and_backward_count():
    # 6ND is 2 FLOPs per weight per token forward and 4 backward: check the forward half on a Linear layer
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    layer = torch.nn.Linear(256, 512, bias=False)
    x = torch.randn(8, 256, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        layer(x).sum().backward()
    n_params, n_tokens = layer.weight.numel(), 8
    assert counter.get_total_flops() == training_flops(n_params, n_tokens)
    assert math.isclose(training_flops(n_params, n_tokens) / 3, 2 * n_params * n_tokens)
