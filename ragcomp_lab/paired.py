"""Two models' answers to the same questions, compared question by question.

One training run per arm says nothing about the spread from seed to seed; what it can say is
whether, on these test questions, one model's answers beat the other's by more than the choice
of questions explains. `compare` scores each question for both models and gives the mean
difference with a bootstrap confidence interval over the questions (scipy.stats.bootstrap,
percentile method: it stays defined when most differences are 0, as with F1 on short answers).
`compare_seeds` does the same for arms trained with several seeds, paired by seed: each question
is scored by its mean over the seeds, and it counts the seeds on which each arm comes out ahead.
`verdict` says in words what one of their rows shows; `share` gives how much of one model's score
another keeps (a student's share of its teacher's F1), with its interval over the questions.

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
SEED_KEYS = ("seeds", "b_better_seeds")  # what compare_seeds adds to compare's rows


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
    out = compare_seeds([a], [b], rows, metrics, confidence, n_resamples, seed)
    return [{k: v for k, v in r.items() if k not in SEED_KEYS} for r in out]


def compare_seeds(a_runs: list[list[str]], b_runs: list[list[str]], rows, metrics=METRICS,
                  confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """`compare` over several seeds: a_runs[i] and b_runs[i] are the two arms' answers from seed i.
    Each question's score is its mean over the seeds where both arms are scored, so the interval
    (still over the questions) is for the seed-averaged models; "seeds" counts the pairs and
    "b_better_seeds" the seeds whose own mean difference is positive. One pair gives `compare`."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is not allowed: give a level in (0, 1), e.g. 0.95")
    if not a_runs or len(a_runs) != len(b_runs):
        raise ValueError(f"{len(a_runs)} runs of one arm and {len(b_runs)} of the other: give one answer list "
                         f"per seed for each arm, at least one, paired by seed")
    out = []
    for metric in metrics:
        x, y = (np.array([[np.nan if s is None else s for s in per_question(r, rows, metric)] for r in runs], float)
                for runs in (a_runs, b_runs))
        both = ~np.isnan(x) & ~np.isnan(y)  # (seeds, questions)
        kept = both.any(0)
        row = {"metric": metric, "questions": int(kept.sum()), "a": None, "b": None, "difference": None,
               "low": None, "high": None, "b_better": 0, "a_better": 0, "seeds": len(a_runs), "b_better_seeds": 0}
        if kept.any():
            n = both.sum(0)[kept]
            xq, yq = (np.where(both, v, 0.0).sum(0)[kept] / n for v in (x, y))  # over the seeds scoring both
            d = yq - xq
            per_seed = [(y[i] - x[i])[both[i]].mean() for i in range(len(a_runs)) if both[i].any()]
            row.update(a=float(xq.mean()), b=float(yq.mean()), difference=float(d.mean()),
                       b_better=int((d > 0).sum()), a_better=int((d < 0).sum()),
                       b_better_seeds=sum(int(m > 0) for m in per_seed))
            if np.ptp(d) == 0:  # every question moved by the same amount: no resampling can change the mean
                row.update(low=float(d[0]), high=float(d[0]))
            else:
                ci = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                     method="percentile", rng=np.random.default_rng(seed)).confidence_interval
                row.update(low=float(ci.low), high=float(ci.high))
        out.append(row)
    return out


def share(a: list[str], b: list[str], rows, metric: str = "f1", confidence: float = 0.95,
          n_resamples: int = 10_000, seed: int = 0) -> dict:
    """How much of a's score b keeps: {"metric", "questions", "a", "b" (their means over the
    questions scored for both), "share" (b / a), "low", "high"}: the interval resamples the
    questions, the same ones for both (the percentile method). Share and interval are None where
    a's mean is 0 or no question is scored for both."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is not allowed: give a level in (0, 1), e.g. 0.95")
    x, y = (np.array([np.nan if s is None else s for s in per_question(r, rows, metric)], float) for r in (a, b))
    both = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[both], y[both]
    out = {"metric": metric, "questions": int(both.sum()), "a": None, "b": None, "share": None, "low": None,
           "high": None}
    if not len(x):
        return out
    out.update(a=float(x.mean()), b=float(y.mean()))
    if x.mean() == 0:
        return out
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_resamples, len(x)))
    xs, ys = x[idx].mean(1), y[idx].mean(1)
    ratios = np.divide(ys, xs, out=np.full_like(ys, np.nan), where=xs > 0)
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    out.update(share=float(y.mean() / x.mean()), low=float(low), high=float(high))
    return out


def verdict(row: dict, a_name: str, b_name: str) -> str:
    """What one row of `compare` / `compare_seeds` shows, in words: b better where the whole interval
    of b - a is above 0, a better where it is below, and otherwise no difference these questions show."""
    if row["low"] is None:
        return "no question scored for both"
    if row["low"] > 0:
        return f"{b_name} better"
    if row["high"] < 0:
        return f"{a_name} better"
    return "no difference these questions can show"
