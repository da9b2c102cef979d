"""PPO step: lab 09's PPOTrainer (exported to labhelpers) vs the classic PPOTrainer of TRL 0.11.4, side by side on the same model.

Both sides train the same policy: the project's embedded SmolLM2-135M-Instruct in fp32 with a LoRA adapter
(r=16, alpha 32, dropout 0, on q_proj and v_proj) and a linear value head on the last hidden state, started
from the same weights (one seeded file of initial LoRA and value-head weights, loaded by both), against the
offline reward of lab 09 (labhelpers.rewards: alt-profanity-check's log-odds of not offensive), on lab 09's
hostile-dialogue prompts (chat template), with the same PPO settings: fixed KL coefficient (k1 estimator),
gamma 1, lambda 0.95, clip 0.2 for ratio and value, vf_coef 0.1, AdamW with the same learning rate, gradient
clipping at 1.0, no score scaling or clipping, no reward whitening, TRL's value-head dropout off.

TRL 0.11.4 (the last release with the classic `PPOTrainer(config, model, ref_model, tokenizer)`) needs
transformers 4.x, so it runs in a subprocess whose PYTHONPATH puts a separate folder first: that folder
holds trl 0.11.4, transformers 4.46.3 and the libraries of that time it needs (see TRL_PINS); torch,
accelerate, numpy and the rest come from this venv. The script installs the folder with pip the first time
(`--trl-dir`, default: trl-0.11.4 inside the running venv). Our side runs in a subprocess too; each side has
its own process, and the two take turns (ours, TRL, ours, TRL, ...), so only one computes at a time.

1. Timing: one untimed warm-up step per side, then --steps timed steps each, interleaved, each side on the
   same prompts at step k. Seconds per step, split into generation (ours: one batched `generate`; TRL: `PPOTrainer.generate` on the whole batch, timed here), forward passes
   (ours: the policy's and the reference's; TRL: `time/ppo/forward_pass`, the policy's and the reference's), scoring (the
   reward model) and optimisation (the rest of the update: rewards, advantages, the PPO epochs; for TRL the
   step's wall time minus its forward passes). Medians over the timed steps; ratio ours / TRL.
2. Statistics on one batch: our trainer samples one batch once (temperature 1.0, see below); its query and
   response token ids (responses up to and including the first end-of-sequence token) and the reward
   model's scores go to TRL's `step` as they are, and to our `PPOTrainer.update` as a Rollout whose
   log-probs, values and reference log-probs come from full forward passes (`logprobs_and_values`,
   `reference_logprobs`), as TRL computes them. With mini-batch = batch and one epoch both compute the
   losses before any weight changes. Compared: per-token log-probs, values, KL, rewards, advantages
   (before and after whitening) and returns, the step statistics, and the gradient of the first update.

Temperature: TRL 0.11.4 samples at the given temperature but takes its log-probs from the raw logits
(temperature 1), ours from logits / temperature; so the statistics check samples at temperature 1.0, where
the two agree by construction. The timing runs use --temperature (lab 09's 0.7).

    .venv/bin/python benchmarks/ppo_vs_trl.py                 # defaults below; appends to RESULTS.md
    .venv/bin/python benchmarks/ppo_vs_trl.py --quick         # batch 4, 8 new tokens, 1 step: a smoke run
    .venv/bin/python benchmarks/ppo_vs_trl.py --skip-timing   # the statistics check alone

Prints markdown tables and appends them to benchmarks/RESULTS.md (not on --quick unless --append; never with
--no-append). Run by hand, never by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
TRL_VERSION = "0.11.4"
# Installed with --no-deps into the TRL folder; everything else comes from the venv.
TRL_PINS = (
    "trl==0.11.4",
    "transformers==4.46.3",  # TRL 0.11 needs transformers 4.x
    "tokenizers==0.20.3",  # transformers 4.46 needs tokenizers <0.21
    "huggingface_hub==0.26.5",  # transformers 4.46 needs huggingface_hub <1.0
    "peft==0.13.2",  # the peft of transformers 4.46's time
    "datasets==4.0.0",  # trl imports it; the venv's datasets needs a newer huggingface_hub
    "fsspec==2025.3.0", "dill==0.3.8", "multiprocess==0.70.16",  # what datasets 4.0 pins
    "tyro==0.8.14", "docstring-parser==0.16", "shtab==1.7.1", "typeguard==4.4.1",  # trl's config parser
)
MARKER = "installed-by-ppo_vs_trl.txt"
LORA_TARGETS = ("q_proj", "v_proj")
PHASES = (("generate", "generation"), ("forward", "forward passes (ours: reference; TRL: policy + reference)"),
          ("score", "scoring (reward model)"), ("optimise", "optimisation (rewards, advantages, PPO epochs)"),
          ("total", "whole step"))
PROTOCOL_PREFIX = "@@"


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------

def canonical_lora_name(name: str) -> str | None:
    """'...layers.3.self_attn.q_proj.lora_A.default.weight' -> 'layers.3.self_attn.q_proj.lora_A' (None if no LoRA)."""
    found = re.search(r"layers\.\d+\.self_attn\.[a-z_]+\.lora_[AB]", name)
    return found.group(0) if found else None


def rel_diff(a: float, b: float, floor: float = 0.0) -> float:
    """|a - b| / max(|a|, |b|, floor): the relative difference, or |a - b| / floor for numbers near 0."""
    scale = max(abs(a), abs(b), floor)
    return 0.0 if scale == 0 else abs(a - b) / scale


def rows_max_rel_diff(ours: list[list[float]], theirs: list[list[float]]) -> tuple[float, float]:
    """Per-token rows: (max |ours - theirs|, that divided by the largest |theirs|)."""
    if [len(r) for r in ours] != [len(r) for r in theirs]:
        raise ValueError("the two sides have different response lengths")
    diff = max(abs(a - b) for ra, rb in zip(ours, theirs) for a, b in zip(ra, rb))
    scale = max(abs(b) for rb in theirs for b in rb)
    return diff, diff / scale if scale else 0.0


def flat_mean_std(rows: list[list[float]]) -> tuple[float, float]:
    """Mean and (unbiased) standard deviation over all tokens of ragged rows."""
    values = [v for r in rows for v in r]
    return statistics.fmean(values), statistics.stdev(values)


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def default_trl_dir() -> Path:
    """trl-0.11.4 inside the running venv (git-ignored with .venv/), else in labhelpers' cache folder."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / f"trl-{TRL_VERSION}"
    return Path(os.environ.get("LABS_CACHE", Path.home() / ".cache" / "labhelpers")) / f"trl-{TRL_VERSION}"


