"""Tests for lab 09's PPO (written in the notebook, exported to labhelpers) and the plumbing in labhelpers.rl.

Each equation against numbers worked out by hand (written out in the comments, so a reader can check them
with a pencil), one whole update against a hand computation in which the temperature, gamma and lambda,
the whitening and the value head's target all show, then the trainer on tiny models.
"""

from __future__ import annotations

import math

import pytest
import torch

from labhelpers import (PPOConfig, PPOTrainer, Rollout, Samples, add_adapter, advantages_and_returns, compute_rewards,
                        gae, kl_penalty, logprobs_and_values, logprobs_from_logits, lora_config, masked_mean,
                        masked_var, policy_loss, reference_logprobs, response_logits, response_mask, sample_responses,
                        value_loss, whiten)

T = torch.tensor
PROMPTS = [f"Summarize dialogue number {i}." for i in range(16)]


# ---------------------------------------------------------------------------------------------
# The equations
# ---------------------------------------------------------------------------------------------

def test_logprobs_from_logits_by_hand():
    logits = T([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # softmax: [1/4, 3/4] and [1/2, 1/2]
    assert torch.allclose(logprobs_from_logits(logits, T([[1, 0]])), T([[math.log(0.75), math.log(0.5)]]))
    # at temperature 1/2 the logits double: softmax(0, 2 ln 3) = [1/10, 9/10]
    assert torch.allclose(logprobs_from_logits(logits / 0.5, T([[1, 0]])), T([[math.log(0.9), math.log(0.5)]]))


def test_kl_estimators_by_hand():
    lp, ref = T([math.log(0.5), math.log(0.25)]), T([math.log(0.25), math.log(0.5)])  # d = +ln 2, -ln 2
    ln2 = math.log(2.0)
    assert torch.allclose(kl_penalty(lp, ref), T([ln2, -ln2]))  # k1 is the default
    assert torch.allclose(kl_penalty(lp, ref, "k1"), T([ln2, -ln2]))
    assert torch.allclose(kl_penalty(lp, ref, "abs"), T([ln2, ln2]))
    assert torch.allclose(kl_penalty(lp, ref, "mse"), T([0.240227, 0.240227]), atol=1e-6)  # ln(2)^2 / 2
    # k3 = exp(-d) - 1 + d:  d = ln 2 -> 0.5 - 1 + 0.693147;  d = -ln 2 -> 2 - 1 - 0.693147
    assert torch.allclose(kl_penalty(lp, ref, "k3"), T([0.193147, 0.306853]), atol=1e-6)
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


def test_gae_with_gamma_below_one_and_gamma_and_lambda_not_interchangeable():
    rewards, values, mask = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # delta_2 = 1 - 0.7 = 0.3                   A_2 = 0.3
    # delta_1 = 0.9 * 0.7 - 0.6 = 0.03          A_1 = 0.03 + 0.72 * 0.3 = 0.246
    # delta_0 = 0.9 * 0.6 - 0.5 = 0.04          A_0 = 0.04 + 0.72 * 0.246 = 0.21712
    assert torch.allclose(adv, T([[0.21712, 0.246, 0.3]]))
    assert torch.allclose(ret, T([[0.71712, 0.846, 1.0]]))
    # gamma 0.8, lambda 0.9: the same product 0.72, but delta_1 = 0.8 * 0.7 - 0.6 = -0.04, delta_0 = -0.02
    adv, _ = gae(rewards, values, mask, gamma=0.8, lam=0.9)
    # A_1 = -0.04 + 0.72 * 0.3 = 0.176;  A_0 = -0.02 + 0.72 * 0.176 = 0.10672
    assert torch.allclose(adv, T([[0.10672, 0.176, 0.3]]))


def test_gae_with_lambda_zero_is_the_one_step_surprise():
    rewards, values = T([[0.2, -0.1, 1.0]]), T([[0.5, 0.6, 0.7]])
    adv, _ = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.0)
    # A_t = delta_t = r_t + 0.5 V_{t+1} - V_t: 0.2 + 0.3 - 0.5 = 0;  -0.1 + 0.35 - 0.6 = -0.35;  1 - 0.7 = 0.3
    assert torch.allclose(adv, T([[0.0, -0.35, 0.3]]), atol=1e-6)


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
    assert math.isclose(float(masked_var(x, mask)), 1.0, abs_tol=1e-6)
    assert float(masked_mean(x, mask)) == 2.0
    assert torch.allclose(masked_mean(x, mask, dim=1), T([2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        whiten(T([[3.0, 1.0]]), T([[1.0, 0.0]]))


def test_advantages_and_returns_whiten_the_advantages_but_not_the_returns():
    scores, kl = T([1.0]), T([[0.2, 0.4]])
    values, mask = T([[0.5, 0.25]]), torch.ones(1, 2)
    advantages, returns, rewards = advantages_and_returns(scores, kl, values, mask, kl_coef=0.5, gamma=0.8, lam=0.5)
    # rewards: -0.5 * 0.2 = -0.1;  -0.5 * 0.4 + 1 = 0.8
    assert torch.allclose(rewards, T([[-0.1, 0.8]]))
    # A_1 = 0.8 - 0.25 = 0.55;  delta_0 = -0.1 + 0.8 * 0.25 - 0.5 = -0.4;  A_0 = -0.4 + 0.4 * 0.55 = -0.18
    # returns A + V: 0.32 and 0.8 (not whitened);  whitened A: mean 0.185, unbiased var 0.266450 -> -/+ 0.707107
    assert torch.allclose(returns, T([[0.32, 0.8]]), atol=1e-6)
    assert torch.allclose(advantages, T([[-0.707107, 0.707107]]), atol=1e-5)


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
    # a masked token does not count: the same first token alone
    alone = policy_loss(ratio.log(), old, adv, T([[1.0, 0, 0, 0, 0]]), clip=0.3)
    assert math.isclose(float(alone.loss), -1.3, abs_tol=1e-6)  # clip at 1 + 0.3


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
    # clip 0.4: token 0 clipped to 0.4 gives (0.4 - 1)^2 = 0.36 > 0.25; token 2 clipped to -0.4 gives 1.96 < 2.25:
    # 1/2 * (0.36 + 0.81 + 2.25) / 3 = 0.57
    assert math.isclose(float(value_loss(new, old, returns, torch.ones(1, 3), clip=0.4).loss), 0.57, abs_tol=1e-5)


@pytest.mark.parametrize("field, value", [("learning_rate", 0), ("mini_batch_size", 0), ("ppo_epochs", 1.5),
                                          ("gamma", 1.2), ("lam", -0.1), ("clip_range", 0), ("vf_coef", -1),
                                          ("kl_penalty", "kl"), ("target_kl", 0), ("max_grad_norm", -1.0),
                                          ("max_new_tokens", 0), ("min_new_tokens", 99), ("temperature", 0.0),
                                          ("adaptive_kl", "yes"), ("learning_rate", float("nan"))])
def test_config_refuses_bad_values_naming_the_argument(field, value):
    with pytest.raises(ValueError, match=f"^{field}="):
        PPOConfig(**{field: value})


# ---------------------------------------------------------------------------------------------
# One update on a two-token example, by hand
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


def _two_token_samples(tok) -> Samples:
    """Two prompts of three tokens (no padding) and two responses of two tokens each."""
    return Samples(["a", "b"], T([[5, 6, 7], [8, 9, 10]]), torch.ones(2, 3, dtype=torch.long), T([[11, 12], [13, 14]]),
                   torch.ones(2, 2), ["x", "y"])


def test_one_update_by_hand_with_temperature_gamma_lambda_whitening_and_returns(tiny_llama):
    """ppo_epochs = 1, one minibatch of both responses: the losses are those of the rollout's own numbers."""
    model, tok = tiny_llama
    policy = _lora_policy(model, r=4, randomise=True)
    temperature, gamma, lam, beta, vf_coef = 0.5, 0.9, 0.5, 0.1, 0.1
    config = PPOConfig(learning_rate=1e-4, mini_batch_size=2, ppo_epochs=1, temperature=temperature, gamma=gamma,
                       lam=lam, init_kl_coef=beta, adaptive_kl=False, vf_coef=vf_coef, max_grad_norm=None)
    trainer = PPOTrainer(policy, tok, config)
    samples = _two_token_samples(tok)
    ids = torch.cat([samples.query_ids, samples.response_ids], 1)

    # the numbers the rollout must hold, from plain forward passes: positions 2 and 3 predict tokens 3 and 4
    with torch.no_grad():
        out = policy(input_ids=ids, output_hidden_states=True)
        logits, hidden = out.logits[:, 2:4], out.hidden_states[-1][:, 2:4]
        with policy.disable_adapter():
            ref_logits = policy(input_ids=ids).logits[:, 2:4]
        values = trainer.value_head(hidden)
    lp = torch.log_softmax(logits / temperature, -1).gather(-1, samples.response_ids[..., None])[..., 0]
    ref = torch.log_softmax(ref_logits / temperature, -1).gather(-1, samples.response_ids[..., None])[..., 0]
    with torch.no_grad():
        got_lp, got_values = logprobs_and_values(policy, trainer.value_head, samples, temperature)
    assert torch.allclose(got_lp, lp, atol=1e-5) and torch.allclose(got_values, values, atol=1e-5)
    assert torch.allclose(reference_logprobs(policy, samples, temperature), ref, atol=1e-5)
    assert not torch.allclose(lp, torch.log_softmax(logits, -1).gather(-1, samples.response_ids[..., None])[..., 0],
                              atol=1e-3)  # the temperature matters here

    scores = T([1.0, -2.0])
    # by hand, per response: r_0 = -beta d_0, r_1 = -beta d_1 + score, d = log pi - log pi_ref (k1)
    d = lp - ref
    r0, r1 = -beta * d[:, 0], -beta * d[:, 1] + scores
    v0, v1 = values[:, 0], values[:, 1]
    a1 = r1 - v1  # the episode ends after token 1: no value after it
    a0 = (r0 + gamma * v1 - v0) + gamma * lam * a1
    adv = torch.stack([a0, a1], 1)
    returns = adv + values
    flat = adv.reshape(-1)
    whitened = (adv - flat.mean()) / torch.sqrt(flat.var(unbiased=True) + 1e-8)

    rollout = Rollout(samples, lp, values, ref, {})
    grads = []
    trainer.value_head.linear.bias.register_hook(lambda g: grads.append(g.clone()))
    stats = trainer.update(rollout, scores)
    # ratio 1 on the first minibatch: the policy loss is -mean(whitened A) = 0 (it would be -mean(A) unwhitened)
    assert abs(float(flat.mean())) > 1e-2  # so whitening is observable here
    assert math.isclose(stats["policy_loss"], float(-whitened.mean()), abs_tol=1e-5)
    assert math.isclose(stats["approx_kl"], 0.0, abs_tol=1e-6) and stats["clip_frac"] == 0.0
    # the value head learns the returns: 1/2 mean (V - R)^2
    assert math.isclose(stats["value_loss"], float(0.5 * ((values - returns) ** 2).mean()), rel_tol=1e-4)
    # and its bias's gradient is vf_coef * mean(V - R) = -vf_coef * mean(A)
    assert math.isclose(float(grads[0]), float(vf_coef * (values - returns).mean()), rel_tol=1e-4)
    assert math.isclose(stats["kl"], float(d.sum(1).mean()), rel_tol=1e-5)
    assert math.isclose(stats["reward"], float((r0 + r1).mean()), rel_tol=1e-5)
    assert stats["score"] == -0.5 and stats["kl_coef"] == beta and stats["response_length"] == 2.0


def test_the_rollout_samples_at_the_temperature_and_records_what_the_forward_passes_say(tiny_llama):
    model, tok = tiny_llama
    policy = _lora_policy(model, r=4, randomise=True)
    prompts = ["Hi", PROMPTS[3], "Book a table for two at eight on Friday at the Golden Dragon, please.", "Ok then."]
    # a temperature near 0 samples the most likely token: greedy decoding's text
    torch.manual_seed(0)
    cold = sample_responses(policy, tok, prompts, max_new_tokens=6, temperature=1e-4)
    with torch.no_grad():
        greedy = policy.generate(input_ids=cold.query_ids, attention_mask=cold.query_mask, do_sample=False,
                                 max_new_tokens=6, top_k=None, top_p=None, temperature=None)
    assert torch.equal(cold.response_ids * cold.mask.long(),
                       greedy[:, cold.query_ids.shape[1]:] * cold.mask.long())
    torch.manual_seed(0)
    hot = sample_responses(policy, tok, prompts, max_new_tokens=6, temperature=5.0)
    assert not torch.equal(hot.response_ids, cold.response_ids)

    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=6, mini_batch_size=2, temperature=0.7))
    rollout = trainer.rollout(prompts)  # prompts of different lengths: padded on the left
    s = rollout.samples
    assert isinstance(rollout, Rollout) and s.response_ids.shape == (4, 6) and len(rollout.texts) == 4
    assert s.query_mask.sum(1).unique().numel() == 4
    with torch.no_grad():
        attention = torch.cat([s.query_mask, torch.ones_like(s.response_ids)], 1)
        ids = torch.cat([s.query_ids, s.response_ids], 1)
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        logits = policy(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, -7:-1]
        base = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, -7:-1]
    assert torch.allclose(rollout.logprobs, logprobs_from_logits(logits / 0.7, s.response_ids) * s.mask, atol=1e-5)
    # the reference is the base model itself, at the same temperature
    assert torch.allclose(rollout.ref_logprobs, logprobs_from_logits(base / 0.7, s.response_ids) * s.mask, atol=1e-5)
    assert not torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-2)  # the adapter does matter
    # a minibatch of two rows, without the padding columns, computes what the whole batch computed for them
    idx = T([0, 3])  # the two shortest prompts
    part = s.select(idx)
    assert part.query_ids.shape[1] < s.query_ids.shape[1] and part.texts == [s.texts[0], s.texts[3]]
    with torch.no_grad():
        lp, _ = logprobs_and_values(policy, trainer.value_head, part, 0.7)
    width = part.mask.shape[1]
    assert torch.allclose(lp * part.mask, rollout.logprobs[idx, :width], atol=1e-5)


