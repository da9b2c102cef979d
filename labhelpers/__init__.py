"""labhelpers: the thin helper package every lab imports (`from labhelpers import ...`).

On import it checks, in a child process and once per machine, whether bf16 matrix multiplies
crash this CPU, and caps oneDNN before torch loads if that makes them safe (see device.py). It also
silences one library deprecation warning that only libraries can act on (named below).
"""

import platform as _platform
import warnings as _warnings

from .device import guard_cpu_bf16 as _guard_cpu_bf16

# peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` each time it wraps a model (add_adapter,
# and TRL's trainers given a peft_config): a FutureWarning in labs 07, 09 and 10 that no student can act on.
_warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)

if _platform.machine().lower() in {"x86_64", "amd64"}:
    _guard_cpu_bf16()

from .adapters import (add_adapter, adapter_size_bytes, load_adapter, load_model_4bit, lora_config,  # noqa: E402
                       merge_adapter, model_size_bytes, prompt_tuning_config, qlora_available, save_adapter,
                       trainable_summary)
from .data import DataUnavailableError, load_dialogues, read_jsonl  # noqa: E402
from .device import (choose_dtype, cpu_bf16_safe, environment_summary, pick_device,  # noqa: E402
                     seed_everything, trainer_precision)
from .generate import generate_texts, make_generation_config  # noqa: E402
from .metrics import (Estimate, bootstrap_ci, comparison_table, distinct_n, format_table,  # noqa: E402
                      metric_table, paired_difference, score_summaries)
from .models import ModelUnavailableError, count_parameters, load_model, model_family  # noqa: E402
from .profiles import PROFILES, Profile, get_profile  # noqa: E402
from .train import TrainConfig, fine_tune, load_fine_tuned  # noqa: E402
from .rewards import (HFToxicityScorer, ProfanityCheckScorer, SafeTypeScorer, ToxicityScorer,  # noqa: E402
                      ToxicityScores, evaluation_scorer, reward_scorer)
from .rl import PPOConfig, PPOTrainer  # noqa: E402
from .prompts import (TEMPLATES, ContextWindowError, build_chat, build_prompt, context_window,  # noqa: E402
                      count_tokens, fit_prompt, model_input, select_examples)

__all__ = [
    "PROFILES", "TEMPLATES", "ContextWindowError", "DataUnavailableError", "Estimate", "ModelUnavailableError",
    "Profile", "bootstrap_ci", "build_chat", "build_prompt", "choose_dtype", "comparison_table", "context_window",
    "count_parameters", "count_tokens", "cpu_bf16_safe", "distinct_n", "environment_summary", "fit_prompt",
    "format_table", "generate_texts", "get_profile", "load_dialogues", "load_model", "make_generation_config",
    "metric_table", "model_family", "model_input", "paired_difference", "pick_device", "read_jsonl",
    "score_summaries", "seed_everything", "select_examples", "trainer_precision", "TrainConfig", "fine_tune",
    "load_fine_tuned", "add_adapter", "adapter_size_bytes", "load_adapter", "load_model_4bit", "lora_config",
    "merge_adapter", "model_size_bytes", "prompt_tuning_config", "qlora_available", "save_adapter",
    "trainable_summary", "HFToxicityScorer", "ProfanityCheckScorer", "SafeTypeScorer", "ToxicityScorer",
    "ToxicityScores", "evaluation_scorer", "reward_scorer", "PPOConfig", "PPOTrainer",
]