# ---------------------------------------------------------------------------------------------
# The TRL folder
# ---------------------------------------------------------------------------------------------

def ensure_trl(folder: Path) -> None:
    """Install TRL_PINS into `folder` (pip --target, --no-deps) unless a finished install is there."""
    marker = folder / MARKER
    wanted = "\n".join(TRL_PINS) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return
    if folder.exists():
        sys.exit(f"error: {folder} exists but is not a finished install of TRL {TRL_VERSION} by this script; "
                 "delete it (or pass --trl-dir NEW_FOLDER) and run again")
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"Installing TRL {TRL_VERSION} and the libraries it needs into {folder} (once):\n  {' '.join(TRL_PINS)}",
          flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--quiet",
           "--target", str(staging), *TRL_PINS]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        shutil.rmtree(staging, ignore_errors=True)
        sys.exit(f"error: pip could not install TRL {TRL_VERSION} into {staging} (exit {done.returncode}): "
                 f"{lines[-1] if lines else 'no output'}")
    (staging / MARKER).write_text(wanted)
    staging.rename(folder)


# ---------------------------------------------------------------------------------------------
# Shared by both workers (torch only: no labhelpers, no transformers)
# ---------------------------------------------------------------------------------------------

def adapted_layers(n_layers: int, top_blocks: int) -> list[int]:
    """The blocks that carry LoRA: the top `top_blocks` of `n_layers` (0: all of them)."""
    return list(range(n_layers - top_blocks if 0 < top_blocks < n_layers else 0, n_layers))


def make_initial_weights(config: dict, r: int, b_std: float, seed: int, top_blocks: int = 0) -> dict:
    """Seeded LoRA and value-head weights for the model `config` (config.json as a dict).

    lora_A as peft draws it (uniform in +-1/sqrt(fan_in)); lora_B from N(0, b_std) instead of peft's zeros, so
    that the policy differs from the reference and the KL terms are not all 0; the value head as nn.Linear
    draws it (uniform in +-1/sqrt(hidden)).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    hidden, head_dim = config["hidden_size"], config.get("head_dim") or config["hidden_size"] // config[
        "num_attention_heads"]
    out = {"q_proj": config["num_attention_heads"] * head_dim, "v_proj": config["num_key_value_heads"] * head_dim}
    weights = {}
    for layer in adapted_layers(config["num_hidden_layers"], top_blocks):
        for proj in LORA_TARGETS:
            key = f"layers.{layer}.self_attn.{proj}"
            weights[key + ".lora_A"] = (torch.rand(r, hidden, generator=g) * 2 - 1) / hidden ** 0.5
            weights[key + ".lora_B"] = torch.randn(out[proj], r, generator=g) * b_std
    weights["v_head.weight"] = (torch.rand(1, hidden, generator=g) * 2 - 1) / hidden ** 0.5
    weights["v_head.bias"] = (torch.rand(1, generator=g) * 2 - 1) / hidden ** 0.5
    return weights


def load_initial_weights(named_parameters, value_linear, weights: dict) -> None:
    """Copy the LoRA tensors into the model's LoRA parameters (matched by canonical name) and the value head."""
    import torch

    seen = set()
    with torch.no_grad():
        for name, param in named_parameters:
            key = canonical_lora_name(name)
            if key is not None:
                if key not in weights or weights[key].shape != param.shape:
                    raise RuntimeError(f"no initial weight of shape {tuple(param.shape)} for {name}")
                param.copy_(weights[key])
                seen.add(key)
        value_linear.weight.copy_(weights["v_head.weight"])
        value_linear.bias.copy_(weights["v_head.bias"])
    missing = {k for k in weights if k.startswith("layers.")} - seen
    if missing:
        raise RuntimeError(f"{len(missing)} LoRA tensors found no parameter, e.g. {sorted(missing)[0]}")


def record_gradients(optimizer, names: dict, into: dict) -> None:
    """Make `optimizer.step` first copy every gradient into `into` (keyed by names[id(param)]), once."""
    original = optimizer.step

    def step(*args, **kwargs):
        if not into:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        into[names[id(p)]] = p.grad.detach().clone()
        return original(*args, **kwargs)

    optimizer.step = step


