"""Bad input is refused: wrong types, empty inputs, out-of-range numbers and unknown names.

Every public function of labhelpers (its `__all__`, plus labhelpers.scaling, labhelpers.memory and
labhelpers.benchmarks) given such input raises ValueError or TypeError (or the package's own error
where a file or a name is missing) with a one-line message that names the argument, and does so at
once: no hang, no deep IndexError or KeyError, no silent wrong result. One row per call below.
"""

from __future__ import annotations

import math
import re
import signal
from types import SimpleNamespace

import pandas as pd
import pytest

import labhelpers as lh
import labhelpers as bm
import labhelpers as mem  # the calculators are lab 02's exported code, the checks memory.py's
import labhelpers as sc  # lab 03's exported calculators and scaling.py's fit

BAD = (ValueError, TypeError)
ITEM = {"id": "q1", "question": "What is 2 + 2?", "choices": ["3", "4"], "answer": 1}


@pytest.fixture(autouse=True)
def no_hang():
    """A call that hangs fails after 30 s instead of stalling the suite."""
    def stop(signum, frame):
        raise TimeoutError("the call hung for 30 s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def c(tiny_llama, tiny_t5, tiny_dialogues):
    """What the calls need: the tiny models and dialogues, a score frame, multiple-choice results."""
    model, tok = tiny_llama
    rows = [dict(r) for r in tiny_dialogues["train"].select(range(4))]
    scores = lh.score_summaries(["a cat sat", "a dog ran"], ["the cat sat", "the dog ran"])
    results = pd.DataFrame({"id": ["q1"], "subject": ["maths"], "answer": [1], "predicted": [1], "correct": [True],
                            "logprobs": [[-2.0, -1.0]], "n_tokens": [[1, 1]]})
    return SimpleNamespace(model=model, tok=tok, t5=tiny_t5[0], rows=rows, scores=scores, results=results,
                           tidy=lh.metric_table({"a": scores}))


def case(call, argument: str, errors=BAD, *, id: str):
    return pytest.param(call, argument, errors, id=id)


CASES = [
    # ---------------------------------------------------------------- profiles and devices
    case(lambda c: lh.get_profile("huge"), r"profile='huge'", id="get_profile-unknown"),
    case(lambda c: lh.get_profile(3), r"profile", id="get_profile-type"),
    case(lambda c: lh.get_profile("tiny").with_overrides(stepz=3), r"stepz", id="Profile.with_overrides-unknown"),
    case(lambda c: lh.environment_summary("huge"), r"profile='huge'", id="environment_summary-unknown"),
    case(lambda c: lh.pick_device("gpu"), r"device='gpu'", id="pick_device-unknown"),
    case(lambda c: lh.pick_device(3), r"device", id="pick_device-type"),
    case(lambda c: lh.choose_dtype("gpu"), r"device", id="choose_dtype-unknown-device"),
    case(lambda c: lh.trainer_precision("gpu"), r"device", id="trainer_precision-unknown-device"),
    case(lambda c: lh.seed_everything("7"), r"seed", id="seed_everything-type"),
    case(lambda c: lh.seed_everything(2.5), r"seed", id="seed_everything-float"),
    # ---------------------------------------------------------------- data
    case(lambda c: lh.load_dialogues("", profile="tiny"), r"source", id="load_dialogues-empty"),
    case(lambda c: lh.load_dialogues(3, profile="tiny"), r"source", id="load_dialogues-type"),
    case(lambda c: lh.load_dialogues("no-such-thing", profile="tiny"), r"source='no-such-thing'",
         id="load_dialogues-unknown"),
    case(lambda c: lh.load_dialogues(profile="huge"), r"profile='huge'", id="load_dialogues-unknown-profile"),
    case(lambda c: lh.load_dialogues(profile="tiny", seed="7"), r"seed", id="load_dialogues-seed-type"),
    case(lambda c: lh.read_jsonl("no/such/file.jsonl"), r"path='no/such/file.jsonl'", FileNotFoundError,
         id="read_jsonl-missing"),
    case(lambda c: lh.read_jsonl(3), r"path", id="read_jsonl-type"),
    # ---------------------------------------------------------------- models
    case(lambda c: lh.load_model(""), r"name", id="load_model-empty"),
    case(lambda c: lh.load_model(3), r"name", id="load_model-type"),
    case(lambda c: lh.load_model(profile="huge"), r"profile='huge'", id="load_model-unknown-profile"),
    case(lambda c: lh.load_model("tiny-llama", profile="tiny", device="gpu"), r"device='gpu'",
         id="load_model-unknown-device"),
    case(lambda c: lh.load_model("tiny-llama", profile="tiny", dtype="float99"), r"dtype='float99'",
         id="load_model-unknown-dtype"),
    case(lambda c: lh.model_family("tiny-llama"), r"model", id="model_family-type"),
    case(lambda c: lh.count_parameters("tiny-llama"), r"model", id="count_parameters-type"),
    # ---------------------------------------------------------------- prompts
    case(lambda c: lh.build_prompt(3), r"dialogue", id="build_prompt-type"),
    case(lambda c: lh.build_prompt("   "), r"dialogue", id="build_prompt-empty"),
    case(lambda c: lh.build_prompt("hi", template="shouty"), r"template='shouty'", id="build_prompt-unknown-template"),
    case(lambda c: lh.build_prompt("hi", template=3), r"template", id="build_prompt-template-type"),
    case(lambda c: lh.build_prompt("hi", examples="a b"), r"examples", id="build_prompt-examples-string"),
    case(lambda c: lh.build_prompt("hi", examples=[{"dialogue": "x"}]), r"examples\[0\]",
         id="build_prompt-example-missing-summary"),
    case(lambda c: lh.build_prompt("hi", examples=[("only a dialogue",)]), r"examples\[0\]",
         id="build_prompt-example-not-a-pair"),
    case(lambda c: lh.build_chat("hi", examples=[3]), r"examples\[0\]", id="build_chat-example-type"),
    case(lambda c: lh.build_chat(""), r"dialogue", id="build_chat-empty"),
    case(lambda c: lh.model_input(c.tok, 3), r"prompt", id="model_input-type"),
    case(lambda c: lh.model_input(c.tok, "hi", chat="yes"), r"chat", id="model_input-chat-type"),
    case(lambda c: lh.count_tokens(c.tok, None), r"prompt", id="count_tokens-type"),
    case(lambda c: lh.context_window(None), r"tokenizer", id="context_window-no-limits"),
    case(lambda c: lh.fit_prompt(c.tok, "hi", max_tokens=0), r"max_tokens=0", id="fit_prompt-max_tokens"),
    case(lambda c: lh.fit_prompt(c.tok, "hi", max_tokens=100, reserve=100), r"reserve=100", id="fit_prompt-reserve"),
    case(lambda c: lh.fit_prompt(c.tok, "hi", max_tokens=100, style="poem"), r"style='poem'", id="fit_prompt-style"),
    case(lambda c: lh.fit_prompt(c.tok, "hi", max_tokens=100, on_overflow="truncate"), r"on_overflow='truncate'",
         id="fit_prompt-on_overflow"),
    case(lambda c: lh.fit_prompt(c.tok, "", max_tokens=100), r"dialogue", id="fit_prompt-empty-dialogue"),
    case(lambda c: lh.select_examples(c.rows, k=-1), r"k=-1", id="select_examples-negative"),
    case(lambda c: lh.select_examples(c.rows, k=50), r"k=50", id="select_examples-too-many"),
    case(lambda c: lh.select_examples("rows", k=1), r"pool", id="select_examples-pool-type"),
    case(lambda c: lh.select_examples([{"id": "a"}], k=1, max_chars=10), r"pool\[0\]",
         id="select_examples-row-without-dialogue"),
    # ---------------------------------------------------------------- generation
    case(lambda c: lh.make_generation_config(0), r"max_new_tokens=0", id="make_generation_config-zero"),
    case(lambda c: lh.make_generation_config("48"), r"max_new_tokens", id="make_generation_config-type"),
    case(lambda c: lh.make_generation_config(do_sample=True, temperature=0), r"temperature=0",
         id="make_generation_config-temperature"),
    case(lambda c: lh.make_generation_config(do_sample=True, top_p=1.5), r"top_p=1.5",
         id="make_generation_config-top_p"),
    case(lambda c: lh.make_generation_config(num_beams=0), r"num_beams=0", id="make_generation_config-num_beams"),
    case(lambda c: lh.make_generation_config(tempreature=0.7), r"tempreature", id="make_generation_config-typo"),
    case(lambda c: lh.generate_texts(c.model, c.tok, "hi"), r"prompts", id="generate_texts-string"),
    case(lambda c: lh.generate_texts(c.model, c.tok, [""]), r"prompts\[0\]", id="generate_texts-empty-prompt"),
    case(lambda c: lh.generate_texts(c.model, c.tok, [3]), r"prompts\[0\]", id="generate_texts-prompt-type"),
    case(lambda c: lh.generate_texts(c.model, c.tok, ["hi"], batch_size=0), r"batch_size=0",
         id="generate_texts-batch_size"),
    case(lambda c: lh.generate_texts(c.model, c.tok, ["hi"], "greedy"), r"config", id="generate_texts-config-type"),
    case(lambda c: lh.generate_texts("tiny-llama", c.tok, ["hi"]), r"model", id="generate_texts-model-type"),
    # ---------------------------------------------------------------- metrics
    case(lambda c: lh.score_summaries("a cat", ["a cat"]), r"predictions", id="score_summaries-string"),
    case(lambda c: lh.score_summaries([], []), r"predictions", id="score_summaries-empty"),
    case(lambda c: lh.score_summaries(["a"], ["a", "b"]), r"predictions.*references|references.*predictions",
         id="score_summaries-lengths"),
    case(lambda c: lh.score_summaries([3], ["a"]), r"predictions\[0\]", id="score_summaries-item-type"),
    case(lambda c: lh.bootstrap_ci([]), r"values", id="bootstrap_ci-empty"),
    case(lambda c: lh.bootstrap_ci(["a", "b"]), r"values", id="bootstrap_ci-type"),
    case(lambda c: lh.bootstrap_ci([1.0, math.nan]), r"values", id="bootstrap_ci-nan"),
    case(lambda c: lh.bootstrap_ci([1.0, 2.0], confidence=95), r"confidence", id="bootstrap_ci-confidence"),
    case(lambda c: lh.bootstrap_ci([1.0, 2.0], n_resamples=0), r"n_resamples", id="bootstrap_ci-n_resamples"),
    case(lambda c: lh.paired_difference([1.0, 2.0], [1.0]), r"scores_a.*scores_b|scores_b.*scores_a",
         id="paired_difference-lengths"),
    case(lambda c: lh.distinct_n([]), r"texts", id="distinct_n-empty"),
    case(lambda c: lh.distinct_n(["a b"], n=0), r"\bn\b", id="distinct_n-n"),
    case(lambda c: lh.metric_table({}), r"systems", id="metric_table-empty"),
    case(lambda c: lh.metric_table("scores"), r"systems", id="metric_table-type"),
    case(lambda c: lh.metric_table({"a": c.scores}, metrics=["bleurt"]), r"metrics.*'bleurt'",
         id="metric_table-unknown-metric"),
    case(lambda c: lh.comparison_table(c.scores, c.scores.iloc[:1]), r"baseline.*candidate|candidate.*baseline",
         id="comparison_table-lengths"),
    case(lambda c: lh.comparison_table("a", c.scores), r"baseline", id="comparison_table-type"),
    case(lambda c: lh.format_table("table"), r"tidy", id="format_table-type"),
    case(lambda c: lh.format_table(c.tidy.drop(columns="mean")), r"tidy", id="format_table-missing-columns"),
    # ---------------------------------------------------------------- training and adapters
    case(lambda c: lh.TrainConfig(steps=0), r"steps=0", id="TrainConfig-steps"),
    case(lambda c: lh.fine_tune(c.model, c.tok, 3), r"rows", id="fine_tune-rows-type"),
    case(lambda c: lh.fine_tune(c.model, c.tok, c.rows, tasks="translate"), r"task='translate'",
         id="fine_tune-unknown-task"),
    case(lambda c: lh.fine_tune(c.model, "tokenizer", c.rows), r"tokenizer", id="fine_tune-tokenizer-type"),
    case(lambda c: lh.fine_tune(c.model, c.tok, c.rows, if_exists="keep", output_dir="x"), r"if_exists='keep'",
         id="fine_tune-if_exists"),
    case(lambda c: lh.load_fine_tuned(3), r"output_dir", id="load_fine_tuned-type"),
    case(lambda c: lh.load_fine_tuned("no/such/run"), r"no/such/run", FileNotFoundError, id="load_fine_tuned-missing"),
    case(lambda c: lh.lora_config("tiny-llama"), r"model", id="lora_config-model-type"),
    case(lambda c: lh.lora_config(c.model, r=0), r"r=0", id="lora_config-r"),
    case(lambda c: lh.lora_config(c.model, target_modules=[]), r"target_modules", id="lora_config-empty-targets"),
    case(lambda c: lh.lora_config(c.model, target_modules=["attn"]), r"target_modules",
         id="lora_config-unknown-target"),
    case(lambda c: lh.prompt_tuning_config(c.model, c.tok, n_virtual_tokens=0), r"n_virtual_tokens=0",
         id="prompt_tuning_config-n"),
    case(lambda c: lh.prompt_tuning_config(c.model, c.tok, init_text=""), r"init_text", id="prompt_tuning_config-text"),
    case(lambda c: lh.add_adapter(c.model, "lora"), r"config", id="add_adapter-config-type"),
    case(lambda c: lh.add_adapter("tiny-llama", lh.lora_config(c.model)), r"model", id="add_adapter-model-type"),
    case(lambda c: lh.save_adapter(c.model, "x"), r"model", id="save_adapter-plain-model"),
    case(lambda c: lh.load_adapter(c.model, "no/such/adapter"), r"no/such/adapter", FileNotFoundError,
         id="load_adapter-missing"),
    case(lambda c: lh.load_adapter(c.model, 3), r"folder", id="load_adapter-folder-type"),
    case(lambda c: lh.merge_adapter(c.model), r"peft_model", id="merge_adapter-plain-model"),
    case(lambda c: lh.adapter_size_bytes("no/such/adapter"), r"no/such/adapter", FileNotFoundError,
         id="adapter_size_bytes-missing"),
    case(lambda c: lh.adapter_size_bytes(None), r"folder", id="adapter_size_bytes-type"),
    case(lambda c: lh.model_size_bytes("tiny-llama"), r"model", id="model_size_bytes-type"),
    case(lambda c: lh.trainable_summary("tiny-llama"), r"model", id="trainable_summary-type"),
    # ---------------------------------------------------------------- rewards and PPO (checked here, owned elsewhere)
    case(lambda c: lh.ProfanityCheckScorer(clip=0), r"clip=0", id="ProfanityCheckScorer-clip"),
    case(lambda c: lh.ProfanityCheckScorer().score("you idiot"), r"texts", id="ToxicityScorer.score-string"),
    case(lambda c: lh.ProfanityCheckScorer().score([3]), r"texts\[0\]", id="ToxicityScorer.score-item-type"),
    case(lambda c: lh.ProfanityCheckScorer().score(["hi"], batch_size=0), r"batch_size=0",
         id="ToxicityScorer.score-batch_size"),
    case(lambda c: lh.HFToxicityScorer(""), r"model", id="HFToxicityScorer-empty"),
    case(lambda c: lh.reward_scorer(profile="huge"), r"profile='huge'", id="reward_scorer-unknown-profile"),
    case(lambda c: lh.PPOConfig(learning_rate=-1), r"learning_rate", id="PPOConfig-learning_rate"),
    case(lambda c: lh.PPOConfig(kl_penalty="k9"), r"kl_penalty='k9'", id="PPOConfig-kl_penalty"),
    case(lambda c: lh.PPOTrainer("policy", c.tok), r"policy", id="PPOTrainer-policy-type"),
    case(lambda c: lh.PPOTrainer(c.model, c.tok, config={"learning_rate": 1e-5}), r"config",
         id="PPOTrainer-config-type"),
    # ---------------------------------------------------------------- scaling
    case(lambda c: sc.training_flops(-1, 1e9), r"n_params=-1", id="training_flops-negative"),
    case(lambda c: sc.training_flops("big", 1e9), r"n_params='big'", id="training_flops-type"),
    case(lambda c: sc.training_flops(1e9, []), r"n_tokens", id="training_flops-empty"),
    case(lambda c: sc.flops_to_pf_days(0), r"flops=0", id="flops_to_pf_days-zero"),
    case(lambda c: sc.pf_days_to_flops(math.inf), r"pf_days=inf", id="pf_days_to_flops-inf"),
    case(lambda c: sc.chinchilla_loss(7e9, -1), r"n_tokens=-1", id="chinchilla_loss-negative"),
    case(lambda c: sc.chinchilla_loss(7e9, 1e12, fit="chinchilla"), r"fit", id="chinchilla_loss-fit-type"),
    case(lambda c: sc.kaplan_loss_n(0), r"n_params=0", id="kaplan_loss_n-zero"),
    case(lambda c: sc.kaplan_loss_d(None), r"n_tokens", id="kaplan_loss_d-type"),
    case(lambda c: sc.compute_optimal(-1e23), r"flops", id="compute_optimal-negative"),
    case(lambda c: sc.compute_optimal([1e21, 1e22]), r"flops", id="compute_optimal-array"),
    case(lambda c: sc.compute_optimal(1e23, fit=None), r"fit", id="compute_optimal-fit-type"),
    case(lambda c: sc.compute_optimal_by_rule(1e23, tokens_per_param=0), r"tokens_per_param=0",
         id="compute_optimal_by_rule-zero"),
    case(lambda c: sc.known_models_table([]), r"models", id="known_models_table-empty"),
    case(lambda c: sc.known_models_table([("GPT-3", 175e9)]), r"models\[0\]", id="known_models_table-row-type"),
    case(lambda c: sc.fit_power_law([1, 2], [1.0]), r"xs.*losses", id="fit_power_law-lengths"),
    case(lambda c: sc.fit_power_law([1], [1.0]), r"xs", id="fit_power_law-one-point"),
    case(lambda c: sc.fit_power_law([1, 2, 3], [1.0, -1.0, 2.0]), r"losses", id="fit_power_law-negative-loss"),
    case(lambda c: sc.fit_power_law([1, 2, 3], [3.0, 2.0, 1.5]).predict(0), r"x=0", id="PowerLawFit.predict-zero"),
    # ---------------------------------------------------------------- memory
    case(lambda c: mem.dtype_name("fp12"), r"dtype='fp12'", id="dtype_name-unknown"),
    case(lambda c: mem.bytes_per_number(None), r"dtype", id="bytes_per_number-type"),
    case(lambda c: mem.optimizer_name("lion"), r"optimizer='lion'", id="optimizer_name-unknown"),
    case(lambda c: mem.optimizer_name(3), r"optimizer", id="optimizer_name-type"),
    case(lambda c: mem.training_memory(), r"n_params", id="training_memory-nothing"),
    case(lambda c: mem.training_memory(n_params=-7e9), r"n_params", id="training_memory-negative"),
    case(lambda c: mem.training_memory(n_params="7e9"), r"n_params", id="training_memory-type"),
    case(lambda c: mem.training_memory(n_params=7e9, dtype="fp12"), r"dtype='fp12'", id="training_memory-dtype"),
    case(lambda c: mem.training_memory(n_params=7e9, optimizer="lion"), r"optimizer='lion'",
         id="training_memory-optimizer"),
    case(lambda c: mem.training_memory(n_params=7e9, batch_size=0), r"batch_size=0", id="training_memory-batch"),
    case(lambda c: mem.training_memory(n_params=7e9, seq_len=512), r"n_layers", id="training_memory-no-shape"),
    case(lambda c: mem.training_memory(n_params=7e9, lora="big"), r"lora", id="training_memory-lora-type"),
    case(lambda c: mem.training_memory("llama"), r"model", id="training_memory-model-type"),
    case(lambda c: mem.training_memory_table({}), r"scenarios", id="training_memory_table-empty"),
    case(lambda c: mem.training_memory_table({"full": 7e9}), r"scenarios\['full'\]",
         id="training_memory_table-row-type"),
    case(lambda c: mem.training_memory_table({"full": {"n_parms": 7e9}}), r"n_parms",
         id="training_memory_table-unknown-argument"),
    case(lambda c: mem.activation_bytes_per_layer(1, 128, 64, 0), r"n_heads=0", id="activation_bytes-heads-zero"),
    case(lambda c: mem.activation_bytes_per_layer(0, 128, 64, 4), r"batch_size=0", id="activation_bytes-batch-zero"),
    case(lambda c: mem.activation_bytes_per_layer(1, "128", 64, 4), r"seq_len", id="activation_bytes-type"),
    case(lambda c: mem.activation_bytes_per_layer(1, 128, -64, 4), r"hidden_size=-64",
         id="activation_bytes-negative"),
    case(lambda c: mem.architecture("llama"), r"model", id="architecture-type"),
    case(lambda c: mem.lora_trainable_params("llama", lh.lora_config(c.model)), r"model",
         id="lora_trainable_params-model-type"),
    case(lambda c: mem.lora_trainable_params(c.model, "lora"), r"config", id="lora_trainable_params-config-type"),
    case(lambda c: mem.peak_memory(interval_s=0), r"interval_s=0", id="peak_memory-interval"),
    case(lambda c: mem.peak_memory(device="gpu"), r"device='gpu'", id="peak_memory-unknown-device"),
    case(lambda c: mem.measure_training_step(batch_size=0), r"batch_size=0", id="measure_training_step-batch"),
    case(lambda c: mem.measure_training_step(seq_len=-8), r"seq_len=-8", id="measure_training_step-seq_len"),
    case(lambda c: mem.measure_training_step(lora_r="4"), r"lora_r", id="measure_training_step-lora_r"),
    # ---------------------------------------------------------------- benchmarks
    case(lambda c: bm.check_item("q"), r"item", id="check_item-type"),
    case(lambda c: bm.check_item({**ITEM, "choices": ["4"]}), r"choice", id="check_item-one-choice"),
    case(lambda c: bm.check_item({**ITEM, "answer": 2}), r"answer=2", id="check_item-answer-range"),
    case(lambda c: bm.check_item({k: v for k, v in ITEM.items() if k != "question"}), r"question",
         id="check_item-missing"),
    case(lambda c: bm.load_multiple_choice("no/such/file.jsonl"), r"path='no/such/file.jsonl'", FileNotFoundError,
         id="load_multiple_choice-missing"),
    case(lambda c: bm.load_multiple_choice(3), r"path", id="load_multiple_choice-type"),
    case(lambda c: bm.option_prompt(3), r"question", id="option_prompt-type"),
    case(lambda c: bm.option_prompt("  "), r"question", id="option_prompt-empty"),
    case(lambda c: bm.letter_prompt("q?", []), r"choices", id="letter_prompt-empty"),
    case(lambda c: bm.letter_prompt("q?", "ab"), r"choices", id="letter_prompt-string"),
    case(lambda c: bm.letter_prompt("q?", [str(i) for i in range(11)]), r"choices", id="letter_prompt-too-many"),
    case(lambda c: bm.continuation_logprobs(c.model, c.tok, "ctx", []), r"continuations",
         id="continuation_logprobs-empty"),
    case(lambda c: bm.continuation_logprobs(c.model, c.tok, 3, ["a"]), r"context", id="continuation_logprobs-type"),
    case(lambda c: bm.continuation_logprobs(c.model, c.tok, "ctx", [""]), r"continuation",
         id="continuation_logprobs-blank"),
    case(lambda c: bm.score_choices(c.model, c.tok, "", ["a", "b"]), r"question", id="score_choices-empty-question"),
    case(lambda c: bm.score_choices(c.model, c.tok, "q?", ["a", "b"], method="guess"), r"method='guess'",
         id="score_choices-method"),
    case(lambda c: bm.score_choices(c.model, c.tok, "q?", ["a", "b"], normalize="chars"), r"normalize='chars'",
         id="score_choices-normalize"),
    case(lambda c: bm.evaluate_multiple_choice(c.model, c.tok, []), r"items", id="evaluate_multiple_choice-empty"),
    case(lambda c: bm.evaluate_multiple_choice(c.model, c.tok, ITEM), r"items", id="evaluate_multiple_choice-dict"),
    case(lambda c: bm.evaluate_multiple_choice(c.model, c.tok, [ITEM, ITEM]), r"id 'q1'",
         id="evaluate_multiple_choice-duplicate-id"),
    case(lambda c: bm.rescore(c.results, "chars"), r"normalize='chars'", id="rescore-normalize"),
    case(lambda c: bm.rescore("results", "tokens"), r"results", id="rescore-type"),
    case(lambda c: bm.accuracy_interval([]), r"correct", id="accuracy_interval-empty"),
    case(lambda c: bm.accuracy_interval([True, 2]), r"correct", id="accuracy_interval-values"),
    case(lambda c: bm.accuracy_interval([True], confidence=2), r"confidence", id="accuracy_interval-confidence"),
    case(lambda c: bm.accuracy_interval([True], confidence="95%"), r"confidence",
         id="accuracy_interval-confidence-type"),
    case(lambda c: bm.accuracy_interval([True], method="exact"), r"method='exact'", id="accuracy_interval-method"),
    case(lambda c: bm.accuracy_table("results"), r"results", id="accuracy_table-type"),
    case(lambda c: bm.accuracy_table(c.results, by="topic"), r"by='topic'", id="accuracy_table-unknown-column"),
]


@pytest.mark.parametrize("call, argument, errors", CASES)
def test_bad_input_is_refused_with_one_line_naming_the_argument(c, call, argument, errors):
    with pytest.raises(errors) as err:
        call(c)
    message = str(err.value)
    assert message.strip() and "\n" not in message.strip(), f"not one line: {message!r}"
    assert re.search(argument, message), f"{type(err.value).__name__}: {message}"
