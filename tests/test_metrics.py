"""Tests for labhelpers.metrics (scores, bootstrap intervals, paired comparisons, tables) and for the
ROUGE and BLEU counting that lab 08 writes and exports (rouge_n, rouge_l, sentence_bleu, ...)."""

import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from labhelpers import (brevity_penalty, lcs_table, longest_common_subsequence, metrics, ngram_counts,
                        precision_recall_f1, rouge_l, rouge_n, sentence_bleu)
from labhelpers.metrics import (
    Estimate,
    bleu_per_example,
    bootstrap_ci,
    bootstrap_corpus_bleu,
    comparison_table,
    corpus_bleu,
    distinct_n,
    format_table,
    metric_table,
    paired_difference,
    rouge_per_example,
    score_summaries,
)

REFERENCES = [
    "Amanda baked cookies and will bring Jerry some tomorrow.",
    "Olivia and Olivier are voting for liberals in this election.",
    "Tim will call Kim back after the meeting. She is waiting.",
    "Edward wants to talk to Rachel about the party on Friday.",
    "Sam is going to the cinema with Ann tonight.",
    "John lost his keys. Mary will help him look for them.",
]
PREDICTIONS_A = [
    "Amanda baked cookies for Jerry.",
    "Olivia is voting for liberals.",
    "Tim will call Kim.",
    "Edward wants to talk to Rachel.",
    "Sam goes to the cinema.",
    "John lost his keys.",
]
PREDICTIONS_B = [
    "Amanda baked cookies and will bring Jerry some.",
    "Olivia and Olivier are voting for liberals.",
    "Tim will call Kim back after the meeting.",
    "Edward wants to talk to Rachel about the party.",
    "Sam is going to the cinema with Ann.",
    "John lost his keys. Mary will help him.",
]


# --------------------------------------------------------------------------
# ROUGE and BLEU
# --------------------------------------------------------------------------


def test_identical_texts_score_perfectly():
    scores = score_summaries(REFERENCES, REFERENCES)
    rouge = scores[["rouge1", "rouge2", "rougeL", "rougeLsum"]]
    assert np.allclose(rouge.to_numpy(), 1.0)
    assert np.allclose(scores["bleu"], 100.0)
    assert corpus_bleu(REFERENCES, REFERENCES) == pytest.approx(100.0)


def test_score_summaries_shape_and_ranges():
    scores = score_summaries(PREDICTIONS_A, REFERENCES)
    assert list(scores.columns) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert len(scores) == len(REFERENCES)
    rouge = scores.drop(columns="bleu").to_numpy()
    assert ((rouge >= 0) & (rouge <= 1)).all()
    assert ((scores["bleu"] >= 0) & (scores["bleu"] <= 100)).all()
    # A shorter, partial summary is not perfect.
    assert (scores["rouge1"] < 1).all()


def test_rouge1_hand_computed():
    # prediction tokens: the black cat sat            (4 tokens)
    # reference tokens:  the cat sat on the mat       (6 tokens)
    # overlapping unigrams (clipped): the, cat, sat = 3
    # precision = 3/4, recall = 3/6 = 1/2
    # F1 = 2 * (3/4) * (1/2) / (3/4 + 1/2) = (3/4) / (5/4) = 3/5 = 0.6
    scores = rouge_per_example(["The black cat sat"], ["The cat sat on the mat"], rouge_types=("rouge1",))
    assert list(scores.columns) == ["rouge1"]
    assert scores.loc[0, "rouge1"] == pytest.approx(0.6)


def test_use_stemmer_is_passed_through():
    # Porter stemming maps cats -> cat and running -> run.
    with_stem = rouge_per_example(["cat run"], ["cats running"], rouge_types=("rouge1",), use_stemmer=True)
    without = rouge_per_example(["cat run"], ["cats running"], rouge_types=("rouge1",), use_stemmer=False)
    assert with_stem.loc[0, "rouge1"] == pytest.approx(1.0)
    assert without.loc[0, "rouge1"] == pytest.approx(0.0)


