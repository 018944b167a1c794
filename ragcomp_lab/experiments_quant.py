"""PTQ against QAT on the 6-layer student: `ragcomp-lab experiments ptq_vs_qat` and `ptq_vs_qat_pool`.

The float student is experiments.LAYERS[STUDENT], either distilled with experiments.BASE from the
top-k cache of the seed-0 train split (ptq_vs_qat, source="split"), or experiments_pool's student,
trained on the train pool (ptq_vs_qat_pool, source="pool"; the extra steps then distill from the
live teacher on the pool). At each of BITS it is quantized two ways, weight-only, every
nn.Linear (the tied LM head and input embedding too, most of the model's weights): per-channel at
8 bits, per-group (GROUP_SIZE inputs per scale) at 4 bits and fewer, symmetric, float16 scales.

- PTQ: round-to-nearest of the float student's weights (rl.quantize, mode="weight_only").
- QAT: prepare -> `extra_config` steps of distillation from the teacher (BASE's T, alpha and
  batch size, on the float student's data; lower peak lr, warm-up then cosine) -> convert.
- Control "float + steps": the float student given the same extra steps without fake quantization,
  then PTQ of that model at each width. Without it, QAT's gain over PTQ mixes two causes: training
  against the quantization grid, and simply training longer.

Every model is scored as the other experiments score a student: answer perplexity on the
answerable questions of the whole test split (150 questions), plus KL / top-1 agreement with the
float student there (evaluation.token_agreement), and the size `rl.save` writes. Greedy answers
(F1, faithfulness, hallucination) come from the first ANSWER_ROWS test questions only: generation
is most of a row's cost (3 min for the 150 on a busy 2-core machine, 14 rows). Finished rows and
the two float students are kept in the bed's runs_dir, so an interrupted run resumes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import torch

from . import experiments as ex
from . import models
from .config import DistillConfig, QuantConfig
from .distill import distill
from .evaluation import answer_perplexity, saved_bytes, token_agreement
from .quant.api import quantize

BITS = (8, 4, 3, 2)
GROUP_SIZE = 64  # per-group below 8 bits: one float16 scale per 64 inputs (0.25 extra bits per weight)
EXTRA_STEPS = 30  # QAT steps, and the float control's extra steps
EXTRA_LR = 2e-4  # a fifth of BASE's peak: QAT starts from a trained student, not from scratch
EXTRA_WARMUP = 3
ANSWER_ROWS = 48  # test questions answered greedily per model (28 single-fact, 9 two-hop, 11 unanswerable)


def scheme(bits: int, mode: str = "weight_only") -> QuantConfig:
    """The quantization of `bits`-bit weights used here: per-channel at 8 bits, per-group below."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits={bits!r} is not supported: use an integer from 2 to 8")
    if bits == 8:
        return QuantConfig(bits=8, mode=mode, granularity="per_channel")
    return QuantConfig(bits=bits, mode=mode, granularity="per_group", group_size=GROUP_SIZE)


def extra_config(base: DistillConfig, steps: int = EXTRA_STEPS) -> DistillConfig:
    """The extra distillation of QAT and of the float control: base's T, alpha, batch size, seed and
    target; `steps` steps at a lower peak lr, warm-up then cosine decay to 0."""
    return dataclasses.replace(base, steps=steps, lr=EXTRA_LR, warmup_steps=min(EXTRA_WARMUP, steps - 1))


def qat_distill(bed, student, bits: int, cfg: DistillConfig, data, soft_targets):
    """(converted, prepared, History): QAT run as distillation on `data` against `soft_targets`
    (e.g. bed.train with bed.soft_targets, the bed's top-k cache; None distills from the live
    teacher); `student` itself is not modified."""
    prepared = quantize(student, scheme(bits, mode="qat"), step="prepare")
    history = distill(bed.teacher, prepared, data, cfg, tok=bed.tok, soft_targets=soft_targets, progress=False)
    return quantize(prepared, None, step="convert"), prepared, history


def max_logit_gap(a, b, tok, prompts) -> float:
    """Largest |logit difference| of two models on `prompts` (e.g. QAT's prepared and converted)."""
    batch = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        return (a(**batch).logits.float() - b(**batch).logits.float()).abs().max().item()


