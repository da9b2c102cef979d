"""Plumbing for lab 09's PPO: its settings, batched sampling, the forward pass over prompt + response, and
the KL a trained policy moved on held-out prompts.

PPO itself (the rollout, the reference's log-probs, the KL-penalised rewards, GAE and whitening, the clipped
losses, the minibatch epochs) is written out in notebooks/09_rlhf_ppo_detoxification.ipynb and exported
from there (`from labhelpers import gae, policy_loss, PPOTrainer, ...`).

Tensors are [batch, response tokens]; `mask` is 1 on the response tokens up to and including the first
end-of-sequence token and 0 after it. Works for decoder-only (causal, left-padded prompts) and
encoder-decoder (T5) policies.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .device import autocast, packed_linears
from .models import model_family

__all__ = ['KL_KINDS', 'PPOConfig', 'Samples', 'check_scores', 'encode_prompts', 'heldout_kl', 'hidden_size',
           'response_states', 'response_logits', 'response_mask', 'sample_responses', 'sampling_config']

KL_KINDS = ("k1", "k3", "abs", "mse")  # per-token KL estimators (see the lab's kl_penalty)


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


def hidden_size(model) -> int:
    """Width of a model's last hidden state (hidden_size, or d_model for T5)."""
    config = model.config
    for name in ("hidden_size", "d_model", "n_embd"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__}; pass value_head=ValueHead(width)")


def response_mask(response_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """1 on each response token up to and including the first end-of-sequence token, 0 after it."""
    is_eos = torch.isin(response_ids, torch.as_tensor(list(eos_token_ids), device=response_ids.device)).long()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # eos tokens strictly before each position
    return (eos_before == 0).float()


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


def _eos_ids(gen, tokenizer) -> list[int]:
    eos = gen.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])


@dataclass
class Samples:
    """Sampled responses: padded prompts (left for causal, right for seq2seq), responses right-padded after
    their first end-of-sequence token, the response mask, and the decoded texts."""

    prompts: list
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    mask: torch.Tensor
    texts: list[str]

    def __len__(self) -> int:
        return len(self.response_ids)

    def select(self, idx: torch.Tensor) -> "Samples":
        """Rows `idx`, without the padding columns none of them needs (a minibatch)."""
        query_mask = self.query_mask[idx]
        used = query_mask.any(0).nonzero().squeeze(-1)
        keep = slice(int(used[0]), int(used[-1]) + 1)  # prompts padded on the left (causal) or the right (T5)
        mask = self.mask[idx]
        width = int(mask.sum(1).max())
        rows = idx.tolist()
        return Samples([self.prompts[i] for i in rows], self.query_ids[idx][:, keep], query_mask[:, keep],
                       self.response_ids[idx][:, :width], mask[:, :width], [self.texts[i] for i in rows])


def sample_responses(policy, tokenizer, prompts, *, max_new_tokens: int, temperature: float,
                     min_new_tokens: int = 0, chat: bool | None = None) -> Samples:
    """One response per prompt sampled from softmax(logits / temperature), in one batched `generate`."""
    from .prompts import uses_chat_template

    family = model_family(policy)
    chat_on = family == "causal" and uses_chat_template(tokenizer, chat)
    device = next(policy.parameters()).device
    query_ids, query_mask = encode_prompts(tokenizer, prompts, family, chat_on, device)
    gen = sampling_config(policy, tokenizer, max_new_tokens, temperature, min_new_tokens)
    with torch.no_grad(), packed_linears(policy):  # forward only: multiply by weights packed once
        sequences = policy.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=gen)
    response_ids = sequences[:, query_ids.shape[1] if family == "causal" else 1:]  # after the prompt or T5's start
    if response_ids.shape[1] == 0:
        raise ValueError("generate returned no new tokens for this batch (the prompts may already fill the model's "
                         "max_length); shorten the prompts or check the generation config")
    mask = response_mask(response_ids, _eos_ids(gen, tokenizer))
    lengths = mask.sum(1).long().tolist()
    texts = [t.strip() for t in tokenizer.batch_decode([ids[:n] for ids, n in zip(response_ids.tolist(), lengths)],
                                                       skip_special_tokens=True)]
    return Samples(list(prompts), query_ids, query_mask, response_ids, mask, texts)


