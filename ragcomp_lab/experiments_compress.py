"""The distill-then-quantize experiment behind the chapter "Distill, then quantize":

    ragcomp-lab experiments compress

runs `rl.compress` on the test bed (the 6-layer student, distilled, then INT8 and INT4, post-training
and QAT), evaluates every variant on the 150 test questions with `rl.evaluate`, writes
results/compress.json (each variant's Report without its table, its verdict against BAR, the
per-question answers) and keeps the distilled student under ~/.cache/ragcomp-lab/students, where
`make bench` finds it to measure distilled + INT8 against the teacher.
"""
from __future__ import annotations

import dataclasses

from . import experiments, models
from .config import DistillConfig
from .experiments import BASE, LONG_STEPS, Bed
from .report import QualityBar, Report

CONFIG = dataclasses.replace(BASE, steps=LONG_STEPS)  # the floor attempt's budget (experiments.long_run)
QAT_STEPS = 60  # distillation steps of the fake-quantized INT4 student
# The bar of issue 6's floor: 85% of the teacher's answer F1 (0.996 on the test split), faithful
# answers, and refusals kept for the unanswerable questions.
BAR = QualityBar(f1=0.85, faithfulness=0.8, max_hallucination=0.2)


def student_dir():
    """Where the experiment keeps its distilled student (FP32, rl.save format)."""
    return models.cache_dir() / "students" / "compress"


def compress_run(bed: Bed, cfg: DistillConfig = CONFIG, qat_steps: int = QAT_STEPS, bar: QualityBar = BAR,
                 keep=None) -> tuple[list[dict], dict]:
    """Rows (one per variant: headline metrics, verdict, answers) and the info written beside them."""
    from .compress import compress
    from .quant.serialize import save

    layers = experiments.LAYERS[experiments.STUDENT]
    result = compress(bed.teacher, layers, {"train": bed.train, "test": bed.test}, cfg, bar=bar,
                      tok=bed.tok, qat_steps=qat_steps, soft_targets=bed.soft_targets)
    keep = student_dir() if keep is None else keep
    save(result.student, keep)
    rows = [{**row, "answers": list(result[row["variant"]].table["answer"])} for row in result.table()]
    info = {"student_layers": layers, "distill_config": cfg.to_dict(), "qat_steps": qat_steps,
            "bar": dataclasses.asdict(bar), "student_saved_to": str(keep),
            "reports": {n: r.to_dict() for n, r in result.items()},
            "verdicts": {n: str(v) for n, v in result.verdicts.items()},
            "losses": result.history.losses[:: max(1, len(result.history.losses) // 100)]}
    return rows, info


def reports(doc: dict) -> dict[str, Report]:
    """{variant: Report} rebuilt from results/compress.json (tables not kept)."""
    return {n: Report.from_dict(d) for n, d in doc["reports"].items()}
