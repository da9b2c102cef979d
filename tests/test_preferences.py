"""Tests for labhelpers.preferences: TRL reward functions, DPO pairs from samples, trainer configs (tiny profile)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from labhelpers.preferences import (PreferencePairs, check_method_row, checked_reward, completion_texts, dpo_loss,
                                    group_advantages, log_frame,
                                    prompt_dataset, rank_into_pairs, read_method_row, require_causal,
                                    sample_preference_pairs, toxicity_reward, trainer_config, write_method_row)
from labhelpers.rewards import ProfanityCheckScorer, ToxicityScorer, ToxicityScores

POLITE = "The customer complains about a late parcel and gets a refund."
RUDE = "The customer calls the agent a stupid idiot and says this is bullshit."
CHAT = [{"role": "user", "content": "Summarize the following conversation.\n\n#Person1#: Hi.\n\nSummary:"}]


def as_chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


class FixedScorer(ToxicityScorer):
    """A scorer whose rewards are whatever it is given: to test what happens with bad ones."""

    name = "fixed"

    def __init__(self, rewards):
        self.rewards = rewards

    def _score(self, texts, batch_size):
        values = np.asarray(self.rewards(texts) if callable(self.rewards) else self.rewards, dtype=np.float64)
        return ToxicityScores(np.zeros_like(values), values)


@pytest.fixture(scope="module")
def scorer():
    return ProfanityCheckScorer()


# ---------------------------------------------------------------------------------------------
# Reward functions
# ---------------------------------------------------------------------------------------------

def test_completion_texts_reads_text_and_chat_completions():
    assert completion_texts(["a", "b"]) == ["a", "b"]
    assert completion_texts([as_chat("a"), as_chat("b")]) == ["a", "b"]
    with pytest.raises(TypeError, match="completions must be a list"):
        completion_texts("a")
    with pytest.raises(TypeError, match=r"completions\[1\]"):
        completion_texts([as_chat("a"), {"content": "b"}])


def test_the_toxicity_reward_is_the_scorers_reward_for_text_and_chat(scorer):
    reward = toxicity_reward(scorer)
    assert reward.__name__ == "toxicity_reward"  # TRL logs it as rewards/toxicity_reward/mean
    want = scorer.reward([POLITE, RUDE]).tolist()
    got_text = reward(prompts=["p", "p"], completions=[POLITE, RUDE], completion_ids=[[1], [2]], trainer_state=None)
    got_chat = reward(prompts=[CHAT, CHAT], completions=[as_chat(POLITE), as_chat(RUDE)])
    assert got_text == got_chat == pytest.approx(want)
    assert all(isinstance(v, float) for v in got_text)
    assert got_text[0] > 0 > got_text[1]  # higher = cleaner


@pytest.mark.parametrize("bad, message", [
    ([1.0], r"returned 1 rewards for 2 completions"),
    ([1.0, 2.0, 3.0], r"returned 3 rewards for 2 completions"),
    ([1.0, float("nan")], r"returned nan for completion 1"),
    ([float("inf"), 1.0], r"returned inf for completion 0"),
])
def test_a_scorer_giving_the_wrong_number_of_rewards_or_nan_stops_with_a_clear_error(bad, message):
    reward = toxicity_reward(FixedScorer(bad))
    with pytest.raises(ValueError, match=message) as err:
        reward(prompts=["p", "p"], completions=[POLITE, RUDE])
    assert "'toxicity_reward'" in str(err.value)


def test_checked_reward_refuses_none_strings_and_non_lists():
    def none_for_second(prompts=None, completions=None, **kwargs):
        return [1.0, None]

    with pytest.raises(ValueError, match=r"'none_for_second' returned None for completion 1"):
        checked_reward(none_for_second)(prompts=["p", "p"], completions=["a", "b"])
    with pytest.raises(ValueError, match=r"returned '1' for completion 0"):
        checked_reward(lambda **kw: ["1", 2.0], name="strings")(completions=["a", "b"])
    with pytest.raises(TypeError, match="returned float"):
        checked_reward(lambda **kw: 1.0, name="scalar")(completions=["a"])
    with pytest.raises(TypeError, match="without completions"):
        checked_reward(lambda **kw: [1.0], name="x")(prompts=["p"])
    with pytest.raises(TypeError, match="must be a reward function"):
        checked_reward(3)
    with pytest.raises(TypeError, match="ToxicityScorer"):
        toxicity_reward(lambda texts: texts)
    # numpy output of the right length is fine, and comes back as plain floats
    assert checked_reward(lambda **kw: np.array([0.5, 1]), name="np")(completions=["a", "b"]) == [0.5, 1.0]


# ---------------------------------------------------------------------------------------------
# The maths: advantages and DPO's loss
# ---------------------------------------------------------------------------------------------

def test_grpo_and_rloo_advantages_by_hand():
    rewards = [1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0]  # two prompts, 4 completions each
    # group 1: mean 3, std with Bessel's correction sqrt(14 / 3); group 2: all equal, no advantage
    std = math.sqrt(14 / 3)
    np.testing.assert_allclose(group_advantages(rewards, 4, "grpo"),
                               [-2 / (std + 1e-4), -1 / (std + 1e-4), 0.0, 3 / (std + 1e-4), 0, 0, 0, 0])
    # leave-one-out: 1 - mean(2, 3, 6) = -2.667; 6 - mean(1, 2, 3) = 4
    np.testing.assert_allclose(group_advantages(rewards, 4, "rloo"), [-8 / 3, -4 / 3, 0.0, 4.0, 0, 0, 0, 0])
    # within one group they are proportional: RLOO = G / (G - 1) * (r - mean), GRPO = (r - mean) / std
    np.testing.assert_allclose(group_advantages(rewards[:4], 4, "rloo") * (3 / 4) / (std + 1e-4),
                               group_advantages(rewards[:4], 4, "grpo"))
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        group_advantages(rewards, 3)
    with pytest.raises(ValueError, match="group_size=1 must be >= 2"):
        group_advantages(rewards, 1)
    with pytest.raises(ValueError, match="method='ppo'"):
        group_advantages(rewards, 4, "ppo")
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, float("nan")], 2)


def test_dpo_loss_by_hand():
    assert dpo_loss([-3.0], [-5.0], [-3.0], [-5.0], 0.1) == pytest.approx(math.log(2))  # policy = reference
    # chosen up by 2 nats, rejected down by 3 against the reference: margin 0.1 * 5 = 0.5
    assert dpo_loss([-1.0], [-8.0], [-3.0], [-5.0], 0.1) == pytest.approx(math.log1p(math.exp(-0.5)))
    assert dpo_loss([0.0, 0.0], [-1e4, 0.0], [0.0, 0.0], [0.0, 0.0], 1.0) == pytest.approx(math.log(2) / 2)
    assert math.isfinite(dpo_loss([1e4], [-1e4], [0.0], [0.0], 1.0))  # stable far from zero
    with pytest.raises(ValueError, match="one log-probability per pair"):
        dpo_loss([1.0, 2.0], [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="beta=0"):
        dpo_loss([1.0], [1.0], [1.0], [1.0], beta=0)


# ---------------------------------------------------------------------------------------------
# Preference pairs
# ---------------------------------------------------------------------------------------------

def test_rank_into_pairs_takes_best_and_worst_and_drops_ties():
    prompts = [CHAT, CHAT, CHAT, "plain text prompt", CHAT]
    samples = [["a", "b", "c"], ["x", "y", "z"], ["same", "same", "other"], ["t1", "t2", "t3"], ["", "", "only"]]
    rewards = [[0.0, 2.0, -1.0], [5.0, 5.0, 5.0], [1.0, 1.0, 1.0], [0.1, 0.3, 0.2], [9.0, 9.0, 1.0]]
    pairs = rank_into_pairs(prompts, samples, rewards)
    assert isinstance(pairs, PreferencePairs)
    assert len(pairs) == 2 and pairs.n_prompts == 5 and pairs.samples_per_prompt == 3
    assert pairs.n_ties == 3  # all equal (twice), and a prompt left with one non-empty sample
    assert pairs.n_empty == 2
    first, text = pairs.rows
    assert first["chosen"] == as_chat("b") and first["rejected"] == as_chat("c") and first["prompt"] == CHAT
    assert (first["chosen_reward"], first["rejected_reward"]) == (2.0, -1.0)
    assert text["chosen"] == "t2" and text["rejected"] == "t1"  # a text prompt gives text completions
    np.testing.assert_allclose(pairs.margins, [3.0, 0.2])
    with pytest.raises(ValueError, match="mix text prompts and chat prompts"):
        pairs.to_dataset()
    ds = rank_into_pairs(prompts[:1], samples[:1], rewards[:1]).to_dataset()
    assert ds.column_names == ["prompt", "chosen", "rejected"] and ds[0]["chosen"] == as_chat("b")
    # a margin drops the close pair
    assert len(rank_into_pairs(prompts, samples, rewards, min_margin=0.5)) == 1


def test_rank_into_pairs_refuses_bad_input():
    with pytest.raises(ValueError, match="one list of samples and one of rewards per prompt"):
        rank_into_pairs([CHAT, CHAT], [["a", "b"]], [[1, 2]])
    with pytest.raises(ValueError, match="prompt 0: 2 samples but 3 rewards"):
        rank_into_pairs([CHAT], [["a", "b"]], [[1, 2, 3]])
    with pytest.raises(ValueError, match="not all finite"):
        rank_into_pairs([CHAT], [["a", "b"]], [[1, float("nan")]])
    with pytest.raises(TypeError, match="sample 1 is a int"):
        rank_into_pairs([CHAT], [["a", 3]], [[1, 2]])
    with pytest.raises(ValueError, match="min_margin"):
        rank_into_pairs([CHAT], [["a", "b"]], [[1, 2]], min_margin=-1)
    with pytest.raises(ValueError, match="no preference pairs"):
        rank_into_pairs([CHAT], [["a", "b"]], [[1, 1]]).to_dataset()


def test_pairs_sampled_from_a_tiny_policy(tiny_llama):
    model, tokenizer = tiny_llama
    prompts = [CHAT, [{"role": "user", "content": "Summarize: #Person1#: Go away, idiot.\n\nSummary:"}]]
    # a reward that ranks by length, so that random text gives (almost) no ties
    scorer = FixedScorer(lambda texts: [float(len(t)) for t in texts])
    pairs = sample_preference_pairs(model, tokenizer, prompts, scorer, samples_per_prompt=3, max_new_tokens=6,
                                    batch_size=6, progress=False)
    assert pairs.n_prompts == 2 and pairs.samples_per_prompt == 3
    assert len(pairs) + pairs.n_ties == 2
    assert [len(s) for s in pairs.samples] == [3, 3]
    for row in pairs.rows:
        assert len(row["chosen"][0]["content"]) > len(row["rejected"][0]["content"])
    again = sample_preference_pairs(model, tokenizer, prompts, scorer, samples_per_prompt=3, max_new_tokens=6,
                                    batch_size=6, progress=False)
    assert again.samples == pairs.samples  # seeded
    with pytest.raises(ValueError, match="samples_per_prompt=1"):
        sample_preference_pairs(model, tokenizer, prompts, scorer, samples_per_prompt=1)
    with pytest.raises(ValueError, match=r"returned 1 rewards for 6 samples"):
        sample_preference_pairs(model, tokenizer, prompts, FixedScorer([1.0]), samples_per_prompt=3,
                                max_new_tokens=4, progress=False)


# ---------------------------------------------------------------------------------------------
# Configs, and the trainers running on them
# ---------------------------------------------------------------------------------------------

def test_configs_are_safe_on_a_cpu(tmp_path):
    from trl import DPOConfig, GRPOConfig, RLOOConfig

    from labhelpers.device import cpu_bf16_safe, cpu_mixed_precision, trainer_precision

    kinds = {"grpo": GRPOConfig, "rloo": RLOOConfig, "dpo": DPOConfig}
    for method, kind in kinds.items():
        config = trainer_config(method, tmp_path / method, steps=3, learning_rate=1e-4, batch_size=4, seed=7)
        assert type(config) is kind
        precision = trainer_precision()  # on a CPU: bf16 (TRL's default) only where it is safe and fast; use_cpu
        assert (config.bf16, config.fp16, config.use_cpu) == (precision["bf16"], precision["fp16"], precision["use_cpu"])
        if precision["use_cpu"]:
            assert config.bf16 is cpu_mixed_precision() and (config.bf16 is False or cpu_bf16_safe())
        assert config.gradient_checkpointing is False and config.activation_checkpointing is False
        assert config.report_to in ([], "none", ["none"]) and config.save_strategy == "no"
        assert (config.max_steps, config.per_device_train_batch_size, config.seed, config.logging_steps) == (3, 4, 7, 1)
    grpo = trainer_config("GRPO", tmp_path, steps=1, learning_rate=1e-4, batch_size=8, num_generations=4,
                          max_completion_length=12, temperature=0.9, beta=0.02, epsilon=0.1)
    assert (grpo.num_generations, grpo.max_completion_length, grpo.temperature, grpo.beta, grpo.epsilon) == \
        (4, 12, 0.9, 0.02, 0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "ppo"}, r"method='ppo' must be one of"),
    ({"steps": 0}, r"steps=0"),
    ({"learning_rate": -1.0}, r"learning_rate=-1.0"),
    ({"batch_size": 6}, r"batch_size=6 must be a multiple of num_generations=4"),
    ({"num_generations": 1, "batch_size": 4}, r"num_generations=1 must be >= 2"),
    ({"beta": -0.1}, r"beta=-0.1"),
    ({"temperature": 0}, r"temperature=0"),
])
def test_configs_refuse_bad_values_naming_them(tmp_path, kwargs, message):
    args = {"method": "grpo", "steps": 1, "learning_rate": 1e-4, "batch_size": 4, **kwargs}
    method = args.pop("method")
    with pytest.raises(ValueError, match=message):
        trainer_config(method, tmp_path, **args)


def _peft(model):
    from labhelpers.adapters import lora_config

    return lora_config(model, r=4)


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_trainers_run_on_the_toxicity_reward_with_lora(tiny_llama, scorer, tmp_path, method):
    import copy

    from trl import GRPOTrainer, RLOOTrainer

    model, tokenizer = tiny_llama
    trainer_class = {"grpo": GRPOTrainer, "rloo": RLOOTrainer}[method]
    config = trainer_config(method, tmp_path, steps=2, learning_rate=1e-3, batch_size=4, num_generations=2,
                            max_completion_length=6)
    trainer = trainer_class(model=copy.deepcopy(model), reward_funcs=toxicity_reward(scorer), args=config,
                            train_dataset=prompt_dataset([CHAT] * 4), processing_class=tokenizer,
                            peft_config=_peft(model))
    trainer.train()
    logs = log_frame(trainer)
    assert list(logs["step"]) == [1, 2]
    assert np.isfinite(logs[["loss", "reward", "rewards/toxicity_reward/mean"]].to_numpy()).all()


def test_a_reward_returning_nan_stops_training_with_its_name(tiny_llama, tmp_path):
    import copy

    from trl import GRPOTrainer

    model, tokenizer = tiny_llama
    config = trainer_config("grpo", tmp_path, steps=1, learning_rate=1e-3, batch_size=2, num_generations=2,
                            max_completion_length=4)
    trainer = GRPOTrainer(model=copy.deepcopy(model), reward_funcs=toxicity_reward(FixedScorer([0.0, math.nan])),
                          args=config, train_dataset=prompt_dataset([CHAT] * 2), processing_class=tokenizer,
                          peft_config=_peft(model))
    with pytest.raises(ValueError, match=r"'toxicity_reward' returned nan for completion 1"):
        trainer.train()


def test_dpo_trains_on_ranked_pairs_with_lora(tiny_llama, tmp_path):
    import copy

    from trl import DPOTrainer

    model, tokenizer = tiny_llama
    pairs = rank_into_pairs([CHAT] * 4, [[POLITE, RUDE]] * 4, [[2.0, -3.0]] * 4)
    config = trainer_config("dpo", tmp_path, steps=2, learning_rate=1e-3, batch_size=2, beta=0.1)
    trainer = DPOTrainer(model=copy.deepcopy(model), args=config, train_dataset=pairs.to_dataset(),
                         processing_class=tokenizer, peft_config=_peft(model))
    trainer.train()
    logs = log_frame(trainer)
    assert len(logs) == 2 and np.isfinite(logs[["loss", "rewards/margins"]].to_numpy()).all()
    assert logs["loss"].iloc[0] == pytest.approx(math.log(2), abs=1e-3)  # policy = reference at the start


def test_log_frame_keeps_training_steps_only():
    history = [{"loss": 1.0, "reward": 0.5, "step": 1}, {"loss": 0.5, "reward": 0.7, "step": 2},
               {"train_runtime": 3.0, "train_loss": 0.75, "step": 2}]
    frame = log_frame(history)
    assert list(frame["step"]) == [1, 2] and list(frame["loss"]) == [1.0, 0.5]
    assert len(log_frame([])) == 0
    with pytest.raises(TypeError, match="log_history"):
        log_frame("not a history")


# ---------------------------------------------------------------------------------------------
# Result rows shared between labs 09 and 10
# ---------------------------------------------------------------------------------------------

ROW = {"method": "PPO (lab 09)", "toxicity_reward_model": 0.2, "toxicity_judge": 0.1,
       "judge_change": [-0.1, -0.2, -0.05], "rouge_l": 0.3, "kl": 1.5, "train_seconds": 100.0, "steps": 8}


def test_method_rows_round_trip_and_a_missing_file_is_none(tmp_path):
    path = tmp_path / "lab" / "results.json"
    assert read_method_row(path) is None
    write_method_row(path, ROW)
    assert read_method_row(path) == ROW
    write_method_row(path, {**ROW, "profile": "tiny"})  # a lab may say which profile measured it
    assert read_method_row(path, profile="tiny")["profile"] == "tiny"
    assert read_method_row(path, profile="embedded") is None  # measured on another profile: not this run's row
    assert not (tmp_path / "lab" / "results.json.partial").exists()
    with_intervals = {**ROW, "toxicity_judge_ci": [0.1, 0.05, 0.15], "kl_ci": [1.5, 1, 2]}
    write_method_row(path, with_intervals)
    assert read_method_row(path)["kl_ci"] == [1.5, 1.0, 2.0] and read_method_row(path)["toxicity_judge_ci"][1] == 0.05


@pytest.mark.parametrize("change, message", [
    ({"steps": 8.5}, r"\['steps'\] = 8.5 must be a int"),
    ({"kl": float("nan")}, r"\['kl'\] = nan must be a float"),
    ({"judge_change": [0.1, 0.2]}, r"judge_change.*\[mean, low, high\]"),
    ({"method": ""}, r"\['method'\]"),
    ({"kl_ci": [1.5, 1.0]}, r"\['kl_ci'\].*\[mean, low, high\]"),  # an interval, when given, is checked too
    ({"rouge_change": [0.1, float("inf"), 0.2]}, r"rouge_change"),
])
def test_bad_method_rows_are_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_method_row({**ROW, **change})
    with pytest.raises(ValueError, match=r"lacks \['kl'\]"):
        check_method_row({k: v for k, v in ROW.items() if k != "kl"})


def test_a_damaged_results_file_says_to_rerun_the_lab(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"method": "PPO"', encoding="utf-8")
    with pytest.raises(ValueError, match="run the lab that writes it again"):
        read_method_row(path)
    path.write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(ValueError, match="must be a JSON object"):
        read_method_row(path)


def test_an_encoder_decoder_model_is_refused_in_one_line(tiny_llama, tiny_t5):
    require_causal(tiny_llama[0])  # fine
    with pytest.raises(ValueError, match=r"causal language models only .*profile 'course' uses T5ForConditional"):
        require_causal(tiny_t5[0], "course")


def test_prompt_dataset():
    ds = prompt_dataset([CHAT, CHAT])
    assert ds.column_names == ["prompt"] and ds[0]["prompt"] == CHAT
    with pytest.raises(ValueError, match="non-empty list"):
        prompt_dataset([])
