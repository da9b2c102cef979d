"""Honest scores for dialogue summaries: ROUGE, BLEU and their uncertainty.

A single number such as "ROUGE-L = 0.31" hides how much it would move on a
different sample of test dialogues.  This module therefore works per example:

* ``score_summaries`` gives one row of ROUGE/BLEU scores per example,
* ``bootstrap_ci`` turns a column of such scores into a mean with a bootstrap
  95% confidence interval (an ``Estimate``),
* ``paired_difference`` / ``comparison_table`` compare two systems on the
  *same* examples, which is far more sensitive than comparing two separate
  intervals,
* ``metric_table``, ``format_table`` and ``plot_intervals`` produce tidy and readable tables and plots.

Lab 08 writes the counting itself (ROUGE-N, the LCS behind ROUGE-L, BLEU) and checks it against
these libraries; the functions are exported from the notebook (``rouge_n``, ``rouge_l``, ``sentence_bleu``).

Everything runs offline: ROUGE comes from ``rouge_score`` and BLEU from
``sacrebleu`` directly (no ``evaluate.load``, which needs the network), and
sentences are split with a small regex instead of nltk's punkt model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sacrebleu.metrics import BLEU

__all__ = [
    "Estimate",
    "bleu_per_example",
    "bootstrap_ci",
    "bootstrap_corpus_bleu",
    "comparison_table",
    "corpus_bleu",
    "distinct_n",
    "format_table",
    "metric_table",
    "paired_difference",
    "plot_intervals",
    "rouge_per_example",
    "score_summaries",
]

DEFAULT_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# rouge_score understands rouge1 ... rouge9, rougeL and rougeLsum.
_VALID_ROUGE_TYPE = re.compile(r"rouge[1-9]|rougeL|rougeLsum")

# A sentence ends with . ! or ? followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# Sentence BLEU needs effective_order=True, otherwise a short sentence with no
# matching 4-gram scores 0.  Corpus BLEU uses sacrebleu's defaults.
_SENTENCE_BLEU = BLEU(effective_order=True)
_CORPUS_BLEU = BLEU()


# --------------------------------------------------------------------------
# Input checks (each raises with a one-line message naming the argument)
# --------------------------------------------------------------------------


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    """Return ``texts`` as a list after checking it is a non-empty list of str."""
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, not a single string; wrap it in a list")
    if not isinstance(texts, (Sequence, pd.Series, np.ndarray)):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if len(texts) == 0:
        raise ValueError(f"{name} is empty; pass at least one text")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            kind = type(text).__name__
            raise TypeError(f"{name}[{i}] is {kind}, expected str; convert every item to a string")
    return texts


def _check_pair(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    """Check predictions and references and that there is one reference per prediction."""
    predictions = _check_texts(predictions, "predictions")
    references = _check_texts(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references have different lengths ({len(predictions)} vs "
            f"{len(references)}); pass exactly one reference per prediction"
        )
    return predictions, references


def _check_confidence(confidence: float) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise TypeError(f"confidence must be a number such as 0.95, got {type(confidence).__name__}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence}")


def _check_n_resamples(n_resamples: int) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise TypeError(f"n_resamples must be an integer such as 2000, got {type(n_resamples).__name__}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1 (e.g. 2000), got {n_resamples}")


def _check_values(values: Sequence[float], name: str) -> np.ndarray:
    """Return ``values`` as a 1-D float array after checking it is non-empty and finite."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D sequence of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per example), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty; pass at least one score")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or fix them first")
    return array


def _check_rouge_types(rouge_types: Sequence[str]) -> list[str]:
    if isinstance(rouge_types, str):
        raise TypeError(f"rouge_types must be a list or tuple of names, e.g. ({rouge_types!r},)")
    rouge_types = list(rouge_types)
    if not rouge_types:
        raise ValueError("rouge_types is empty; pass names such as ('rouge1', 'rougeL')")
    for rouge_type in rouge_types:
        if not isinstance(rouge_type, str) or not _VALID_ROUGE_TYPE.fullmatch(rouge_type):
            raise ValueError(
                f"rouge_types contains unknown type {rouge_type!r}; use rouge1..rouge9, rougeL or rougeLsum"
            )
    return rouge_types


# --------------------------------------------------------------------------
# Per-example and corpus scores
# --------------------------------------------------------------------------


