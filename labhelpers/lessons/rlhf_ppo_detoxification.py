# Written by `python -m labhelpers.tools.export` from notebooks/09_rlhf_ppo_detoxification.ipynb: edit the notebook, then run it again.
"""Lesson code of Lab 09: RLHF with PPO: teach a summariser to stop repeating insults."""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import re
import shutil
import time
import torch
from collections import Counter
from dataclasses import dataclass
from labhelpers import PPOConfig
from labhelpers import Samples
from labhelpers import check_scores
from labhelpers import hidden_size
from labhelpers import response_logits
from labhelpers import response_states
from labhelpers import sample_responses
from pathlib import Path
from torch import nn
from typing import NamedTuple

__all__ = ['RewardHead', 'pairwise_loss', 'train_reward_head', 'base_model_id', 'LearnedRewardModel', 'words', 'repetition', 'loops', 'begins_like', 'ValueHead', 'logprobs_from_logits', 'logprobs_and_values', 'reference_logprobs', 'Rollout', 'rollout', 'masked_mean', 'kl_penalty', 'compute_rewards', 'gae', 'masked_var', 'whiten', 'advantages_and_returns', 'PolicyLoss', 'policy_loss', 'ValueLoss', 'value_loss', 'ppo_epochs', 'PPOTrainer']


# 09_rlhf_ppo_detoxification.ipynb, cell 12
class RewardHead(nn.Module):
    """r(x, y) = w . (h - mean) / std + b, from h: the hidden states of response y to prompt x, averaged."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, 1)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear((hidden.float() - self.mean) / self.std).squeeze(-1)


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: -log sigmoid(r_chosen - r_rejected), averaged over the pairs."""
    return -nn.functional.logsigmoid(r_chosen - r_rejected).mean()


def train_reward_head(head, train, validation, *, steps=300, learning_rate=3e-3, weight_decay=0.01):
    """Full-batch AdamW on the pairwise loss. `train`, `validation`: (chosen, rejected) hidden states."""
    chosen, rejected = train
    both = torch.cat([chosen, rejected])
    head.mean.copy_(both.mean(0))
    head.std.copy_(both.std(0) + 1e-6)
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=weight_decay)
    history = []
    for step in range(1, steps + 1):
        loss = pairwise_loss(head(chosen), head(rejected))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 1 or step % 10 == 0:
            with torch.no_grad():
                r_c, r_r = head(validation[0]), head(validation[1])
                history.append({"step": step, "train loss": loss.item(),
                                "validation loss": pairwise_loss(r_c, r_r).item(),
                                "validation accuracy": (r_c > r_r).float().mean().item()})
    return pd.DataFrame(history)


def base_model_id(model) -> str:
    """What identifies the language model a reward head reads: its name, architecture and sizes."""
    c = model.config
    name = Path(getattr(c, "_name_or_path", "") or "").name or c.model_type
    return f"{name} ({c.model_type}, {c.num_hidden_layers} blocks, width {hidden_size(model)}, vocabulary {c.vocab_size})"


