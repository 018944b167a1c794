"""Temperature-scaled softmax: softmax(z_i, T) = exp(z_i/T) / sum_j exp(z_j/T)."""
from __future__ import annotations

import torch

from . import _validate


def softmax_t(logits: torch.Tensor, T: float = 1.0, dim: int = -1) -> torch.Tensor:
    """softmax(logits / T) along `dim`. T > 1 flattens the distribution, T < 1 sharpens it."""
    T = _validate.temperature(T)
    _validate.tensor("logits", logits, 1)
    return torch.softmax(logits / T, dim=dim)


def log_softmax_t(logits: torch.Tensor, T: float = 1.0, dim: int = -1) -> torch.Tensor:
    """log softmax(logits / T), computed stably (never log of a softmax that underflowed to 0)."""
    T = _validate.temperature(T)
    _validate.tensor("logits", logits, 1)
    return torch.log_softmax(logits / T, dim=dim)


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats, -sum p log p, with 0 log 0 = 0."""
    _validate.tensor("probs", probs, 1)
    return -torch.special.xlogy(probs, probs).sum(dim)