def test_rouge_lsum_ignores_sentence_order_but_rouge_l_does_not():
    # Same two sentences, swapped.  rougeL looks for one longest common
    # subsequence over the whole text, so at most about one sentence matches
    # in order; rougeLsum matches sentence by sentence, so everything matches.
    prediction = "The cat sat on the mat. The dog ran in the park."
    reference = "The dog ran in the park. The cat sat on the mat."
    scores = rouge_per_example([prediction], [reference])
    assert scores.loc[0, "rougeLsum"] == pytest.approx(1.0)
    assert scores.loc[0, "rougeL"] < 0.9
    assert scores.loc[0, "rouge1"] == pytest.approx(1.0)  # same bag of words


def test_sentence_splitting_handles_question_and_exclamation_marks():
    assert metrics._split_sentences("Hi! Are you there? Yes.  Fine") == "Hi!\nAre you there?\nYes.\nFine"
    assert metrics._split_sentences("  no punctuation here ") == "no punctuation here"


def test_empty_prediction_is_legal_and_scores_zero():
    scores = score_summaries(["", "Sam goes to the cinema."], ["Amanda baked cookies.", "Sam goes to the cinema."])
    assert np.allclose(scores.iloc[0].to_numpy(), 0.0)
    assert scores.loc[1, "bleu"] == pytest.approx(100.0)


def test_bleu_per_example_is_a_named_series():
    bleu = bleu_per_example(PREDICTIONS_B, REFERENCES)
    assert isinstance(bleu, pd.Series)
    assert bleu.name == "bleu"
    assert len(bleu) == len(REFERENCES)
    # Closer predictions (B) should beat the terse ones (A) on every example.
    assert (bleu > bleu_per_example(PREDICTIONS_A, REFERENCES)).all()


# --------------------------------------------------------------------------
# Estimate and bootstrap_ci
# --------------------------------------------------------------------------


def test_estimate_str_and_excludes_zero():
    assert str(Estimate(0.312, 0.290, 0.334, 200, 0.95)) == "0.312 [0.290, 0.334] (95% CI, n=200)"
    assert str(Estimate(31.24, 29.04, 33.44, 200, 0.9)) == "31.2 [29.0, 33.4] (90% CI, n=200)"
    assert Estimate(0.1, 0.05, 0.15, 10, 0.95).excludes_zero
    assert Estimate(-0.1, -0.15, -0.05, 10, 0.95).excludes_zero
    assert not Estimate(0.1, -0.01, 0.2, 10, 0.95).excludes_zero


def test_estimate_is_frozen():
    estimate = Estimate(0.1, 0.0, 0.2, 5, 0.95)
    with pytest.raises(AttributeError):
        estimate.mean = 0.5


def test_bootstrap_ci_contains_sample_mean():
    values = np.random.default_rng(1).uniform(0, 1, size=300)
    estimate = bootstrap_ci(values)
    assert estimate.mean == pytest.approx(values.mean())
    assert estimate.low < values.mean() < estimate.high
    assert estimate.n == 300
    assert estimate.confidence == 0.95


def test_bootstrap_ci_percentiles_of_a_distribution_known_by_hand():
    # Resampling [0, 0, 3] three times gives a mean of k, the number of 3s drawn: k ~ Binomial(3, 1/3),
    # P(k = 0, 1, 2, 3) = 8/27, 12/27, 6/27, 1/27, so P(k <= 2) = 26/27 = 0.963.
    # 95%: the 2.5th percentile is 0 and the 97.5th is 3 (0.963 < 0.975); 90%: the 95th percentile is 2.
    values = [0.0, 0.0, 3.0]
    estimate = bootstrap_ci(values, n_resamples=20000)
    assert (estimate.mean, estimate.low, estimate.high) == (1.0, 0.0, 3.0)
    narrower = bootstrap_ci(values, confidence=0.9, n_resamples=20000)
    assert (narrower.low, narrower.high) == (0.0, 2.0)
    # Two values, [0, 1]: resampled means 0, 0.5, 1 with chances 1/4, 1/2, 1/4. A 40% interval
    # (the 30th to 70th percentile) holds only 0.5; a 95% interval runs from 0 to 1.
    assert bootstrap_ci([0.0, 1.0], confidence=0.4, n_resamples=20000) == Estimate(0.5, 0.5, 0.5, 2, 0.4)
    assert bootstrap_ci([0.0, 1.0], n_resamples=20000) == Estimate(0.5, 0.0, 1.0, 2, 0.95)


