"""Toxicity scorers behind one interface: texts in, P(toxic) and a reward (higher = less toxic) out, batched.

Three scorers, one call (`scorer.score(texts)` -> ToxicityScores):

- `HFToxicityScorer`: a Hugging Face sequence classifier through the transformers pipeline, as the
  course did with facebook/roberta-hate-speech-dynabench-r4-target: reward = the `nothate` logit,
  P(toxic) = 1 - softmax(logits)[nothate]. Needs the hub (or a local folder with the same layout).
- `ProfanityCheckScorer`: alt-profanity-check (TF-IDF + calibrated linear SVMs, ships in its wheel,
  offline, ~11 ms per 1000 texts): P(toxic) is its probability, reward = its log-odds of *not*
  offensive, clipped to [-clip, clip] (the calibrated probabilities saturate at 0 and 1).
- `SafeTypeScorer`: safetype's rule engine (word lists and patterns for profanity, hate, harassment),
  offline. It sees a few swear words and little else (ROC AUC 0.52 on the project's held-out judge
  sentences), so the labs judge with `labhelpers.judges.toxicity_judge()` instead; it stays as one of the
  candidates benchmarks/judge_auc.py measures.

`reward_scorer(profile)` gives the classifier a profile uses as a reward. Nothing loads at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ['NOT_HATE_LABEL', 'PROFANITY_CHECK_PIP', 'SAFETYPE_PIP', 'EPS', 'ToxicityScores', 'not_toxic_log_odds',
           'ToxicityScorer', 'ProfanityCheckScorer', 'SafeTypeScorer', 'HFToxicityScorer', 'reward_scorer']

NOT_HATE_LABEL = "nothate"
PROFANITY_CHECK_PIP = "pip install alt-profanity-check==1.9.1"
SAFETYPE_PIP = "pip install safetype==1.14.0"
EPS = 1e-6  # probabilities are kept in [EPS, 1 - EPS] before taking log-odds


@dataclass(frozen=True)
class ToxicityScores:
    """Per-text scores: `toxicity` = P(toxic) in [0, 1], `reward` = higher for less toxic text."""

    toxicity: np.ndarray
    reward: np.ndarray

    def __len__(self) -> int:
        return len(self.toxicity)


def not_toxic_log_odds(p_toxic, clip: float = 5.0) -> np.ndarray:
    """Reward from a probability: log((1 - p) / p), clipped to [-clip, clip]; p is kept in [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p_toxic, dtype=np.float64), EPS, 1 - EPS)
    return np.clip(np.log1p(-p) - np.log(p), -clip, clip)


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings; wrap a single text in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is a {type(texts[bad[0]]).__name__}, not a string")
    return texts


def _check_clip(clip) -> float:
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0:
        raise ValueError(f"clip={clip!r} must be a positive number (rewards are clipped to [-clip, clip])")
    return float(clip)


