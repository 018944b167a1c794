"""Two models' answers to the same questions, compared question by question.

One training run per arm says nothing about the spread from seed to seed; what it can say is
whether, on these test questions, one model's answers beat the other's by more than the choice
of questions explains. `compare` scores each question for both models and gives the mean
difference with a bootstrap confidence interval over the questions (scipy.stats.bootstrap,
percentile method: it stays defined when most differences are 0, as with F1 on short answers).

Per question: token F1 and ROUGE-L on the answerable questions (the ones `answer_quality`
averages), lexical support for faithfulness (only where both answers assert something, so that
the two means are over the same questions; `faithfulness()` averages each model over its own).
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from .faithfulness import lexical_support
from .qa_metrics import rouge_l, token_f1

METRICS = ("f1", "rouge_l", "faithfulness")


def per_question(answers: list[str], rows, metric: str) -> list[float | None]:
    """One score per row of `rows` (a split with answer, kind and passages): None where the metric
    does not apply (an unanswerable question for F1 / ROUGE-L, an answer asserting nothing)."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not allowed: choose from {', '.join(METRICS)}")
    if len(answers) != len(rows):
        raise ValueError(f"{len(answers)} answers for {len(rows)} questions: give one answer per question")
    if metric == "faithfulness":
        return [lexical_support(a, p) for a, p in zip(answers, rows["passages"])]
    score = token_f1 if metric == "f1" else rouge_l
    return [None if k == "unanswerable" else score(a, g) for a, g, k in zip(answers, rows["answer"], rows["kind"])]


def compare(a: list[str], b: list[str], rows, metrics=METRICS, confidence: float = 0.95,
            n_resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """Per metric: {"metric", "questions" (scored for both), "a", "b" (their means there),
    "difference" (b - a), "low", "high" (its confidence interval), "b_better", "a_better"
    (questions where one scores higher)}. Difference and interval are None with no question."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is not allowed: give a level in (0, 1), e.g. 0.95")
    out = []
    for metric in metrics:
        pairs = [(x, y) for x, y in zip(per_question(a, rows, metric), per_question(b, rows, metric))
                 if x is not None and y is not None]
        x, y = np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float)
        row = {"metric": metric, "questions": len(pairs), "a": None, "b": None, "difference": None,
               "low": None, "high": None, "b_better": int((y > x).sum()), "a_better": int((x > y).sum())}
        if pairs:
            d = y - x
            row.update(a=float(x.mean()), b=float(y.mean()), difference=float(d.mean()))
            if np.ptp(d) == 0:  # every question moved by the same amount: no resampling can change the mean
                row.update(low=float(d[0]), high=float(d[0]))
            else:
                ci = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                     method="percentile", rng=np.random.default_rng(seed)).confidence_interval
                row.update(low=float(ci.low), high=float(ci.high))
        out.append(row)
    return out
