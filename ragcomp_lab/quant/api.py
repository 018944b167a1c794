"""quantize(model, cfg) -> a quantized copy; the input model is never modified.

Modes: `fp16` / `bf16` cast every float tensor; `weight_only` replaces each nn.Linear by a
QuantLinear (bits 2..8, per-tensor / per-channel / per-group); `gptq` fills the same QuantLinear
storage with error-compensated codes (gptq.py, needs calib); `dynamic` uses PyTorch's INT8 dynamic
quantization (torch.ao: INT8 weights, activations quantized per call at run time); `static`
fixes INT8 activation grids by calibration with an observer (static.py, observers.py); `qat` is
prepare / convert around the user's own training (qat.py). `smooth=alpha` (dynamic and static)
first applies SmoothQuant to every MLP (smooth.py), which needs `calib`.
Backend choices live in dynamic.py (torch.ao's dynamic layers, and how serialize stores and rebuilds
them) and static.py (its fbgemm kernel). The helpers every mode shares are in targets.py.

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

import torch
from torch import nn

from ..config import QuantConfig
from . import qat
from .dynamic import (TokenDynamicLinear, dynamic_from_state, dynamic_quantize, dynamic_state,  # the last four: api.<name>
                      is_dynamic_linear)
from .gptq import gptq_quantize
from .linear import QuantEmbedding, QuantLinear
from .smooth import smooth_mlps
from .static import static_quantize
# ATTR, DEFAULT_SKIP, set_module and tied_embeddings are read as api.<name> by users' code too
from .targets import ATTR, DEFAULT_SKIP, calibration_batches, check_skip, linear_targets, set_module, tied_embeddings

CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}
NEEDS_CALIB = ("static", "gptq")  # both observe activations on calibration batches


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
        return qat.convert(model, cfg)
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg must be a ragcomp_lab.QuantConfig, got {type(cfg).__name__}")
    if cfg.mode == "qat":
        if step == "prepare":
            return qat.prepare(model, cfg)
        raise ValueError(f"step={step!r}: mode='qat' runs in two steps: prepared = quantize(model, cfg, "
                         f"step='prepare'), train it, then quantize(prepared, cfg, step='convert')")
    if step is not None:
        raise ValueError(f"step={step!r} is only for mode='qat'; mode={cfg.mode!r} quantizes in one call")
    if cfg.mode in NEEDS_CALIB:
        calibration_batches(calib, cfg.mode)  # refused here, before the deep copy
    if cfg.smooth is not None:
        if calib is None:
            raise ValueError(f"smooth={cfg.smooth} needs calibration data: pass calib=, a non-empty list of input "
                             f"batches; the smoothing scales come from the activations' largest values per channel")
        calibration_batches(calib, cfg.mode)
    if cfg.observer != "minmax" and cfg.mode != "static":
        raise NotImplementedError(f"observer={cfg.observer!r} is for calibrated modes; mode={cfg.mode!r} takes "
                                  f"weight ranges from min/max: use observer='minmax'")
    if cfg.mode == "dynamic" and cfg.activations is None:
        cfg = dataclasses.replace(cfg, activations="per_token")
    if cfg.skip is None:  # a default may match nothing in another architecture; a user's name must match
        cfg = dataclasses.replace(cfg, skip=DEFAULT_SKIP.get(cfg.mode, ()))
    else:
        check_skip(model, cfg.skip)
    if cfg.mode in CASTS and cfg.skip:
        raise ValueError(f"skip={cfg.skip} is not supported by mode={cfg.mode!r}: a cast model runs in one dtype; "
                         f"use mode='weight_only' or 'dynamic' for mixed precision")
    out = copy.deepcopy(model)
    if cfg.smooth is not None:  # exact in float: moves activation outliers into the weights before INT8
        smooth_mlps(out, calibration_batches(calib, cfg.mode), cfg.smooth)
    if cfg.mode in CASTS:
        out.to(CASTS[cfg.mode])
    elif cfg.mode == "weight_only":
        _weight_only(out, cfg)
    elif cfg.mode == "gptq":
        gptq_quantize(out, cfg, calib)
    elif cfg.mode == "static":
        static_quantize(out, cfg, calib)
    else:
        dynamic_quantize(out, cfg)
    setattr(out, ATTR, copy.deepcopy(cfg))
    return out


def _weight_only(model: nn.Module, cfg: QuantConfig) -> None:
    targets = linear_targets(model, cfg.skip)
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
