"""Token ids for (prompt, answer) pairs: the prompt conditions, the answer carries the loss."""
from __future__ import annotations

import torch

IGNORE = -100  # label of the positions that carry no loss (prompt and padding)


def answer_text(answer: str) -> str:
    """The answer as it follows "Answer:" in the prompt: one leading space, no trailing newline."""
    return " " + answer.strip()


def encode_pair(tok, prompt: str, answer: str, eos: bool = True) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are IGNORE on the prompt, the token ids on the answer (and EOS).

    Prompt and answer are tokenized apart, so the answer's tokens are the same whatever prompt
    precedes them, and the prompt's last token never merges with the answer's first.
    """
    p = tok(prompt, add_special_tokens=False).input_ids
    a = tok(answer_text(answer), add_special_tokens=False).input_ids
    if eos and tok.eos_token_id is not None:
        a = a + [tok.eos_token_id]
    return p + a, [IGNORE] * len(p) + a


def collate(pairs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of encode_pair results: input_ids, attention_mask, labels, all (B, L)."""
    L = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), L), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), L), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), L), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