class LearnedRewardModel:
    """The frozen language model and a trained RewardHead: `reward(prompts, responses)` for PPO.

    The reward is the head's score, centred and scaled on the training pairs' summaries (mean 0, std 1).
    `save(folder)` writes the head and the name of the model it reads; `load(folder, model, tokenizer)`
    refuses a model other than that one.
    """

    def __init__(self, model, tokenizer, head: RewardHead, center: float = 0.0, scale: float = 1.0):
        self.model, self.tokenizer, self.head = model.eval(), tokenizer, head.eval()
        self.center, self.scale = float(center), float(scale)

    def score(self, prompts, responses) -> np.ndarray:
        """The head's raw score r(x, y) for each (prompt, response)."""
        hidden = response_states(self.model, self.tokenizer, prompts, responses)
        with torch.no_grad():
            return self.head(hidden).numpy().astype(np.float64)

    def reward(self, prompts, responses) -> np.ndarray:
        return (self.score(prompts, responses) - self.center) / self.scale

    def save(self, folder) -> Path:
        folder = Path(folder)
        partial = folder.with_name(folder.name + ".partial")  # written whole, then renamed into place
        partial.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), partial / "head.pt")
        (partial / "reward_model.json").write_text(json.dumps({
            "base_model": base_model_id(self.model), "hidden_size": hidden_size(self.model),
            "center": self.center, "scale": self.scale}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)
        return folder

    @classmethod
    def load(cls, folder, model, tokenizer) -> "LearnedRewardModel":
        folder = Path(folder)
        if not (folder / "reward_model.json").is_file():
            raise FileNotFoundError(f"{folder} holds no reward model (reward_model.json); run lab 09 to train one")
        meta = json.loads((folder / "reward_model.json").read_text())
        if meta["base_model"] != base_model_id(model):
            raise ValueError(f"the reward model in {folder} reads {meta['base_model']}, not {base_model_id(model)}; "
                             "load it with the model it was trained on, or train one for this model")
        head = RewardHead(meta["hidden_size"])
        head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
        return cls(model, tokenizer, head, meta["center"], meta["scale"])


# 09_rlhf_ppo_detoxification.ipynb, cell 22
def words(text: str) -> list[str]:
    """Lower-cased words, keeping #Person1#-style names and apostrophes."""
    return re.findall(r"[\w#']+", text.lower())


def repetition(text: str) -> float:
    """Share of a text's word bigrams that repeat an earlier bigram of the same text (0: none repeats)."""
    w = words(text)
    bigrams = list(zip(w, w[1:]))
    return 1 - len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def loops(text: str, n: int = 3, times: int = 3) -> bool:
    """Whether the text is stuck in a loop: one of its word n-grams occurs `times` times or more."""
    w = words(text)
    return max(Counter(zip(*[w[i:] for i in range(n)])).values(), default=0) >= times


def begins_like(summary: str, dialogue: str, n: int = 6) -> bool:
    """Whether the summary's first n words appear in a row in the dialogue: it begins by copying it."""
    first = words(summary)[:n]
    return len(first) == n and f" {' '.join(first)} " in f" {' '.join(words(dialogue))} "


# 09_rlhf_ppo_detoxification.ipynb, cell 27
class ValueHead(nn.Module):
    """V(s_t): one linear layer on the policy's last hidden state at each position, in float32."""

    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] at each position: [B, T, V], [B, T] -> [B, T]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def logprobs_and_values(policy, value_head, samples, temperature: float):
    """log pi(a_t | s_t) at the sampling temperature and V(s_t), for every response token: one forward pass."""
    logits, hidden = response_logits(policy, samples.query_ids, samples.query_mask, samples.response_ids,
                                     hidden=True)
    return logprobs_from_logits(logits / temperature, samples.response_ids), value_head(hidden)


# 09_rlhf_ppo_detoxification.ipynb, cell 29
def reference_logprobs(policy, samples, temperature: float) -> torch.Tensor:
    """log pi_ref(a_t | s_t): the policy with its LoRA adapter disabled, at the sampling temperature."""
    with torch.no_grad(), policy.disable_adapter():
        logits, _ = response_logits(policy, samples.query_ids, samples.query_mask, samples.response_ids)
    return logprobs_from_logits(logits / temperature, samples.response_ids)


@dataclass
class Rollout:
    """Sampled responses and what the old policy, its value head and the reference said of them."""

    samples: Samples  # prompts, token ids, mask, texts
    logprobs: torch.Tensor  # log pi_old(a_t | s_t), [B, T]
    values: torch.Tensor  # V_old(s_t), [B, T]
    ref_logprobs: torch.Tensor  # log pi_ref(a_t | s_t), [B, T]
    seconds: dict  # time spent sampling and in the forward passes

    @property
    def mask(self) -> torch.Tensor:
        return self.samples.mask

    @property
    def texts(self) -> list:
        return self.samples.texts

    def __len__(self) -> int:
        return len(self.samples)


