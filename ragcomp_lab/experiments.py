"""The distillation experiments behind the book's numbers, run on the RAG test bed.

    make experiments                          # all of them (see EXPERIMENTS), several hours on 2 cores
    ragcomp-lab experiments sweep             # one of them

Finished runs are kept under ~/.cache/ragcomp-lab/experiment-runs/teacher-<digest> (one JSON per
student and config; the digest is the shipped adapter's, so runs of an earlier teacher are never
reused), and an interrupted series resumes where it stopped; delete that folder to start over.

Each writes results/<name>.json (date, machine, command, the exact configs, one row per run, the
test answers) and results/<name>.csv (the same rows, no answers), atomically. The chapters read
these files (`read`): a book build cannot rerun them, and nobody types the numbers in.

Every student is distilled from the top-k cache of the teacher's next-token distributions on
the train split (`rl.data.soft_targets`, built once, about 5 min) and scored on the 150 held-out
test questions, answered greedily.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from . import models
from .config import DistillConfig
from .evaluation import answer_perplexity
from .faithfulness import faithfulness
from .qa_metrics import answer_quality

RESULTS = Path(__file__).resolve().parent.parent / "results"
TOPK = 32
# Which teacher layers a student keeps: first and last layers, chosen by the fresh students'
# answer cross-entropy on 16 train rows (keeping the ends beat evenly spaced layers at 6 and 10).
LAYERS = {3: [0, 28, 29], 6: [0, 1, 2, 27, 28, 29], 10: [0, 1, 2, 3, 4, 5, 6, 27, 28, 29]}
STUDENT = 6  # the student of the KD-versus-no-teacher, sweep and feature/relation experiments
BASE = DistillConfig(T=2.0, alpha=0.5, steps=60, batch_size=8, lr=1e-3, warmup_steps=5, target="answer")
SWEEP_STEPS = 30  # the sweep's smaller budget
SEEDS = (0, 1, 2)
LONG_STEPS = 300  # the floor attempt: about 12 minutes per arm on 2 cores
FLOORS = {"non_embedding_reduction": 4.0, "decode_speedup": 3.0, "f1_retained": 0.9}


class Bed:
    """The teacher, the splits and the top-k cache, loaded once for a series of runs."""

    def __init__(self, teacher, tok, train, test, cache_path=None, runs_dir=None):
        if "teacher_answer" not in test.column_names:
            raise ValueError("the test split needs a teacher_answer column (rl.data.with_teacher_answers)")
        self.teacher, self.tok, self.train, self.test, self.cache_path = teacher, tok, train, test, cache_path
        self._soft = None
        self.runs = {}  # a run is deterministic: the same student and config are trained once
        self.runs_dir = runs_dir  # where finished runs are kept, so an interrupted series resumes

    @classmethod
    def default(cls, seed: int = 0) -> "Bed":
        """The shipped teacher on the default test bed, its top-k cache kept under the user cache."""
        from .data import rag_splits, with_teacher_answers

        from .data.splits import TESTBED
        from .data.teacher import SHIPPED_TOPK

        teacher, tok = models.load_teacher()
        splits = rag_splits(seed=seed)
        # seed 0's cache ships (make teacher-answers); another seed's is built once under the user cache,
        # the test bed's version and the teacher in its name: another teacher's cache would load silently
        runs = models.cache_dir() / "experiment-runs" / f"teacher-{models.adapter_digest()}"
        path = SHIPPED_TOPK if seed == 0 and TOPK == 32 else (
            runs / f"seed{seed}-train-answer-top{TOPK}-testbed{TESTBED}.safetensors")
        return cls(teacher, tok, splits["train"], with_teacher_answers(splits["test"]), path, runs)

    @property
    def soft_targets(self):
        from .data import soft_targets

        if self._soft is None:
            self._soft = soft_targets(self.teacher, self.tok, self.train, column="answer", k=TOPK, path=self.cache_path)
        return self._soft


def answer_metrics(answers: list[str], rows) -> dict[str, float]:
    """F1 / EM / ROUGE-L on the answerable questions, faithfulness to the retrieved passages,
    refusals, and hallucinations (answers to unanswerable questions)."""
    q = answer_quality(answers, rows["answer"], rows["kind"])
    f = faithfulness(answers, rows["passages"], rows["kind"])
    return {"f1": q["f1_answerable"], "em": q["em_answerable"], "rouge_l": q["rouge_l_answerable"],
            "f1_single_fact": q.get("f1_single_fact"), "f1_two_hop": q.get("f1_two_hop"),
            "faithfulness": f["faithfulness"], "unsupported_rate": f["unsupported_rate"],
            "hallucination_rate": f.get("hallucination_rate"),
            "refusal_rate": q.get("refusal_rate_unanswerable"), "false_refusal_rate": q["false_refusal_rate"]}


def train_student(bed: Bed, n_layers: int, cfg: DistillConfig, live: bool = False):
    """(student, History): a layer-dropped student distilled with `cfg` (from the top-k cache, or
    from the live teacher when `live`, which feature and relation losses need)."""
    from .distill import distill

    student = models.make_student(bed.teacher, keep_layers=LAYERS[n_layers])
    soft = None if live else bed.soft_targets  # with alpha = 1 the cached soft loss is logged, never used
    history = distill(bed.teacher, student, bed.train, cfg, tok=bed.tok, soft_targets=soft)
    return student, history


def score(bed: Bed, model) -> tuple[list[str], dict[str, float]]:
    from .data import teacher_answers

    answers = teacher_answers(model, bed.tok, bed.test, batch_size=16)
    return answers, answer_metrics(answers, bed.test) | {"answer_perplexity": answer_perplexity(model, bed.tok, bed.test)}


def run_row(bed: Bed, n_layers: int, cfg: DistillConfig, live: bool = False, **extra) -> dict:
    """Train one student, score it: one row of a result table (its answers under "answers")."""
    key = json.dumps([n_layers, LAYERS[n_layers], cfg.to_dict(), live, TOPK])
    saved = Path(bed.runs_dir) / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json" if bed.runs_dir else None
    if key not in bed.runs and saved is not None and saved.is_file():
        bed.runs[key] = json.loads(saved.read_text())
    if key in bed.runs:
        return {**bed.runs[key], **extra}
    student, history = train_student(bed, n_layers, cfg, live)
    answers, metrics = score(bed, student)
    last = history.losses[-1]
    row = {**extra, "n_layers": n_layers, "seed": cfg.seed, "T": cfg.T, "alpha": cfg.alpha, "steps": cfg.steps,
            "feature_weight": cfg.feature_weight, "relation_weight": cfg.relation_weight,
            "train_seconds": round(history.seconds, 1), "final_total": last["total"], "final_hard": last["hard"],
            "final_soft": last["soft"], **metrics, "answers": answers}
    bed.runs[key] = row
    if saved is not None:
        _write_atomic(saved, json.dumps(row))
    return row


def teacher_row(bed: Bed) -> dict:
    """The teacher's shipped test answers, scored like a student's."""
    answers = list(bed.test["teacher_answer"])
    return {"model": "teacher", "n_layers": bed.teacher.config.num_hidden_layers, **answer_metrics(answers, bed.test),
            "answer_perplexity": answer_perplexity(bed.teacher, bed.tok, bed.test), "answers": answers}


# --- the experiments -------------------------------------------------------------------------

def kd_vs_hard(bed: Bed) -> tuple[list[dict], dict]:
    """The same student, steps and data: hard labels alone (alpha = 1) against distillation."""
    rows = [teacher_row(bed)]
    for seed in SEEDS:
        for name, cfg in (("no teacher", dataclasses.replace(BASE, alpha=1.0, T=1.0, seed=seed)),
                          ("distilled", dataclasses.replace(BASE, seed=seed))):
            rows.append(run_row(bed, STUDENT, cfg, model=name))
    return rows, {"configs": {"no teacher": "BASE with alpha=1, T=1", "distilled": "BASE"}, "seeds": list(SEEDS)}


def sweep(bed: Bed) -> tuple[list[dict], dict]:
    """T x alpha at a small budget and one seed. alpha = 1 never reads the teacher, so T cannot
    change it: that column is trained once and shown for every T."""
    rows = []
    hard = None
    for alpha in (0.0, 0.5, 1.0):
        for T in (1.0, 2.0, 4.0, 8.0):
            cfg = dataclasses.replace(BASE, T=T, alpha=alpha, steps=SWEEP_STEPS)
            if alpha == 1.0 and hard is not None:
                rows.append({**hard, "T": T, "shared_with_T": hard["T"]})
                continue
            rows.append(run_row(bed, STUDENT, cfg, model=f"T={T:g}, alpha={alpha:g}"))
            hard = rows[-1] if alpha == 1.0 else hard
    return rows, {"steps": SWEEP_STEPS}


def _decode_costs(bed: Bed, named: dict) -> dict:
    """bench_models.decode_costs on a test prompt, each model on its faster of 1 and all threads."""
    from .bench_models import decode_costs, thread_counts

    return decode_costs(named, bed.tok, bed.test["prompt"][0], threads=thread_counts())


def _teacher_size_row(bed: Bed) -> dict:
    if "teacher_size" not in bed.runs:
        t_params = models.param_counts(bed.teacher)
        cost = _decode_costs(bed, {"teacher": bed.teacher})["teacher"]
        bed.runs["teacher_size"] = {**teacher_row(bed), **{f"{k}_params": v for k, v in t_params.items()},
                                    "decode_ms_per_token": cost["ms_per_token"], "decode_threads": cost["threads"]}
    return bed.runs["teacher_size"]


def size_ratios(bed: Bed, student, row: dict) -> dict:
    """`row` (a scored student) with the student's parameters and decoding latency, and the floor
    ratios against the teacher: fewer non-embedding weights, decoding speed-up, F1 and ROUGE-L kept.
    The speed-up is timed side by side with the teacher, interleaved in one run, each on its faster
    thread count (timed apart, the 6-layer student's speed-up in the committed results ran from 2.4x
    to 4.3x); beside it the bound the shapes set, models.weights_per_token's ratio."""
    teacher = _teacher_size_row(bed)
    params = models.param_counts(student)
    cost = _decode_costs(bed, {"teacher": bed.teacher, "student": student})
    ms, t_ms = cost["student"]["ms_per_token"], cost["teacher"]["ms_per_token"]
    return {**row, **{f"{k}_params": v for k, v in params.items()}, "decode_ms_per_token": ms,
            "decode_threads": cost["student"]["threads"], "teacher_decode_ms_per_token": t_ms,
            "non_embedding_reduction": teacher["non_embedding_params"] / params["non_embedding"],
            "decode_speedup": t_ms / ms,
            "decode_speedup_bound": models.weights_per_token(bed.teacher) / models.weights_per_token(student),
            "f1_retained": row["f1"] / teacher["f1"], "rouge_l_retained": row["rouge_l"] / teacher["rouge_l"]}


