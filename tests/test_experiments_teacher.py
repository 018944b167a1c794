"""How well the teacher reads: the per-split metrics and the committed results/teacher.json."""
import json

import pytest

import ragcomp_lab as rl
from ragcomp_lab import experiments, experiments_teacher as et

REFUSAL = rl.data.REFUSAL


@pytest.fixture(scope="module")
def rows():
    return rl.data.rag_splits(seed=0)["test_new_domain"]


def test_perfect_answers_score_one_and_never_refuse_or_hallucinate(rows):
    m = et.split_metrics(list(rows["answer"]), rows)
    assert m["f1"] == m["em"] == 1.0 and m["false_refusal"] == 0.0 and m["hallucination"] == 0.0
    assert m["n"] == len(rows) == m["n_answerable"] + m["n_unanswerable"]


def test_refusing_everything_is_all_false_refusals_and_answering_everything_all_hallucination(rows):
    refused = et.split_metrics([REFUSAL] * len(rows), rows)
    assert refused["false_refusal"] == 1.0 and refused["hallucination"] == 0.0 and refused["f1"] == 0.0
    answered = et.split_metrics(["Numworth Museum"] * len(rows), rows)
    assert answered["false_refusal"] == 0.0 and answered["hallucination"] == 1.0


def test_the_bars_need_f1_and_both_caps(rows):
    good = {"f1": 0.97, "false_refusal": 0.0, "hallucination": 0.05}
    assert et.meets_bar({"test": good, "train": good}) == {"test": True}
    assert et.meets_bar({"test": good | {"hallucination": 0.06}}) == {"test": False}
    assert et.meets_bar({"test_new_domain": good | {"f1": 0.84}}) == {"test_new_domain": False}


def test_the_committed_results_hold_a_dict_per_split_and_the_three_models():
    doc = experiments.read("teacher")
    assert doc["testbed"] == rl.data.TESTBED and doc["command"] == "ragcomp-lab experiments teacher"
    for split in et.SPLITS:
        assert {"f1", "em", "false_refusal", "hallucination"} <= set(doc[split]), split
        assert doc[split] == doc["models"]["teacher"][split]
    for model in ("base SmolLM2", "first adapter"):
        assert set(doc["models"][model]) == set(et.COMPARED)
    # the shipped teacher's numbers are its shipped answers, scored again here
    splits = rl.data.rag_splits(seed=0)
    for split in et.SPLITS:
        answers = list(rl.data.with_teacher_answers(splits[split])["teacher_answer"])
        assert et.split_metrics(answers, splits[split]) == pytest.approx(doc[split]), split
        assert json.dumps(doc["answers"]["teacher"][split]) == json.dumps(answers)
