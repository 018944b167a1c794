"""ragcomp-lab: distill and quantize the generator of a RAG system, and measure what it costs."""
from . import data, diagram, digits, heads, layer_choice, models, qa_metrics, quant
from .config import DistillConfig, QuantConfig
from .distill import Callback, History, distill
from .compress import Compressed, compress, ship
from .evaluation import evaluate
from .report import QualityBar, QualityBarError, Report
from .losses import LossParts, distillation_loss, feature_loss, feature_projection, kd_kl, relation_loss, topk_kd_kl
from .quant.api import quantize
from .quant.linear import QuantLinear
from .quant.serialize import load, save
from .softmax import entropy, log_softmax_t, softmax_t

__version__ = "0.1.0"
__all__ = [
    "DistillConfig", "QuantConfig", "LossParts", "distill", "History", "Callback",
    "softmax_t", "log_softmax_t", "entropy",
    "kd_kl", "topk_kd_kl", "distillation_loss", "feature_loss", "feature_projection", "relation_loss",
    "quantize", "save", "load", "QuantLinear", "evaluate", "Report", "QualityBar", "QualityBarError", "compress", "Compressed", "ship",
    "quant", "diagram", "digits", "data", "heads", "layer_choice", "models", "qa_metrics",
]
