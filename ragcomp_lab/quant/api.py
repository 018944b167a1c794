"""quantize(model, cfg) -> a quantized copy; the input model is never modified.

Modes: `fp16` / `bf16` cast every float tensor; `weight_only` replaces each nn.Linear by a
QuantLinear (bits 2..8, per-tensor / per-channel / per-group); `gptq` fills the same QuantLinear
storage with error-compensated codes (gptq.py, needs calib); `dynamic` uses PyTorch's INT8 dynamic
quantization (torch.ao: INT8 weights, activations quantized per call at run time); `static`
fixes INT8 activation grids by calibration with an observer (static.py, observers.py); `qat` is
prepare / convert around the user's own training (qat.py). `smooth=alpha` (dynamic and static)
first applies SmoothQuant to every MLP (smooth.py), which needs `calib`.
Backend choices live here and in static.py (its fbgemm kernel): `dynamic_*` below are also what `serialize` uses to
store and rebuild torch.ao layers, so changing the dynamic backend touches only this module.

`cfg.skip` keeps modules in float: exact names, prefixes ("model.layers.0") or globs
("*.mlp.down_proj"). `skip=None` means the mode's default, DEFAULT_SKIP:
- weight_only and dynamic: nothing.
- static: every MLP down-projection. Its input (the SwiGLU product) carries outlier features
  (max/rms up to ~630 in SmolLM2) that one calibrated activation grid cannot resolve.

Dynamic activations per token (`activations="per_token"`, the default). torch.ao's kernel
(fbgemm) quantizes each call's input with ONE range, 7-bit on CPUs without VNNI
(reduce_range). In generation one call is one token, but a prompt's forward (and a batch)
shares that range over every token, and SmolLM2's attention-sink tokens carry activations
hundreds of times the rest: every other token is crushed. TokenDynamicLinear divides each
token's row by its own max |x| before the kernel and multiplies the output back, so each token
gets its own scale at the cost of two element-wise ops (none for a single token, whose range is
already its own). Measured on SmolLM2-135M, every Linear INT8, 32 RAG test answers: answer
perplexity 1.018 (FP32) -> 2.055 per tensor (top-1 agreement 0.82) -> 1.032 per token (0.99);
per-tensor with down_proj in FP32 (this module's old default) 1.046. Decoding after a 316-token
prompt, FP32 74 ms per token, every Linear INT8 37 ms (2.0x; FP32 is bound by reading 0.5 GB of
weights per token), a static KV cache no faster for either. Measured again later on the same
2-core AMD EPYC, interleaved in one run: FP32 67-74 ms, INT8 43-46 ms (1.5-1.7x): the ratio moves
with the shared machine's load. Rejected: one fused kernel call for q/k/v and one for gate/up
(same tokens, 1.46x against 1.57x unfused: the calls are not cheaper in sum) and the other
quantized engines (onednn 0.91x, x86 1.46x, fbgemm 1.56x, in one run).

Tied LM head (SmolLM2 ties it to the input embedding). `weight_only` quantizes the head once and
turns the embedding into a QuantEmbedding that reads the head's codes: one quantized copy, as in
the FP32 file. torch.ao cannot share codes with an embedding, so `dynamic` stores the head as a
second, INT8 copy next to the float embedding (+1 byte per vocabulary weight, 28 MB for
SmolLM2) because it decodes 10-20% faster; add "lm_head" to skip to keep the tie instead. In
weight_only, skipping either half of a tied pair keeps both in float.
"""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import warnings

import torch
from torch import nn

from ..config import QuantConfig
from .linear import QuantEmbedding, QuantLinear

CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}
NEEDS_CALIB = ("static", "gptq")  # both observe activations on calibration batches
ATTR = "ragcomp_quant_config"  # the QuantConfig a quantized copy was made with (skip resolved)
DEFAULT_SKIP = {"static": ("*.mlp.down_proj",)}  # skip=None: modules each mode keeps in float


