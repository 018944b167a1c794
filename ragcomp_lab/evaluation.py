"""rl.evaluate(model, tok, data, reference=None) -> Report: every metric of a generator variant.
(The module is `evaluation`, so that `rl.evaluate` the function does not shadow it.)

Quality: token F1 and EM, ROUGE-1/2/L (rouge-score), corpus BLEU (sacrebleu), perplexity of the
gold answers given the prompts and of held-out plain text (the split's passages).
Faithfulness: lexical support (faithfulness.py) and embedding support (all-MiniLM-L6-v2), the
unsupported-answer rate, hallucination (unanswerable questions answered instead of refused).
Per question kind (`report.by_kind`): rows, F1, EM, refusals, hallucination, false refusals.
Agreement with a reference model: token-level KL on the gold answers and answer match.
Efficiency: weights (embedding / non-embedding), saved bytes, forward and decoding latency.

Answers are greedy, so every quality number is deterministic for a fixed model; latencies are
measured (median of n after a warm-up, thread count recorded) and vary with the machine's load.
"""
from __future__ import annotations

import functools
import math
import re
import tempfile
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import _validate, models
from .bench import latency as _latency
from .faithfulness import faithfulness as _faithfulness
from .faithfulness import lexical_support
from .qa_metrics import answer_quality, exact_match, is_refusal, normalize_answer, token_f1
from .qa_metrics import by_kind as quality_by_kind
from .report import Report

COLUMNS = ("prompt", "answer", "kind", "passages")


class ContextLengthWarning(UserWarning):
    """A prompt plus the tokens generated after it does not fit in the model's context."""


def _check_data(data) -> None:
    _validate.rag_rows("data", data, COLUMNS, "there is nothing to evaluate")


def _warn_past_context(model, tok, prompts: list[str], new_tokens: int) -> None:
    """Warn (ContextLengthWarning) when a prompt plus `new_tokens` exceeds the model's context,
    config.max_position_embeddings: nothing truncates a prompt, so the scores would silently
    measure the model at positions it never learnt."""
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not context:
        return  # the model states no context: nothing to check against
    lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=False)["input_ids"]]
    over = sum(n + new_tokens > context for n in lengths)
    if over:
        warnings.warn(f"{over} of {len(lengths)} prompts plus the {new_tokens} new tokens exceed the model's context "
                      f"of {context} tokens (config.max_position_embeddings): the longest prompt has {max(lengths)} "
                      f"tokens. Past its context a model runs at positions it was never trained on, so those "
                      f"answers and their scores are unreliable (a model with learned position embeddings fails)",
                      ContextLengthWarning, stacklevel=3)  # 3: the caller of rl.evaluate


def answer_perplexity(model, tok, rows, batch_size: int = 16, column: str = "answer") -> float:
    """exp(mean cross-entropy) of the `column` answers' tokens given the prompts, on the answerable
    rows: smooth where F1 is all or nothing, so it shows progress before answers come out right."""
    from .data.encode import IGNORE, collate, encode_pair
    from .distill import answer_logits

    pairs = [encode_pair(tok, p, a) for p, a, k in zip(rows["prompt"], rows[column], rows["kind"]) if k != "unanswerable"]
    if not pairs:
        raise ValueError("no answerable rows: the answer perplexity needs at least one")
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start:start + batch_size], tok.pad_token_id)
        labels = batch["labels"][:, 1:]
        with torch.inference_mode():
            logits = answer_logits(model, batch)[0].float()
        total += torch.nn.functional.cross_entropy(logits, labels[labels != IGNORE], reduction="sum").item()
        count += int((labels != IGNORE).sum())
    return math.exp(total / count)


def text_perplexity(model, tok, texts: list[str], window: int = 256) -> float:
    """Perplexity of plain text: the texts joined, cut into windows of `window` tokens."""
    _validate.positive_int("window", window)
    ids = tok("\n".join(texts), add_special_tokens=False, return_tensors="pt").input_ids[0]
    if len(ids) < 2:
        raise ValueError("the text needs at least two tokens for a perplexity")
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start:start + window + 1].unsqueeze(0)
        if chunk.shape[1] < 2:
            break
        with torch.inference_mode():
            logits = model(input_ids=chunk[:, :-1]).logits.float()
        total += torch.nn.functional.cross_entropy(logits[0], chunk[0, 1:], reduction="sum").item()
        count += chunk.shape[1] - 1
    return math.exp(total / count)


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)


def rouge(predictions: list[str], golds: list[str]) -> dict[str, float]:
    """Mean ROUGE-1 / ROUGE-2 / ROUGE-L F-measures (Google's rouge-score, no stemming)."""
    scores = [_rouge_scorer().score(g, p) for p, g in zip(predictions, golds)]
    return {k: sum(s[k].fmeasure for s in scores) / len(scores) for k in ("rouge1", "rouge2", "rougeL")}