def rollout(policy, value_head, tokenizer, prompts, config) -> Rollout:
    """Sample one response per prompt; record log pi_old, V_old and log pi_ref on its tokens (0 after them)."""
    started = time.perf_counter()
    samples = sample_responses(policy, tokenizer, prompts, max_new_tokens=config.max_new_tokens,
                               temperature=config.temperature, min_new_tokens=config.min_new_tokens)
    sampled = time.perf_counter()
    with torch.no_grad():
        logprobs, values = logprobs_and_values(policy, value_head, samples, config.temperature)
    ref_logprobs = reference_logprobs(policy, samples, config.temperature)
    mask = samples.mask
    seconds = {"time_generate": sampled - started, "time_reference": time.perf_counter() - sampled}
    return Rollout(samples, logprobs * mask, values * mask, ref_logprobs * mask, seconds)


# 09_rlhf_ppo_detoxification.ipynb, cell 31
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is 1: sum(x * m) / sum(m)."""
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled tokens' log-probs, d = log pi - log pi_ref."""
    d = logprob - ref_logprob
    estimates = {"k1": lambda: d, "k3": lambda: torch.expm1(-d) + d, "abs": lambda: d.abs(), "mse": lambda: 0.5 * d ** 2}
    if kind not in estimates:
        raise ValueError(f"kind={kind!r} is unknown; choose one of {list(estimates)}")
    return estimates[kind]()


