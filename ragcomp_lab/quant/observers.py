"""Observers: they watch the activations that reach a layer during calibration and turn them into
one per-tensor (scale, zero_point), with exactly `primitives.qparams`' formulas applied to a range.

- `MinMaxObserver`: the running [min, max] (torch.ao's MinMaxObserver).
- `MovingAverageMinMaxObserver`: min/max of each batch averaged, m <- m + c (m_batch - m)
  (torch.ao's; one outlier batch moves the range by only c of its excess).
- `PercentileObserver`: clips at the `percentile` of |x| (symmetric) or at the (100 - p) and p
  percentiles of x (affine); never wider than min/max.
- `MSEObserver`: the clipping range whose quantize-dequantize error over the observed values is
  smallest (clipping error beyond the range + rounding error inside it), from a grid of candidates.

The last two keep a histogram of log2|x| (64 bins per octave, ~1% wide; 2^-24..2^24) for each sign,
so memory stays a few KB however many batches are observed.
"""
from __future__ import annotations

import torch

from .. import _validate
from .primitives import qparams

LOG_MIN, LOG_MAX, PER_OCTAVE = -24, 24, 64  # histogram of log2|x|: below 2^-24 counts as the first bin
N_BINS = (LOG_MAX - LOG_MIN) * PER_OCTAVE


class Observer:
    """Base: `observe(x)` on every batch, then `qparams()` -> (scale, zero_point), 0-d tensors."""

    def __init__(self, bits: int = 8, symmetric: bool = False):
        self.bits = _validate.bits(bits)
        if not isinstance(symmetric, bool):
            raise ValueError(f"symmetric={symmetric!r} is not allowed: use True or False")
        self.symmetric = symmetric
        self.min_val, self.max_val, self.count = torch.tensor(float("inf")), torch.tensor(float("-inf")), 0

    def observe(self, x: torch.Tensor) -> None:
        x = _validate.tensor("x", x).detach().float()
        if x.numel():
            lo, hi = torch.aminmax(x)
            self._update(x, lo, hi)
            self.count += x.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.observe(x)
        return x

    def _update(self, x, lo, hi) -> None:
        self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The [lo, hi] that the codes will cover (before widening to hold 0)."""
        return self.min_val, self.max_val

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.count:
            raise ValueError(f"{type(self).__name__} has observed no values: run calibration batches through the "
                             f"model (or call observe(x)) before asking for qparams")
        lo, hi = self.range()
        return qparams(torch.stack([lo, hi]), self.bits, self.symmetric)


class MinMaxObserver(Observer):
    """The running min and max over every observed value."""


class MovingAverageMinMaxObserver(Observer):
    def __init__(self, bits: int = 8, symmetric: bool = False, averaging_constant: float = 0.01):
        super().__init__(bits, symmetric)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant={averaging_constant!r} is not allowed: use a number in (0, 1]")
        self.averaging_constant = float(averaging_constant)

    def _update(self, x, lo, hi) -> None:
        if not self.count:
            self.min_val, self.max_val = lo, hi
        else:  # torch.ao's order of operations, in float32
            c = self.averaging_constant
            self.min_val, self.max_val = self.min_val + c * (lo - self.min_val), self.max_val + c * (hi - self.max_val)


class _Histogram(Observer):
    """Counts of log2|x| per sign (index 0: negatives, 1: positives), plus exact zeros."""

    def __init__(self, bits: int = 8, symmetric: bool = False):
        super().__init__(bits, symmetric)
        self.counts = torch.zeros(2, N_BINS, dtype=torch.float64)
        self.zeros = 0

    def _update(self, x, lo, hi) -> None:
        super()._update(x, lo, hi)
        x = x.flatten()
        self.zeros += int((x == 0).sum())
        for sign, v in enumerate((-x[x < 0], x[x > 0])):
            idx = ((torch.log2(v) - LOG_MIN) * PER_OCTAVE).floor().clamp(0, N_BINS - 1).long()
            self.counts[sign] += torch.bincount(idx, minlength=N_BINS).double()

    @staticmethod
    def edges() -> torch.Tensor:  # (N_BINS + 1,) magnitudes
        return torch.exp2(torch.arange(N_BINS + 1, dtype=torch.float64) / PER_OCTAVE + LOG_MIN)

    def values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, n): each bin's geometric centre as a signed value, and its count (zeros included)."""
        e = self.edges()
        mid = (e[:-1] * e[1:]).sqrt()
        v = torch.cat([-mid.flip(0), torch.zeros(1, dtype=torch.float64), mid])
        n = torch.cat([self.counts[0].flip(0), torch.tensor([float(self.zeros)], dtype=torch.float64), self.counts[1]])
        return v, n


