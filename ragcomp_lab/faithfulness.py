"""Faithfulness to the retrieved context: is what an answer states written in the passages?

`lexical_support(answer, passages)` is the share of the answer's content words (normalised as
for EM/F1, stop words dropped) that occur among the passages' words. It is 1.0 when every
word the answer asserts is in the context, and None for a refusal or an answer with no content
word: those assert nothing to check.

Where it fails: a correct paraphrase ("the capital" for "the seat of government") scores below
1 though it is faithful; an answer copied from the wrong passage, or the right words in a wrong
relation, scores 1 though it is wrong. It measures support, not correctness: read it beside F1.
"""
from __future__ import annotations

from .qa_metrics import is_refusal, normalize_answer

STOP_WORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that the their they this "
    "to was were which who with".split())


def content_words(text: str) -> list[str]:
    return [w for w in normalize_answer(text).split() if w not in STOP_WORDS]


def lexical_support(answer: str, passages: list[str]) -> float | None:
    """Share of the answer's content words found in the passages (None: nothing asserted)."""
    if isinstance(passages, str):
        raise ValueError("passages must be a list of passage texts, not one string")
    words = content_words(answer)
    if is_refusal(answer) or not words:
        return None
    context = set(normalize_answer(" ".join(passages)).split())
    return sum(w in context for w in words) / len(words)


def faithfulness(answers: list[str], passages: list[list[str]], kinds: list[str] | None = None) -> dict[str, float]:
    """Over a set of answers: mean lexical support of those that assert something, the share of
    them with a word no passage holds (unsupported), and, given the question kinds, the share of
    unanswerable questions answered instead of refused (hallucinated)."""
    if len(answers) != len(passages) or not answers or (kinds is not None and len(kinds) != len(answers)):
        raise ValueError(f"need equal, non-zero numbers of answers, passage lists and kinds: got {len(answers)}, "
                         f"{len(passages)}, {'-' if kinds is None else len(kinds)}")
    scores = [s for s in map(lexical_support, answers, passages) if s is not None]
    out = {"faithfulness": sum(scores) / len(scores) if scores else None,  # None: no answer asserted anything
           "unsupported_rate": sum(s < 1 for s in scores) / len(scores) if scores else None,
           "asserting": len(scores) / len(answers)}
    if kinds is not None:
        unanswerable = [a for a, k in zip(answers, kinds) if k == "unanswerable"]
        if unanswerable:
            out["hallucination_rate"] = sum(not is_refusal(a) for a in unanswerable) / len(unanswerable)
    return out