def test_bootstrap_ci_width_matches_normal_theory():
    # For the mean of n draws with standard deviation 1 the 95% interval is
    # about mean +- 1.96 / sqrt(n): width 2 * 1.96 / 20 = 0.196 for n = 400.
    values = np.random.default_rng(2).normal(0, 1, size=400)
    estimate = bootstrap_ci(values)
    expected_width = 2 * 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert estimate.high - estimate.low == pytest.approx(expected_width, rel=0.15)


def test_bootstrap_ci_narrows_as_n_grows():
    rng = np.random.default_rng(3)
    small = bootstrap_ci(rng.uniform(0, 1, size=20))
    large = bootstrap_ci(rng.uniform(0, 1, size=2000))
    # Width shrinks like 1/sqrt(n): a factor of 10 here; allow a lot of slack.
    assert (large.high - large.low) < (small.high - small.low) / 4


def test_bootstrap_ci_is_deterministic_for_a_seed():
    values = np.random.default_rng(4).uniform(0, 1, size=50)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)


def test_bootstrap_ci_single_value_and_constant_values():
    assert bootstrap_ci([0.4]) == Estimate(0.4, 0.4, 0.4, 1, 0.95)
    constant = bootstrap_ci([0.25] * 10)
    assert constant.low == pytest.approx(0.25) and constant.high == pytest.approx(0.25)


def test_bootstrap_ci_higher_confidence_is_wider():
    values = np.random.default_rng(5).uniform(0, 1, size=100)
    narrow = bootstrap_ci(values, confidence=0.8)
    wide = bootstrap_ci(values, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


def test_bootstrap_ci_with_other_statistic():
    values = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 100.0])
    estimate = bootstrap_ci(values, statistic=np.median, n_resamples=200)
    assert estimate.mean == pytest.approx(0.5)
    assert 0.0 <= estimate.low <= estimate.high <= 100.0
    # The maximum of two draws from [0, 1] is 0 only when both draws are 0 (chance 1/4): the 30th to
    # 70th percentile of the maxima is 1, while the means there are 0.5 (the statistic is applied per resample).
    assert bootstrap_ci([0.0, 1.0], statistic=np.max, confidence=0.4, n_resamples=20000) == \
        Estimate(1.0, 1.0, 1.0, 2, 0.4)
    assert bootstrap_ci([0.0, 1.0], statistic=np.max, n_resamples=20000) == Estimate(1.0, 0.0, 1.0, 2, 0.95)
    # The median of three draws from [0, 0, 3] is 3 only when at least two draws are 3: chance 7/27 = 0.26.
    # So a 40% interval (30th to 70th percentile) is [0, 0], and a 60% one (20th to 80th) is [0, 3].
    medians = bootstrap_ci([0.0, 0.0, 3.0], statistic=np.median, confidence=0.4, n_resamples=20000)
    assert (medians.mean, medians.low, medians.high) == (0.0, 0.0, 0.0)
    medians = bootstrap_ci([0.0, 0.0, 3.0], statistic=np.median, confidence=0.6, n_resamples=20000)
    assert (medians.low, medians.high) == (0.0, 3.0)


# --------------------------------------------------------------------------
# paired_difference
# --------------------------------------------------------------------------


def test_paired_difference_detects_constant_shift():
    a = np.random.default_rng(6).uniform(0, 0.8, size=100)
    b = a + 0.1
    difference = paired_difference(a, b)
    assert difference.mean == pytest.approx(0.1)
    assert difference.low == pytest.approx(0.1) and difference.high == pytest.approx(0.1)
    assert difference.excludes_zero
    assert paired_difference(b, a).mean == pytest.approx(-0.1)