def student_size_row(bed: Bed, n_layers: int, cfg: DistillConfig, **extra) -> list[dict]:
    """[teacher row, student row]: quality, parameters and decoding latency, and the ratios."""
    teacher = _teacher_size_row(bed)
    row = run_row(bed, n_layers, cfg, **extra)
    student = models.make_student(bed.teacher, keep_layers=LAYERS[n_layers])  # same shape: the same cost
    return [teacher, size_ratios(bed, student, row)]


def student_size(bed: Bed) -> tuple[list[dict], dict]:
    """Keep 3, 6 and 10 of the 30 layers: quality retained, parameters, decoding latency."""
    rows = [_teacher_size_row(bed)] + [student_size_row(bed, n, BASE, model=f"{n} layers")[1] for n in sorted(LAYERS)]
    return rows, {"layers": LAYERS, "decode": "greedy, 32 new tokens after test prompt 0, median of 3", "floors": FLOORS}


def feature_relation(bed: Bed) -> tuple[list[dict], dict]:
    """Feature- and relation-based losses, each added to response-based KD, at equal budget.
    Both read the teacher's hidden states, so every run here uses the live teacher."""
    runs = {"response": {}, "+ feature": {"feature_weight": 1.0, "feature_kind": "cosine"},
            "+ relation": {"relation_weight": 1.0}}
    rows = [run_row(bed, STUDENT, dataclasses.replace(BASE, steps=SWEEP_STEPS, **kw), live=True, model=name)
            for name, kw in runs.items()]
    return rows, {"live_teacher": True, "steps": SWEEP_STEPS, "weights": runs}


