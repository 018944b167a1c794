import pytest

from ragcomp_lab.qa_metrics import answer_quality, exact_match, is_refusal, normalize_answer, token_f1


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