def test_paired_interval_is_narrower_than_unpaired():
    # Example difficulty varies a lot (base), each system adds small
    # independent noise, and b is better by 0.01 on average.
    rng = np.random.default_rng(7)
    n = 200
    base = rng.uniform(0, 1, size=n)
    a = base + rng.normal(0, 0.02, size=n)
    b = base + 0.01 + rng.normal(0, 0.02, size=n)
    paired = paired_difference(a, b)

    # Unpaired bootstrap written out here: resample a and b independently,
    # so difficulty no longer cancels out.
    resamples = 2000
    mean_a = a[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    mean_b = b[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    unpaired_low, unpaired_high = np.quantile(mean_b - mean_a, [0.025, 0.975])

    assert (paired.high - paired.low) < (unpaired_high - unpaired_low) / 3
    assert paired.excludes_zero
    assert unpaired_low < 0 < unpaired_high  # the unpaired view cannot tell
    assert paired.mean == pytest.approx(np.mean(b - a))


# --------------------------------------------------------------------------
# bootstrap_corpus_bleu
# --------------------------------------------------------------------------


def test_summed_bleu_statistics_reproduce_sacrebleu_corpus_bleu():
    statistics = metrics._bleu_statistics(PREDICTIONS_A, REFERENCES)
    assert statistics.shape == (len(REFERENCES), 10)
    assert metrics._bleu_from_statistics(statistics.sum(axis=0)) == pytest.approx(corpus_bleu(PREDICTIONS_A, REFERENCES))


def test_bootstrap_corpus_bleu():
    predictions = PREDICTIONS_A + PREDICTIONS_B
    references = REFERENCES + REFERENCES
    estimate = bootstrap_corpus_bleu(predictions, references, n_resamples=200)
    assert estimate.mean == pytest.approx(corpus_bleu(predictions, references))
    assert 0 <= estimate.low <= estimate.mean <= estimate.high <= 100
    assert estimate.n == len(predictions)
    assert estimate == bootstrap_corpus_bleu(predictions, references, n_resamples=200)
    perfect = bootstrap_corpus_bleu(REFERENCES, REFERENCES, n_resamples=50)
    assert perfect.low == pytest.approx(100.0) and perfect.high == pytest.approx(100.0)


def test_bootstrap_corpus_bleu_hand_computed():
    # Two examples, both with every n-gram right: A is the reference itself (4 tokens), B misses its
    # reference's last word (6 tokens for 7). Corpus BLEU is then 100 * BP, with BP = exp(1 - r / c) over
    # the pooled lengths: AA -> 100, AB -> 100 exp(1 - 11/10), BB -> 100 exp(1 - 14/12), with chances
    # 1/4, 1/2, 1/4. The 95% interval spans BB to AA; a 40% interval (30th to 70th percentile) is AB alone.
    predictions = ["the dog ran home", "the cat sat on the mat"]
    references = ["the dog ran home", "the cat sat on the mat today"]
    ab, bb = 100 * np.exp(1 - 11 / 10), 100 * np.exp(1 - 14 / 12)
    estimate = bootstrap_corpus_bleu(predictions, references, n_resamples=4000)
    assert (estimate.mean, estimate.low, estimate.high) == pytest.approx((ab, bb, 100.0))
    middle = bootstrap_corpus_bleu(predictions, references, confidence=0.4, n_resamples=4000)
    assert (middle.low, middle.high) == pytest.approx((ab, ab))


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scores_a():
    return score_summaries(PREDICTIONS_A, REFERENCES)


@pytest.fixture(scope="module")
def scores_b():
    return score_summaries(PREDICTIONS_B, REFERENCES)


def test_metric_table_shape_and_columns(scores_a, scores_b):
    table = metric_table({"short": scores_a, "long": scores_b}, n_resamples=200)
    assert list(table.columns) == ["system", "metric", "mean", "ci_low", "ci_high", "n"]
    assert len(table) == 2 * 5
    assert list(table["system"].unique()) == ["short", "long"]
    assert list(table["metric"].unique()) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    assert (table["n"] == len(REFERENCES)).all()
    row = table[(table["system"] == "long") & (table["metric"] == "rouge1")].iloc[0]
    assert row["mean"] == pytest.approx(scores_b["rouge1"].mean())


def test_metric_table_metric_subset_and_shared_columns(scores_a, scores_b):
    table = metric_table({"a": scores_a, "b": scores_b}, metrics=["bleu"], n_resamples=50)
    assert list(table["metric"]) == ["bleu", "bleu"]
    # Only numeric columns present in every frame are used by default.
    with_text = scores_a.assign(note="x", extra=1.0)
    table = metric_table({"a": with_text, "b": scores_b}, n_resamples=50)
    assert set(table["metric"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"}


def test_comparison_table(scores_a, scores_b):
    table = comparison_table(scores_a, scores_b, n_resamples=200)
    assert list(table.columns) == [
        "metric", "baseline", "candidate", "difference", "ci_low", "ci_high", "excludes_zero", "n",
    ]
    assert list(table["metric"]) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert np.allclose(table["difference"], table["candidate"] - table["baseline"])
    assert (table["n"] == len(REFERENCES)).all()
    # B is closer to the references on every single example, so every
    # paired difference is positive and its interval stays above zero.
    assert table["excludes_zero"].all()
    assert (table["ci_low"] > 0).all()


def test_format_table(scores_a, scores_b):
    wide = format_table(metric_table({"short": scores_a, "long": scores_b}, n_resamples=50))
    assert list(wide.index) == ["short", "long"]
    assert list(wide.columns) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"]
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", wide.loc["short", "rouge1"])
    assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", wide.loc["long", "bleu"])


# --------------------------------------------------------------------------
# distinct_n
# --------------------------------------------------------------------------


def test_distinct_n_hand_cases():
    # "a b a b": bigrams ab, ba, ab -> 2 distinct of 3.
    assert distinct_n(["a b a b"], n=2) == pytest.approx(2 / 3)
    # Unigrams are lowercased: a, A, b -> {a, b} of 3.
    assert distinct_n(["a A b"], n=1) == pytest.approx(2 / 3)
    # Two identical texts: bigrams (x y), (x y) -> 1 of 2; none across texts.
    assert distinct_n(["x y", "x y"], n=2) == pytest.approx(1 / 2)
    assert distinct_n(["one two three"], n=2) == pytest.approx(1.0)
    # No text is long enough for a trigram.
    assert distinct_n(["hi there", "", "ok"], n=3) == 0.0


# --------------------------------------------------------------------------
# Bad input: errors name the argument
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: rouge_per_example(["a", "b"], ["a"]), ValueError, "references"),
        (lambda: rouge_per_example([], []), ValueError, "predictions"),
        (lambda: rouge_per_example(["a"], [None]), TypeError, "references"),
        (lambda: rouge_per_example("a text", ["a"]), TypeError, "predictions"),
        (lambda: rouge_per_example(["a"], ["a"], rouge_types=("rougeX",)), ValueError, "rouge_types"),
        (lambda: rouge_per_example(["a"], ["a"], rouge_types=()), ValueError, "rouge_types"),
        (lambda: bleu_per_example(["a"], ["a", "b"]), ValueError, "predictions"),
        (lambda: bleu_per_example([1], ["a"]), TypeError, "predictions"),
        (lambda: corpus_bleu([], []), ValueError, "predictions"),
        (lambda: score_summaries(["a"], []), ValueError, "references"),
        (lambda: bootstrap_ci([]), ValueError, "values"),
        (lambda: bootstrap_ci([0.1, float("nan")]), ValueError, "values"),
        (lambda: bootstrap_ci([0.1, 0.2], confidence=95), ValueError, "confidence"),
        (lambda: bootstrap_ci([0.1, 0.2], confidence=0.0), ValueError, "confidence"),
        (lambda: bootstrap_ci([0.1, 0.2], confidence=1.0), ValueError, "confidence"),
        (lambda: bootstrap_ci([0.1, 0.2], n_resamples=0), ValueError, "n_resamples"),
        (lambda: bootstrap_ci([0.1, 0.2], n_resamples=2.5), TypeError, "n_resamples"),
        (lambda: paired_difference([0.1, 0.2], [0.1]), ValueError, "scores_a"),
        (lambda: paired_difference([0.1], [0.1], confidence=-0.5), ValueError, "confidence"),
        (lambda: bootstrap_corpus_bleu(["a"], ["a"], n_resamples=0), ValueError, "n_resamples"),
        (lambda: bootstrap_corpus_bleu(["a"], ["a", "b"]), ValueError, "references"),
        (lambda: metric_table({}), ValueError, "systems"),
        (lambda: metric_table({"a": pd.DataFrame({"x": [1.0]})}, metrics=["y"]), ValueError, "metrics"),
        (lambda: metric_table({"a": pd.DataFrame({"x": [1.0]})}, confidence=2), ValueError, "confidence"),
        (lambda: comparison_table(pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": [1.0, 2.0]})), ValueError, "baseline"),
        (lambda: comparison_table(pd.DataFrame({"x": [1.0]}), [1.0]), TypeError, "candidate"),
        (lambda: format_table(pd.DataFrame({"system": ["a"]})), ValueError, "tidy"),
        (lambda: distinct_n([], n=2), ValueError, "texts"),
        (lambda: distinct_n(["a b"], n=0), ValueError, "n must"),
        (lambda: distinct_n(["a", 3]), TypeError, "texts"),
    ],
)
def test_bad_input_raises_with_argument_name(call, error, name):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert name in message
    assert "\n" not in message


# --------------------------------------------------------------------------
# ROUGE and BLEU counted by lab 08's own functions: hand-computed, and the libraries' numbers
# --------------------------------------------------------------------------


def rouge_tokens(text, use_stemmer=True):
    from rouge_score.tokenizers import DefaultTokenizer

    return DefaultTokenizer(use_stemmer=use_stemmer).tokenize(text)


def bleu_tokens(text):
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text.rstrip()).split()


def test_ngram_counts_hand_cases():
    assert ngram_counts(["the", "the", "the", "cat"], 1) == Counter({("the",): 3, ("cat",): 1})
    assert ngram_counts(["the", "cat", "the", "cat"], 2) == Counter({("the", "cat"): 2, ("cat", "the"): 1})
    assert ngram_counts(["a", "b", "c"], 3) == Counter({("a", "b", "c"): 1})
    assert ngram_counts(["a"], 2) == Counter() and ngram_counts([], 1) == Counter()


def test_precision_recall_f1_by_hand():
    assert precision_recall_f1(3, 4, 6) == pytest.approx((0.75, 0.5, 0.6))
    assert precision_recall_f1(1, 1, 3) == pytest.approx((1.0, 1 / 3, 0.5))
    assert precision_recall_f1(0, 0, 5) == (0.0, 0.0, 0.0)
    assert precision_recall_f1(0, 4, 0) == (0.0, 0.0, 0.0)


def test_rouge_n_clips_repeated_words_hand_computed():
    # "the" three times in the prediction, twice in the reference: 2 + 1 ("cat") = 3 matched unigrams.
    prediction, reference = ["the", "the", "the", "cat"], ["the", "cat", "on", "the", "mat"]
    assert rouge_n(prediction, reference, 1) == pytest.approx((3 / 4, 3 / 5, 2 / 3))
    # Bigrams: (the the) x2, (the cat) against (the cat) (cat on) (on the) (the mat): 1 of 3, 1 of 4.
    assert rouge_n(prediction, reference, 2) == pytest.approx((1 / 3, 1 / 4, 2 / 7))
    assert rouge_n(["a", "b"], ["c", "d"], 1) == (0.0, 0.0, 0.0)
    assert rouge_n([], ["c", "d"], 1) == (0.0, 0.0, 0.0)
    assert rouge_n(["a"], ["a", "b"], 2) == (0.0, 0.0, 0.0)  # a one-token prediction has no bigram


def test_lcs_hand_cases():
    assert lcs_table(["a", "b"], ["b", "a"]).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert lcs_table(["a", "b", "a"], ["a", "a"]).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 1], [0, 1, 2]]
    a = "the cat sat on the mat".split()
    b = "on the mat the cat sat".split()
    assert lcs_table(a, b)[-1, -1] == 3
    assert longest_common_subsequence(a, b) in (["the", "cat", "sat"], ["on", "the", "mat"])
    assert longest_common_subsequence("a b c d".split(), "a x c y d".split()) == ["a", "c", "d"]
    assert longest_common_subsequence([], ["a"]) == [] and lcs_table([], ["a"]).shape == (1, 2)
    # ROUGE-L: an LCS of 3 over a 5-token prediction and a 4-token reference.
    assert rouge_l("a x c y d".split(), "a b c d".split()) == pytest.approx((3 / 5, 3 / 4, 2 / 3))
    assert rouge_l([], ["a"]) == (0.0, 0.0, 0.0)