def gradient_norms(grads: dict) -> dict:
    lora = sum(float(g.pow(2).sum()) for k, g in grads.items() if k.startswith("layers.")) ** 0.5
    head = sum(float(g.pow(2).sum()) for k, g in grads.items() if k.startswith("v_head")) ** 0.5
    return {"grad_norm_lora": lora, "grad_norm_value_head": head}


def response_rows(tensor, mask) -> list[list[float]]:
    """The masked positions of each row of a [B, T] tensor, as lists."""
    return [row[m.bool()].tolist() for row, m in zip(tensor, mask)]


# ---------------------------------------------------------------------------------------------
# Our side
# ---------------------------------------------------------------------------------------------

class OursSide:
    def __init__(self, spec: dict, mode: str):
        import labhelpers  # noqa: F401  first: probes bf16 safety before torch loads
        import torch

        from labhelpers import PPOConfig, PPOTrainer, ValueHead, add_adapter, load_model, lora_config, reward_scorer

        torch.set_num_threads(spec["threads"])
        self.spec, self.torch = spec, torch
        model, tokenizer = load_model(MODEL, profile="embedded", dtype=torch.float32, device="cpu")
        adapter = lora_config(model, r=spec["r"], alpha=spec["alpha"], dropout=0.0, target_modules=list(LORA_TARGETS),
                              layers=adapted_layers(spec["n_layers"], spec["top_blocks"]))
        policy = add_adapter(model, adapter)
        value_head = ValueHead(model.config.hidden_size)
        self.weights = torch.load(spec["init_path"])
        load_initial_weights(policy.named_parameters(), value_head.linear, self.weights)
        stats_mode = mode == "stats"
        self.config = PPOConfig(
            learning_rate=spec["lr"], mini_batch_size=spec["batch_size"] if stats_mode else spec["mini_batch_size"],
            ppo_epochs=1 if stats_mode else spec["ppo_epochs"], max_new_tokens=spec["max_new_tokens"],
            temperature=1.0 if stats_mode else spec["temperature"], init_kl_coef=spec["kl_coef"], adaptive_kl=False,
            kl_penalty="k1", gamma=1.0, lam=0.95, clip_range=0.2, clip_range_value=0.2, vf_coef=0.1,
            max_grad_norm=None if stats_mode else 1.0, seed=spec["seed"])
        self.trainer = PPOTrainer(policy, tokenizer, self.config, value_head=value_head)
        self.reward = reward_scorer("embedded")
        self.policy, self.value_head = policy, value_head

    def versions(self) -> dict:
        from importlib.metadata import version

        return {"torch": self.torch.__version__, "transformers": version("transformers"), "peft": version("peft")}

    def step(self, k: int) -> dict:
        self.torch.manual_seed(self.spec["seed"] + 1000 + k)
        s = self.trainer.step(self.spec["batches"][k], self.reward.reward)
        return {"generate": s["time_generate"], "forward": s["time_reference"], "score": s["time_score"],
                "optimise": s["time_optimize"], "total": s["time_step"], "response_length": s["response_length"],
                "kl": s["kl"], "score_mean": s["score"]}

    def check(self) -> dict:
        import dataclasses

        from labhelpers import (compute_rewards, gae, kl_penalty, logprobs_and_values, masked_mean,
                                reference_logprobs, whiten)

        torch, trainer, cfg = self.torch, self.trainer, self.config
        torch.manual_seed(self.spec["seed"])
        sampled = trainer.rollout(self.spec["stats_batch"])
        samples = sampled.samples
        scores = torch.as_tensor(self.reward.reward(sampled.texts), dtype=torch.float32)
        mask = sampled.mask
        lengths = mask.sum(1).long().tolist()
        batch = {"queries": [q[m.bool()].tolist() for q, m in zip(samples.query_ids, samples.query_mask)],
                 "responses": [r[:n].tolist() for r, n in zip(samples.response_ids, lengths)],
                 "scores": scores.tolist()}
        Path(self.spec["batch_path"]).write_text(json.dumps(batch))

        # The same batch through full forward passes again (the rollout took them the same way: a check)
        with torch.no_grad():
            logprobs, values = logprobs_and_values(trainer.policy, trainer.value_head, samples, cfg.temperature)
        ref_logprobs = reference_logprobs(trainer.policy, samples, cfg.temperature)
        kl = kl_penalty(logprobs, ref_logprobs, cfg.kl_penalty) * mask
        rollout = dataclasses.replace(sampled, logprobs=logprobs * mask, values=values * mask,
                                      ref_logprobs=ref_logprobs * mask)
        shortcut = {  # the rollout's forward passes vs these
            "logprob_max_abs": float(((sampled.logprobs - rollout.logprobs) * mask).abs().max()),
            "value_max_abs": float(((sampled.values - rollout.values) * mask).abs().max()),
            "kl_generate": float(kl_penalty(sampled.logprobs, sampled.ref_logprobs).mul(mask).sum(1).mean()),
            "kl_forward": float(kl.sum(1).mean())}
        rollout.kl = kl

        rewards = compute_rewards(scores, rollout.kl, mask, cfg.init_kl_coef)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        whitened = whiten(advantages, mask)
        non_score = -cfg.init_kl_coef * rollout.kl

        names = {id(p): canonical_lora_name(n) for n, p in self.policy.named_parameters() if p.requires_grad}
        names[id(self.value_head.linear.weight)] = "v_head.weight"
        names[id(self.value_head.linear.bias)] = "v_head.bias"
        grads: dict = {}
        record_gradients(trainer.optimizer, names, grads)
        stats = trainer.update(rollout, scores)
        torch.save(grads, self.spec["grads_path"].format(side="ours"))
        return {
            "rows": {"logprobs": response_rows(rollout.logprobs, mask),
                     "ref_logprobs": response_rows(rollout.ref_logprobs, mask),
                     "values": response_rows(rollout.values, mask), "kl": response_rows(rollout.kl, mask),
                     "rewards": response_rows(rewards, mask), "advantages": response_rows(advantages, mask),
                     "whitened": response_rows(whitened, mask), "returns": response_rows(returns, mask)},
            "stats": {"kl": stats["kl"], "non_score_reward": float(masked_mean(non_score, mask)),
                      "score": stats["score"], "value_mean": stats["value_mean"], "return_mean": stats["return_mean"],
                      "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
                      "clip_frac": stats["clip_frac"], "value_clip_frac": stats["value_clip_frac"],
                      **gradient_norms(grads)},
            "shortcut": shortcut, "lengths": lengths}