def compute_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """r_t = -beta * KL_t on each response token, plus the response's score on its last token; 0 after it."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(score)), last] += score.to(rewards.dtype)
    return rewards


# 09_rlhf_ppo_detoxification.ipynb, cell 36
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: (advantages A_t, returns R_t = A_t + V_t), both [B, T], 0 after the end."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = next_advantage
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Variance of x over the masked positions, with Bessel's correction (n - 1)."""
    n = mask.sum()
    if n < 2:
        raise ValueError(f"the mask covers {int(n)} position(s); whitening needs at least 2 response tokens")
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask) * n / (n - 1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked positions; 0 elsewhere."""
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + 1e-8) * mask


def advantages_and_returns(scores, kl, values, mask, kl_coef: float, gamma: float, lam: float):
    """Rewards, then GAE: (whitened advantages, returns, rewards); the returns come before whitening."""
    rewards = compute_rewards(scores, kl, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    return whiten(advantages, mask), returns, rewards


# 09_rlhf_ppo_detoxification.ipynb, cell 38
class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # the clipped surrogate, to minimise
    clip_frac: torch.Tensor  # share of tokens where the clipped term was the one used
    approx_kl: torch.Tensor  # mean of (rho - 1) - log rho: an estimate of KL(old || new)


def policy_loss(new_logprobs, old_logprobs, advantages, mask, clip: float = 0.2) -> PolicyLoss:
    """PPO's clipped surrogate: mean over tokens of max(-A * rho, -A * clip(rho, 1 - clip, 1 + clip))."""
    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return PolicyLoss(loss, clip_frac, approx_kl)


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    clip_frac: torch.Tensor  # share of tokens where the clipped prediction gave the larger error


def value_loss(new_values, old_values, returns, mask, clip: float = 0.2) -> ValueLoss:
    """1/2 mean over tokens of max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -clip, clip)."""
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip, clip)
    unclipped_loss = (new_values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return ValueLoss(loss, clip_frac)


# 09_rlhf_ppo_detoxification.ipynb, cell 43
def ppo_epochs(policy, value_head, optimizer, rollout: Rollout, advantages, returns, config, shuffle) -> dict:
    """config.ppo_epochs passes over shuffled minibatches, one gradient step each; the mean of their statistics."""
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    stats = []
    for _ in range(config.ppo_epochs):
        for idx in torch.randperm(len(rollout), generator=shuffle).split(config.mini_batch_size):
            minibatch = rollout.samples.select(idx)  # these rows, without columns that are padding in all of them
            mask, width = minibatch.mask, minibatch.mask.shape[1]
            new_logprobs, new_values = logprobs_and_values(policy, value_head, minibatch, config.temperature)
            pg = policy_loss(new_logprobs, rollout.logprobs[idx, :width], advantages[idx, :width], mask,
                             config.clip_range)
            vf = value_loss(new_values, rollout.values[idx, :width], returns[idx, :width], mask,
                            config.clip_range_value)
            loss = pg.loss + config.vf_coef * vf.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            stats.append({"policy_loss": pg.loss.item(), "value_loss": vf.loss.item(), "clip_frac": pg.clip_frac.item(),
                          "value_clip_frac": vf.clip_frac.item(), "approx_kl": pg.approx_kl.item()})
    return pd.DataFrame(stats).mean().to_dict()


# 09_rlhf_ppo_detoxification.ipynb, cell 45
class PPOTrainer:
    """PPO on a LoRA policy: `rollout(prompts)`, then `update(rollout, scores)`; `step` does both with a reward."""

    def __init__(self, policy, tokenizer, config: PPOConfig | None = None, *, value_head: nn.Module | None = None):
        self.config = PPOConfig() if config is None else config
        if not isinstance(self.config, PPOConfig):
            raise TypeError(f"config must be a PPOConfig, not {type(self.config).__name__}")
        if not hasattr(policy, "disable_adapter"):
            raise TypeError(f"policy must be a PEFT model with a LoRA adapter (add_adapter), not "
                            f"{type(policy).__name__}: the reference is the policy with its adapter disabled")
        self.policy, self.tokenizer = policy.eval(), tokenizer  # eval: no dropout, so the ratio starts at 1
        device = next(policy.parameters()).device
        self.value_head = (ValueHead(hidden_size(policy)) if value_head is None else value_head).to(device)
        trainable = [p for p in policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(trainable, lr=self.config.learning_rate)
        self.kl_coef = self.config.init_kl_coef
        self.shuffle = torch.Generator().manual_seed(self.config.seed)
        self.history: list[dict] = []

    def rollout(self, prompts) -> Rollout:
        return rollout(self.policy, self.value_head, self.tokenizer, prompts, self.config)

    def update(self, rollout: Rollout, scores) -> dict:
        """Per-token rewards, GAE and whitening, then the epochs; returns (and keeps) the step's statistics."""
        started, cfg, mask = time.perf_counter(), self.config, rollout.mask
        scores = check_scores(scores, len(rollout), mask.device)
        kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, cfg.kl_penalty) * mask
        advantages, returns, rewards = advantages_and_returns(scores, kl, rollout.values, mask, self.kl_coef,
                                                              cfg.gamma, cfg.lam)
        losses = ppo_epochs(self.policy, self.value_head, self.optimizer, rollout, advantages, returns, cfg,
                            self.shuffle)
        mean_kl = kl.sum(1).mean().item()  # nats per response
        stats = {"step": len(self.history), "score": scores.mean().item(), "kl": mean_kl, "kl_coef": self.kl_coef,
                 "reward": rewards.sum(1).mean().item(), "response_length": mask.sum(1).mean().item(), **losses,
                 "value_mean": masked_mean(rollout.values, mask).item(),
                 "return_mean": masked_mean(returns, mask).item(), **rollout.seconds,
                 "time_optimize": time.perf_counter() - started}
        if cfg.adaptive_kl:  # beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)
            self.kl_coef *= 1 + min(max(mean_kl / cfg.target_kl - 1, -0.2), 0.2) * len(rollout) / cfg.horizon
        self.history.append(stats)
        return stats

    def step(self, prompts, reward_fn) -> dict:
        """rollout, score the texts with reward_fn (e.g. a scorer's `reward`), update."""
        started = time.perf_counter()
        rollout = self.rollout(prompts)
        if not any(rollout.texts):
            raise ValueError(f"every one of the {len(rollout)} responses is empty; check that the prompts do not "
                             "end with the end-of-sequence token, or set PPOConfig(min_new_tokens=...)")
        scored = time.perf_counter()
        scores = reward_fn(rollout.texts)
        stats = self.update(rollout, scores)
        stats.update(time_score=time.perf_counter() - scored, time_step=time.perf_counter() - started)
        return stats
