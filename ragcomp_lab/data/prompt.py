"""The generator's prompt: an instruction, the retrieved passages numbered [1], [2], ..., the question.

Kept in one small function so that its wording can be tuned by measuring the teacher.
"""
from __future__ import annotations

# the gold answer of every unanswerable question, and what the instruction asks the model to reply
REFUSAL = "The context does not say."
INSTRUCTION = (
    "Answer the question using only the context. "
    f"If the context does not contain the answer, reply: {REFUSAL}"
)


def build_prompt(query: str, passages) -> str:
    """The plain-text prompt for `query` answered from `passages` (a list of strings, best first)."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query={query!r} is not allowed: the query must be a non-empty string")
    if not isinstance(passages, (list, tuple)) or not all(isinstance(p, str) for p in passages):
        raise ValueError(f"passages={passages!r} is not allowed: passages must be a list of strings")
    context = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
    return f"{INSTRUCTION}\n\nContext:\n{context}\n\nQuestion: {query}\nAnswer:"
