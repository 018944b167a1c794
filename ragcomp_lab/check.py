"""Answer checks for the lab exercises: a verdict with a helpful message, never a bare assert.

Each check calls the learner's function on several cases, compares it with the library's
reference, and returns a `Verdict` (truthy when right) that the notebook displays.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import quant
from .losses import distillation_loss as _distillation_loss
from .losses import kd_kl as _kd_kl
from .softmax import softmax_t as _softmax_t


@dataclass
class Verdict:
    name: str
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return f"{'✔' if self.ok else '✘'} {self.name}: {self.message}"


def _cases(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for shape, T in [((5,), 1.0), ((3, 7), 0.5), ((2, 4, 11), 4.0), ((6, 3), 10.0)]:
        yield torch.randn(shape, generator=g) * 3, torch.randn(shape, generator=g) * 3, T


def _compare(name: str, hint: str, attempts, atol: float = 1e-5) -> Verdict:
    """attempts yields (description, learner's thunk, reference value)."""
    n = 0
    for what, thunk, want in attempts:
        try:
            got = thunk()
        except Exception as e:  # the learner's code: report it, do not crash the notebook
            return Verdict(name, False, f"for {what} your function raised {type(e).__name__}: {e}")
        if not isinstance(got, torch.Tensor):
            return Verdict(name, False, f"for {what} it returned {type(got).__name__}, expected a tensor "
                                        f"of shape {tuple(want.shape)}")
        if got.shape != want.shape:
            return Verdict(name, False, f"for {what} it returned shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        err = (got.detach().float() - want).abs().max().item()
        if not err <= atol:
            return Verdict(name, False, f"for {what} it is off by up to {err:.3g}. Hint: {hint}")
        n += 1
    return Verdict(name, True, f"matches the library on all {n} cases")


def softmax_t(fn) -> Verdict:
    """fn(logits, T) -> softmax(logits / T) over the last dim."""
    return _compare("softmax_t", "divide the logits by T, then softmax over the last dim (dim=-1)",
                    ((f"logits of shape {tuple(s.shape)} at T={T}", lambda s=s, T=T: fn(s, T), _softmax_t(s, T))
                     for s, _, T in _cases()))


def kd_kl(fn) -> Verdict:
    """fn(student_logits, teacher_logits, T) -> KL(p_t || p_s) * T^2, averaged over positions."""
    return _compare("kd_kl", "KL(p_t || p_s) = sum p_t (log p_t - log p_s) over the last dim, "
                             "averaged over the other dims, times T**2",
                    ((f"logits of shape {tuple(s.shape)} at T={T}", lambda s=s, t=t, T=T: fn(s, t, T), _kd_kl(s, t, T))
                     for s, t, T in _cases()))


def distillation_loss(fn, alpha: float = 0.3) -> Verdict:
    """fn(student_logits, teacher_logits, labels, T, alpha) -> the total loss."""
    def attempts():
        for s, t, T in _cases(1):
            labels = t.argmax(-1)
            want = _distillation_loss(s, t, labels, T, alpha).total
            yield f"logits {tuple(s.shape)}, T={T}, alpha={alpha}", (lambda s=s, t=t, l=labels, T=T: fn(s, t, l, T, alpha)), want
    return _compare("distillation_loss", "total = alpha * cross_entropy(student, labels) + (1 - alpha) * kd_kl", attempts())


def fake_quant(fn, bits: int = 4) -> Verdict:
    """fn(x, bits) -> per-tensor symmetric fake quantization of x."""
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(shape, generator=g) * sc for shape, sc in [((16,), 1.0), ((8, 8), 0.05), ((4, 32), 7.0)]]
    return _compare("fake_quant", "scale = max|x| / ((2**bits - 1) / 2); codes = clamp(round(x / scale), "
                                  "-2**(bits-1), 2**(bits-1) - 1); return codes * scale",
                    ((f"x of shape {tuple(x.shape)} at {bits} bits", lambda x=x: fn(x, bits),
                      quant.fake_quant(x, bits, True, "per_tensor")) for x in xs), atol=1e-6)
