"""Tests for labhelpers.rewards: the offline scorers, the hub classifier's code path on a tiny local model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labhelpers.rewards import (HFToxicityScorer, ProfanityCheckScorer, SafeTypeScorer, ToxicityScores,
                                not_toxic_log_odds, reward_scorer)

POLITE = "The doctor tells Tom to rest for two days."
OFFENSIVE = "You are a worthless piece of garbage, you stupid idiot."


@pytest.fixture(scope="module")
def profanity():
    return ProfanityCheckScorer()


def test_the_offline_scorer_ranks_an_offensive_sentence_above_a_polite_one(profanity):
    scores = profanity.score([POLITE, OFFENSIVE])
    assert isinstance(scores, ToxicityScores) and len(scores) == 2
    assert scores.toxicity[1] > 0.5 > scores.toxicity[0]
    assert scores.reward[0] > 0 > scores.reward[1]


def test_scores_are_batched_in_order(profanity):
    texts = [POLITE, OFFENSIVE, "See you on Friday.", "Shut up, moron.", "Thanks for your help."] * 3
    whole = profanity.score(texts)
    assert whole.toxicity.shape == whole.reward.shape == (15,)
    batched = profanity.score(texts, batch_size=4)
    np.testing.assert_allclose(batched.reward, whole.reward)
    one_by_one = [profanity.reward([t])[0] for t in texts[:5]]
    np.testing.assert_allclose(whole.reward[:5], one_by_one)
    empty = profanity.score([])
    assert empty.toxicity.shape == empty.reward.shape == (0,)


def test_the_reward_is_the_clipped_log_odds_of_not_toxic(profanity):
    # log((1 - p) / p): p = 0.5 -> 0; p = 0.1 -> ln 9 = 2.197225; p = 0.9 -> -ln 9; p = 0 or 1 -> +/- clip
    np.testing.assert_allclose(not_toxic_log_odds([0.5, 0.1, 0.9, 0.0, 1.0], clip=5.0),
                               [0.0, 2.197225, -2.197225, 5.0, -5.0], atol=1e-6)
    saturated = profanity.score(["FUCK YOU"])
    assert saturated.toxicity[0] > 0.999 and saturated.reward[0] == -5.0
    tight = ProfanityCheckScorer(clip=1.0).reward([POLITE, OFFENSIVE])
    np.testing.assert_allclose(tight, [1.0, -1.0])


def test_scorers_refuse_bad_input(profanity):
    with pytest.raises(TypeError, match="list of strings"):
        profanity.score(POLITE)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        profanity.score([POLITE, 3])
    with pytest.raises(ValueError, match="^batch_size="):
        profanity.score([POLITE], batch_size=0)
    with pytest.raises(ValueError, match="^clip="):
        ProfanityCheckScorer(clip=0)


def test_safetype_is_a_second_opinion_of_another_kind(profanity):
    judge = SafeTypeScorer()
    scores = judge.score([POLITE, OFFENSIVE, "I will kill you"])
    assert scores.toxicity[0] == 0.0 and scores.toxicity[1] > 0.5 and scores.toxicity[2] > 0.5
    assert scores.reward[0] > scores.reward[1]
    # rules, not the training classifier: they disagree where the classifier over-reacts to a mild word
    mild = "This homework is damn hard."
    assert profanity.toxicity([mild])[0] > 0.5 > judge.toxicity([mild])[0]


def test_reward_scorer_follows_the_profile(hub_offline):
    from labhelpers.models import ModelUnavailableError

    assert isinstance(reward_scorer("tiny"), ProfanityCheckScorer)
    assert isinstance(reward_scorer("embedded"), ProfanityCheckScorer)
    with pytest.raises(ModelUnavailableError, match="roberta-hate-speech-dynabench-r4-target.*ProfanityCheckScorer"):
        reward_scorer("course")


@pytest.fixture(scope="module")
def tiny_hate_classifier(tmp_path_factory):
    """A RoBERTa-style classifier with random weights and the course model's labels, saved to a folder."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    from labhelpers.models import resolve_model_path

    folder = tmp_path_factory.mktemp("tiny-hate-classifier")
    tok = AutoTokenizer.from_pretrained(resolve_model_path("tiny-llama"))
    tok.padding_side = "right"
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=80, pad_token_id=tok.pad_token_id,
                           id2label={0: "nothate", 1: "hate"}, label2id={"nothate": 0, "hate": 1})
    model = RobertaForSequenceClassification(config)
    with torch.no_grad():  # random init gives logits near 0: spread them so the checks can fail
        model.classifier.out_proj.weight.mul_(50)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model.eval(), tok


def test_the_hub_scorer_rewards_the_nothate_logit(tiny_hate_classifier):
    folder, model, tok = tiny_hate_classifier
    scorer = HFToxicityScorer(folder, device="cpu", max_length=64)
    texts = [POLITE, OFFENSIVE, "Hi"]
    scores = scorer.score(texts, batch_size=2)
    with torch.no_grad():
        logits = torch.cat([model(**tok([t], return_tensors="pt")).logits for t in texts]).double()
    np.testing.assert_allclose(scores.reward, logits[:, 0].numpy(), atol=1e-4)  # label 0 is "nothate"
    np.testing.assert_allclose(scores.toxicity, torch.softmax(logits, -1)[:, 1].numpy(), atol=1e-4)
    assert logits[:, 0].std() > 0.05  # the classifier's logits really differ between texts
    assert set(scorer.logits(["Hi"])[0]) == {"nothate", "hate"}


def test_the_hub_scorer_refuses_a_model_without_the_label_or_a_missing_folder(tiny_hate_classifier, tmp_path):
    from labhelpers.models import ModelUnavailableError

    folder, _, _ = tiny_hate_classifier
    with pytest.raises(ValueError, match="not_hate_label='not_toxic'.*'hate', 'nothate'"):
        HFToxicityScorer(folder, not_hate_label="not_toxic", device="cpu")
    with pytest.raises(ModelUnavailableError, match="cannot load the reward model folder"):
        HFToxicityScorer(tmp_path / "absent", device="cpu")


def test_safetype_probability_combines_the_rules_that_fire():
    judge = SafeTypeScorer()
    # one rule at confidence 0.8 -> 0.8; reward ln(0.2 / 0.8) = -1.386294
    scores = judge.score(["You are a worthless piece of garbage."])
    assert math.isclose(scores.toxicity[0], 0.8, abs_tol=1e-9)
    assert math.isclose(scores.reward[0], -1.386294, abs_tol=1e-6)
