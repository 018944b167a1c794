"""Bit packing: integer codes of `bits` bits stored densely in uint8, row by row (last dim).

Codes must be unsigned, in [0, 2^bits - 1] (shift symmetric codes by 2^(bits-1) first).
Density: 8 / gcd(bits, 8) codes fill exactly bits / gcd(bits, 8) bytes, so
  2 bits: four codes per byte; 4 bits: two codes per byte;
  3 bits: eight codes in three bytes (dense). Two 3-bit codes per byte would cost 4 bits a code,
  no saving over INT4, leaving 3-bit pointless; dense packing stores the 3/8 byte a code that
  3-bit promises, at the price of codes that straddle two bytes.
  5, 6, 7 bits: 8 codes in 5 bytes, 4 codes in 3 bytes, 8 codes in 7 bytes; 8 bits: as they are.

Layout (planar): a row of n codes is cut into `per` planes of L = ceil(n / per) codes (the last
one zero-padded); word j holds code j of plane i at bits [i * bits, (i + 1) * bits). For 4 bits,
byte j = code[j] | code[j + L] << 4. Multi-byte words are stored as byte planes too (all first
bytes, then all second bytes ...). Why not neighbours in a byte (code[2j] | code[2j+1] << 4)?
Unpacking neighbours needs an interleaving copy that costs about 4x more than the shifts in
PyTorch on CPU; planes come back as whole-row shifts and one concatenation.
"""
from __future__ import annotations

import math

import torch

from .. import _validate


def chunk(bits: int) -> tuple[int, int]:
    """(codes, bytes) in one packing chunk."""
    bits = _validate.bits(bits)
    g = math.gcd(bits, 8)
    return 8 // g, bits // g


def packed_len(n: int, bits: int) -> int:
    """Bytes that hold a row of `n` codes."""
    _validate.non_negative_int("n", n)
    per, nbytes = chunk(bits)
    return -(-n // per) * nbytes


def _shifts(count: int, step: int, dtype) -> torch.Tensor:
    return torch.arange(0, count * step, step, dtype=dtype)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 tensor of shape codes.shape[:-1] + (packed_len(n, bits),) for codes in [0, 2^bits)."""
    per, nbytes = chunk(bits)
    if not isinstance(codes, torch.Tensor) or codes.dim() == 0:
        raise ValueError("codes must be a torch.Tensor with at least one dim"
                         + (f", got shape {tuple(codes.shape)}" if isinstance(codes, torch.Tensor)
                            else f", got {type(codes).__name__}"))
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"codes must be an integer tensor, got dtype {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(f"codes span [{int(codes.min())}, {int(codes.max())}], outside [0, {2**bits - 1}] "
                         f"of {bits}-bit unsigned codes: shift signed codes by {2 ** (bits - 1)} first")
    if bits == 8:
        return codes.to(torch.uint8)
    *lead, n = codes.shape
    L = -(-n // per)
    c = codes.to(torch.int64)
    if per * L > n:
        c = torch.cat([c, c.new_zeros(*lead, per * L - n)], -1)
    # plane i (codes i*L .. i*L + L - 1) goes to bits [i*bits, (i+1)*bits) of each word; the planes
    # never overlap, so summing the shifted planes is their bitwise OR
    word = (c.reshape(*lead, per, L) << _shifts(per, bits, torch.int64).unsqueeze(-1)).sum(-2)
    planes = [(word >> (8 * k)) & 0xFF for k in range(nbytes)]  # byte k of every word, contiguous
    return torch.cat(planes, -1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The first `n` uint8 codes of each row of `packed` (the inverse of `pack`)."""
    per, nbytes = chunk(bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() == 0:
        raise ValueError("packed must be a uint8 torch.Tensor with at least one dim, as pack() returns")
    if packed.shape[-1] != packed_len(n, bits):
        raise ValueError(f"n={n} codes of {bits} bits take {packed_len(n, bits)} bytes a row, "
                         f"but packed has {packed.shape[-1]}")
    if bits == 8:
        return packed
    mask = 2**bits - 1
    L = packed.shape[-1] // nbytes
    byte = [packed[..., k * L:(k + 1) * L] for k in range(nbytes)]  # views, no copy
    planes = []
    for i in range(per):  # all in uint8: bits shifted past the top simply fall off
        k, off = divmod(i * bits, 8)
        v = byte[k] >> off if off else byte[k]
        if off + bits > 8:  # the code straddles two bytes
            v = v | (byte[k + 1] << (8 - off))
        planes.append(v & mask if off + bits != 8 else v)  # a code at the top of its byte needs no mask
    return torch.cat(planes, -1)[..., :n]
