import pytest

from ragcomp_lab.faithfulness import content_words, faithfulness, lexical_support

PASSAGES = ["Vatho Ren was born in Darnmoor in 1987.", "Darnmoor lies on the river Ost."]


def test_content_words_drop_stop_words_and_punctuation():
    assert content_words("The river Ost, in Darnmoor.") == ["river", "ost", "darnmoor"]


@pytest.mark.parametrize("answer, support", [
    ("Darnmoor", 1.0), ("1987", 1.0), ("Darnmoor in 1987", 1.0),
    ("Gonton", 0.0), ("Darnmoor in 1990", 0.5),
    ("The context does not say.", None), ("the", None),  # a refusal or no content word asserts nothing
])
def test_lexical_support_is_the_share_of_content_words_in_the_passages(answer, support):
    assert lexical_support(answer, PASSAGES) == support


def test_lexical_support_measures_support_not_correctness():
    # Known failure modes, documented in the module: a faithful paraphrase scores below 1, and
    # a word-for-word copy of the wrong fact scores 1.
    assert lexical_support("Vatho's birthplace", PASSAGES) < 1
    assert lexical_support("the river Ost", PASSAGES) == 1.0


def test_faithfulness_aggregates_and_counts_hallucinated_answers_to_unanswerable_questions():
    answers = ["Darnmoor", "Gonton", "The context does not say.", "1990"]
    out = faithfulness(answers, [PASSAGES] * 4, ["single_fact", "single_fact", "unanswerable", "unanswerable"])
    assert out == {"faithfulness": pytest.approx(1 / 3), "unsupported_rate": pytest.approx(2 / 3),
                   "asserting": 0.75, "hallucination_rate": 0.5}


@pytest.mark.parametrize("call, message", [
    (lambda: faithfulness([], []), "non-zero"),
    (lambda: faithfulness(["a"], [PASSAGES, PASSAGES]), "equal"),
    (lambda: lexical_support("Darnmoor", "Darnmoor lies on the Ost"), "list of passage texts"),
])
def test_bad_input_is_clear(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_with_nothing_asserted_faithfulness_is_none_not_a_number():
    out = faithfulness(["The context does not say."], [PASSAGES])
    assert out["faithfulness"] is None and out["unsupported_rate"] is None and out["asserting"] == 0
