"""Weight-only quantized layers: integer codes and scales stored, float weights rebuilt on the fly.

`QuantLinear` holds packed codes (`qweight`), scales and, when affine, zero-points as buffers; its
forward dequantizes a block of output rows at a time and multiplies. Measured on this CPU (one
thread, a 49152 x 576 LM head, one token): dequantizing the whole weight then F.linear is 8-11x
slower than FP32, because a fresh 113 MB float buffer is written and read back; blocks of ~256K
weights (1 MB) stay in cache and bring INT8 to ~1.7-1.9x and INT4 (g=64) to ~3.5-4x the FP32
time. Rejected: scaling after the matmul (per-channel only; ~15% faster on whole matrices, but no
longer the primitives' dequantized weight exactly) and torch._weight_int8pack_mm (~3x slower than
these blocks at one token, ~40x at 64 tokens). At up to kernels.MAX_TOKENS tokens, INT4 layers and
INT8 symmetric per-channel or per-tensor layers run a compiled kernel instead (kernels.py) that reads
the codes once.
Nothing is cached between calls: the memory saving is real at run time too, the price is speed.

`QuantEmbedding` is the input embedding of a model whose LM head is tied to it: it reads the
head's codes, so the tied matrix is stored (and saved) once, quantized.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate
from . import kernels, packing
from .primitives import int_range, qparams, quantize

BLOCK = 2**18  # weights dequantized per block of output rows in forward (1 MB as float32)
SCALE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def _scale_dtype(name: str) -> torch.dtype:
    if name not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype={name!r} is not supported: use one of {', '.join(SCALE_DTYPES)}")
    return SCALE_DTYPES[name]


def _store_scale(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The scale in its storage dtype, rounded UP so that the grid still spans [min, max]."""
    s = scale.to(dtype)
    if dtype != scale.dtype:
        s = torch.where(s.float() < scale, torch.nextafter(s, s.new_tensor(float("inf"))), s)
        if not torch.isfinite(s).all():
            raise ValueError(f"a scale of {scale.max().item():.3g} overflows {dtype}: these weights need "
                             f"scale_dtype='float32'")
    return s


