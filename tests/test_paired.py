import numpy as np
import pytest
from datasets import Dataset

from ragcomp_lab import paired
from ragcomp_lab.faithfulness import faithfulness
from ragcomp_lab.qa_metrics import answer_quality

ROWS = Dataset.from_dict({
    "answer": ["Paris", "blue whale", "1969", "Ada Lovelace", "none"],
    "kind": ["single_fact", "single_fact", "two_hop", "two_hop", "unanswerable"],
    "passages": [["The capital is Paris."], ["The blue whale is the largest animal."], ["It landed in 1969."],
                 ["Ada Lovelace wrote the first program."], ["Nothing relevant here."]],
})
GOOD = ["Paris", "the blue whale", "1969", "Ada Lovelace", "The context does not say."]
POOR = ["Lyon", "the blue shark", "1969", "Charles Babbage", "It was Zeus."]


def test_per_question_means_are_the_aggregate_metrics():
    q = answer_quality(POOR, ROWS["answer"], ROWS["kind"])
    f1 = paired.per_question(POOR, ROWS, "f1")
    assert f1[-1] is None  # unanswerable: not scored, as answer_quality leaves it out
    assert np.mean([s for s in f1 if s is not None]) == pytest.approx(q["f1_answerable"])
    rl = [s for s in paired.per_question(POOR, ROWS, "rouge_l") if s is not None]
    assert np.mean(rl) == pytest.approx(q["rouge_l_answerable"])
    support = [s for s in paired.per_question(GOOD, ROWS, "faithfulness") if s is not None]
    assert np.mean(support) == pytest.approx(faithfulness(GOOD, ROWS["passages"])["faithfulness"])


def test_identical_answers_differ_by_exactly_zero():
    for r in paired.compare(GOOD, GOOD, ROWS):
        assert r["difference"] == r["low"] == r["high"] == 0.0 and r["a_better"] == r["b_better"] == 0


def test_better_answers_give_a_positive_difference_inside_its_interval():
    [f1] = paired.compare(POOR, GOOD, ROWS, metrics=("f1",))
    assert f1["questions"] == 4 and f1["b_better"] == 3 and f1["a_better"] == 0
    assert f1["difference"] == pytest.approx(f1["b"] - f1["a"]) and f1["difference"] > 0
    assert 0 < f1["low"] <= f1["difference"] <= f1["high"]  # 3 of 4 questions better, none worse
    [back] = paired.compare(GOOD, POOR, ROWS, metrics=("f1",))  # swapping the arms mirrors everything
    assert back["difference"] == pytest.approx(-f1["difference"]) and back["a_better"] == 3


def test_faithfulness_pairs_only_questions_where_both_answers_assert_something():
    [r] = paired.compare(POOR, GOOD, ROWS, metrics=("faithfulness",))
    assert r["questions"] == 4  # GOOD refuses the unanswerable question: it asserts nothing there
    # POOR's "It was Zeus." would count in POOR's own faithfulness mean, not in the pair
    assert r["a"] == pytest.approx(np.mean(paired.per_question(POOR, ROWS, "faithfulness")[:4]))


def test_the_interval_is_reproducible_and_widens_with_confidence():
    a = [r["low"] for r in paired.compare(POOR, GOOD, ROWS, metrics=("rouge_l",), seed=3)]
    assert a == [r["low"] for r in paired.compare(POOR, GOOD, ROWS, metrics=("rouge_l",), seed=3)]
    [wide] = paired.compare(POOR, GOOD, ROWS, metrics=("rouge_l",), confidence=0.99)
    [narrow] = paired.compare(POOR, GOOD, ROWS, metrics=("rouge_l",), confidence=0.5)
    assert wide["low"] <= narrow["low"] <= narrow["high"] <= wide["high"]


def test_no_question_in_common_leaves_the_difference_undefined():
    refusals = ["The context does not say."] * 5
    [r] = paired.compare(refusals, GOOD, ROWS, metrics=("faithfulness",))
    assert r["questions"] == 0 and r["difference"] is None and r["low"] is None


@pytest.mark.parametrize("call, message", [
    (lambda: paired.per_question(GOOD, ROWS, "bleu"), "metric='bleu'"),
    (lambda: paired.per_question(GOOD[:2], ROWS, "f1"), "2 answers for 5 questions"),
    (lambda: paired.compare(GOOD, GOOD, ROWS, confidence=95), "confidence=95"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
