"""Static post-training quantization: INT8 weights AND INT8 activations with ranges fixed by calibration.

`static_quantize(model, cfg, calib)` hooks an observer (`cfg.observer`) on the input of every
target nn.Linear, runs the calibration batches, removes the hooks, and swaps each Linear for a
`StaticQuantLinear`: weight codes symmetric INT8 (per channel or per tensor), input codes affine
UINT8 with the one (scale, zero_point) its observer chose, on 7 bits (0..127). Forward:

    y = S_x S_w [(X_q - Z_x) W_q^T] + b,    X_q = clamp(round(X / S_x) + Z_x, 0, 127)

computed by fbgemm's `quantized::linear_with_input_q_dq_qweight_dq_output_fp32`: float in, the
fixed input grid, exact INT32 accumulation, float out (`reference` recomputes it in float64).

The kernel was chosen by measurement: SmolLM2-135M with every Linear INT8, one thread on a busy
2-core CPU (AVX512-VNNI, AMX), forward of 256 tokens / greedy decoding per token, FP32 1774 / 153 ms:
  fbgemm float-out op (this one)               996 / 105 ms
  oneDNN qlinear_pointwise (uint8 in, AMX)      810 / 148 ms
  torch._int_mm + zero-point correction         961 / 161 ms
  simulated: fake-quant input, F.linear          2354 / 189 ms
All three integer kernels give identical logits. torch.ao.nn.quantized.Linear runs the same fbgemm
matmul but re-quantizes its OUTPUT (one more rounding, and observers on every output); this op is its
float-output twin. Decoding dominates generation, so fbgemm; oneDNN would be ~20% faster on long
prompts at the price of a second packed copy of the weights.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..config import QuantConfig
from .targets import calibration_batches, linear_targets, set_module
from .observers import make_observer
from .primitives import qparams, quantize

# Activations: affine uint8 codes, the layout fbgemm and oneDNN take, on 7 bits (PyTorch's reduce_range).
# Without VNNI (AVX2 only) the kernels add pairs of uint8 x int8 products in int16, which saturates for
# codes above 127 (255 * 127 * 2 > 32767): measured here, 9% of a layer's outputs wrong by up to 170%.
# 7 bits fit on every x86 CPU, so a model quantizes, and its results are, the same on all of them.
ACT_BITS, ACT_SYMMETRIC = 7, False
ACT_MAX = 2**ACT_BITS - 1  # the largest input code


def _engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for e in ("x86", "fbgemm"):
        if e in engines:
            return e
    raise RuntimeError(f"mode='static' needs PyTorch's fbgemm INT8 kernels (an x86 CPU build); this build has "
                       f"{engines}")


class StaticQuantLinear(nn.Module):
    """A Linear with INT8 weight codes and a fixed INT8 input grid (see the module docstring).

    Buffers: `weight_scale` float32, (out,) per_channel or () per_tensor (weight zero-points are 0:
    symmetric); `input_scale` () float32; `input_zero_point` () int32 in 0..ACT_MAX; `bias` (out,) float32
    or None. The weight codes live only in fbgemm's packed matrix (1 byte a weight, as torch.ao's
    layers keep them); `weight_int8` unpacks them, and the state dict carries them under that name.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, granularity: str = "per_channel"):
        super().__init__()
        if granularity not in ("per_tensor", "per_channel"):
            raise ValueError(f"granularity={granularity!r} is not supported by StaticQuantLinear: use per_tensor "
                             f"or per_channel")
        self.in_features, self.out_features, self.granularity = in_features, out_features, granularity
        self.register_buffer("weight_scale", torch.ones(() if granularity == "per_tensor" else (out_features,)))
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.pack(torch.zeros(out_features, in_features, dtype=torch.int8))

    @classmethod
    def from_linear(cls, linear: nn.Linear, input_scale, input_zero_point,
                    granularity: str = "per_channel") -> "StaticQuantLinear":
        """Quantize `linear`'s weight (symmetric INT8, `primitives`' codes) and fix the input qparams."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, granularity)
        w = linear.weight.detach().float()
        scale, zp = qparams(w, 8, True, granularity)
        m.weight_scale.copy_(scale)
        m.input_scale.copy_(torch.as_tensor(input_scale, dtype=torch.float32).reshape(()))
        zx = int(torch.as_tensor(input_zero_point).reshape(()))
        if not 0 <= zx <= ACT_MAX:
            raise ValueError(f"input_zero_point={zx} is outside the input codes 0..{ACT_MAX}")
        m.input_zero_point.fill_(zx)
        if linear.bias is not None:
            m.bias.copy_(linear.bias.detach().float())
        return m.pack(quantize(w, scale, zp, 8, True, granularity))

    def pack(self, weight_int8: torch.Tensor) -> "StaticQuantLinear":
        """Pack the codes (out, in) int8 for the kernel, with the current scales and bias."""
        if weight_int8.dtype != torch.int8 or tuple(weight_int8.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight_int8 must be int8 {(self.out_features, self.in_features)}, got "
                             f"{weight_int8.dtype} {tuple(weight_int8.shape)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.granularity == "per_channel":
                qw = torch._make_per_channel_quantized_tensor(weight_int8, self.weight_scale.double(),
                                                              torch.zeros(self.out_features, dtype=torch.long), 0)
            else:
                qw = torch._make_per_tensor_quantized_tensor(weight_int8, self.weight_scale.item(), 0)
            engine, torch.backends.quantized.engine = torch.backends.quantized.engine, _engine()
            try:
                self._packed = torch.ops.quantized.linear_prepack(qw, self.bias)
            finally:
                torch.backends.quantized.engine = engine
        self._input_qparams = (self.input_scale.item(), int(self.input_zero_point))  # Python numbers, once
        s, z = self._input_qparams  # the kernel clamps its codes to 0..255; the input is clipped to 0..ACT_MAX first
        self._input_clip = (-z * s, (ACT_MAX - z) * s)
        return self

    @property
    def weight_int8(self) -> torch.Tensor:
        """The weight codes (out, in) int8, unpacked (a fresh tensor)."""
        return torch.ops.quantized.linear_unpack(self._packed)[0].int_repr()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight_int8"] = self.weight_int8

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        w = state_dict.pop(prefix + "weight_int8", None)  # load_state_dict hands each module a copy
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if w is None:
            missing_keys.append(prefix + "weight_int8")
        else:
            self.pack(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x.float().clamp(*self._input_clip), *self._input_qparams, self._packed)  # (..., in) -> (..., out)
        return y if x.dtype == torch.float32 else y.to(x.dtype)

    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """X_q (uint8) as the kernel computes it: round(X * (1/S) + Z), the multiply-add FUSED (one rounding,
        as fbgemm's and torch.quantize_per_tensor's vectorized code does). `primitives.quantize` rounds
        X * (1/S) first; at rare exact ties the two differ by one code (measured: ~1 value in 10^5)."""
        inv = (1.0 / self.input_scale).double()  # the float32 reciprocal; the float64 product below is exact
        t = (x.float().double() * inv + self.input_zero_point.double()).float()
        return torch.round(t).clamp(0, ACT_MAX).to(torch.uint8)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """What forward computes, from the primitives in float64: S_x S_w (X_q - Z_x) W_q^T + b."""
        xq = self.input_codes(x).double() - self.input_zero_point.double()
        acc = xq @ self.weight_int8.double().t()  # exact integers: |acc| < 2^53
        y = acc * (self.input_scale.double() * self.weight_scale.double())
        return (y if self.bias is None else y + self.bias.double()).float()

    def simulated(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized input times the dequantized weight with F.linear (float accumulation)."""
        xd = (self.input_codes(x).float() - self.input_zero_point) * self.input_scale
        scale = self.weight_scale if self.granularity == "per_tensor" else self.weight_scale[:, None]
        return nn.functional.linear(xd, self.weight_int8.float() * scale, self.bias)

    def spec(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias is not None,
                    granularity=self.granularity)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, {self.granularity} int8 "
                f"weight, input scale={self.input_scale.item():.4g} zero_point={int(self.input_zero_point)}, "
                f"bias={self.bias is not None}")