def test_responses_that_stop_early_are_masked_after_eos(tiny_llama):
    model, tok = tiny_llama
    policy = _lora_policy(model, r=4)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=8, mini_batch_size=2, ppo_epochs=1))
    eos = policy.generation_config.eos_token_id
    eos = eos if isinstance(eos, int) else eos[0]

    def favour_eos(module, inputs, output):  # makes eos likely (~1 in 3 per token), in every forward pass
        output[..., eos] += 7.0
        return output

    handle = policy.get_output_embeddings().register_forward_hook(favour_eos)
    try:
        rollout = trainer.rollout(PROMPTS[:8])
        stats = trainer.update(rollout, torch.zeros(8))
    finally:
        handle.remove()
    s = rollout.samples
    lengths = rollout.mask.sum(1)
    assert lengths.min() < 8, "the hook should make some response stop early"
    assert torch.equal(rollout.mask, response_mask(s.response_ids, [eos]))
    ended = lengths < 8
    last = lengths.long() - 1
    assert (s.response_ids[ended, last[ended]] == eos).all()  # the eos token itself counts
    after = rollout.mask == 0
    for name in ("logprobs", "ref_logprobs", "values"):
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
    scores = []
    for _ in range(16):
        rollout = trainer.rollout(PROMPTS)
        s = rollout.samples
        share = ((s.response_ids < half).float() * s.mask).sum(1) / s.mask.sum(1)
        scores.append(trainer.update(rollout, share)["score"])
    first, last = sum(scores[:4]) / 4, sum(scores[-4:]) / 4
    assert last > first + 0.2, scores
    assert len(trainer.history) == 16 and trainer.history[-1]["kl"] > 0  # it moved away from the reference
    for key in ("score", "kl", "kl_coef", "clip_frac", "approx_kl", "policy_loss", "value_loss", "time_generate",
                "time_reference", "time_optimize"):
        assert math.isfinite(trainer.history[-1][key]), key