def quantize(model: nn.Module, cfg: QuantConfig | None, calib=None, *, step: str | None = None) -> nn.Module:
    """A quantized deep copy of `model` (see the module docstring for the modes).

    `cfg.skip`: modules kept in float (None: DEFAULT_SKIP of the mode).
    `calib`: calibration batches, needed by `static` (and `gptq`), ignored otherwise.
    `step`: "prepare" | "convert" for mode="qat" (quant/qat.py): prepare gives a copy with
    fake-quantized weights to train; convert turns the trained copy into the real format
    (cfg=None: the scheme the model was prepared with).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if step == "convert":
        from . import qat  # local: qat imports this module
        return qat.convert(model, cfg)
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg must be a ragcomp_lab.QuantConfig, got {type(cfg).__name__}")
    if cfg.mode == "qat":
        if step == "prepare":
            from . import qat
            return qat.prepare(model, cfg)
        raise ValueError(f"step={step!r}: mode='qat' runs in two steps: prepared = quantize(model, cfg, "
                         f"step='prepare'), train it, then quantize(prepared, cfg, step='convert')")
    if step is not None:
        raise ValueError(f"step={step!r} is only for mode='qat'; mode={cfg.mode!r} quantizes in one call")
    if cfg.mode in NEEDS_CALIB:
        _check_calib(cfg.mode, calib)
    if cfg.smooth is not None:
        if calib is None:
            raise ValueError(f"smooth={cfg.smooth} needs calibration data: pass calib=, a non-empty list of input "
                             f"batches; the smoothing scales come from the activations' largest values per channel")
        _check_calib(cfg.mode, calib)
    if cfg.observer != "minmax" and cfg.mode != "static":
        raise NotImplementedError(f"observer={cfg.observer!r} is for calibrated modes; mode={cfg.mode!r} takes "
                                  f"weight ranges from min/max: use observer='minmax'")
    if cfg.mode == "dynamic" and cfg.activations is None:
        cfg = dataclasses.replace(cfg, activations="per_token")
    if cfg.skip is None:  # a default may match nothing in another architecture; a user's name must match
        cfg = dataclasses.replace(cfg, skip=DEFAULT_SKIP.get(cfg.mode, ()))
    else:
        _check_skip(model, cfg.skip)
    if cfg.mode in CASTS and cfg.skip:
        raise ValueError(f"skip={cfg.skip} is not supported by mode={cfg.mode!r}: a cast model runs in one dtype; "
                         f"use mode='weight_only' or 'dynamic' for mixed precision")
    out = copy.deepcopy(model)
    if cfg.smooth is not None:  # exact in float: moves activation outliers into the weights before INT8
        from .smooth import smooth_mlps
        from .static import _batches  # local: static imports this module
        smooth_mlps(out, _batches(calib), cfg.smooth)
    if cfg.mode in CASTS:
        out.to(CASTS[cfg.mode])
    elif cfg.mode == "weight_only":
        _weight_only(out, cfg)
    elif cfg.mode == "gptq":
        from .gptq import gptq_quantize  # local: gptq imports this module
        gptq_quantize(out, cfg, calib)
    elif cfg.mode == "static":
        from .static import static_quantize  # local: static imports this module
        static_quantize(out, cfg, calib)
    else:
        _dynamic(out, cfg)
    setattr(out, ATTR, copy.deepcopy(cfg))
    return out


def _check_calib(mode: str, calib) -> None:
    if calib is None:
        raise ValueError(f"mode={mode!r} needs calibration data to fix the activation ranges: pass calib=, a "
                         f"non-empty list of input batches (e.g. a few hundred tokens of representative prompts)")
    try:
        empty = len(calib) == 0
    except TypeError:
        raise ValueError(f"calib must be a list of input batches, got {type(calib).__name__}") from None
    if empty:
        raise ValueError(f"calib is empty: mode={mode!r} needs at least one calibration batch")


def _skipped(name: str, skip) -> bool:
    return any(name == s or name.startswith(s + ".") or fnmatch.fnmatchcase(name, s) for s in skip)


def _check_skip(model: nn.Module, skip) -> None:
    names = [n for n, _ in model.named_modules() if n]
    unknown = [s for s in skip if not any(_skipped(n, (s,)) for n in names)]
    if unknown:
        raise ValueError(f"skip has {unknown}, matching no module of this model; names look like "
                         f"{names[:2] + names[-1:]}")


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)


def tied_embeddings(model: nn.Module) -> dict[str, str]:
    """{linear name: embedding name} for each nn.Linear whose weight IS an nn.Embedding's weight."""
    emb = {id(m.weight): n for n, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Embedding)}
    return {n: emb[id(m.weight)] for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in emb}


def _targets(model: nn.Module, skip) -> dict[str, nn.Linear]:
    """The nn.Linear layers to quantize: not skipped, and not tied to a skipped embedding."""
    tied = tied_embeddings(model)
    return {n: m for n, m in model.named_modules() if type(m) is nn.Linear
            and not _skipped(n, skip) and not (n in tied and _skipped(tied[n], skip))}


def _weight_only(model: nn.Module, cfg: QuantConfig) -> None:
    targets = _targets(model, cfg.skip)
    for name, m in targets.items():  # check every layer before any work
        if cfg.granularity == "per_group" and m.in_features % cfg.group_size:
            raise ValueError(f"group_size={cfg.group_size} does not divide in_features={m.in_features} of layer "
                             f"{name!r}: use a divisor of {m.in_features}, or skip the layer")
    tied = tied_embeddings(model)
    for name, m in targets.items():
        q = QuantLinear.from_linear(m, bits=cfg.bits, symmetric=cfg.symmetric, granularity=cfg.granularity,
                                    group_size=cfg.group_size, scale_dtype=cfg.scale_dtype)
        set_module(model, name, q)
        if name in tied:
            emb = model.get_submodule(tied[name])
            set_module(model, tied[name], QuantEmbedding(q, emb.padding_idx, emb.weight.dtype))