def long_run(bed: Bed) -> tuple[list[dict], dict]:
    """The floor attempt: the 6-layer student (about 5x fewer non-embedding parameters) trained
    LONG_STEPS steps, distilled and without a teacher, against the floors of FLOORS."""
    long = dataclasses.replace(BASE, steps=LONG_STEPS)
    teacher, distilled = student_size_row(bed, STUDENT, long, model="distilled")
    hard = run_row(bed, STUDENT, dataclasses.replace(long, alpha=1.0, T=1.0), model="no teacher")
    return [teacher, distilled, hard], {"steps": LONG_STEPS, "floors": FLOORS}


EXPERIMENTS = {"kd_vs_hard": kd_vs_hard, "student_size": student_size, "sweep": sweep,
               "feature_relation": feature_relation, "long_run": long_run,
               "compress": lambda bed: __import__("ragcomp_lab.experiments_compress", fromlist=["compress_run"]).compress_run(bed),
               "ptq_vs_qat": lambda bed: __import__("ragcomp_lab.experiments_quant", fromlist=["ptq_vs_qat"]).ptq_vs_qat(bed),
               "pool_run": lambda bed: __import__("ragcomp_lab.experiments_pool", fromlist=["pool_run"]).pool_run(bed),
               "pool_kd": lambda bed: __import__("ragcomp_lab.experiments_pool", fromlist=["pool_kd"]).pool_kd(bed),
               "teacher": lambda bed: __import__("ragcomp_lab.experiments_teacher", fromlist=["teacher_run"]).teacher_run(bed),
               "heads": lambda bed: __import__("ragcomp_lab.experiments_heads", fromlist=["head_designs"]).head_designs(bed),
               "student": lambda bed: __import__("ragcomp_lab.experiments_student",
                                                 fromlist=["student_run"]).student_run(bed),
               "ptq_vs_qat_pool": lambda bed: __import__("ragcomp_lab.experiments_quant",
                                                         fromlist=["ptq_vs_qat"]).ptq_vs_qat(bed, source="pool"),
               # writes after each of its hour-long runs and keeps those already written: it needs out_dir
               "pool_seeds": lambda bed, out_dir: __import__("ragcomp_lab.experiments_pool",
                                                             fromlist=["pool_seeds"]).pool_seeds(bed, out_dir=out_dir)}
