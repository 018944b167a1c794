"""Answer metrics of extractive QA (SQuAD-style): exact match, token F1, ROUGE-L, and refusals,
overall (`answer_quality`) and per question kind (`by_kind`).

Answers are compared after normalisation: lower case, punctuation and articles removed,
whitespace collapsed. A refusal is an answer that says the context does not hold the answer.
"""
from __future__ import annotations

import functools
import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_REFUSAL = re.compile(r"(does not|doesn't|do not|did not|cannot|can't|not) (say|state|mention|contain|provide|specify)"
                      r"|no (information|answer|mention)|not (given|stated|mentioned|specified|provided|known)|unknown",
                      re.IGNORECASE)


def normalize_answer(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall between the normalised answers."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F-measure (longest common subsequence) by Google's rouge-score, without stemming."""
    return _rouge().score(gold, prediction)["rougeL"].fmeasure


@functools.lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def is_refusal(prediction: str) -> bool:
    """Does the answer decline (e.g. "The context does not say.") rather than state something?"""
    return bool(_REFUSAL.search(prediction))


def _check_lengths(predictions, golds, kinds) -> None:
    if not (len(predictions) == len(golds) == len(kinds)) or not predictions:
        raise ValueError(f"need equal, non-zero numbers of predictions, golds and kinds: got "
                         f"{len(predictions)}, {len(golds)}, {len(kinds)}")


def answer_quality(predictions: list[str], golds: list[str], kinds: list[str]) -> dict[str, float]:
    """EM and F1 on the answerable questions (overall and per kind), the refusal rate on the
    unanswerable ones, and how often an answerable question was wrongly refused."""
    _check_lengths(predictions, golds, kinds)
    out: dict[str, float] = {}
    answerable = [(p, g, k) for p, g, k in zip(predictions, golds, kinds) if k != "unanswerable"]
    for name, rows in [("answerable", answerable)] + [
            (k, [r for r in answerable if r[2] == k]) for k in sorted({k for *_, k in answerable})]:
        if rows:
            out[f"em_{name}"] = sum(exact_match(p, g) for p, g, _ in rows) / len(rows)
            out[f"f1_{name}"] = sum(token_f1(p, g) for p, g, _ in rows) / len(rows)
            out[f"rouge_l_{name}"] = sum(rouge_l(p, g) for p, g, _ in rows) / len(rows)
    if answerable:
        out["false_refusal_rate"] = sum(is_refusal(p) for p, _, _ in answerable) / len(answerable)
    unanswerable = [p for p, k in zip(predictions, kinds) if k == "unanswerable"]
    if unanswerable:
        out["refusal_rate_unanswerable"] = sum(map(is_refusal, unanswerable)) / len(unanswerable)
    return out


def by_kind(predictions: list[str], golds: list[str], kinds: list[str]) -> dict[str, dict]:
    """Per kind present, sorted by name: {"n", "f1", "em", "refusal_rate", "hallucination",
    "false_refusal"} over that kind's rows. An "unanswerable" row is right when refused, so its
    F1, EM (scores against a gold text) and false refusals are None and its hallucination is the
    share answered; every other kind ("user" too) is answerable, its hallucination None."""
    _check_lengths(predictions, golds, kinds)
    out = {}
    for kind in sorted(set(kinds)):
        rows = [(p, g) for p, g, k in zip(predictions, golds, kinds) if k == kind]
        n = len(rows)
        refused = sum(is_refusal(p) for p, _ in rows)  # a count: (n - refused) / n is exact where 1 - rate is not
        answerable = kind != "unanswerable"
        out[kind] = {"n": n,
                     "f1": sum(token_f1(p, g) for p, g in rows) / n if answerable else None,
                     "em": sum(exact_match(p, g) for p, g in rows) / n if answerable else None,
                     "refusal_rate": refused / n,
                     "hallucination": None if answerable else (n - refused) / n,
                     "false_refusal": refused / n if answerable else None}
    return out
