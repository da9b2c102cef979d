"""Profiles: named bundles of choices (model, data, reward, sizes, steps, time budgets).

The same notebook code runs on every profile; only where weights and data come from,
and how much work is done, differs. Choose one with the `LABS_PROFILE` environment
variable or a notebook's papermill `parameters` cell (`profile = "tiny"`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

__all__ = ['DEFAULT_PROFILE', 'ENV_VAR', 'TINY_CAUSAL', 'TINY_SEQ2SEQ', 'EMBEDDED_MODEL', 'Profile', 'PROFILES',
           'profile_name', 'get_profile']

DEFAULT_PROFILE = "embedded"
ENV_VAR = "LABS_PROFILE"

# Model ids that labhelpers builds or converts locally instead of downloading.
TINY_CAUSAL = "tiny-llama"
TINY_SEQ2SEQ = "tiny-t5"
EMBEDDED_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Profile:
    """What one profile means. Immutable: use `profile.with_overrides(...)` for a variant."""

    name: str
    description: str
    model: str  # the main model: an id labhelpers knows, a hub id or a local folder
    seq2seq_model: str  # an encoder-decoder model for the labs that contrast the two families
    data: str  # "generated", "project", a hub dataset id, or a DialogSum-format JSONL path
    reward: str  # "offline" or a hub id of a toxicity classifier
    needs_network: bool  # True when weights or data come from the hub
    eval_size: int  # held-out dialogues scored per condition
    shots_pool: int  # candidate in-context examples drawn from the train split
    max_new_tokens: int
    batch_size: int
    prompt_token_limit: int  # prompt budget in tokens (at most the model's window)
    train_steps: int  # optimizer steps of a fine-tuning run in the training labs
    train_batch_size: int = 4  # examples per optimizer step
    learning_rate: float = 1e-4  # full fine-tuning (AdamW, linear decay)
    seed: int = 0
    budgets_s: Mapping[str, int] = field(default_factory=dict)  # notebook stem -> wall seconds

    def budget_s(self, notebook: str) -> int:
        """Wall-time budget for a notebook (its stem, e.g. "01_in_context_learning")."""
        stem = os.path.splitext(os.path.basename(notebook))[0]
        if stem not in self.budgets_s:
            raise ValueError(f"notebook={stem!r} has no time budget in profile {self.name!r}; "
                             f"known: {sorted(self.budgets_s)}")
        return self.budgets_s[stem]

    def with_overrides(self, **changes) -> "Profile":
        """A copy of this profile with some fields changed (e.g. a smaller eval_size)."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"with_overrides got unknown field(s) {sorted(unknown)}; "
                             f"valid: {sorted(self.__dataclass_fields__)}")
        return replace(self, **changes)


PROFILES: Mapping[str, Profile] = MappingProxyType({
    "tiny": Profile(
        name="tiny",
        description="tiny Llama and T5 built from small configs, random weights; for tests",
        model=TINY_CAUSAL,
        seq2seq_model=TINY_SEQ2SEQ,
        data="generated",
        reward="offline",
        needs_network=False,
        eval_size=8,
        shots_pool=8,
        max_new_tokens=12,
        batch_size=8,
        prompt_token_limit=1024,
        train_steps=8,
        train_batch_size=4,
        learning_rate=1e-3,  # random weights: a large step shows the loss falling within a few steps
        budgets_s=MappingProxyType({"01_in_context_learning": 120, "02_memory_precision_quantization": 120,
                                    "03_scaling_laws_compute_budgets": 120, "04_distributed_training": 120, "05_instruction_fine_tuning": 120,
                                    "06_multitask_and_forgetting": 120,
                                    "07_peft_lora_prompt_tuning": 120,
                                    "08_evaluation_and_benchmarks": 120,
                                    "09_rlhf_ppo_detoxification": 120,
                                    "10_rlhf_beyond_ppo": 120}),
    ),
    "embedded": Profile(
        name="embedded",
        description="SmolLM2-135M-Instruct shipped in a PyPI package; the project's dialogues; offline, CPU",
        model=EMBEDDED_MODEL,
        seq2seq_model=TINY_SEQ2SEQ,
        data="project",
        reward="offline",
        needs_network=False,
        eval_size=60,
        shots_pool=40,
        max_new_tokens=48,
        batch_size=16,
        prompt_token_limit=1536,
        train_steps=16,
        train_batch_size=4,
        learning_rate=1e-4,
        budgets_s=MappingProxyType({"01_in_context_learning": 900, "02_memory_precision_quantization": 420,
                                    "03_scaling_laws_compute_budgets": 240, "04_distributed_training": 180, "05_instruction_fine_tuning": 600,
                                    "06_multitask_and_forgetting": 1080,
                                    "07_peft_lora_prompt_tuning": 1500,
                                    "08_evaluation_and_benchmarks": 120,
                                    "09_rlhf_ppo_detoxification": 1800,
                                    "10_rlhf_beyond_ppo": 360}),
    ),
    "course": Profile(
        name="course",
        description="google/flan-t5-base on knkarthick/dialogsum, as the course taught it; needs the hub, GPU advised",
        model="google/flan-t5-base",
        seq2seq_model="google/flan-t5-base",
        data="knkarthick/dialogsum",
        reward="facebook/roberta-hate-speech-dynabench-r4-target",
        needs_network=True,
        eval_size=200,
        shots_pool=200,
        max_new_tokens=64,
        batch_size=32,
        prompt_token_limit=512,
        train_steps=1000,
        train_batch_size=8,
        learning_rate=5e-5,
        budgets_s=MappingProxyType({"01_in_context_learning": 1800, "02_memory_precision_quantization": 1800,
                                    "03_scaling_laws_compute_budgets": 1800, "04_distributed_training": 1800, "05_instruction_fine_tuning": 3600,
                                    "06_multitask_and_forgetting": 5400,
                                    "07_peft_lora_prompt_tuning": 7200,
                                    "08_evaluation_and_benchmarks": 1800,
                                    "09_rlhf_ppo_detoxification": 3600,
                                    "10_rlhf_beyond_ppo": 3600}),
    ),
})


def profile_name(name: str | None = None) -> str:
    """The profile to use: `name` if given, else $LABS_PROFILE, else the default."""
    chosen = name if name not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_PROFILE
    if not isinstance(chosen, str):
        raise TypeError(f"profile must be a string such as 'embedded', not {type(chosen).__name__}")
    return chosen.strip().lower()


def get_profile(name: str | None = None) -> Profile:
    """Look up a profile by name (None: $LABS_PROFILE or 'embedded')."""
    if isinstance(name, Profile):
        return name
    chosen = profile_name(name)
    if chosen not in PROFILES:
        raise ValueError(f"profile={chosen!r} is unknown; choose one of {sorted(PROFILES)} "
                         f"(argument or ${ENV_VAR})")
    return PROFILES[chosen]
