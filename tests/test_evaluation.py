import math
import warnings

import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab import data, evaluation as ev, models
from ragcomp_lab.report import QualityBar, QualityBarError, Report

TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32)


@pytest.fixture(scope="module")
def setup(teacher_and_tok):
    """Two tiny models on the real tokenizer, and 8 test rows (answerable and unanswerable)."""
    big, tok = teacher_and_tok
    a = models.make_student(big, num_hidden_layers=2, hidden_size=64, intermediate_size=128, seed=1, **TINY)
    b = models.make_student(big, num_hidden_layers=2, hidden_size=64, intermediate_size=128, seed=2, **TINY)
    test = data.rag_splits(seed=0)["test"]
    kinds = list(test["kind"])
    rows = test.select([i for i, k in enumerate(kinds) if k != "unanswerable"][:6]
                       + [i for i, k in enumerate(kinds) if k == "unanswerable"][:2])
    return a, b, tok, rows


@pytest.fixture(scope="module")
def report(setup):
    a, b, tok, rows = setup
    return rl.evaluate(a, tok, rows, reference=b, name="tiny", progress=False)


def test_report_has_every_metric_named_after_it(report, setup):
    for key in ("rouge", "bleu", "perplexity", "faithfulness", "hallucination", "latency", "size", "f1", "em",
                "rouge_l", "text_perplexity", "faithfulness_embedding", "unsupported", "agreement"):
        assert key in report.keys() and report[key] is getattr(report, key)
    assert set(report.rouge) == {"rouge1", "rouge2", "rougeL"} and report.rouge_l == report.rouge["rougeL"]
    assert 0 <= report.f1 <= 1 and 0 <= report.bleu <= 100 and report.perplexity > 1
    assert report.hallucination in (0.0, 0.5, 1.0)  # two unanswerable rows
    assert {"forward_ms", "decode_ms_per_token", "tokens_per_second", "threads"} <= set(report.latency)
    assert report.latency["tokens_per_second"] == pytest.approx(1e3 / report.latency["decode_ms_per_token"])
    assert report.size["total_weights"] == models.param_counts(setup[0])["total"]
    with pytest.raises(KeyError, match="not a metric"):
        report["accuracy"]


def test_per_question_table_matches_the_aggregates(report, setup):
    rows = setup[3]
    t = report.table
    assert len(t) == len(rows) and {"id", "kind", "gold", "answer", "f1", "support", "reference_answer"} <= set(
        t.column_names)
    answerable = [f for f, k in zip(t["f1"], t["kind"]) if k != "unanswerable"]
    assert report.f1 == pytest.approx(sum(answerable) / len(answerable))
    assert report.hallucination == pytest.approx(sum(t["hallucinated"]) / 2)
    assert report.table.to_pandas().shape[0] == len(rows)


def test_quality_numbers_are_deterministic(report, setup):
    a, b, tok, rows = setup
    again = rl.evaluate(a, tok, rows, reference=b, name="tiny", progress=False, measure_latency=False)
    skip = {"latency"}
    assert {k: v for k, v in again.to_dict().items() if k not in skip} == {
        k: v for k, v in report.to_dict().items() if k not in skip}


def test_agreement_with_itself_is_perfect(setup):
    a, _, tok, rows = setup
    r = rl.evaluate(a, tok, rows, reference=a, progress=False, measure_latency=False)
    assert r.agreement["answer_match"] == 1.0 and r.agreement["token_kl"] == pytest.approx(0, abs=1e-6)
    assert r.agreement["top1"] == 1.0
    assert ev.token_kl(a, setup[1], tok, rows) > 0


def test_metrics_match_their_reference_libraries(setup):
    from sacrebleu.metrics import BLEU
    from rouge_score import rouge_scorer

    preds, golds = ["the red fox", "in 1987", "Thylvale"], ["the red fox jumped", "1987", "Thylvale city"]
    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for key, value in ev.rouge(preds, golds).items():
        assert value == pytest.approx(sum(sc.score(g, p)[key].fmeasure for p, g in zip(preds, golds)) / 3)
    assert ev.bleu(preds, golds) == pytest.approx(BLEU(effective_order=True).corpus_score(preds, [golds]).score)
    assert ev.bleu(["1987", "Thylvale"], ["1987", "Thylvale"]) == pytest.approx(100)  # no 4-grams, still perfect