def score_row(bed, model, reference, /, **extra) -> dict:
    """One scored model: answer metrics on the first ANSWER_ROWS test rows; perplexity and agreement
    with `reference` (the float student) on the whole test split; the saved size."""
    from .data import teacher_answers

    rows = bed.test.select(range(min(ANSWER_ROWS, len(bed.test))))
    answers = teacher_answers(model, bed.tok, rows, batch_size=16, progress=False)
    return {**extra, **ex.answer_metrics(answers, rows), "answer_rows": len(rows),
            "answer_perplexity": answer_perplexity(model, bed.tok, bed.test),
            **token_agreement(model, reference, bed.tok, bed.test), "saved_bytes": saved_bytes(model),
            "answers": answers}


class _Store:
    """Rows and float students of this experiment under bed.runs_dir (nothing kept without one)."""

    def __init__(self, bed, key: list, row_key: list):
        self.bed, self.key, self.row_key = bed, json.dumps(key), json.dumps(row_key)

    def _path(self, name: str, suffix: str) -> Path | None:
        if not self.bed.runs_dir:
            return None
        key = self.key if name.startswith("model:") else f"{self.key}|{self.row_key}"
        digest = hashlib.sha1(f"{key}|{name}".encode()).hexdigest()[:16]
        return Path(self.bed.runs_dir) / f"ptq_vs_qat-{digest}{suffix}"

    def row(self, name: str, make) -> dict:
        path = self._path(name, ".json")
        if path is not None and path.is_file():
            return json.loads(path.read_text())
        row = make()
        if path is not None:
            ex._write_atomic(path, json.dumps(row))
        return row

    def student(self, name: str, make):
        """(model, train seconds): loaded from runs_dir when it was trained before."""
        from safetensors.torch import load_model, save_model

        path = self._path(f"model:{name}", ".safetensors")
        model = models.make_student(self.bed.teacher, keep_layers=ex.LAYERS[ex.STUDENT])
        if path is not None and path.is_file():
            load_model(model, str(path))
            return model.eval(), json.loads(path.with_suffix(".json").read_text())["seconds"]
        seconds = make(model)
        if path is not None:
            tmp = path.with_name(path.name + ".tmp")
            save_model(model, str(tmp))
            tmp.replace(path)
            ex._write_atomic(path.with_suffix(".json"), json.dumps({"seconds": seconds}))
        return model.eval(), seconds


SOURCES = ("split", "pool")  # where the float student comes from (see ptq_vs_qat)