class PercentileObserver(_Histogram):
    def __init__(self, bits: int = 8, symmetric: bool = False, percentile: float = 99.99):
        super().__init__(bits, symmetric)
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile={percentile!r} is not allowed: use a number in (0, 100]")
        self.percentile = float(percentile)

    def _magnitude(self, counts: torch.Tensor, k: float) -> float:
        """The magnitude below which `k` of the counted values lie (geometric interpolation in its bin)."""
        cum = counts.cumsum(0)
        i = int(torch.searchsorted(cum, torch.tensor([k], dtype=torch.float64)).clamp(max=N_BINS - 1))
        before = cum[i - 1].item() if i else 0.0
        frac = 0.0 if counts[i] == 0 else min(max((k - before) / counts[i].item(), 0.0), 1.0)
        return 2.0 ** ((i + frac) / PER_OCTAVE + LOG_MIN)

    def range(self):
        p = self.percentile / 100
        if self.symmetric:  # one magnitude for both signs
            k = p * self.count - self.zeros  # exact zeros come first in the order of |x|
            a = self._magnitude(self.counts.sum(0), k) if k > 0 else 0.0
            return torch.maximum(self.min_val, torch.tensor(-a)), torch.minimum(self.max_val, torch.tensor(a))
        n_neg, n_pos = self.counts[0].sum().item(), self.counts[1].sum().item()
        lo = -self._magnitude(self.counts[0], n_neg - (1 - p) * self.count) if (1 - p) * self.count < n_neg else 0.0
        hi = self._magnitude(self.counts[1], n_pos - (1 - p) * self.count) if (1 - p) * self.count < n_pos else 0.0
        return torch.maximum(self.min_val, torch.tensor(lo)), torch.minimum(self.max_val, torch.tensor(hi))


class MSEObserver(_Histogram):
    """Candidates: `grid` fractions of the observed |min| and of max (geometric, 1/`grid` .. 1; affine
    tries every pair). Error of a value v for the range [lo, hi] with step S: (v - lo)^2 or (v - hi)^2
    beyond it; inside, v^2 where it rounds to 0 (|v| < S/2), else the rounding noise S^2 / 12. Sums
    over the histogram's bins come from prefix sums, so every candidate costs O(log bins)."""

    def __init__(self, bits: int = 8, symmetric: bool = False, grid: int = 100):
        super().__init__(bits, symmetric)
        self.grid = _validate.positive_int("grid", grid)

    def _error(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Total squared error for candidate ranges lo, hi (any broadcastable shapes)."""
        v, n = self.values()  # v ascending
        sums = [torch.cat([n.new_zeros(1), (n * v**k).cumsum(0)]) for k in range(3)]  # prefix sums of n v^k

        def between(a, b, c=0.0):  # sum of n (v - c)^2 over the bins a..b-1 (index tensors)
            b = torch.maximum(a, b)
            s0, s1, s2 = (t[b] - t[a] for t in sums)
            return s2 - 2 * c * s1 + c * c * s0

        lo, hi = (t.contiguous() for t in torch.broadcast_tensors(lo, hi))
        step = (hi - lo) / (2**self.bits - 1)
        below, above = torch.searchsorted(v, lo), torch.searchsorted(v, hi, right=True)  # v < lo | v <= hi
        small_a = torch.maximum(below, torch.searchsorted(v, -step / 2, right=True))
        small_b = torch.minimum(above, torch.searchsorted(v, step / 2))
        n_inside = sums[0][above] - sums[0][below]
        return (between(torch.zeros_like(below), below, lo) + between(above, torch.full_like(above, len(v)), hi)
                + n_inside * step**2 / 12 + between(small_a, small_b) - (sums[0][torch.maximum(small_a, small_b)]
                                                                          - sums[0][small_a]) * step**2 / 12)

    def range(self):
        lo0, hi0 = min(self.min_val.item(), 0.0), max(self.max_val.item(), 0.0)
        f = torch.logspace(-torch.log10(torch.tensor(float(self.grid))).item(), 0, self.grid, dtype=torch.float64)
        if self.symmetric:
            a = max(-lo0, hi0) * f
            best = a[self._error(-a, a).argmin()].item()
            lo, hi = torch.tensor(-best), torch.tensor(best)
        else:
            errs = self._error(lo0 * f[:, None], hi0 * f[None, :])  # (lo candidates, hi candidates)
            i, j = divmod(int(errs.argmin()), self.grid)
            lo, hi = torch.tensor(lo0 * f[i].item()), torch.tensor(hi0 * f[j].item())
        return torch.maximum(self.min_val, lo), torch.minimum(self.max_val, hi)


OBSERVERS = {"minmax": MinMaxObserver, "moving_average": MovingAverageMinMaxObserver,
             "percentile": PercentileObserver, "mse": MSEObserver}


def make_observer(name: str, bits: int = 8, symmetric: bool = False, **kwargs) -> Observer:
    """The observer called `name` (one of QuantConfig.OBSERVERS); kwargs go to its constructor."""
    if name not in OBSERVERS:
        raise ValueError(f"observer={name!r} is not supported: use one of {', '.join(OBSERVERS)}")
    return OBSERVERS[name](bits=bits, symmetric=symmetric, **kwargs)
