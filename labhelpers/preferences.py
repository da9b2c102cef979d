"""TRL's current RLHF trainers (GRPO, RLOO, DPO) set up for the labs: rewards, preference pairs, configs.

- `toxicity_reward(scorer)`: a TRL reward function (`reward_func(prompts=..., completions=..., **kwargs)`)
  built from a ToxicityScorer; `checked_reward(func)` wraps any reward function so that a wrong number of
  rewards, a missing one or a NaN stops training with an error naming the function and the completion
  (TRL itself quietly treats NaN and None as "unscorable" and zeroes their advantage).
- `sample_preference_pairs(...)`: DPO's data from the policy's own samples: several completions per prompt,
  ranked by the reward; the best becomes `chosen`, the worst `rejected`; prompts whose samples tie are dropped.
- `trainer_config(method, ...)`: GRPOConfig / RLOOConfig / DPOConfig with what a CPU needs (no bf16, which
  TRL turns on by default), no gradient checkpointing, no reports, no checkpoints, a log every step, a seed.
- `group_advantages(rewards, G, "grpo" | "rloo")` and `dpo_loss(...)`: each method's maths as TRL computes it.
- `log_frame(trainer)`: the trainer's per-step logs as a table; `read_method_row(path)`: a lab's result row.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

METHODS = ("grpo", "rloo", "dpo")
# The row a lab writes for the comparison table of lab 10 (lab 09 writes PPO's in outputs/09_rlhf_ppo/results.json).
METHOD_ROW_KEYS = {"method": str, "toxicity_reward_model": float, "toxicity_judge": float, "judge_change": list,
                   "rouge_l": float, "kl": float, "train_seconds": float, "steps": int}
# optional: the 95% intervals behind the means above, each [mean, low, high] (rows written before they existed lack them)
METHOD_ROW_INTERVALS = ("toxicity_reward_model_ci", "toxicity_judge_ci", "rouge_l_ci", "rouge_change", "kl_ci")


# ---------------------------------------------------------------------------------------------
# Reward functions for GRPOTrainer / RLOOTrainer
# ---------------------------------------------------------------------------------------------

def completion_texts(completions) -> list[str]:
    """The text of each completion TRL passes to a reward function: a string, or (chat) a list of messages."""
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise TypeError(f"completions must be a list (one completion per sample), not {type(completions).__name__}")
    texts = []
    for i, completion in enumerate(completions):
        if isinstance(completion, str):
            texts.append(completion)
        elif (isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping)
              and isinstance(completion[-1].get("content"), str)):
            texts.append(completion[-1]["content"])  # conversational: [{"role": "assistant", "content": ...}]
        else:
            raise TypeError(f"completions[{i}] is neither text nor a list of chat messages with a 'content' string: "
                            f"{completion!r:.80}")
    return texts


def _name_of(func) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


def checked_reward(func: Callable, name: str | None = None) -> Callable:
    """`func` as a TRL reward function that refuses bad output: one finite number per completion, or an error.

    TRL logs each reward function under its `__name__` (`rewards/<name>/mean`); `name` sets it.
    """
    if not callable(func):
        raise TypeError(f"func must be a reward function (prompts=..., completions=..., **kwargs), not "
                        f"{type(func).__name__}")
    label = name or _name_of(func)

    def reward(prompts=None, completions=None, **kwargs) -> list[float]:
        if completions is None:
            raise TypeError(f"reward function {label!r} was called without completions=")
        texts = completion_texts(completions)
        out = func(prompts=prompts, completions=completions, **kwargs)
        if isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
            raise TypeError(f"reward function {label!r} returned {type(out).__name__}; it must return a list with "
                            f"one number per completion ({len(texts)} here)")
        out = list(np.asarray(out, dtype=object).reshape(-1)) if isinstance(out, np.ndarray) else list(out)
        if len(out) != len(texts):
            raise ValueError(f"reward function {label!r} returned {len(out)} rewards for {len(texts)} completions; "
                             "it must return exactly one reward per completion, in order")
        rewards = []
        for i, value in enumerate(out):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(value)):
                raise ValueError(f"reward function {label!r} returned {value!r} for completion {i} ({texts[i]!r:.80}); "
                                 "every reward must be a finite number (TRL would silently drop it from training)")
            rewards.append(float(value))
        return rewards

    reward.__name__ = label
    reward.__doc__ = f"{label}: {func.__doc__ or 'a reward function'} (checked: one finite reward per completion)"
    return reward


def toxicity_reward(scorer, name: str = "toxicity_reward") -> Callable:
    """A TRL reward function from a ToxicityScorer: `scorer.reward(text)` for each completion (higher = cleaner)."""
    if not callable(getattr(scorer, "reward", None)):
        raise TypeError(f"scorer must be a ToxicityScorer (see labhelpers.rewards.reward_scorer), not "
                        f"{type(scorer).__name__}")

    def score(prompts=None, completions=None, **kwargs):
        return np.asarray(scorer.reward(completion_texts(completions)), dtype=np.float64)

    score.__name__ = name
    score.__doc__ = f"the reward of {scorer!r}"
    return checked_reward(score, name)


# ---------------------------------------------------------------------------------------------
# The maths of the three methods, as TRL 1.16 computes it (for reading and for the exercises)
# ---------------------------------------------------------------------------------------------

def group_advantages(rewards, group_size: int, method: str = "grpo") -> np.ndarray:
    """Advantages of completions laid out in groups of `group_size` consecutive ones per prompt (TRL's layout).

    "grpo": (r - group mean) / (group std with Bessel's correction + 1e-4); "rloo": r minus the mean of the other
    group_size - 1 rewards of its group (the leave-one-out baseline), unscaled.
    """
    values = np.asarray(rewards, dtype=np.float64).reshape(-1)
    group_size = _positive_int("group_size", group_size)
    if group_size < 2:
        raise ValueError(f"group_size={group_size} must be >= 2: a baseline needs other completions of the prompt")
    if values.size == 0 or values.size % group_size:
        raise ValueError(f"{values.size} rewards do not split into groups of {group_size}; give group_size rewards "
                         "per prompt, each prompt's after each other")
    if not np.isfinite(values).all():
        raise ValueError("rewards must be finite numbers")
    groups = values.reshape(-1, group_size)
    if method == "grpo":
        std = groups.std(axis=1, ddof=1, keepdims=True)
        return ((groups - groups.mean(axis=1, keepdims=True)) / (std + 1e-4)).reshape(-1)
    if method == "rloo":
        others = (groups.sum(axis=1, keepdims=True) - groups) / (group_size - 1)
        return (groups - others).reshape(-1)
    raise ValueError(f"method={method!r} must be 'grpo' or 'rloo'")


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float = 0.1) -> float:
    """DPO's loss, the mean over pairs of -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))).

    Each argument holds one summed log-probability of a completion per pair (policy or reference, chosen or
    rejected). log 2 when policy and reference agree; towards 0 as the chosen pull ahead.
    """
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (policy_chosen, policy_rejected, ref_chosen,
                                                                     ref_rejected)]
    if len({a.size for a in arrays}) != 1 or arrays[0].size == 0:
        raise ValueError(f"give one log-probability per pair in each of the four arguments (got sizes "
                         f"{[a.size for a in arrays]})")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta={beta!r} must be a positive number")
    pc, pr, rc, rr = arrays
    margin = beta * ((pc - rc) - (pr - rr))
    return float(np.mean(np.logaddexp(0.0, -margin)))  # -log sigmoid(x) = log(1 + exp(-x)), computed stably


# ---------------------------------------------------------------------------------------------
# Preference pairs for DPOTrainer, from the policy's own samples
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreferencePairs:
    """DPO pairs built from samples ranked by a reward, with the counts of what was kept and dropped.

    `rows`: {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}; chat prompts give chat
    completions ([{"role": "assistant", "content": ...}]), text prompts give text.
    """

    rows: list[dict]
    n_prompts: int  # prompts sampled
    samples_per_prompt: int
    n_ties: int  # prompts dropped: their best and worst sample scored the same (within min_margin)
    n_empty: int  # empty samples, never ranked (an empty text is no summary)
    samples: list[list[str]] = field(default_factory=list, repr=False)
    rewards: list[list[float]] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def margins(self) -> np.ndarray:
        """Reward of chosen minus reward of rejected, per pair (all > 0)."""
        return np.array([r["chosen_reward"] - r["rejected_reward"] for r in self.rows], dtype=np.float64)

    def to_dataset(self):
        """A datasets.Dataset with the columns DPOTrainer reads: prompt, chosen, rejected."""
        from datasets import Dataset

        if not self.rows:
            raise ValueError(f"no preference pairs: all {self.n_prompts} prompts tied ({self.n_ties}) or had fewer "
                             "than two non-empty samples; sample more per prompt, at a higher temperature, or more "
                             "prompts")
        if len({isinstance(r["prompt"], str) for r in self.rows}) > 1:
            raise ValueError("the pairs mix text prompts and chat prompts; a dataset holds one kind")
        return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in self.rows])


def _as_completion(prompt, text: str):
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]


def rank_into_pairs(prompts: Sequence, samples: Sequence[Sequence[str]], rewards: Sequence[Sequence[float]], *,
                    min_margin: float = 0.0) -> PreferencePairs:
    """For each prompt: chosen = its highest-reward sample, rejected = its lowest; ties (gap <= min_margin) dropped.

    `samples[i]` are prompt i's completions and `rewards[i]` their rewards (same length, finite). Empty samples
    are not ranked. Among equal rewards the first sample wins, so the result repeats exactly.
    """
    if isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of prompts, not {type(prompts).__name__}")
    if len(samples) != len(prompts) or len(rewards) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts, {len(samples)} lists of samples and {len(rewards)} lists of "
                         "rewards; give one list of samples and one of rewards per prompt")
    if isinstance(min_margin, bool) or not isinstance(min_margin, (int, float)) or not min_margin >= 0:
        raise ValueError(f"min_margin={min_margin!r} must be a number >= 0")
    rows, ties, empty, sizes = [], 0, 0, set()
    kept_samples, kept_rewards = [], []
    for i, (prompt, texts, values) in enumerate(zip(prompts, samples, rewards)):
        texts = list(texts)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(texts) != len(values):
            raise ValueError(f"prompt {i}: {len(texts)} samples but {len(values)} rewards; one reward per sample")
        if not np.isfinite(values).all():
            raise ValueError(f"prompt {i}: rewards {values.tolist()} are not all finite numbers")
        bad = [j for j, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(f"prompt {i}: sample {bad[0]} is a {type(texts[bad[0]]).__name__}, not a string")
        sizes.add(len(texts))
        kept_samples.append(texts)
        kept_rewards.append(values.tolist())
        usable = [j for j, t in enumerate(texts) if t.strip()]
        empty += len(texts) - len(usable)
        if len(usable) < 2:
            ties += 1 if len(usable) == 1 else 0
            continue
        best = max(usable, key=lambda j: (values[j], -j))
        worst = min(usable, key=lambda j: (values[j], j))
        if values[best] - values[worst] <= min_margin or texts[best] == texts[worst]:
            ties += 1
            continue
        rows.append({"prompt": prompt, "chosen": _as_completion(prompt, texts[best]),
                     "rejected": _as_completion(prompt, texts[worst]),
                     "chosen_reward": float(values[best]), "rejected_reward": float(values[worst])})
    per_prompt = sizes.pop() if len(sizes) == 1 else 0
    return PreferencePairs(rows, len(prompts), per_prompt, ties, empty, kept_samples, kept_rewards)


def sample_preference_pairs(policy, tokenizer, prompts: Sequence, scorer, *, samples_per_prompt: int = 4,
                            max_new_tokens: int = 40, temperature: float = 0.7, seed: int = 0, batch_size: int = 16,
                            min_margin: float = 0.0, progress: bool = True) -> PreferencePairs:
    """Sample `samples_per_prompt` completions per prompt from `policy`, score them with `scorer.reward`, and rank
    them into DPO pairs (see rank_into_pairs). Seeded: the same call gives the same pairs on the same machine."""
    from .generate import generate_texts, make_generation_config

    if isinstance(samples_per_prompt, bool) or not isinstance(samples_per_prompt, int) or samples_per_prompt < 2:
        raise ValueError(f"samples_per_prompt={samples_per_prompt!r} must be a whole number >= 2 (a pair needs two)")
    if not callable(getattr(scorer, "reward", None)):
        raise TypeError(f"scorer must be a ToxicityScorer (see labhelpers.rewards.reward_scorer), not "
                        f"{type(scorer).__name__}")
    if isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts (chat messages or text)")
    config = make_generation_config(max_new_tokens, do_sample=True, temperature=temperature)
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    texts = generate_texts(policy, tokenizer, repeated, config, batch_size=batch_size, seed=seed, progress=progress,
                           desc="sampling for DPO pairs")
    rewards = np.asarray(scorer.reward(texts), dtype=np.float64)
    if rewards.shape != (len(texts),):
        raise ValueError(f"{scorer!r} returned {rewards.size} rewards for {len(texts)} samples; one per sample")
    k = samples_per_prompt
    return rank_into_pairs(list(prompts), [texts[i:i + k] for i in range(0, len(texts), k)],
                           [rewards[i:i + k] for i in range(0, len(texts), k)], min_margin=min_margin)


# ---------------------------------------------------------------------------------------------
# Trainer configs
# ---------------------------------------------------------------------------------------------

def require_causal(model, profile_name: str | None = None) -> None:
    """Refuse an encoder-decoder model in one line: TRL's GRPO, RLOO and DPO trainers train causal LMs only."""
    from .models import model_family

    family = model_family(model)
    if family != "causal":
        where = f"profile {profile_name!r} uses " if profile_name else ""
        raise ValueError(f"TRL's GRPOTrainer, RLOOTrainer and DPOTrainer train causal language models only (a "
                         f"{family} model fails at the first step); {where}{type(model).__name__}: run this lab "
                         "with LABS_PROFILE=embedded (SmolLM2) or tiny")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a whole number >= 1")
    return int(value)


def _positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive number")
    return float(value)


def trainer_config(method: str, output_dir: str | os.PathLike, *, steps: int, learning_rate: float,
                   batch_size: int, seed: int = 0, num_generations: int = 4, max_completion_length: int = 40,
                   temperature: float = 0.7, beta: float | None = None, **overrides):
    """GRPOConfig, RLOOConfig or DPOConfig (`method` "grpo", "rloo", "dpo") for a short run here.

    `batch_size` counts completions per step for GRPO/RLOO (batch_size / num_generations prompts, each sampled
    num_generations times) and preference pairs per step for DPO. Precision comes from trainer_precision()
    (never bf16 on a CPU); no gradient checkpointing, no reports, no checkpoints; a log every step; seeded.
    `beta` is the KL coefficient (TRL's default per method when None). `overrides` go to the config as they are.
    """
    from .device import trainer_precision

    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"method={method!r} must be one of {list(METHODS)}")
    method = method.lower()
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a folder path, not {type(output_dir).__name__}")
    steps, batch_size = _positive_int("steps", steps), _positive_int("batch_size", batch_size)
    learning_rate = _positive_number("learning_rate", learning_rate)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be a whole number")
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta >= 0):
        raise ValueError(f"beta={beta!r} must be a number >= 0 (the KL coefficient), or None for TRL's default")
    common = dict(output_dir=os.fspath(output_dir), max_steps=steps, per_device_train_batch_size=batch_size,
                  gradient_accumulation_steps=1, learning_rate=learning_rate, lr_scheduler_type="constant",
                  warmup_steps=0, seed=seed, data_seed=seed, logging_steps=1, save_strategy="no", report_to="none",
                  activation_checkpointing=False, **trainer_precision())
    if beta is not None:
        common["beta"] = float(beta)
    if method == "dpo":
        from trl import DPOConfig

        return DPOConfig(**{**common, **overrides})
    num_generations = _positive_int("num_generations", num_generations)
    if num_generations < 2:
        raise ValueError(f"num_generations={num_generations} must be >= 2: {method.upper()}'s baseline compares "
                         "completions of the same prompt")
    if batch_size % num_generations:
        nearest = num_generations * max(1, batch_size // num_generations)
        raise ValueError(f"batch_size={batch_size} must be a multiple of num_generations={num_generations} (each "
                         f"prompt is sampled num_generations times), e.g. {nearest}")
    sampling = dict(num_generations=num_generations,
                    max_completion_length=_positive_int("max_completion_length", max_completion_length),
                    temperature=_positive_number("temperature", temperature), top_p=1.0, top_k=0)
    if method == "grpo":
        from trl import GRPOConfig

        return GRPOConfig(**{**common, **sampling, **overrides})
    from trl import RLOOConfig

    return RLOOConfig(**{**common, **sampling, **overrides})


def prompt_dataset(prompts: Sequence):
    """A datasets.Dataset with one column, `prompt` (chat messages or text), as GRPOTrainer and RLOOTrainer read."""
    from datasets import Dataset

    if isinstance(prompts, (str, Mapping)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompts (chat messages or text)")
    return Dataset.from_list([{"prompt": p} for p in prompts])


# ---------------------------------------------------------------------------------------------
# Reading what the trainers logged, and the comparison rows labs write
# ---------------------------------------------------------------------------------------------

def log_frame(trainer_or_history) -> "pd.DataFrame":
    """One row per logged training step (TRL's keys as columns, plus `step`), from a trainer or its log_history."""
    import pandas as pd

    history = getattr(getattr(trainer_or_history, "state", None), "log_history", trainer_or_history)
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TypeError(f"expected a trainer or its state.log_history (a list of dicts), not "
                        f"{type(trainer_or_history).__name__}")
    rows = [dict(entry) for entry in history if isinstance(entry, Mapping) and "loss" in entry]
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.apply(pd.to_numeric, errors="coerce")
    return frame


def check_method_row(row: Mapping, where: str = "row") -> dict:
    """`row` with the keys and types of METHOD_ROW_KEYS (judge_change = [mean, low, high]), else ValueError.

    The optional METHOD_ROW_INTERVALS, when present, must be [mean, low, high] too."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where} must be a JSON object with keys {sorted(METHOD_ROW_KEYS)}, not {type(row).__name__}")
    missing = sorted(set(METHOD_ROW_KEYS) - set(row))
    if missing:
        raise ValueError(f"{where} lacks {missing}; a method row has {sorted(METHOD_ROW_KEYS)}")
    out = dict(row)
    present = {key: list for key in METHOD_ROW_INTERVALS if key in row}
    for key, kind in {**METHOD_ROW_KEYS, **present}.items():
        value = row[key]
        if kind is float:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        elif kind is int:
            ok = not isinstance(value, bool) and isinstance(value, int)
        elif kind is list:
            ok = (isinstance(value, (list, tuple)) and len(value) == 3 and all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value))
        else:
            ok = isinstance(value, str) and bool(value.strip())
        if not ok:
            what = "[mean, low, high] of finite numbers" if kind is list else kind.__name__
            raise ValueError(f"{where}[{key!r}] = {value!r} must be a {what}")
        out[key] = [float(v) for v in value] if kind is list else (float(value) if kind is float else value)
    return out


def read_method_row(path: str | os.PathLike, profile: str | None = None) -> dict | None:
    """The result row a lab wrote to `path` (JSON, see METHOD_ROW_KEYS), or None when the file is not there, or
    when `profile` is given and the row says it was measured on another profile (its optional "profile" key)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path, not {type(path).__name__}")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            row = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{os.fspath(path)} is not a readable JSON result row ({type(err).__name__}: {err}); "
                         "run the lab that writes it again") from None
    row = check_method_row(row, os.fspath(path))
    if profile is not None and row.get("profile", profile) != profile:
        return None
    return row


def write_method_row(path: str | os.PathLike, row: Mapping) -> dict:
    """Write one checked result row to `path` as JSON (written whole, then renamed into place); returns it."""
    row = check_method_row(row)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as fh:
        json.dump(row, fh, indent=1, allow_nan=False)
    os.replace(partial, path)
    return row


__all__ = ["METHODS", "METHOD_ROW_INTERVALS", "METHOD_ROW_KEYS", "PreferencePairs", "check_method_row", "checked_reward", "completion_texts",
           "dpo_loss", "group_advantages", "log_frame", "prompt_dataset", "rank_into_pairs", "read_method_row",
           "require_causal", "sample_preference_pairs", "toxicity_reward", "trainer_config", "write_method_row"]