def test_adaptive_kl_follows_ziegler_et_al(tiny_llama):
    model, tok = tiny_llama
    config = PPOConfig(max_new_tokens=4, ppo_epochs=1, mini_batch_size=4, init_kl_coef=0.2, adaptive_kl=True,
                       target_kl=6.0, horizon=100)
    trainer = PPOTrainer(_lora_policy(model, r=2, randomise=True), tok, config)
    stats = trainer.step(PROMPTS[:4], lambda texts: [0.0] * len(texts))
    # e = clip(KL / 6 - 1, -0.2, 0.2);  beta <- 0.2 * (1 + e * 4 / 100)
    error = min(max(stats["kl"] / 6.0 - 1, -0.2), 0.2)
    assert stats["kl_coef"] == 0.2 and math.isclose(trainer.kl_coef, 0.2 * (1 + error * 4 / 100))
    fixed = PPOTrainer(_lora_policy(model, r=2, randomise=True), tok, PPOConfig(max_new_tokens=4, ppo_epochs=1,
                                                                                 adaptive_kl=False))
    fixed.step(PROMPTS[:4], lambda texts: [0.0] * len(texts))
    assert fixed.kl_coef == 0.2


def test_a_run_repeats_exactly_with_the_same_seed(tiny_llama):
    from labhelpers.device import seed_everything

    model, tok = tiny_llama
    runs = []
    for _ in range(2):
        seed_everything(0)  # LoRA's A matrices start random, and sampling uses torch's generator
        trainer = PPOTrainer(_lora_policy(model, r=2), tok, PPOConfig(max_new_tokens=4, ppo_epochs=1, seed=3))
        runs.append([trainer.step(PROMPTS[:4], lambda texts: [len(t) for t in texts])["value_loss"] for _ in range(2)])
    assert runs[0] == runs[1]


