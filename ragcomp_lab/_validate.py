"""Argument checks shared by the package: each names the bad value and what is allowed."""
from __future__ import annotations

import math
from numbers import Real

import torch

GRANULARITIES = ("per_tensor", "per_channel", "per_group")
MIN_BITS, MAX_BITS = 2, 8


def temperature(T) -> float:
    """T must be a finite real number > 0 (a 0-d tensor is accepted)."""
    if isinstance(T, torch.Tensor) and T.numel() == 1:
        T = T.item()
    if isinstance(T, bool) or not isinstance(T, Real) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"T={T!r} is not allowed: the temperature must be a finite number > 0")
    return float(T)


def alpha(a) -> float:
    """alpha weighs the hard loss: a real number in [0, 1]."""
    if isinstance(a, bool) or not isinstance(a, Real) or not (0.0 <= a <= 1.0):
        raise ValueError(f"alpha={a!r} is not allowed: alpha must be a number in [0, 1]")
    return float(a)


def bits(b) -> int:
    if isinstance(b, bool) or not isinstance(b, int) or not (MIN_BITS <= b <= MAX_BITS):
        raise ValueError(f"bits={b!r} is not supported: use an integer from {MIN_BITS} to {MAX_BITS}")
    return b


def granularity(g) -> str:
    if g not in GRANULARITIES:
        raise ValueError(f"granularity={g!r} is not supported: use one of {', '.join(GRANULARITIES)}")
    return g


def positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name}={v!r} is not allowed: {name} must be a positive integer")
    return v


def non_negative_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name}={v!r} is not allowed: {name} must be an integer >= 0")
    return v


def positive_real(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, Real) or not v > 0:
        raise ValueError(f"{name}={v!r} is not allowed: {name} must be a number > 0")
    return float(v)


def tensor(name: str, x, min_dim: int = 0) -> torch.Tensor:
    """A floating-point tensor with at least `min_dim` dimensions."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s), got shape {tuple(x.shape)}")
    return x


def same_logits(student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Teacher and student logits must share a vocabulary (last dim) and every other dim."""
    tensor("student_logits", student, 1)
    tensor("teacher_logits", teacher, 1)
    if student.shape[-1] != teacher.shape[-1]:
        raise ValueError(
            f"student and teacher vocabularies differ: student_logits has {student.shape[-1]} classes, "
            f"teacher_logits has {teacher.shape[-1]}; distillation needs the same vocabulary (tokenizer)"
        )
    if student.shape != teacher.shape:
        raise ValueError(
            f"student_logits shape {tuple(student.shape)} does not match teacher_logits shape "
            f"{tuple(teacher.shape)}"
        )


def mask_for(mask, logits: torch.Tensor) -> torch.Tensor | None:
    """A boolean mask over every dim of `logits` but the last (the positions that carry loss)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor of booleans, got {type(mask).__name__}")
    if mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal the logits shape without its last dim, "
            f"{tuple(logits.shape[:-1])}"
        )
    mask = mask.bool()
    if not mask.any():
        raise ValueError("mask selects no position: there is nothing to average the loss over")
    return mask


def rag_rows(name: str, rows, columns, empty: str) -> None:
    """`rows` must be a non-empty split of rl.data.rag_splits with `columns`; `empty` says what
    the rows are for, in the error an empty split raises."""
    missing = [c for c in columns if c not in getattr(rows, "column_names", ())]
    if missing:
        raise ValueError(f"{name} must be a split of rl.data.rag_splits with the columns {', '.join(columns)}; "
                         f"missing {missing}")
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: {empty}")
