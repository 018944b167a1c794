import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragcomp_lab.data import REFUSAL
from ragcomp_lab.qa_metrics import answer_quality, by_kind, exact_match, is_refusal, normalize_answer, token_f1


def test_normalisation_ignores_case_punctuation_and_articles():
    assert normalize_answer("The  Darnmoor!") == "darnmoor"
    assert exact_match("darnmoor.", "Darnmoor") == 1.0 and exact_match("Darnmoor town", "Darnmoor") == 0.0


def test_token_f1_is_the_harmonic_mean_of_precision_and_recall():
    assert token_f1("155 centimetres", "155 centimetres") == 1.0
    assert token_f1("Vatho is 155 centimetres tall", "155 centimetres") == pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1))  # precision 2/5, recall 1
    assert token_f1("Gonton", "Darnmoor") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


@pytest.mark.parametrize("text, refused", [
    ("The context does not say.", True), ("The context doesn't mention it.", True),
    ("There is no information about that.", True), ("Darnmoor", False), ("1987", False),
    ("It is not stated in the context.", True),
])
def test_refusals(text, refused):
    assert is_refusal(text) is refused


def test_answer_quality_splits_answerable_and_unanswerable():
    q = answer_quality(["Darnmoor", "1990", "The context does not say.", "42"],
                       ["Darnmoor", "1987", "The context does not say.", "The context does not say."],
                       ["single_fact", "two_hop", "unanswerable", "unanswerable"])
    assert q["em_answerable"] == 0.5 and q["em_single_fact"] == 1.0 and q["em_two_hop"] == 0.0
    assert q["refusal_rate_unanswerable"] == 0.5 and q["false_refusal_rate"] == 0.0
    with pytest.raises(ValueError, match="equal, non-zero numbers"):
        answer_quality(["a"], [], ["single_fact"])


def test_rouge_l_is_the_lcs_f_measure_of_rouge_score():
    from rouge_score import rouge_scorer

    from ragcomp_lab.qa_metrics import rouge_l

    ref = rouge_scorer.RougeScorer(["rougeL"]).score("born in Darnmoor in 1987", "Darnmoor 1987")["rougeL"].fmeasure
    assert rouge_l("Darnmoor 1987", "born in Darnmoor in 1987") == pytest.approx(ref)
    assert rouge_l("Darnmoor 1987", "born in Darnmoor in 1987") == pytest.approx(2 * 1 * (2 / 5) / (1 + 2 / 5))
    assert rouge_l("1987 Darnmoor", "Darnmoor 1987") == pytest.approx(0.5)  # order matters, unlike F1
    assert rouge_l("Gonton", "Darnmoor") == 0.0


# rows of (kind, gold, prediction): golds as the test bed has them (an unanswerable one is REFUSAL),
# predictions drawn from answers, near misses and refusals
KIND = st.sampled_from(["single_fact", "two_hop", "unanswerable", "user"])
ANSWER = st.sampled_from(["Darnmoor", "1987", "Ilsa Quorne", "the red kettle"])
PREDICTION = st.one_of(ANSWER, st.sampled_from(["Ilsa", "Darnmoor in 1987", "", REFUSAL, "It is not stated."]))
ROWS = st.lists(st.tuples(KIND, ANSWER, PREDICTION), min_size=1, max_size=30)


def _columns(rows):
    kinds = [k for k, _, _ in rows]
    golds = [REFUSAL if k == "unanswerable" else g for k, g, _ in rows]
    return [p for _, _, p in rows], golds, kinds


@given(ROWS)
def test_by_kind_has_exactly_the_kinds_present_and_their_counts(rows):
    preds, golds, kinds = _columns(rows)
    out = by_kind(preds, golds, kinds)
    assert list(out) == sorted(set(kinds))
    assert {k: m["n"] for k, m in out.items()} == {k: kinds.count(k) for k in set(kinds)}
    for kind, m in out.items():
        answerable = kind != "unanswerable"
        assert (m["f1"] is None, m["em"] is None, m["false_refusal"] is None) == (not answerable,) * 3
        assert (m["hallucination"] is None) == answerable
        assert m["refusal_rate"] == pytest.approx(m["false_refusal"] if answerable else 1 - m["hallucination"])


@given(ROWS)
def test_perfect_answers_score_one_and_never_hallucinate(rows):
    _, golds, kinds = _columns(rows)
    for kind, m in by_kind(golds, golds, kinds).items():
        if kind == "unanswerable":
            assert m["hallucination"] == 0 and m["refusal_rate"] == 1
        else:
            assert m["f1"] == 1 and m["em"] == 1 and m["false_refusal"] == 0


@given(ROWS)
def test_refusing_everything_is_all_false_refusals_and_no_hallucination(rows):
    _, golds, kinds = _columns(rows)
    for kind, m in by_kind([REFUSAL] * len(kinds), golds, kinds).items():
        assert m["refusal_rate"] == 1
        assert (m["hallucination"] == 0) if kind == "unanswerable" else (m["false_refusal"] == 1 and m["f1"] == 0)


@given(ROWS)
def test_by_kind_agrees_with_answer_quality(rows):
    preds, golds, kinds = _columns(rows)
    quality, out = answer_quality(preds, golds, kinds), by_kind(preds, golds, kinds)
    for kind in set(kinds) - {"unanswerable"}:
        assert out[kind]["f1"] == pytest.approx(quality[f"f1_{kind}"]) and out[kind]["em"] == pytest.approx(quality[f"em_{kind}"])
    if "unanswerable" in out:
        assert out["unanswerable"]["refusal_rate"] == pytest.approx(quality["refusal_rate_unanswerable"])


def test_by_kind_on_a_small_mixed_set():
    out = by_kind(["Darnmoor", "The context does not say.", "1990", "Keswold", "The context does not say.", "Ilsa"],
                  ["Darnmoor", "1987", "1987", REFUSAL, REFUSAL, "Ilsa Quorne"],
                  ["single_fact", "single_fact", "two_hop", "unanswerable", "unanswerable", "user"])
    assert out["single_fact"] == {"n": 2, "f1": 0.5, "em": 0.5, "refusal_rate": 0.5, "hallucination": None,
                                  "false_refusal": 0.5}
    assert out["two_hop"]["f1"] == 0 and out["two_hop"]["false_refusal"] == 0
    assert out["unanswerable"] == {"n": 2, "f1": None, "em": None, "refusal_rate": 0.5, "hallucination": 0.5,
                                   "false_refusal": None}
    assert out["user"]["f1"] == pytest.approx(2 / 3) and out["user"]["em"] == 0  # a user row is answerable
    with pytest.raises(ValueError, match="equal, non-zero numbers"):
        by_kind(["a", "b"], ["a"], ["user", "user"])
    with pytest.raises(ValueError, match="equal, non-zero numbers"):
        by_kind([], [], [])
