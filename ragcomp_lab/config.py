"""Validated configurations: a bad value fails here, by name, before any work starts."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from numbers import Real

from . import _validate

FLOAT_MODES = ("fp16", "bf16")
INT8_MODES = ("dynamic", "static")  # activations are quantized too: 8-bit only
MODES = FLOAT_MODES + INT8_MODES + ("weight_only", "gptq", "qat")


@dataclass
class DistillConfig:
    """L_total = alpha * L_student + (1 - alpha) * L_KD, optimised for `steps` steps."""

    T: float = 2.0  # temperature of both softmaxes in L_KD; > 1 exposes the teacher's "dark knowledge"
    alpha: float = 0.5  # weight of the hard loss L_student; 1 - alpha weighs L_KD (alpha=1: no teacher)
    steps: int = 200  # optimiser steps
    batch_size: int = 4  # examples per micro-batch
    lr: float = 5e-4  # peak learning rate (AdamW)
    seed: int = 0  # same seed, same config -> same losses
    grad_accum: int = 1  # micro-batches per optimiser step (effective batch = batch_size * grad_accum)
    warmup_steps: int = 0  # linear warm-up before the cosine decay
    weight_decay: float = 0.0
    target: str = "answer"  # the hard labels: "answer" (gold) or "teacher_answer" (sequence-level KD)
    feature_weight: float = 0.0  # weight of the hidden-state loss, added to L_total (feature-based KD)
    feature_kind: str = "mse"  # the hidden-state distance: "mse", or "cosine" (blind to scale and outlier dims)
    relation_weight: float = 0.0  # weight of the token-similarity loss, added to L_total (relation-based KD)
    layer_map: list | None = None  # teacher layer for each student layer; None: the layers it was built from, else spread evenly
    max_grad_norm: float = 1.0  # gradient clipping: a fresh layer-dropped student starts at a loss of 13-15
    checkpoint_every: int = 50  # steps between checkpoints when distill() is given a checkpoint_dir

    def __post_init__(self):
        self.T = _validate.temperature(self.T)
        self.alpha = _validate.alpha(self.alpha)
        for name in ("steps", "batch_size", "grad_accum"):
            _validate.positive_int(name, getattr(self, name))
        self.lr = _validate.positive_real("lr", self.lr)
        _validate.non_negative_int("seed", self.seed)
        _validate.non_negative_int("warmup_steps", self.warmup_steps)
        for name in ("weight_decay", "feature_weight", "relation_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or v < 0:
                raise ValueError(f"{name}={v!r} is not allowed: use a number >= 0")
        self.max_grad_norm = _validate.positive_real("max_grad_norm", self.max_grad_norm)
        _validate.positive_int("checkpoint_every", self.checkpoint_every)
        if self.feature_kind not in ("mse", "cosine"):
            raise ValueError(f"feature_kind={self.feature_kind!r} is not supported: use 'mse' or 'cosine'")
        if self.target not in ("answer", "teacher_answer"):
            raise ValueError(f"target={self.target!r} is not supported: use 'answer' (gold) or 'teacher_answer'")
        if self.layer_map is not None and (not isinstance(self.layer_map, (list, tuple)) or not self.layer_map or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.layer_map)):
            raise ValueError(f"layer_map={self.layer_map!r} is not allowed: give one teacher layer index (>= 0) "
                             f"per student layer, or None")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantConfig:
    """How to quantize a model; `bits` defaults to 8 (16 for the float modes)."""

    OBSERVERS = ("minmax", "moving_average", "percentile", "mse")  # class constants, not fields
    ACTIVATIONS = ("per_token", "per_tensor")  # dynamic mode: one activation scale per token, or per call
    SCALE_DTYPES = ("float16", "float32")

    bits: int | None = None  # 2..8 for integer modes; 16 for fp16 / bf16
    mode: str = "weight_only"  # one of MODES
    symmetric: bool = True  # symmetric: Z = 0, signed codes; affine: Z shifts the range, unsigned codes
    granularity: str = "per_channel"  # per_tensor | per_channel | per_group
    group_size: int | None = None  # values sharing one scale with per_group (typically 32..128)
    skip: tuple | None = None  # modules kept in float (names, prefixes, globs); None: the mode's default
    observer: str = "minmax"  # how calibration turns observed values into a range (static mode)
    scale_dtype: str = "float16"  # storage of weight-only scales: float16 (as GGUF/GPTQ) or float32
    smooth: float | None = None  # SmoothQuant migration strength alpha in (0, 1] for the INT8 modes (quant/smooth.py)
    activations: str | None = None  # dynamic: "per_token" (None: the default) or "per_tensor", torch.ao's own

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode={self.mode!r} is not supported: use one of {', '.join(MODES)}")
        if self.mode in FLOAT_MODES:
            if self.bits not in (None, 16):
                raise ValueError(f"bits={self.bits!r} does not fit mode={self.mode!r}: a 16-bit float mode")
            self.bits = 16
        else:
            self.bits = _validate.bits(8 if self.bits is None else self.bits)
            if self.mode in INT8_MODES and self.bits != 8:
                raise ValueError(f"bits={self.bits} is not supported by mode={self.mode!r}, which quantizes "
                                 f"activations to INT8: use bits=8, or mode='weight_only' for lower bits")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric={self.symmetric!r} is not allowed: use True or False")
        _validate.granularity(self.granularity)
        if self.granularity == "per_group":
            if self.group_size is None:
                raise ValueError("granularity='per_group' needs a group_size, e.g. 32, 64 or 128")
            _validate.positive_int("group_size", self.group_size)
        elif self.group_size is not None:
            raise ValueError(f"group_size={self.group_size!r} is only allowed with granularity='per_group'")
        if self.skip is not None:
            if isinstance(self.skip, str) or not isinstance(self.skip, (tuple, list)) or not all(
                    isinstance(n, str) and n for n in self.skip):
                raise ValueError(f"skip={self.skip!r} is not allowed: give a tuple of module names, e.g. "
                                 f"('lm_head',) or ('*.mlp.down_proj',), or None for the mode's default")
            self.skip = tuple(self.skip)  # a list (from JSON) becomes a tuple
        if self.observer not in self.OBSERVERS:
            raise ValueError(f"observer={self.observer!r} is not supported: use one of "
                             f"{', '.join(self.OBSERVERS)}")
        if self.smooth is not None:
            if isinstance(self.smooth, bool) or not isinstance(self.smooth, (int, float)) or not 0 < self.smooth <= 1:
                raise ValueError(f"smooth={self.smooth!r} is not allowed: give SmoothQuant's alpha in (0, 1], e.g. 0.5, "
                                 f"or None")
            if self.mode not in INT8_MODES:
                raise ValueError(f"smooth={self.smooth} is for the modes that quantize activations "
                                 f"({', '.join(INT8_MODES)}), not mode={self.mode!r}")
            self.smooth = float(self.smooth)
        if self.activations is not None:
            if self.activations not in self.ACTIVATIONS:
                raise ValueError(f"activations={self.activations!r} is not supported: use one of "
                                 f"{', '.join(self.ACTIVATIONS)}, or None")
            if self.mode != "dynamic":
                raise ValueError(f"activations={self.activations!r} is for mode='dynamic', whose activation scales "
                                 f"are computed at run time; mode={self.mode!r} "
                                 + ("fixes them by calibration" if self.mode == "static" else "keeps float activations"))
        if self.scale_dtype not in self.SCALE_DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype!r} is not supported: use one of "
                             f"{', '.join(self.SCALE_DTYPES)}")

    def to_dict(self) -> dict:
        return asdict(self)