def test_text_perplexity_is_the_models_own_loss(setup):
    a, _, tok, _ = setup
    text = "The river Ostvale runs north of the old mill, where the Krurnholt family kept bees."
    ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = a(input_ids=ids, labels=ids).loss.item()
    assert ev.text_perplexity(a, tok, [text]) == pytest.approx(math.exp(loss), rel=1e-4)


def test_saved_size_shrinks_with_bits(setup):
    a = setup[0]
    fp32 = ev.saved_bytes(a)
    int8 = ev.saved_bytes(rl.quantize(a, rl.QuantConfig(bits=8, mode="weight_only")))
    int4 = ev.saved_bytes(rl.quantize(a, rl.QuantConfig(bits=4, mode="weight_only", granularity="per_group",
                                                        group_size=32)))
    assert int4 < int8 < fp32 / 3


@pytest.mark.parametrize("cfg", [rl.QuantConfig(bits=4, mode="weight_only", granularity="per_group", group_size=32),
                                 rl.QuantConfig(bits=8, mode="dynamic")])
def test_quantized_models_count_the_same_weights(setup, cfg):
    a = setup[0]
    float_counts, q_counts = models.param_counts(a), models.param_counts(rl.quantize(a, cfg))
    if cfg.mode == "dynamic":  # torch.ao keeps the tied head as its own INT8 copy: a second vocabulary matrix
        emb = a.get_input_embeddings().weight.numel()
        assert q_counts == {k: v + emb * (k != "non_embedding") for k, v in float_counts.items()}
    else:
        assert q_counts == float_counts


def test_bad_data_is_refused(setup):
    a, _, tok, rows = setup
    with pytest.raises(ValueError, match="missing"):
        rl.evaluate(a, tok, rows.remove_columns("passages"), progress=False)
    with pytest.raises(ValueError, match="empty"):
        rl.evaluate(a, tok, rows.select([]), progress=False)


def _report(**kw):
    base = dict(name="v", f1=0.8, em=0.7, rouge={"rougeL": 0.8}, rouge_l=0.8, bleu=30.0, perplexity=3.0,
                text_perplexity=20.0, faithfulness=0.9, faithfulness_embedding=0.7, unsupported=0.1,
                hallucination=0.2, false_refusal=0.0, agreement=None, size={}, latency={}, table=None)
    return Report(**(base | kw))


def test_quality_gate_passes_and_lists_every_shortfall():
    bar = QualityBar(f1=0.75, rouge_l=0.7, faithfulness=0.85, max_hallucination=0.25, max_perplexity=4)
    assert _report().meets(bar)
    verdict = _report(f1=0.5, hallucination=0.4, faithfulness=None).meets(bar)
    assert not verdict
    text = str(verdict)
    assert "f1 = 0.5, needs >= 0.75" in text and "hallucination = 0.4, needs <= 0.25" in text
    assert "faithfulness = not measured" in text and "rouge_l" not in text
    with pytest.raises(QualityBarError, match="f1 = 0.5"):
        _report(f1=0.5).meets(bar, strict=True)


@pytest.mark.parametrize("kw", [{"f1": 1.5}, {"max_hallucination": -0.1}, {"bleu": 101}, {"max_perplexity": 0.5},
                                {"f1": "high"}, {"rouge_l": float("nan")}])
