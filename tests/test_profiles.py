"""Tests for labhelpers.profiles: choosing a profile, budgets, overrides, immutability."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from labhelpers import profiles
from labhelpers.profiles import PROFILES, Profile, get_profile, profile_name

EXPECTED_NAMES = {"tiny", "embedded", "course"}  # the three profiles DESIGN.md describes


@pytest.fixture(autouse=True)
def no_profile_env(monkeypatch):
    monkeypatch.delenv("LABS_PROFILE", raising=False)


def test_the_three_designed_profiles_exist():
    assert set(PROFILES) == EXPECTED_NAMES
    for name, prof in PROFILES.items():
        assert isinstance(prof, Profile)
        assert prof.name == name


def test_default_is_embedded():
    assert profile_name() == "embedded"
    assert get_profile().name == "embedded"
    assert get_profile(None) is PROFILES["embedded"]


def test_empty_env_var_means_default(monkeypatch):
    monkeypatch.setenv("LABS_PROFILE", "")
    assert get_profile().name == "embedded"


@pytest.mark.parametrize("value", ["tiny", "TINY", " tiny "])
def test_env_var_chooses_profile(monkeypatch, value):
    monkeypatch.setenv("LABS_PROFILE", value)
    assert get_profile().name == "tiny"


def test_explicit_argument_wins_over_env(monkeypatch):
    monkeypatch.setenv("LABS_PROFILE", "tiny")
    assert get_profile("course").name == "course"
    assert get_profile("embedded").name == "embedded"


def test_profile_object_passes_through():
    variant = PROFILES["tiny"].with_overrides(eval_size=3)
    assert get_profile(variant) is variant


@pytest.mark.parametrize("how", ["argument", "env"])
def test_unknown_profile_names_argument_and_lists_valid(monkeypatch, how):
    if how == "env":
        monkeypatch.setenv("LABS_PROFILE", "huge")
        call = get_profile
    else:
        def call():
            return get_profile("huge")
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "profile=" in message and "'huge'" in message
    for name in EXPECTED_NAMES:
        assert repr(name) in message


def test_non_string_profile_is_a_type_error():
    with pytest.raises(TypeError, match="profile"):
        get_profile(3)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_every_profile_has_a_budget_for_lab_01(name):
    prof = PROFILES[name]
    budget = prof.budget_s("01_in_context_learning")
    assert isinstance(budget, int) and budget > 0
    # a path to the notebook means the same notebook
    assert prof.budget_s("notebooks/01_in_context_learning.ipynb") == budget


def test_unknown_notebook_budget_is_a_value_error():
    with pytest.raises(ValueError, match="notebook='99_nothing'"):
        PROFILES["tiny"].budget_s("99_nothing")


def test_offline_profiles_never_need_the_hub():
    built_here = {profiles.TINY_CAUSAL, profiles.TINY_SEQ2SEQ, profiles.EMBEDDED_MODEL}
    for prof in PROFILES.values():
        if not prof.needs_network:
            assert prof.model in built_here and prof.seq2seq_model in built_here, prof.name
            assert prof.data in {"generated", "project"}, prof.name
    assert PROFILES["course"].needs_network


def test_with_overrides_returns_changed_copy():
    base = PROFILES["embedded"]
    before = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    new_eval, new_seed = base.eval_size + 1, base.seed + 1
    changed = base.with_overrides(eval_size=new_eval, seed=new_seed)
    assert (changed.eval_size, changed.seed) == (new_eval, new_seed)
    assert changed.model == base.model and changed.name == base.name
    assert {f.name: getattr(base, f.name) for f in dataclasses.fields(base)} == before  # original unchanged
    assert PROFILES["embedded"] is base


def test_with_overrides_rejects_unknown_fields():
    with pytest.raises(ValueError) as info:
        PROFILES["tiny"].with_overrides(eval_sise=3)
    assert "eval_sise" in str(info.value)
    assert "eval_size" in str(info.value)  # lists the valid fields


def test_profiles_are_immutable():
    prof = PROFILES["tiny"]
    budget = prof.budget_s("01_in_context_learning")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.eval_size = prof.eval_size + 1
    with pytest.raises(TypeError):
        PROFILES["mine"] = prof
    with pytest.raises(TypeError):
        prof.budgets_s["01_in_context_learning"] = budget + 1
    assert "mine" not in PROFILES
    assert PROFILES["tiny"].budget_s("01_in_context_learning") == budget


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_notebook_has_a_budget_in_every_profile(name):
    notebooks = sorted(Path(__file__).resolve().parent.parent.glob("notebooks/[0-9][0-9]_*.ipynb"))
    assert notebooks, "no notebooks found"
    for notebook in notebooks:
        assert PROFILES[name].budget_s(notebook.name) > 0