PAIRS = list(zip(PREDICTIONS_A + PREDICTIONS_B + ["", "Tim tim TIM, call!", "3.5 kg for £1,000"],
                 REFERENCES + REFERENCES + ["Tim will call.", "Tim will call Kim.", "It weighs 3.5 kg."]))


@pytest.mark.parametrize("use_stemmer", [True, False])
def test_rouge_n_and_rouge_l_equal_rouge_score(use_stemmer):
    predictions, references = zip(*PAIRS)
    library = rouge_per_example(predictions, references, rouge_types=("rouge1", "rouge2", "rougeL"),
                                use_stemmer=use_stemmer)
    for i, (prediction, reference) in enumerate(PAIRS):
        pred, ref = rouge_tokens(prediction, use_stemmer), rouge_tokens(reference, use_stemmer)
        counted = {"rouge1": rouge_n(pred, ref, 1)[2], "rouge2": rouge_n(pred, ref, 2)[2], "rougeL": rouge_l(pred, ref)[2]}
        assert counted == pytest.approx(library.iloc[i].to_dict(), abs=1e-12), (prediction, reference)


def test_brevity_penalty_hand_computed():
    assert brevity_penalty(6, 6) == 1.0 and brevity_penalty(7, 6) == 1.0
    assert brevity_penalty(3, 6) == pytest.approx(np.exp(-1))
    assert brevity_penalty(9, 10) == pytest.approx(np.exp(1 - 10 / 9))
    assert brevity_penalty(0, 5) == 0.0


