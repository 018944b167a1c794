"""Uniform quantization from scratch: X_q = clamp(round(X/S + Z), q_min, q_max), X ~ (X_q - Z) * S.

Integer ranges follow PyTorch, so results match its reference ops bit for bit:
affine uses [0, 2^bits - 1]; symmetric uses [-2^(bits-1), 2^(bits-1) - 1] with Z = 0.
Granularity: one (S, Z) for the whole tensor (`per_tensor`), one per slice along `axis`
(`per_channel`, the output channels of a weight by default) or one per run of `group_size`
consecutive values along the last dim (`per_group`).
"""
from __future__ import annotations

import torch

from .. import _validate

EPS = torch.finfo(torch.float32).eps  # PyTorch observers' floor on the scale


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(q_min, q_max) of the integer codes."""
    bits = _validate.bits(bits)
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def _check(x, granularity, group_size, axis) -> None:
    _validate.tensor("x", x)
    _validate.granularity(granularity)
    if granularity == "per_group":
        if x.dim() == 0:
            raise ValueError("per_group quantization needs a tensor with at least one dim")
        _validate.positive_int("group_size", group_size)
        if x.shape[-1] % group_size:
            raise ValueError(f"group_size={group_size} does not divide the last dim of x, "
                             f"{x.shape[-1]}: use a divisor of {x.shape[-1]}")
    elif group_size is not None:
        raise ValueError(f"group_size={group_size!r} is only allowed with granularity='per_group', "
                         f"not {granularity!r}")
    if granularity == "per_channel" and not -x.dim() <= axis < max(x.dim(), 1):
        raise ValueError(f"axis={axis} is out of range for x of shape {tuple(x.shape)}")


def _view(x, t, granularity, group_size, axis):
    """(x, t) reshaped so that t (scale or zero-point) broadcasts against x."""
    if granularity == "per_tensor":
        return x, t
    if granularity == "per_channel":
        shape = [1] * x.dim()
        shape[axis] = -1
        return x, t.reshape(shape)
    return x.reshape(*x.shape[:-1], -1, group_size), t.unsqueeze(-1)  # (..., G, g), (..., G, 1)


def _minmax(x, granularity, group_size, axis):
    if granularity == "per_tensor":
        return x.min(), x.max()
    if granularity == "per_channel":
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, rest)
        return flat.min(1).values, flat.max(1).values
    g = x.reshape(*x.shape[:-1], -1, group_size)  # (..., G, g)
    return g.min(-1).values, g.max(-1).values


def qparams(x, bits: int, symmetric: bool = True, granularity: str = "per_tensor",
            group_size: int | None = None, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point that map the observed [min, max] (widened to hold 0) onto the codes.

    Shapes: per_tensor (), per_channel (x.shape[axis],), per_group x.shape[:-1] + (groups,).
    """
    _check(x, granularity, group_size, axis)
    q_min, q_max = int_range(bits, symmetric)
    lo, hi = _minmax(x.detach().float(), granularity, group_size, axis)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)  # 0 must be exactly representable (padding, ReLU)
    if symmetric:
        scale = (torch.maximum(-lo, hi) / ((q_max - q_min) / 2)).clamp(min=EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = ((hi - lo) / (q_max - q_min)).clamp(min=EPS)
        zero_point = (q_min - torch.round(lo / scale)).clamp(q_min, q_max).to(torch.int32)
    return scale, zero_point


def _codes(x, scale, zero_point, bits, symmetric, granularity, group_size, axis):
    """Unclamped codes round(X/S) + Z in x's grouped view (X * (1/S), as PyTorch's kernels do)."""
    _check(x, granularity, group_size, axis)
    xv, s = _view(x, scale, granularity, group_size, axis)
    _, z = _view(x, zero_point, granularity, group_size, axis)
    return torch.round(xv * (1.0 / s)) + z, s, z


def quantize(x, scale, zero_point, bits: int, symmetric: bool = True, granularity: str = "per_tensor",
             group_size: int | None = None, axis: int = 0) -> torch.Tensor:
    """Integer codes of x: int8 when symmetric, uint8 when affine (whatever the bit-width)."""
    q_min, q_max = int_range(bits, symmetric)
    q, _, _ = _codes(x, scale, zero_point, bits, symmetric, granularity, group_size, axis)
    return q.clamp(q_min, q_max).reshape(x.shape).to(torch.int8 if symmetric else torch.uint8)


def dequantize(q, scale, zero_point, granularity: str = "per_tensor", group_size: int | None = None,
               axis: int = 0) -> torch.Tensor:
    """(X_q - Z) * S, as float32."""
    qf = q.to(torch.float32)
    _check(qf, granularity, group_size, axis)
    qv, s = _view(qf, scale, granularity, group_size, axis)
    _, z = _view(qf, zero_point, granularity, group_size, axis)
    return ((qv - z) * s).reshape(q.shape)


class _RoundSTE(torch.autograd.Function):
    """Quantize-dequantize forward; straight-through backward: gradient 1 where the code was
    inside [q_min, q_max] before clamping, 0 where the value was clipped."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, bits, symmetric, granularity, group_size, axis):
        q_min, q_max = int_range(bits, symmetric)
        q, s, z = _codes(x, scale, zero_point, bits, symmetric, granularity, group_size, axis)
        ctx.save_for_backward(((q >= q_min) & (q <= q_max)).reshape(x.shape))
        return ((q.clamp(q_min, q_max) - z) * s).reshape(x.shape).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None, None, None, None


def fake_quant(x, bits: int, symmetric: bool = True, granularity: str = "per_tensor",
               group_size: int | None = None, scale=None, zero_point=None, axis: int = 0) -> torch.Tensor:
    """x rounded to the grid of `bits`-bit codes and back, differentiable by the STE.

    Without `scale`/`zero_point` they come from x itself (qparams); with them, values beyond
    the grid are clipped and get no gradient.
    """
    if (scale is None) != (zero_point is None):
        raise ValueError("pass both scale and zero_point, or neither (they are then computed from x)")
    if scale is None:
        scale, zero_point = qparams(x, bits, symmetric, granularity, group_size, axis)
    return _RoundSTE.apply(x, scale, zero_point, bits, symmetric, granularity, group_size, axis)
