"""PPO for language models, written to be read beside the papers, every step visible (in the spirit of CleanRL).

Papers: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (clipped surrogate, eq. 7);
Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
(GAE, eq. 16); Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (a per-token
KL penalty against a frozen reference model, and its adaptive coefficient, eq. 2).

The episode: a prompt is the state, each response token an action, and the reward model's score
arrives once, on the last response token. Tensors are [batch, response tokens]; `mask` is 1 on the
response tokens up to and including the first end-of-sequence token and 0 after it.

One PPO step (`PPOTrainer.step`):
1. rollout: sample responses from the policy (one batched `generate`, KV cache on); the logits and
   last hidden states `generate` already computed give the old log-probs and the values, so no second
   forward pass is needed; the reference's log-probs come from forward passes over chunks of prompts of
   similar length (little padding). For a LoRA policy the reference is the same model with the adapter
   disabled: no second copy in memory.
2. score: the reward function scores the decoded responses.
3. advantages: rewards = score on the last token - beta * KL per token; GAE; advantages whitened.
4. optimise: K epochs over shuffled minibatches of the clipped surrogate + vf_coef * clipped value loss.
   Where LoRA adapts only the top blocks (lab 09: 10 of 30), the blocks below compute the same for the
   policy and the reference and never change: the reference pass keeps their output, and every update
   runs only the blocks above it.
Each step returns its statistics, with seconds per phase (generate, reference, score, optimise).

Works for decoder-only (causal, left-padded prompts) and encoder-decoder (T5) policies.

Bad input stops a step before anything is trained, with an error that says what to fix: a reference model
that shares weights with the policy, a batch whose responses are all empty (or no new tokens at all), a reward
function that returns None, non-numbers, NaN or infinity, or the wrong number of scores.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from .device import packed_linears
from .models import model_family

__all__ = ['KL_KINDS', 'masked_mean', 'masked_var', 'whiten', 'logprobs_from_logits', 'entropy_from_logits',
           'kl_penalty', 'last_token_index', 'compute_rewards', 'gae', 'PolicyLoss', 'policy_loss', 'ValueLoss',
           'value_loss', 'FixedKLController', 'AdaptiveKLController', 'response_mask', 'ValueHead', 'hidden_size',
           'PPOConfig', 'Rollout', 'sampling_config', 'encode_prompts', 'response_logits', 'TRUNK_MODEL_TYPES',
           'frozen_trunk_depth', 'PPOTrainer', 'heldout_kl']

KL_KINDS = ("k1", "k3", "abs", "mse", "full")


# ---------------------------------------------------------------------------------------------
# The equations: pure functions on tensors
# ---------------------------------------------------------------------------------------------

def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is 1: sum(x * m) / sum(m)."""
    if dim is None:
        return (x * mask).sum() / mask.sum()
    return (x * mask).sum(dim) / mask.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over the masked positions; unbiased: times n / (n - 1) (Bessel's correction)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(f"the mask covers {int(n)} position(s); an unbiased variance needs at least 2")
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked positions; shift_mean=False adds the mean back.

    Masked-out positions come back as 0.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token | context) = log_softmax(logits)[token], for each position: [B, T, V], [B, T] -> [B, T]."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, per position: [B, T, V] -> [B, T]."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)


def kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of the sampled tokens (Schulman's k1, k3).

    With d = log pi(y) - log pi_ref(y):
      k1:  d                        (unbiased, can be negative; the course's and TRL's default "kl")
      k3:  exp(-d) - 1 + d          (unbiased and never negative)
      abs: |d|;  mse: d^2 / 2       (biased, never negative)
      full: sum_v pi(v) (log pi(v) - log pi_ref(v)): the exact KL; here the inputs are the full
            log-probability distributions [..., V], not the sampled tokens' log-probs.
    """
    if kind == "full":
        return (logprob.exp() * (logprob - ref_logprob)).sum(-1)
    d = logprob - ref_logprob
    if kind == "k1":
        return d
    if kind == "k3":
        return torch.expm1(-d) + d
    if kind == "abs":
        return d.abs()
    if kind == "mse":
        return 0.5 * d ** 2
    raise ValueError(f"kind={kind!r} is unknown; choose one of {list(KL_KINDS)}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last response token of each row (the mask is 1 on a prefix of each row)."""
    return mask.sum(1).long() - 1


def compute_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards (Ziegler et al. 2019, eq. 2): r_t = -beta * KL_t, plus the score on the last token.

    `score` [B] is the reward model's number for each response, `kl` [B, T] the per-token penalty
    (see kl_penalty), `kl_coef` is beta. Positions after the last response token get 0.
    """
    rewards = -kl_coef * kl * mask
    rows = torch.arange(len(score), device=score.device)
    rewards[rows, last_token_index(mask)] += score.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): (advantages, returns), both [B, T].

      delta_t = r_t + gamma * V_{t+1} - V_t         (V after the last response token is 0: the episode ended)
      A_t     = delta_t + gamma * lam * A_{t+1}
      R_t     = A_t + V_t                            (the value head's regression target)
    """
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


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # the clipped surrogate, to minimise
    clip_frac: torch.Tensor  # share of tokens where the clipped term was the one used
    approx_kl: torch.Tensor  # E[(r - 1) - log r], an estimate of KL(old || new) (k3)


def policy_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip: float = 0.2) -> PolicyLoss:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise:

      ratio_t = exp(log pi_new(a_t) - log pi_old(a_t))
      L = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - clip, 1 + clip))
    """
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


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> ValueLoss:
    """Clipped value loss (PPO as in OpenAI baselines and TRL):

      V_clip = V_old + clip(V_new - V_old, -clip, clip)
      L = 1/2 * mean_t max((V_new - R_t)^2, (V_clip - R_t)^2)
    """
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip, clip)
    unclipped_loss = (new_values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return ValueLoss(loss, clip_frac)


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""


class AdaptiveKLController:
    """Ziegler et al. 2019: steer beta so the KL per response stays near a target.

      e = clip(KL / target - 1, -0.2, 0.2);   beta <- beta * (1 + e * n_steps / horizon)
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """One update after a batch of `n_steps` responses whose mean KL was `current_kl` (nats per response)."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def response_mask(response_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """1 on each response token up to and including the first end-of-sequence token, 0 after it."""
    is_eos = torch.isin(response_ids, torch.as_tensor(list(eos_token_ids), device=response_ids.device)).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # eos tokens strictly before each position
    return (eos_before == 0).float()


# ---------------------------------------------------------------------------------------------
# The value head
# ---------------------------------------------------------------------------------------------

class ValueHead(nn.Module):
    """V(s_t): one linear layer on the policy's last hidden state at each position, in float32."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def hidden_size(model) -> int:
    """Width of a model's last hidden state (hidden_size, or d_model for T5)."""
    config = model.config
    for name in ("hidden_size", "d_model", "n_embd"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__}; pass value_head=ValueHead(width)")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

def _number(name: str, value, *, low=None, high=None, low_open=False, integer=False, none_ok=False) -> None:
    if value is None and none_ok:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name}={value!r} must be {'a whole number' if integer else 'a number'}"
                         f"{' or None' if none_ok else ''}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}={value!r} must be {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise ValueError(f"{name}={value!r} must be <= {high}")