def _split_sentences(text: str) -> str:
    """Put each sentence on its own line, the format rougeLsum expects."""
    return "\n".join(_SENTENCE_END.split(text.strip()))


def rouge_per_example(
    predictions: Sequence[str],
    references: Sequence[str],
    rouge_types: Sequence[str] = DEFAULT_ROUGE_TYPES,
    use_stemmer: bool = True,
) -> pd.DataFrame:
    """ROUGE F1 (0 to 1) for every example: one row per example, one column per ROUGE type.

    rougeLsum works on sentences, so texts are split into one sentence per line first.
    """
    predictions, references = _check_pair(predictions, references)
    rouge_types = _check_rouge_types(rouge_types)
    from rouge_score import rouge_scorer  # imported here: it pulls in nltk and scipy (2 s)

    scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
    rows = []
    for prediction, reference in zip(predictions, references):
        # The newlines only matter to rougeLsum: the ROUGE tokenizer treats
        # them as ordinary spaces for the other types.  Note the argument order
        # of RougeScorer.score: (target, prediction).
        scores = scorer.score(_split_sentences(reference), _split_sentences(prediction))
        rows.append({rouge_type: float(scores[rouge_type].fmeasure) for rouge_type in rouge_types})
    return pd.DataFrame(rows, columns=rouge_types)


def bleu_per_example(predictions: Sequence[str], references: Sequence[str]) -> pd.Series:
    """Sentence BLEU (sacrebleu, 0 to 100, effective order) for every example, as a Series named "bleu"."""
    predictions, references = _check_pair(predictions, references)
    scores = [
        _SENTENCE_BLEU.sentence_score(prediction, [reference]).score
        for prediction, reference in zip(predictions, references)
    ]
    return pd.Series(scores, name="bleu", dtype=float)