# ---- dynamic: torch.ao ---------------------------------------------------------------------

with warnings.catch_warnings():  # torch.ao.quantization is deprecated but still the CPU INT8 path
    warnings.simplefilter("ignore")
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic
QCONFIGS = {"per_tensor": default_dynamic_qconfig, "per_channel": per_channel_dynamic_qconfig}


class TokenDynamicLinear(DynamicLinear):
    """torch.ao's dynamic INT8 Linear with one activation scale per token (row) instead of one per
    call: each row is divided by its max |x| before the kernel, and the output multiplied back."""

    @classmethod
    def from_dynamic(cls, m: DynamicLinear, bias: torch.Tensor | None) -> "TokenDynamicLinear":
        """The same layer over m's packed INT8 weight (shared, not unpacked and packed again); `bias`
        is m's float bias, which the kernel holds packed: forward needs it apart."""
        out = copy.copy(m)
        out.__class__ = cls
        out._modules = dict(m._modules)  # its own table of children; the packed params object is shared
        out._float_bias = None if bias is None else bias.detach().clone()  # not in state_dict: the kernel holds it
        return out

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:  # what DynamicLinear.forward runs, without its checks
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:  # one token: the kernel's per-call range is already its own
            return self._kernel(x)
        r = x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)  # (..., 1)
        y = self._kernel(x / r)  # every row now spans at most [-1, 1]: one range fits them all
        b = self._float_bias
        return y.mul_(r) if b is None else y.sub_(b).mul_(r).add_(b)

    def _get_name(self):
        return "TokenDynamicQuantizedLinear"


def _dynamic(model: nn.Module, cfg: QuantConfig) -> None:
    if cfg.granularity not in QCONFIGS:
        raise ValueError(f"granularity={cfg.granularity!r} is not supported by mode='dynamic': use per_tensor "
                         f"or per_channel (per_group is a weight_only option)")
    if not cfg.symmetric:
        raise ValueError("mode='dynamic' quantizes weights symmetrically (torch.ao INT8): use symmetric=True")
    targets = _targets(model, cfg.skip)
    names = list(targets)
    biases = {n: m.bias for n, m in targets.items()}  # float, before torch.ao packs them with the weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {n: QCONFIGS[cfg.granularity] for n in names}, dtype=torch.qint8, inplace=True)
        if cfg.activations == "per_token":
            for n in names:
                set_module(model, n, TokenDynamicLinear.from_dynamic(model.get_submodule(n), biases[n]))


def is_dynamic_linear(module: nn.Module) -> bool:
    return isinstance(module, DynamicLinear)


def dynamic_state(module: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    """(spec, tensors) of a torch.ao dynamic Linear: its INT8 weight, scales, zero-points, bias."""
    w, b = module._packed_params._weight_bias()  # unpacks the backend's prepacked weight
    per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    if per_channel:
        scale, zp = w.q_per_channel_scales(), w.q_per_channel_zero_points()
    else:
        scale, zp = torch.tensor([w.q_scale()], dtype=torch.float64), torch.tensor([w.q_zero_point()])
    tensors = {"weight_int8": w.int_repr(), "weight_scale": scale, "weight_zero_point": zp}
    if b is not None:
        tensors["bias"] = b.detach()
    spec = dict(in_features=module.in_features, out_features=module.out_features, bias=b is not None,
                granularity="per_channel" if per_channel else "per_tensor",
                activations="per_token" if isinstance(module, TokenDynamicLinear) else "per_tensor")
    return spec, tensors


def dynamic_from_state(spec: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The torch.ao dynamic Linear that `dynamic_state` described, with the same INT8 weight (a file
    written before activations were recorded holds per-tensor layers)."""
    q, scale, zp = tensors["weight_int8"], tensors["weight_scale"], tensors["weight_zero_point"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = (torch._make_per_channel_quantized_tensor(q, scale, zp, 0) if spec["granularity"] == "per_channel"
             else torch._make_per_tensor_quantized_tensor(q, scale.item(), int(zp.item())))
        m = DynamicLinear(spec["in_features"], spec["out_features"], bias_=spec["bias"], dtype=torch.qint8)
        m.set_weight_bias(w, tensors.get("bias"))
    if spec.get("activations") == "per_token":
        return TokenDynamicLinear.from_dynamic(m, tensors.get("bias"))
    return m