@dataclass(frozen=True)
class PPOConfig:
    """PPO's settings; defaults follow TRL 0.11's PPOConfig where the course relied on them."""

    learning_rate: float = 1.41e-5
    mini_batch_size: int = 4  # rollouts per gradient step
    ppo_epochs: int = 4  # passes over the batch of rollouts per PPO step
    gamma: float = 1.0  # discount
    lam: float = 0.95  # GAE lambda
    clip_range: float = 0.2  # policy ratio clipped to [1 - clip_range, 1 + clip_range]
    clip_range_value: float = 0.2  # value change clipped to +/- clip_range_value
    vf_coef: float = 0.1  # loss = policy loss + vf_coef * value loss
    kl_penalty: str = "k1"  # per-token KL estimator, see kl_penalty()
    init_kl_coef: float = 0.2  # beta at the start
    adaptive_kl: bool = True  # steer beta towards target_kl (Ziegler et al. 2019), else keep it fixed
    target_kl: float = 6.0  # nats per response
    horizon: int = 10_000
    max_grad_norm: float | None = 1.0  # gradient clipping (None: off)
    max_new_tokens: int = 40
    min_new_tokens: int = 0  # >0 suppresses end-of-sequence early: those tokens are then slightly off-policy
    temperature: float = 1.0  # sampling temperature; log-probs are taken from logits / temperature too
    seed: int = 0

    def __post_init__(self):
        _number("learning_rate", self.learning_rate, low=0, low_open=True)
        _number("mini_batch_size", self.mini_batch_size, low=1, integer=True)
        _number("ppo_epochs", self.ppo_epochs, low=1, integer=True)
        _number("gamma", self.gamma, low=0, high=1)
        _number("lam", self.lam, low=0, high=1)
        _number("clip_range", self.clip_range, low=0, low_open=True)
        _number("clip_range_value", self.clip_range_value, low=0, low_open=True)
        _number("vf_coef", self.vf_coef, low=0)
        if self.kl_penalty not in KL_KINDS:
            raise ValueError(f"kl_penalty={self.kl_penalty!r} is unknown; choose one of {list(KL_KINDS)}")
        _number("init_kl_coef", self.init_kl_coef, low=0)
        if not isinstance(self.adaptive_kl, bool):
            raise ValueError(f"adaptive_kl={self.adaptive_kl!r} must be True or False")
        _number("target_kl", self.target_kl, low=0, low_open=True)
        _number("horizon", self.horizon, low=1, integer=True)
        _number("max_grad_norm", self.max_grad_norm, low=0, low_open=True, none_ok=True)
        _number("max_new_tokens", self.max_new_tokens, low=1, integer=True)
        _number("min_new_tokens", self.min_new_tokens, low=0, high=self.max_new_tokens, integer=True)
        _number("temperature", self.temperature, low=0, low_open=True)
        _number("seed", self.seed, low=0, integer=True)

    def as_dict(self) -> dict:
        """The settings as a plain dict (for a run record or a table)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------------------------------------
# Rollouts and the trainer
# ---------------------------------------------------------------------------------------------

@dataclass
class Rollout:
    """A batch of sampled responses and what the old policy, its value head and the reference said of them.

    Prompts are padded on the side their model family needs (left for causal, right for seq2seq);
    response tensors are [B, T], right-padded after the first end-of-sequence token.
    """

    prompts: list
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    mask: torch.Tensor  # 1 on response tokens up to and including the first eos
    logprobs: torch.Tensor  # log pi_old(a_t | s_t)
    values: torch.Tensor  # V_old(s_t)
    ref_logprobs: torch.Tensor  # log pi_ref(a_t | s_t)
    kl: torch.Tensor  # per-token KL penalty, config.kl_penalty's estimator
    entropy: float  # mean per-token entropy of the sampling policy
    texts: list[str]  # decoded responses
    timings: dict = field(default_factory=dict)
    # the hidden states entering the first block that holds anything trainable, for every row over the
    # batch's padded prompt and response columns ([batch, query + response columns, hidden]; columns the
    # reference pass did not need hold zeros); None: updates run full forward passes
    trunk: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.response_ids)


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _check_reference(policy, ref_model) -> None:
    """Refuse a reference model that shares weights with the policy: training would move the reference too,
    the KL penalty would stay near 0 whatever the policy did, and requires_grad_(False) would freeze the policy."""
    if not hasattr(ref_model, "parameters") or not hasattr(ref_model, "config"):
        raise TypeError(f"ref_model must be a transformers language model, not {type(ref_model).__name__}")
    if ref_model is policy:
        raise ValueError("ref_model is the policy itself; pass a frozen copy (copy.deepcopy(policy) before adding "
                         "the adapter), or leave ref_model=None for a LoRA policy (its adapter is disabled instead)")
    policy_storage = {p.untyped_storage().data_ptr() for p in policy.parameters() if p.numel()}
    shared = [name for name, p in ref_model.named_parameters()
              if p.numel() and p.untyped_storage().data_ptr() in policy_storage]
    if shared:
        raise ValueError(f"ref_model shares {len(shared)} parameter tensor(s) with the policy (e.g. {shared[0]!r}), "
                         "so the reference would change with the policy; pass copy.deepcopy of the base model, or "
                         "leave ref_model=None for a LoRA policy")


def _clock(device) -> float:
    """Wall time, after waiting for queued GPU work (so a phase's time is really its own)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def sampling_config(model, tokenizer, max_new_tokens: int, temperature: float, min_new_tokens: int = 0, **extra):
    """A copy of the model's GenerationConfig for pure sampling from softmax(logits / temperature): no top-k,
    top-p, beams or penalties, so the samples follow exactly the distribution PPO's log-probabilities assume."""
    gen = copy.deepcopy(model.generation_config)
    settings = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_beams=1, repetition_penalty=1.0,
                    no_repeat_ngram_size=0, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                    max_length=None, **extra)
    for key, value in settings.items():
        setattr(gen, key, value)
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return gen


