"""Quantization: the primitives (scale, zero-point, quantize, dequantize, fake quantization)."""
from .primitives import dequantize, fake_quant, int_range, qparams, quantize

__all__ = ["qparams", "quantize", "dequantize", "fake_quant", "int_range"]
