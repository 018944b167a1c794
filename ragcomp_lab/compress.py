"""rl.compress: the two-step strategy in one call. Distill a student, quantize the teacher and the
student, evaluate every variant against the quality bar.

Variants: teacher FP32, teacher INT8, student FP32, student INT8, student INT4 (post-training),
and student INT4 QAT (fake-quantized weights, distilled from the teacher again, then converted).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import nn

from . import models
from .config import DistillConfig, QuantConfig
from .evaluation import evaluate
from .report import QualityBar

INT8 = QuantConfig(bits=8, mode="dynamic", granularity="per_channel")  # the fast CPU INT8 path (quant/api.py)
INT4 = QuantConfig(bits=4, mode="weight_only", granularity="per_group", group_size=64)


class Compressed(dict):
    """{variant name: Report}, plus `verdicts` (name: Verdict), `models` (name: module), the
    distilled `student` and its `history`."""

    def __init__(self, reports, verdicts, variants, history):
        super().__init__(reports)
        self.verdicts, self.models, self.history = verdicts, variants, history
        self.student = variants.get("student FP32")

    def passing(self) -> list[str]:
        """The variants that meet the bar, smallest saved size first."""
        return sorted((n for n, v in self.verdicts.items() if v), key=lambda n: self[n].size["saved_bytes"])

    def table(self) -> list[dict]:
        """One row per variant: the headline metrics and whether it meets the bar."""
        return [{"variant": n, "f1": r.f1, "rouge_l": r.rouge_l, "faithfulness": r.faithfulness,
                 "hallucination": r.hallucination, "perplexity": r.perplexity,
                 "saved_MB": r.size["saved_bytes"] / 1e6, "non_embedding_weights": r.size["non_embedding_weights"],
                 "decode_ms_per_token": r.latency.get("decode_ms_per_token"), "meets_bar": bool(self.verdicts[n])}
                for n, r in self.items()]


def _student(teacher, spec) -> nn.Module:
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, (list, tuple)):
        return models.make_student(teacher, keep_layers=list(spec))
    if isinstance(spec, Mapping):
        return models.make_student(teacher, **spec)
    raise ValueError(f"student_spec={spec!r} is not allowed: give the teacher layers to keep (e.g. [0, 1, 2, 27, 28, "
                     f"29]), a dict of rl.models.make_student arguments, or a student model")


def _splits(data):
    if not isinstance(data, Mapping) or not {"train", "test"} <= set(data):
        raise ValueError("data must hold a 'train' and a 'test' split, as rl.data.rag_splits() returns")
    return data["train"], data["test"]


def compress(teacher, student_spec, data, distill_cfg: DistillConfig, quant_cfg: QuantConfig | None = None,
             bar: QualityBar | None = None, *, tok, int8: QuantConfig = INT8, qat_steps: int | None = None,
             soft_targets=None, progress: bool = True) -> Compressed:
    """Distill `student_spec` from `teacher` on data["train"], quantize, evaluate on data["test"].

    `quant_cfg` is the student's low-bit scheme (default INT4 per-group 64, round to nearest);
    `int8` the 8-bit one for both models. `qat_steps` (default distill_cfg.steps) distills the
    fake-quantized student for the QAT variant; 0 leaves QAT out. `bar` defaults to no gate.
    """
    from .distill import distill
    from .quant.api import quantize

    if not isinstance(distill_cfg, DistillConfig):
        raise ValueError(f"distill_cfg must be a ragcomp_lab.DistillConfig, got {type(distill_cfg).__name__}")
    quant_cfg = INT4 if quant_cfg is None else quant_cfg
    if not isinstance(quant_cfg, QuantConfig) or quant_cfg.mode not in ("weight_only", "gptq"):
        raise ValueError(f"quant_cfg={quant_cfg!r} is not allowed: give the student's low-bit weight scheme, a "
                         f"QuantConfig with mode 'weight_only' or 'gptq'")
    bar = QualityBar() if bar is None else bar
    if not isinstance(bar, QualityBar):
        raise ValueError(f"bar must be a ragcomp_lab.QualityBar, got {type(bar).__name__}")
    qat_steps = distill_cfg.steps if qat_steps is None else qat_steps
    train, test = _splits(data)
    student = _student(teacher, student_spec)
    history = distill(teacher, student, train, distill_cfg, tok=tok, progress=progress, soft_targets=soft_targets)
    calib = _calibration(tok, train) if quant_cfg.mode == "gptq" else None
    variants = {"teacher FP32": teacher, "teacher INT8": quantize(teacher, int8), "student FP32": student,
                "student INT8": quantize(student, int8),
                f"student INT{quant_cfg.bits}": quantize(student, quant_cfg, calib=calib)}
    if qat_steps:
        prepared = quantize(student, dataclasses.replace(quant_cfg, mode="qat"), step="prepare")
        distill(teacher, prepared, train, dataclasses.replace(distill_cfg, steps=qat_steps, warmup_steps=0),
                tok=tok, progress=progress, soft_targets=soft_targets)
        variants[f"student INT{quant_cfg.bits} QAT"] = quantize(prepared, None, step="convert")
    reports = {}
    for name, model in variants.items():
        ref = None if name == "teacher FP32" else teacher
        answers = reports["teacher FP32"].table["answer"] if ref is not None else None
        reports[name] = evaluate(model, tok, test, reference=ref, reference_answers=answers, name=name,
                                 progress=progress)
    return Compressed(reports, {n: r.meets(bar) for n, r in reports.items()}, variants, history)


def _calibration(tok, train, n: int = 32) -> list[dict]:
    """The first `n` train prompts, one batch each: calibration data for GPTQ."""
    prompts = list(train["prompt"][:n])
    return [dict(tok(p, return_tensors="pt", add_special_tokens=False)) for p in prompts]


def ship(reports, bar: QualityBar, max_ms_per_token: float | None = None) -> str | None:
    """The variant to ship under a latency budget: among those that meet `bar` and decode within
    `max_ms_per_token` (None: no budget), the smallest saved file; None when no variant qualifies.
    `reports` maps names to Reports (a Compressed, or Reports read back with Report.from_dict)."""
    if not isinstance(bar, QualityBar):
        raise ValueError(f"bar must be a ragcomp_lab.QualityBar, got {type(bar).__name__}")
    if max_ms_per_token is not None and (isinstance(max_ms_per_token, bool) or
                                         not isinstance(max_ms_per_token, (int, float)) or max_ms_per_token <= 0):
        raise ValueError(f"max_ms_per_token={max_ms_per_token!r} is not allowed: give a positive number of "
                         f"milliseconds, or None for no budget")
    fits = [n for n, r in reports.items() if r.meets(bar) and (
        max_ms_per_token is None or (r.latency.get("decode_ms_per_token") or float("inf")) <= max_ms_per_token)]
    return min(fits, key=lambda n: (reports[n].size["saved_bytes"], reports[n].latency.get("decode_ms_per_token")),
               default=None)