class ToxicityScorer:
    """The interface: `score(texts)` gives both numbers; `toxicity(texts)` and `reward(texts)` one each."""

    name = "toxicity scorer"

    def _score(self, texts: list[str], batch_size: int) -> ToxicityScores:
        raise NotImplementedError

    def score(self, texts: Sequence[str], batch_size: int = 64) -> ToxicityScores:
        """P(toxic) and reward for each text, in order, scored in batches of `batch_size`."""
        texts = _check_texts(texts)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        if not texts:
            return ToxicityScores(np.zeros(0), np.zeros(0))
        return self._score(texts, batch_size)

    def toxicity(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """P(toxic) for each text."""
        return self.score(texts, batch_size).toxicity

    def reward(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The reward for each text: higher means less toxic."""
        return self.score(texts, batch_size).reward

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class ProfanityCheckScorer(ToxicityScorer):
    """alt-profanity-check, offline: reward = clipped log-odds of not offensive (like a `nothate` logit)."""

    name = "alt-profanity-check"

    def __init__(self, clip: float = 5.0):
        self.clip = _check_clip(clip)
        try:
            from profanity_check import predict_prob
        except ImportError:
            raise ImportError(f"the offline reward needs alt-profanity-check; {PROFANITY_CHECK_PIP}") from None
        self._predict_prob = predict_prob

    def _score(self, texts: list[str], batch_size: int) -> ToxicityScores:
        p = np.concatenate([np.asarray(self._predict_prob(texts[i:i + batch_size]), dtype=np.float64)
                            for i in range(0, len(texts), batch_size)])
        return ToxicityScores(p, not_toxic_log_odds(p, self.clip))


class SafeTypeScorer(ToxicityScorer):
    """safetype's rules (profanity, hate, harassment, sexual), offline: independent of any trained classifier.

    Each rule that fires has a confidence c; P(toxic) = 1 - prod(1 - c) over the rules that fire (0 when
    none does), and reward = its clipped log-odds of not toxic, as for ProfanityCheckScorer.
    """

    name = "safetype rules"
    CATEGORIES = ("profanity", "hate", "harassment", "sexual")

    def __init__(self, clip: float = 5.0):
        self.clip = _check_clip(clip)
        try:
            from safetype import create_moderation_engine
        except ImportError:
            raise ImportError(f"the evaluation scorer needs safetype; {SAFETYPE_PIP}") from None
        self._engine = create_moderation_engine(mode="mask", languages=["en"])

    def _p_toxic(self, text: str) -> float:
        clean = 1.0
        for match in self._engine.moderate(text).matches:
            if match.category in self.CATEGORIES:
                clean *= 1.0 - float(match.confidence)
        return 1.0 - clean

    def _score(self, texts: list[str], batch_size: int) -> ToxicityScores:
        p = np.array([self._p_toxic(t) for t in texts], dtype=np.float64)
        return ToxicityScores(p, not_toxic_log_odds(p, self.clip))


class HFToxicityScorer(ToxicityScorer):
    """A Hugging Face hate-speech classifier via the text-classification pipeline; reward = the `nothate` logit.

    `model` is a hub id (e.g. facebook/roberta-hate-speech-dynabench-r4-target) or a local folder;
    weights load from safetensors only. P(toxic) = 1 - softmax(logits)[not_hate_label].
    """

    def __init__(self, model: str | os.PathLike, *, not_hate_label: str = NOT_HATE_LABEL, device=None,
                 max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

        from .device import pick_device
        from .models import ModelUnavailableError, hub_files_only

        name = os.fspath(model)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"model={model!r} must be a hub id or a local folder of a sequence classifier")
        try:
            offline = hub_files_only(name)
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False, local_files_only=offline)
            classifier = AutoModelForSequenceClassification.from_pretrained(name, use_safetensors=True,
                                                                            trust_remote_code=False,
                                                                            local_files_only=offline)
        except OSError as err:
            local = os.path.isdir(name) or name.startswith((".", "/", "~"))
            what = f"folder {name}" if local else f"{name} (not cached, and the Hugging Face Hub cannot be reached)"
            raise ModelUnavailableError(f"cannot load the reward model {what} ({type(err).__name__}); offline, use "
                                        f"ProfanityCheckScorer (profile 'embedded' or 'tiny')") from None
        labels = {str(v): int(k) for k, v in classifier.config.id2label.items()}
        if not_hate_label not in labels:
            raise ValueError(f"not_hate_label={not_hate_label!r} is not a label of {name}; its labels: "
                             f"{sorted(labels)}")
        self.name = name
        self.not_hate_label = not_hate_label
        self.max_length = max_length
        device = pick_device() if device is None else device
        self.pipe = pipeline("text-classification", model=classifier.eval(), tokenizer=tokenizer, device=device)

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, float]]:
        """Raw logits per text, {label: logit}, as the course read them (top_k=None, function_to_apply='none')."""
        texts = _check_texts(texts)
        if not texts:
            return []
        out = self.pipe(texts, top_k=None, function_to_apply="none", batch_size=batch_size, truncation=True,
                        max_length=self.max_length)
        return [{d["label"]: float(d["score"]) for d in row} for row in out]

    def _score(self, texts: list[str], batch_size: int) -> ToxicityScores:
        rows = self.logits(texts, batch_size)
        reward = np.array([row[self.not_hate_label] for row in rows], dtype=np.float64)
        p_toxic = []
        for row in rows:
            logits = np.array(list(row.values()), dtype=np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            p_toxic.append(1.0 - probs[list(row).index(self.not_hate_label)])
        return ToxicityScores(np.array(p_toxic), reward)


def reward_scorer(profile=None, **kwargs) -> ToxicityScorer:
    """The scorer a profile trains against: alt-profanity-check offline, else the profile's hub classifier."""
    from .profiles import get_profile

    prof = get_profile(profile)
    if prof.reward == "offline":
        return ProfanityCheckScorer(**kwargs)
    return HFToxicityScorer(prof.reward, **kwargs)