def response_logits(model, query_ids, query_mask, response_ids, *, hidden: bool = False):
    """One forward pass over prompt + response: the logits that predicted each response token, and the last
    hidden states there (or None), both [B, T, ...].

    Causal: the logits at position t predict token t + 1, so the response tokens are predicted from the T
    positions before them (the output layer runs only there); positions skip the left padding as
    `generate` numbers them. Seq2seq: the encoder reads the prompt, the decoder the response shifted right
    behind the decoder start token.
    """
    R = response_ids.shape[1]
    if model_family(model) == "causal":
        base = model.get_base_model() if _is_peft(model) else model
        keep = {"logits_to_keep": R + 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
        attention = torch.cat([query_mask, torch.ones_like(response_ids)], dim=1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        out = model(input_ids=torch.cat([query_ids, response_ids], dim=1), attention_mask=attention,
                    position_ids=positions, output_hidden_states=hidden, use_cache=False, **keep)
        logits = out.logits[:, -R - 1:-1]
        last_hidden = out.hidden_states[-1][:, -R - 1:-1] if hidden else None
    else:
        start_id = getattr(model.generation_config, "decoder_start_token_id", None)
        start_id = model.config.decoder_start_token_id if start_id is None else start_id
        decoder_ids = torch.cat([torch.full_like(response_ids[:, :1], start_id), response_ids[:, :-1]], dim=1)
        out = model(input_ids=query_ids, attention_mask=query_mask, decoder_input_ids=decoder_ids,
                    output_hidden_states=hidden)
        logits = out.logits
        last_hidden = out.decoder_hidden_states[-1] if hidden else None
    return logits.float(), last_hidden


def response_states(model, tokenizer, prompts, responses, *, pool: str = "mean", batch_size: int = 32,
                    chat: bool | None = None, progress: bool = False) -> torch.Tensor:
    """What a reward model's scalar head reads: the last hidden states (after the final norm) of each response
    to its prompt, pooled to one vector, [N, H].

    Each response is laid out as generation saw it (the prompt through the chat template, then the response and
    the token that ends an answer). `pool="mean"` averages the states over the response's tokens (its end token
    included); `pool="last"` takes the state at the end token. Responses to the same prompt share one pass over
    that prompt: its keys and values are cached and the responses run after them in batches, so a preference set
    with several responses per dialogue costs little more than its responses. Forward only.
    """
    from tqdm.auto import tqdm

    from .lessons.instruction_fine_tuning import answer_end_id
    from .prompts import model_input, uses_chat_template

    if model_family(model) != "causal":
        raise TypeError(f"{type(model).__name__} is not a decoder-only model; a reward head here reads a causal "
                        "LM's hidden states over the response")
    if pool not in ("mean", "last"):
        raise ValueError(f"pool={pool!r} must be 'mean' (the response's tokens averaged) or 'last' (its end token)")
    if isinstance(prompts, (str, dict)) or isinstance(responses, str):
        raise TypeError("prompts and responses must be lists, one prompt per response")
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses; give one prompt per response")
    if not all(isinstance(r, str) for r in responses):
        raise TypeError("responses must be strings")
    _number("batch_size", batch_size, low=1, integer=True)
    trunk = model.get_base_model() if _is_peft(model) else model
    trunk = trunk.get_decoder() if hasattr(trunk, "get_decoder") else trunk.base_model
    device, end_id = next(model.parameters()).device, answer_end_id(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_id
    chat_on = uses_chat_template(tokenizer, chat)
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(model_input(tokenizer, prompt, chat), []).append(i)
    out = torch.zeros(len(responses), hidden_size(model))
    # bf16 autocast where the CPU does bf16 fast and safely (1.5x here), else fp32 weights packed once
    with torch.no_grad(), autocast(model), packed_linears(model):
        for text, rows in tqdm(groups.items(), desc="reward model", unit="prompt", disable=not progress):
            prefix = tokenizer(text, add_special_tokens=not chat_on, return_tensors="pt")["input_ids"].to(device)
            prefix_cache = trunk(input_ids=prefix, use_cache=True).past_key_values  # once per prompt
            for first in range(0, len(rows), batch_size):
                chunk = rows[first:first + batch_size]
                # each batch extends a copy of the prompt's cache; the last batch may use (and grow) the cache itself
                cache = prefix_cache if first + batch_size >= len(rows) else copy.deepcopy(prefix_cache)
                ids = [tokenizer(responses[i].strip(), add_special_tokens=False)["input_ids"] + [end_id] for i in chunk]
                width = max(map(len, ids))
                batch = torch.full((len(chunk), width), pad_id, dtype=torch.long, device=device)
                mask = torch.zeros_like(batch)
                for row, tokens in enumerate(ids):  # right padding: the response follows the cached prompt
                    batch[row, :len(tokens)], mask[row, :len(tokens)] = torch.tensor(tokens), 1
                cache.batch_repeat_interleave(len(chunk))
                attention = torch.cat([torch.ones(len(chunk), prefix.shape[1], dtype=torch.long, device=device), mask], 1)
                hidden = trunk(input_ids=batch, attention_mask=attention, past_key_values=cache).last_hidden_state.float()
                if pool == "mean":
                    pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
                else:
                    pooled = hidden[torch.arange(len(chunk), device=device), mask.sum(1) - 1]
                out[torch.tensor(chunk)] = pooled.cpu()
    return out


def check_scores(scores, n: int, device=None) -> torch.Tensor:
    """The reward function's scores as a float32 tensor of n finite numbers, or an error that says what to fix."""
    if scores is None:
        raise TypeError("the reward function returned None; it must return one number per response")
    try:
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"scores must be numbers, one per response (a list, array or tensor), not "
                        f"{type(scores).__name__}: {str(scores)[:80]}; check what the reward function returns") from None
    if len(scores) != n:
        raise ValueError(f"scores has {len(scores)} values for {n} responses; give one per response")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contains NaN or infinity; the reward function must return finite numbers")
    return scores.to(device) if device is not None else scores


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

    from .lessons.rlhf_ppo_detoxification import logprobs_from_logits

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
    kl = []
    policy.eval()
    for first in range(0, len(prompts), batch_size):
        torch.manual_seed(seed + first)
        s = sample_responses(policy, tokenizer, prompts[first:first + batch_size], max_new_tokens=max_new_tokens,
                             temperature=temperature, chat=chat)
        with torch.no_grad(), packed_linears(policy, reference):
            logits = response_logits(policy, s.query_ids, s.query_mask, s.response_ids)[0]
            if reference is None:
                with policy.disable_adapter():
                    ref_logits = response_logits(policy, s.query_ids, s.query_mask, s.response_ids)[0]
            else:
                ref_logits = response_logits(reference, s.query_ids, s.query_mask, s.response_ids)[0]
        logprobs = logprobs_from_logits(logits / temperature, s.response_ids)
        ref_logprobs = logprobs_from_logits(ref_logits / temperature, s.response_ids)
        kl += ((logprobs - ref_logprobs) * s.mask).sum(1).tolist()
    return np.asarray(kl, dtype=np.float64)