def encode_prompts(tokenizer, prompts, family: str, chat: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (texts, chat messages or token-id lists) -> padded ids and attention mask on `device`.

    Causal prompts are padded on the left (the response follows them), seq2seq prompts on the right.
    """
    from .prompts import model_input

    if isinstance(prompts, (str, dict)) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of prompts")
    if all(isinstance(p, (list, tuple)) and p and all(isinstance(t, int) for t in p) for p in prompts):
        encoded = {"input_ids": [list(p) for p in prompts], "attention_mask": [[1] * len(p) for p in prompts]}
    else:
        texts = [model_input(tokenizer, p, chat) for p in prompts]
        encoded = tokenizer(texts, add_special_tokens=not chat)
    tokenizer.padding_side = "left" if family == "causal" else "right"
    batch = tokenizer.pad(encoded, return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def response_logits(model, family: str, query_ids, query_mask, response_ids, *, temperature: float = 1.0,
                    hidden: bool = False, logits_to_keep: bool = True, decoder_start_token_id: int | None = None):
    """Logits (divided by the temperature) for each response token, and the last hidden states (or None).

    Causal: one pass over prompt + response; the logits at position t predict token t + 1, so the
    response tokens are predicted from the R positions before them, and the output layer runs only
    there (logits_to_keep). Seq2seq: the encoder reads the prompt, the decoder the response shifted
    right behind the decoder start token.
    """
    logits, last_hidden, _ = _response_outputs(model, family, query_ids, query_mask, response_ids,
                                               temperature=temperature, hidden=hidden, logits_to_keep=logits_to_keep,
                                               decoder_start_token_id=decoder_start_token_id)
    return logits, last_hidden


def _response_outputs(model, family: str, query_ids, query_mask, response_ids, *, temperature: float = 1.0,
                      hidden: bool = False, logits_to_keep: bool = True, decoder_start_token_id: int | None = None,
                      trunk_depth: int = 0, trunk: torch.Tensor | None = None):
    """response_logits, and for a causal model the hidden states entering block `trunk_depth` (when > 0).

    With `trunk` (those hidden states, from an earlier pass over the same rows) only the blocks from
    `trunk_depth` up run: the frozen blocks below would compute exactly `trunk` again.
    """
    R = response_ids.shape[1]
    trunk_out = None
    if family == "causal":
        attention = torch.cat([query_mask, torch.ones_like(response_ids)], dim=1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)  # as generate numbers left-padded prompts
        extra = {"logits_to_keep": R + 1} if logits_to_keep else {}
        if trunk is not None:
            with _top_blocks_only(model, trunk_depth):
                out = model(inputs_embeds=trunk, attention_mask=attention, position_ids=positions,
                            output_hidden_states=hidden, use_cache=False, **extra)
        else:
            ids = torch.cat([query_ids, response_ids], dim=1)
            out = model(input_ids=ids, attention_mask=attention, position_ids=positions,
                        output_hidden_states=hidden or trunk_depth > 0, use_cache=False, **extra)
            trunk_out = out.hidden_states[trunk_depth] if trunk_depth > 0 else None
        logits = out.logits[:, -R - 1:-1]
        last_hidden = out.hidden_states[-1][:, -R - 1:-1] if hidden else None
    else:
        start = torch.full_like(response_ids[:, :1], decoder_start_token_id)
        decoder_ids = torch.cat([start, response_ids[:, :-1]], dim=1)
        out = model(input_ids=query_ids, attention_mask=query_mask, decoder_input_ids=decoder_ids,
                    output_hidden_states=hidden)
        logits = out.logits
        last_hidden = out.decoder_hidden_states[-1] if hidden else None
    return logits.float() / temperature, last_hidden, trunk_out


# Architectures whose decoder runs unchanged from given hidden states through a slice of its blocks (no
# per-block-index settings, no scaling of inputs_embeds); others always run whole.
TRUNK_MODEL_TYPES = {"llama"}


def frozen_trunk_depth(policy) -> int:
    """How many bottom blocks of a LoRA policy hold nothing trainable, when PPO can skip them; else 0.

    Those blocks (and the embedding) compute the same for the policy and its adapter-disabled reference,
    and PPO's updates never change them: PPOTrainer keeps their output from the reference pass and runs
    only the blocks above in its updates (lab 09 adapts the top 10 of 30 blocks: a third of the forward
    pass). 0 where that does not hold: an adapter on the bottom block or the embedding, a separate
    reference model, an adapter other than LoRA (prompt tuning adds tokens), or another architecture.
    """
    if not _is_peft(policy):
        return 0
    config = policy.peft_config.get(policy.active_adapter)
    if str(getattr(config, "peft_type", "")).split(".")[-1].upper() != "LORA":
        return 0
    base = policy.get_base_model()
    if getattr(base.config, "model_type", None) not in TRUNK_MODEL_TYPES or getattr(base.config, "is_encoder_decoder",
                                                                                      False):
        return 0
    inner = getattr(base, "model", None)
    layers, embed = getattr(inner, "layers", None), getattr(inner, "embed_tokens", None)
    if not isinstance(layers, nn.ModuleList) or embed is None or any(p.requires_grad for p in embed.parameters()):
        return 0
    for i, layer in enumerate(layers):
        if any(p.requires_grad for p in layer.parameters()):
            return i
    return 0


@contextlib.contextmanager
def _top_blocks_only(model, depth: int):
    """While inside, the model's decoder holds only its blocks from `depth` up (the same modules, not copies)."""
    base = model.get_base_model() if _is_peft(model) else model
    inner = base.model
    whole = inner.layers
    inner.layers = nn.ModuleList(list(whole)[depth:])
    try:
        yield
    finally:
        inner.layers = whole


class PPOTrainer:
    """PPO on a language-model policy: `step(prompts, reward_fn)` does rollout, score, advantages, updates.

    `policy` is a transformers model, best a PEFT (LoRA) model from `add_adapter`: then only the adapter
    trains and the reference is the policy with its adapter disabled. A policy without an adapter trains
    all its trainable weights against a frozen copy (or `ref_model`). The value head is a separate
    module on the policy's last hidden states, trained by the same optimiser. Dropout stays off, so the
    probability ratio is exactly 1 before the first update. Constructing the trainer seeds torch.
    """

    def __init__(self, policy, tokenizer, config: PPOConfig | None = None, *, ref_model=None,
                 value_head: nn.Module | None = None, chat: bool | None = None):
        from .device import seed_everything
        from .prompts import uses_chat_template

        self.config = PPOConfig() if config is None else config
        if not isinstance(self.config, PPOConfig):
            raise TypeError(f"config must be a PPOConfig, not {type(self.config).__name__}")
        if not hasattr(policy, "generate") or not hasattr(policy, "config"):
            raise TypeError(f"policy must be a transformers language model, not {type(policy).__name__}")
        trainable = [p for p in policy.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the policy has no trainable parameters; add a LoRA adapter with add_adapter, "
                             "or unfreeze it")
        self.policy, self.tokenizer = policy.eval(), tokenizer  # eval: no dropout, the ratio starts at 1
        self.family = model_family(policy)
        self.device = next(policy.parameters()).device
        self.peft = _is_peft(policy)
        if ref_model is None and not self.peft:
            ref_model = copy.deepcopy(policy)
        if ref_model is not None:
            _check_reference(policy, ref_model)
            ref_model.eval().requires_grad_(False)
        self.ref_model = ref_model
        self.chat = self.family == "causal" and uses_chat_template(tokenizer, chat)
        seed_everything(self.config.seed)
        self.value_head = (ValueHead(hidden_size(policy)) if value_head is None else value_head).to(self.device)
        self.optimizer = torch.optim.AdamW(trainable + list(self.value_head.parameters()), lr=self.config.learning_rate)
        self.kl_ctl = (AdaptiveKLController(self.config.init_kl_coef, self.config.target_kl, self.config.horizon)
                       if self.config.adaptive_kl else FixedKLController(self.config.init_kl_coef))
        self.generation_config = self._generation_config()
        eos = self.generation_config.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
        base = policy.get_base_model() if self.peft else policy
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.trunk_depth = frozen_trunk_depth(policy) if self.ref_model is None else 0
        self.decoder_start_token_id = (self.generation_config.decoder_start_token_id
                                       if self.generation_config.decoder_start_token_id is not None
                                       else getattr(policy.config, "decoder_start_token_id", None))
        self.history: list[dict] = []

    # ---- rollout ---------------------------------------------------------------------------

    def _generation_config(self):
        """Pure sampling, returning the logits and hidden states `generate` computed (the old policy's)."""
        return sampling_config(self.policy, self.tokenizer, self.config.max_new_tokens, self.config.temperature,
                               self.config.min_new_tokens, return_dict_in_generate=True, output_logits=True,
                               output_hidden_states=True)

    def _encode(self, prompts) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts (texts, chat messages or token-id lists) -> padded ids and attention mask on the device."""
        return encode_prompts(self.tokenizer, prompts, self.family, self.chat, self.device)

    def _forward(self, model, query_ids, query_mask, response_ids, hidden: bool = True, trunk=None):
        """Logits (already divided by the temperature) for each response token, and the last hidden states.

        With `trunk` (the hidden states entering block `trunk_depth`, from the reference pass over the same
        rows) only the blocks from there up run."""
        logits, last_hidden, _ = _response_outputs(
            model, self.family, query_ids, query_mask, response_ids, temperature=self.config.temperature,
            hidden=hidden, logits_to_keep=self._logits_to_keep, decoder_start_token_id=self.decoder_start_token_id,
            trunk_depth=self.trunk_depth if trunk is not None else 0, trunk=trunk)
        return logits, last_hidden

    def _reference_pass(self, query_ids, query_mask, response_ids) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reference's logits for the responses and, when PPO can skip the frozen blocks, their output."""
        common = dict(temperature=self.config.temperature, logits_to_keep=self._logits_to_keep,
                      decoder_start_token_id=self.decoder_start_token_id)
        with torch.no_grad():
            if self.ref_model is not None:
                logits, _, trunk = _response_outputs(self.ref_model, self.family, query_ids, query_mask, response_ids,
                                                     **common)
            else:
                with self.policy.disable_adapter():
                    logits, _, trunk = _response_outputs(self.policy, self.family, query_ids, query_mask,
                                                         response_ids, trunk_depth=self.trunk_depth, **common)
        return logits, trunk

    def reference_logits(self, query_ids, query_mask, response_ids) -> torch.Tensor:
        """The reference model's logits for the responses: the adapter-disabled policy, or the frozen copy."""
        return self._reference_pass(query_ids, query_mask, response_ids)[0]

    def logprobs_and_values(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """The current policy's log-probs and values for a rollout's responses (one forward pass, no grad)."""
        with torch.no_grad():
            logits, last_hidden = self._forward(self.policy, rollout.query_ids, rollout.query_mask,
                                                rollout.response_ids)
            return logprobs_from_logits(logits, rollout.response_ids), self.value_head(last_hidden)

    def rollout(self, prompts) -> Rollout:
        """Sample one response per prompt and record the old policy's log-probs and values and the reference's."""
        t0 = _clock(self.device)
        query_ids, query_mask = self._encode(prompts)
        with packed_linears(self.policy, self.ref_model):  # generation and the reference pass: forward only
            with torch.no_grad():
                out = self.policy.generate(input_ids=query_ids, attention_mask=query_mask,
                                           generation_config=self.generation_config)
                skip = query_ids.shape[1] if self.family == "causal" else 1  # the prompt, or T5's decoder start
                response_ids = out.sequences[:, skip:]
                if response_ids.shape[1] == 0 or not out.logits:
                    raise ValueError("generate returned no new tokens for this batch (the prompts may already fill "
                                     "the model's max_length); shorten the prompts or check the generation config")
                mask = response_mask(response_ids, self.eos_token_ids)
                # generate ran the policy on every response prefix: its logits and last hidden states are pi_old's
                logits = torch.stack(out.logits, dim=1).float() / self.config.temperature
                steps = out.hidden_states if self.family == "causal" else out.decoder_hidden_states
                last_hidden = torch.cat([steps[0][-1][:, -1:]] + [step[-1] for step in steps[1:]], dim=1)
                logprobs = logprobs_from_logits(logits, response_ids)
                values = self.value_head(last_hidden) * mask
                entropy = float(masked_mean(entropy_from_logits(logits), mask))
                del out, steps, last_hidden
            t1 = _clock(self.device)
            ref_logprobs, kl = torch.zeros_like(logprobs), torch.zeros_like(logprobs)
            by_length = torch.argsort(query_mask.sum(1), descending=True)  # similar lengths share a chunk: less padding
            trunks = None
            for idx in by_length.split(self.config.mini_batch_size):
                q, qm, r, width = self._rows(query_ids, query_mask, response_ids, mask, idx)
                ref_logits, trunk = self._reference_pass(q, qm, r)
                if trunk is not None:
                    if trunks is None:
                        trunks = trunk.new_zeros(len(query_ids), query_ids.shape[1] + response_ids.shape[1],
                                                 trunk.shape[-1])
                    trunks[idx, query_ids.shape[1] - q.shape[1]:query_ids.shape[1] + width] = trunk
                with torch.no_grad():
                    ref_logprobs[idx, :width] = logprobs_from_logits(ref_logits, r)
                    if self.config.kl_penalty == "full":
                        kl[idx, :width] = kl_penalty(torch.log_softmax(logits[idx, :width], -1),
                                                     torch.log_softmax(ref_logits, -1), "full")
                    else:
                        kl[idx, :width] = kl_penalty(logprobs[idx, :width], ref_logprobs[idx, :width],
                                                     self.config.kl_penalty)
        t2 = _clock(self.device)
        lengths = mask.sum(1).long().tolist()
        texts = [t.strip() for t in self.tokenizer.batch_decode(
            [ids[:n] for ids, n in zip(response_ids.tolist(), lengths)], skip_special_tokens=True)]
        return Rollout(list(prompts), query_ids, query_mask, response_ids, mask, logprobs * mask, values,
                       ref_logprobs * mask, kl * mask, entropy, texts,
                       timings={"time_generate": t1 - t0, "time_reference": t2 - t1}, trunk=trunks)

    def _rows(self, query_ids, query_mask, response_ids, mask, idx) -> tuple[torch.Tensor, torch.Tensor,
                                                                            torch.Tensor, int]:
        """Rows `idx`, without the padding columns none of them needs: (query ids, query mask, responses, width)."""
        qm = query_mask[idx]
        used = qm.any(0).nonzero().squeeze(-1)
        keep = slice(int(used[0]), None) if self.family == "causal" else slice(0, int(used[-1]) + 1)
        width = int(mask[idx].sum(1).max())
        return query_ids[idx][:, keep], qm[:, keep], response_ids[idx][:, :width], width

    # ---- the update ------------------------------------------------------------------------

    def update(self, rollout: Rollout, scores) -> dict:
        """PPO's update from scored rollouts: rewards, GAE, then ppo_epochs passes over shuffled minibatches."""
        cfg = self.config
        t0 = _clock(self.device)
        if not isinstance(rollout, Rollout):
            raise TypeError(f"rollout must be the Rollout that PPOTrainer.rollout returned, not {type(rollout).__name__}")
        try:
            scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1).to(self.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"scores must be numbers, one per response (a list, array or tensor), not "
                            f"{type(scores).__name__}: {str(scores)[:80]}; check what the reward function "
                            "returns") from None
        if len(scores) != len(rollout):
            raise ValueError(f"scores has {len(scores)} values for {len(rollout)} responses; give one per response")
        if not torch.isfinite(scores).all():
            raise ValueError("scores contains NaN or infinity; the reward function must return finite numbers")
        mask = rollout.mask
        if mask.sum() < 2:
            raise ValueError(f"the batch holds {int(mask.sum())} response token(s); advantages are whitened over the "
                             "batch's tokens and need at least 2: give more prompts, or set min_new_tokens")
        kl_coef = self.kl_ctl.value
        rewards = compute_rewards(scores, rollout.kl, mask, kl_coef)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        advantages = whiten(advantages, mask)

        totals = {"policy_loss": 0.0, "value_loss": 0.0, "clip_frac": 0.0, "value_clip_frac": 0.0, "approx_kl": 0.0}
        n_updates = 0
        order = torch.Generator().manual_seed(cfg.seed + len(self.history))  # a new shuffle each step
        columns = rollout.query_ids.shape[1]
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(rollout), generator=order).split(cfg.mini_batch_size):
                idx = idx.to(self.device)
                query_ids, query_mask, response_ids, width = self._rows(rollout.query_ids, rollout.query_mask,
                                                                        rollout.response_ids, mask, idx)
                # the frozen blocks' output for these rows and columns, kept from the reference pass
                trunk = None if rollout.trunk is None else \
                    rollout.trunk[idx, columns - query_ids.shape[1]:columns + width]
                logits, last_hidden = self._forward(self.policy, query_ids, query_mask, response_ids, trunk=trunk)
                new_logprobs = logprobs_from_logits(logits, response_ids)
                new_values = self.value_head(last_hidden)
                m = mask[idx, :width]
                pg = policy_loss(new_logprobs, rollout.logprobs[idx, :width], advantages[idx, :width], m,
                                 cfg.clip_range)
                vf = value_loss(new_values, rollout.values[idx, :width], returns[idx, :width], m,
                                cfg.clip_range_value)
                loss = pg.loss + cfg.vf_coef * vf.loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                             cfg.max_grad_norm)
                self.optimizer.step()
                for key, value in (("policy_loss", pg.loss), ("value_loss", vf.loss), ("clip_frac", pg.clip_frac),
                                   ("value_clip_frac", vf.clip_frac), ("approx_kl", pg.approx_kl)):
                    totals[key] += float(value.detach())
                n_updates += 1
        mean_kl = float(rollout.kl.sum(1).mean())  # nats per response
        self.kl_ctl.update(mean_kl, len(rollout))
        t1 = _clock(self.device)

        stats = {
            "step": len(self.history),
            "score": float(scores.mean()),
            "score_std": float(scores.std()) if len(scores) > 1 else 0.0,
            "reward": float(rewards.sum(1).mean()),  # score - beta * KL, per response
            "kl": mean_kl,
            "kl_coef": kl_coef,
            "entropy": rollout.entropy,
            "response_length": float(mask.sum(1).mean()),
            **{key: value / n_updates for key, value in totals.items()},
            "value_mean": float(masked_mean(rollout.values, mask)),
            "return_mean": float(masked_mean(returns, mask)),
            **rollout.timings,
            "time_optimize": t1 - t0,
        }
        self.history.append(stats)
        return stats

    def step(self, prompts, reward_fn: Callable) -> dict:
        """One PPO step on a batch of prompts; returns its statistics (`update` also appends them to `history`).

        `reward_fn` is a ToxicityScorer (its `reward` of the decoded responses is the score) or any
        callable taking the Rollout and returning one number per response.
        """
        from .rewards import ToxicityScorer

        if not isinstance(reward_fn, ToxicityScorer) and not callable(reward_fn):
            raise TypeError(f"reward_fn must be a ToxicityScorer or a function of the Rollout, not "
                            f"{type(reward_fn).__name__}")
        t0 = _clock(self.device)
        rollout = self.rollout(prompts)
        t1 = _clock(self.device)
        if not any(text.strip() for text in rollout.texts):
            raise ValueError(f"every one of the {len(rollout)} responses is empty (each ended at its first token), so "
                             "the reward would score nothing; check that the prompts do not end with the end-of-"
                             "sequence token, or set PPOConfig(min_new_tokens=...)")
        scores = reward_fn.reward(rollout.texts) if isinstance(reward_fn, ToxicityScorer) else reward_fn(rollout)
        if scores is None:
            raise TypeError("the reward function returned None; it must return one number per response")
        t2 = _clock(self.device)
        stats = self.update(rollout, scores)
        stats["time_score"] = t2 - t1
        stats["time_step"] = _clock(self.device) - t0
        return stats