def corpus_bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0 to 100): n-gram counts are pooled over all examples before scoring."""
    predictions, references = _check_pair(predictions, references)
    return float(_CORPUS_BLEU.corpus_score(predictions, [references]).score)


def score_summaries(predictions: Sequence[str], references: Sequence[str]) -> pd.DataFrame:
    """Per-example rouge1, rouge2, rougeL, rougeLsum (0 to 1) and sentence bleu (0 to 100) in one frame."""
    scores = rouge_per_example(predictions, references)
    scores["bleu"] = bleu_per_example(predictions, references).to_numpy()
    return scores


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams divided by all n-grams over ``texts`` (lowercased, split on whitespace).

    Higher means more varied text; 0.0 when no text has ``n`` tokens.
    """
    texts = _check_texts(texts, "texts")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be a positive integer such as 2, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    all_ngrams = []
    for text in texts:
        tokens = text.lower().split()
        # n-grams never cross from one text into the next.
        all_ngrams.extend(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    if not all_ngrams:
        return 0.0
    return len(set(all_ngrams)) / len(all_ngrams)


# --------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------


def _format_interval(mean: float, low: float, high: float) -> str:
    """'0.312 [0.290, 0.334]': 3 decimals below 10 in magnitude, else 1 decimal (e.g. BLEU)."""
    decimals = 3 if abs(mean) < 10 else 1
    return f"{mean:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a confidence interval [low, high] computed from n examples."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies above or below 0 (e.g. a difference is 'significant')."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        percent = f"{round(self.confidence * 100, 6):g}"
        return f"{_format_interval(self.mean, self.low, self.high)} ({percent}% CI, n={self.n})"


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` part of the bootstrap distribution, e.g. 2.5th to 97.5th percentile."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def _resample_indices(n: int, n_resamples: int, seed: int | None) -> np.ndarray:
    """An (n_resamples, n) array: each row picks n example indices with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n))


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
    statistic: Callable[[np.ndarray], float] = np.mean,
) -> Estimate:
    """Statistic of ``values`` with a percentile-bootstrap confidence interval.

    The same seed always gives the same interval.  With a single value, low = high = mean.
    """
    values = _check_values(values, "values")
    _check_confidence(confidence)
    _check_n_resamples(n_resamples)
    point = float(statistic(values))
    if values.size == 1:
        return Estimate(point, point, point, 1, confidence)

    resamples = values[_resample_indices(values.size, n_resamples, seed)]
    if statistic is np.mean:
        replicates = resamples.mean(axis=1)  # all resamples at once
    else:
        replicates = np.array([statistic(sample) for sample in resamples])
    low, high = _percentile_interval(replicates, confidence)
    return Estimate(point, low, high, int(values.size), confidence)


def paired_difference(
    scores_a: Sequence[float],
    scores_b: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> Estimate:
    """Mean of (b - a) over the same examples, with a paired bootstrap interval.

    Positive means b scores higher.  Both systems are resampled on the same example indices.
    """
    scores_a = _check_values(scores_a, "scores_a")
    scores_b = _check_values(scores_b, "scores_b")
    if scores_a.size != scores_b.size:
        raise ValueError(
            f"scores_a and scores_b have different lengths ({scores_a.size} vs {scores_b.size}); "
            "score both systems on the same examples"
        )
    # Resampling the example indices once and applying them to both systems
    # gives mean(b[idx]) - mean(a[idx]) = mean((b - a)[idx]), so the paired
    # bootstrap is simply the bootstrap of the per-example differences.
    # Example difficulty cancels out in b - a, which is what makes it tight.
    return bootstrap_ci(scores_b - scores_a, confidence, n_resamples, seed)


def _bleu_statistics(predictions: list[str], references: list[str]) -> np.ndarray:
    """BLEU's counts per example: (n, 10) array of [sys_len, ref_len, 4 matches, 4 totals]."""
    rows = []
    for prediction, reference in zip(predictions, references):
        result = _SENTENCE_BLEU.sentence_score(prediction, [reference])
        rows.append([result.sys_len, result.ref_len, *result.counts, *result.totals])
    return np.array(rows, dtype=np.int64)


def _bleu_from_statistics(summed: np.ndarray) -> float:
    """Corpus BLEU from the counts summed over examples (what sacrebleu's corpus_score does)."""
    summed = summed.tolist()
    return float(
        BLEU.compute_bleu(
            correct=summed[2:6],
            total=summed[6:10],
            sys_len=summed[0],
            ref_len=summed[1],
            smooth_method=_CORPUS_BLEU.smooth_method,
        ).score
    )


def bootstrap_corpus_bleu(
    predictions: Sequence[str],
    references: Sequence[str],
    confidence: float = 0.95,
    n_resamples: int = 500,
    seed: int | None = 0,
) -> Estimate:
    """Corpus BLEU (0 to 100) with a bootstrap interval from resampling examples.

    ``mean`` holds the corpus BLEU of the full data (not an average of sentence scores).
    """
    predictions, references = _check_pair(predictions, references)
    _check_confidence(confidence)
    _check_n_resamples(n_resamples)
    point = corpus_bleu(predictions, references)
    n = len(predictions)
    if n == 1:
        return Estimate(point, point, point, 1, confidence)

    # Corpus BLEU only depends on n-gram counts summed over the examples, so we
    # count once per example and, for each resample, add up the chosen rows.
    statistics = _bleu_statistics(predictions, references)
    replicates = [
        _bleu_from_statistics(statistics[indices].sum(axis=0))
        for indices in _resample_indices(n, n_resamples, seed)
    ]
    low, high = _percentile_interval(np.array(replicates), confidence)
    return Estimate(point, low, high, n, confidence)


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _shared_numeric_columns(frames: Sequence[pd.DataFrame]) -> list[str]:
    """Numeric columns present in every frame, in the order of the first frame."""
    columns = list(frames[0].select_dtypes("number").columns)
    for frame in frames[1:]:
        numeric = set(frame.select_dtypes("number").columns)
        columns = [column for column in columns if column in numeric]
    return columns


def _choose_metrics(frames: Sequence[pd.DataFrame], metrics: Sequence[str] | None) -> list[str]:
    """The metrics to report: the given ones (checked) or every shared numeric column."""
    if metrics is None:
        metrics = _shared_numeric_columns(frames)
        if not metrics:
            raise ValueError("metrics: the score frames share no numeric column; pass frames from score_summaries")
        return metrics
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a list of column names, e.g. [{metrics!r}]")
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty; pass column names or None for all shared numeric columns")
    for metric in metrics:
        for frame in frames:
            if metric not in frame.columns:
                raise ValueError(f"metrics contains {metric!r}, which is not a column of every score frame")
    return metrics


def _check_frame(frame: pd.DataFrame, name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame of per-example scores, got {type(frame).__name__}")
    if len(frame) == 0:
        raise ValueError(f"{name} has no rows; score at least one example")


def metric_table(
    systems: Mapping[str, pd.DataFrame],
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Tidy table of mean and bootstrap CI per system and metric.

    Columns: system, metric, mean, ci_low, ci_high, n.  ``systems`` maps a name to per-example scores.
    """
    if not isinstance(systems, Mapping):
        raise TypeError("systems must be a dict mapping a system name to its per-example score DataFrame")
    if not systems:
        raise ValueError("systems is empty; pass at least one {name: score DataFrame}")
    for name, frame in systems.items():
        _check_frame(frame, f"systems[{name!r}]")
    metrics = _choose_metrics(list(systems.values()), metrics)

    rows = []
    for name, frame in systems.items():
        for metric in metrics:
            estimate = bootstrap_ci(frame[metric], confidence, n_resamples, seed)
            rows.append(
                {
                    "system": name,
                    "metric": metric,
                    "mean": estimate.mean,
                    "ci_low": estimate.low,
                    "ci_high": estimate.high,
                    "n": estimate.n,
                }
            )
    return pd.DataFrame(rows, columns=["system", "metric", "mean", "ci_low", "ci_high", "n"])


def comparison_table(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Paired difference candidate - baseline per metric, scored on the same examples (same row order).

    Columns: metric, baseline, candidate, difference, ci_low, ci_high, excludes_zero, n.
    """
    _check_frame(baseline, "baseline")
    _check_frame(candidate, "candidate")
    if len(baseline) != len(candidate):
        raise ValueError(
            f"baseline and candidate have different lengths ({len(baseline)} vs {len(candidate)}); "
            "score both systems on the same examples"
        )
    metrics = _choose_metrics([baseline, candidate], metrics)

    rows = []
    for metric in metrics:
        difference = paired_difference(baseline[metric], candidate[metric], confidence, n_resamples, seed)
        rows.append(
            {
                "metric": metric,
                "baseline": float(baseline[metric].mean()),
                "candidate": float(candidate[metric].mean()),
                "difference": difference.mean,
                "ci_low": difference.low,
                "ci_high": difference.high,
                "excludes_zero": difference.excludes_zero,
                "n": difference.n,
            }
        )
    columns = ["metric", "baseline", "candidate", "difference", "ci_low", "ci_high", "excludes_zero", "n"]
    return pd.DataFrame(rows, columns=columns)


def format_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """Wide, readable version of a metric_table.

    One row per system, one column per metric, cells like "0.312 [0.290, 0.334]".
    """
    if not isinstance(tidy, pd.DataFrame):
        raise TypeError(f"tidy must be a DataFrame from metric_table, got {type(tidy).__name__}")
    missing = [c for c in ("system", "metric", "mean", "ci_low", "ci_high") if c not in tidy.columns]
    if missing:
        raise ValueError(f"tidy is missing columns {missing}; pass the output of metric_table")

    cells = [
        _format_interval(row.mean, row.ci_low, row.ci_high)
        for row in tidy.itertuples(index=False)
    ]
    wide = tidy.assign(cell=cells).pivot(index="system", columns="metric", values="cell")
    # pivot sorts alphabetically; keep the order in which systems and metrics were given.
    wide = wide.reindex(index=pd.unique(tidy["system"]), columns=pd.unique(tidy["metric"]))
    wide.columns.name = None
    return wide


def plot_intervals(tidy: pd.DataFrame, metric: str, ax=None, title: str | None = None):
    """Bar chart of one metric per system with its confidence interval as error bars."""
    import matplotlib.pyplot as plt

    if not isinstance(tidy, pd.DataFrame) or "metric" not in tidy.columns:
        raise TypeError("tidy must be a DataFrame from metric_table")
    rows = tidy[tidy["metric"] == metric]
    if rows.empty:
        raise ValueError(f"metric={metric!r} is not in the table; it has {sorted(pd.unique(tidy['metric']))}")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 * len(rows) + 2.5, 3.2))
    errors = [rows["mean"] - rows["ci_low"], rows["ci_high"] - rows["mean"]]
    ax.bar(rows["system"], rows["mean"], yerr=errors, capsize=4, color="#4c72b0", alpha=0.85)
    confidence = "95%" if "n" not in rows else f"95% CI, n={int(rows['n'].iloc[0])}"
    ax.set_ylabel(f"{metric} ({confidence})")
    ax.set_title(title or f"{metric} by system")
    ax.tick_params(axis="x", rotation=20)
    ax.grid(axis="y", alpha=0.3)
    return ax