def test_a_seq2seq_policy_takes_ppo_steps(tiny_t5):
    model, tok = tiny_t5
    policy = _lora_policy(model, r=4, randomise=True)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=6, mini_batch_size=2, ppo_epochs=2, kl_penalty="k3"))
    rollout = trainer.rollout(PROMPTS[:4])
    s = rollout.samples
    with torch.no_grad():
        start = torch.full_like(s.response_ids[:, :1], model.config.decoder_start_token_id)
        logits = model(input_ids=s.query_ids, attention_mask=s.query_mask,
                       decoder_input_ids=torch.cat([start, s.response_ids[:, :-1]], 1)).logits
    assert torch.allclose(rollout.ref_logprobs, logprobs_from_logits(logits, s.response_ids) * s.mask, atol=1e-5)
    stats = [trainer.step(PROMPTS[:4], lambda texts: [float(i) for i in range(len(texts))]) for _ in range(2)]
    assert all(math.isfinite(v) for st in stats for v in st.values())


# ---------------------------------------------------------------------------------------------
# Bad input: caught with a clear error before it corrupts training
# ---------------------------------------------------------------------------------------------

def test_the_trainer_needs_a_lora_policy_and_a_config(tiny_llama):
    model, tok = tiny_llama
    with pytest.raises(TypeError, match="PEFT model with a LoRA adapter"):
        PPOTrainer(model, tok)
    with pytest.raises(TypeError, match="config must be a PPOConfig"):
        PPOTrainer(_lora_policy(model, r=2), tok, config={"learning_rate": 1e-5})


