"""Tests for labhelpers.rl: each PPO equation against numbers worked out by hand, then the trainer on tiny models.

The hand-worked numbers are written out in the comments, so a reader can check them with a pencil.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from labhelpers.adapters import add_adapter, lora_config
from labhelpers.rl import (AdaptiveKLController, FixedKLController, PPOConfig, PPOTrainer, Rollout, compute_rewards,
                           entropy_from_logits, gae, kl_penalty, logprobs_from_logits, masked_mean, policy_loss,
                           response_mask, value_loss, whiten)

T = torch.tensor
PROMPTS = [f"Summarize dialogue number {i}." for i in range(16)]


# ---------------------------------------------------------------------------------------------
# The equations
# ---------------------------------------------------------------------------------------------

def test_logprobs_and_entropy_from_logits():
    logits = T([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # softmax: [1/4, 3/4] and [1/2, 1/2]
    assert torch.allclose(logprobs_from_logits(logits, T([[1, 0]])), T([[math.log(0.75), math.log(0.5)]]))
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335;  H(uniform over 2) = ln 2
    assert torch.allclose(entropy_from_logits(logits), T([[0.562335, math.log(2.0)]]), atol=1e-6)
    assert torch.allclose(entropy_from_logits(torch.zeros(1, 1, 4)), T([[math.log(4.0)]]))


def test_kl_estimators_by_hand():
    lp, ref = T([math.log(0.5), math.log(0.25)]), T([math.log(0.25), math.log(0.5)])  # d = +ln 2, -ln 2
    ln2 = math.log(2.0)
    assert torch.allclose(kl_penalty(lp, ref, "k1"), T([ln2, -ln2]))
    assert torch.allclose(kl_penalty(lp, ref, "abs"), T([ln2, ln2]))
    assert torch.allclose(kl_penalty(lp, ref, "mse"), T([0.240227, 0.240227]), atol=1e-6)  # ln(2)^2 / 2
    # k3 = exp(-d) - 1 + d:  d = ln 2 -> 0.5 - 1 + 0.693147;  d = -ln 2 -> 2 - 1 - 0.693147
    assert torch.allclose(kl_penalty(lp, ref, "k3"), T([0.193147, 0.306853]), atol=1e-6)
    # full: p = [1/2, 1/2], q = [1/4, 3/4]: 1/2 ln 2 + 1/2 ln(2/3) = 0.143841
    p, q = T([[0.5, 0.5]]).log(), T([[0.25, 0.75]]).log()
    assert torch.allclose(kl_penalty(p, q, "full"), T([0.143841]), atol=1e-6)
    with pytest.raises(ValueError, match="kind='kl2'"):
        kl_penalty(lp, ref, "kl2")


def test_response_mask_ends_after_the_first_eos():
    ids = T([[5, 7, 2, 0, 0],   # eos (2) at index 2: it counts, the padding after it does not
             [5, 7, 8, 9, 4],   # no eos: every token counts
             [2, 0, 2, 0, 0],   # eos first: a one-token response
             [5, 9, 6, 7, 2]])  # eos (6) from a second id in the list
    assert response_mask(ids, [2]).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert response_mask(ids, [2, 6]).tolist()[3] == [1, 1, 1, 0, 0]


def test_compute_rewards_puts_the_score_on_the_last_response_token():
    score = T([2.0, -1.0])
    kl = T([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second response ended after two tokens
    # r = -0.5 * kl, and the score added on the last token: 2 - 0.15 = 1.85;  -1 - 0.25 = -1.25
    expected = T([[-0.05, -0.10, 1.85], [-0.20, -1.25, 0.0]])
    assert torch.allclose(compute_rewards(score, kl, mask, kl_coef=0.5), expected)


def test_gae_with_gamma_one():
    rewards, values, mask = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # delta_2 = 1 - 0.7 = 0.3                   A_2 = 0.3
    # delta_1 = 0 + 0.7 - 0.6 = 0.1             A_1 = 0.1 + 0.95 * 0.3 = 0.385
    # delta_0 = 0 + 0.6 - 0.5 = 0.1             A_0 = 0.1 + 0.95 * 0.385 = 0.46575
    assert torch.allclose(adv, T([[0.46575, 0.385, 0.3]]))
    assert torch.allclose(ret, T([[0.96575, 0.985, 1.0]]))  # A + V


def test_gae_with_gamma_below_one():
    rewards, values, mask = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # delta_2 = 1 - 0.7 = 0.3                   A_2 = 0.3
    # delta_1 = 0.9 * 0.7 - 0.6 = 0.03          A_1 = 0.03 + 0.72 * 0.3 = 0.246
    # delta_0 = 0.9 * 0.6 - 0.5 = 0.04          A_0 = 0.04 + 0.72 * 0.246 = 0.21712
    assert torch.allclose(adv, T([[0.21712, 0.246, 0.3]]))


def test_gae_with_lambda_one_is_the_reward_to_go_minus_the_value():
    rewards, values = T([[0.2, -0.1, 1.0]]), T([[0.5, 0.6, 0.7]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(ret, T([[1.1, 0.9, 1.0]]))  # sums of the rewards from t on
    assert torch.allclose(adv, T([[0.6, 0.3, 0.3]]))


def test_gae_stops_at_the_end_of_a_response_that_ended_early():
    rewards, values = T([[0.0, 1.0, 5.0]]), T([[0.5, 0.6, 9.0]])  # the 5.0 and 9.0 are padding after eos
    adv, ret = gae(rewards, values, T([[1.0, 1.0, 0.0]]), gamma=1.0, lam=0.95)
    # delta_1 = 1 - 0.6 = 0.4 (no value after the last token);  A_0 = (0.6 - 0.5) + 0.95 * 0.4 = 0.48
    assert torch.allclose(adv, T([[0.48, 0.4, 0.0]]))
    assert torch.allclose(ret, T([[0.98, 1.0, 0.0]]))


def test_whiten_by_hand():
    x = T([[1.0, 2.0, 3.0, 4.0]])
    # mean 2.5; unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; sd 1.290994
    assert torch.allclose(whiten(x, torch.ones(1, 4)), T([[-1.161895, -0.387298, 0.387298, 1.161895]]), atol=1e-5)
    x, mask = T([[1.0, 2.0, 3.0, 100.0]]), T([[1.0, 1.0, 1.0, 0.0]])  # the 100 is masked out
    # mean 2; unbiased variance (1 + 0 + 1) / 2 = 1
    assert torch.allclose(whiten(x, mask), T([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(whiten(x, mask, shift_mean=False), T([[1.0, 2.0, 3.0, 0.0]]), atol=1e-6)
    assert float(masked_mean(x, mask)) == 2.0


def test_policy_loss_clips_on_both_sides():
    adv = T([[1.0, 1.0, -1.0, -1.0, 1.0]])
    ratio = T([[1.5, 0.9, 0.5, 1.1, 0.5]])
    old = torch.zeros(1, 5)
    new = ratio.log().requires_grad_()
    out = policy_loss(new, old, adv, torch.ones(1, 5), clip=0.2)
    # per token max(-A r, -A clip(r, 0.8, 1.2)):
    #   A=+1 r=1.5: max(-1.5, -1.2) = -1.2  clipped (no gain from raising r past 1.2)
    #   A=+1 r=0.9: max(-0.9, -0.9) = -0.9
    #   A=-1 r=0.5: max( 0.5,  0.8) =  0.8  clipped (no gain from lowering r past 0.8)
    #   A=-1 r=1.1: max( 1.1,  1.1) =  1.1
    #   A=+1 r=0.5: max(-0.5, -0.8) = -0.5  not clipped: the pessimistic bound keeps the worse term
    # mean = (-1.2 - 0.9 + 0.8 + 1.1 - 0.5) / 5 = -0.14;  clipped tokens 2 of 5
    assert math.isclose(float(out.loss.detach()), -0.14, abs_tol=1e-6)
    assert math.isclose(float(out.clip_frac), 0.4, abs_tol=1e-6)
    # approx KL = mean(r - 1 - ln r) = (0.094535 + 0.005361 + 0.193147 + 0.004690 + 0.193147) / 5
    assert math.isclose(float(out.approx_kl), 0.098176, abs_tol=1e-5)
    out.loss.backward()
    # d loss / d log r = -A r / 5 where the unclipped term is used, 0 where the clipped one is
    assert torch.allclose(new.grad, T([[0.0, -0.18, 0.0, 0.22, -0.1]]), atol=1e-6)


def test_value_loss_clips_the_value_change():
    old, returns = torch.zeros(1, 3), torch.ones(1, 3)
    new = T([[0.5, 0.1, -0.5]])
    out = value_loss(new, old, returns, torch.ones(1, 3), clip=0.2)
    # token 0: (0.5 - 1)^2 = 0.25; clipped to 0.2: (0.2 - 1)^2 = 0.64 -> 0.64 (clipped)
    # token 1: (0.1 - 1)^2 = 0.81, inside the clip: 0.81
    # token 2: (-0.5 - 1)^2 = 2.25; clipped to -0.2: 1.44 -> 2.25 (moving away is not clipped)
    # loss = 1/2 * (0.64 + 0.81 + 2.25) / 3 = 0.616667
    assert math.isclose(float(out.loss), 0.616667, abs_tol=1e-5)
    assert math.isclose(float(out.clip_frac), 1 / 3, abs_tol=1e-6)


def test_kl_controllers_follow_ziegler_et_al():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    ctl.update(9.0, n_steps=16)  # e = clip(9/6 - 1, -0.2, 0.2) = 0.2: beta * (1 + 0.2 * 16 / 10000)
    assert math.isclose(ctl.value, 0.2 * 1.00032)
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10_000)
    ctl.update(5.4, n_steps=16)  # e = 5.4/6 - 1 = -0.1: beta * (1 - 0.1 * 16 / 10000)
    assert math.isclose(ctl.value, 0.2 * 0.99984)
    fixed = FixedKLController(0.2)
    fixed.update(100.0, n_steps=16)
    assert fixed.value == 0.2


@pytest.mark.parametrize("field, value", [("learning_rate", 0), ("mini_batch_size", 0), ("ppo_epochs", 1.5),
                                          ("gamma", 1.2), ("lam", -0.1), ("clip_range", 0), ("vf_coef", -1),
                                          ("kl_penalty", "kl"), ("target_kl", 0), ("max_grad_norm", -1.0),
                                          ("max_new_tokens", 0), ("min_new_tokens", 99), ("temperature", 0.0),
                                          ("adaptive_kl", "yes"), ("learning_rate", float("nan"))])
def test_config_refuses_bad_values_naming_the_argument(field, value):
    with pytest.raises(ValueError, match=f"^{field}="):
        PPOConfig(**{field: value})


# ---------------------------------------------------------------------------------------------
# The trainer on tiny models
# ---------------------------------------------------------------------------------------------

def _lora_policy(model, seed: int = 0, randomise: bool = False, **kwargs):
    policy = add_adapter(model, lora_config(model, **kwargs))
    if randomise:  # LoRA starts as a no-op; random values make the policy differ from the reference
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return policy


def test_rollout_reuses_generation_and_the_reference_is_the_adapter_disabled_base(tiny_llama, monkeypatch):
    from labhelpers import device

    model, tok = tiny_llama
    policy = _lora_policy(model, r=4, randomise=True)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=6, mini_batch_size=2))
    prompts = ["Hi", PROMPTS[3], "Book a table for two at eight on Friday at the Golden Dragon, please.", "Ok then."]
    packed, real = [], device._packed_forward
    monkeypatch.setattr(device, "_packed_forward", lambda layer: packed.append(layer) or real(layer))
    rollout = trainer.rollout(prompts)  # prompts of different lengths: the reference runs on trimmed chunks
    n_linear = sum(type(m) is torch.nn.Linear for m in policy.modules())
    assert len(packed) == n_linear  # packed once for generation and the reference pass (whose numbers match below)
    assert not any("forward" in vars(m) for m in policy.modules())  # and the layers are themselves again
    assert rollout.query_mask.sum(1).unique().numel() == 4
    assert isinstance(rollout, Rollout) and rollout.response_ids.shape == (4, 6) and len(rollout.texts) == 4
    # the log-probs and values taken from generate's outputs are what a training forward pass computes
    logprobs, values = trainer.logprobs_and_values(rollout)
    assert torch.allclose(logprobs * rollout.mask, rollout.logprobs, atol=1e-5)
    assert torch.allclose(values * rollout.mask, rollout.values, atol=1e-5)
    # the reference is the base model itself: the same numbers, without a second copy
    with torch.no_grad():
        ids = torch.cat([rollout.query_ids, rollout.response_ids], 1)
        attention = torch.cat([rollout.query_mask, torch.ones_like(rollout.response_ids)], 1)
        logits = model(input_ids=ids, attention_mask=attention,
                       position_ids=(attention.cumsum(1) - 1).clamp(min=0)).logits[:, -7:-1]
    base = logprobs_from_logits(logits, rollout.response_ids) * rollout.mask
    assert torch.allclose(rollout.ref_logprobs, base, atol=1e-5)
    assert not torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-2)  # the adapter does matter
    assert torch.allclose(rollout.kl, rollout.logprobs - rollout.ref_logprobs)  # k1


def test_responses_that_stop_early_are_masked_after_eos(tiny_llama):
    model, tok = tiny_llama
    policy = _lora_policy(model, r=4)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=8, mini_batch_size=2, ppo_epochs=1))
    eos = trainer.eos_token_ids[0]

    def favour_eos(module, inputs, output):  # makes eos likely (~1 in 3 per token), in every forward pass
        output[..., eos] += 7.0
        return output

    handle = policy.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        rollout = trainer.rollout(PROMPTS[:8])
        stats = trainer.update(rollout, torch.zeros(8))
    finally:
        handle.remove()
    lengths = rollout.mask.sum(1)
    assert lengths.min() < 8, "the hook should make some response stop early"
    assert torch.equal(rollout.mask, response_mask(rollout.response_ids, [eos]))
    ended = lengths < 8
    last = lengths.long() - 1
    assert (rollout.response_ids[ended, last[ended]] == eos).all()  # the eos token itself counts
    after = rollout.mask == 0
    for name in ("logprobs", "ref_logprobs", "values", "kl"):
        assert (getattr(rollout, name)[after] == 0).all(), name
    assert math.isclose(stats["response_length"], float(lengths.mean()))
    assert all(math.isfinite(v) for v in stats.values())


def test_ppo_raises_the_mean_reward_of_a_tiny_lora_policy(tiny_llama):
    """Reward: the share of response tokens from the first half of the vocabulary (0.5 by chance)."""
    model, tok = tiny_llama
    half = len(tok) // 2
    # LoRA on the output layer too: a random tiny model cannot otherwise shift its logits fast
    policy = _lora_policy(model, r=8, target_modules=["q_proj", "v_proj", "lm_head"])
    config = PPOConfig(learning_rate=3e-2, mini_batch_size=4, ppo_epochs=2, max_new_tokens=8, init_kl_coef=0.01,
                       adaptive_kl=False, seed=0)
    trainer = PPOTrainer(policy, tok, config)

    def share_of_first_half(rollout):
        return ((rollout.response_ids < half).float() * rollout.mask).sum(1) / rollout.mask.sum(1)

    scores = [trainer.step(PROMPTS, share_of_first_half)["score"] for _ in range(16)]
    first, last = sum(scores[:4]) / 4, sum(scores[-4:]) / 4
    assert last > first + 0.2, scores
    assert len(trainer.history) == 16 and trainer.history[-1]["kl"] > 0  # it moved away from the reference
    for key in ("score", "kl", "kl_coef", "entropy", "clip_frac", "approx_kl", "policy_loss", "value_loss",
                "time_generate", "time_reference", "time_score", "time_optimize", "time_step"):
        assert math.isfinite(trainer.history[-1][key]), key
    timed = trainer.history[-1]
    assert timed["time_step"] >= timed["time_generate"] + timed["time_reference"] + timed["time_optimize"] > 0


def test_a_run_repeats_exactly_with_the_same_seed(tiny_llama):
    from labhelpers.device import seed_everything

    model, tok = tiny_llama
    runs = []
    for _ in range(2):
        seed_everything(0)  # LoRA's A matrices start random: seed before adding the adapter
        trainer = PPOTrainer(_lora_policy(model, r=2), tok, PPOConfig(max_new_tokens=4, ppo_epochs=1, seed=3))
        runs.append([trainer.step(PROMPTS[:4], lambda r: r.mask.sum(1))["value_loss"] for _ in range(2)])
    assert runs[0] == runs[1]


def test_a_seq2seq_policy_takes_ppo_steps(tiny_t5):
    model, tok = tiny_t5
    policy = _lora_policy(model, r=4, randomise=True)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=6, mini_batch_size=2, ppo_epochs=2, kl_penalty="full"))
    rollout = trainer.rollout(PROMPTS[:4])
    logprobs, _ = trainer.logprobs_and_values(rollout)
    assert torch.allclose(logprobs * rollout.mask, rollout.logprobs, atol=1e-5)
    with torch.no_grad():
        start = torch.full_like(rollout.response_ids[:, :1], model.config.decoder_start_token_id)
        logits = model(input_ids=rollout.query_ids, attention_mask=rollout.query_mask,
                       decoder_input_ids=torch.cat([start, rollout.response_ids[:, :-1]], 1)).logits
    assert torch.allclose(rollout.ref_logprobs, logprobs_from_logits(logits, rollout.response_ids) * rollout.mask,
                          atol=1e-5)
    assert (rollout.kl >= -1e-6).all()  # the exact KL is never negative
    stats = [trainer.step(PROMPTS[:4], lambda r: torch.arange(len(r), dtype=torch.float32)) for _ in range(2)]
    assert all(math.isfinite(v) for s in stats for v in s.values())


def test_a_policy_without_adapter_trains_against_a_frozen_copy(tiny_llama):
    model, tok = tiny_llama
    policy = copy.deepcopy(model)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=4, ppo_epochs=1, learning_rate=1e-3))
    before = {k: v.clone() for k, v in trainer.ref_model.state_dict().items()}
    trainer.step(PROMPTS[:4], lambda r: r.mask.sum(1))
    assert all(torch.equal(before[k], v) for k, v in trainer.ref_model.state_dict().items())
    assert not torch.equal(policy.lm_head.weight, trainer.ref_model.lm_head.weight)


def test_update_refuses_scores_that_do_not_fit(tiny_llama):
    model, tok = tiny_llama
    trainer = PPOTrainer(_lora_policy(model, r=2), tok, PPOConfig(max_new_tokens=3))
    rollout = trainer.rollout(PROMPTS[:2])
    with pytest.raises(ValueError, match="scores has 3 values for 2 responses"):
        trainer.update(rollout, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        trainer.update(rollout, [1.0, float("nan")])
    with pytest.raises(ValueError, match="no trainable parameters"):
        PPOTrainer(copy.deepcopy(model).requires_grad_(False), tok)


def test_step_takes_a_toxicity_scorer_as_reward(tiny_llama):
    from labhelpers.rewards import ProfanityCheckScorer

    model, tok = tiny_llama
    trainer = PPOTrainer(_lora_policy(model, r=2), tok, PPOConfig(max_new_tokens=3, ppo_epochs=1))
    scorer = ProfanityCheckScorer()
    stats = trainer.step(PROMPTS[:4], scorer)
    assert math.isfinite(stats["score"]) and -5.0 <= stats["score"] <= 5.0


# ---------------------------------------------------------------------------------------------
# Bad input: caught with a clear error before it corrupts training
# ---------------------------------------------------------------------------------------------

def test_a_reference_that_shares_weights_with_the_policy_is_refused(tiny_llama):
    model, tok = tiny_llama
    policy = copy.deepcopy(model)
    with pytest.raises(ValueError, match="ref_model is the policy itself"):
        PPOTrainer(policy, tok, ref_model=policy)
    shallow = copy.copy(policy)  # a new module object holding the very same weight tensors
    with pytest.raises(ValueError, match="shares .* parameter tensor"):
        PPOTrainer(policy, tok, ref_model=shallow)
    in_place = add_adapter(policy, lora_config(policy, r=2), in_place=True)  # the adapter wraps `policy` itself
    with pytest.raises(ValueError, match="shares .* parameter tensor"):
        PPOTrainer(in_place, tok, ref_model=policy)
    assert any(p.requires_grad for p in in_place.parameters())  # refused before freezing anything
    with pytest.raises(TypeError, match="ref_model must be"):
        PPOTrainer(copy.deepcopy(model), tok, ref_model="gpt2")
    PPOTrainer(_lora_policy(model, r=2), tok, ref_model=copy.deepcopy(model))  # a real copy is fine


def test_reward_functions_that_misbehave_are_caught(tiny_llama):
    model, tok = tiny_llama
    trainer = PPOTrainer(_lora_policy(model, r=2), tok, PPOConfig(max_new_tokens=3, ppo_epochs=1))
    before = {n: p.clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="scores has 3 values for 4 responses"):
        trainer.step(PROMPTS[:4], lambda r: [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        trainer.step(PROMPTS[:4], lambda r: torch.tensor([0.0, float("nan"), 1.0, 1.0]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        trainer.step(PROMPTS[:4], lambda r: [0.0, float("inf"), 1.0, 1.0])
    with pytest.raises(TypeError, match="returned None"):
        trainer.step(PROMPTS[:4], lambda r: None)
    with pytest.raises(TypeError, match="scores must be numbers"):
        trainer.step(PROMPTS[:4], lambda r: ["good"] * 4)
    with pytest.raises(TypeError, match="reward_fn must be"):
        trainer.step(PROMPTS[:4], "profanity-check")
    # nothing was trained by any of the refused steps
    assert all(torch.equal(before[n], p) for n, p in trainer.policy.named_parameters() if p.requires_grad)
    assert trainer.history == []


def test_empty_generations_are_caught(tiny_llama):
    model, tok = tiny_llama
    policy = _lora_policy(model, r=2)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=4, ppo_epochs=1))
    eos = trainer.eos_token_ids[0]

    def only_eos(module, inputs, output):  # every response ends at its first token
        output[..., eos] += 1e4
        return output

    handle = policy.get_output_embeddings().register_forward_hook(only_eos)
    try:
        with pytest.raises(ValueError, match="every one of the 4 responses is empty"):
            trainer.step(PROMPTS[:4], lambda r: torch.zeros(len(r)))
        rollout = trainer.rollout(PROMPTS[:1])
        with pytest.raises(ValueError, match="holds 1 response token"):
            trainer.update(rollout, [1.0])
    finally:
        handle.remove()
    assert trainer.history == []


def test_heldout_kl_is_zero_at_the_start_and_equals_the_sum_of_logprob_differences(tiny_llama):
    from labhelpers.rl import heldout_kl

    model, tok = tiny_llama
    prompts = ["Hi", PROMPTS[3], "Book a table for two at eight on Friday, please.", "Ok then.", PROMPTS[5]]
    fresh = _lora_policy(model, r=4)  # LoRA starts as a no-op: the policy is its reference
    assert heldout_kl(fresh, tok, prompts, max_new_tokens=6, batch_size=2).tolist() == [0.0] * 5
    moved = _lora_policy(model, r=4, randomise=True)
    kl = heldout_kl(moved, tok, prompts, max_new_tokens=6, batch_size=2, seed=3)
    assert kl.shape == (5,) and abs(kl).sum() > 0.1
    # the same numbers against an explicit reference copy of the base
    assert heldout_kl(moved, tok, prompts, max_new_tokens=6, batch_size=2, seed=3, reference=model) == \
        pytest.approx(kl, abs=1e-5)
    # by hand for one prompt: sample as it does, then sum log pi - log pi_ref over the response tokens
    trainer = PPOTrainer(moved, tok, PPOConfig(max_new_tokens=6, temperature=0.7, seed=3))
    query_ids, query_mask = trainer._encode(prompts[:1])
    torch.manual_seed(3)
    gen = copy.deepcopy(trainer.generation_config)
    gen.return_dict_in_generate = gen.output_logits = gen.output_hidden_states = False
    response = moved.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=gen)[:, query_ids.shape[1]:]
    mask = response_mask(response, trainer.eos_token_ids)
    with torch.no_grad():
        pi = logprobs_from_logits(trainer._forward(moved, query_ids, query_mask, response, hidden=False)[0], response)
        ref = logprobs_from_logits(trainer.reference_logits(query_ids, query_mask, response), response)
    assert heldout_kl(moved, tok, prompts[:1], max_new_tokens=6, seed=3)[0] == pytest.approx(
        float(((pi - ref) * mask).sum()), abs=1e-5)
    with pytest.raises(ValueError, match="no adapter"):
        heldout_kl(model, tok, prompts)
    with pytest.raises(ValueError, match="temperature"):
        heldout_kl(moved, tok, prompts, temperature=0)
    with pytest.raises(ValueError, match="ref_model is the policy|shares"):
        heldout_kl(moved, tok, prompts, reference=moved)


# ---------------------------------------------------------------------------------------------
# Skipping the frozen blocks below the adapter in the updates
# ---------------------------------------------------------------------------------------------

def test_frozen_trunk_depth_is_the_first_block_with_an_adapter(tiny_llama):
    from labhelpers.adapters import prompt_tuning_config
    from labhelpers.rl import frozen_trunk_depth

    model, tok = tiny_llama
    depth = model.config.num_hidden_layers
    assert depth >= 2
    assert frozen_trunk_depth(_lora_policy(model, r=2, layers=[depth - 1])) == depth - 1
    assert frozen_trunk_depth(_lora_policy(model, r=2)) == 0  # every block adapted: nothing to skip
    assert frozen_trunk_depth(model) == 0  # no adapter: the reference is a copy, not the same blocks
    assert frozen_trunk_depth(add_adapter(model, prompt_tuning_config(model, tok, n_virtual_tokens=4))) == 0


def test_the_top_blocks_from_the_trunk_compute_what_the_whole_model_does(tiny_llama):
    from labhelpers.rl import _response_outputs

    model, tok = tiny_llama
    depth = model.config.num_hidden_layers - 1
    policy = _lora_policy(model, r=2, randomise=True, layers=[depth])
    enc = tok(["Hi there", PROMPTS[5] + " and a longer tail of words"], return_tensors="pt", padding=True)
    tok.padding_side = "left"
    enc = tok(["Hi there", PROMPTS[5] + " and a longer tail of words"], return_tensors="pt", padding=True)
    response = torch.randint(5, len(tok) - 5, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with policy.disable_adapter():
            ref_logits, _, trunk = _response_outputs(policy, "causal", enc["input_ids"], enc["attention_mask"],
                                                     response, trunk_depth=depth)
        whole = _response_outputs(policy, "causal", enc["input_ids"], enc["attention_mask"], response, hidden=True)
        top = _response_outputs(policy, "causal", enc["input_ids"], enc["attention_mask"], response, hidden=True,
                                trunk_depth=depth, trunk=trunk)
    assert trunk.shape[:2] == (2, enc["input_ids"].shape[1] + 5)
    assert torch.allclose(top[0], whole[0], atol=1e-5) and torch.allclose(top[1], whole[1], atol=1e-5)
    assert not torch.allclose(top[0], ref_logits, atol=1e-3)  # the adapter above the trunk does act
    assert len(policy.get_base_model().model.layers) == depth + 1  # every block is back in place


def test_updates_from_the_trunk_equal_updates_through_the_whole_model(tiny_llama):
    import dataclasses

    from labhelpers.device import seed_everything

    model, tok = tiny_llama
    depth = model.config.num_hidden_layers - 1
    trainers = []
    for _ in range(2):
        seed_everything(0)
        policy = _lora_policy(model, r=4, randomise=True, layers=[depth])
        trainers.append(PPOTrainer(policy, tok, PPOConfig(max_new_tokens=6, mini_batch_size=2, ppo_epochs=2,
                                                          learning_rate=1e-2, seed=1)))
    skipping, whole = trainers
    assert skipping.trunk_depth == depth
    prompts = ["Hi", PROMPTS[3], "Book a table for two at eight on Friday, please.", "Ok then."]
    rollout = skipping.rollout(prompts)
    assert rollout.trunk is not None
    assert rollout.trunk.shape == (4, rollout.query_ids.shape[1] + rollout.response_ids.shape[1],
                                   model.config.hidden_size)
    scores = torch.tensor([1.0, -1.0, 0.5, 2.0])
    start = {n: p.detach().clone() for n, p in skipping.policy.named_parameters() if "lora_" in n}
    a = skipping.update(rollout, scores)
    b = whole.update(dataclasses.replace(rollout, trunk=None), scores)  # full forward passes, same shuffle
    for key in ("policy_loss", "value_loss", "approx_kl", "clip_frac"):
        assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-6), (key, a[key], b[key])
    for (name, p), q in zip(skipping.policy.named_parameters(), whole.policy.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    assert any(not torch.allclose(p, start[n]) for n, p in skipping.policy.named_parameters() if n in start)
