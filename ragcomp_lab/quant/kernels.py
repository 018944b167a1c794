"""The compiled weight-only kernels for a few tokens (decoding): csrc/weight_only.cpp.

At one token a Linear is bound by reading its weight. PyTorch has no CPU kernel that reads INT8
or packed INT4 weights and multiplies in float without writing them out as floats first
(QuantLinear's blocks) or quantizing the activations too (torch.ao's dynamic INT8): these widen
each code to float in registers, so a token reads a quarter (INT8) or an eighth (INT4) of FP32's
weight bytes, and the activations stay exact. `int8_linear`: int8 codes with one scale per row
(or per tensor). `int4_linear`: packing.py's planar 4-bit codes, per tensor, channel or group,
symmetric or with zero-points.

Compiled once per machine on first use (torch.utils.cpp_extension with ninja, about a minute;
cached under TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions), with -march=native so
that the AVX2 + FMA path is used where the CPU has it. Where no compiler is found the build
fails once, a warning says why, and QuantLinear keeps its PyTorch path. torch guards a build with a
lock file that a process killed mid-build leaves behind, and every later process then waits on it
forever; `_build_lock` holds an OS lock instead (freed when its holder dies) and clears such a file.

Measured on the 2-core AMD EPYC (AVX2), one token, 1 thread: the 49152 x 576 LM head in INT8 3.3 ms
against FP32's 9.9 (8.7 G weights/s, about the DRAM bandwidth), the 576 / 1536-wide layers at ~7 G
weights/s, compute-bound. Built with OpenMP the rows are split over torch's threads. The teacher's
decoding after a 316-token prompt, 2 threads, in one interleaved run: FP32 89.7 ms per token, torch.ao
INT8 per token 51.4, INT8 weight-only here 47.3 (1.90x), INT4 g64 50.9 (1.76x; 59.0 before OpenMP);
INT8 is bound by memory there, INT4 by unpacking. Top-1 against FP32 on 16 test rows 1.0, 1.0, 0.96.
Blocks of dequantized rows beat the kernel from ~16 tokens, so a prompt's forward pass does not use it.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "weight_only.cpp"
MAX_TOKENS = 8  # above this many rows the blocked dequantize + F.linear (a real GEMM) is faster
DISABLE_ENV = "RAGCOMP_NO_KERNELS"  # set to 1: never build, always the PyTorch path
NAME = "ragcomp_weight_only"


def cpu_features() -> str:
    """The CPU's instruction-set flags (Linux's /proc/cpuinfo; else the machine's name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.machine()


def build_dir() -> Path:
    """Where the kernels are built: py<version>_cpu/ragcomp_weight_only-<CPU> under
    $TORCH_EXTENSIONS_DIR, else under ~/.cache/torch_extensions (torch's default place). -march=native
    code for one CPU can stop with an illegal instruction on another, and torch rebuilds only when
    the sources or flags change: so a home folder carried to another CPU builds its own copy."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions"
    cpu = hashlib.sha1(cpu_features().encode()).hexdigest()[:8]
    return Path(root) / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / f"{NAME}-{cpu}"


@contextlib.contextmanager
def _build_lock(folder: Path):
    """One build at a time per folder, by a lock the OS frees when its holder dies. Inside it no other
    process of ours is building, so a `lock` file there was left by a killed build: it is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: torch's lock file alone
        yield
        return
    with open(folder / "build.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.cache
def _module():
    if os.environ.get(DISABLE_ENV) == "1":
        return None
    try:
        from torch.utils.cpp_extension import load
        folder = build_dir()
        with warnings.catch_warnings(), _build_lock(folder):
            warnings.simplefilter("ignore")
            # -fopenmp: at::parallel_for in an extension is serial without it. The libgomp.so.1 linked
            # is the one torch already loaded (same soname), so there is one OpenMP runtime and
            # torch.set_num_threads governs both
            return load(name=NAME, sources=[str(SOURCE)], build_directory=str(folder),
                        extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as e:  # no compiler, no ninja, an unsupported platform: the PyTorch path still works
        warnings.warn(f"the weight-only decoding kernels could not be built ({type(e).__name__}: {str(e)[:200]}); "
                      f"INT8 and INT4 weight-only layers use the slower PyTorch path. They need a C++ compiler "
                      f"and ninja (pip install ninja)", RuntimeWarning, stacklevel=3)
        return None


def available() -> bool:
    """Whether the kernels are built (building them on first call)."""
    return _module() is not None


def vectorized() -> bool:
    """Whether they were compiled with their AVX2 + FMA path (else plain loops, still one pass over the bytes)."""
    m = _module()
    return m is not None and m.vectorized()


def _built():
    m = _module()
    if m is None:
        raise RuntimeError("the weight-only kernels are not built: check available() first")
    return m


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).contiguous()


def _bias(bias: torch.Tensor | None) -> torch.Tensor:
    return torch.empty(0) if bias is None else bias.float().contiguous()


def int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(x @ q^T) * scale + bias: x (..., K) float32, q (N, K) int8, scale (N,) or () per tensor."""
    n = q.shape[0]
    y = _built().int8_linear(_rows(x), q.contiguous(), scale.float().expand(n).contiguous(), _bias(bias))
    return y.reshape(*x.shape[:-1], n)


def int4_linear(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                bias: torch.Tensor | None) -> torch.Tensor:
    """x @ W^T + bias, W[n, i] = (code - zero) * scale of i's group: packed (N, ceil(K/2)) planar 4-bit
    codes (packing.py), scale and zero (N, groups), (N,) or () (zero None: symmetric codes, shifted by 8)."""
    n = packed.shape[0]
    s = scale.reshape(n, -1) if scale.dim() else scale.expand(n, 1)
    s = s if s.dtype in (torch.float16, torch.float32) else s.float()
    z = torch.empty(0, dtype=torch.uint8) if zero is None else (zero.reshape(n, -1) if zero.dim() else
                                                                 zero.expand(n, 1)).contiguous()
    y = _built().int4_linear(_rows(x), packed.contiguous(), s.contiguous(), z, _bias(bias))
    return y.reshape(*x.shape[:-1], n)


def usable(layer, x: torch.Tensor) -> bool:
    """Whether `layer` (a QuantLinear) on input `x` is a case the kernels cover: INT8 symmetric codes
    with one scale per row or per tensor, or any INT4 codes; float32 activations; few tokens; no
    autograd through it (the kernels have no backward)."""
    covered = layer.bits == 4 or (layer.bits == 8 and layer.symmetric and layer.granularity != "per_group")
    return (covered and x.dtype == torch.float32 and x.numel() <= MAX_TOKENS * x.shape[-1]
            and not (torch.is_grad_enabled() and x.requires_grad) and available())


def forward(layer, x: torch.Tensor) -> torch.Tensor:
    """QuantLinear `layer` applied to `x` by its kernel (check `usable` first)."""
    if layer.bits == 8:
        return int8_linear(x, layer.qweight, layer.scale, layer.bias)
    return int4_linear(x, layer.qweight, layer.scale, layer.zero_point, layer.bias)