def test_sentence_bleu_equals_sacrebleu_with_every_step():
    predictions, references = zip(*PAIRS)
    library = bleu_per_example(predictions, references)
    for i, (prediction, reference) in enumerate(PAIRS):
        counted = sentence_bleu(bleu_tokens(prediction), bleu_tokens(reference))
        result = metrics._SENTENCE_BLEU.sentence_score(prediction, [reference])
        assert counted["bleu"] == pytest.approx(library[i], abs=1e-9), (prediction, reference)
        assert counted["matched"] == list(result.counts) and counted["totals"] == list(result.totals)
        assert counted["brevity_penalty"] == pytest.approx(result.bp)
        padded = counted["precisions"] + [0.0] * (4 - len(counted["precisions"]))
        assert padded == pytest.approx(list(result.precisions))


def test_sentence_bleu_brevity_penalty_and_smoothing_hand_computed():
    # 3/3 unigrams, 2/2 bigrams, 1/1 trigram match; a 3-token prediction has no 4-gram, so
    # the effective order is 3. Prediction 3 tokens, reference 6: BP = exp(1 - 6/3) = exp(-1).
    result = sentence_bleu("the cat sat".split(), "the cat sat on a mat".split())
    assert result["precisions"] == pytest.approx([100.0, 100.0, 100.0])
    assert result["brevity_penalty"] == pytest.approx(np.exp(-1))
    assert result["bleu"] == pytest.approx(100 * np.exp(-1))
    # No bigram or trigram matches: "exp" smoothing credits 100 / (2 * 2), then 100 / (4 * 1).
    result = sentence_bleu("cat the mat".split(), "the cat sat on a mat".split())
    assert result["matched"] == [3, 0, 0, 0] and result["totals"] == [3, 2, 1, 0]
    assert result["precisions"] == pytest.approx([100.0, 25.0, 25.0])
    assert result["bleu"] == pytest.approx(np.exp(-1) * (100 * 25 * 25) ** (1 / 3))
    # Six tokens against five: no brevity penalty, and 4-grams count (2 of 3 match).
    result = sentence_bleu("a b c d e f".split(), "a b c d e".split())
    assert result["brevity_penalty"] == 1.0
    assert result["precisions"] == pytest.approx([500 / 6, 400 / 5, 300 / 4, 200 / 3])
    assert sentence_bleu(["dog"], ["the", "cat"])["bleu"] == 0.0
    assert sentence_bleu([], ["the", "cat"])["bleu"] == 0.0