def is_static_linear(module: nn.Module) -> bool:
    return isinstance(module, StaticQuantLinear)


def static_state(module: StaticQuantLinear) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, tensors) of a StaticQuantLinear: plain tensors, nothing pickled."""
    if not is_static_linear(module):
        raise ValueError(f"static_state needs a StaticQuantLinear, got {type(module).__name__}")
    return module.spec(), {k: v.detach() for k, v in module.state_dict().items()}


def static_from_state(spec: dict, tensors: dict[str, torch.Tensor]) -> StaticQuantLinear:
    """The StaticQuantLinear that `static_state` described, with the same codes and qparams."""
    m = StaticQuantLinear(**{k: spec[k] for k in ("in_features", "out_features", "bias", "granularity")})
    m.load_state_dict(tensors)  # strict: names, shapes and dtypes must fit the spec
    return m


# ---- calibration ---------------------------------------------------------------------------

def calibrate(model: nn.Module, targets: dict[str, nn.Module], calib, observer: str = "minmax", **observer_kw):
    """{name: observer} after running `calib` through `model` with an observer on each target's
    input. Hooks are removed (and the train/eval mode restored) even if a batch fails."""
    batches = calibration_batches(calib, "static")
    observers = {n: make_observer(observer, ACT_BITS, ACT_SYMMETRIC, **observer_kw) for n in targets}
    mask = [None]  # the current batch's attention mask: padding positions are not observed

    def hook(o, x):
        m = mask[0]
        o.observe(x[m.bool()] if m is not None and x.dim() == 3 and x.shape[:2] == m.shape else x)

    hooks = [m.register_forward_pre_hook(lambda mod, args, o=observers[n]: hook(o, args[0]))
             for n, m in targets.items()]
    training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            for kw in batches:
                mask[0] = kw.get("attention_mask")
                model(**kw)
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    unseen = [n for n, o in observers.items() if not o.count]
    if unseen:
        raise ValueError(f"no calibration batch reached {unseen[:3]}: their input ranges are unknown")
    return observers


def static_quantize(model: nn.Module, cfg: QuantConfig, calib) -> None:
    """Replace, IN PLACE, every target nn.Linear of `model` (linear_targets with cfg.skip, already
    resolved) by a StaticQuantLinear calibrated on `calib` with the observer `cfg.observer`."""
    if cfg.granularity not in ("per_tensor", "per_channel"):
        raise ValueError(f"granularity={cfg.granularity!r} is not supported by mode='static': use per_tensor or "
                         f"per_channel (per_group is a weight_only option)")
    if not cfg.symmetric:
        raise ValueError("mode='static' quantizes weights symmetrically (INT8, zero-point 0; activations are "
                         "affine UINT8): use symmetric=True")
    _engine()
    targets = linear_targets(model, cfg.skip or ())
    observers = calibrate(model, targets, calib, cfg.observer)
    for name, m in targets.items():
        scale, zp = observers[name].qparams()
        set_module(model, name, StaticQuantLinear.from_linear(m, scale, zp, cfg.granularity))
