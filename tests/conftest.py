"""Shared fixtures for the labhelpers unit tests (tiny profile: random tiny models, generated dialogues).

The tiny models load from the default cache ($LABS_CACHE or ~/.cache/labhelpers), so they are built
once per machine and reused across runs. A test that builds, corrupts or deletes cached things must
point LABS_CACHE at a temporary folder first (the `tmp_cache` fixture does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import labhelpers  # noqa: F401  first: its bf16 guard must run before torch loads
import torch

# The tiny models gain nothing from several threads, and when another process keeps the cores busy
# torch's intra-op threads wait on each other: on a 2-core machine that made generation ~100x slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
# Real DialogSum dev split: not ours to ship, so it may be absent (tests that use it skip).
DIALOGSUM_DEV = REPO.parent / "shared" / "data" / "dialogsum" / "dialogsum.dev.jsonl"


@pytest.fixture(scope="session")
def tiny_llama():
    """(model, tokenizer) of the tiny decoder-only model, loaded once per session."""
    from labhelpers.models import load_model

    return load_model("tiny-llama", profile="tiny")


@pytest.fixture(scope="session")
def tiny_t5():
    """(model, tokenizer) of the tiny encoder-decoder model, loaded once per session."""
    from labhelpers.models import load_model

    return load_model("tiny-t5", profile="tiny")


@pytest.fixture(scope="session")
def tiny_dialogues():
    """The tiny profile's dialogues (seeded, generated) as a DatasetDict."""
    from labhelpers.data import load_dialogues

    return load_dialogues(profile="tiny")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """An empty LABS_CACHE for tests that build or corrupt cached models (the real cache stays untouched)."""
    folder = tmp_path / "labs-cache"
    monkeypatch.setenv("LABS_CACHE", str(folder))
    return folder


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1, also where huggingface_hub and datasets read it once at import time.

    Without the patched constants, setting the variable after import has no effect and the libraries
    retry the network for tens of seconds before failing.
    """
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