# ---------------------------------------------------------------------------------------------
# After training: how far did the policy move?
# ---------------------------------------------------------------------------------------------

def heldout_kl(policy, tokenizer, prompts, *, reference=None, max_new_tokens: int = 48, temperature: float = 0.7,
               seed: int = 0, batch_size: int = 16, chat: bool | None = None):
    """KL(pi || pi_ref) on held-out prompts, one number per prompt, in nats per response.

    One response per prompt is sampled from the policy (softmax(logits / temperature), no top-k or top-p),
    and its tokens' log pi - log pi_ref, both at that temperature, are summed: the k1 estimate PPO's penalty
    uses, unbiased but noisy per prompt, so report a mean with an interval. The same measure serves every
    method (PPO, GRPO, RLOO, DPO). `reference=None`: the policy with its adapter disabled (a LoRA policy).
    """
    import numpy as np

    from .prompts import uses_chat_template

    if not hasattr(policy, "generate") or not hasattr(policy, "config"):
        raise TypeError(f"policy must be a transformers language model, not {type(policy).__name__}")
    if reference is None and not _is_peft(policy):
        raise ValueError("policy has no adapter to disable, so there is no reference; pass reference= (the model "
                         "training started from)")
    if reference is not None:
        _check_reference(policy, reference)
    _number("max_new_tokens", max_new_tokens, low=1, integer=True)
    _number("temperature", temperature, low=0, low_open=True)
    _number("batch_size", batch_size, low=1, integer=True)
    _number("seed", seed, low=0, integer=True)
    prompts = list(prompts) if not isinstance(prompts, (str, dict)) else prompts
    family = model_family(policy)
    chat_on = family == "causal" and uses_chat_template(tokenizer, chat)
    device = next(policy.parameters()).device
    gen = sampling_config(policy, tokenizer, max_new_tokens, temperature)
    eos = gen.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
    base = policy.get_base_model() if _is_peft(policy) else policy
    keep = "logits_to_keep" in inspect.signature(base.forward).parameters
    start_id = gen.decoder_start_token_id if gen.decoder_start_token_id is not None else getattr(
        policy.config, "decoder_start_token_id", None)
    kl = []
    policy.eval()
    with torch.no_grad(), packed_linears(policy, reference):
        for first in range(0, len(prompts), batch_size):
            query_ids, query_mask = encode_prompts(tokenizer, prompts[first:first + batch_size], family, chat_on,
                                                   device)
            torch.manual_seed(seed + first)
            sequences = policy.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=gen)
            response_ids = sequences[:, query_ids.shape[1] if family == "causal" else 1:]
            mask = response_mask(response_ids, eos_ids)
            args = dict(temperature=temperature, logits_to_keep=keep, decoder_start_token_id=start_id)
            logprobs = logprobs_from_logits(
                response_logits(policy, family, query_ids, query_mask, response_ids, **args)[0], response_ids)
            if reference is None:
                with policy.disable_adapter():
                    ref_logits = response_logits(policy, family, query_ids, query_mask, response_ids, **args)[0]
            else:
                ref_logits = response_logits(reference, family, query_ids, query_mask, response_ids, **args)[0]
            ref_logprobs = logprobs_from_logits(ref_logits, response_ids)
            kl += ((logprobs - ref_logprobs) * mask).sum(1).tolist()
    return np.asarray(kl, dtype=np.float64)