def ptq_vs_qat(bed, bits=BITS, steps: int = EXTRA_STEPS, source: str = "split", pool=None,
               pool_config=None) -> tuple[list[dict], dict]:
    """Rows: float, float + steps, and per width PTQ, QAT and PTQ of float + steps (see the module doc).

    source="split": the float student is distilled with ex.BASE on bed.train from the top-k cache,
    and the extra steps (QAT's and the control's) distill on bed.train from that cache too.
    source="pool": the float student is experiments_pool's (hard labels on the train pool,
    `pool_config`, default experiments_pool.CONFIG; loaded from its finished run, trained
    otherwise), and the extra steps distill from the live teacher on the pool (`pool`, default
    rl.data.train_pool()): the cache covers the seed-0 train split only."""
    from . import experiments_pool as xp

    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not supported: use one of {', '.join(SOURCES)}")
    bits = tuple(bits)
    if not bits:
        raise ValueError("bits is empty: give at least one width, e.g. (8, 4, 3, 2)")
    for b in bits:
        scheme(b)  # a clear error before any training
    extra = extra_config(ex.BASE, steps)
    if source == "split":
        data, soft, base = bed.train, bed.soft_targets, ex.BASE
        key = [ex.STUDENT, ex.LAYERS[ex.STUDENT], ex.BASE.to_dict(), extra.to_dict(), ex.TOPK, GROUP_SIZE]
    else:
        from .data import train_pool

        data = train_pool() if pool is None else pool
        soft, base = None, xp.CONFIG if pool_config is None else pool_config
        key = ["pool", ex.STUDENT, ex.LAYERS[ex.STUDENT], base.to_dict(), extra.to_dict(), sorted(data["id"]),
               GROUP_SIZE]
    store = _Store(bed, key, [ANSWER_ROWS])
    common = {"n_layers": ex.STUDENT, "T": extra.T, "alpha": extra.alpha}

    def train(cfg):
        def make(model):
            return distill(bed.teacher, model, data, cfg, tok=bed.tok, soft_targets=soft, progress=False).seconds
        return make

    def train_float(model):
        if source == "split":
            return train(base)(model)
        trained, history, _, _ = xp.trained_student(bed, base, data)
        model.load_state_dict(trained.state_dict())
        return None  # its training time is pool_run's (results/pool_run.json), not this call's

    def train_longer(model):
        model.load_state_dict(student.state_dict())
        return train(extra)(model)

    student, base_s = store.student("float", train_float)
    longer, long_s = store.student("float+steps", train_longer)
    rows = [store.row("float", lambda: score_row(bed, student, student, **common, model="float", method="float",
                                                 bits=None, steps=base.steps,
                                                 train_seconds=None if base_s is None else round(base_s, 1))),
            store.row("float+steps", lambda: score_row(bed, longer, student, **common, model="float + steps",
                                                       method="float + steps", bits=None, steps=base.steps + steps,
                                                       train_seconds=round(long_s, 1)))]
    for b in bits:
        q = {"bits": b, "granularity": scheme(b).granularity, "group_size": scheme(b).group_size}
        rows.append(store.row(f"ptq{b}", lambda: score_row(bed, quantize(student, scheme(b)), student, **common,
                                                           model=f"PTQ {b}-bit", method="PTQ", steps=base.steps, **q)))

        def qat_row():
            converted, prepared, history = qat_distill(bed, student, b, extra, data, soft)
            gap = max_logit_gap(prepared, converted, bed.tok, bed.test["prompt"][:2])
            return score_row(bed, converted, student, **common, model=f"QAT {b}-bit", method="QAT",
                             steps=base.steps + steps, train_seconds=round(history.seconds, 1),
                             final_total=history.losses[-1]["total"], prepared_converted_max_gap=gap, **q)
        rows.append(store.row(f"qat{b}", qat_row))
        rows.append(store.row(f"ptq+steps{b}", lambda: score_row(
            bed, quantize(longer, scheme(b)), student, **common, model=f"PTQ of float + steps {b}-bit",
            method="PTQ of float + steps", steps=base.steps + steps, **q)))
    info = {"source": source, "float_config": base.to_dict(), "live_teacher": soft is None, "bits": list(bits),
            "group_size": GROUP_SIZE, "extra_config": extra.to_dict(), "answer_rows": ANSWER_ROWS,
            "schemes": {str(b): scheme(b).to_dict() for b in bits}, "reference": "float student",
            "recovered": {metric: recovered(rows, metric) for metric in ("answer_perplexity", "answer_cross_entropy")}}
    return rows, info


def _metric(row: dict, metric: str) -> float:
    if metric == "answer_cross_entropy":  # nats per answer token: the log of the perplexity
        return math.log(row["answer_perplexity"])
    return row[metric]


def recovered(rows: list[dict], metric: str = "answer_perplexity") -> dict[str, dict[str, float | None]]:
    """Per width, the share of PTQ's loss in `metric` (lower is better) that QAT recovers:
    "vs float": (PTQ - QAT) / (PTQ - float), torchao's measure; "vs float + steps": the same
    against the control, (PTQ' - QAT) / (PTQ' - float'), primes on the student trained as long as
    QAT. None where PTQ lost nothing (the share is undefined)."""
    by = {(r["method"], r.get("bits")): r for r in rows}
    if ("float", None) not in by:
        raise ValueError("recovered needs the float row (method 'float') among the rows")
    out = {}
    for (method, bits), qat in by.items():
        if method != "QAT":
            continue
        share = {}
        for name, ptq, ref in (("vs float", ("PTQ", bits), ("float", None)),
                               ("vs float + steps", ("PTQ of float + steps", bits), ("float + steps", None))):
            if ptq not in by or ref not in by:
                continue
            p, q, f = _metric(by[ptq], metric), _metric(qat, metric), _metric(by[ref], metric)
            share[name] = (p - q) / (p - f) if p - f > 0 else None
        out[str(bits)] = share
    return out