def test_reward_functions_that_misbehave_are_caught(tiny_llama):
    model, tok = tiny_llama
    trainer = PPOTrainer(_lora_policy(model, r=2), tok, PPOConfig(max_new_tokens=3, ppo_epochs=1))
    before = {n: p.clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="scores has 3 values for 4 responses"):
        trainer.step(PROMPTS[:4], lambda texts: [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        trainer.step(PROMPTS[:4], lambda texts: torch.tensor([0.0, float("nan"), 1.0, 1.0]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        trainer.step(PROMPTS[:4], lambda texts: [0.0, float("inf"), 1.0, 1.0])
    with pytest.raises(TypeError, match="returned None"):
        trainer.step(PROMPTS[:4], lambda texts: None)
    with pytest.raises(TypeError, match="scores must be numbers"):
        trainer.step(PROMPTS[:4], lambda texts: ["good"] * 4)
    # nothing was trained by any of the refused steps
    assert all(torch.equal(before[n], p) for n, p in trainer.policy.named_parameters() if p.requires_grad)
    assert trainer.history == []


def test_empty_generations_are_caught(tiny_llama):
    model, tok = tiny_llama
    policy = _lora_policy(model, r=2)
    trainer = PPOTrainer(policy, tok, PPOConfig(max_new_tokens=4, ppo_epochs=1))
    eos = policy.generation_config.eos_token_id
    eos = eos if isinstance(eos, int) else eos[0]

    def only_eos(module, inputs, output):  # every response ends at its first token
        output[..., eos] += 1e4
        return output

    handle = policy.get_output_embeddings().register_forward_hook(only_eos)
    try:
        with pytest.raises(ValueError, match="every one of the 4 responses is empty"):
            trainer.step(PROMPTS[:4], lambda texts: [0.0] * len(texts))
        rollout = trainer.rollout(PROMPTS[:1])
        with pytest.raises(ValueError, match="covers 1 position"):
            trainer.update(rollout, [1.0])
    finally:
        handle.remove()
    assert trainer.history == []


# ---------------------------------------------------------------------------------------------
# After training: the KL on held-out prompts
# ---------------------------------------------------------------------------------------------

def test_heldout_kl_is_zero_at_the_start_and_equals_the_sum_of_logprob_differences(tiny_llama):
    from labhelpers import heldout_kl

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
    # by hand for one prompt: sample as it does, then sum log pi - log pi_ref (at temperature 0.7) over the response
    torch.manual_seed(3)
    s = sample_responses(moved, tok, prompts[:1], max_new_tokens=6, temperature=0.7)
    with torch.no_grad():
        pi = logprobs_from_logits(response_logits(moved, s.query_ids, s.query_mask, s.response_ids)[0] / 0.7,
                                  s.response_ids)
        ref = logprobs_from_logits(response_logits(model, s.query_ids, s.query_mask, s.response_ids)[0] / 0.7,
                                   s.response_ids)
    assert heldout_kl(moved, tok, prompts[:1], max_new_tokens=6, seed=3)[0] == pytest.approx(
        float(((pi - ref) * s.mask).sum()), abs=1e-5)
    with pytest.raises(ValueError, match="no adapter"):
        heldout_kl(model, tok, prompts)
    with pytest.raises(ValueError, match="temperature"):
        heldout_kl(moved, tok, prompts, temperature=0)
    with pytest.raises(ValueError, match="ref_model is the policy|shares"):
        heldout_kl(moved, tok, prompts, reference=moved)
