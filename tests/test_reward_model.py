"""Tests for lab 09's reward model (written in the notebook, exported to labhelpers) and the forward pass it reads
(labhelpers.rl.response_states): the pairwise loss by hand, the head learning a preference it can see, the
cached forward pass against the plain one, saving and the refusal of another base model, and the repetition and
copying measures the lab's claims rest on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labhelpers import (LearnedRewardModel, RewardHead, base_model_id, begins_like, loops, pairwise_loss, repetition,
                        response_states, train_reward_head)


def test_pairwise_loss_by_hand():
    # -log sigmoid(2) = log(1 + e^-2) = 0.126928; -log sigmoid(0) = log 2 = 0.693147; mean 0.410038
    loss = pairwise_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 0.0]))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-2)) + math.log(2)) / 2, abs=1e-6)
    # only the difference counts, and the wrong order costs more than the right one
    assert pairwise_loss(torch.tensor([5.0]), torch.tensor([3.0])).item() == pytest.approx(
        pairwise_loss(torch.tensor([2.0]), torch.tensor([0.0])).item(), abs=1e-6)
    assert pairwise_loss(torch.tensor([0.0]), torch.tensor([2.0])) > pairwise_loss(torch.tensor([2.0]), torch.tensor([0.0]))


def test_the_head_standardises_then_applies_one_linear_layer():
    head = RewardHead(2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, -2.0]]))
        head.linear.bias.fill_(0.5)
        head.mean.copy_(torch.tensor([1.0, 1.0]))
        head.std.copy_(torch.tensor([2.0, 4.0]))
    # (3 - 1) / 2 * 1 + (5 - 1) / 4 * -2 + 0.5 = 1 - 2 + 0.5 = -0.5
    assert head(torch.tensor([[3.0, 5.0]])).tolist() == pytest.approx([-0.5])


def test_the_head_learns_a_preference_it_can_see_and_generalises():
    gen = torch.Generator().manual_seed(0)

    def pairs(n):
        noise_c, noise_r = torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)
        noise_c[:, 0] += 1.5  # the raters prefer more of feature 0; the other seven are noise
        noise_r[:, 0] -= 1.5
        return noise_c, noise_r

    torch.manual_seed(0)
    head = RewardHead(8)
    history = train_reward_head(head, pairs(200), pairs(100), steps=200, learning_rate=1e-2)
    assert history["train loss"].iloc[-1] < history["train loss"].iloc[0] - 0.3
    assert history["validation accuracy"].iloc[-1] > 0.95
    assert head.linear.weight[0, 0] > 5 * head.linear.weight[0, 1:].abs().max()  # it found the feature
    assert list(history.columns) == ["step", "train loss", "validation loss", "validation accuracy"]


def _plain_states(model, tokenizer, prompt, response):
    """The same hidden states without the cache or batching: the whole sequence in one forward pass; returns
    (mean over the response's tokens and its end token, the state at the end token)."""
    from labhelpers.lessons.instruction_fine_tuning import answer_end_id
    from labhelpers.prompts import model_input

    prefix = tokenizer(model_input(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    answer = tokenizer(response, add_special_tokens=False)["input_ids"] + [answer_end_id(model, tokenizer)]
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([prefix + answer])).last_hidden_state[0]
    return hidden[-len(answer):].mean(0), hidden[-1]


def test_response_states_equal_the_plain_forward_pass(tiny_llama, monkeypatch):
    monkeypatch.setenv("LABS_CPU_BF16", "0")  # fp32 throughout, so the two must agree to rounding
    model, tokenizer = tiny_llama
    prompts = ["Summarize: A asks B for a refund.", "Summarize: B books a table.",
               "Summarize: A asks B for a refund.", "Summarize: A asks B for a refund."]
    responses = ["A wants money back.", "B reserves a table for two at eight, by the window.", "A is upset.",
                 "A asks for a refund and B says yes after checking the receipt twice."]
    mean = response_states(model, tokenizer, prompts, responses, batch_size=2)
    last = response_states(model, tokenizer, prompts, responses, pool="last")
    assert mean.shape == last.shape == (4, model.config.hidden_size)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        want_mean, want_last = _plain_states(model, tokenizer, p, r)
        torch.testing.assert_close(mean[i], want_mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(last[i], want_last, rtol=1e-4, atol=1e-4)
    # the batch does not change a response's states: alone, or beside longer responses to its prompt
    alone = response_states(model, tokenizer, prompts[2:3], responses[2:3])
    torch.testing.assert_close(alone[0], mean[2], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(mean[0], mean[2])  # different responses, different states


def test_response_states_refuses_bad_input(tiny_llama, tiny_t5):
    model, tokenizer = tiny_llama
    with pytest.raises(ValueError, match="2 prompts for 1 responses"):
        response_states(model, tokenizer, ["a", "b"], ["x"])
    with pytest.raises(TypeError, match="lists"):
        response_states(model, tokenizer, "a prompt", ["x"])
    with pytest.raises(ValueError, match="pool='max' must be 'mean'"):
        response_states(model, tokenizer, ["a"], ["x"], pool="max")
    with pytest.raises(TypeError, match="not a decoder-only model"):
        response_states(tiny_t5[0], tiny_t5[1], ["a"], ["x"])


def test_a_saved_reward_model_reloads_and_refuses_another_base_model(tiny_llama, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    model, tokenizer = tiny_llama
    torch.manual_seed(0)
    head = RewardHead(model.config.hidden_size)
    learned = LearnedRewardModel(model, tokenizer, head, center=0.3, scale=2.0)
    prompts, responses = ["Summarize: A asks B for a refund."] * 2, ["A wants money back.", "A is upset."]
    folder = learned.save(tmp_path / "rm")
    assert not (tmp_path / "rm.partial").exists()
    again = LearnedRewardModel.load(folder, model, tokenizer)
    np.testing.assert_allclose(again.reward(prompts, responses), learned.reward(prompts, responses))
    np.testing.assert_allclose(learned.reward(prompts, responses), (learned.score(prompts, responses) - 0.3) / 2.0)

    other = LlamaForCausalLM(LlamaConfig(vocab_size=model.config.vocab_size, hidden_size=48, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4))
    assert base_model_id(other) != base_model_id(model)
    with pytest.raises(ValueError, match="reads .* not .*load it with the model it was trained on"):
        LearnedRewardModel.load(folder, other, tokenizer)
    with pytest.raises(FileNotFoundError, match="holds no reward model"):
        LearnedRewardModel.load(tmp_path / "nothing here", model, tokenizer)


def test_repetition_counts_repeated_bigrams():
    assert repetition("#Person1# returns a kettle and gets a refund.") == 0.0
    # "a b a b a b": bigrams ab ba ab ba ab -> 2 distinct of 5: 1 - 2/5 = 0.6
    assert repetition("a b a b a b") == pytest.approx(0.6)
    looping = "#Person2# says #Person2# is fine, and #Person2# says #Person2# is fine, and #Person2# says"
    assert repetition(looping) > 0.4
    assert repetition("") == 0.0 and repetition("one") == 0.0


def test_begins_like_spots_a_summary_that_copies_the_dialogue():
    dialogue = "#Person1#: For fuck's sake, look at this. It came with a crack in it.\n#Person2#: Sorry."
    assert begins_like("#Person1#: For fuck's sake, look at this. It came", dialogue)
    assert not begins_like('#Person1# says "For fuck\'s sake, look at this" about a cracked vase.', dialogue)
    assert not begins_like("Too short.", dialogue)
    assert not begins_like("#Person1#: For fuck's sake, look at", "#Person1#: For fuck's sake, look")  # 6 words, 5 there


def test_loops_needs_a_trigram_three_times():
    assert loops("#Person1# reports the dog of the dog of the dog of the dog.")  # "the dog of" three times
    assert not loops("#Person1# reports the dog of the dog of the dog.")  # twice is not yet a loop
    assert loops("the thirty-thirty-thirty-thirty-thirty minute wait")  # hyphens split words
    assert not loops("#Person2# blames #Person1#. #Person2# blames the shop. #Person2# leaves.")
    assert not loops("") and not loops("one two")
    assert loops("a b a b a b", n=2, times=3) and not loops("a b a b", n=2, times=3)