def bleu(predictions: list[str], golds: list[str]) -> float:
    """Corpus BLEU by sacrebleu (13a tokenizer, up to 4-grams, brevity penalty), 0-100, with
    effective order: answers of one or two words have no 4-grams, and plain BLEU would score
    even a perfect set of them 0. Read it beside F1: it rewards n-gram overlap, not correctness."""
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True).corpus_score(predictions, [golds]).score


def _sentences(passages: list[str]) -> list[str]:
    return [s for p in passages for s in re.split(r"(?<=[.!?])\s+", p) if s.strip()]


def embedding_support(answers: list[str], queries: list[str], passages: list[list[str]]) -> list[float | None]:
    """Per answer: the best cosine similarity (all-MiniLM-L6-v2) between the claim "query answer"
    and one sentence of the passages; None for a refusal or an answer with no content.
    It measures whether the claim reads like something the context says. It fails on short
    factual answers: a wrong year in an on-topic sentence still scores high."""
    from .data.retrieval import embed
    from .faithfulness import content_words

    out: list[float | None] = []
    for answer, query, ps in zip(answers, queries, passages):
        if is_refusal(answer) or not content_words(answer):
            out.append(None)
            continue
        vectors = embed([f"{query} {answer}"] + _sentences(ps))
        out.append(float((vectors[1:] @ vectors[0]).max()))
    return out


def token_agreement(model, reference, tok, rows, batch_size: int = 16) -> dict[str, float]:
    """On the gold answers, teacher-forced (answerable rows): mean KL(reference || model) per
    token in nats, and top-1 agreement (share of positions where both pick the same next token)."""
    from .data.encode import collate, encode_pair
    from .distill import answer_logits

    pairs = [encode_pair(tok, p, a) for p, a, k in zip(rows["prompt"], rows["answer"], rows["kind"]) if k != "unanswerable"]
    if not pairs:
        raise ValueError("no answerable rows: token agreement needs at least one")
    kl, same, count = 0.0, 0, 0
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start:start + batch_size], tok.pad_token_id)
        with torch.inference_mode():
            p = answer_logits(reference, batch)[0].float().log_softmax(-1)
            q = answer_logits(model, batch)[0].float().log_softmax(-1)
        kl += (p.exp() * (p - q)).sum().item()
        same += int((p.argmax(-1) == q.argmax(-1)).sum())
        count += p.shape[0]
    return {"token_kl": kl / count, "top1": same / count}


def token_kl(model, reference, tok, rows, batch_size: int = 16) -> float:
    """Mean KL(reference || model) per gold-answer token, in nats (answerable rows)."""
    return token_agreement(model, reference, tok, rows, batch_size)["token_kl"]


def saved_bytes(model) -> int:
    """Bytes of the folder `rl.save` writes (weights with packed codes and scales, plus quant.json)."""
    from .quant.serialize import save

    with tempfile.TemporaryDirectory() as tmp:
        path = save(model, Path(tmp) / "model")
        return sum(f.stat().st_size for f in path.iterdir())


