"""Measuring cost honestly: latency as the median of repeated runs after a warm-up, with the
thread count recorded; comparisons interleaved so that a noisy machine slows every side alike;
size as the bytes actually serialized."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from . import _validate
from .checkpoint import unique_tensors


@dataclass
class Latency:
    median: float  # seconds
    times: list = field(repr=False)  # every timed run, seconds
    threads: int = 0  # torch.get_num_threads() during the runs

    def __str__(self) -> str:
        return f"{1e3 * self.median:.2f} ms (median of {len(self.times)}, {self.threads} threads)"


def compare(fns: dict, warmup: int = 2, repeat: int = 9, grad: bool = False) -> dict[str, Latency]:
    """Time several callables round-robin (a, b, c, a, b, c, ...) and return each one's Latency.
    Runs under inference mode unless `grad` (a training step needs autograd)."""
    _validate.non_negative_int("warmup", warmup)
    _validate.positive_int("repeat", repeat)
    if not fns:
        raise ValueError("compare() needs at least one callable")
    times = {name: [] for name in fns}
    with torch.inference_mode(not grad):
        for i in range(warmup + repeat):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    threads = torch.get_num_threads()
    return {name: Latency(statistics.median(t), t, threads) for name, t in times.items()}


def latency(fn, warmup: int = 2, repeat: int = 9) -> Latency:
    """Median wall time of fn() over `repeat` runs after `warmup` untimed ones."""
    return compare({"fn": fn}, warmup, repeat)["fn"]


def size_bytes(obj) -> int:
    """Bytes of a model's (or a state dict's) tensors serialized as safetensors, headers included."""
    from safetensors.torch import save

    state = obj.state_dict() if isinstance(obj, torch.nn.Module) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("size_bytes needs an nn.Module or a dict of tensors")
    # tied weights share storage: count each storage once, as a saved file does
    return len(save({k: v.contiguous() for k, v in unique_tensors(state).items()}))
