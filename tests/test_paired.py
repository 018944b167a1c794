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


def test_the_verdict_follows_the_interval_and_names_the_arms():
    [better] = paired.compare(POOR, GOOD, ROWS, metrics=("f1",))  # interval above 0: b better
    assert paired.verdict(better, "poor", "good") == "good better"
    [worse] = paired.compare(GOOD, POOR, ROWS, metrics=("f1",))
    assert paired.verdict(worse, "good", "poor") == "good better"
    [same] = paired.compare(GOOD, GOOD, ROWS, metrics=("f1",))  # the interval is exactly [0, 0]
    assert paired.verdict(same, "a", "b") == "no difference these questions can show"
    [none] = paired.compare(["The context does not say."] * 5, GOOD, ROWS, metrics=("faithfulness",))
    assert paired.verdict(none, "a", "b") == "no question scored for both"


def test_one_seed_pair_is_compare_and_a_repeated_seed_changes_nothing():
    one = paired.compare(POOR, GOOD, ROWS)
    [f1] = paired.compare_seeds([POOR], [GOOD], ROWS, metrics=("f1",))
    assert {k: f1[k] for k in one[0]} == one[0] and f1["seeds"] == 1 and f1["b_better_seeds"] == 1
    twice = paired.compare_seeds([POOR, POOR], [GOOD, GOOD], ROWS)
    for r, o in zip(twice, one):
        assert {k: r[k] for k in o} == pytest.approx(o) and r["seeds"] == 2 and r["b_better_seeds"] == 2


def test_seeds_that_disagree_average_per_question():
    # seed 0: GOOD beats POOR; seed 1: the same answers with the arms swapped, so each question's
    # mean difference over the two seeds is exactly 0, and one seed of two favours each arm
    [f1] = paired.compare_seeds([POOR, GOOD], [GOOD, POOR], ROWS, metrics=("f1",))
    assert f1["difference"] == f1["low"] == f1["high"] == 0.0
    assert f1["b_better"] == f1["a_better"] == 0 and f1["seeds"] == 2 and f1["b_better_seeds"] == 1
    [half] = paired.compare_seeds([POOR, GOOD], [GOOD, GOOD], ROWS, metrics=("f1",))
    [full] = paired.compare(POOR, GOOD, ROWS, metrics=("f1",))
    assert half["difference"] == pytest.approx(full["difference"] / 2)  # one seed of two moved


def test_faithfulness_over_seeds_averages_only_the_seeds_where_both_assert_something():
    refusals = ["The context does not say."] * 5
    # seed 1 refuses everything, so only seed 0 scores the pair: the result is seed 0's alone
    [r] = paired.compare_seeds([POOR, refusals], [GOOD, GOOD], ROWS, metrics=("faithfulness",))
    [alone] = paired.compare(POOR, GOOD, ROWS, metrics=("faithfulness",))
    assert r["questions"] == alone["questions"] and r["difference"] == pytest.approx(alone["difference"])
    assert r["seeds"] == 2 and r["b_better_seeds"] == int(alone["difference"] > 0)


@pytest.mark.parametrize("call, message", [
    (lambda: paired.per_question(GOOD, ROWS, "bleu"), "metric='bleu'"),
    (lambda: paired.per_question(GOOD[:2], ROWS, "f1"), "2 answers for 5 questions"),
    (lambda: paired.compare(GOOD, GOOD, ROWS, confidence=95), "confidence=95"),
    (lambda: paired.compare_seeds([GOOD, GOOD], [GOOD], ROWS), "2 runs of one arm and 1 of the other"),
    (lambda: paired.compare_seeds([], [], ROWS), "0 runs of one arm and 0"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_share_is_the_ratio_of_the_means_inside_its_interval():
    s = paired.share(GOOD, POOR, ROWS)
    f1_good = np.mean([v for v in paired.per_question(GOOD, ROWS, "f1") if v is not None])
    f1_poor = np.mean([v for v in paired.per_question(POOR, ROWS, "f1") if v is not None])
    assert s["questions"] == 4 and s["a"] == pytest.approx(f1_good) and s["b"] == pytest.approx(f1_poor)
    assert s["share"] == pytest.approx(f1_poor / f1_good) and 0 < s["share"] < 1
    assert s["low"] <= s["share"] <= s["high"] and s["low"] < s["high"]
    # reproducible with one seed, wider at a higher confidence
    assert paired.share(GOOD, POOR, ROWS) == s
    wide = paired.share(GOOD, POOR, ROWS, confidence=0.99)
    assert wide["low"] <= s["low"] and wide["high"] >= s["high"]


def test_identical_answers_keep_all_of_the_score():
    s = paired.share(GOOD, GOOD, ROWS)
    assert s["share"] == s["low"] == s["high"] == pytest.approx(1.0)


def test_a_share_of_nothing_is_undefined_and_bad_confidence_is_named():
    wrong = ["x", "y", "z", "w", "v"]
    s = paired.share(wrong, GOOD, ROWS)
    assert s["a"] == 0 and s["share"] is None and s["low"] is None
    with pytest.raises(ValueError, match="confidence=1.5"):
        paired.share(GOOD, POOR, ROWS, confidence=1.5)