# ---------------------------------------------------------------------------------------------
# TRL's side (runs with the TRL folder first on PYTHONPATH)
# ---------------------------------------------------------------------------------------------

class TRLSide:
    def __init__(self, spec: dict, mode: str):
        import importlib.util
        import warnings

        import torch

        warnings.filterwarnings("ignore")
        torch.set_num_threads(spec["threads"])
        from peft import LoraConfig, get_peft_model
        from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
        from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

        self.spec, self.torch = spec, torch
        path = spec["model_path"]
        config = AutoConfig.from_pretrained(path)
        rope = getattr(config, "rope_parameters", None)  # the folder was written by transformers 5
        if isinstance(rope, dict) and "rope_theta" in rope:
            config.rope_theta = rope["rope_theta"]  # transformers 4 reads rope_theta, else takes 10000
        base = AutoModelForCausalLM.from_pretrained(path, config=config, torch_dtype=torch.float32)
        special = json.loads((Path(path) / "tokenizer_config.json").read_text())
        self.tokenizer = PreTrainedTokenizerFast(  # transformers 4 cannot read the folder's tokenizer class name
            tokenizer_file=str(Path(path) / "tokenizer.json"),
            **{k: special[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if special.get(k)})
        peft_model = get_peft_model(base, LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=0.0,
                                                     target_modules=list(LORA_TARGETS), bias="none",
                                                     layers_to_transform=adapted_layers(spec["n_layers"],
                                                                                        spec["top_blocks"]),
                                                     task_type="CAUSAL_LM"))
        self.model = AutoModelForCausalLMWithValueHead.from_pretrained(peft_model, summary_dropout_prob=0.0)
        self.weights = torch.load(spec["init_path"])
        load_initial_weights(self.model.named_parameters(), self.model.v_head.summary, self.weights)
        stats_mode = mode == "stats"
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=spec["lr"])  # as ours (TRL's default is Adam)
        self.config = PPOConfig(
            learning_rate=spec["lr"], batch_size=spec["batch_size"],
            mini_batch_size=spec["batch_size"] if stats_mode else spec["mini_batch_size"],
            gradient_accumulation_steps=1, ppo_epochs=1 if stats_mode else spec["ppo_epochs"],
            adap_kl_ctrl=False, init_kl_coef=spec["kl_coef"], kl_penalty="kl", gamma=1.0, lam=0.95,
            cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, max_grad_norm=None if stats_mode else 1.0,
            use_score_scaling=False, use_score_norm=False, score_clip=None, whiten_rewards=False,
            early_stopping=False, seed=spec["seed"], log_with=None, exp_name="ppo_vs_trl")
        self.trainer = PPOTrainer(config=self.config, model=self.model, ref_model=None, tokenizer=self.tokenizer,
                                  optimizer=self.optimizer)
        self.temperature = 1.0 if stats_mode else spec["temperature"]
        # labhelpers/rewards.py imports nothing of the package at module level: load it on its own
        where = importlib.util.spec_from_file_location("labhelpers_rewards", ROOT / "labhelpers" / "rewards.py")
        rewards = importlib.util.module_from_spec(where)
        where.loader.exec_module(rewards)
        self.reward = rewards.ProfanityCheckScorer()

    def versions(self) -> dict:
        from importlib.metadata import version

        return {name: version(name) for name in ("trl", "transformers", "peft", "accelerate", "tokenizers")} | {
            "torch": self.torch.__version__}

    def step(self, k: int) -> dict:
        torch = self.torch
        torch.manual_seed(self.spec["seed"] + 1000 + k)
        queries = [torch.tensor(q) for q in self.spec["batches"][k]]
        t0 = time.perf_counter()
        responses = self.trainer.generate(
            queries, batch_size=self.spec["trl_generate_batch"], return_prompt=False, do_sample=True, top_k=0,
            top_p=1.0, temperature=self.temperature, max_new_tokens=self.spec["max_new_tokens"], min_length=-1,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        t1 = time.perf_counter()
        texts = [t.strip() for t in self.tokenizer.batch_decode(responses, skip_special_tokens=True)]
        t2 = time.perf_counter()
        scores = self.reward.reward(texts)
        t3 = time.perf_counter()
        stats = self.trainer.step(queries, responses, [torch.tensor(float(s)) for s in scores])
        t4 = time.perf_counter()
        forward = float(stats["time/ppo/forward_pass"])
        return {"generate": t1 - t0, "forward": forward, "score": t3 - t2, "optimise": t4 - t3 - forward,
                "total": t4 - t0, "response_length": sum(len(r) for r in responses) / len(responses),
                "kl": float(stats["objective/kl"]), "score_mean": float(stats["ppo/mean_scores"]),
                "trl_timing": {k: float(v) for k, v in stats.items() if k.startswith("time/")}}

    def check(self) -> dict:
        import trl.trainer.ppo_trainer as ppo_module

        torch, trainer = self.torch, self.trainer
        batch = json.loads(Path(self.spec["batch_path"]).read_text())
        queries = [torch.tensor(q) for q in batch["queries"]]
        responses = [torch.tensor(r) for r in batch["responses"]]
        scores = [torch.tensor(s) for s in batch["scores"]]

        seen: dict = {}  # what the step computes, recorded on the way (nothing is changed)
        compute_rewards, compute_advantages, masked_whiten = (trainer.compute_rewards, trainer.compute_advantages,
                                                              ppo_module.masked_whiten)

        def record_rewards(scores, logprobs, ref_logprobs, masks):
            out = compute_rewards(scores, logprobs, ref_logprobs, masks)
            seen.update(logprobs=logprobs, ref_logprobs=ref_logprobs, masks=masks, rewards=out[0],
                        non_score=out[1], kl=out[2])
            return out

        def record_whiten(values, mask, shift_mean=True):
            seen.setdefault("advantages", values.clone())  # the first call: GAE's advantages, before whitening
            return masked_whiten(values, mask, shift_mean)

        def record_advantages(values, rewards, mask):
            out = compute_advantages(values, rewards, mask)
            seen.update(values=out[0], whitened=out[1], returns=out[2])
            return out

        trainer.compute_rewards, trainer.compute_advantages = record_rewards, record_advantages
        ppo_module.masked_whiten = record_whiten
        names = {id(p): canonical_lora_name(n) for n, p in self.model.named_parameters() if p.requires_grad}
        names[id(self.model.v_head.summary.weight)] = "v_head.weight"
        names[id(self.model.v_head.summary.bias)] = "v_head.bias"
        grads: dict = {}
        record_gradients(trainer.optimizer, names, grads)
        stats = trainer.step(queries, responses, scores)
        ppo_module.masked_whiten = masked_whiten
        torch.save(grads, self.spec["grads_path"].format(side="trl"))
        mask = seen["masks"]
        lengths = mask.sum(1).long().tolist()
        if lengths != [len(r) for r in responses]:
            raise RuntimeError(f"TRL's mask covers {lengths} tokens, the responses have {[len(r) for r in responses]}")
        return {
            "rows": {name: response_rows(seen[name], mask) for name in
                     ("logprobs", "ref_logprobs", "values", "kl", "rewards", "advantages", "whitened", "returns")},
            "stats": {"kl": float(stats["objective/kl"]), "non_score_reward": float(stats["ppo/mean_non_score_reward"]),
                      "score": float(stats["ppo/mean_scores"]), "value_mean": float(stats["ppo/val/mean"]),
                      "return_mean": float(stats["ppo/returns/mean"]), "policy_loss": float(stats["ppo/loss/policy"]),
                      "value_loss": float(stats["ppo/loss/value"]), "clip_frac": float(stats["ppo/policy/clipfrac"]),
                      "value_clip_frac": float(stats["ppo/val/clipfrac"]), **gradient_norms(grads)},
            "lengths": lengths, "padding_side": self.tokenizer.padding_side}


def worker_main(side: str, spec_path: str, mode: str) -> None:
    """Serve the parent: one JSON command per line on stdin, one JSON answer per line on the protocol pipe."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (libraries, warnings) goes to the log, not into the protocol

    def answer(obj) -> None:
        protocol.write(PROTOCOL_PREFIX + json.dumps(obj) + "\n")

    spec = json.loads(Path(spec_path).read_text())
    try:
        worker = (OursSide if side == "ours" else TRLSide)(spec, mode)
        answer({"ready": True, "versions": worker.versions()})
    except Exception:
        answer({"error": traceback.format_exc()})
        return
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        try:
            answer(worker.step(command["k"]) if command["cmd"] == "step" else worker.check())
        except Exception:
            answer({"error": traceback.format_exc()})


# ---------------------------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------------------------

class Worker:
    """One side in its own process."""

    def __init__(self, side: str, mode: str, spec_path: Path, workdir: Path, trl_dir: Path, threads: int):
        self.side = side
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_DATASETS_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1", PYTHONUNBUFFERED="1")
        if side == "trl":
            env["PYTHONPATH"] = os.pathsep.join([str(trl_dir)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.log_path = workdir / f"{side}-{mode}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", side, "--mode", mode,
                                      "--spec", str(spec_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env, cwd=ROOT)
        self.ready = self.read()

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                reply = json.loads(line[len(PROTOCOL_PREFIX):])
                if "error" in reply:
                    self.fail(reply["error"])
                return reply
        self.fail(f"the process ended (exit {self.proc.wait()})")

    def fail(self, why: str):
        self.log.flush()
        tail = "".join(self.log_path.read_text(errors="replace").splitlines(True)[-15:])
        raise RuntimeError(f"{self.side} side failed: {why.strip()}\n--- last lines of {self.log_path} ---\n{tail}")

    def call(self, **command) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def build_spec(args, workdir: Path) -> dict:
    """Prompt token ids for every step (lab 09's hostile dialogues, chat template) and the shared settings."""
    import labhelpers  # noqa: F401
    import torch

    from labhelpers.hostile import load_hostile_dialogues
    from labhelpers.models import load_tokenizer, resolve_model_path
    from labhelpers.prompts import model_input
    from labhelpers import task_prompt

    path = resolve_model_path(MODEL)  # converts the embedded GGUF once per machine
    tokenizer = load_tokenizer(path, "causal")
    rows = load_hostile_dialogues("embedded")["train"]
    prompts = [tokenizer(model_input(tokenizer, task_prompt(row, "summary"), True), add_special_tokens=False)[
        "input_ids"] for row in rows]
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(args.seed)).tolist()
    batches = [[prompts[order[(k * args.batch_size + i) % len(order)]] for i in range(args.batch_size)]
               for k in range(args.steps + 1)]  # batch 0: the warm-up step
    model_config = json.loads((Path(path) / "config.json").read_text())
    torch.save(make_initial_weights(model_config, args.r, args.lora_b_std, args.seed, args.top_blocks),
               workdir / "init.pt")
    return {"model_path": path, "batches": batches, "stats_batch": batches[0], "seed": args.seed,
            "threads": args.threads, "lr": args.lr, "batch_size": args.batch_size,
            "mini_batch_size": args.mini_batch_size, "ppo_epochs": args.ppo_epochs,
            "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "kl_coef": args.kl_coef,
            "r": args.r, "alpha": args.alpha, "trl_generate_batch": args.trl_generate_batch or args.batch_size,
            "init_path": str(workdir / "init.pt"), "batch_path": str(workdir / "stats_batch.json"),
            "grads_path": str(workdir / "grads-{side}.pt"), "n_layers": model_config["num_hidden_layers"],
            "top_blocks": args.top_blocks}


def run_timing(args, spec_path: Path, workdir: Path) -> tuple[dict, dict]:
    """Warm-up, then ours, TRL, ours, TRL, ... on the same prompts; per-step phase times of both."""
    sides = {}
    try:
        for side in ("ours", "trl"):
            print(f"starting {side} (timing)...", flush=True)
            sides[side] = Worker(side, "timing", spec_path, workdir, args.trl_dir, args.threads)
        results = {"ours": [], "trl": []}
        for k in range(args.steps + 1):
            for side in ("ours", "trl"):
                r = sides[side].call(cmd="step", k=k)
                label = "warm-up" if k == 0 else f"step {k}/{args.steps}"
                print(f"  {side:4s} {label}: {r['total']:.1f} s (generate {r['generate']:.1f}, forward "
                      f"{r['forward']:.1f}, score {r['score']:.2f}, optimise {r['optimise']:.1f}; "
                      f"{r['response_length']:.1f} response tokens, KL {r['kl']:.3f})", flush=True)
                if k > 0:
                    results[side].append(r)
        versions = {side: w.ready["versions"] for side, w in sides.items()}
        return results, versions
    finally:
        for w in sides.values():
            w.close()


def run_check(args, spec_path: Path, workdir: Path) -> tuple[dict, dict, dict]:
    """Our side samples and saves the batch and updates; TRL then steps on the same batch."""
    results, versions = {}, {}
    for side in ("ours", "trl"):
        print(f"statistics check: {side}...", flush=True)
        w = Worker(side, "stats", spec_path, workdir, args.trl_dir, args.threads)
        try:
            results[side], versions[side] = w.call(cmd="check"), w.ready["versions"]
        finally:
            w.close()
    import torch

    grads = {side: torch.load(workdir / f"grads-{side}.pt") for side in ("ours", "trl")}
    gdiff = {}
    for part, prefix in (("LoRA", "layers."), ("value head", "v_head")):
        keys = sorted(k for k in grads["trl"] if k.startswith(prefix))
        if sorted(k for k in grads["ours"] if k.startswith(prefix)) != keys:
            raise RuntimeError(f"the two sides' {part} gradients have different parameters")
        num = sum(float((grads["ours"][k] - grads["trl"][k]).pow(2).sum()) for k in keys) ** 0.5
        den = sum(float(grads["trl"][k].pow(2).sum()) for k in keys) ** 0.5
        gdiff[part] = num / den if den else float("nan")
    return results, versions, gdiff


def fmt(x: float) -> str:
    return f"{x:.6g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def timing_section(args, results: dict) -> list[str]:
    lines = [f"| phase (s per step, median of {args.steps}) | labhelpers.rl | TRL {TRL_VERSION} | ours / TRL |",
             "|---|---:|---:|---:|"]
    for key, label in PHASES:
        ours, trl = median([r[key] for r in results["ours"]]), median([r[key] for r in results["trl"]])
        ratio = f"{ours / trl:.2f}" if trl > 0.05 else "-"
        bold = "**" if key == "total" else ""
        lines.append(f"| {bold}{label}{bold} | {bold}{ours:.2f}{bold} | {bold}{trl:.2f}{bold} | {bold}{ratio}{bold} |")
    ours_len = median([r["response_length"] for r in results["ours"]])
    trl_len = median([r["response_length"] for r in results["trl"]])
    lines.append(f"| response tokens (mean per response) | {ours_len:.1f} | {trl_len:.1f} | |")
    totals = {side: [r["total"] for r in rs] for side, rs in results.items()}
    paired = [a / b for a, b in zip(totals["ours"], totals["trl"])]
    ratio = median(totals["ours"]) / median(totals["trl"])
    trl_keys = results["trl"][0]["trl_timing"].keys()
    trl_own = ", ".join(f"{k.split('/')[-1]} {median([r['trl_timing'][k] for r in results['trl']]):.2f}"
                        for k in trl_keys)
    lines += ["", f"Whole step per timed step, in order: ours {', '.join(f'{t:.1f}' for t in totals['ours'])} s; "
              f"TRL {', '.join(f'{t:.1f}' for t in totals['trl'])} s; paired ratios ours / TRL "
              f"{', '.join(f'{p:.2f}' for p in paired)}. Ratio of the medians: {ratio:.2f} (goal: at most 0.5: "
              f"{'met' if ratio <= 0.5 else 'NOT met'}). TRL's own step timers (medians, s): {trl_own}."]
    return lines


STAT_ROWS = (  # (key, label, floor for the relative difference)
    ("kl", "mean KL per response (nats, k1)", 0.0),
    ("non_score_reward", "mean non-score reward per token (-beta * KL)", 0.0),
    ("score", "mean score", 0.0),
    ("value_mean", "values, mean over response tokens", 0.0),
    ("return_mean", "returns, mean", 0.0),
    ("policy_loss", "policy loss, first update (0 by construction: ratio 1, whitened advantages)", 1.0),
    ("value_loss", "value loss, first update", 0.0),
    ("clip_frac", "policy clip fraction", 1.0),
    ("value_clip_frac", "value clip fraction", 1.0),
    ("grad_norm_lora", "gradient norm, LoRA, first update", 0.0),
    ("grad_norm_value_head", "gradient norm, value head, first update", 0.0),
)
ROW_LABELS = {"logprobs": "log-probs of the response tokens", "ref_logprobs": "reference log-probs",
              "values": "values", "kl": "KL per token", "rewards": "rewards per token",
              "advantages": "advantages before whitening", "whitened": "advantages after whitening",
              "returns": "returns"}


def stats_section(results: dict, gdiff: dict, tolerance: float) -> tuple[list[str], float]:
    ours, trl = results["ours"], results["trl"]
    lines = [f"| statistic (one batch, same tokens and scores) | labhelpers.rl | TRL {TRL_VERSION} | rel. diff |",
             "|---|---:|---:|---:|"]
    worst = 0.0
    for key, label, floor in STAT_ROWS:
        a, b = ours["stats"][key], trl["stats"][key]
        d = rel_diff(a, b, floor)
        worst = max(worst, d)
        note = " (abs.)" if floor else ""
        lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | {d:.1e}{note} |")
    for name in ("advantages", "whitened"):
        (ma, sa), (mb, sb) = flat_mean_std(ours["rows"][name]), flat_mean_std(trl["rows"][name])
        floor = 1.0 if name == "whitened" else 0.0
        for what, a, b in (("mean", ma, mb), ("std", sa, sb)):
            d = rel_diff(a, b, floor if what == "mean" else 0.0)
            worst = max(worst, d)
            lines.append(f"| {ROW_LABELS[name]}, {what} over tokens | {fmt(a)} | {fmt(b)} | {d:.1e}"
                         f"{' (abs.)' if floor and what == 'mean' else ''} |")
    token_lines = []
    for name, label in ROW_LABELS.items():
        diff, rel = rows_max_rel_diff(ours["rows"][name], trl["rows"][name])
        worst = max(worst, rel)
        token_lines.append(f"{label} {diff:.1e} ({rel:.1e} of the largest)")
    for part, d in gdiff.items():
        worst = max(worst, d)
    tokens = sum(ours["lengths"])
    lines += ["", f"Per token, max |ours - TRL| over the batch's {tokens} response tokens: " + "; ".join(token_lines)
              + ". Gradient of the first update, |g_ours - g_TRL| / |g_TRL|: "
              + ", ".join(f"{part} {d:.1e}" for part, d in gdiff.items())
              + f". Largest relative difference of all: {worst:.1e} ("
              + ("agree" if worst <= tolerance else "DIFFER") + f" at {tolerance:g})."]
    s = ours["shortcut"]
    lines += ["", f"Our rollout as `PPOTrainer.rollout` gives it against the same forward passes run again: max |delta log-prob| "
                 f"{s['logprob_max_abs']:.1e}, max |delta value| {s['value_max_abs']:.1e}, mean KL per response "
                 f"{s['kl_generate']:.6f} vs {s['kl_forward']:.6f}."]
    return lines, worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per side, after one warm-up step each")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the timed steps")
    parser.add_argument("--lr", type=float, default=1.41e-5)
    parser.add_argument("--kl-coef", type=float, default=0.05, help="fixed KL coefficient beta (lab 09's)")
    parser.add_argument("--r", type=int, default=16, help="LoRA rank (alpha = 2r)")
    parser.add_argument("--top-blocks", type=int, default=0,
                        help="LoRA on the top N blocks only (lab 09 adapts the top 10 of 30); 0: every block")
    parser.add_argument("--lora-b-std", type=float, default=0.05,
                        help="std of the initial lora_B (peft: 0), so that the policy starts away from the reference")
    parser.add_argument("--trl-generate-batch", type=int, default=None,
                        help="batch_size of TRL's generate (default: the whole batch, as ours)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="relative difference counted as agreement")
    parser.add_argument("--trl-dir", type=Path, default=None, help=f"folder for TRL {TRL_VERSION} (default: "
                        f"{default_trl_dir()})")
    parser.add_argument("--quick", action="store_true", help="batch 4, mini-batch 2, 8 new tokens, 1 step: a smoke run")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-stats", action="store_true")
    parser.add_argument("--append", action="store_true", help="append to RESULTS.md even on --quick")
    parser.add_argument("--no-append", action="store_true", help="never append to RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, batch, gradients)")
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["timing", "stats"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.spec, args.mode)
        return 0
    if args.quick:
        args.batch_size, args.mini_batch_size, args.max_new_tokens, args.steps = 4, 2, 8, 1
    if args.batch_size % args.mini_batch_size:
        parser.error("--batch-size must be a multiple of --mini-batch-size (TRL requires it)")
    args.alpha = 2 * args.r
    args.trl_dir = (args.trl_dir or default_trl_dir()).resolve()
    ensure_trl(args.trl_dir)

    workdir = Path(tempfile.mkdtemp(prefix="ppo_vs_trl-"))
    ok = False
    try:
        spec = build_spec(args, workdir)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        load_before = os.getloadavg()[0]
        started = time.strftime("%Y-%m-%d %H:%M")
        timing = versions = check = None
        if not args.skip_stats:
            check = run_check(args, spec_path, workdir)
            versions = check[1]
        if not args.skip_timing:
            timing, versions = run_timing(args, spec_path, workdir)
        load_after = os.getloadavg()[0]
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work folder kept: {workdir}")

    lengths = [len(q) for batch in spec["batches"] for q in batch]
    v_ours, v_trl = versions["ours"], versions["trl"]
    header = [
        f"### PPO step: labhelpers.rl vs TRL {TRL_VERSION}, {started}", "",
        f"SmolLM2-135M-Instruct (the embedded copy) fp32, LoRA r={args.r} alpha {args.alpha} dropout 0 on "
        f"{' and '.join(LORA_TARGETS)} of "
        f"{'all ' + str(spec['n_layers']) if not 0 < args.top_blocks < spec['n_layers'] else 'the top ' + str(args.top_blocks) + ' of ' + str(spec['n_layers'])}"
        f" blocks, linear value head on the last hidden state, "
        f"both started from the same seeded weights (lora_B ~ N(0, {args.lora_b_std}) so the policy starts away from "
        f"the reference); batch {args.batch_size} of lab 09's hostile-dialogue prompts (chat template, "
        f"{min(lengths)}-{max(lengths)} tokens, mean {statistics.fmean(lengths):.0f}), up to {args.max_new_tokens} new "
        f"tokens sampled at temperature {args.temperature} (top-k/top-p off; TRL's `generate` with batch_size "
        f"{spec['trl_generate_batch']}, ours one `generate` per batch), mini-batch {args.mini_batch_size}, "
        f"{args.ppo_epochs} PPO epoch(s), AdamW lr {args.lr:g} on both sides, fixed KL coefficient {args.kl_coef:g} "
        f"(k1), gamma 1, lambda 0.95, clip 0.2 / 0.2, vf_coef 0.1, gradient clipping 1.0, no score scaling or reward "
        f"whitening; reward: alt-profanity-check log-odds (labhelpers.rewards). Each side in its own process with "
        f"{args.threads} torch thread(s), taking turns; {platform.machine()}, {os.cpu_count()} CPU cores, load average "
        f"{load_before:.1f} at the start, {load_after:.1f} at the end. Ours: torch {v_ours['torch']}, transformers {v_ours['transformers']}, peft "
        f"{v_ours['peft']}. TRL side: trl {v_trl['trl']}, transformers {v_trl['transformers']}, peft {v_trl['peft']}, "
        f"accelerate {v_trl['accelerate']}, tokenizers {v_trl['tokenizers']}, torch {v_trl['torch']}.", ""]
    body = []
    if timing:
        body += timing_section(args, timing) + [
            "", "Phases: ours' generation is one batched `generate`; its forward passes take the old log-probs and "
            "values and then the reference's (the lab's `rollout`). TRL's generation is its `generate` (timed here); its "
            "forward passes recompute the policy's log-probs and values and then the reference's; its optimisation is "
            "the rest of `step`; both train on random minibatches through the whole model. "
            "Scoring is the same reward model on both sides. Gradient clipping: ours clips every minibatch, TRL "
            f"{TRL_VERSION} only the first minibatch of a run (its `model_params` is a `filter` iterator, used up by the "
            "first `clip_grad_norm_`); the time this takes is negligible.", ""]
    if check:
        stat_lines, worst = stats_section(check[0], check[2], args.tolerance)
        body += [f"Same statistics on one batch (temperature 1.0, mini-batch = batch = {args.batch_size}, one epoch, "
                 f"no gradient clipping; TRL pads {check[0]['trl']['padding_side']}):", ""] + stat_lines + [""]
    text = "\n".join(header + body)
    print("\n" + text)
    append = not args.no_append and (args.append or not args.quick)
    if append:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
        print(f"appended to {ROOT / 'benchmarks' / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
