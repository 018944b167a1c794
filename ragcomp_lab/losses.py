"""Distillation losses: response-based (soft + hard), feature-based and relation-based.

Shapes: logits are (..., V) -- (N, V) for classes, (B, L, V) for next tokens -- and the
leading dims are the "positions" a loss is averaged over.
"""
from __future__ import annotations

import math
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


def topk_kd_kl(student_logits, teacher_ids, teacher_logprobs, T: float = 1.0, mask=None) -> torch.Tensor:
    """kd_kl from a top-k cache: the KL over the teacher's k most likely tokens plus one "rest"
    bucket holding everything else, x T^2, averaged over the (unmasked) positions.

    `teacher_logprobs` (..., k) are the teacher's log-probabilities at T = 1 for `teacher_ids`.
    At T the top-k probabilities follow exactly, p_T(i) ~ p(i)^(1/T); the rest bucket's
    tempered mass depends on the tail the cache dropped, taken as uniform over the V - k other
    tokens: (V - k) * (r / (V - k))^(1/T) for a tail mass r. With k = V this is kd_kl exactly; at
    T = 1 it is the KL between the two distributions with their tails merged, never above kd_kl.
    """
    T = _validate.temperature(T)
    if not isinstance(student_logits, torch.Tensor) or not isinstance(teacher_logprobs, torch.Tensor) \
            or not isinstance(teacher_ids, torch.Tensor):
        raise ValueError("student_logits, teacher_ids and teacher_logprobs must be tensors")
    V, k = student_logits.shape[-1], teacher_ids.shape[-1]
    if teacher_ids.shape != teacher_logprobs.shape or teacher_ids.shape[:-1] != student_logits.shape[:-1] or k > V:
        raise ValueError(f"top-k shapes {tuple(teacher_ids.shape)} (ids), {tuple(teacher_logprobs.shape)} (log-probs) "
                         f"must be equal, with the logits' leading dims {tuple(student_logits.shape[:-1])} and k <= {V}")
    mask = _validate.mask_for(mask, student_logits)
    ids = teacher_ids.long()
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # half-precision logits: softmax in FP32
    lt = teacher_logprobs.to(dtype)
    # teacher over k + 1 buckets at temperature T
    # the log tail mass log(1 - sum(top-k)), in float64: at k = 256 the tail is ~1e-6, and 1 - sum in
    # float32 cancels to its last bits (which the CPU's kernels round differently), while T > 1 raises
    # the bucket to (V - k) * (r / (V - k))^(1/T). A top-k summing past 1 by rounding leaves no tail.
    lse = torch.logsumexp(teacher_logprobs.double(), -1, keepdim=True).clamp(max=0.0)
    tail = torch.log(-torch.expm1(lse)) if k < V else torch.full_like(lse, -math.inf)
    rest = (math.log(V - k) + (tail - math.log(V - k)) / T if k < V else tail).to(dtype)
    log_q_t = torch.log_softmax(torch.cat([lt / T, rest], -1), -1)
    # student over the same buckets: its top-k log-probs and the log of the mass outside them
    z = student_logits.to(dtype) / T
    full = torch.logsumexp(z, -1, keepdim=True)
    outside = torch.logsumexp(z.scatter(-1, ids, -math.inf), -1, keepdim=True)
    log_q_s = torch.cat([z.gather(-1, ids), outside], -1) - full
    q_t = log_q_t.exp()
    kl = torch.where(q_t > 0, q_t * (log_q_t - log_q_s), torch.zeros_like(q_t)).sum(-1)
    kl = kl[mask] if mask is not None else kl
    return kl.mean() * T**2


def distillation_loss(student_logits, teacher_logits, labels, T: float = 2.0, alpha: float = 0.5,
                      ignore_index: int = -100, *, teacher_topk=None) -> LossParts:
    """total = alpha * hard + (1 - alpha) * soft, over the positions whose label != ignore_index.

    `labels` has the logits' shape without the last dim and is already aligned: the logits at a
    position predict the label at that position (shift next-token labels before calling).
    From a top-k cache, pass teacher_logits=None and teacher_topk=(ids, logprobs): the soft loss
    is then topk_kd_kl.
    """
    T, alpha = _validate.temperature(T), _validate.alpha(alpha)
    if teacher_topk is None:
        _validate.same_logits(student_logits, teacher_logits)
    elif teacher_logits is not None:
        raise ValueError("give the teacher's logits or its top-k (teacher_topk), not both")
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
    soft = kd_kl(student_logits, teacher_logits, T, mask=keep) if teacher_topk is None \
        else topk_kd_kl(student_logits, *teacher_topk, T, mask=keep)
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