class QuantLinear(nn.Module):
    """y = x W^T + b with W = (q - Z) * S rebuilt from `bits`-bit codes q (weight-only quantization).

    Codes, scales and zero-points are exactly those of `primitives.qparams` / `quantize`, except
    that scales are stored in `scale_dtype` (float16 by default, as GGUF and GPTQ do; rounded up)
    and the codes are computed with the stored scale. Scales/zero-points run along the output
    rows (`per_channel`) or over `group_size` consecutive inputs of a row (`per_group`).
    Storage: 8-bit codes as they are (int8 symmetric, uint8 affine); fewer bits packed into uint8
    (`packing`), symmetric codes shifted by 2^(bits-1) to be unsigned; zero-points as uint8.
    """

    def __init__(self, in_features: int, out_features: int, bits: int = 8, symmetric: bool = True,
                 granularity: str = "per_channel", group_size: int | None = None, bias: bool = False,
                 scale_dtype: str = "float16", dtype: torch.dtype = torch.float32):
        super().__init__()
        _validate.positive_int("in_features", in_features)
        _validate.positive_int("out_features", out_features)
        self.bits = _validate.bits(bits)
        if not isinstance(symmetric, bool):
            raise ValueError(f"symmetric={symmetric!r} is not allowed: use True or False")
        self.granularity = _validate.granularity(granularity)
        if granularity == "per_group":
            _validate.positive_int("group_size", group_size)
            if in_features % group_size:
                raise ValueError(f"group_size={group_size} does not divide in_features={in_features}: "
                                 f"use a divisor of {in_features}")
        elif group_size is not None:
            raise ValueError(f"group_size={group_size!r} is only allowed with granularity='per_group'")
        self.in_features, self.out_features = in_features, out_features
        self.symmetric, self.group_size, self.scale_dtype = symmetric, group_size, scale_dtype
        shape = {"per_tensor": (), "per_channel": (out_features,),
                 "per_group": (out_features, in_features // (group_size or 1))}[granularity]
        packed = bits < 8
        code_dtype = torch.int8 if symmetric and not packed else torch.uint8
        width = packing.packed_len(in_features, bits) if packed else in_features
        self.register_buffer("qweight", torch.zeros(out_features, width, dtype=code_dtype))
        self.register_buffer("scale", torch.ones(shape, dtype=_scale_dtype(scale_dtype)))
        self.register_buffer("zero_point", None if symmetric else torch.zeros(shape, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, bits: int = 8,
                    symmetric: bool = True, granularity: str = "per_channel", group_size: int | None = None,
                    scale_dtype: str = "float16") -> "QuantLinear":
        _validate.tensor("weight", weight)
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
        out_f, in_f = weight.shape
        m = cls(in_f, out_f, bits, symmetric, granularity, group_size, bias is not None, scale_dtype,
                bias.dtype if bias is not None else torch.float32)
        w = weight.detach().float()
        scale, zero_point = qparams(w, bits, symmetric, granularity, group_size)
        scale = _store_scale(scale, m.scale.dtype)
        q = quantize(w, scale.float(), zero_point, bits, symmetric, granularity, group_size)
        m.qweight.copy_(packing.pack(q.to(torch.int16) - int_range(bits, True)[0], bits) if symmetric and bits < 8
                        else packing.pack(q, bits) if bits < 8 else q)
        m.scale.copy_(scale)
        if not symmetric:
            m.zero_point.copy_(zero_point)
        if bias is not None:
            m.bias.copy_(bias.detach())
        return m

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kw) -> "QuantLinear":
        return cls.from_weight(linear.weight, linear.bias, **kw)

    def spec(self) -> dict:
        """The constructor's arguments: enough to rebuild the empty module before loading tensors."""
        return dict(in_features=self.in_features, out_features=self.out_features, bits=self.bits,
                    symmetric=self.symmetric, granularity=self.granularity, group_size=self.group_size,
                    bias=self.bias is not None, scale_dtype=self.scale_dtype,
                    dtype=str(self.bias.dtype if self.bias is not None else torch.float32).removeprefix("torch."))

    def codes(self) -> torch.Tensor:
        """The codes as `primitives.quantize` returns them (int8 symmetric, uint8 affine), unpacked."""
        if self.bits == 8:
            return self.qweight
        u = packing.unpack(self.qweight, self.bits, self.in_features)
        return (u.to(torch.int16) + int_range(self.bits, True)[0]).to(torch.int8) if self.symmetric else u

    def dequantize_rows(self, q: torch.Tensor, scale: torch.Tensor, zero_point, dtype=torch.float32) -> torch.Tensor:
        """Float rows from stored rows: q (..., width) with its scales (..., [groups]) (per_tensor: 0-d)."""
        w = (packing.unpack(q, self.bits, self.in_features) if self.bits < 8 else q).to(torch.float32)
        if self.symmetric and self.bits < 8:  # packed symmetric codes carry a shift of 2^(bits-1)
            w -= 2 ** (self.bits - 1)
        if self.granularity == "per_group":
            w = w.unflatten(-1, (-1, self.group_size))
        if self.granularity != "per_tensor":  # one scale (and zero-point) per row or per group
            scale = scale.unsqueeze(-1)
            zero_point = None if zero_point is None else zero_point.unsqueeze(-1)
        if zero_point is not None:
            w -= zero_point
        w *= scale.float()
        if self.granularity == "per_group":
            w = w.flatten(-2)
        return w if dtype == torch.float32 else w.to(dtype)

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        """The whole float weight (out_features, in_features); forward never builds it at once."""
        return self.dequantize_rows(self.qweight, self.scale, self.zero_point).to(dtype)

    def _block(self, a: int, b: int, dtype) -> torch.Tensor:
        per_row = self.granularity != "per_tensor"
        return self.dequantize_rows(self.qweight[a:b], self.scale[a:b] if per_row else self.scale,
                                    None if self.zero_point is None else
                                    self.zero_point[a:b] if per_row else self.zero_point).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.usable(self, x):  # decoding: the codes widened to float in registers (kernels.py)
            return kernels.forward(self, x)
        rows = max(1, BLOCK // self.in_features)
        if rows >= self.out_features:
            return F.linear(x, self._block(0, self.out_features, x.dtype), self.bias)
        y = x.new_empty(*x.shape[:-1], self.out_features)
        for a in range(0, self.out_features, rows):
            b = min(a + rows, self.out_features)
            y[..., a:b] = F.linear(x, self._block(a, b, x.dtype), None if self.bias is None else self.bias[a:b])
        return y

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"{'symmetric' if self.symmetric else 'affine'}, {self.granularity}{g}, "
                f"scale_dtype={self.scale_dtype}, bias={self.bias is not None}")


class QuantEmbedding(nn.Module):
    """An embedding whose table is the tied LM head `head` (a QuantLinear): row i = head row i."""

    def __init__(self, head: QuantLinear, padding_idx: int | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(head, QuantLinear):
            raise ValueError(f"head must be a QuantLinear, got {type(head).__name__}")
        self._head = [head]  # a list, so that nn.Module does not register (and save) the head twice
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.padding_idx, self.dtype = padding_idx, dtype

    @property
    def head(self) -> QuantLinear:
        return self._head[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.head
        per_row = h.granularity != "per_tensor"
        z = h.zero_point
        return h.dequantize_rows(h.qweight[ids], h.scale[ids] if per_row else h.scale,
                                 None if z is None else z[ids] if per_row else z, self.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, tied to a {self.head.bits}-bit QuantLinear head"
