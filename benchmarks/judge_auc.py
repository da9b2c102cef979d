"""Which toxicity judge can be trusted: every candidate's ROC AUC on the project's labelled one-line summaries.

The set (data/toxicity_judge_set/) has two parts of 128 sentences, each 64 neutral and 64 with insults, threats or
dehumanising language: `development`, written first (the threat and dehumanisation rules were written with it in
view, and the embedding probe is fitted on it), and `heldout`, written after both were frozen. A judge is chosen on
the held-out part. Also measured: recall at P(toxic) > 0.5 per category and false alarms on the neutral ones, and,
as a check on text the project did not write by hand, the AUC of telling the hostile dialogues' neutral reference
summaries (0) from their quoting summaries (1, the insults repeated; the 12 dialogues where both are the same left
out), 264 summaries.

    .venv/bin/python benchmarks/judge_auc.py [--profile embedded] [--no-append]

Prints a table and appends it to benchmarks/RESULTS.md (not on --profile tiny unless --append).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import numpy as np

from _publish import add_append_arguments, publish
from labhelpers.datagen.hostile import hostile_data_dir
from labhelpers.judges import (JUDGE_AUC_GOAL, EmbeddingProbeScorer, judge_candidates, load_toxicity_judge_set,
                               roc_auc_interval)

CATEGORIES = ("insult", "threat", "dehumanising")
CHOSEN = "SmolLM2 embedding probe"  # what labhelpers.judges.toxicity_judge() gives


def hostile_summaries() -> tuple[list[str], list[int]]:
    """The hostile dialogues' reference (0) and quoting (1) summaries, where they differ, all splits."""
    texts, labels = [], []
    for split in ("train", "validation", "test"):
        with (hostile_data_dir() / f"{split}.jsonl").open(encoding="utf-8") as fh:
            for row in map(json.loads, fh):
                if row["quoting_summary"] != row["summary"]:
                    texts += [row["summary"], row["quoting_summary"]]
                    labels += [0, 1]
    return texts, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="embedded", choices=("embedded", "tiny"),
                        help="tiny: the probe on the tiny random model (a smoke test)")
    add_append_arguments(parser)
    args = parser.parse_args()

    dev, held = load_toxicity_judge_set("development"), load_toxicity_judge_set("heldout")
    hostile_texts, hostile_labels = hostile_summaries()
    started = time.perf_counter()
    candidates = judge_candidates(probe=args.profile != "tiny")
    if args.profile == "tiny":
        candidates["tiny random model probe"] = EmbeddingProbeScorer(model="tiny-llama", profile="tiny")
    setup = time.perf_counter() - started

    rows, chosen = [], None
    for name, scorer in candidates.items():
        t0 = time.perf_counter()
        p_dev = scorer.toxicity([r["text"] for r in dev])
        p_held = scorer.toxicity([r["text"] for r in held])
        p_hostile = scorer.toxicity(hostile_texts)
        seconds = time.perf_counter() - t0
        fitted = isinstance(scorer, EmbeddingProbeScorer) or any(
            isinstance(m, EmbeddingProbeScorer) for m in getattr(scorer, "scorers", ()))
        auc_dev = roc_auc_interval([r["label"] for r in dev], p_dev)
        auc_held = roc_auc_interval([r["label"] for r in held], p_held)
        auc_hostile = roc_auc_interval(hostile_labels, p_hostile)
        category = np.array([r["category"] for r in held])
        recall = [f"{np.mean(p_held[category == c] > 0.5):.0%}" for c in CATEGORIES]
        false_alarms = f"{np.mean(p_held[category == 'neutral'] > 0.5):.0%}"
        rows.append(f"| {name} | {auc_dev.mean:.3f} [{auc_dev.low:.3f}, {auc_dev.high:.3f}]"
                    f"{' (fitted on it)' if fitted else ''} | **{auc_held.mean:.3f}** "
                    f"[{auc_held.low:.3f}, {auc_held.high:.3f}] | {' / '.join(recall)} | {false_alarms} | "
                    f"{auc_hostile.mean:.3f} [{auc_hostile.low:.3f}, {auc_hostile.high:.3f}] | {seconds:.1f} |")
        if name == CHOSEN:
            chosen = auc_held

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    text = "\n".join([
        f"### Toxicity judge: AUC on the project's labelled summaries, {now}",
        "",
        "`benchmarks/judge_auc.py`: each candidate scores the judge set (`data/toxicity_judge_set/`, 2 x 128 one-line "
        "summaries written by hand, each part 64 neutral and 64 with insults, threats or dehumanising language; never "
        "used to train a reward) and the hostile dialogues' 132 reference and 132 quoting summaries. ROC AUC with a "
        "95% percentile-bootstrap interval (2000 resamples over sentences). The development part was written first; "
        "the rules were written with it in view and the probe is fitted on it; the held-out part was written after "
        "both were frozen, so the held-out column is the one that counts. Recall and false alarms at P(toxic) > 0.5 "
        f"on the held-out part. Seconds: scoring all 520 texts once; loading and fitting took {setup:.0f} s "
        f"(profile {args.profile}, 2 shared CPU threads).",
        "",
        "| judge | AUC, development | AUC, held-out | recall insult / threat / dehumanising | false alarms | "
        "AUC, hostile reference vs quoting | seconds |",
        "|---|---|---|---|---:|---|---:|",
        *rows,
        "",
        (f"The judge, `labhelpers.judges.toxicity_judge()`: the {CHOSEN}, held-out AUC {chosen} "
         f"({'at least' if chosen.mean >= JUDGE_AUC_GOAL else 'BELOW'} the goal of {JUDGE_AUC_GOAL})."
         if chosen else "The embedding probe was not measured (tiny profile)."),
    ])
    publish(text, args)


if __name__ == "__main__":
    main()
