"""Quantization: the primitives (scale, zero-point, quantize, dequantize, fake quantization), bit
packing, the weight-only QuantLinear, model-level quantization (`api.quantize`, re-exported as
`rl.quantize`) and saving / loading quantized models."""
from . import api, packing, qat, sensitivity
from .linear import QuantEmbedding, QuantLinear
from .primitives import dequantize, fake_quant, int_range, qparams, quantize
from .serialize import load, save

__all__ = ["qparams", "quantize", "dequantize", "fake_quant", "int_range",
           "QuantLinear", "QuantEmbedding", "save", "load", "api", "packing", "sensitivity"]