def decode_ms_per_token(model, tok, prompt: str, new_tokens: int = 32, repeat: int = 3) -> float:
    """Greedy decoding cost per generated token (ms): median of `repeat` runs after a warm-up,
    `new_tokens` tokens forced (no early stop), prompt included as in real use."""
    _validate.positive_int("new_tokens", new_tokens)
    batch = tok(prompt, return_tensors="pt", add_special_tokens=False)
    run = lambda: model.generate(**batch, do_sample=False, min_new_tokens=new_tokens,  # noqa: E731
                                 max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
    return 1e3 * _latency(run, warmup=1, repeat=repeat).median / new_tokens


def forward_ms(model, tok, prompt: str, repeat: int = 5) -> float:
    """One forward pass over `prompt` (ms), median of `repeat` after a warm-up."""
    batch = tok(prompt, return_tensors="pt", add_special_tokens=False)

    def run():
        with torch.inference_mode():
            model(**batch)
    return 1e3 * _latency(run, warmup=1, repeat=repeat).median


def _answers(model, tok, data, batch_size: int) -> list[str]:
    from .data import teacher_answers

    return teacher_answers(model, tok, data, batch_size=batch_size, progress=False)


def evaluate(model, tok, data, reference=None, *, name: str | None = None, batch_size: int = 16,
             measure_latency: bool = True, progress: bool = True, reference_answers: list[str] | None = None) -> Report:
    """Measure `model` on `data` (rows with prompt, answer, kind, passages: a rag_splits split).

    `reference` (e.g. the teacher) adds agreement: token-level KL and answer match; its greedy
    answers are generated unless `reference_answers` (e.g. its own report's table["answer"]) are given.
    `report.by_kind` splits the answer metrics by the rows' kind (qa_metrics.by_kind). A prompt
    that does not fit in the model's context with the answer's tokens warns (ContextLengthWarning).
    """
    _check_data(data)
    from .data.teacher import MAX_NEW_TOKENS  # what _answers generates

    _warn_past_context(model, tok, data["prompt"], MAX_NEW_TOKENS)
    stages = ["answers", "perplexity", "text perplexity", "faithfulness"] + (["reference"] if reference is not None
                                                                              else []) + ["size", "latency"]
    bar = tqdm(stages, desc=f"evaluate {name or type(model).__name__}", disable=not progress, unit="stage")
    step = iter(bar)
    model.eval()
    next(step)
    answers = _answers(model, tok, data, batch_size)
    golds, kinds, passages = list(data["answer"]), list(data["kind"]), list(data["passages"])
    queries = list(data["query"] if "query" in data.column_names else data["prompt"])
    answerable = [i for i, k in enumerate(kinds) if k != "unanswerable"]
    quality = answer_quality(answers, golds, kinds)
    preds_a, golds_a = [answers[i] for i in answerable], [golds[i] for i in answerable]
    rouge_all = rouge(preds_a, golds_a) if answerable else None
    next(step)
    perplexity = answer_perplexity(model, tok, data, batch_size) if answerable else math.nan
    next(step)
    texts = sorted({p for ps in passages for p in ps})
    text_ppl = text_perplexity(model, tok, texts)
    next(step)
    faith = _faithfulness(answers, passages, kinds)
    support = [lexical_support(a, ps) for a, ps in zip(answers, passages)]
    emb = embedding_support(answers, queries, passages)
    emb_values = [e for e in emb if e is not None]
    agreement, ref_answers = None, None
    if reference is not None:
        next(step)
        ref_answers = list(reference_answers) if reference_answers is not None else _answers(reference, tok, data,
                                                                                                batch_size)
        if len(ref_answers) != len(answers):
            raise ValueError(f"reference_answers has {len(ref_answers)} answers for {len(answers)} rows")
        agreement = {**(token_agreement(model, reference, tok, data, batch_size) if answerable
                        else {"token_kl": None, "top1": None}),
                     "answer_match": sum(normalize_answer(a) == normalize_answer(r) for a, r in zip(answers, ref_answers))
                     / len(answers)}
    next(step)
    size = {**{f"{k}_weights": v for k, v in models.param_counts(model).items()}, "saved_bytes": saved_bytes(model)}
    next(step)
    lat = {"threads": torch.get_num_threads()}
    if measure_latency:
        decode = decode_ms_per_token(model, tok, data["prompt"][0])
        lat |= {"forward_ms": forward_ms(model, tok, data["prompt"][0]), "decode_ms_per_token": decode,
                "tokens_per_second": 1e3 / decode}
    bar.close()
    table = _table(data, answers, support, emb, ref_answers)
    return Report(name=name or type(model).__name__, f1=quality.get("f1_answerable"), em=quality.get("em_answerable"),
                  rouge=rouge_all, rouge_l=rouge_all["rougeL"] if rouge_all else None,
                  bleu=bleu(preds_a, golds_a) if answerable else None, perplexity=perplexity, text_perplexity=text_ppl,
                  faithfulness=faith["faithfulness"],
                  faithfulness_embedding=sum(emb_values) / len(emb_values) if emb_values else None,
                  unsupported=faith["unsupported_rate"], hallucination=faith.get("hallucination_rate"),
                  false_refusal=quality.get("false_refusal_rate"), agreement=agreement, size=size, latency=lat,
                  table=table, by_kind=quality_by_kind(answers, golds, kinds))


def _table(data, answers, support, emb, ref_answers):
    from datasets import Dataset

    cols = {c: list(data[c]) for c in ("id", "kind", "query") if c in data.column_names}
    cols |= {"gold": list(data["answer"]), "answer": answers,
             "f1": [token_f1(a, g) for a, g in zip(answers, data["answer"])],
             "em": [exact_match(a, g) for a, g in zip(answers, data["answer"])],
             "refusal": [is_refusal(a) for a in answers], "support": support, "support_embedding": emb,
             "unsupported": [s is not None and s < 1 for s in support],
             "hallucinated": [k == "unanswerable" and not is_refusal(a) for a, k in zip(answers, data["kind"])]}
    if ref_answers is not None:
        cols["reference_answer"] = ref_answers
    return Dataset.from_dict(cols)