WRITES_AS_IT_GOES = ("pool_seeds",)


# --- files ---------------------------------------------------------------------------------

def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def utc_now() -> str:
    """The date results are stamped with: UTC, to the second, ISO 8601."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> Path:
    """Write through a temporary file and rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write(name: str, rows: list[dict], info: dict, out_dir=RESULTS, seconds: float | None = None) -> Path:
    """results/<name>.json (everything) and results/<name>.csv (the rows' scalar columns), atomically.
    The document records the version of the test bed it was measured on (`testbed`)."""
    from .data.splits import TESTBED

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"experiment": name, "command": f"ragcomp-lab experiments {name}", "date": utc_now(),
           "machine": machine(), "seconds": seconds, "testbed": TESTBED, "base_config": BASE.to_dict(), "topk": TOPK,
           **info, "rows": rows}
    path = _write_atomic(out_dir / f"{name}.json", json.dumps(doc, indent=1) + "\n")
    # the table holds the scalar columns; answers, curves and configs stay in the JSON
    columns = list(dict.fromkeys(k for r in rows for k, v in r.items()
                                 if k != "answers" and not isinstance(v, (list, dict))))
    table = io.StringIO()
    w = csv.DictWriter(table, columns, extrasaction="ignore", lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    _write_atomic(out_dir / f"{name}.csv", table.getvalue())
    return path


def read(name: str, out_dir=RESULTS) -> dict:
    """The document an experiment wrote: its rows, config, machine, date, command and `testbed`,
    the version of the test bed its questions came from (1 for a file written before it was recorded)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"no experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    path = Path(out_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} among the results: run `ragcomp-lab experiments {name}` "
                                f"(or make experiments)")
    return {"testbed": 1} | json.loads(path.read_text())


def testbed_note(doc: dict) -> str | None:
    """A sentence for a reader when `doc` was measured on another test bed than today's, else None."""
    from .data.splits import TESTBED

    if doc.get("testbed", 1) == TESTBED:
        return None
    return (f"Measured on test bed {doc.get('testbed', 1)} (one wording per fact, no held-out wording or domain), "
            f"not on today's test bed {TESTBED}: its questions are rag_splits(testbed={doc.get('testbed', 1)}), and "
            f"`{doc['command']}` measures it again on the current one.")


def spread(values: list) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value) of the values that are not None
    (a metric that did not apply to a run, e.g. faithfulness when every answer was a refusal)."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def run(names=None, out_dir=RESULTS) -> list[Path]:
    """Run the named experiments (all by default), each written as soon as it ends."""
    names = list(names or EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"no experiment {unknown[0]!r}: choose from {', '.join(EXPERIMENTS)}")
    bed, paths = Bed.default(), []
    for name in names:
        began = time.perf_counter()
        rows, info = EXPERIMENTS[name](bed, out_dir) if name in WRITES_AS_IT_GOES else EXPERIMENTS[name](bed)
        # one that writes as it goes spans several sittings: its info counts its own training time
        seconds = None if name in WRITES_AS_IT_GOES else round(time.perf_counter() - began, 1)
        paths.append(write(name, rows, info, out_dir, seconds))
        print(f"{name}: {paths[-1]}", flush=True)
    return paths
