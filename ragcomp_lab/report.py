"""What `rl.evaluate` returns (`Report`), and the quality gate (`QualityBar`, `report.meets`).

A Report is a flat, named set of measured metrics plus the per-question table behind them. A
QualityBar names the metrics a deployed variant must reach: minimums (f1, rouge_l, ...) and
maximums (max_hallucination, max_perplexity, ...). `report.meets(bar)` returns a `Verdict`:
truthy when every bar is met, and its str() lists each shortfall with the value and the bar.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields


class QualityBarError(AssertionError):
    """Raised by `report.meets(bar, strict=True)` when a variant falls short of the bar."""


@dataclass(frozen=True)
class QualityBar:
    """The quality a variant must keep. None: not gated. Rates and scores in [0, 1] except BLEU
    (sacrebleu's 0-100) and perplexity (>= 1)."""

    f1: float | None = None  # answer token F1 on the answerable questions, at least
    em: float | None = None
    rouge_l: float | None = None
    bleu: float | None = None
    faithfulness: float | None = None  # lexical support of the asserting answers, at least
    max_hallucination: float | None = None  # unanswerable questions answered instead of refused, at most
    max_unsupported: float | None = None  # asserting answers with a word no passage holds, at most
    max_perplexity: float | None = None  # of the gold answers given the prompts, at most

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{f.name}={v!r} is not allowed: give a finite number, or None to leave it ungated")
            top = 100.0 if f.name == "bleu" else math.inf if f.name == "max_perplexity" else 1.0
            bottom = 1.0 if f.name == "max_perplexity" else 0.0
            if not bottom <= v <= top:
                raise ValueError(f"{f.name}={v!r} is out of range: it must lie in [{bottom:g}, {top:g}]")

    def gates(self) -> list[tuple[str, str, float]]:
        """(metric, "min" | "max", bar) for each metric the bar sets."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out.append((f.name[4:], "max", v) if f.name.startswith("max_") else (f.name, "min", v))
        return out


@dataclass(frozen=True)
class Verdict:
    """The outcome of a quality gate: truthy when passed; str() lists every shortfall."""

    name: str
    shortfalls: tuple[tuple[str, float | None, str, float], ...]  # (metric, value, "min"|"max", bar)
    checked: tuple[str, ...]

    def __bool__(self) -> bool:
        return not self.shortfalls

    def __str__(self) -> str:
        if not self.shortfalls:
            return f"{self.name} meets the bar ({', '.join(self.checked)})"
        lines = [f"{self.name} falls short on {len(self.shortfalls)} of {len(self.checked)} metrics:"]
        for metric, value, kind, bar in self.shortfalls:
            shown = "not measured" if value is None else f"{value:.4g}"
            lines.append(f"  {metric} = {shown}, needs {'>=' if kind == 'min' else '<='} {bar:g}")
        return "\n".join(lines)


@dataclass
class Report:
    """The measured quality, faithfulness, agreement and efficiency of one model on one split.

    Metrics are attributes and keys (`report.f1`, `report["rouge_l"]`); `by_kind` splits the
    answer metrics by question kind (`report.by_kind["two_hop"]["f1"]`); `table` holds one row
    per question (a datasets.Dataset: `.to_pandas()` for pandas).
    """

    name: str
    # quality (answerable questions)
    f1: float | None
    em: float | None
    rouge: dict  # rouge1 / rouge2 / rougeL F-measures
    rouge_l: float | None
    bleu: float | None  # sacrebleu corpus BLEU, 0-100
    perplexity: float  # of the gold answers given the prompts
    text_perplexity: float | None  # of held-out plain text (the split's passages)
    # faithfulness and hallucination
    faithfulness: float | None  # lexical support of the asserting answers
    faithfulness_embedding: float | None  # all-MiniLM-L6-v2 support of the asserting answers
    unsupported: float | None  # asserting answers with a word no passage holds
    hallucination: float | None  # unanswerable questions answered instead of refused
    false_refusal: float | None  # answerable questions refused
    # agreement with the reference model (None without one)
    agreement: dict | None
    # efficiency
    size: dict  # saved bytes, embedding / non-embedding weights
    latency: dict  # forward ms, decode ms per token, tokens per second, threads
    table: object = field(repr=False)  # datasets.Dataset, one row per question
    # per question kind: {kind: {n, f1, em, refusal_rate, hallucination, false_refusal}} (qa_metrics.by_kind);
    # last, with a default, so that Reports built or saved before it still work
    by_kind: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(f"{key!r} is not a metric of this report: it has {', '.join(self.keys())}")
        return getattr(self, key)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if f.name not in ("table",)]

    def to_dict(self) -> dict:
        """Every metric (no table), JSON-ready."""
        return {k: getattr(self, k) for k in self.keys()}

    @classmethod
    def from_dict(cls, d: dict, table=None) -> "Report":
        """A Report rebuilt from `to_dict()` (e.g. read back from results/), `table` optional."""
        optional = {"table", "by_kind"}  # by_kind: absent from the dicts saved before it existed
        missing = [k for k in (f.name for f in fields(cls)) if k not in optional and k not in d]
        if missing:
            raise ValueError(f"not a Report's dict: it lacks {', '.join(missing)}")
        return cls(**{k: d[k] for k in (f.name for f in fields(cls)) if k not in optional}, table=table,
                   by_kind=d.get("by_kind", {}))

    def value(self, metric: str):
        """A gated metric's value: names as in QualityBar (hallucination, perplexity, ...)."""
        return getattr(self, metric)

    def meets(self, bar: QualityBar, strict: bool = False) -> Verdict:
        """Does this variant reach `bar`? With `strict`, a shortfall raises QualityBarError."""
        if not isinstance(bar, QualityBar):
            raise ValueError(f"bar must be a ragcomp_lab.QualityBar, got {type(bar).__name__}")
        shortfalls = []
        for metric, kind, limit in bar.gates():
            v = self.value(metric)
            if v is None or (v < limit if kind == "min" else v > limit):
                shortfalls.append((metric, v, kind, limit))
        verdict = Verdict(self.name, tuple(shortfalls), tuple(m for m, _, _ in bar.gates()))
        if strict and not verdict:
            raise QualityBarError(str(verdict))
        return verdict

    def replace(self, **changes) -> "Report":
        return dataclasses.replace(self, **changes)
