"""Distillation losses: response-based (soft + hard), feature-based and relation-based.

Shapes: logits are (..., V) -- (N, V) for classes, (B, L, V) for next tokens -- and the
leading dims are the "positions" a loss is averaged over.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import _validate
from .softmax import log_softmax_t


class LossParts(NamedTuple):
    """The three numbers of L_total = alpha * L_student + (1 - alpha) * L_KD."""

    total: torch.Tensor
    hard: torch.Tensor  # L_student: cross-entropy at T = 1 against the labels
    soft: torch.Tensor  # L_KD: KL(teacher_T || student_T) * T^2


def kd_kl(student_logits, teacher_logits, T: float = 1.0, mask=None) -> torch.Tensor:
    """KL(softmax(z_t/T) || softmax(z_s/T)) * T^2, averaged over the (unmasked) positions.

    The T^2 factor keeps the soft loss's gradient, T * (p_s - p_t) per logit, on the same scale
    as the hard loss's whatever T is: without it the gradient shrinks as 1/T^2.
    """
    T = _validate.temperature(T)
    _validate.same_logits(student_logits, teacher_logits)
    mask = _validate.mask_for(mask, student_logits)
    log_p_s = log_softmax_t(student_logits, T)
    log_p_t = log_softmax_t(teacher_logits, T)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1)  # (...,)
    kl = kl[mask] if mask is not None else kl
    return kl.mean() * T**2


def distillation_loss(student_logits, teacher_logits, labels, T: float = 2.0, alpha: float = 0.5,
                      ignore_index: int = -100) -> LossParts:
    """total = alpha * hard + (1 - alpha) * soft, over the positions whose label != ignore_index.

    `labels` has the logits' shape without the last dim and is already aligned: the logits at a
    position predict the label at that position (shift next-token labels before calling).
    """
    T, alpha = _validate.temperature(T), _validate.alpha(alpha)
    _validate.same_logits(student_logits, teacher_logits)
    if not isinstance(labels, torch.Tensor) or labels.shape != student_logits.shape[:-1]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels shape {shape} must equal the logits shape without its last dim, "
                         f"{tuple(student_logits.shape[:-1])}")
    if labels.is_floating_point():
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    V = student_logits.shape[-1]
    keep = labels != ignore_index
    bad = labels[keep & ((labels < 0) | (labels >= V))]
    if bad.numel():
        raise ValueError(f"label {bad[0].item()} is out of range: labels must lie in [0, {V - 1}] "
                         f"or equal ignore_index={ignore_index}")
    keep = _validate.mask_for(keep, student_logits)
    hard = F.cross_entropy(student_logits[keep], labels[keep])
    soft = kd_kl(student_logits, teacher_logits, T, mask=keep)
    return LossParts(alpha * hard + (1 - alpha) * soft, hard, soft)


def feature_projection(student_dim: int, teacher_dim: int) -> torch.nn.Linear:
    """The learned map from the student's hidden width to the teacher's, trained with the student."""
    _validate.positive_int("student_dim", student_dim)
    _validate.positive_int("teacher_dim", teacher_dim)
    return torch.nn.Linear(student_dim, teacher_dim, bias=False)


def feature_loss(student_hidden, teacher_hidden, proj=None, kind: str = "mse", mask=None) -> torch.Tensor:
    """Match intermediate hidden states (..., D): MSE, or 1 - cosine similarity, per position.

    When the widths differ, `proj` (e.g. `feature_projection(d_s, d_t)`) maps the student's
    hidden states to the teacher's width first.
    """
    _validate.tensor("student_hidden", student_hidden, 1)
    _validate.tensor("teacher_hidden", teacher_hidden, 1)
    if kind not in ("mse", "cosine"):
        raise ValueError(f"kind={kind!r} is not supported: use 'mse' or 'cosine'")
    if proj is not None:
        student_hidden = proj(student_hidden)
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(
            f"hidden widths differ (student {student_hidden.shape[-1]}, teacher {teacher_hidden.shape[-1]}): "
            f"pass proj=feature_projection({student_hidden.shape[-1]}, {teacher_hidden.shape[-1]})")
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student_hidden shape {tuple(student_hidden.shape)} does not match "
                         f"teacher_hidden shape {tuple(teacher_hidden.shape)}")
    mask = _validate.mask_for(mask, student_hidden)
    if kind == "mse":
        per_pos = (student_hidden - teacher_hidden).pow(2).mean(-1)
    else:
        per_pos = 1 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)
    return (per_pos[mask] if mask is not None else per_pos).mean()


def token_similarity(hidden: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of positions: (B, L, D) -> (B, L, L)."""
    h = F.normalize(hidden, dim=-1)
    return h @ h.transpose(-1, -2)


def relation_loss(student_hidden, teacher_hidden, mask=None) -> torch.Tensor:
    """Match the token-to-token similarity matrices of two layers (B, L, D_s) and (B, L, D_t).

    Each model is compared with itself first, so the widths may differ and no projection is
    needed; `mask` (B, L) leaves out padding positions, as rows and as columns.
    """
    _validate.tensor("student_hidden", student_hidden, 2)
    _validate.tensor("teacher_hidden", teacher_hidden, 2)
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(f"student_hidden {tuple(student_hidden.shape)} and teacher_hidden "
                         f"{tuple(teacher_hidden.shape)} must agree on every dim but the width")
    mask = _validate.mask_for(mask, student_hidden)
    diff = (token_similarity(student_hidden) - token_similarity(teacher_hidden)).pow(2)  # (B, L, L)
    if mask is None:
        return diff.mean()
    pairs = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    return diff[pairs].mean()