def test_quality_bar_refuses_values_out_of_range(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        QualityBar(**kw)


def test_by_kind_round_trips_and_old_dicts_still_load():
    by_kind = {"two_hop": {"n": 3, "f1": 0.5, "em": 0.0, "refusal_rate": 0.0, "hallucination": None,
                           "false_refusal": 0.0}}
    r = _report(by_kind=by_kind)
    assert Report.from_dict(r.to_dict()) == r and r["by_kind"] == by_kind
    old = {k: v for k, v in r.to_dict().items() if k != "by_kind"}  # a report saved before by_kind existed
    assert Report.from_dict(old).by_kind == {} and _report().by_kind == {}
    assert "by_kind={'two_hop': {'n': 3" in repr(r)


# The rest builds a 1-layer Llama from a config (no teacher weights): the tokenizer alone comes from
# the shipped GGUF file, and the rows from a JSON Lines file with every kind.
LINES = [{"query": "Who founded Veltrona Labs?", "contexts": ["The founder of Veltrona Labs is Ilsa Quorne."],
          "answer": "Ilsa Quorne", "kind": "single_fact"},
         {"query": "Where is Darnmoor?", "contexts": ["Darnmoor is in the region of Tessaly, north of the river "
                                                      "Ostvale, where the Krurnholt family kept bees for a century."],
          "answer": "Tessaly", "kind": "single_fact"},
         {"query": "In which town was the founder of Veltrona Labs born?",
          "contexts": ["The founder of Veltrona Labs is Ilsa Quorne.", "Ilsa Quorne was born in Darnmoor."],
          "answer": "Darnmoor", "kind": "two_hop"},
         {"query": "What is the hobby of Ilsa Quorne?", "contexts": ["Ilsa Quorne was born in Darnmoor."],
          "kind": "unanswerable"},
         {"query": "What colour is the Quillex Pro?", "contexts": ["The Quillex Pro is red."], "answer": "red"}]


@pytest.fixture(scope="module")
def gguf_tok():
    from transformers import AutoTokenizer

    from ragcomp_lab._hf import quiet_loading

    gguf = models._gguf_source()
    with quiet_loading():
        return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="module")
def kind_rows(tmp_path_factory):
    import json

    path = tmp_path_factory.mktemp("jsonl") / "kinds.jsonl"
    path.write_text("\n".join(json.dumps(l) for l in LINES) + "\n")
    return data.load_jsonl(path)


def _tiny_llama(tok, context: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                        max_position_embeddings=context, pad_token_id=tok.pad_token_id,
                                        tie_word_embeddings=True)).eval()


def _prompt_tokens(tok, rows) -> list[int]:
    return [len(tok(p, add_special_tokens=False).input_ids) for p in rows["prompt"]]


def test_by_kind_matches_the_table(gguf_tok, kind_rows):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ev.ContextLengthWarning)  # every prompt fits: no warning
        r = rl.evaluate(_tiny_llama(gguf_tok, 2048), gguf_tok, kind_rows, progress=False, measure_latency=False)
    t = r.table
    assert list(r.by_kind) == ["single_fact", "two_hop", "unanswerable", "user"]
    for kind, m in r.by_kind.items():
        rows = [i for i, k in enumerate(t["kind"]) if k == kind]
        assert m["n"] == len(rows) and m["refusal_rate"] == sum(t["refusal"][i] for i in rows) / len(rows)
        if kind == "unanswerable":
            assert m["f1"] is None and m["hallucination"] == sum(t["hallucinated"][i] for i in rows) / len(rows)
        else:
            assert m["f1"] == pytest.approx(sum(t["f1"][i] for i in rows) / len(rows)) and m["hallucination"] is None
    assert r.hallucination == r.by_kind["unanswerable"]["hallucination"]
    assert Report.from_dict(r.to_dict()).by_kind == r.by_kind


def test_prompts_past_the_models_context_warn(gguf_tok, kind_rows):
    from ragcomp_lab.data.teacher import MAX_NEW_TOKENS

    lengths = _prompt_tokens(gguf_tok, kind_rows)
    longest = max(lengths)
    context = longest + MAX_NEW_TOKENS - 1  # only the longest prompt misses by one token
    assert sorted(lengths)[-2] < longest
    with pytest.warns(ev.ContextLengthWarning) as record:
        rl.evaluate(_tiny_llama(gguf_tok, context), gguf_tok, kind_rows, progress=False, measure_latency=False)
    assert issubclass(ev.ContextLengthWarning, UserWarning) and len(record) == 1
    text = str(record[0].message)
    assert f"1 of {len(kind_rows)} prompts plus the {MAX_NEW_TOKENS} new tokens" in text
    assert f"context of {context} tokens" in text and f"longest prompt has {longest} tokens" in text
    assert "unreliable" in text
    assert record[0].filename == __file__  # points at the caller of rl.evaluate, not into the package
    with warnings.catch_warnings():  # one token more of context and every prompt fits
        warnings.simplefilter("error", ev.ContextLengthWarning)
        ev._warn_past_context(_tiny_llama(gguf_tok, context + 1), gguf_tok, kind_rows["prompt"], MAX_NEW_TOKENS)
